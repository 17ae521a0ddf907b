"""The write gate of the doors: one document's CDA header checked against its writer, before anything is
stored, and every refusal traced in the target patient's audit trail.

Owns: HeaderWriteGate (hub.writes.WriteGate): producers pass without a parse (their documents are
validated by the pipeline as always); for everyone else the header is read with the hardened parser
(pipelines.documents.core.writes.read_facts), core.writes.may_write decides, and a refusal whose target
INS is a known profile is appended to that patient's trail (action `refused`, detail rule and door)
before the door answers 403.
Does not: store the document, validate it, or answer HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from hub.access import Decision
from hub.actors import ActorKind
from hub.audit import AuditAction, AuditTrail, NewAuditEntry
from hub.credentials import Credential, Role
from hub.ports import Index
from hub.refusals import already_traced
from hub.writes import WRITERS
from pipelines.documents.core.writes import WriteFacts, may_write, read_facts

log = logging.getLogger(__name__)
#: the trail's actor of each writing role (the id: a patient's INS, a professional's IDNPS, else the name)
ACTOR_KINDS = {Role.PATIENT: ActorKind.PATIENT, Role.PROFESSIONAL: ActorKind.PROFESSIONAL,
               Role.INSURER: ActorKind.INSURER, Role.ADMIN: ActorKind.ADMIN}


class HeaderWriteGate:
    """hub.writes.WriteGate on the document's CDA header, tracing refusals in the patient's trail."""

    def __init__(self, *, index: Index, trail: AuditTrail,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._index = index
        self._trail = trail
        self._clock = clock

    def admit(self, writer: Credential, raw: bytes, *, door: str) -> Decision | None:
        if writer.role is Role.PRODUCER and writer.role in WRITERS.get(door, frozenset()):
            return None  # any record; validation reports a bad document
        facts, unreadable = read_facts(raw)
        decision = may_write(writer, facts, door=door, unreadable=unreadable)
        if decision.allowed:
            return None
        self._trace(writer, facts, decision, door)
        log.info("write refused: rule=%s role=%s door=%s", decision.rule, writer.role, door)
        return decision

    def _trace(self, writer: Credential, facts: WriteFacts | None, decision: Decision, door: str) -> None:
        """The refusal in the target patient's trail, when the header names a patient the hub knows."""
        ins = facts.target_ins if facts is not None else None
        trace_refusal(self._trail, self._index, writer, ins or "", {"rule": decision.rule, "door": door},
                      at=self._clock())


class EdgeRefusalTracer:
    """The HTTP edge's last resort: a 403/404 on a route naming a patient (its INS, or a document of
    theirs) that no service traced is appended to that patient's trail (detail: rule and route template)."""

    def __init__(self, *, index: Index, trail: AuditTrail,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._index = index
        self._trail = trail
        self._clock = clock

    def __call__(self, who: Credential, ins: str, document_id: str, rule: str, route: str) -> None:
        if not ins and document_id:
            record = self._index.document(document_id)
            ins = record.patient_ins if record is not None else ""
        if already_traced(ins):  # the record service traced this refusal itself
            return
        trace_refusal(self._trail, self._index, who, ins, {"rule": rule, "route": route}, at=self._clock())


def trace_refusal(trail: AuditTrail, index: Index, who: Credential, ins: str, detail: dict[str, str], *,
                  at: datetime) -> None:
    """One `refused` entry of `who` in the trail of `ins`, when `ins` is a profile the hub knows."""
    if not ins or len(ins) != 15 or not ins.isascii() or index.patient(ins) is None:
        return
    kind = ACTOR_KINDS.get(who.role, ActorKind.SYSTEM)
    actor_id = {ActorKind.PATIENT: who.ins, ActorKind.PROFESSIONAL: who.idnps}.get(kind) or who.name
    trail.append([NewAuditEntry(at=at, ins=ins, actor_kind=str(kind), actor_id=actor_id,
                                action=AuditAction.REFUSED, outcome="refused", detail=detail)])
