"""Reading and changing a patient's record as someone: the access rules applied, traced and announced.

Owns: the one path every read and change of a record takes after authentication:
* who the caller is to this record (the patient, a minor's legal representative, a professional in a
  given mode, an admin), from pipelines.record.core.access;
* the read table first (pipelines.record.core.read_rules, `gate`): which role reads which part of a profile in
  which state (403 `read.role`, 404 for a closed profile's content, the operator's reads traced);
* the trail as the viewer is shown it: entries about documents they may not see are redacted
  (pipelines.record.core.trail_view);
* the decision for the record and for each document (habilitation matrix, confidentiality codes,
  the patient's and author's flags), and the refusal raised as hub.errors.Refused; a document shown
  keeps no replacement link (`replaces`, `replaced_by`) to one the viewer may not see
  (without_unseen_links: the link would tell it exists);
* one audit-trail entry per read, change, refusal and emergency access (hub.audit), written before
  the answer leaves, so nothing is shown that is not traced (pipelines.record.access_trail writes them);
  an INS without a profile has no trail: its refusals are the same 403, written nowhere;
* the patient told (hub.notices) of a professional's first access and of every professional action.
Does not: authenticate (the API does), store flags (hub.access.RecordControls) or render anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hub.access import CHANGE_FLAGS, INVISIBLE_PATIENT, Change, Decision, DocumentFacts, Habilitations, RecordControls
from hub.actors import Access, AccessMode, Actor, ActorKind
from hub.audit import AuditAction, AuditTrail
from hub.errors import NotFound, Refused
from hub.notices import Event, EventKind
from hub.ports import Index
from hub.reading import Reading
from hub.records import DocumentQuery, DocumentRecord, PatientRecord, is_minor
from pipelines.record.access_trail import RecordTrail
from pipelines.record.core import access, read_rules
from pipelines.record.core.trail_view import shown

PARIS = ZoneInfo("Europe/Paris")
#: the audit action of each change (the author's mask at the patient's request is traced as a mask)
AUDIT_OF: Mapping[Change, AuditAction] = {
    Change.MASK: AuditAction.MASK, Change.UNMASK: AuditAction.UNMASK,
    Change.HIDE: AuditAction.HIDE_FROM_REPRESENTATIVES, Change.SHOW: AuditAction.SHOW_TO_REPRESENTATIVES,
    Change.DELETE: AuditAction.DELETE, Change.LIFT_INVISIBLE: AuditAction.LIFT_INVISIBLE,
    Change.MASK_AT_PATIENT_REQUEST: AuditAction.MASK}

ADMIN_READ = Decision.allow("access.operator")
#: refusals answered "no such document" (404): the patient or representative must not learn it exists
UNSEEN = frozenset({"access.deleted", "access.invisible", "access.invisible-representatives",
                    "access.hidden-by-patient"})
#: the parts whose reads are traced where they are read (documents, the trail, the lifecycle's export)
TRACED_ELSEWHERE = frozenset({Reading.DOCUMENTS, Reading.AUDIT, Reading.EXPORT})
PAGE = 500  # documents per index page when finding what a viewer may not see


@dataclass
class RecordPorts:
    """What the record service needs; built by the composition root."""

    index: Index
    controls: RecordControls
    trail: AuditTrail
    habilitations: Habilitations
    representatives: Callable[[str], list[str]]  # a patient's legal representatives (their INS)
    announce: Callable[[Event], object] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class RecordAccess:
    """The record of one patient, read and changed through the rules."""

    def __init__(self, ports: RecordPorts) -> None:
        self._p = ports
        self._t = RecordTrail(ports.trail, ports.clock, ports.announce)

    # -- who is calling ----------------------------------------------------------------------------

    def viewer(self, actor: Actor, ins: str) -> Actor:
        """A patient credential is the patient on their own record, a representative on a minor's
        record they represent, and nobody on any other (Refused, traced)."""
        if actor.kind is not ActorKind.PATIENT or actor.id == ins:
            return actor
        patient = self._p.index.patient(ins)
        if patient is not None and actor.id in self._p.representatives(ins) and is_minor(patient, self._today()):
            return Actor(ActorKind.REPRESENTATIVE, actor.id)
        self._t.refuse(Access(actor), ins, access.not_yours(), known=patient is not None)

    def gate(self, who: Access, ins: str, reading: Reading, *, target: str = "") -> Actor:
        """The read table (pipelines.record.core.read_rules) for one part of a profile: the caller as this
        profile sees them, or Refused (403 `read.role`, traced) or NotFound (404: unknown profile, or a
        closed profile's content; traced when the profile exists).  An operator's read is traced here,
        unless it is of a part traced where it is read (documents, the trail, the export)."""
        return self._gate(who, ins, reading, target=target)[0]

    def _gate(self, who: Access, ins: str, reading: Reading, *, target: str = "",
              ) -> tuple[Actor, PatientRecord | None]:
        actor = self.viewer(who.actor, ins)
        who = replace(who, actor=actor)
        patient = self._p.index.patient(ins)
        rule = read_rules.may_read(actor.kind, reading, None if patient is None else str(patient.status))
        detail = {"scope": str(reading)}
        if not rule.decision.allowed and not rule.not_found:
            if patient is None:  # no profile, no trail: the same 403, nothing said about which INS exist
                raise Refused(rule.decision.finding())
            self._t.refuse(who, ins, rule.decision, target=target, detail=detail)
        if rule.not_found:
            if patient is not None:  # a closed profile's content: the attempt is in its trail
                self._t.trace(who, ins, AuditAction.REFUSED, target, outcome="refused",
                            detail={"rule": rule.decision.rule, **detail})
            raise NotFound("patient")
        if rule.traced and reading not in TRACED_ELSEWHERE:
            self._t.trace(who, ins, AuditAction.READ if target else AuditAction.LIST, target, detail=detail)
        return actor, patient

    # -- reading -----------------------------------------------------------------------------------

    def documents(self, who: Access, ins: str, query: DocumentQuery) -> list[DocumentRecord]:
        """The documents `who` may see, after the record-level decision; one `list` entry."""
        actor = self._open(who, ins)
        who = replace(who, actor=actor)
        records = self._p.index.documents(ins, query)
        flags = self._p.controls.flags([r.document_id for r in records])
        shown = [r for r in records
                 if sees(self._p.habilitations, actor, who.mode, access.facts(r, flags.get(r.document_id))).allowed]
        self._t.trace(who, ins, AuditAction.LIST, "", detail={"shown": str(len(shown))})
        return self._unlinked(who, shown)

    def document(self, who: Access, document_id: str, *, action: AuditAction = AuditAction.READ,
                 detail: Mapping[str, str] | None = None) -> DocumentRecord:
        """One document if `who` may see it, traced as `action` (read: metadata, the content, or a
        document the patient sends on, `detail` saying to whom).  Every route reading a document comes
        here.  NotFound when it does not exist, is deleted, or is hidden from the patient or
        representative asking (INVISIBLE_*, hidden by the patient: its existence must not leak);
        Refused when another rule hides it.  Both refusals are traced."""
        record, who, facts = self._locate(who, document_id)
        decision = sees(self._p.habilitations, who.actor, who.mode, facts)
        if not decision.allowed:
            if decision.rule in UNSEEN:
                self._t.trace(who, record.patient_ins, AuditAction.REFUSED, document_id, outcome="refused",
                            detail={"rule": decision.rule})
                raise NotFound("document")
            self._t.refuse(who, record.patient_ins, decision, target=document_id)
        self._t.trace(who, record.patient_ins, action, document_id, detail=detail)
        return self._unlinked(who, [record])[0]

    def trail(self, who: Access, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """The audit trail of `ins` as this viewer is shown it: for the patient, a representative of a
        minor (entries about documents they may not see redacted), or an admin (the legal archive,
        whole, closed profiles included).  The stored chain is unchanged."""
        actor = self.gate(who, ins, Reading.AUDIT)
        entries = self._p.trail.for_patient(ins, after_seq=after_seq, limit=limit)
        if after_seq == 0:  # reading the trail is traced too (once per reading, not per page)
            self._t.trace(replace(who, actor=actor), ins, AuditAction.AUDIT_READ, "")
        hidden = frozenset() if actor.kind is ActorKind.ADMIN else hidden_documents(
            self._p.index, self._p.controls, self._p.habilitations, actor, ins)
        return shown(entries, hidden)

    # -- changing ----------------------------------------------------------------------------------

    def change(self, who: Access, document_id: str, change: Change) -> DocumentFacts:
        """One change on one document: the patient's masks (mask / unmask from professionals, hide /
        show to legal representatives), or the author's deletion, lift of INVISIBLE_PATIENT, or mask
        at the patient's request.  Traced; lifting INVISIBLE_PATIENT tells the patient."""
        record, who, facts = self._locate(who, document_id)
        actor = who.actor
        if facts.deleted and change is not Change.DELETE:
            raise NotFound("document")
        decision = access.can_change(actor, change, facts)
        if not decision.allowed:
            self._t.refuse(who, record.patient_ins, decision, target=document_id)
        now = self._p.clock()
        if change is Change.DELETE:
            self._p.controls.delete(document_id, record.patient_ins, by=actor.id, at=now)
        else:
            flag, value = CHANGE_FLAGS[change]
            self._p.controls.set_flag(document_id, record.patient_ins, flag, value, by=actor.id, at=now)
        self._t.trace(who, record.patient_ins, AUDIT_OF[change], document_id)
        if change is Change.LIFT_INVISIBLE:  # now the patient may see it: told as a new document
            self._t.tell(EventKind.NEW_DOCUMENT, record.patient_ins, f"document:{document_id}:visible", now,
                       subject=document_id,
                       confidentiality=tuple(c for c in record.confidentiality if c != INVISIBLE_PATIENT))
        return self._facts(record)

    def block(self, who: Access, ins: str, idnps: str, *, blocked: bool) -> None:
        """The patient blocks (or unblocks) one professional from their whole record."""
        self._patient_only(who, ins)
        (self._p.controls.block if blocked else self._p.controls.unblock)(ins, idnps)
        self._t.trace(who, ins, AuditAction.BLOCK if blocked else AuditAction.UNBLOCK, idnps)

    def set_emergency(self, who: Access, ins: str, *, bris_de_glace: bool | None, regulation: bool | None) -> None:
        """The patient allows or forbids emergency access (bris de glace, Centre 15 regulation)."""
        self._patient_only(who, ins)
        self._p.controls.set_emergency(ins, bris_de_glace=bris_de_glace, regulation=regulation)
        detail = {k: str(v).lower() for k, v in (("bris_de_glace", bris_de_glace), ("regulation", regulation))
                  if v is not None}
        self._t.trace(who, ins, AuditAction.SETTINGS, "", detail=detail)

    def settings(self, who: Access, ins: str) -> dict[str, object]:
        """The patient's access settings (blocked professionals, emergency access)."""
        self._patient_only(who, ins)
        controls = self._p.controls.controls(ins)
        return {"blocked": sorted(controls.blocked), "bris_de_glace_allowed": controls.bris_de_glace_allowed,
                "regulation_allowed": controls.regulation_allowed}

    def record_written(self, document: DocumentRecord) -> None:
        """A document was indexed into the record (by the pipeline): one `write` entry, once."""
        self._t.written(document)

    # -- the record-level gate --------------------------------------------------------------------

    def _locate(self, who: Access, document_id: str) -> tuple[DocumentRecord, Access, DocumentFacts]:
        """The document, the caller as its record sees them (after the record-level gate), its facts."""
        record = self._p.index.document(document_id)
        if record is None:
            raise NotFound("document")
        who = replace(who, actor=self._open(who, record.patient_ins))
        return record, who, self._facts(record)

    def _open(self, who: Access, ins: str) -> Actor:
        """The caller may open this record at all: its status, then (professionals) blocking and the
        emergency modes; the first access and every emergency are announced to the patient."""
        actor, patient = self._gate(who, ins, Reading.DOCUMENTS)
        if actor.kind is ActorKind.ADMIN:
            return actor
        if not actor.is_professional:
            if who.mode is not AccessMode.NORMAL:
                self._t.refuse(who, ins, access.emergency_for_professionals())
            return actor
        assert patient is not None  # the read table answers 404 for an unknown profile
        decision = access.open_record(who.actor, who.mode, status=str(patient.status),
                                      controls=self._p.controls.controls(ins), reason=who.reason)
        if not decision.allowed:
            self._t.refuse(who, ins, decision)
        self._professional_seen(who, patient)
        return who.actor

    def _professional_seen(self, who: Access, patient: PatientRecord) -> None:
        now = self._p.clock()
        if who.mode is not AccessMode.NORMAL:
            entry = self._t.trace(who, patient.ins, AuditAction.EMERGENCY, "", detail={"reason": who.reason})
            self._t.tell(EventKind.PROFESSIONAL_ACTION, patient.ins, f"audit:{entry.seq}", now)
        known = self._p.controls.first_access(patient.ins, who.actor.id) is not None  # a read: no commit
        if not known and self._p.controls.note_access(patient.ins, who.actor.id, now):
            self._t.trace(who, patient.ins, AuditAction.FIRST_ACCESS, "")
            self._t.tell(EventKind.FIRST_ACCESS, patient.ins, f"first_access:{patient.ins}:{who.actor.id}", now)

    def _patient_only(self, who: Access, ins: str) -> None:
        patient = self._p.index.patient(ins)
        if who.actor.kind is not ActorKind.PATIENT or who.actor.id != ins:
            self._t.refuse(who, ins, access.patient_only(), known=patient is not None)
        if patient is None or str(patient.status) in (read_rules.CLOSED, read_rules.OPPOSED):
            raise NotFound("patient")

    def _unlinked(self, who: Access, records: list[DocumentRecord]) -> list[DocumentRecord]:
        """`records` without their replacement links to documents `who` may not see (the operator: all)."""
        return records if who.actor.kind is ActorKind.ADMIN else without_unseen_links(records, lambda linked: (
            (d := self._p.index.document(linked)) is not None
            and sees(self._p.habilitations, who.actor, who.mode, self._facts(d)).allowed))

    def _facts(self, record: DocumentRecord) -> DocumentFacts:
        return access.facts(record, self._p.controls.flags([record.document_id]).get(record.document_id))

    def _today(self) -> date:
        return self._p.clock().astimezone(PARIS).date()



