"""Build a CNAM-HR_2021.01 "Données de remboursement" CDA from reimbursed acts (pure, lxml).

Owns: the header (templateIds of the CNAM-HR model, code REMB, author ALIM_AM, custodian Assurance Maladie,
as in the ANS example examples/cda/CNAM-HR_2021.01.xml), the recordTarget from the registry's
PatientRecord, and the body: the model's eight sections in its order, each with a human-readable table
and one coded entry per act, modelled on the example's entries:
  Médicaments (CIP13: FR-Traitement substanceAdministration), Dispositifs médicaux (LPP: FR-Dispositif-
  medical supply), Soins médicaux et dentaires (NGAP, CCAM: FR-Acte procedure), Biologie (NABM: FR-Acte
  procedure).  Vaccinations, Hospitalisations and Radiologie (required by the model, [1..1]) carry no act
  from a batch and say so.
Rule: the same acts, patient, id and time give the same bytes (entries are sorted, their ids are UUIDs
derived from the act references), so a document filed again is byte-for-byte the same one.
Does not: parse or check the acts (pipelines.insurer.core.reimbursements did) or choose the document id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from hub.records import PatientRecord
from pipelines.insurer.core.history import ActKind, ReimbursedAct

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_NSMAP = {None: HL7, "xsi": XSI}
_ACT_NAMESPACE = uuid.UUID("6B3E58B4-8B0B-5C35-9E56-2F4C0E6A9D21")

IDNPS_ROOT = "1.2.250.1.71.4.2.1"       # professionals (IDNPS = 8 + RPPS)
STRUCTURE_ROOT = "1.2.250.1.71.4.2.2"   # structures (extension: type prefix + number; 1 = FINESS)
CNAM_ID = "318003502400041"             # Assurance Maladie as the ANS example names it
CNAM_AUTHOR_ID = "518003502400041/1.2.250.1.215.1.2"
CNAM_NAME = "Assurance Maladie"

#: act kind -> (codeSystem, codeSystemName) of its code, as in the ANS example.
CODE_SYSTEMS: dict[ActKind, tuple[str, str]] = {
    ActKind.CIP13: ("1.2.250.1.215.200.1.1.1", "JDV_BDM_CNAM-HR_CISIS"),
    ActKind.LPP: ("1.2.250.1.215.200.2.1", "JDV_LPP_CNAM-HR_CISIS"),
    ActKind.NGAP: ("1.2.250.1.215.200.3.3", "JDV_sejours_actes_CNAM-HR_CISIS"),
    ActKind.CCAM: ("1.2.250.1.215.200.3.4", "JDV_sejours_actes_CNAM-HR_CISIS"),
    ActKind.NABM: ("1.2.250.1.215.200.4.1", "JDV_NABM_CNAM-HR_CISIS"),
}
_GENDERS = {"M": ("M", "Masculin"), "1": ("M", "Masculin"), "F": ("F", "Féminin"), "2": ("F", "Féminin")}
_MENTION = (
    "Les données affichées sont le reflet des informations issues des procédures de remboursement ou de prise "
    "en charge détenues par l'Assurance Maladie pour la période de soins référencée.",
    "Elles sont fournies à titre purement informatif et leur exhaustivité ne peut être garantie, notamment en "
    "cas de changement administratif durant cette période de soins.",
    "Toute interprétation ou toute décision, de quelle que nature que ce soit, se basant sur ces données relève "
    "de la seule responsabilité de la personne qui les consulte.",
)
_NOTHING = "Aucune donnée de cette rubrique dans ce document."


def _q(tag: str) -> str:
    return f"{{{HL7}}}{tag}"


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    """A child element in the HL7 namespace; `xsi_type` becomes xsi:type."""
    element = etree.SubElement(parent, _q(tag))
    for name, value in attrs.items():
        element.set(f"{{{XSI}}}type" if name == "xsi_type" else name, value)
    if text is not None:
        element.text = text
    return element


@dataclass(frozen=True, slots=True)
class Section:
    """One section of the model: conformance, LOINC code, title, which kinds it lists and how."""

    template_ids: tuple[str, ...]
    code: str
    display: str
    title: str
    kinds: frozenset[ActKind] = frozenset()
    prefix: str = ""
    translation: tuple[str, str] | None = None
    date_header: str = "Date de l'acte"
    code_header: str = "Code de l'acte"
    label_header: str = "Libellé de l'acte"
    performer_header: str = "Réalisé par"


_ACTS_TEMPLATES = ("1.3.6.1.4.1.19376.1.5.3.1.1.13.2.11", "1.2.250.1.213.1.1.2.118")
SECTIONS: tuple[Section, ...] = (
    Section(("2.16.840.1.113883.10.20.1.8", "1.3.6.1.4.1.19376.1.5.3.1.3.19", "1.2.250.1.213.1.1.2.143"),
            "10160-0", "Médication administrée", "Médicaments", frozenset({ActKind.CIP13}), "MED",
            date_header="Date de délivrance", code_header="Code CIP", label_header="Libellé du médicament",
            performer_header="Délivré par"),
    Section(("2.16.840.1.113883.10.20.1.6", "1.3.6.1.4.1.19376.1.5.3.1.3.23", "1.2.250.1.213.1.1.2.147"),
            "11369-6", "Historique des vaccinations", "Vaccinations"),
    Section(("2.16.840.1.113883.10.20.1.7", "1.3.6.1.4.1.19376.1.5.3.1.1.5.3.5", "1.2.250.1.213.1.1.2.1"),
            "46264-8", "Dispositifs médicaux", "Dispositifs médicaux", frozenset({ActKind.LPP}), "DM",
            date_header="Date de délivrance", code_header="Code LPP", label_header="Libellé du dispositif médical",
            performer_header="Délivré par"),
    Section(("2.16.840.1.113883.10.20.1.3", "1.3.6.1.4.1.19376.1.5.3.1.1.5.3.3", "1.2.250.1.213.1.1.2.76"),
            "46240-8", "Historique des rencontres", "Hospitalisations"),
    Section(_ACTS_TEMPLATES, "29554-3", "Actes", "Soins médicaux et dentaires",
            frozenset({ActKind.NGAP, ActKind.CCAM}), "ACTE", ("67803-7", "Liste des actes")),
    Section(_ACTS_TEMPLATES, "29554-3", "Actes", "Radiologie", translation=("18726-0", "Radiologie")),
    Section(_ACTS_TEMPLATES, "29554-3", "Actes", "Biologie", frozenset({ActKind.NABM}), "BIO",
            ("26436-6", "Biologie")),
)


def build_history(ins: str, ins_oid: str, acts: Sequence[ReimbursedAct], *, patient: PatientRecord,
                  document_id: str, produced_at: datetime) -> bytes:
    """The whole CDA as UTF-8 bytes with an XML declaration."""
    when = produced_at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    root = etree.Element(_q("ClinicalDocument"), nsmap=_NSMAP)  # type: ignore[arg-type]  # stubs: None key
    _header(root, document_id, when)
    _record_target(root, ins, ins_oid, patient)
    _author(root, when)
    _custodian(root)
    _legal_authenticator(root, when)
    _documentation_of(root, acts)
    _component_of(root)
    body = _el(_el(root, "component"), "structuredBody")
    _mention(body)
    ordered = sorted(acts, key=lambda a: (a.care_date, a.act_ref), reverse=True)
    for section in SECTIONS:
        _section(body, section, [a for a in ordered if a.kind in section.kinds])
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


# -- header ----------------------------------------------------------------------------------------------


def _header(root: etree._Element, document_id: str, when: str) -> None:
    """The CNAM-HR header items before recordTarget: conformance, id, type REMB, time, confidentiality."""
    id_root, _, extension = document_id.partition("^")
    _el(root, "realmCode", code="FR")
    _el(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    _el(root, "templateId", root="2.16.840.1.113883.2.8.2.1")
    _el(root, "templateId", root="1.2.250.1.213.1.1.1.1")
    _el(root, "templateId", root="1.2.250.1.213.1.1.1.36", extension="2021.01")
    _el(root, "id", root=id_root, extension=extension)
    _el(root, "code", code="REMB", codeSystem="1.2.250.1.213.1.1.4.12", displayName="Données de remboursement")
    _el(root, "title", "Données de remboursement")
    _el(root, "effectiveTime", value=when)
    _el(root, "confidentialityCode", code="N", displayName="Normal", codeSystem="2.16.840.1.113883.5.25",
        codeSystemName="Confidentiality")
    _el(root, "languageCode", code="fr-FR")
    _el(root, "setId", root=id_root, extension=extension)
    _el(root, "versionNumber", value="1")


def _record_target(root: etree._Element, ins: str, ins_oid: str, patient: PatientRecord) -> None:
    """The patient: the batch's INS, and the registry's identity traits (name, sex, birth date, place)."""
    role = _el(_el(root, "recordTarget"), "patientRole")
    _el(role, "id", root=ins_oid, extension=ins)
    person = _el(role, "patient", classCode="PSN")
    _name(person, patient)
    code, display = _GENDERS.get(patient.sex.strip().upper(), ("U", "Inconnu"))
    _el(person, "administrativeGenderCode", code=code, displayName=display, codeSystem="2.16.840.1.113883.5.1")
    birth = patient.birth_date.replace("-", "")
    if len(birth) == 8 and birth.isdigit():
        _el(person, "birthTime", value=birth)
    else:
        _el(person, "birthTime", nullFlavor="UNK")
    if patient.birth_place.strip():
        _el(_el(_el(_el(person, "birthplace"), "place"), "addr"), "county", patient.birth_place.strip())


def _name(person: etree._Element, patient: PatientRecord) -> None:
    """Birth name (BR) and given names, as the ANS example writes them; nullFlavor when unknown."""
    family, given = patient.birth_name.strip(), patient.given_names.strip()
    if not family:
        _el(person, "name", nullFlavor="UNK")
        return
    name = _el(person, "name")
    _el(name, "family", family, qualifier="BR")
    if given:
        _el(name, "given", given)
        _el(name, "given", given.split()[0], qualifier="BR")


def _author(root: etree._Element, when: str) -> None:
    """ALIM_AM: the document is fed automatically from Assurance Maladie's information system."""
    author = _el(root, "author")
    _el(author, "time", value=when)
    assigned = _el(author, "assignedAuthor")
    _el(assigned, "id", root=IDNPS_ROOT, extension=CNAM_AUTHOR_ID)
    _el(assigned, "code", code="ALIM_AM", displayName="Alimentation auto à partir du SI de l'Ass Maladie",
        codeSystem="1.2.250.1.213.1.1.4.6")
    _el(assigned, "addr", nullFlavor="NASK")
    _el(assigned, "telecom", nullFlavor="NASK")
    device = _el(assigned, "assignedAuthoringDevice")
    _el(device, "manufacturerModelName", "MES Hub")
    _el(device, "softwareName", CNAM_NAME)
    _cnam(assigned, "representedOrganization")


