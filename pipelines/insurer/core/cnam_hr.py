"""Build a CNAM-HR_2021.01 "Données de remboursement" CDA from reimbursed acts (pure, lxml).

Owns: the header (templateIds of the CNAM-HR model, code REMB, author ALIM_AM, custodian Assurance Maladie,
as in the ANS example examples/cda/CNAM-HR_2021.01.xml), the recordTarget from the registry's
PatientRecord, and the body: the model's eight sections in its order, each with a human-readable table
and one coded entry per act (pipelines.insurer.core.cnam_hr_entries, modelled on the example's entries).
Vaccinations, Hospitalisations and Radiologie (required by the model, [1..1]) carry no act from a batch
and say so.
Rule: the same acts, patient, id and time give the same bytes (entries are sorted, their ids are UUIDs
derived from the act references), so a document filed again is byte-for-byte the same one.
Does not: parse or check the acts (pipelines.insurer.core.reimbursements did) or choose the document id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from hub.records import PatientRecord
from pipelines.insurer.core.cnam_hr_entries import ENTRIES, HL7, IDNPS_ROOT, STRUCTURE_ROOT, XSI, el, q
from pipelines.insurer.core.history import ActKind, ReimbursedAct

_NSMAP = {None: HL7, "xsi": XSI}
CNAM_ID = "318003502400041"             # Assurance Maladie as the ANS example names it
CNAM_AUTHOR_ID = "518003502400041/1.2.250.1.215.1.2"
CNAM_NAME = "Assurance Maladie"

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
    root = etree.Element(q("ClinicalDocument"), nsmap=_NSMAP)  # type: ignore[arg-type]  # stubs: None key
    _header(root, document_id, when)
    _record_target(root, ins, ins_oid, patient)
    _author(root, when)
    _custodian(root)
    _legal_authenticator(root, when)
    _documentation_of(root, acts)
    _component_of(root)
    body = el(el(root, "component"), "structuredBody")
    _mention(body)
    ordered = sorted(acts, key=lambda a: (a.care_date, a.act_ref), reverse=True)
    for section in SECTIONS:
        _section(body, section, [a for a in ordered if a.kind in section.kinds])
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


# -- header ----------------------------------------------------------------------------------------------


def _header(root: etree._Element, document_id: str, when: str) -> None:
    """The CNAM-HR header items before recordTarget: conformance, id, type REMB, time, confidentiality."""
    id_root, _, extension = document_id.partition("^")
    el(root, "realmCode", code="FR")
    el(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    el(root, "templateId", root="2.16.840.1.113883.2.8.2.1")
    el(root, "templateId", root="1.2.250.1.213.1.1.1.1")
    el(root, "templateId", root="1.2.250.1.213.1.1.1.36", extension="2021.01")
    el(root, "id", root=id_root, extension=extension)
    el(root, "code", code="REMB", codeSystem="1.2.250.1.213.1.1.4.12", displayName="Données de remboursement")
    el(root, "title", "Données de remboursement")
    el(root, "effectiveTime", value=when)
    el(root, "confidentialityCode", code="N", displayName="Normal", codeSystem="2.16.840.1.113883.5.25",
        codeSystemName="Confidentiality")
    el(root, "languageCode", code="fr-FR")
    el(root, "setId", root=id_root, extension=extension)
    el(root, "versionNumber", value="1")


def _record_target(root: etree._Element, ins: str, ins_oid: str, patient: PatientRecord) -> None:
    """The patient: the batch's INS, and the registry's identity traits (name, sex, birth date, place)."""
    role = el(el(root, "recordTarget"), "patientRole")
    el(role, "id", root=ins_oid, extension=ins)
    person = el(role, "patient", classCode="PSN")
    _name(person, patient)
    code, display = _GENDERS.get(patient.sex.strip().upper(), ("U", "Inconnu"))
    el(person, "administrativeGenderCode", code=code, displayName=display, codeSystem="2.16.840.1.113883.5.1")
    birth = patient.birth_date.replace("-", "")
    if len(birth) == 8 and birth.isdigit():
        el(person, "birthTime", value=birth)
    else:
        el(person, "birthTime", nullFlavor="UNK")
    if patient.birth_place.strip():
        el(el(el(el(person, "birthplace"), "place"), "addr"), "county", patient.birth_place.strip())


def _name(person: etree._Element, patient: PatientRecord) -> None:
    """Birth name (BR) and given names, as the ANS example writes them; nullFlavor when unknown."""
    family, given = patient.birth_name.strip(), patient.given_names.strip()
    if not family:
        el(person, "name", nullFlavor="UNK")
        return
    name = el(person, "name")
    el(name, "family", family, qualifier="BR")
    if given:
        el(name, "given", given)
        el(name, "given", given.split()[0], qualifier="BR")


def _author(root: etree._Element, when: str) -> None:
    """ALIM_AM: the document is fed automatically from Assurance Maladie's information system."""
    author = el(root, "author")
    el(author, "time", value=when)
    assigned = el(author, "assignedAuthor")
    el(assigned, "id", root=IDNPS_ROOT, extension=CNAM_AUTHOR_ID)
    el(assigned, "code", code="ALIM_AM", displayName="Alimentation auto à partir du SI de l'Ass Maladie",
        codeSystem="1.2.250.1.213.1.1.4.6")
    el(assigned, "addr", nullFlavor="NASK")
    el(assigned, "telecom", nullFlavor="NASK")
    device = el(assigned, "assignedAuthoringDevice")
    el(device, "manufacturerModelName", "MES Hub")
    el(device, "softwareName", CNAM_NAME)
    _cnam(assigned, "representedOrganization")