def sees(habilitations: Habilitations, actor: Actor, mode: AccessMode, facts: DocumentFacts) -> Decision:
    """can_see, and the operator (admin): every document not deleted, traced like any read."""
    if actor.kind is ActorKind.ADMIN:
        return ADMIN_READ if not facts.deleted else Decision.refuse("access.deleted", "", "")
    return access.can_see(actor, mode, facts, habilitations=habilitations,
                          represented_minor=actor.kind is ActorKind.REPRESENTATIVE)


def hidden_documents(index: Index, controls: RecordControls, habilitations: Habilitations, viewer: Actor,
                     ins: str) -> frozenset[str]:
    """The ids of `ins`'s documents (every version) that `viewer`, the patient or a minor's
    representative, may not see (pipelines.record.core.access.can_see): what their trail must not reveal."""
    hidden: set[str] = set()
    offset = 0
    while True:
        page = index.documents(ins, DocumentQuery(include_deprecated=True, limit=PAGE, offset=offset))
        flags = controls.flags([d.document_id for d in page])
        hidden.update(d.document_id for d in page if not access.can_see(
            viewer, AccessMode.NORMAL, access.facts(d, flags.get(d.document_id)), habilitations=habilitations,
            represented_minor=viewer.kind is ActorKind.REPRESENTATIVE).allowed)
        if len(page) < PAGE:
            return frozenset(hidden)
        offset += PAGE


def without_unseen_links(records: list[DocumentRecord], sees: Callable[[str], bool]) -> list[DocumentRecord]:
    """The records with their replacement links (`replaces`, `replaced_by`) to documents the viewer may not
    see left out: a link would tell that a hidden document exists, and its id (`sees`: may they see it)."""
    listed = {r.document_id for r in records}
    answers: dict[str, bool] = {}

    def kept(document_id: str) -> bool:
        if document_id not in listed and document_id not in answers:
            answers[document_id] = sees(document_id)
        return document_id in listed or answers[document_id]

    return [replace(r, replaces=tuple(d for d in r.replaces if kept(d)),
                    replaced_by=r.replaced_by if r.replaced_by is None or kept(r.replaced_by) else None)
            for r in records]