def _cnam(parent: etree._Element, tag: str) -> None:
    """Assurance Maladie as an organisation (id and name) under `tag`."""
    organization = _el(parent, tag)
    _el(organization, "id", root=STRUCTURE_ROOT, extension=CNAM_ID)
    _el(organization, "name", CNAM_NAME)


def _custodian(root: etree._Element) -> None:
    _cnam(_el(_el(root, "custodian"), "assignedCustodian"), "representedCustodianOrganization")


def _legal_authenticator(root: etree._Element, when: str) -> None:
    """Assurance Maladie takes responsibility for the document, as in the ANS example."""
    legal = _el(root, "legalAuthenticator")
    _el(legal, "time", value=when)
    _el(legal, "signatureCode", code="S")
    entity = _el(legal, "assignedEntity")
    _el(entity, "id", root=IDNPS_ROOT, extension=CNAM_AUTHOR_ID)
    _el(entity, "addr", nullFlavor="NASK")
    _el(entity, "telecom", nullFlavor="NASK")
    name = _el(_el(entity, "assignedPerson"), "name")
    _el(name, "given", ".")
    _el(name, "family", CNAM_NAME)


def _documentation_of(root: etree._Element, acts: Sequence[ReimbursedAct]) -> None:
    """The period covered (first and last date of care) and the AMO as performer."""
    event = _el(_el(root, "documentationOf"), "serviceEvent")
    period = _el(event, "effectiveTime")
    dates = sorted(a.care_date.replace("-", "") for a in acts)
    _el(period, "low", value=dates[0])
    _el(period, "high", value=dates[-1])
    entity = _el(_el(event, "performer", typeCode="PRF"), "assignedEntity")
    _el(entity, "id", nullFlavor="NA")
    _el(_el(entity, "representedOrganization"), "standardIndustryClassCode", code="AMO",
        displayName="Organisme d'assurance maladie obligatoire", codeSystem="1.2.250.1.213.1.1.4.9")


