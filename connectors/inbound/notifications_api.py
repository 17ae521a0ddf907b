"""HTTP routes of patient notifications: the notification centre, its live stream, preferences, push
devices, legal representatives, postal batches and channel delivery reports.

Owns: who may read or change what (the patient themself or an admin; representatives, letters and
delivery reports: admin), the Server-Sent Events stream (`text/event-stream`, resumable with
Last-Event-ID), and the patient page that shows the centre live.
Does not: decide or send notifications (pipelines.notify.service), or keep state beyond a stream's cursor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http_api import ApiContext, admin, api_error, fetch_bytes, unavailable
from connectors.inbound.mailbox_api import Owner
from connectors.inbound.params import MAX_EVENT_ID_CHARS
from connectors.outbound.url_guard import UrlPolicy, UrlRefused, check_url
from hub.credentials import Credential
from hub.envelope import BlobRef
from hub.errors import TransientError
from hub.notices import Channel, NoticeState, Preferences
from pipelines.notify.ports import NotificationStore

STREAM_POLL_S = 1.0
STREAM_HEARTBEAT_S = 15.0
PAGE = Path(__file__).with_name("static") / "notifications.html"


class PreferencesBody(BaseModel):
    email: bool = True
    push: bool = True
    digest: bool = True
    quiet_hours: str = Field(default="22:00-08:00", pattern=r"^(|\d{2}:\d{2}-\d{2}:\d{2})$")
    timezone: str = "Europe/Paris"


class DeviceBody(BaseModel):
    endpoint: str = Field(min_length=8, max_length=1000, pattern=r"^https?://")


class RepresentativesBody(BaseModel):
    representatives: list[Annotated[str, Field(pattern=r"^\d{15}$")]] = Field(max_length=4)


class DeliveryReportBody(BaseModel):
    provider_ref: str = Field(min_length=1, max_length=256)
    state: Literal["delivered", "bounced", "failed"]


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking store call off the event loop; a store that is down is a 503."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except TransientError as exc:
        raise unavailable(exc) from exc


def notification_routes(app: FastAPI, ctx: ApiContext, *,
                        clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Register the notification routes on `app` (ctx.notices is set)."""
    assert ctx.notices is not None
    _centre_routes(app, ctx.notices, clock)
    _settings_routes(app, ctx.notices, ctx.push_policy)
    _admin_routes(app, ctx, ctx.notices, clock)


