"""Who sees what: the whole default habilitation matrix, every confidentiality combination, every viewer.

The expected outcomes are written here as tables (the oracle), independently of config/habilitations.toml
and of pipelines.record.core.access: the type codes of each class are listed again, each profession's expected
reading is spelled out, and the confidentiality rules are a first-match decision table with wildcards.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.tables import load_classification, load_habilitations, load_official_matrix
from hub.access import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    Change,
    Decision,
    DocumentFacts,
    DocumentFlags,
    Grant,
    Habilitations,
    PatientControls,
    author_idnps,
    profession_code,
)
from hub.actors import AccessMode, Actor, ActorKind
from hub.audit import AuditAction
from hub.errors import ConfigError
from hub.records import DocumentRecord
from pipelines.record.core import access
from pipelines.record.core.habilitations import known_type_classes

DATA = Path(__file__).parent.parent / "data"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
INS = "279035121518989"
OTHER_INS = "180012B01234578"
REP_INS = "175031234567890"
AUTHOR = "810001234567"
OTHER_PS = "810009876543"
AUTHOR_ID = f"1.2.250.1.71.4.2.1^{AUTHOR}"

# -- the oracle: typeCodes by classCode (config/classification.toml, DOMAIN.md §2.5), listed again -------

C10 = {
    "BIL_AUTO", "11488-4", "11490-0", "34112-3", "11502-2", "11505-5", "11506-3", "15507-7", "15508-5", "18761-7",
    "28617-9", "34120-6", "34749-2", "34794-8", "34874-8", "34875-5", "47420-5", "51969-4", "59283-2", "60280-5",
    "60568-3", "61357-0", "67851-6", "68817-6", "70004-7", "78341-5", "74207-2", "75482-0", "75492-9", "77436-4",
    "78513-9", "78601-2", "83836-7", "83901-9", "83981-1", "85208-7", "86531-1", "88348-8", "93024-8", "96349-6",
    "96173-0", "89233-1",
}
C11 = {"SYNTH", "11369-6", "34133-9", "56445-0", "60591-5", "68599-0", "80820-4", "57055-6", "57057-2", "57075-4",
       "89235-6", "78489-2"}
C31 = {"IMG-KOS", "18748-4", "52040-3", "55115-0"}
C42 = {"PRESC-AAT", "PRESC-BIO", "PRESC-KINE", "PRESC-INF", "PRESC-PEDI", "PRESC-ORTHOPHO", "PRESC-ORTHOPTIE",
       "57828-6", "57832-8", "57833-6", "75468-9", "75496-0"}
C43 = {"DISP_AUT", "60593-1"}
C44 = {"PROT_ALD", "18776-5", "77604-7", "80771-9", "80788-3", "83869-8"}
C45 = {"80565-5", "87273-9", "96874-3"}
C52 = {"AUTORIS-SOINS", "CERT_DECL", "59284-0", "89601-9"}
C60 = {"REMB"}
C90 = {"EXPPAT_1", "EXPPAT_2", "EXPPAT_3", "DOCPAT01", "DOCPAT02", "DOCPAT03", "DOCPAT04", "DOCPAT05", "DOCPAT06",
       "DOCPAT07", "DOCPAT08", "DOCPAT09"}
C95 = {"ATTEST-ASS-COMPL", "ATTEST-RESID", "ATTEST-HEBGT", "ATTEST-DROITS-AM", "PIECE-IDENTITE", "FICHE-CONTACTS",
       "EXPORT_DUI", "28653-4", "34842-5", "51851-4", "56446-8", "74465-6"}
C99 = {"FEUILLE-DE-STYLE", "29274-8", "101881-1", "E1762"}  # 99 = technical, and the unclassified fallback
ALL_TYPES = C10 | C11 | C31 | C42 | C43 | C44 | C45 | C52 | C60 | C90 | C95 | C99

PSY_SOCIAL = {"80788-3", "75496-0", "83981-1", "83901-9", "68599-0"}  # not read by chirurgiens-dentistes
COORDINATION = {"FICHE-CONTACTS", "56446-8"}
CLINICAL = C10 | C11 | C31 | C42 | C43 | C44 | C45 | C52 | C60 | C90
PHARMACIEN = CLINICAL | COORDINATION | {"29274-8", "101881-1"}
DENTISTE = CLINICAL - PSY_SOCIAL | COORDINATION
PREPARATEUR = (C11 | C42 | C43 | C45) - PSY_SOCIAL
AUXILIAIRE = (C10 | C11 | C31 | C42 | C44 | C45 | C52 | C90) - PSY_SOCIAL | COORDINATION
APPAREILLAGE = (C11 | C42) - PSY_SOCIAL | {"11488-4", "34120-6", "47420-5"}
AIDE_SOIGNANT = (C44 | C45) - PSY_SOCIAL | {"SYNTH", "60591-5", "11506-3", "29274-8"} | COORDINATION

#: profession -> the typeCodes it reads (the whole default matrix)
EXPECTED: dict[str, set[str]] = {
    "G15_10": ALL_TYPES - {"ATTEST-RESID"},  # médecin: all but the attestation de résidence
    "G15_21": PHARMACIEN,
    "G15_60": PHARMACIEN,
    "G15_69": PHARMACIEN,
    "G15_40": DENTISTE,
    "G15_50": DENTISTE,
    "G15_38": PREPARATEUR,
    "G15_39": PREPARATEUR,
    **dict.fromkeys(["G15_70", "G15_80", "G15_91", "G15_92", "G15_94", "G15_95", "G15_96", "G15_98", "G15_32"],
                    AUXILIAIRE),
    **dict.fromkeys(["G15_26", "G15_81", "G15_82", "G15_83", "G15_84", "G15_85"], APPAREILLAGE),
    "G15_28": APPAREILLAGE | {"78513-9"},
    "G15_86": {"PRESC-BIO", "11502-2", "51969-4", "96173-0", "60568-3"},
    "G15_31": {"28617-9", "83836-7", "SYNTH", "60591-5", "18748-4", "IMG-KOS"},
    "G15_35": AIDE_SOIGNANT,
    "G15_37": AIDE_SOIGNANT,
    "G15_36": {"15507-7", "60280-5", "78341-5", "74207-2", "SYNTH", "60591-5", "FICHE-CONTACTS"},
}
OUTSIDE_MATRIX = ["G15_93", "G16_10", "G15_99", ""]  # psychologue, a student, unknown, none: read nothing


@pytest.fixture(scope="module")
def matrix() -> Habilitations:
    return load_habilitations()


@pytest.fixture(scope="module")
def type_classes() -> dict[str, str]:
    return known_type_classes(load_classification())


def doc(type_code: str = "11488-4", *codes: str, masked: bool = False, hidden: bool = False, lifted: bool = False,
        deleted: bool = False, author: str | None = AUTHOR_ID) -> DocumentFacts:
    return DocumentFacts(document_id="1.2.3^doc-9", type_code=type_code, class_code="10",
                         confidentiality=("N", *codes), author_id=author, masked_by_patient=masked,
                         hidden_from_representatives=hidden, invisible_lifted=lifted, deleted=deleted,
                         patient_ins=INS)


def pro(idnps: str = OTHER_PS, profession: str = "G15_60", *, regulator: bool = False) -> Actor:
    return Actor(ActorKind.PROFESSIONAL, idnps, profession=profession, regulator=regulator)


# -- the whole matrix --------------------------------------------------------------------------------


def test_the_oracle_covers_every_profession_of_the_matrix_and_every_type_the_hub_classifies(
        matrix: Habilitations, type_classes: dict[str, str]) -> None:
    assert set(matrix.professions()) == set(EXPECTED)
    assert set(type_classes) == ALL_TYPES
    assert "ATTEST-RESID" in type_classes and type_classes["ATTEST-RESID"] == "95"
    assert "approximation" in matrix.source and "26 octobre 2023" in matrix.source


@pytest.mark.parametrize("profession", sorted(EXPECTED))
def test_each_profession_reads_exactly_its_types_under_every_confidentiality_combination(
        matrix: Habilitations, profession: str) -> None:
    # Given a professional of this profession who did not write the document, in normal mode,
    # When they look at every type code under every combination of the codes and flags,
    # Then deleted and masked documents are refused, INVISIBLE_* do not concern them, the matrix decides the rest.
    viewer = pro(profession=profession)
    wrong = []
    for type_code, (mps, ip, irl, masked, hidden, lifted, deleted) in itertools.product(
            sorted(ALL_TYPES), itertools.product([False, True], repeat=7)):
        codes = [c for c, on in ((MASQUE_PS, mps), (INVISIBLE_PATIENT, ip), (INVISIBLE_REPRESENTANTS_LEGAUX, irl))
                 if on]
        facts = doc(type_code, *codes, masked=masked, hidden=hidden, lifted=lifted, deleted=deleted)
        expected = ("access.deleted" if deleted else "access.masked" if mps or masked
                    else "access.habilitation-granted" if type_code in EXPECTED[profession] else "access.habilitation")
        got = access.can_see(viewer, AccessMode.NORMAL, facts, habilitations=matrix)
        if got.rule != expected or got.allowed != expected.endswith("granted"):
            wrong.append((type_code, codes, masked, deleted, got.rule, expected))
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("profession", OUTSIDE_MATRIX)
def test_a_profession_outside_the_matrix_reads_nothing(matrix: Habilitations, profession: str) -> None:
    assert not any(matrix.allows(profession, t) for t in ALL_TYPES)
    assert access.can_see(pro(profession=profession), AccessMode.NORMAL, doc(), habilitations=matrix).rule == \
        "access.habilitation"


def test_a_bare_profession_number_is_its_g15_code(matrix: Habilitations) -> None:
    assert profession_code(10) == profession_code("10") == profession_code("G15_10") == "G15_10"
    assert matrix.allows("10", "11488-4") and not matrix.allows("10", "ATTEST-RESID")
    assert matrix.label("G15_40") == "Chirurgien-dentiste" and matrix.label("G15_93") == ""
    assert matrix.grant("G15_99") is None


# -- every confidentiality combination x every viewer ------------------------------------------------

#: viewer name -> (actor, mode, represented_minor).  The document is a CR de consultation (11488-4) written
#: by AUTHOR, an ambulancier (G15_36: outside the matrix for this type).
VIEWERS: dict[str, tuple[Actor, AccessMode, bool]] = {
    "patient": (Actor(ActorKind.PATIENT, INS), AccessMode.NORMAL, False),
    "other-patient": (Actor(ActorKind.PATIENT, OTHER_INS), AccessMode.NORMAL, False),
    "representative": (Actor(ActorKind.REPRESENTATIVE, REP_INS), AccessMode.NORMAL, True),
    "ex-representative": (Actor(ActorKind.REPRESENTATIVE, REP_INS), AccessMode.NORMAL, False),
    "author": (pro(AUTHOR, "G15_36"), AccessMode.NORMAL, False),
    "author-bris-de-glace": (pro(AUTHOR, "G15_36"), AccessMode.BRIS_DE_GLACE, False),
    "pro-inside": (pro(OTHER_PS, "G15_60"), AccessMode.NORMAL, False),
    "pro-outside": (pro(OTHER_PS, "G15_36"), AccessMode.NORMAL, False),
    "pro-inside-bris-de-glace": (pro(OTHER_PS, "G15_60"), AccessMode.BRIS_DE_GLACE, False),
    "pro-outside-bris-de-glace": (pro(OTHER_PS, "G15_36"), AccessMode.BRIS_DE_GLACE, False),
    "regulator": (pro(OTHER_PS, "G15_10", regulator=True), AccessMode.REGULATION, False),
    "insurer": (Actor(ActorKind.INSURER, "cnam"), AccessMode.NORMAL, False),
}
PROFESSIONALS = [v for v in VIEWERS if v.startswith(("author", "pro-", "regulator"))]
_ = "*"
Y, N = "Y", "N"
#: First matching row wins.  Columns: viewer | MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX
#: (producer codes) | masked by the patient, hidden from representatives, INVISIBLE_PATIENT lifted, deleted
#: (overlay flags) | rule.  Rules ending in a "seen" rule are allowed; every other rule is a refusal.
TABLE: list[tuple[str, str, str, str, str, str, str, str, str]] = [
    # viewer               MPS IP IRL  mask hide lift del   rule
    ("patient",            _, _, _,    _, _, _, Y,   "access.deleted"),
    ("patient",            _, Y, _,    _, _, N, _,   "access.invisible"),
    ("patient",            _, _, _,    _, _, _, _,   "access.own-record"),
    ("other-patient",      _, _, _,    _, _, _, _,   "access.not-own-record"),
    ("ex-representative",  _, _, _,    _, _, _, _,   "access.not-representative"),
    ("representative",     _, _, _,    _, _, _, Y,   "access.deleted"),
    ("representative",     _, Y, _,    _, _, N, _,   "access.invisible"),
    ("representative",     _, _, Y,    _, _, _, _,   "access.invisible-representatives"),
    ("representative",     _, _, _,    _, Y, _, _,   "access.hidden-by-patient"),
    ("representative",     _, _, _,    _, _, _, _,   "access.representative"),
    *[(v,                  _, _, _,    _, _, _, Y,   "access.deleted") for v in PROFESSIONALS],
    ("author",             _, _, _,    _, _, _, _,   "access.author"),
    ("author-bris-de-glace", _, _, _,  _, _, _, _,   "access.author"),
    *[(v,                  Y, _, _,    _, _, _, _,   "access.masked") for v in PROFESSIONALS],
    *[(v,                  _, _, _,    Y, _, _, _,   "access.masked") for v in PROFESSIONALS],
    ("pro-inside",         _, _, _,    _, _, _, _,   "access.habilitation-granted"),
    ("pro-inside-bris-de-glace", _, _, _, _, _, _, _, "access.habilitation-granted"),
    ("regulator",          _, _, _,    _, _, _, _,   "access.habilitation-granted"),
    ("pro-outside",        _, _, _,    _, _, _, _,   "access.habilitation"),
    ("pro-outside-bris-de-glace", _, _, _, _, _, _, _, "access.habilitation"),
    ("insurer",            _, _, _,    _, _, _, _,   "access.actor-kind"),
]
SEEN = {"access.own-record", "access.representative", "access.author", "access.habilitation-granted"}


def expected_rule(viewer: str, flags: tuple[bool, ...]) -> str:
    """The first row of TABLE matching this viewer and these seven flags."""
    for row in TABLE:
        if row[0] == viewer and all(cell == _ or (cell == Y) == flag for cell, flag in zip(row[1:8], flags,
                                                                                        strict=True)):
            return row[8]
    raise AssertionError(f"no row of TABLE for {viewer} {flags}")


def combinations() -> Iterator[tuple[str, tuple[bool, ...]]]:
    for viewer in VIEWERS:
        for flags in itertools.product([False, True], repeat=7):
            yield viewer, flags


def combination_id(value: object) -> str:
    if isinstance(value, tuple):
        names = ("MPS", "IP", "IRL", "mask", "hide", "lift", "del")
        return "+".join(n for n, on in zip(names, value, strict=True) if on) or "plain"
    return str(value)


@pytest.mark.parametrize(("viewer", "flags"), list(combinations()), ids=combination_id)
def test_who_sees_what(matrix: Habilitations, viewer: str, flags: tuple[bool, ...]) -> None:
    mps, ip, irl, masked, hidden, lifted, deleted = flags
    codes = [c for c, on in ((MASQUE_PS, mps), (INVISIBLE_PATIENT, ip), (INVISIBLE_REPRESENTANTS_LEGAUX, irl)) if on]
    facts = doc("11488-4", *codes, masked=masked, hidden=hidden, lifted=lifted, deleted=deleted)
    actor, mode, minor = VIEWERS[viewer]
    decision = access.can_see(actor, mode, facts, habilitations=matrix, represented_minor=minor)
    rule = expected_rule(viewer, flags)
    assert (decision.rule, decision.allowed) == (rule, rule in SEEN)
    assert_clean_messages(decision)


def assert_clean_messages(decision: Decision) -> None:
    """Both messages present, and no health data or identity in them."""
    assert decision.message_en and decision.message_fr
    for secret in ("11488-4", "doc-9", INS, AUTHOR, OTHER_PS, "consultation"):
        assert secret not in decision.message_en and secret not in decision.message_fr


def test_every_row_of_the_table_is_used() -> None:
    used = {expected_rule(v, f) for v, f in combinations()}
    assert used == {row[8] for row in TABLE}


# -- opening the record --------------------------------------------------------------------------------

REASON = "Patient inconscient aux urgences"
OPEN_CASES: list[tuple[str, Actor, AccessMode, str, PatientControls, str, str]] = [
    # case                     actor                 mode                       status    controls   reason  rule
    ("patient", Actor(ActorKind.PATIENT, INS), AccessMode.NORMAL, "active", PatientControls(), "",
     "access.professional-only"),
    ("representative", Actor(ActorKind.REPRESENTATIVE, REP_INS), AccessMode.BRIS_DE_GLACE, "active",
     PatientControls(), REASON, "access.professional-only"),
    ("no idnps", pro("123"), AccessMode.NORMAL, "active", PatientControls(), "", "access.idnps"),
    ("created", pro(), AccessMode.NORMAL, "created", PatientControls(), "", "access.record-inactive"),
    ("opposed", pro(), AccessMode.BRIS_DE_GLACE, "opposed", PatientControls(), REASON, "access.record-inactive"),
    ("closed", pro(), AccessMode.NORMAL, "closed", PatientControls(), "", "access.record-inactive"),
    ("inactive before blocked", pro(), AccessMode.NORMAL, "closed", PatientControls(frozenset({OTHER_PS})), "",
     "access.record-inactive"),
    ("normal: care team", pro(), AccessMode.NORMAL, "active", PatientControls(), "", "access.care-team"),
    ("normal, emergencies off", pro(), AccessMode.NORMAL, "active", PatientControls(frozenset(), False, False), "",
     "access.care-team"),
    ("blocked", pro(), AccessMode.NORMAL, "active", PatientControls(frozenset({OTHER_PS})), "", "access.blocked"),
    ("blocked in bris de glace", pro(), AccessMode.BRIS_DE_GLACE, "active", PatientControls(frozenset({OTHER_PS})),
     REASON, "access.blocked"),
    ("blocked regulator", pro(regulator=True), AccessMode.REGULATION, "active",
     PatientControls(frozenset({OTHER_PS})), "", "access.blocked"),
    ("another one blocked", pro(), AccessMode.NORMAL, "active", PatientControls(frozenset({AUTHOR})), "",
     "access.care-team"),
    ("bris de glace", pro(), AccessMode.BRIS_DE_GLACE, "active", PatientControls(), REASON, "access.bris-de-glace"),
    ("bris de glace, any profession", pro(profession="G15_36"), AccessMode.BRIS_DE_GLACE, "active",
     PatientControls(), REASON, "access.bris-de-glace"),
    ("bris de glace, 15 characters", pro(), AccessMode.BRIS_DE_GLACE, "active", PatientControls(),
     " abc def ghi jkl mno ", "access.bris-de-glace"),
    ("bris de glace, 14 characters", pro(), AccessMode.BRIS_DE_GLACE, "active", PatientControls(),
     "abcdefg  hijklmn\n\t      ", "access.reason-required"),
    ("bris de glace, no reason", pro(), AccessMode.BRIS_DE_GLACE, "active", PatientControls(), "",
     "access.reason-required"),
    ("bris de glace disabled", pro(), AccessMode.BRIS_DE_GLACE, "active", PatientControls(frozenset(), False, True),
     REASON, "access.emergency-disabled"),
    ("bris de glace disabled, no reason", pro(), AccessMode.BRIS_DE_GLACE, "active",
     PatientControls(frozenset(), False, True), "", "access.emergency-disabled"),
    ("regulation", pro(regulator=True), AccessMode.REGULATION, "active", PatientControls(), "", "access.regulation"),
    ("regulation, bris de glace disabled", pro(regulator=True), AccessMode.REGULATION, "active",
     PatientControls(frozenset(), False, True), "", "access.regulation"),
    ("regulation disabled", pro(regulator=True), AccessMode.REGULATION, "active",
     PatientControls(frozenset(), True, False), "", "access.emergency-disabled"),
    ("regulation, not a regulator", pro(), AccessMode.REGULATION, "active", PatientControls(), "",
     "access.not-regulator"),
    ("bris de glace by a regulator, regulation disabled", pro(regulator=True), AccessMode.BRIS_DE_GLACE, "active",
     PatientControls(frozenset(), True, False), REASON, "access.bris-de-glace"),
]
OPENED = {"access.care-team", "access.bris-de-glace", "access.regulation"}


@pytest.mark.parametrize(("case", "actor", "mode", "status", "controls", "reason", "rule"), OPEN_CASES,
                         ids=[c[0] for c in OPEN_CASES])
def test_open_record(case: str, actor: Actor, mode: AccessMode, status: str, controls: PatientControls,
                     reason: str, rule: str) -> None:
    decision = access.open_record(actor, mode, status=status, controls=controls, reason=reason)
    assert (decision.rule, decision.allowed) == (rule, rule in OPENED)
    assert_clean_messages(decision)
    assert REASON not in decision.message_en


# -- changes -------------------------------------------------------------------------------------------

CHANGERS: dict[str, Actor] = {
    "patient": Actor(ActorKind.PATIENT, INS),
    "other-patient": Actor(ActorKind.PATIENT, OTHER_INS),
    "representative": Actor(ActorKind.REPRESENTATIVE, REP_INS),
    "author": pro(AUTHOR, "G15_10"),
    "other-pro": pro(OTHER_PS, "G15_10"),
    "insurer": Actor(ActorKind.INSURER, "cnam"),
}
STATES: dict[str, DocumentFacts] = {
    "plain": doc(),
    "masked": doc("11488-4", MASQUE_PS, masked=True),
    "invisible": doc("11488-4", INVISIBLE_PATIENT),
    "invisible-lifted": doc("11488-4", INVISIBLE_PATIENT, lifted=True),
    "deleted": doc(deleted=True),
    "no-author": doc(author=None),
}
PATIENT_SIDE = [Change.MASK, Change.UNMASK, Change.HIDE, Change.SHOW]
AUTHOR_SIDE = [Change.DELETE, Change.LIFT_INVISIBLE, Change.MASK_AT_PATIENT_REQUEST]
#: first matching row wins: (changer, change or "*", document state or "*", rule)
CHANGE_TABLE: list[tuple[str, str, str, str]] = [
    *[(who, c, _, "access.patient-only") for c in PATIENT_SIDE for who in CHANGERS if who != "patient"
      and who != "other-patient"],
    *[("other-patient", c, _, "access.not-own-record") for c in PATIENT_SIDE],
    *[("patient", c, "deleted", "access.deleted") for c in PATIENT_SIDE],
    *[("patient", c, "invisible", "access.invisible") for c in PATIENT_SIDE],
    *[("patient", c, _, "access.patient-control") for c in PATIENT_SIDE],
    *[(who, c, _, "access.not-author") for c in AUTHOR_SIDE for who in CHANGERS if who != "author"],
    *[("author", c, "no-author", "access.not-author") for c in AUTHOR_SIDE],
    ("author", Change.DELETE, "deleted", "access.author-control"),  # deleting again: idempotent
    ("author", Change.LIFT_INVISIBLE, "deleted", "access.deleted"),
    ("author", Change.MASK_AT_PATIENT_REQUEST, "deleted", "access.deleted"),
    *[("author", c, _, "access.author-control") for c in AUTHOR_SIDE],
]


@pytest.mark.parametrize(("who", "change", "state"),
                         list(itertools.product(CHANGERS, [*PATIENT_SIDE, *AUTHOR_SIDE], STATES)))
def test_can_change(who: str, change: Change, state: str) -> None:
    rule = next(r for w, c, s, r in CHANGE_TABLE if w == who and c == change and s in (_, state))
    decision = access.can_change(CHANGERS[who], change, STATES[state])
    assert (decision.rule, decision.allowed) == (rule, rule.endswith("-control"))
    assert_clean_messages(decision)


def test_audit_action_values_are_accepted_and_unknown_changes_refused() -> None:
    patient = CHANGERS["patient"]
    assert access.can_change(patient, AuditAction.HIDE_FROM_REPRESENTATIVES, doc()).allowed
    assert access.can_change(patient, "show_to_representatives", doc()).allowed
    assert access.can_change(CHANGERS["author"], AuditAction.LIFT_INVISIBLE, doc()).allowed
    assert access.can_change(patient, "frobnicate", doc()).rule == "access.unknown-change"


# -- the facts of an indexed document ---------------------------------------------------------------------


def test_facts_merge_a_record_with_its_flags() -> None:
    record = DocumentRecord(
        document_id="1.2.3^doc-9", patient_ins=INS, submission_id="s", blob_bucket="b", blob_key="k", sha256="0" * 64,
        size=1, type_code="11488-4", type_label="CR", class_code="10", category="CPT_REND", format_code="f",
        level="N3", confidentiality=("N", MASQUE_PS), title="secret", effective_time="20260101",
        service_date="2026-01-01", author_id=AUTHOR_ID)
    plain = access.facts(record)
    assert plain == doc("11488-4", MASQUE_PS)
    flagged = access.facts(record, DocumentFlags(masked_by_patient=True, hidden_from_representatives=True,
                                                 invisible_lifted=True, deleted=True, deleted_at=NOW))
    assert (flagged.masked_by_patient, flagged.hidden_from_representatives, flagged.invisible_lifted,
            flagged.deleted) == (True, True, True, True)
    assert plain.author_idnps == AUTHOR == author_idnps(AUTHOR_ID)
    assert author_idnps("1.2.250.1.71.4.2.2^499700367909006") is None  # a structure, not a professional
    assert author_idnps(None) is None and author_idnps("no-caret") is None
    assert Decision.allow("x").finding() == {"rule": "x", "location": "record", "message_en": "",
                                             "message_fr": ""}


def test_grant_all_types_except() -> None:
    grant = Grant(all_types=True, except_types=frozenset({"ATTEST-RESID"}))
    assert grant.allows("anything-new") and not grant.allows("ATTEST-RESID")
    assert not Grant(types=frozenset({"A"}), except_types=frozenset({"A"})).allows("A")


# -- the official matrix ---------------------------------------------------------------------------------


def test_the_official_matrix_export_is_loaded(tmp_path: Path) -> None:
    official = load_official_matrix(DATA / "habilitations_jsonapi.json")
    assert official.professions() == ("G15_10", "G15_21", "G15_40")
    assert official.label("G15_21") == "Pharmacien"
    assert official.allows("G15_10", "11488-4") and official.allows("10", "ATTEST-HEBGT")
    assert not official.allows("G15_10", "ATTEST-RESID")  # consultation false
    assert official.allows("G15_21", "60593-1") and not official.allows("G15_21", "83901-9")
    assert not official.allows("G15_21", "11502-2")  # allowed on page 0, refused on page 1: refused wins
    assert official.allows("G15_40", "28617-9")  # item with its attributes under "attributes"
    assert not official.allows("G15_60", "11488-4")  # not in the export: reads nothing
    assert "habilitations_jsonapi.json" in official.source and "2 page(s)" in official.source
    assert "8 rows" in official.source  # the item without a type code was skipped
    # one page alone (not a list) is accepted too
    single = tmp_path / "page.json"
    single.write_text(json.dumps(json.loads((DATA / "habilitations_jsonapi.json").read_text())[0]))
    assert load_official_matrix(single).professions() == ("G15_10", "G15_21")


@pytest.mark.parametrize(("content", "says"), [
    ("not json", "cannot load official habilitation matrix"),
    ('{"links": {}}', "'data' list"),
    ('[{"data": [{"field_code_profession": {"field_code_profession": "médecin"}}]}]',
     "data[0].field_code_profession.field_code_profession"),
    ('{"data": [{"field_code_profession": 10, "field_type_de_document": {"field_code_loinc": "X"}, '
     '"field_consultation_document": "yes"}]}', "data[0].field_consultation_document"),
    ('{"data": [{"field_code_profession": true}]}', "field_code_profession"),
    ('{"data": []}', "no matrix row"),
    ('{"data": ["x"]}', "data[0]: expected an object"),
])
def test_official_matrix_errors_name_the_item(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "matrix.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_official_matrix(path)
    assert says in str(caught.value) and "matrix.json" in str(caught.value)


def test_a_missing_official_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.json"):
        load_official_matrix(tmp_path / "absent.json")


# -- errors in the shipped table's format ------------------------------------------------------------------

ROW = '[professions.G15_10]\nlabel = "Médecin"\n'


@pytest.mark.parametrize(("toml", "says"), [
    ("version = 1\n", "[professions] is missing"),
    ('bogus = 1\n' + ROW + 'all_types = true\n', "unknown top-level key(s) bogus"),
    (ROW + 'classes = ["10"]\ncolour = "red"\n', "professions.G15_10: unknown key(s) colour"),
    (ROW + 'types = ["NOPE-1"]\n', "professions.G15_10.types: unknown typeCode(s) NOPE-1"),
    (ROW + 'deny = ["NOPE-2"]\nall_types = true\n', "professions.G15_10.deny: unknown typeCode(s) NOPE-2"),
    (ROW + 'classes = ["77"]\n', "professions.G15_10.classes: classCode(s) 77"),
    (ROW + 'classes = "10"\n', "professions.G15_10.classes must be a list"),
    (ROW + 'types = ["@nothing"]\n', "professions.G15_10.types: @nothing is not a [type_sets] name"),
    (ROW + 'like = "G15_21"\n', "professions.G15_10.like: 'G15_21' is not a profession"),
    (ROW + 'like = "G15_21"\n[professions.G15_21]\nlike = "G15_10"\n', "cycle"),
    (ROW + 'all_types = true\nclasses = ["10"]\n', "all_types = true goes alone"),
    (ROW + 'all_types = "yes"\ntypes = ["SYNTH"]\n', "professions.G15_10.all_types must be true or false"),
    (ROW + 'types = ["SYNTH"]\ndeny = ["SYNTH"]\n', "professions.G15_10 grants no typeCode"),
    ('[professions.medecin]\ntypes = ["SYNTH"]\n', "professions.medecin: a profession key is a JDV_J01 code"),
    ('[type_sets]\nx = ["NOPE-3"]\n' + ROW + 'types = ["SYNTH"]\n', "type_sets.x: unknown typeCode(s) NOPE-3"),
    ("[professions\n", "cannot load habilitation matrix"),
])
def test_table_errors_name_the_key(tmp_path: Path, toml: str, says: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_habilitations(path)
    assert says in str(caught.value) and "matrix.toml" in str(caught.value)


def test_like_inherits_then_adds_and_denies(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text('[professions.G15_10]\nall_types = true\ndeny = ["ATTEST-RESID", "REMB"]\n'
                    '[professions.G15_20]\nlike = "G15_10"\ntypes = ["REMB"]\ndeny = ["SYNTH"]\n'
                    '[professions.G15_21]\nclasses = ["43"]\n[professions.G15_22]\nlike = "G15_21"\n'
                    'types = ["SYNTH"]\ndeny = ["DISP_AUT"]\n', encoding="utf-8")
    matrix = load_habilitations(path)
    assert matrix.allows("G15_20", "REMB") and not matrix.allows("G15_20", "SYNTH")
    assert not matrix.allows("G15_20", "ATTEST-RESID") and matrix.allows("G15_20", "a-future-type")
    assert matrix.grant("G15_22") == Grant(types=frozenset({"60593-1", "SYNTH"}))