def _component_of(root: etree._Element) -> None:
    """The encounter of the ANS example: no period, a social security body (SA24)."""
    encounter = _el(_el(root, "componentOf"), "encompassingEncounter")
    _el(encounter, "effectiveTime", nullFlavor="NA")
    facility = _el(_el(encounter, "location"), "healthCareFacility")
    _el(facility, "code", code="SA24", displayName="Organisme de sécurité sociale", codeSystem="1.2.250.1.71.4.2.4")


# -- body ------------------------------------------------------------------------------------------------


def _mention(body: etree._Element) -> None:
    """The mandatory 'Usage et Responsabilités' section with the model's wording."""
    section = _el(_el(body, "component"), "section")
    for template in ("2.16.840.1.113883.10.12.201", "1.3.6.1.4.1.19376.1.4.1.2.16", "1.2.250.1.213.1.1.2.73"):
        _el(section, "templateId", root=template)
    _el(section, "code", code="55112-7", displayName="Commentaire sur le document",
        codeSystem="2.16.840.1.113883.6.1", codeSystemName="LOINC")
    _el(section, "title", "Usage et Responsabilités")
    text = _el(section, "text", _MENTION[0], ID="mention")
    for sentence in _MENTION[1:]:
        _el(text, "br").tail = sentence


def _section(body: etree._Element, spec: Section, acts: Sequence[ReimbursedAct]) -> None:
    """One section: conformance, code, title, then its table and one entry per act (or a 'nothing' line)."""
    section = _el(_el(body, "component"), "section")
    for template in spec.template_ids:
        _el(section, "templateId", root=template)
    _el(section, "id", nullFlavor="UNK")
    code = _el(section, "code", code=spec.code, displayName=spec.display, codeSystem="2.16.840.1.113883.6.1",
               codeSystemName="LOINC")
    if spec.translation is not None:
        _el(code, "translation", code=spec.translation[0], displayName=spec.translation[1],
            codeSystem="2.16.840.1.113883.6.1")
    _el(section, "title", spec.title)
    text = _el(section, "text")
    if not acts:
        _el(text, "paragraph", _NOTHING)
        return
    refs = [f"{spec.prefix}{n:03d}" for n in range(1, len(acts) + 1)]
    _table(text, spec, acts, refs)
    for act, ref in zip(acts, refs, strict=True):
        _ENTRIES[act.kind](_el(section, "entry"), act, ref)


