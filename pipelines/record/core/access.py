"""Access rules of a patient's record (pure): who may open it, see each document, and change it.

Owns: open_record (the record-level gate for professionals), can_see (one document, for the patient, a
minor's legal representative or a professional), can_change (the patient's masks, the author's
actions), facts (a DocumentRecord merged with its flags), and every rule's name and messages (fr/en).
Does not: read or store anything (the record service does, through hub.ports and hub.access.RecordControls),
authenticate, or audit.

Rule 1 (open_record): only a professional with an IDNPS opens a record, only an open one (`active`, or
  `opened`: opened automatically and not yet activated by its holder, an open record all the same).
  A professional the patient blocked is refused in every mode, bris de glace and regulation included:
  blocking is the patient's explicit opposition to one named person (CSP L.1111-15 / L.1111-17), which
  an emergency mode does not override; another professional can still be called in.
  Normal mode is presumed consent within the care team: the patient was informed and did not oppose
  (Arrêté du 26 octobre 2023; L.1110-4); the first access is announced to the patient by the service.
  Bris de glace: any professional, with a written reason of at least MIN_REASON_CHARS non-blank
  characters, unless the patient disabled it.  Regulation: a SAMU / Centre 15 regulator
  (Actor.regulator), unless the patient disabled it.
Rule 2 (can_see): deleted documents are seen by nobody.
  Patient (own record): everything else, except INVISIBLE_PATIENT until its author lifts it.
  Legal representative of a minor: as the patient, and not INVISIBLE_REPRESENTANTS_LEGAUX nor what the
  patient hid from them.
  Professional: the author always sees their own document; MASQUE_PS or the patient's mask hides it
  from every other professional, in every mode (bris de glace and regulation do not unmask: the patient
  masked it on purpose, as in the DMP); otherwise the habilitation matrix decides by profession and
  typeCode, in every mode.  INVISIBLE_* codes do not concern professionals.
Rule 3 (can_change): mask / unmask / hide / show: the patient, on their own record, on a document they
  can see.  Delete, lift INVISIBLE_PATIENT, mask at the patient's request: the document's author only.
  Nothing changes on a deleted document, except that deleting it again is allowed (idempotent).
Messages say which rule and what to do; they never carry health data (no title, type, author, INS).
"""

from __future__ import annotations

from hub.access import (
    AUTHOR_CHANGES,
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    NO_FLAGS,
    PATIENT_CHANGES,
    Change,
    Decision,
    DocumentFacts,
    DocumentFlags,
    Habilitations,
    PatientControls,
    author_idnps,
)
from hub.actors import AccessMode, Actor, ActorKind, valid_idnps
from hub.records import DocumentRecord

__all__ = [
    "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "MASQUE_PS", "MIN_REASON_CHARS", "RULES",
    "author_idnps", "can_change", "can_see", "emergency_for_professionals", "facts", "is_author", "not_yours",
    "open_record", "patient_only",
]

MIN_REASON_CHARS = 15
ACTIVE = "active"
#: the statuses of an open record (hub.records.OPEN_STATUSES)
OPEN = frozenset({ACTIVE, "opened"})

