"""One METADATA.XML of an IHE XDM archive (ebRIM 3.0 SubmitObjectsRequest) -> XdmEntry values (pure).

Owns: XdmEntry (an XDS DocumentEntry: ids, patient, codes, confidentiality, the `URI`, `hash` and `size`
slots, the extra-metadata `action`), read_metadata() and the ebRIM scheme ids.  METADATA.XML goes
through the hardened parser of pipelines.cda.validation (no DTD, no entity, no network; any DOCTYPE
refused): XML attacks become `xdm.metadata-unsafe`.
Does not: open the zip or read the documents (pipelines.mail.core.xdm).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from hub.findings import Finding
from pipelines.cda.validation import parse_untrusted
from pipelines.mail.core.xdm_findings import finding, printable, too_many_members

RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
SUBMIT_OBJECTS_REQUEST = f"{{{LCM_NS}}}SubmitObjectsRequest"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
PATIENT_ID_SCHEME = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
#: XdmEntry field -> ebRIM classificationScheme (DOMAIN §2.2).
CLASSIFICATION_SCHEMES: Mapping[str, str] = {
    "type_code": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "class_code": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "format_code": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "confidentiality": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
}
_RIM = f"{{{RIM_NS}}}"


@dataclass(frozen=True, slots=True)
class XdmEntry:
    """One ebRIM ExtrinsicObject (XDS DocumentEntry).  Absent items read as "", () or None."""

    entry_id: str  # the ExtrinsicObject @id
    subset: str  # subset folder, e.g. "SUBSET01" or "SS000001"
    uri: str  # URI slot, relative to the subset folder
    member: str  # zip member the URI resolved to; "" until resolved
    unique_id: str
    patient_id: str  # CX as given: "<INS>^^^&<OID>&ISO"
    mime_type: str
    hash: str  # SHA-1 hex as declared, lower-cased
    size: int | None
    type_code: str
    class_code: str
    format_code: str
    confidentiality: tuple[str, ...]  # N/R/V plus MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX
    title: str = ""
    creation_time: str = ""
    action: str = ""  # extra metadata "action": "D" delete, "C" change, "" none (DOMAIN §4.3)

    @property
    def patient_ins(self) -> str:
        """CX.1 of patientId (the INS matricule for a French patient)."""
        return self.patient_id.split("^", 1)[0]

    @property
    def patient_oid(self) -> str:
        """The universal id of CX.4 (`&<OID>&ISO`), "" when absent."""
        parts = self.patient_id.split("^")
        authority = parts[3].split("&") if len(parts) > 3 else []
        return authority[1] if len(authority) > 1 else ""


def read_metadata(xml: bytes, *, subset: str, location: str, max_entries: int = 100
                  ) -> tuple[tuple[XdmEntry, ...], tuple[Finding, ...]]:
    """Entries of one METADATA.XML (bytes already size-capped by the caller)."""
    root, problem = parse_untrusted(xml)
    if root is None:
        unsafe = problem is not None and problem.rule == "xml.dtd-forbidden"
        return (), (finding("xdm.metadata-unsafe" if unsafe else "xdm.metadata-malformed", location),)
    if root.tag != SUBMIT_OBJECTS_REQUEST:
        return (), (finding("xdm.metadata-invalid", location),)
    objects = list(root.iter(f"{_RIM}ExtrinsicObject"))
    findings: list[Finding] = []
    if not objects:
        findings.append(finding("xdm.no-documents", location))
    if len(objects) > max_entries:
        findings.append(too_many_members(location, max_entries))
    entries = tuple(_entry(el, subset) for el in objects[:max_entries])
    findings += [finding("xdm.metadata-incomplete", f"{location}#{printable(e.entry_id)}")
                 for e in entries if not (e.unique_id and e.patient_id)]
    return entries, tuple(findings)


# -- ebRIM ------------------------------------------------------------------------------------------


def _entry(el: etree._Element, subset: str) -> XdmEntry:
    size = _first(_slot(el, "size"))
    return XdmEntry(
        entry_id=el.get("id") or "",
        subset=subset,
        uri=_uri(_slot(el, "URI")),
        member="",
        unique_id=_external_id(el, UNIQUE_ID_SCHEME),
        patient_id=_external_id(el, PATIENT_ID_SCHEME),
        mime_type=el.get("mimeType") or "",
        hash=_first(_slot(el, "hash")).lower(),
        size=int(size) if size.isdigit() else None,
        type_code=_first(_codes(el, "type_code")),
        class_code=_first(_codes(el, "class_code")),
        format_code=_first(_codes(el, "format_code")),
        confidentiality=_codes(el, "confidentiality"),
        title=_name(el),
        creation_time=_first(_slot(el, "creationTime")),
        action=_first(_action(el)).upper(),
    )


def _slot(el: etree._Element, name: str) -> tuple[str, ...]:
    for slot in el.iterchildren(f"{_RIM}Slot"):
        if slot.get("name") == name:
            return tuple((v.text or "").strip() for v in slot.iter(f"{_RIM}Value"))
    return ()


def _action(el: etree._Element) -> tuple[str, ...]:
    """The extra-metadata "action" slot: named "action" or "<urn>:action", any case."""
    for slot in el.iterchildren(f"{_RIM}Slot"):
        if (slot.get("name") or "").rsplit(":", 1)[-1].lower() == "action":
            return tuple((v.text or "").strip() for v in slot.iter(f"{_RIM}Value"))
    return ()


def _uri(values: tuple[str, ...]) -> str:
    """The URI slot; long URIs come split as "1|part", "2|part"... (ITI TF-3 4.2.3.2.24)."""
    split = [v.partition("|") for v in values]
    if len(values) > 1 and all(n.isdigit() and sep for n, sep, _ in split):
        return "".join(rest for _, _, rest in sorted(split, key=lambda p: int(p[0])))
    return _first(values)


def _codes(el: etree._Element, scheme_field: str) -> tuple[str, ...]:
    scheme = CLASSIFICATION_SCHEMES[scheme_field]
    return tuple(c.get("nodeRepresentation") or "" for c in el.iterchildren(f"{_RIM}Classification")
                 if c.get("classificationScheme") == scheme)


def _external_id(el: etree._Element, scheme: str) -> str:
    found = (x.get("value") or "" for x in el.iterchildren(f"{_RIM}ExternalIdentifier")
             if x.get("identificationScheme") == scheme)
    return next(found, "")


def _name(el: etree._Element) -> str:
    localized = el.find(f"{_RIM}Name/{_RIM}LocalizedString")
    return "" if localized is None else localized.get("value") or ""


def _first(values: tuple[str, ...]) -> str:
    return values[0] if values else ""