def _table(text: etree._Element, spec: Section, acts: Sequence[ReimbursedAct], refs: Sequence[str]) -> None:
    """The human-readable table of a section: one row per act, its label in a content the entry points at."""
    table = _el(text, "table", border="0")
    head = _el(_el(table, "thead"), "tr")
    for title in (spec.date_header, spec.code_header, spec.label_header, "Quantité", "Prescrit par",
                  spec.performer_header, "Montant de la dépense", "Montant remboursé"):
        _el(head, "th", title)
    rows = _el(table, "tbody")
    for act, ref in zip(acts, refs, strict=True):
        row = _el(rows, "tr")
        _el(row, "td", _french_date(act.care_date))
        _el(row, "td", act.code)
        _el(_el(row, "td"), "content", act.label, ID=ref)
        _el(row, "td", str(act.quantity))
        _el(row, "td", _who(act.prescriber))
        _el(row, "td", _who(act.executant))
        _el(row, "td", _euros(act.paid_cents))
        _el(row, "td", _euros(act.reimbursed_cents))


def _french_date(iso: str) -> str:
    return f"{iso[8:10]}/{iso[5:7]}/{iso[0:4]}"


def _euros(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d} €"


def _who(identifier: str) -> str:
    """How the table shows a prescriber or executant identifier."""
    if not identifier:
        return "Non communiqué"
    return f"IDNPS {identifier}" if len(identifier) == 12 else f"FINESS {identifier}"


def _uuid(act: ReimbursedAct, role: str) -> str:
    """A stable entry id: a UUID derived from the act reference and the entry's role."""
    return str(uuid.uuid5(_ACT_NAMESPACE, f"{role}:{act.act_ref}")).upper()


# -- entries ---------------------------------------------------------------------------------------------