def _cnam(parent: etree._Element, tag: str) -> None:
    """Assurance Maladie as an organisation (id and name) under `tag`."""
    organization = el(parent, tag)
    el(organization, "id", root=STRUCTURE_ROOT, extension=CNAM_ID)
    el(organization, "name", CNAM_NAME)


def _custodian(root: etree._Element) -> None:
    _cnam(el(el(root, "custodian"), "assignedCustodian"), "representedCustodianOrganization")


def _legal_authenticator(root: etree._Element, when: str) -> None:
    """Assurance Maladie takes responsibility for the document, as in the ANS example."""
    legal = el(root, "legalAuthenticator")
    el(legal, "time", value=when)
    el(legal, "signatureCode", code="S")
    entity = el(legal, "assignedEntity")
    el(entity, "id", root=IDNPS_ROOT, extension=CNAM_AUTHOR_ID)
    el(entity, "addr", nullFlavor="NASK")
    el(entity, "telecom", nullFlavor="NASK")
    name = el(el(entity, "assignedPerson"), "name")
    el(name, "given", ".")
    el(name, "family", CNAM_NAME)


def _documentation_of(root: etree._Element, acts: Sequence[ReimbursedAct]) -> None:
    """The period covered (first and last date of care) and the AMO as performer."""
    event = el(el(root, "documentationOf"), "serviceEvent")
    period = el(event, "effectiveTime")
    dates = sorted(a.care_date.replace("-", "") for a in acts)
    el(period, "low", value=dates[0])
    el(period, "high", value=dates[-1])
    entity = el(el(event, "performer", typeCode="PRF"), "assignedEntity")
    el(entity, "id", nullFlavor="NA")
    el(el(entity, "representedOrganization"), "standardIndustryClassCode", code="AMO",
        displayName="Organisme d'assurance maladie obligatoire", codeSystem="1.2.250.1.213.1.1.4.9")


def _component_of(root: etree._Element) -> None:
    """The encounter of the ANS example: no period, a social security body (SA24)."""
    encounter = el(el(root, "componentOf"), "encompassingEncounter")
    el(encounter, "effectiveTime", nullFlavor="NA")
    facility = el(el(encounter, "location"), "healthCareFacility")
    el(facility, "code", code="SA24", displayName="Organisme de sécurité sociale", codeSystem="1.2.250.1.71.4.2.4")


# -- body ------------------------------------------------------------------------------------------------


def _mention(body: etree._Element) -> None:
    """The mandatory 'Usage et Responsabilités' section with the model's wording."""
    section = el(el(body, "component"), "section")
    for template in ("2.16.840.1.113883.10.12.201", "1.3.6.1.4.1.19376.1.4.1.2.16", "1.2.250.1.213.1.1.2.73"):
        el(section, "templateId", root=template)
    el(section, "code", code="55112-7", displayName="Commentaire sur le document",
        codeSystem="2.16.840.1.113883.6.1", codeSystemName="LOINC")
    el(section, "title", "Usage et Responsabilités")
    text = el(section, "text", _MENTION[0], ID="mention")
    for sentence in _MENTION[1:]:
        el(text, "br").tail = sentence


def _section(body: etree._Element, spec: Section, acts: Sequence[ReimbursedAct]) -> None:
    """One section: conformance, code, title, then its table and one entry per act (or a 'nothing' line)."""
    section = el(el(body, "component"), "section")
    for template in spec.template_ids:
        el(section, "templateId", root=template)
    el(section, "id", nullFlavor="UNK")
    code = el(section, "code", code=spec.code, displayName=spec.display, codeSystem="2.16.840.1.113883.6.1",
               codeSystemName="LOINC")
    if spec.translation is not None:
        el(code, "translation", code=spec.translation[0], displayName=spec.translation[1],
            codeSystem="2.16.840.1.113883.6.1")
    el(section, "title", spec.title)
    text = el(section, "text")
    if not acts:
        el(text, "paragraph", _NOTHING)
        return
    refs = [f"{spec.prefix}{n:03d}" for n in range(1, len(acts) + 1)]
    _table(text, spec, acts, refs)
    for act, ref in zip(acts, refs, strict=True):
        ENTRIES[act.kind](el(section, "entry"), act, ref)


def _table(text: etree._Element, spec: Section, acts: Sequence[ReimbursedAct], refs: Sequence[str]) -> None:
    """The human-readable table of a section: one row per act, its label in a content the entry points at."""
    table = el(text, "table", border="0")
    head = el(el(table, "thead"), "tr")
    for title in (spec.date_header, spec.code_header, spec.label_header, "Quantité", "Prescrit par",
                  spec.performer_header, "Montant de la dépense", "Montant remboursé"):
        el(head, "th", title)
    rows = el(table, "tbody")
    for act, ref in zip(acts, refs, strict=True):
        row = el(rows, "tr")
        el(row, "td", _french_date(act.care_date))
        el(row, "td", act.code)
        el(el(row, "td"), "content", act.label, ID=ref)
        el(row, "td", str(act.quantity))
        el(row, "td", _who(act.prescriber))
        el(row, "td", _who(act.executant))
        el(row, "td", _euros(act.paid_cents))
        el(row, "td", _euros(act.reimbursed_cents))


def _french_date(iso: str) -> str:
    return f"{iso[8:10]}/{iso[5:7]}/{iso[0:4]}"


def _euros(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d} €"


def _who(identifier: str) -> str:
    """How the table shows a prescriber or executant identifier."""
    if not identifier:
        return "Non communiqué"
    return f"IDNPS {identifier}" if len(identifier) == 12 else f"FINESS {identifier}"
