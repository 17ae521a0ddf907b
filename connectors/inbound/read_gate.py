"""The read table at the HTTP edge: every route reading a part of a profile asks the record service first.

Owns: gated(), the one call a route makes before it reads a profile's mailbox, notifications, export,
profile state or delivery states (the record service applies pipelines.record.core.read_rules: 403 `read.role`,
404 for a closed profile's content, the operator's reads traced in the patient's trail), and
reading_of(), which part a mailbox or notification route reads (by its route template).
Does not: decide anything (pipelines.record.ports.RecordService.gate does) or read the part itself.
"""

from __future__ import annotations

from fastapi import Request

from connectors.inbound.http_api import ApiContext
from connectors.inbound.record_api import actor_of, guarded
from hub.actors import Access
from hub.credentials import Credential
from hub.reading import Reading

#: the words of a route template that make it a notification route (the rest of /v1/patients/{ins}/...
#: under the mailbox's Owner dependency reads the mailbox)
NOTIFICATION_ROUTES = ("/notifications", "/notification-preferences", "/devices")


async def gated(request: Request, cred: Credential, ins: str, reading: Reading, *, target: str = "") -> None:
    """The read table for `reading` of profile `ins` (nothing to ask when the hub serves no record)."""
    ctx: ApiContext = request.app.state.ctx
    if ctx.records is not None:
        await guarded(ctx.records.gate, Access(actor_of(cred)), ins, reading, target=target, what="patient")


def reading_of(request: Request) -> Reading:
    """Which part of a profile a mailbox or notification route reads, by its route template."""
    path = str(getattr(request.scope.get("route"), "path", ""))
    return Reading.NOTIFICATIONS if any(word in path for word in NOTIFICATION_ROUTES) else Reading.MESSAGES


def target_of(request: Request) -> str:
    """The one message or notice a route reads ("" for a list)."""
    params = request.path_params
    return str(params.get("message_id") or params.get("notice_id") or "")
