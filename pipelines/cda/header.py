"""CDA R2 header: the facts the hub needs, read from a parsed ClinicalDocument.

Owns: CdaHeader, reading it from an lxml element (read_header), the INS candidates of recordTarget,
and readable XPaths ("/ClinicalDocument/recordTarget/patientRole/id[1]") for findings.
Does not: parse bytes (validation does, with a hardened parser), judge the values, or do any I/O.
Missing items read as "" (required strings) or None: validation reports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

from lxml import etree

HL7_NS = "urn:hl7-org:v3"
NS = {"h": HL7_NS}
ROOT_TAG = f"{{{HL7_NS}}}ClinicalDocument"
#: recordTarget ids whose @root starts with this are INS candidates (DOMAIN.md §3 OID table).
INS_OID_FAMILY = "1.2.250.1.213.1.4."
PATIENT_IDS = "h:recordTarget/h:patientRole/h:id"
CUSTODIAN_ID = "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id"


@dataclass(frozen=True, slots=True)
class CdaHeader:
    document_id: str
    type_code: str
    type_code_system: str
    type_display: str
    title: str
    effective_time: str
    confidentiality: str
    language: str | None
    patient_ins: str | None
    patient_ins_oid: str | None
    author_id: str | None
    author_specialty: str | None
    custodian_id: str | None
    template_ids: tuple[str, ...]
    replaces: tuple[str, ...]
    set_id: str | None
    version_number: str | None
    nonxml_body_media_type: str | None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["template_ids"] = list(self.template_ids)
        data["replaces"] = list(self.replaces)
        return data


class InsCandidate(NamedTuple):
    matricule: str
    oid: str
    location: str


def read_header(root: etree._Element) -> CdaHeader:
    """Read the header of a ClinicalDocument element. Never raises for missing items."""
    ins = ins_candidates(root)
    return CdaHeader(
        document_id=_id(root.find("h:id", NS)) or "",
        type_code=_attr(root, "h:code", "code") or "",
        type_code_system=_attr(root, "h:code", "codeSystem") or "",
        type_display=_attr(root, "h:code", "displayName") or "",
        title=_text(root, "h:title"),
        effective_time=_attr(root, "h:effectiveTime", "value") or "",
        confidentiality=_attr(root, "h:confidentialityCode", "code") or "",
        language=_attr(root, "h:languageCode", "code"),
        patient_ins=ins[0].matricule if ins else None,
        patient_ins_oid=ins[0].oid if ins else None,
        author_id=_id(root.find("h:author/h:assignedAuthor/h:id", NS)),
        author_specialty=_attr(root, "h:author/h:assignedAuthor/h:code", "code"),
        custodian_id=_id(root.find(CUSTODIAN_ID, NS)),
        template_ids=tuple(t.get("root") or "" for t in root.findall("h:templateId", NS) if t.get("root")),
        replaces=_replaces(root),
        set_id=_id(root.find("h:setId", NS)),
        version_number=_attr(root, "h:versionNumber", "value"),
        nonxml_body_media_type=_attr(root, "h:component/h:nonXMLBody/h:text", "mediaType"),
    )


def ins_candidates(root: etree._Element) -> tuple[InsCandidate, ...]:
    """recordTarget/patientRole/id elements whose @root is in the INS OID family, in document order."""
    return tuple(
        InsCandidate(el.get("extension") or "", el.get("root") or "", readable_path(el))
        for el in root.findall(PATIENT_IDS, NS)
        if (el.get("root") or "").startswith(INS_OID_FAMILY)
    )


def readable_path(el: etree._Element) -> str:
    """XPath with local names, e.g. /ClinicalDocument/recordTarget/patientRole/id[1] ([n] only if needed)."""
    steps: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        steps.append(_step(node))
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


def _step(node: etree._Element) -> str:
    name = etree.QName(node).localname
    parent = node.getparent()
    if parent is None:
        return name
    same = [s for s in parent if s.tag == node.tag]
    return name if len(same) == 1 else f"{name}[{same.index(node) + 1}]"


def _attr(root: etree._Element, path: str, name: str) -> str | None:
    el = root.find(path, NS)
    return None if el is None else el.get(name)


def _text(root: etree._Element, path: str) -> str:
    el = root.find(path, NS)
    return "" if el is None else "".join(str(t) for t in el.itertext()).strip()


def _id(el: etree._Element | None) -> str | None:
    """An II as "root^extension", or "root" alone; None when absent or without @root."""
    if el is None or not el.get("root"):
        return None
    extension = el.get("extension")
    return f"{el.get('root')}^{extension}" if extension else str(el.get("root"))


def _replaces(root: etree._Element) -> tuple[str, ...]:
    ids = root.findall("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", NS)
    return tuple(i for i in (_id(el) for el in ids) if i)
