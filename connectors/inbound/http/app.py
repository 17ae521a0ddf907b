"""The HTTP API's app factory: one FastAPI app from the feature routers it is given parts for.

Owns: `ApiParts` (per feature, the ports its router needs; a feature without parts has no routes),
`create_app` (provides each part as a port on app.state, installs the error handlers, the bound on every
request body (common.BodyLimit) and on every path and query string (params.plain_parameters), and
includes the routers, in a fixed order), and `AccessLog`, a redacted access log: one line per request with the route
*template*, never the concrete path, which may carry an INS; it also opens the per-request refusal scope
(hub.refusals) the edge's refusal tracing reads.
Does not: answer any route itself or pick adapters (the composition root, meshub.compose, does).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.inbound.http import contacts, documents, insurer, lifecycle, mailbox, notifications, operations, record
from connectors.inbound.http.auth import AUTH
from connectors.inbound.http.common import BLOBS, BodyLimit, StoredBytes
from connectors.inbound.http.documents import DocumentPorts
from connectors.inbound.http.errors import RefusalTracer, install_errors
from connectors.inbound.http.insurer import InsurerPorts
from connectors.inbound.http.lifecycle import LifecyclePorts
from connectors.inbound.http.mailbox import MailboxPorts
from connectors.inbound.http.notifications import NotificationPorts
from connectors.inbound.http.operations import OperationPorts
from connectors.inbound.http.params import plain_parameters
from connectors.inbound.http.read_gate import READ_TABLE
from connectors.inbound.http.record import TrailChecks
from hub.auth import Authenticator
from hub.refusals import close_scope, open_scope
from pipelines.record.ports import RecordService

__all__ = ["AccessLog", "ApiParts", "DocumentPorts", "InsurerPorts", "LifecyclePorts", "MailboxPorts",
           "NotificationPorts", "OperationPorts", "TrailChecks", "create_app"]
access_log = logging.getLogger("meshub.access")


@dataclass(frozen=True, slots=True)
class ApiParts:
    """What the HTTP API is built from, feature by feature (None: that feature's routes are absent)."""

    auth: Authenticator
    blobs: StoredBytes  # stored bytes read back (document content, raw messages, letter PDFs)
    documents: DocumentPorts
    operations: OperationPorts
    trace_refusal: RefusalTracer | None = None  # a refusal no service traced, into the patient's trail
    records: RecordService | None = None  # the record read through the access rules
    trail: TrailChecks | None = None  # the audit trail's seal (with records)
    lifecycle: LifecyclePorts | None = None  # activation, opposition, closure, restitution
    insurer: InsurerPorts | None = None  # reimbursement history batches
    mailbox: MailboxPorts | None = None  # patient mailboxes (MSSanté)
    notifications: NotificationPorts | None = None  # patient notifications


def create_app(parts: ApiParts) -> FastAPI:
    app = FastAPI(title="MES Hub", version="0.1.0", dependencies=[Depends(plain_parameters)],
                  description="Intake of health documents (HL7 CDA R2, CI-SIS) into per-patient records.")
    app.state.ports = {}
    app.add_middleware(BodyLimit, limit=_largest_body(parts))
    app.add_middleware(AccessLog)
    install_errors(app, parts.trace_refusal)
    AUTH.provide(app, parts.auth)
    BLOBS.provide(app, parts.blobs)
    READ_TABLE.provide(app, parts.records)
    _include(app, parts)
    return app


def _largest_body(parts: ApiParts) -> int:
    """The largest body any door takes (each also checks its own while reading)."""
    limits = [parts.documents.max_body_bytes, parts.operations.max_body_bytes]
    return max(limits + ([parts.insurer.max_body_bytes] if parts.insurer is not None else []))


def _include(app: FastAPI, parts: ApiParts) -> None:
    """The routers of the features `parts` has, in a fixed order (the OpenAPI document's)."""
    documents.DOCUMENTS.provide(app, parts.documents)
    app.include_router(documents.router)
    operations.OPERATIONS.provide(app, parts.operations)
    app.include_router(operations.router)
    if parts.records is not None:
        record.RECORDS.provide(app, parts.records)
        if parts.trail is not None:
            record.TRAIL.provide(app, parts.trail)
        app.include_router(record.router)
    if parts.lifecycle is not None:
        lifecycle.LIFECYCLE.provide(app, parts.lifecycle)
        app.include_router(lifecycle.person)
        if parts.lifecycle.contacts is not None:
            contacts.CONTACTS.provide(app, parts.lifecycle.contacts)
            app.include_router(contacts.router)
        app.include_router(lifecycle.operators)
    if parts.insurer is not None:
        insurer.INSURER.provide(app, parts.insurer)
        app.include_router(insurer.router)
    if parts.mailbox is not None:
        mailbox.MAILBOX.provide(app, parts.mailbox)
        app.include_router(mailbox.router)
    if parts.notifications is not None:
        notifications.NOTIFICATIONS.provide(app, parts.notifications)
        app.include_router(notifications.router)


class AccessLog:
    """Pure ASGI middleware: one line per request with the route *template*
    (/v1/patients/{ins}/documents), never the concrete path, which may carry an INS."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]
        scope_token = open_scope()  # which trails a service wrote a refusal into, for the edge's tracing

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_note)
        finally:
            close_scope(scope_token)
            path = getattr(scope.get("route"), "path", "<unmatched>")
            access_log.info("%s %s %d %.1fms", scope["method"], path, status[0],
                            (time.perf_counter() - started) * 1000)
