"""The coded entries of a CNAM-HR_2021.01 document, one per reimbursed act (pure, lxml), and the XML helpers.

Owns: how each act kind is coded (CODE_SYSTEMS, as in the ANS example examples/cda/CNAM-HR_2021.01.xml):
Médicaments (CIP13: FR-Traitement substanceAdministration), Dispositifs médicaux (LPP: FR-Dispositif-medical
supply), Soins médicaux et dentaires (NGAP, CCAM: FR-Acte procedure), Biologie (NABM: FR-Acte procedure);
their ids (UUIDs derived from the act reference, so the same acts give the same bytes); `el`/`q`, the
HL7-namespace element helpers the whole document uses.
Does not: build the header, the sections or their tables (pipelines.insurer.core.cnam_hr).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from lxml import etree

from pipelines.insurer.core.history import ActKind, ReimbursedAct

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_ACT_NAMESPACE = uuid.UUID("6B3E58B4-8B0B-5C35-9E56-2F4C0E6A9D21")

IDNPS_ROOT = "1.2.250.1.71.4.2.1"       # professionals (IDNPS = 8 + RPPS)
STRUCTURE_ROOT = "1.2.250.1.71.4.2.2"   # structures (extension: type prefix + number; 1 = FINESS)

#: act kind -> (codeSystem, codeSystemName) of its code, as in the ANS example.
CODE_SYSTEMS: dict[ActKind, tuple[str, str]] = {
    ActKind.CIP13: ("1.2.250.1.215.200.1.1.1", "JDV_BDM_CNAM-HR_CISIS"),
    ActKind.LPP: ("1.2.250.1.215.200.2.1", "JDV_LPP_CNAM-HR_CISIS"),
    ActKind.NGAP: ("1.2.250.1.215.200.3.3", "JDV_sejours_actes_CNAM-HR_CISIS"),
    ActKind.CCAM: ("1.2.250.1.215.200.3.4", "JDV_sejours_actes_CNAM-HR_CISIS"),
    ActKind.NABM: ("1.2.250.1.215.200.4.1", "JDV_NABM_CNAM-HR_CISIS"),
}


def q(tag: str) -> str:
    return f"{{{HL7}}}{tag}"


def el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    """A child element in the HL7 namespace; `xsi_type` becomes xsi:type."""
    element = etree.SubElement(parent, q(tag))
    for name, value in attrs.items():
        element.set(f"{{{XSI}}}type" if name == "xsi_type" else name, value)
    if text is not None:
        element.text = text
    return element


def entry_id(act: ReimbursedAct, role: str) -> str:
    """A stable entry id: a UUID derived from the act reference and the entry's role."""
    return str(uuid.uuid5(_ACT_NAMESPACE, f"{role}:{act.act_ref}")).upper()


# -- entries ---------------------------------------------------------------------------------------------