def _medication(entry: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """FR-Traitement: the medication (CIP13 code) and its delivery (FR-Prescription supply)."""
    given = _el(entry, "substanceAdministration", classCode="SBADM", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.24", "1.3.6.1.4.1.19376.1.5.3.1.4.7", "1.2.250.1.213.1.1.3.42",
                     "1.3.6.1.4.1.19376.1.5.3.1.4.7.1"):
        _el(given, "templateId", root=template)
    _el(given, "id", root=_uuid(act, "act"))
    _el(_el(given, "text"), "reference", value=f"#{ref}")
    _el(given, "statusCode", code="completed")
    period = _el(given, "effectiveTime", xsi_type="IVL_TS")
    _el(period, "low", nullFlavor="UNK")
    _el(period, "high", nullFlavor="UNK")
    _el(given, "effectiveTime", operator="A")
    product = _el(_el(given, "consumable"), "manufacturedProduct")
    for template in ("2.16.840.1.113883.10.20.1.53", "1.3.6.1.4.1.19376.1.5.3.1.4.7.2", "1.2.250.1.213.1.1.3.43"):
        _el(product, "templateId", root=template)
    material = _el(product, "manufacturedMaterial")
    _coded(_el(material, "code"), act, ref)
    _el(material, "name", act.label)
    supply = _el(_el(given, "entryRelationship", typeCode="REFR", inversionInd="false"), "supply",
                 classCode="SPLY", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.34", "1.3.6.1.4.1.19376.1.5.3.1.4.7.3", "1.2.250.1.213.1.1.3.44"):
        _el(supply, "templateId", root=template)
    _el(supply, "id", root=_uuid(act, "supply"))
    _el(supply, "quantity", value=str(act.quantity))
    _performer(supply, act, typeCode="PRF", timed=True)
    _prescriber(supply, act)


def _device(entry: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """FR-Dispositif-medical: the delivery of a device (LPP code)."""
    supply = _el(entry, "supply", classCode="SPLY", moodCode="EVN")
    _el(supply, "templateId", root="2.16.840.1.113883.10.20.1.34")
    _el(supply, "templateId", root="1.2.250.1.213.1.1.3.20")
    _el(supply, "id", root=_uuid(act, "act"))
    _el(_el(supply, "text"), "reference", value=f"#{ref}")
    _el(_el(supply, "effectiveTime", xsi_type="IVL_TS"), "low", nullFlavor="UNK")
    _el(supply, "quantity", value=str(act.quantity))
    _performer(supply, act, typeCode="PRF", timed=True)
    _prescriber(supply, act)
    role = _el(_el(supply, "participant", typeCode="DEV"), "participantRole", classCode="MANU")
    device = _el(role, "playingDevice", classCode="DEV", determinerCode="INSTANCE")
    _coded(_el(device, "code"), act, ref)


def _procedure(entry: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """FR-Acte: a medical, dental or biology act (NGAP, CCAM or NABM code) on its date."""
    procedure = _el(entry, "procedure", classCode="PROC", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.29", "1.3.6.1.4.1.19376.1.5.3.1.4.19", "1.2.250.1.213.1.1.3.62"):
        _el(procedure, "templateId", root=template)
    _el(procedure, "id", root=_uuid(act, "act"))
    system, system_name = CODE_SYSTEMS[act.kind]
    _el(procedure, "code", code=act.code, displayName=act.label, codeSystem=system, codeSystemName=system_name)
    _el(_el(procedure, "text"), "reference", value=f"#{ref}")
    _el(procedure, "statusCode", code="completed")
    _el(procedure, "effectiveTime", value=act.care_date.replace("-", ""))
    if act.executant:
        _performer(procedure, act, timed=False)
    _prescriber(procedure, act)


def _coded(code: etree._Element, act: ReimbursedAct, ref: str) -> None:
    """A product code as the example writes it: originalText pointing at the table, then the translation."""
    _el(_el(code, "originalText"), "reference", value=f"#{ref}")
    system, system_name = CODE_SYSTEMS[act.kind]
    _el(code, "translation", code=act.code, displayName=act.label, codeSystem=system, codeSystemName=system_name)


def _performer(parent: etree._Element, act: ReimbursedAct, *, timed: bool, **attrs: str) -> None:
    """Who performed or delivered: an IDNPS, or an establishment by FINESS, or unknown."""
    performer = _el(parent, "performer", **attrs)
    if timed:
        _el(performer, "time", value=act.care_date.replace("-", ""))
    entity = _el(performer, "assignedEntity") if timed else _el(performer, "assignedEntity", classCode="ASSIGNED")
    if len(act.executant) == 12:
        _el(entity, "id", root=IDNPS_ROOT, extension=act.executant)
        return
    _el(entity, "id", nullFlavor="UNK")
    if act.executant:
        _el(_el(entity, "representedOrganization"), "id", root=STRUCTURE_ROOT, extension=f"1{act.executant}")


def _prescriber(parent: etree._Element, act: ReimbursedAct) -> None:
    """The prescriber as the entry's author (IDNPS), when the batch names one."""
    if not act.prescriber:
        return
    author = _el(parent, "author")
    _el(author, "time", nullFlavor="UNK")
    _el(_el(author, "assignedAuthor"), "id", root=IDNPS_ROOT, extension=act.prescriber)


_ENTRIES: dict[ActKind, Callable[[etree._Element, ReimbursedAct, str], None]] = {
    ActKind.CIP13: _medication, ActKind.LPP: _device, ActKind.NGAP: _procedure, ActKind.CCAM: _procedure,
    ActKind.NABM: _procedure,
}