#: every rule: name -> (English, French).  Refusals say what to do; allowed rules explain the access.
RULES: dict[str, tuple[str, str]] = {
    # allowed
    "access.care-team": (
        "Access as a member of the patient's care team (presumed consent; the patient is told of the first access).",
        "Accès en tant que membre de l'équipe de soins du patient (consentement présumé ; le patient est informé "
        "du premier accès)."),
    "access.bris-de-glace": (
        "Emergency access (bris de glace): traced with its reason and announced to the patient.",
        "Accès en urgence (bris de glace) : tracé avec son motif et signalé au patient."),
    "access.regulation": (
        "SAMU / Centre 15 regulation access: traced and announced to the patient.",
        "Accès en régulation SAMU / Centre 15 : tracé et signalé au patient."),
    "access.own-record": ("The patient's own record.", "Le dossier du patient lui-même."),
    "access.representative": (
        "Access as the legal representative of a minor.", "Accès en tant que représentant légal d'un mineur."),
    "access.author": ("The author of the document.", "L'auteur du document."),
    "access.habilitation-granted": (
        "Allowed by the habilitation matrix for this profession.",
        "Autorisé par la matrice d'habilitations pour cette profession."),
    "access.patient-control": (
        "The patient manages the confidentiality of their own documents.",
        "Le patient gère la confidentialité de ses propres documents."),
    "access.author-control": (
        "The author manages their own document.", "L'auteur gère son propre document."),
    # refused
    "access.professional-only": (
        "Only a health professional opens a record this way. Patients and representatives use their own access.",
        "Seul un professionnel de santé ouvre un dossier de cette façon. Patients et représentants utilisent "
        "leur propre accès."),
    "access.emergency-professional-only": (
        "Emergency modes (bris de glace, regulation) are for health professionals only. Use normal access.",
        "Les modes d'urgence (bris de glace, régulation) sont réservés aux professionnels de santé. Utilisez "
        "l'accès normal."),
    "access.idnps": (
        "The professional is not identified by an IDNPS (8 followed by the 11 RPPS digits). Sign in with your "
        "RPPS identity (CPS card or Pro Santé Connect).",
        "Le professionnel n'est pas identifié par un IDNPS (8 suivi des 11 chiffres RPPS). Connectez-vous avec "
        "votre identité RPPS (carte CPS ou Pro Santé Connect)."),
    "access.record-inactive": (
        "This record is not active: it cannot be consulted by professionals.",
        "Ce dossier n'est pas actif : il ne peut pas être consulté par les professionnels."),
    "access.blocked": (
        "The patient has blocked your access to their record, in every mode including emergencies. Another "
        "professional of the care team can be asked.",
        "Le patient a bloqué votre accès à son dossier, dans tous les modes, urgences comprises. Un autre "
        "professionnel de l'équipe de soins peut être sollicité."),
    "access.emergency-disabled": (
        "The patient has disabled this emergency access mode. Ask the patient, or use normal access within the "
        "care team.",
        "Le patient a désactivé ce mode d'accès en urgence. Demandez au patient, ou utilisez l'accès normal au "
        "sein de l'équipe de soins."),
    "access.reason-required": (
        f"Bris de glace needs a written reason of at least {MIN_REASON_CHARS} characters (spaces not counted). "
        "Write why the emergency requires access.",
        f"Le bris de glace exige un motif écrit d'au moins {MIN_REASON_CHARS} caractères (espaces non comptés). "
        "Indiquez pourquoi l'urgence justifie l'accès."),
    "access.not-regulator": (
        "Regulation access is for SAMU / Centre 15 regulators only. Use normal access or bris de glace.",
        "L'accès en régulation est réservé aux régulateurs du SAMU / Centre 15. Utilisez l'accès normal ou le "
        "bris de glace."),
    "access.actor-kind": (
        "This kind of account cannot read or change documents of a record.",
        "Ce type de compte ne peut ni consulter ni modifier les documents d'un dossier."),
    "access.not-own-record": (
        "This is not your record. A patient sees only their own record, or a minor's they represent.",
        "Ce dossier n'est pas le vôtre. Un patient ne voit que son propre dossier, ou celui d'un mineur qu'il "
        "représente."),
    "access.not-representative": (
        "You are not (or no longer) the legal representative of this patient as a minor.",
        "Vous n'êtes pas (ou plus) le représentant légal de ce patient mineur."),
    "access.deleted": (
        "This document was deleted by its author.", "Ce document a été supprimé par son auteur."),
    "access.invisible": (
        "This document is not visible yet: its author will make it visible, usually after talking with the "
        "patient.",
        "Ce document n'est pas encore visible : son auteur le rendra visible, en général après en avoir parlé "
        "avec le patient."),
    "access.invisible-representatives": (
        "Its author made this document not visible to legal representatives.",
        "Son auteur a rendu ce document non visible par les représentants légaux."),
    "access.hidden-by-patient": (
        "The patient has hidden this document from their legal representatives.",
        "Le patient a masqué ce document à ses représentants légaux."),
    "access.masked": (
        "This document is masked from professionals; only its author sees it, in every mode. The patient can "
        "unmask it.",
        "Ce document est masqué aux professionnels ; seul son auteur le voit, dans tous les modes. Le patient "
        "peut le démasquer."),
    "access.habilitation": (
        "Your profession may not read this type of document (habilitation matrix, Arrêté du 26 octobre 2023).",
        "Votre profession ne peut pas consulter ce type de document (matrice d'habilitations, arrêté du "
        "26 octobre 2023)."),
    "access.patient-only": (
        "Only the patient can do this, on their own record.",
        "Seul le patient peut faire cela, sur son propre dossier."),
    "access.not-author": (
        "Only the author of the document can do this. The patient can ask its author.",
        "Seul l'auteur du document peut faire cela. Le patient peut le demander à son auteur."),
    "access.unknown-change": (
        "Unknown change: use mask, unmask, hide_from_representatives, show_to_representatives, delete, "
        "lift_invisible or mask_at_patient_request.",
        "Modification inconnue : utilisez mask, unmask, hide_from_representatives, show_to_representatives, "
        "delete, lift_invisible ou mask_at_patient_request."),
}