def _centre_routes(app: FastAPI, notices: NotificationStore, clock: Callable[[], datetime]) -> None:
    @app.get("/patients/notifications", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The patient's notification centre, live (the token stays in the URL fragment, never sent)."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    @app.get("/v1/patients/{ins}/notifications", tags=["notifications"])
    async def list_notifications(ins: str, _cred: Owner, channel: Channel | None = None,
                                 limit: Annotated[int, Query(ge=1, le=500)] = 200) -> dict[str, Any]:
        """What was sent to the patient on every channel (or one), newest first, with its delivery state."""
        rows = await call(notices.for_patient, ins, channel=channel, limit=limit)
        return {"notifications": [n.to_dict() for n in rows]}

    @app.post("/v1/patients/{ins}/notifications/{notice_id}/read", tags=["notifications"])
    async def mark_read(ins: str, notice_id: str, _cred: Owner) -> dict[str, Any]:
        notice = await call(notices.mark_read, ins, notice_id, at=clock())
        if notice is None:
            raise api_error(404, "not_found", "No such notification for this patient.",
                            "Notification introuvable pour ce patient.")
        return notice.to_dict()  # type: ignore[no-any-return]

    @app.get("/v1/patients/{ins}/notifications/stream", tags=["notifications"])
    async def stream(ins: str, request: Request, _cred: Owner,
                     last_event_id: Annotated[str, Header(max_length=MAX_EVENT_ID_CHARS)] = "") -> StreamingResponse:
        """Server-Sent Events: each new in-app notification as `event: notification`, `id:` its sequence
        number; a client that reconnects with Last-Event-ID misses nothing."""
        cursor = int(last_event_id) if last_event_id.isdigit() else await _latest_seq(ins)
        return StreamingResponse(_events(request, ins, cursor), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _latest_seq(ins: str) -> int:
        newest = await call(notices.for_patient, ins, channel=Channel.INAPP, limit=1)
        return int(newest[0].seq) if newest else 0

    async def _events(request: Request, ins: str, cursor: int) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        idle = 0.0
        while not await request.is_disconnected():
            try:
                rows = await run_in_threadpool(notices.for_patient, ins, channel=Channel.INAPP, after_seq=cursor)
            except TransientError:
                rows = []  # the database is down: keep the stream, try again
            for notice in rows:
                cursor = notice.seq
                yield f"id: {notice.seq}\nevent: notification\ndata: {json.dumps(notice.to_dict())}\n\n".encode()
            idle = 0.0 if rows else idle + STREAM_POLL_S
            if idle >= STREAM_HEARTBEAT_S:
                idle = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(STREAM_POLL_S)



async def _checked_endpoint(endpoint: str, policy: UrlPolicy) -> None:
    """A push endpoint the hub would call (connectors.outbound.url_guard), else 422 with the rule."""
    try:
        await run_in_threadpool(check_url, endpoint, policy)
    except UrlRefused as refused:
        raise api_error(422, refused.rule, refused.message_en, refused.message_fr) from None


def _settings_routes(app: FastAPI, notices: NotificationStore, push_policy: UrlPolicy) -> None:
    @app.get("/v1/patients/{ins}/notification-preferences", tags=["notifications"])
    async def get_preferences(ins: str, _cred: Owner) -> dict[str, Any]:
        return (await call(notices.preferences, ins)).to_dict()  # type: ignore[no-any-return]

    @app.put("/v1/patients/{ins}/notification-preferences", tags=["notifications"])
    async def put_preferences(ins: str, body: PreferencesBody, _cred: Owner) -> dict[str, Any]:
        try:
            ZoneInfo(body.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise api_error(422, "invalid", f"Unknown time zone {body.timezone!r}.",
                            f"Fuseau horaire inconnu : {body.timezone!r}.") from exc
        prefs = Preferences(**body.model_dump())
        await call(notices.set_preferences, ins, prefs)
        return prefs.to_dict()

    @app.post("/v1/patients/{ins}/devices", status_code=201, tags=["notifications"])
    async def add_device(ins: str, body: DeviceBody, _cred: Owner) -> dict[str, Any]:
        """Register a device for push notifications (its endpoint URL: https, to a public address, else 422)."""
        await _checked_endpoint(body.endpoint, push_policy)
        await call(notices.add_device, ins, body.endpoint)
        return {"devices": await call(notices.devices, ins)}



def _admin_routes(app: FastAPI, ctx: ApiContext, notices: NotificationStore, clock: Callable[[], datetime]) -> None:
    @app.put("/v1/patients/{ins}/representatives", tags=["notifications"])
    async def put_representatives(ins: str, body: RepresentativesBody,
                                  _cred: Annotated[Credential, Depends(admin)]) -> dict[str, Any]:
        """A minor's legal representatives (their own INS): they receive the minor's notifications."""
        await call(notices.set_representatives, ins, body.representatives)
        return {"representatives": body.representatives}

    @app.get("/v1/letters", tags=["notifications"])
    async def list_letters(_cred: Annotated[Credential, Depends(admin)]) -> dict[str, Any]:
        return {"batches": [b.to_dict() for b in await call(notices.batches)]}

    @app.post("/v1/letters", tags=["notifications"])
    async def print_letters(_cred: Annotated[Credential, Depends(admin)]) -> dict[str, Any]:
        """Print every due postal notice into a batch now (the hub also does it every letters_every_s)."""
        if ctx.print_letters is None:
            raise api_error(404, "not_found", "Letters are not printed by this hub process.",
                            "Ce processus du hub n'imprime pas de courriers.")
        batch = await call(ctx.print_letters)
        return {"batch": batch.to_dict() if batch is not None else None}

    @app.get("/v1/letters/{batch_id}.pdf", tags=["notifications"])
    async def letter_pdf(batch_id: str, _cred: Annotated[Credential, Depends(admin)]) -> Response:
        batch = await call(notices.batch, batch_id)
        if batch is None:
            raise api_error(404, "not_found", "No such letter batch.", "Lot de courriers introuvable.")
        ref = BlobRef(bucket=batch.bucket, key=batch.pdf_key, sha256=batch.sha256, size=batch.size)
        pdf = await fetch_bytes(ctx, ref, lambda: api_error(404, "not_found", "The batch's PDF is missing.",
                                                            "Le PDF du lot est introuvable."))
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{batch_id}.pdf"'})

    @app.post("/v1/notifications/delivery-reports", tags=["notifications"])
    async def delivery_report(body: DeliveryReportBody,
                              _cred: Annotated[Credential, Depends(admin)]) -> dict[str, Any]:
        """A channel provider's delivery report (SMS delivered, e-mail bounced...)."""
        changed = await call(notices.set_state, body.provider_ref, NoticeState(body.state), at=clock())
        return {"updated": changed}
