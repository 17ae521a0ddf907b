"""The record's read table at the HTTP edge, and how a record call's refusals become answers.

Owns: `gated()`, the one call a route makes before it reads a part of a profile (mailbox, notifications,
export, profile state, delivery states): the record service applies pipelines.record.core.read_rules
(403 `read.role`, 404 for a closed profile's content, the operator's reads traced in the patient's
trail); `reading_of()` / `target_of()`, which part and which item a mailbox or notification route reads
(by its route template); `Owner`, the caller of those routes (the read table, then the patient
themself or an admin: 403 `read.role` otherwise); and `guarded()`, a record call off the loop with
Refused -> 403 (its finding), NotFound -> 404 (`unknown-patient` / `unknown-document`).
Does not: decide anything (pipelines.record.ports.RecordService.gate does) or read the part itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Identified, actor_of
from connectors.inbound.http.common import Port
from connectors.inbound.http.errors import api_error, refused
from connectors.inbound.http.params import InsPath
from hub.actors import Access, Actor
from hub.credentials import Credential, Role
from hub.errors import NotFound, Refused
from hub.reading import Reading

#: the words of a route template that make it a notification route (the rest of /v1/patients/{ins}/...
#: under the mailbox's Owner dependency reads the mailbox)
NOTIFICATION_ROUTES = ("/notifications", "/notification-preferences", "/devices")


class ReadTable(Protocol):
    """The read rules of a profile's parts (pipelines.record.ports.RecordService.gate)."""

    def gate(self, who: Access, ins: str, reading: Reading, *, target: str = "") -> Actor: ...


#: None when the hub serves no record: nothing to ask
READ_TABLE: Port[ReadTable | None] = Port("read table")
Gate = Annotated[ReadTable | None, Depends(READ_TABLE.get)]


async def gated(table: ReadTable | None, cred: Credential, ins: str, reading: Reading, *, target: str = "") -> None:
    """The read table for `reading` of profile `ins` (nothing to ask when the hub serves no record)."""
    if table is not None:
        await guarded(table.gate, Access(actor_of(cred)), ins, reading, target=target, what="patient")


def reading_of(request: Request) -> Reading:
    """Which part of a profile a mailbox or notification route reads, by its route template."""
    path = str(getattr(request.scope.get("route"), "path", ""))
    return Reading.NOTIFICATIONS if any(word in path for word in NOTIFICATION_ROUTES) else Reading.MESSAGES


def target_of(request: Request) -> str:
    """The one message or notice a route reads ("" for a list)."""
    params = request.path_params
    return str(params.get("message_id") or params.get("notice_id") or "")


def not_found(what: str) -> HTTPException:
    return api_error(404, f"unknown-{what}", f"No such {what}, or it is no longer reachable.",
                     "Introuvable, ou plus accessible." if what != "document" else "Document introuvable.")


async def guarded(fn: Callable[..., Any], *args: Any, what: str = "document", **kwargs: Any) -> Any:
    """Run a record call off the loop: Refused -> 403, NotFound -> 404 (a store down: TransientError)."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except Refused as exc:
        raise refused(exc) from exc
    except NotFound as exc:
        raise not_found(str(exc) if str(exc) in ("patient", "document") else what) from exc


async def _owner(ins: InsPath, request: Request, cred: Identified, gate: Gate) -> Credential:
    """The read table for this route's part (the mailbox, or the notifications), then the patient
    themself or an admin; anyone else gets 403 (and no hint whether the INS exists)."""
    await gated(gate, cred, ins, reading_of(request), target=target_of(request))
    if cred.role is Role.ADMIN or (cred.role is Role.PATIENT and cred.ins == ins):
        return cred
    raise api_error(403, "read.role", "Only the patient (or an administrator) may use this mailbox.",
                    "Seul le patient (ou un administrateur) peut utiliser cette messagerie.")


#: a mailbox or notification route's caller: through the read table, then the patient or an admin
Owner = Annotated[Credential, Depends(_owner)]
