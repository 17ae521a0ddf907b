"""validate(): hardened parsing, XSD, required header items, INS, typeCode; patient_findings()."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from config.tables import load_validation_rules
from hub.findings import Severity
from pipelines.cda.header import NS
from pipelines.cda.validation import ValidationReport, ValidationRules, patient_findings, validate

DATA = Path(__file__).resolve().parents[1] / "data"
MINIMAL = (DATA / "minimal_cda.xml").read_bytes()


@pytest.fixture(scope="module")
def rules() -> ValidationRules:
    return load_validation_rules()


def rules_of(report: ValidationReport) -> list[str]:
    return [f.rule for f in report.findings]


def test_minimal_document_is_valid(rules: ValidationRules) -> None:
    report = validate(MINIMAL, rules)
    assert report.ok, report.findings
    assert report.header is not None
    assert report.header.patient_ins == "279035121518989"
    assert report.to_dict()["ok"] is True


# -- untrusted bytes ------------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>"""


def test_xxe_is_refused_and_leaks_nothing(rules: ValidationRules) -> None:
    passwd = Path("/etc/passwd").read_text(errors="replace")
    first_line = passwd.splitlines()[0] if passwd else "root:x:0:0"
    for payload in (XXE, XXE.decode().replace('encoding="UTF-8"', "").encode("utf-16")):
        report = validate(payload, rules)
        assert rules_of(report) == ["xml.dtd-forbidden"]
        assert report.header is None
        assert first_line not in repr(report.to_dict())


def test_billion_laughs_is_refused_quickly(rules: ValidationRules) -> None:
    started = time.perf_counter()
    report = validate(BILLION_LAUGHS, rules)
    assert time.perf_counter() - started < 1.0
    assert rules_of(report) == ["xml.dtd-forbidden"]
    assert "lollol" not in repr(report.to_dict())


def test_billion_laughs_in_utf16_is_refused_quickly(rules: ValidationRules) -> None:
    payload = BILLION_LAUGHS.replace(b'<?xml version="1.0"?>', b"").decode().encode("utf-16")
    started = time.perf_counter()
    report = validate(payload, rules)
    assert time.perf_counter() - started < 1.0
    # libxml2 stops it either at parse time (amplification limit) or our docinfo check refuses it
    assert rules_of(report) in (["xml.dtd-forbidden"], ["xml.well-formed"])


def test_doctype_after_prolog_pis_and_comments_is_refused(rules: ValidationRules) -> None:
    payload = (b'\xef\xbb\xbf<?xml version="1.0"?>\n<?xml-stylesheet href="x.xsl"?>\n<!-- a -->\n'
               b'<!DOCTYPE ClinicalDocument>\n<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    assert rules_of(validate(payload, rules)) == ["xml.dtd-forbidden"]


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE ClinicalDocument SYSTEM "http://127.0.0.1:{port}/cda.dtd">',
        '<!DOCTYPE ClinicalDocument [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]>',
        '<!DOCTYPE ClinicalDocument [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/e.xml">]>',
    ],
)
def test_external_dtd_is_not_fetched(rules: ValidationRules, doctype: str) -> None:
    # Given a local listener standing for a remote DTD server
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        prolog = f'<?xml version="1.0"?>\n{doctype.format(port=port)}\n'
        payload = prolog + '<ClinicalDocument xmlns="urn:hl7-org:v3"/>'
        # When the document is validated
        report = validate(payload.encode(), rules)
        # Then it is refused and nobody connected
        assert rules_of(report) == ["xml.dtd-forbidden"]
        with pytest.raises(TimeoutError):
            server.accept()


def test_size_cap_is_checked_before_parsing(rules: ValidationRules) -> None:
    small = ValidationRules(schema=rules.schema, type_codes=rules.type_codes, max_bytes=100)
    report = validate(b"<" * 101, small)  # not even XML: never parsed
    assert rules_of(report) == ["xml.too-large"]
    assert validate(MINIMAL, ValidationRules(rules.schema, rules.type_codes, max_bytes=len(MINIMAL))).ok


