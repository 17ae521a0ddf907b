"""The record's audit trail and announcements as the record service writes them (pipelines.record.access).

Owns: one entry per read, change, refusal and emergency access, written before the answer leaves (a
professional's entries carry their mode and profession, and each of their actions is announced to the
patient), a refusal traced then raised as hub.errors.Refused, and the `write` entry of an indexed
document (once, keyed by the document id).
Does not: decide anything (pipelines.record.core.access, read_rules) or send notices (the announce port).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NoReturn

from hub.access import Decision
from hub.actors import Access, ActorKind
from hub.audit import AuditAction, AuditEntry, AuditTrail, NewAuditEntry
from hub.errors import Refused
from hub.notices import Event, EventKind
from hub.records import DocumentRecord
from pipelines.record.core import access

log = logging.getLogger("pipelines.record.access")  # the record service's log, as before the split


class RecordTrail:
    """Writes the record's trail and tells the patient."""

    def __init__(self, trail: AuditTrail, clock: Callable[[], datetime],
                 announce: Callable[[Event], object] | None) -> None:
        self._trail = trail
        self._clock = clock
        self._announce = announce

    def trace(self, who: Access, ins: str, action: AuditAction, target: str, *, outcome: str = "ok",
              detail: Mapping[str, str] | None = None) -> AuditEntry:
        details = dict(detail or {})
        if who.actor.is_professional:
            details.update(mode=str(who.mode), profession=who.actor.profession)
        entry = self._trail.append([NewAuditEntry(
            at=self._clock(), ins=ins, actor_kind=str(who.actor.kind), actor_id=who.actor.id, action=action,
            target=target, outcome=outcome, detail=details)])[0]
        if who.actor.is_professional and outcome == "ok" and action not in (
                AuditAction.EMERGENCY, AuditAction.FIRST_ACCESS):
            self.tell(EventKind.PROFESSIONAL_ACTION, ins, f"audit:{entry.seq}", entry.at)
        return entry

    def refuse(self, who: Access, ins: str, decision: Decision, *, target: str = "",
               detail: Mapping[str, str] | None = None, known: bool = True) -> NoReturn:
        """Trace the refusal, then raise it: a refused access is in the patient's trail.  `known` False (no
        profile for `ins`): no trail to write into, so nothing is written; the same refusal is raised."""
        if known:
            self.trace(who, ins, AuditAction.REFUSED, target, outcome="refused",
                       detail={"rule": decision.rule, **(detail or {})})
        log.info("access refused: rule=%s actor=%s", decision.rule, who.actor.kind)
        raise Refused(decision.finding())

    def tell(self, kind: EventKind, ins: str, event_id: str, at: datetime, *,
             confidentiality: tuple[str, ...] = (), subject: str = "") -> None:
        if self._announce is not None:
            self._announce(Event(event_id=event_id, kind=kind, ins=ins, occurred_at=at, subject_id=subject,
                                  confidentiality=confidentiality))

    def written(self, document: DocumentRecord) -> None:
        """A document was indexed into the record (by the pipeline): one `write` entry, once, naming its
        author (a professional's IDNPS, else the author id as given: a device, the insurer's system)."""
        author = access.author_idnps(document.author_id)
        self._trail.append([NewAuditEntry(
            at=self._clock(), ins=document.patient_ins,
            actor_kind=str(ActorKind.PROFESSIONAL if author else ActorKind.SYSTEM),
            actor_id=author or (document.author_id or document.custodian_id or "")[:128],
            action=AuditAction.WRITE, target=document.document_id,
            detail={"type": document.type_code, "class": document.class_code},
            key=f"write:{document.document_id}")])
