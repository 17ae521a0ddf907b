"""Ports of the record feature: the record service (reads, controls, exports) and the lifecycle service."""


from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, Protocol

from hub.access import Change, DocumentFacts
from hub.actors import Access, Actor
from hub.audit import AuditAction
from hub.notices import Channel
from hub.reading import Reading
from hub.records import (
    DocumentQuery,
    DocumentRecord,
)
from pipelines.record.core.profile import Profile


class RecordService(Protocol):
    """A patient's record read and changed as someone (pipelines.record.access implements it).

    Every call applies the access rules, writes the audit trail and tells the patient what a
    professional did; a refusal is hub.errors.Refused (already traced), an absent or unreachable
    record or document is NotFound."""

    def documents(self, who: Access, ins: str, query: DocumentQuery) -> list[DocumentRecord]: ...

    def gate(self, who: Access, ins: str, reading: Reading, *, target: str = "") -> Actor:
        """The read table for one part of a profile (403 `read.role`, 404 closed); the caller as seen."""
        ...

    def document(self, who: Access, document_id: str, *, action: AuditAction = ...,
                 detail: Mapping[str, str] | None = None) -> DocumentRecord: ...

    def trail(self, who: Access, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """The trail as this viewer is shown it (entries about documents they may not see redacted)."""
        ...

    def change(self, who: Access, document_id: str, change: Change) -> DocumentFacts:
        """The patient's masks, or the author's deletion / lift of INVISIBLE_PATIENT / mask."""
        ...

    def block(self, who: Access, ins: str, idnps: str, *, blocked: bool) -> None: ...

    def set_emergency(self, who: Access, ins: str, *, bris_de_glace: bool | None,
                      regulation: bool | None) -> None: ...

    def settings(self, who: Access, ins: str) -> dict[str, object]: ...


class LifecycleService(Protocol):
    """A profile's life: activation, opposition (and its receipt), a new code, closure, restitution
    (pipelines.record.lifecycle and pipelines.record.restitution implement it).  Refused when the rules forbid the
    step (wrong factors, locked, wrong state), NotFound for an unknown INS."""

    def profile(self, ins: str) -> Profile | None: ...

    def activate(self, ins: str, code: str, vitale_serial: str) -> Profile: ...

    def oppose(self, ins: str, *, code: str | None = None, vitale_serial: str | None = None,
               actor: Actor | None = None) -> Profile:
        """Oppose; `code`/`vitale_serial` given: the person themself, checked like an activation
        (None: an operator acting on a written request)."""
        ...

    def receipt(self, ins: str) -> bytes: ...

    def reissue_code(self, ins: str, *, actor: Actor | None = None) -> Profile: ...

    def request_code(self, ins: str, vitale_serial: str, channel: Channel = ...) -> None:
        """The holder asks for a code (INS + Vitale serial); no outcome is told (Refused: locked only)."""
        ...

    def close(self, ins: str, *, actor: Actor | None = None) -> Profile: ...

    def export(self, ins: str, out: IO[bytes], *, actor: Actor | None = None) -> dict[str, Any]:
        """Write the restitution ZIP of the whole record to `out`; a summary (counts, size)."""
        ...
