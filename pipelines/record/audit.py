"""Verifying a stored audit trail (`meshub audit verify`): page through the store, check the chain.

Owns: `verify_trail`, which reads the head first, then streams the entries up to that head, a page at
a time, into pipelines.record.core.audit_chain.verify (memory stays one page, whatever the trail's length).
Entries appended while it runs (after the head it read) are left for the next run.
Also owns `LifecycleAuditor`: the lifecycle's steps (pipelines.record.lifecycle, named `lifecycle.<step>`) as
trail entries, so that activation, opposition, closure, export and purge are in the patient's trail too.
Does not: decide what is audited or how the chain is built (hub.audit), or print anything (the CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

from hub.audit import AuditAction, AuditEntry, AuditTrail, NewAuditEntry, Verification
from pipelines.record.core.audit_chain import verify


def _up_to(trail: AuditTrail, last_seq: int, page: int) -> Iterator[AuditEntry]:
    """The trail's entries with seq <= last_seq, in seq order, fetched `page` at a time."""
    after = 0
    while True:
        rows = trail.entries(after_seq=after, limit=page)
        for entry in rows:
            if entry.seq > last_seq:
                return
            yield entry
        if len(rows) < page:
            return
        after = rows[-1].seq


def verify_trail(trail: AuditTrail, page: int = 1000) -> Verification:
    """Check the whole of `trail` against its head; ok only when every entry verifies."""
    if page < 1:
        raise ValueError("page must be at least 1")
    head = trail.head()
    return verify(_up_to(trail, head[0], page), head)


#: a lifecycle step -> the trail's action (the step's own name goes in the entry's detail)
LIFECYCLE_ACTIONS: Mapping[str, AuditAction] = {
    "registered": AuditAction.REGISTER, "activated": AuditAction.ACTIVATE,
    "opened-automatically": AuditAction.ACTIVATE, "wrong-factors": AuditAction.REFUSED,
    "opposed": AuditAction.OPPOSE, "code-reissued": AuditAction.REOPEN, "adult-invited": AuditAction.REOPEN,
    "code-requested": AuditAction.REOPEN, "code-request-refused": AuditAction.REFUSED,
    "representation-ended": AuditAction.REVOKE, "closed": AuditAction.CLOSE, "exported": AuditAction.EXPORT,
    "purged": AuditAction.PURGE}


class LifecycleAuditor:
    """The lifecycle's audit hook, `(ins, "lifecycle.<step>", "kind:id" | "operator" | system)`, as entries.
    A purge's own entry names no patient: the trail it redacted must not keep the INS."""

    def __init__(self, trail: AuditTrail, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._trail = trail
        self._clock = clock

    def __call__(self, ins: str, step: str, actor: str) -> None:
        name = step.removeprefix("lifecycle.")
        action = LIFECYCLE_ACTIONS.get(name, AuditAction.SETTINGS)
        kind, _, who = actor.partition(":") if ":" in actor else (
            ("admin", "", actor) if actor == "operator" else ("system", "", actor))
        self._trail.append([NewAuditEntry(
            at=self._clock(), ins="" if action is AuditAction.PURGE else ins, actor_kind=kind, actor_id=who,
            action=action, outcome="refused" if action is AuditAction.REFUSED else "ok",
            detail={"step": name})])