def _allow(rule: str) -> Decision:
    en, fr = RULES[rule]
    return Decision.allow(rule, en, fr)


def _refuse(rule: str) -> Decision:
    en, fr = RULES[rule]
    return Decision.refuse(rule, en, fr)


def not_yours() -> Decision:
    """Refusal: a patient credential on a record that is neither theirs nor a minor's they represent."""
    return _refuse("access.not-own-record")


def patient_only() -> Decision:
    """Refusal: something only the patient does on their own record (settings, blocking, masks)."""
    return _refuse("access.patient-only")


def emergency_for_professionals() -> Decision:
    """Refusal: an emergency mode asked by someone who is not a professional."""
    return _refuse("access.emergency-professional-only")


# -- the record ----------------------------------------------------------------------------------


def open_record(actor: Actor, mode: AccessMode, *, status: str, controls: PatientControls,
                reason: str = "") -> Decision:
    """May this professional open the record at all, in this mode (Rule 1)?  `status` is the patient's
    PatientStatus value; `reason` the written reason of a bris de glace."""
    if not actor.is_professional:
        return _refuse("access.professional-only")
    if not valid_idnps(actor.id):
        return _refuse("access.idnps")
    if str(status) not in OPEN:
        return _refuse("access.record-inactive")
    if actor.id in controls.blocked:
        return _refuse("access.blocked")
    if mode is AccessMode.BRIS_DE_GLACE:
        return _bris_de_glace(controls, reason)
    if mode is AccessMode.REGULATION:
        return _regulation(actor, controls)
    return _allow("access.care-team")


def _bris_de_glace(controls: PatientControls, reason: str) -> Decision:
    if not controls.bris_de_glace_allowed:
        return _refuse("access.emergency-disabled")
    if len("".join(reason.split())) < MIN_REASON_CHARS:
        return _refuse("access.reason-required")
    return _allow("access.bris-de-glace")


def _regulation(actor: Actor, controls: PatientControls) -> Decision:
    if not actor.regulator:
        return _refuse("access.not-regulator")
    if not controls.regulation_allowed:
        return _refuse("access.emergency-disabled")
    return _allow("access.regulation")


# -- one document ---------------------------------------------------------------------------------


def is_author(actor: Actor, doc: DocumentFacts) -> bool:
    """Whether `actor` is the professional who wrote `doc` (author root 1.2.250.1.71.4.2.1, IDNPS extension)."""
    return actor.is_professional and bool(actor.id) and doc.author_idnps == actor.id


