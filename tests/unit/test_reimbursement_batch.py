"""The insurer's batch format (MESHUB-REMB 1) and the CNAM-HR history document rendered from it (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from config.tables import load_classification, load_validation_rules
from hub.records import PatientRecord, PatientStatus
from pipelines.cda.classification import ClassificationTables, classify
from pipelines.cda.validation import ValidationRules, validate
from pipelines.insurer.core.history import ActKind
from pipelines.insurer.core.reimbursements import (
    BatchLimits,
    ean13_ok,
    history_document_id,
    parse_batch,
    render_history,
)
from tests.builders import TEST_INS, TEST_OID, with_key

NS = {"h": "urn:hl7-org:v3"}
HEADER = "MESHUB-REMB|1|B-2024-03|CNAM"
PRESCRIBER = "810100997245"
ACTS = (
    f"A-1|{TEST_INS}|{TEST_OID}|2024-03-01|CIP13|3400935673220|LUDEAL CPR3/21|1|12.50|8.75|{PRESCRIBER}|",
    f"A-2|{TEST_INS}|{TEST_OID}|2024-03-02|NGAP|G|CONSULTATION MEDECINE GENERALE|1|26|17.5||{PRESCRIBER}",
    f"A-3|{TEST_INS}|{TEST_OID}|2024-03-03|CCAM|QEQJ001|remno sein +inject IV|1|69.00|48.30||750300550",
    f"A-4|{TEST_INS}|{TEST_OID}|2024-03-04|LPP|1397790|COMPRESSES ACIDE HYALURONIQUE & <SULFADIAZINE>|4|10|6|"
    f"{PRESCRIBER}|750017212",
    f"A-5|{TEST_INS}|{TEST_OID}|2024-03-05|NABM|1208|T.S.H. (SANG)|1|7.02|4.91|{PRESCRIBER}|",
)
PATIENT = PatientRecord(ins=TEST_INS, oid=TEST_OID, birth_name="PAT-TROIS", given_names="DOMINIQUE MARIE",
                        birth_date="1979-03-28", sex="F", birth_place="51215", status=PatientStatus.ACTIVE)
AT = datetime(2024, 4, 1, 8, 30, tzinfo=UTC)


def batch(*acts: str, header: str = HEADER, count: int | None = None, trailer: bool = True) -> str:
    lines = [header, *acts]
    if trailer:
        lines.append(f"END|{len(acts) if count is None else count}")
    return "\n".join(lines) + "\n"


def rules_of(text: str) -> set[tuple[int, str, str]]:
    return {(p.line, p.field, p.rule) for p in parse_batch(text).problems}


@pytest.fixture(scope="module")
def validation() -> ValidationRules:
    return load_validation_rules()


@pytest.fixture(scope="module")
def tables() -> ClassificationTables:
    return load_classification()


# -- parsing ------------------------------------------------------------------------------------------------


def test_a_good_file_gives_every_act_with_its_fields() -> None:
    result = parse_batch(batch(*ACTS).replace("\n", "\r\n"))
    assert result.ok and result.header is not None
    assert (result.header.batch_id, result.header.issuer) == ("B-2024-03", "CNAM")
    assert [a.kind for a in result.acts] == [ActKind.CIP13, ActKind.NGAP, ActKind.CCAM, ActKind.LPP, ActKind.NABM]
    first = result.acts[0]
    assert (first.act_ref, first.ins, first.care_date, first.quantity) == ("A-1", TEST_INS, "2024-03-01", 1)
    assert (first.paid_cents, first.reimbursed_cents, first.prescriber, first.executant) == (1250, 875, PRESCRIBER, "")
    assert result.acts[1].reimbursed_cents == 1750 and result.acts[3].executant == "750017212"


def test_the_documented_example_parses() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reimbursement-batch.md").read_text(encoding="utf-8")
    example = doc.split("```\n", 2)[1]
    result = parse_batch(example)
    assert result.ok, [str(p) for p in result.problems]
    assert [a.kind for a in result.acts] == [ActKind.CIP13, ActKind.NGAP, ActKind.NABM]


def test_a_bom_and_a_missing_final_newline_are_fine() -> None:
    assert parse_batch("\ufeff" + batch(*ACTS).rstrip("\n")).ok


def test_a_wrong_ins_key_refuses_the_whole_file_without_echoing_the_ins() -> None:
    wrong = TEST_INS[:13] + "00"
    result = parse_batch(batch(ACTS[0], ACTS[1].replace(TEST_INS, wrong)))
    assert not result.ok and result.acts == ()
    assert [(p.line, p.field, p.rule) for p in result.problems] == [(3, "ins", "ins.key")]
    shown = " ".join(str(p) for p in result.problems)
    assert TEST_INS[:13] not in shown and "CONSULTATION" not in shown


def test_an_unaccepted_ins_oid_is_named_on_its_field() -> None:
    assert rules_of(batch(ACTS[0].replace(TEST_OID, "1.2.3.4"))) == {(2, "ins_oid", "ins.oid")}


def test_a_truncated_file_is_refused() -> None:
    whole = batch(*ACTS)
    cut = whole[:whole.index("A-5") + 20]  # cut in the middle of the last act, no trailer
    assert (6, "line", "remb.act.fields") in rules_of(cut)
    assert any(rule == "remb.trailer.missing" for _, _, rule in rules_of(cut))
    assert rules_of(batch(*ACTS[:4], count=5)) == {(6, "trailer", "remb.trailer.count")}
    assert rules_of(batch(*ACTS, trailer=False)) == {(7, "trailer", "remb.trailer.missing")}


def test_a_duplicate_act_reference_inside_one_file_is_refused() -> None:
    again = ACTS[1].replace("A-2", "A-1")
    assert rules_of(batch(ACTS[0], again)) == {(3, "act_ref", "remb.act.duplicate")}


@pytest.mark.parametrize(("change", "problem"), [
    (lambda f: f.__setitem__(3, "2024-02-30"), (2, "care_date", "remb.act.care_date")),
    (lambda f: f.__setitem__(4, "DRUG"), (2, "code", "remb.act.kind")),
    (lambda f: f.__setitem__(5, "3400935673221"), (2, "code", "remb.act.code")),  # EAN-13 check digit
    (lambda f: f.__setitem__(6, ""), (2, "label", "remb.act.label")),
    (lambda f: f.__setitem__(7, "0"), (2, "quantity", "remb.act.quantity")),
    (lambda f: f.__setitem__(8, "12,50"), (2, "amount", "remb.act.amount_paid")),
    (lambda f: f.__setitem__(9, "13.00"), (2, "amount", "remb.act.reimbursed-over-paid")),
    (lambda f: f.__setitem__(10, "10100997245"), (2, "prescriber", "remb.act.prescriber")),  # RPPS, not IDNPS
    (lambda f: f.__setitem__(11, "75-0017212"), (2, "executant", "remb.act.executant")),
    (lambda f: f.__setitem__(0, "bad ref"), (2, "act_ref", "remb.act.act_ref")),
    (lambda f: f.append("extra"), (2, "line", "remb.act.fields")),
])
def test_each_field_rule(change: object, problem: tuple[int, str, str]) -> None:
    fields = ACTS[0].split("|")
    change(fields)  # type: ignore[operator]
    assert rules_of(batch("|".join(fields))) == {problem}


def test_header_blank_lines_and_lines_after_the_trailer() -> None:
    assert (1, "header", "remb.header") in rules_of(batch(*ACTS, header="ROSTER|1|x|y"))
    assert rules_of(batch(*ACTS, header="MESHUB-REMB|2|B|CNAM")) == {(1, "version", "remb.header.version")}
    assert rules_of(batch(ACTS[0], "", ACTS[1], count=2)) == {(3, "line", "remb.line.blank")}
    assert rules_of(batch(*ACTS) + ACTS[0] + "\n") == {(8, "line", "remb.after-trailer")}
    assert rules_of("") == {(1, "header", "remb.empty")}


def test_size_limits() -> None:
    limits = BatchLimits(max_acts=2, max_line_chars=200)
    assert {p.rule for p in parse_batch(batch(*ACTS), limits=limits).problems} == {"remb.too-many-acts"}
    long = ACTS[0].replace("LUDEAL CPR3/21", "X" * 190)
    assert {p.rule for p in parse_batch(batch(long), limits=limits).problems} == {"remb.line.too-long"}
    assert {p.rule for p in parse_batch(batch(*ACTS), limits=BatchLimits(max_bytes=10)).problems} == {
        "remb.too-large"}


def test_problems_are_capped() -> None:
    bad = [ACTS[0].replace("A-1", f"A-{n}").replace("2024-03-01", "nope") for n in range(50)]
    assert len(parse_batch(batch(*bad), limits=BatchLimits(max_problems=10)).problems) == 10


def test_corsican_ins_and_ean13() -> None:
    corsican = with_key("185022A123456")
    assert parse_batch(batch(ACTS[0].replace(TEST_INS, corsican))).ok
    assert ean13_ok("3400935673220") and not ean13_ok("3400935673229")


# -- rendering ----------------------------------------------------------------------------------------------


def test_the_rendered_history_passes_the_hubs_validation_and_is_classified_remb(
        validation: ValidationRules, tables: ClassificationTables) -> None:
    acts = parse_batch(batch(*ACTS)).acts
    raw = render_history(TEST_INS, TEST_OID, acts, patient=PATIENT, produced_at=AT)
    report = validate(raw, validation)
    assert report.ok, [f.to_dict() for f in report.findings]
    assert report.header is not None
    found = classify(report.header, tables)
    assert (found.category, found.class_code) == ("REMB", "60")
    assert not found.format_code.startswith("urn:asipSante:modelesHorsProfils"), found.reasons
    assert report.header.patient_ins == TEST_INS
    assert report.header.template_ids == ("2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1",
                                          "1.2.250.1.213.1.1.1.36")
    assert report.header.author_specialty == "ALIM_AM"
    assert report.header.custodian_id == "1.2.250.1.71.4.2.2^318003502400041"


def test_the_history_has_the_models_sections_entries_and_a_readable_table() -> None:
    acts = parse_batch(batch(*ACTS)).acts
    root = etree.fromstring(render_history(TEST_INS, TEST_OID, acts, patient=PATIENT, produced_at=AT))
    titles = [t.text for t in root.iterfind(".//h:section/h:title", NS)]
    assert titles == ["Usage et Responsabilités", "Médicaments", "Vaccinations", "Dispositifs médicaux",
                      "Hospitalisations", "Soins médicaux et dentaires", "Radiologie", "Biologie"]
    assert len(root.findall(".//h:entry/h:substanceAdministration", NS)) == 1
    assert len(root.findall(".//h:entry/h:supply", NS)) == 1
    assert root.xpath(".//h:entry/h:procedure/h:code/@code", namespaces=NS) == ["QEQJ001", "G", "1208"]
    cells = ["".join(str(t) for t in td.itertext()) for td in root.iterfind(".//h:td", NS)]
    assert "COMPRESSES ACIDE HYALURONIQUE & <SULFADIAZINE>" in cells and "10,00 €" in cells and "6,00 €" in cells
    family = root.find("h:recordTarget/h:patientRole/h:patient/h:name/h:family", NS)
    assert family is not None and family.text == "PAT-TROIS"
    # every narrative reference of an entry points at a content of the table
    ids = {c.get("ID") for c in root.iterfind(".//h:content", NS)}
    refs = {r.get("value", "")[1:] for r in root.iterfind(".//h:entry//h:reference", NS)}
    assert refs and refs <= ids


def test_the_document_id_depends_only_on_the_set_of_act_references() -> None:
    acts = parse_batch(batch(*ACTS)).acts
    one = render_history(TEST_INS, TEST_OID, acts, patient=PATIENT, produced_at=AT)
    same = render_history(TEST_INS, TEST_OID, tuple(reversed(acts)), patient=PATIENT, produced_at=AT)
    later = render_history(TEST_INS, TEST_OID, acts, patient=PATIENT, produced_at=datetime(2025, 1, 1, tzinfo=UTC))
    fewer = render_history(TEST_INS, TEST_OID, acts[:4], patient=PATIENT, produced_at=AT)
    assert one == same  # same acts, same time: the same bytes

    def doc_id(raw: bytes) -> str:
        element = etree.fromstring(raw).find("h:id", NS)
        assert element is not None
        return f"{element.get('root')}^{element.get('extension')}"

    assert doc_id(one) == doc_id(later) == history_document_id([a.act_ref for a in acts])
    assert doc_id(fewer) != doc_id(one)


def test_a_patient_without_traits_still_gives_a_valid_document(validation: ValidationRules) -> None:
    acts = parse_batch(batch(*ACTS)).acts
    bare = PatientRecord(ins=TEST_INS, oid=TEST_OID)
    report = validate(render_history(TEST_INS, TEST_OID, acts, patient=bare, produced_at=AT), validation)
    assert report.ok, [f.to_dict() for f in report.findings]


def test_render_refuses_mixed_patients_and_naive_times() -> None:
    acts = parse_batch(batch(*ACTS)).acts
    other = replace(acts[0], ins=with_key("1850175123456"))
    with pytest.raises(ValueError):
        render_history(TEST_INS, TEST_OID, [*acts, other], patient=PATIENT, produced_at=AT)
    with pytest.raises(ValueError):
        render_history(TEST_INS, TEST_OID, acts, patient=PATIENT, produced_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        render_history(TEST_INS, TEST_OID, [], patient=PATIENT, produced_at=AT)
