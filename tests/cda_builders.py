"""CDA documents for the write rules, made from tests/data/minimal_cda.xml: another patient, another
author, a patient-authored (DOCPAT) document.  No real patient data (ANS test INS, made-up IDNPS)."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from tests import builders

NS = {"h": "urn:hl7-org:v3"}
MINIMAL = (Path(__file__).parent / "data" / "minimal_cda.xml").read_bytes()
PS_ROOT = "1.2.250.1.71.4.2.1"
MINIMAL_AUTHOR = "801234567897"  # the IDNPS minimal_cda.xml is authored by


def cda(*, extension: str, ins: str = builders.TEST_INS, type_code: str | None = None,
        author_root: str = PS_ROOT, author: str = MINIMAL_AUTHOR) -> bytes:
    """minimal_cda.xml with document id `extension`, for patient `ins`, written by `author_root^author`,
    of `type_code` (default: its lettre de liaison, 11490-0)."""
    root = etree.fromstring(MINIMAL)
    root.find("h:id", NS).set("extension", extension)
    root.find("h:setId", NS).set("extension", f"SET-{extension}")
    if type_code is not None:
        code = root.find("h:code", NS)
        code.set("code", type_code)
        code.set("codeSystem", "1.2.250.1.213.1.1.4.12")
        code.set("displayName", "Document déposé par le patient")
    root.find("h:recordTarget/h:patientRole/h:id", NS).set("extension", ins)
    ident = root.find("h:author/h:assignedAuthor/h:id", NS)
    ident.set("root", author_root)
    ident.set("extension", author)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def docpat(*, extension: str, ins: str = builders.TEST_INS, author: str | None = None,
           type_code: str = "DOCPAT01") -> bytes:
    """A patient-authored document (DOCPAT01 by default) for `ins`, its author the patient `author`
    (default: `ins` itself) identified by INS (test OID)."""
    return cda(extension=extension, ins=ins, type_code=type_code, author_root=builders.TEST_OID,
               author=author or ins)
