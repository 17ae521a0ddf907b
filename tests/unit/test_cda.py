"""read_header(): the header facts of a CDA document, and readable XPaths."""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree

from pipelines.cda.header import NS, ins_candidates, read_header, readable_path

DATA = Path(__file__).resolve().parents[1] / "data"


def root_of(name: str) -> etree._Element:
    return etree.fromstring((DATA / name).read_bytes())


def test_header_of_the_minimal_n3_document() -> None:
    header = read_header(root_of("minimal_cda.xml"))
    assert header.document_id == "1.2.250.1.213.1.1.9^TEST-0001"
    assert (header.type_code, header.type_code_system) == ("11490-0", "2.16.840.1.113883.6.1")
    assert header.title == "Lettre de liaison (test)"
    assert header.effective_time == "20220101120000+0100"
    assert header.confidentiality == "N"
    assert header.language == "fr-FR"
    assert (header.patient_ins, header.patient_ins_oid) == ("279035121518989", "1.2.250.1.213.1.4.10")
    assert header.author_id == "1.2.250.1.71.4.2.1^801234567897"
    assert header.author_specialty == "G15_10/SM26"
    assert header.custodian_id == "1.2.250.1.71.4.2.2^1123456789"
    assert header.template_ids[-1] == "1.2.250.1.213.1.1.1.29"
    assert header.replaces == ()
    assert (header.set_id, header.version_number) == ("1.2.250.1.213.1.1.9^TEST-SET-0001", "1")
    assert header.nonxml_body_media_type is None


def test_header_of_the_n1_document_has_its_media_type() -> None:
    assert read_header(root_of("minimal_cda_n1.xml")).nonxml_body_media_type == "application/pdf"


def test_replaced_documents_and_ids_without_extension() -> None:
    root = root_of("minimal_cda.xml")
    root.find("h:id", NS).attrib.pop("extension")
    related = etree.SubElement(root, f"{{{NS['h']}}}relatedDocument", typeCode="RPLC")
    parent = etree.SubElement(related, f"{{{NS['h']}}}parentDocument")
    etree.SubElement(parent, f"{{{NS['h']}}}id", root="1.2.3", extension="OLD-1")
    other = etree.SubElement(root, f"{{{NS['h']}}}relatedDocument", typeCode="APND")
    etree.SubElement(etree.SubElement(other, f"{{{NS['h']}}}parentDocument"), f"{{{NS['h']}}}id", root="9.9")
    header = read_header(root)
    assert header.document_id == "1.2.250.1.213.1.1.9"
    assert header.replaces == ("1.2.3^OLD-1",)


def test_missing_items_read_as_empty_never_raise() -> None:
    header = read_header(etree.fromstring(b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>'))
    assert header.document_id == header.type_code == header.title == ""
    assert header.patient_ins is None and header.author_id is None and header.custodian_id is None


def test_to_dict_is_json_ready() -> None:
    data = read_header(root_of("minimal_cda.xml")).to_dict()
    assert json.loads(json.dumps(data))["template_ids"][0] == "2.16.840.1.113883.2.8.2.1"


def test_readable_path_indexes_only_repeated_siblings() -> None:
    root = root_of("minimal_cda.xml")
    role = root.find("h:recordTarget/h:patientRole", NS)
    assert readable_path(role.find("h:id", NS)) == "/ClinicalDocument/recordTarget/patientRole/id"
    role.insert(0, etree.Element(f"{{{NS['h']}}}id", root="1.2.3.4.567.8.9.10", extension="1"))
    (candidate,) = ins_candidates(root)
    assert candidate.location == "/ClinicalDocument/recordTarget/patientRole/id[2]"
    assert readable_path(root.findall("h:templateId", NS)[1]) == "/ClinicalDocument/templateId[2]"