def _medication(entry: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """FR-Traitement: the medication (CIP13 code) and its delivery (FR-Prescription supply)."""
    given = el(entry, "substanceAdministration", classCode="SBADM", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.24", "1.3.6.1.4.1.19376.1.5.3.1.4.7", "1.2.250.1.213.1.1.3.42",
                     "1.3.6.1.4.1.19376.1.5.3.1.4.7.1"):
        el(given, "templateId", root=template)
    el(given, "id", root=entry_id(act, "act"))
    el(el(given, "text"), "reference", value=f"#{ref}")
    el(given, "statusCode", code="completed")
    period = el(given, "effectiveTime", xsi_type="IVL_TS")
    el(period, "low", nullFlavor="UNK")
    el(period, "high", nullFlavor="UNK")
    el(given, "effectiveTime", operator="A")
    product = el(el(given, "consumable"), "manufacturedProduct")
    for template in ("2.16.840.1.113883.10.20.1.53", "1.3.6.1.4.1.19376.1.5.3.1.4.7.2", "1.2.250.1.213.1.1.3.43"):
        el(product, "templateId", root=template)
    material = el(product, "manufacturedMaterial")
    _coded(el(material, "code"), act, ref)
    el(material, "name", act.label)
    supply = el(el(given, "entryRelationship", typeCode="REFR", inversionInd="false"), "supply",
                 classCode="SPLY", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.34", "1.3.6.1.4.1.19376.1.5.3.1.4.7.3", "1.2.250.1.213.1.1.3.44"):
        el(supply, "templateId", root=template)
    el(supply, "id", root=entry_id(act, "supply"))
    el(supply, "quantity", value=str(act.quantity))
    _performer(supply, act, typeCode="PRF", timed=True)
    _prescriber(supply, act)


def _device(entry: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """FR-Dispositif-medical: the delivery of a device (LPP code)."""
    supply = el(entry, "supply", classCode="SPLY", moodCode="EVN")
    el(supply, "templateId", root="2.16.840.1.113883.10.20.1.34")
    el(supply, "templateId", root="1.2.250.1.213.1.1.3.20")
    el(supply, "id", root=entry_id(act, "act"))
    el(el(supply, "text"), "reference", value=f"#{ref}")
    el(el(supply, "effectiveTime", xsi_type="IVL_TS"), "low", nullFlavor="UNK")
    el(supply, "quantity", value=str(act.quantity))
    _performer(supply, act, typeCode="PRF", timed=True)
    _prescriber(supply, act)
    role = el(el(supply, "participant", typeCode="DEV"), "participantRole", classCode="MANU")
    device = el(role, "playingDevice", classCode="DEV", determinerCode="INSTANCE")
    _coded(el(device, "code"), act, ref)


def _procedure(entry: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """FR-Acte: a medical, dental or biology act (NGAP, CCAM or NABM code) on its date."""
    procedure = el(entry, "procedure", classCode="PROC", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.29", "1.3.6.1.4.1.19376.1.5.3.1.4.19", "1.2.250.1.213.1.1.3.62"):
        el(procedure, "templateId", root=template)
    el(procedure, "id", root=entry_id(act, "act"))
    system, system_name = CODE_SYSTEMS[act.kind]
    el(procedure, "code", code=act.code, displayName=act.label, codeSystem=system, codeSystemName=system_name)
    el(el(procedure, "text"), "reference", value=f"#{ref}")
    el(procedure, "statusCode", code="completed")
    el(procedure, "effectiveTime", value=act.care_date.replace("-", ""))
    if act.executant:
        _performer(procedure, act, timed=False)
    _prescriber(procedure, act)


def _coded(code: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """A product code as the example writes it: originalText pointing at the table, then the translation."""
    el(el(code, "originalText"), "reference", value=f"#{ref}")
    system, system_name = CODE_SYSTEMS[act.kind]
    el(code, "translation", code=act.code, displayName=act.label, codeSystem=system, codeSystemName=system_name)


def _performer(parent: etree._Element, act: ReimbursedAct, *, timed: bool, **attrs: str) -> None:
    """Who performed or delivered: an IDNPS, or an establishment by FINESS, or unknown."""
    performer = el(parent, "performer", **attrs)
    if timed:
        el(performer, "time", value=act.care_date.replace("-", ""))
    entity = el(performer, "assignedEntity") if timed else el(performer, "assignedEntity", classCode="ASSIGNED")
    if len(act.executant) == 12:
        el(entity, "id", root=IDNPS_ROOT, extension=act.executant)
        return
    el(entity, "id", nullFlavor="UNK")
    if act.executant:
        el(el(entity, "representedOrganization"), "id", root=STRUCTURE_ROOT, extension=f"1{act.executant}")


def _prescriber(parent: etree._Element, act: ReimbursedAct) -> None:
    """The prescriber as the entry's author (IDNPS), when the batch names one."""
    if not act.prescriber:
        return
    author = el(parent, "author")
    el(author, "time", nullFlavor="UNK")
    el(el(author, "assignedAuthor"), "id", root=IDNPS_ROOT, extension=act.prescriber)


ENTRIES: dict[ActKind, Callable[[etree._Element, ReimbursedAct, str], None]] = {
    ActKind.CIP13: _medication, ActKind.LPP: _device, ActKind.NGAP: _procedure, ActKind.CCAM: _procedure,
    ActKind.NABM: _procedure,
}