def can_see(actor: Actor, mode: AccessMode, doc: DocumentFacts, *, habilitations: Habilitations,
            represented_minor: bool = False) -> Decision:
    """May `actor` see `doc` (Rule 2)?  For a professional, open_record has already allowed the record in
    `mode`; `mode` does not change what a patient or a representative sees.  `represented_minor`: the
    caller found the actor among the patient's legal representatives and the patient is a minor."""
    if actor.kind is ActorKind.PATIENT:
        return _patient_sees(actor, doc)
    if actor.kind is ActorKind.REPRESENTATIVE:
        return _representative_sees(doc, represented_minor)
    if actor.is_professional:
        return _professional_sees(actor, doc, habilitations)
    return _refuse("access.actor-kind")


def _patient_sees(actor: Actor, doc: DocumentFacts) -> Decision:
    if doc.patient_ins and doc.patient_ins != actor.id:
        return _refuse("access.not-own-record")
    if doc.deleted:
        return _refuse("access.deleted")
    if doc.invisible_to_patient:
        return _refuse("access.invisible")
    return _allow("access.own-record")


def _representative_sees(doc: DocumentFacts, represented_minor: bool) -> Decision:
    if not represented_minor:
        return _refuse("access.not-representative")
    if doc.deleted:
        return _refuse("access.deleted")
    if doc.invisible_to_patient:
        return _refuse("access.invisible")
    if INVISIBLE_REPRESENTANTS_LEGAUX in doc.confidentiality:
        return _refuse("access.invisible-representatives")
    if doc.hidden_from_representatives:
        return _refuse("access.hidden-by-patient")
    return _allow("access.representative")


def _professional_sees(actor: Actor, doc: DocumentFacts, habilitations: Habilitations) -> Decision:
    if doc.deleted:
        return _refuse("access.deleted")
    if is_author(actor, doc):
        return _allow("access.author")
    if doc.masked_from_professionals:
        return _refuse("access.masked")
    if habilitations.allows(actor.profession, doc.type_code):
        return _allow("access.habilitation-granted")
    return _refuse("access.habilitation")


# -- changes ---------------------------------------------------------------------------------------


def can_change(actor: Actor, action: Change | str, doc: DocumentFacts) -> Decision:
    """May `actor` make this change to `doc` (Rule 3)?  `action` is a Change or its value (the values of
    hub.audit.AuditAction MASK, UNMASK, HIDE_FROM_REPRESENTATIVES, SHOW_TO_REPRESENTATIVES, DELETE and
    LIFT_INVISIBLE are accepted as they are)."""
    try:
        change = Change(str(action))
    except ValueError:
        return _refuse("access.unknown-change")
    if change in PATIENT_CHANGES:
        return _patient_changes(actor, doc)
    assert change in AUTHOR_CHANGES
    return _author_changes(actor, change, doc)


def _patient_changes(actor: Actor, doc: DocumentFacts) -> Decision:
    if actor.kind is not ActorKind.PATIENT:
        return _refuse("access.patient-only")
    if doc.patient_ins and doc.patient_ins != actor.id:
        return _refuse("access.not-own-record")
    if doc.deleted:
        return _refuse("access.deleted")
    if doc.invisible_to_patient:  # not seen yet: nothing to manage, and nothing revealed
        return _refuse("access.invisible")
    return _allow("access.patient-control")


def _author_changes(actor: Actor, change: Change, doc: DocumentFacts) -> Decision:
    if not is_author(actor, doc):
        return _refuse("access.not-author")
    if doc.deleted and change is not Change.DELETE:
        return _refuse("access.deleted")
    return _allow("access.author-control")


# -- facts -----------------------------------------------------------------------------------------


def facts(record: DocumentRecord, flags: DocumentFlags | None = None) -> DocumentFacts:
    """One indexed document with its flags (none set when `flags` is None), as the rules read it."""
    f = flags or NO_FLAGS
    return DocumentFacts(
        document_id=record.document_id, type_code=record.type_code, class_code=record.class_code,
        confidentiality=tuple(record.confidentiality), author_id=record.author_id,
        masked_by_patient=f.masked_by_patient, hidden_from_representatives=f.hidden_from_representatives,
        invisible_lifted=f.invisible_lifted, deleted=f.deleted, patient_ins=record.patient_ins)