def test_not_well_formed_gives_line_and_column(rules: ValidationRules) -> None:
    data = b'<?xml version="1.0"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">\n  <id>\n</ClinicalDocument>'
    report = validate(data, rules)
    (finding,) = report.findings
    assert finding.rule == "xml.well-formed"
    assert "ligne 4" in finding.message_fr and "line 4" in finding.message_en


@pytest.mark.parametrize("data", [b"", b"   ", b"\xff\xfe\x00", b"<a", b"not xml at all"])
def test_garbage_never_raises(rules: ValidationRules, data: bytes) -> None:
    report = validate(data, rules)
    assert not report.ok
    assert rules_of(report) == ["xml.well-formed"]


@pytest.mark.parametrize(
    "data",
    [b"<ClinicalDocument/>", b'<ClinicalDocument xmlns="urn:hl7-org:v2"/>', b'<x xmlns="urn:hl7-org:v3"/>'],
)
def test_root_must_be_hl7_clinical_document(rules: ValidationRules, data: bytes) -> None:
    assert rules_of(validate(data, rules)) == ["cda.root"]


# -- XSD -------------------------------------------------------------------------------------------


def edit(mutate: Callable[[etree._Element], None], data: bytes = MINIMAL) -> bytes:
    root = etree.fromstring(data)
    mutate(root)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def remove(xpath: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        for el in root.xpath(xpath, namespaces=NS):
            el.getparent().remove(el)

    return mutate


def set_attr(xpath: str, name: str, value: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        for el in root.xpath(xpath, namespaces=NS):
            el.set(name, value)

    return mutate


def test_xsd_error_has_readable_location_and_redacts_values(rules: ValidationRules) -> None:
    data = edit(set_attr("h:recordTarget/h:patientRole/h:patient/h:birthTime", "value", "1979-03-28-SECRET"))
    report = validate(data, rules)
    xsd = [f for f in report.findings if f.rule == "cda.xsd"]
    assert xsd, report.findings
    assert xsd[0].location == "/ClinicalDocument/recordTarget/patientRole/patient/birthTime"
    assert "SECRET" not in xsd[0].message_en and "SECRET" not in xsd[0].message_fr


def test_xsd_findings_are_capped(rules: ValidationRules) -> None:
    def many_bad(root: etree._Element) -> None:
        for _ in range(30):
            etree.SubElement(root, f"{{{NS['h']}}}bogus")

    capped = ValidationRules(rules.schema, rules.type_codes, rules.max_bytes, max_xsd_findings=5)
    xsd = [f for f in validate(edit(many_bad), capped).findings if f.rule == "cda.xsd"]
    assert len(xsd) <= 6  # 5 + one "and N more"


# -- required header items -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "rule", "location", "code"),
    [
        (remove("h:id"), "cda.header.id", "/ClinicalDocument/id", None),
        (remove("h:code"), "cda.header.code", "/ClinicalDocument/code", None),
        (remove("h:effectiveTime"), "cda.header.effectiveTime", "/ClinicalDocument/effectiveTime", None),
        (remove("h:confidentialityCode"), "cda.header.confidentialityCode",
         "/ClinicalDocument/confidentialityCode", None),
        (remove("h:recordTarget"), "cda.header.recordTarget", "/ClinicalDocument/recordTarget", None),
        (remove("h:recordTarget"), "ins.missing", "/ClinicalDocument/recordTarget/patientRole", "903"),
        # an INS-shaped id under an OID outside the family is a wrong OID (904), not a missing INS (issue 12)
        (set_attr("h:recordTarget/h:patientRole/h:id", "root", "1.2.3.4.567.8.9.10"), "ins.oid",
         "/ClinicalDocument/recordTarget/patientRole/id", "904"),
        (set_attr("h:recordTarget/h:patientRole/h:id", "extension", "1234567890121"), "ins.format",
         "/ClinicalDocument/recordTarget/patientRole/id", "905"),
        # full-width and Arabic-Indic digits are not digits of an INS (issue 12)
        (set_attr("h:recordTarget/h:patientRole/h:id", "extension", "２７９０３５１２１５１８９８９"), "ins.format",
         "/ClinicalDocument/recordTarget/patientRole/id", "905"),
        (set_attr("h:recordTarget/h:patientRole/h:id", "extension", "٢٧٩٠٣٥١٢١٥١٨٩٨٩"), "ins.format",
         "/ClinicalDocument/recordTarget/patientRole/id", "905"),
        (remove("h:author"), "cda.header.author", "/ClinicalDocument/author", None),
        (remove("h:custodian"), "cda.header.custodian", "/ClinicalDocument/custodian", None),
        (set_attr("h:code", "code", "99999-9"), "typecode.unknown", "/ClinicalDocument/code", None),
        (set_attr("h:recordTarget/h:patientRole/h:id", "extension", "223042545611404"), "ins.key",
         "/ClinicalDocument/recordTarget/patientRole/id", "904"),
        (set_attr("h:recordTarget/h:patientRole/h:id", "extension", "27903512151898"), "ins.format",
         "/ClinicalDocument/recordTarget/patientRole/id", "905"),
        (set_attr("h:recordTarget/h:patientRole/h:id", "root", "1.2.250.1.213.1.4.2"), "ins.oid",
         "/ClinicalDocument/recordTarget/patientRole/id", "904"),
    ],
)
def test_missing_or_wrong_header_item(
    rules: ValidationRules,
    mutate: Callable[[etree._Element], None],
    rule: str,
    location: str,
    code: str | None,
) -> None:
    report = validate(edit(mutate), rules)
    assert not report.ok
    matching = [f for f in report.findings if f.rule == rule]
    assert matching, report.findings
    assert matching[0].location == location
    assert matching[0].code == code
    assert matching[0].severity is Severity.ERROR
    assert "279035121518989" not in matching[0].message_fr + matching[0].message_en


def test_ins_is_found_among_several_patient_ids(rules: ValidationRules) -> None:
    def add_ipp_first(root: etree._Element) -> None:
        role = root.find("h:recordTarget/h:patientRole", NS)
        ipp = etree.Element(f"{{{NS['h']}}}id", root="1.2.3.4.567.8.9.10", extension="1234567890121")
        role.insert(0, ipp)

    report = validate(edit(add_ipp_first), rules)
    assert report.ok, report.findings
    assert report.header is not None and report.header.patient_ins_oid == "1.2.250.1.213.1.4.10"


def test_validate_is_consistent_across_threads(rules: ValidationRules) -> None:
    # Given good and bad documents validated at once by many threads sharing one XMLSchema
    bad = edit(remove("h:custodian"))
    results: list[tuple[bool, bool]] = []
    lock = threading.Lock()

    def work(data: bytes, expect_ok: bool) -> None:
        for _ in range(10):
            report = validate(data, rules)
            with lock:
                results.append((expect_ok, report.ok))

    threads = [threading.Thread(target=work, args=(d, d is MINIMAL)) for d in (MINIMAL, bad) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every report is the one its document deserves
    assert len(results) == 80
    assert all(expected == got for expected, got in results)


# -- patient registry status -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, [("patient.unknown", "902")]),
        ("opposed", [("patient.opposed", None)]),
        ("closed", [("patient.closed", "207")]),
        ("created", []),
        ("active", []),
    ],
)
def test_patient_findings(
    rules: ValidationRules, status: str | None, expected: list[tuple[str, str | None]]
) -> None:
    header = validate(MINIMAL, rules).header
    assert header is not None
    assert [(f.rule, f.code) for f in patient_findings(header, status)] == expected


def test_patient_findings_refuses_an_unknown_status(rules: ValidationRules) -> None:
    header = validate(MINIMAL, rules).header
    assert header is not None
    with pytest.raises(ValueError):
        patient_findings(header, "deleted")
