"""The notifications feature's HTTP router: the notification centre, its live stream, preferences, push
devices, legal representatives, postal batches and channel delivery reports.

Owns: who may read or change what (the patient themself or an admin, through the read table; legal
representatives, letters and delivery reports: admin), the Server-Sent Events stream
(`text/event-stream`, resumable with Last-Event-ID: ASCII digits, anything else starts from the newest),
the checks of what is stored for the notifier (a time zone it knows, quiet hours it can read, each legal
representative a valid INS, once, not the patient: 422 with the rule), and the patient page that shows
the centre live.
Does not: decide or send notifications (pipelines.notify.service), or keep state beyond a stream's cursor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Admin
from connectors.inbound.http.common import Blobs, Port, fetch_bytes
from connectors.inbound.http.errors import api_error
from connectors.inbound.http.params import MAX_EVENT_ID_CHARS, InsPath, Plain
from connectors.inbound.http.read_gate import Owner
from connectors.outbound.url_guard import UrlPolicy, UrlRefused, check_url
from hub.envelope import BlobRef
from hub.errors import TransientError
from hub.ins import valid_matricule
from hub.notices import Channel, LetterBatch, NoticeState, Preferences
from pipelines.notify.core.policy import parse_quiet_hours
from pipelines.notify.ports import NotificationStore

STREAM_POLL_S = 1.0
STREAM_HEARTBEAT_S = 15.0
PAGE = Path(__file__).parents[1] / "static" / "notifications.html"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NotificationPorts:
    """What the notifications router needs."""

    notices: NotificationStore  # patient notifications
    print_letters: Callable[[], LetterBatch | None] | None = None  # print due postal notices now
    push_policy: UrlPolicy = field(default_factory=UrlPolicy)  # where patients' push endpoints may point
    clock: Callable[[], datetime] = _now


NOTIFICATIONS: Port[NotificationPorts] = Port("notifications")
Notices = Annotated[NotificationPorts, Depends(NOTIFICATIONS.get)]
router = APIRouter()


class PreferencesBody(BaseModel):
    email: bool = True
    push: bool = True
    digest: bool = True
    quiet_hours: str = Field(default="22:00-08:00", pattern=r"^(|\d{2}:\d{2}-\d{2}:\d{2})$")
    timezone: str = Field(default="Europe/Paris", max_length=64)


class DeviceBody(BaseModel):
    endpoint: str = Field(min_length=8, max_length=1000, pattern=r"^https?://")


def _representative(value: str) -> str:
    if not value.isascii() or not value.isdigit() or not valid_matricule(value):
        raise ValueError("not a valid INS (15 digits whose key matches)")
    return value


class RepresentativesBody(BaseModel):
    representatives: list[Annotated[str, Field(pattern=r"^\d{15}$"), AfterValidator(_representative)]] = Field(
        max_length=4)


class DeliveryReportBody(BaseModel):
    provider_ref: Plain = Field(min_length=1, max_length=256)
    state: Literal["delivered", "bounced", "failed"]


@router.get("/patients/notifications", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The patient's notification centre, live (the token stays in the URL fragment, never sent)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})


@router.get("/v1/patients/{ins}/notifications", tags=["notifications"])
async def list_notifications(ins: InsPath, _cred: Owner, ports: Notices, channel: Channel | None = None,
                             limit: Annotated[int, Query(ge=1, le=500)] = 200) -> dict[str, Any]:
    """What was sent to the patient on every channel (or one), newest first, with its delivery state."""
    rows = await run_in_threadpool(ports.notices.for_patient, ins, channel=channel, limit=limit)
    return {"notifications": [n.to_dict() for n in rows]}


@router.post("/v1/patients/{ins}/notifications/{notice_id}/read", tags=["notifications"])
async def mark_read(ins: InsPath, notice_id: str, _cred: Owner, ports: Notices) -> dict[str, Any]:
    notice = await run_in_threadpool(ports.notices.mark_read, ins, notice_id, at=ports.clock())
    if notice is None:
        raise api_error(404, "not_found", "No such notification for this patient.",
                        "Notification introuvable pour ce patient.")
    return notice.to_dict()


@router.get("/v1/patients/{ins}/notifications/stream", tags=["notifications"])
async def stream(ins: InsPath, request: Request, _cred: Owner, ports: Notices,
                 last_event_id: Annotated[str, Header(max_length=MAX_EVENT_ID_CHARS)] = "") -> StreamingResponse:
    """Server-Sent Events: each new in-app notification as `event: notification`, `id:` its sequence
    number; a client that reconnects with Last-Event-ID misses nothing."""
    resumed = last_event_id.isascii() and last_event_id.isdigit()  # "²" is a digit to str, not to int()
    cursor = int(last_event_id) if resumed else await _latest_seq(ports.notices, ins)
    return StreamingResponse(_events(request, ports.notices, ins, cursor), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _latest_seq(notices: NotificationStore, ins: str) -> int:
    newest = await run_in_threadpool(notices.for_patient, ins, channel=Channel.INAPP, limit=1)
    return int(newest[0].seq) if newest else 0


async def _events(request: Request, notices: NotificationStore, ins: str, cursor: int) -> AsyncIterator[bytes]:
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


@router.get("/v1/patients/{ins}/notification-preferences", tags=["notifications"])
async def get_preferences(ins: InsPath, _cred: Owner, ports: Notices) -> dict[str, Any]:
    return (await run_in_threadpool(ports.notices.preferences, ins)).to_dict()


@router.put("/v1/patients/{ins}/notification-preferences", tags=["notifications"])
async def put_preferences(ins: InsPath, body: PreferencesBody, _cred: Owner, ports: Notices) -> dict[str, Any]:
    try:
        ZoneInfo(body.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise api_error(422, "invalid", f"Unknown time zone {body.timezone!r}.",
                        f"Fuseau horaire inconnu : {body.timezone!r}.") from exc
    try:  # as the notifier reads them: what it cannot read is never stored
        parse_quiet_hours(body.quiet_hours)
    except ValueError as exc:
        raise api_error(422, "preferences.quiet-hours", "quiet_hours is HH:MM-HH:MM (00:00 to 23:59, start and "
                        "end different), or \"\" for none.", "quiet_hours s'écrit HH:MM-HH:MM (de 00:00 à 23:59, "
                        "début et fin différents), ou \"\" pour aucune.") from exc
    prefs = Preferences(**body.model_dump())
    await run_in_threadpool(ports.notices.set_preferences, ins, prefs)
    return prefs.to_dict()


@router.post("/v1/patients/{ins}/devices", status_code=201, tags=["notifications"])
async def add_device(ins: InsPath, body: DeviceBody, _cred: Owner, ports: Notices) -> dict[str, Any]:
    """Register a device for push notifications (its endpoint URL: https, to a public address, else 422)."""
    await _checked_endpoint(body.endpoint, ports.push_policy)
    await run_in_threadpool(ports.notices.add_device, ins, body.endpoint)
    return {"devices": await run_in_threadpool(ports.notices.devices, ins)}


@router.put("/v1/patients/{ins}/representatives", tags=["notifications"])
async def put_representatives(ins: InsPath, body: RepresentativesBody, _cred: Admin, ports: Notices) -> dict[str, Any]:
    """A minor's legal representatives (their own INS): they receive the minor's notifications."""
    if ins in body.representatives or len(set(body.representatives)) != len(body.representatives):
        raise api_error(422, "representatives.invalid", "List each representative once, and not the patient "
                        "themself.", "Indiquez chaque représentant une seule fois, et pas le patient lui-même.")
    await run_in_threadpool(ports.notices.set_representatives, ins, body.representatives)
    return {"representatives": body.representatives}


@router.get("/v1/letters", tags=["notifications"])
async def list_letters(_cred: Admin, ports: Notices) -> dict[str, Any]:
    return {"batches": [b.to_dict() for b in await run_in_threadpool(ports.notices.batches)]}


@router.post("/v1/letters", tags=["notifications"])
async def print_letters(_cred: Admin, ports: Notices) -> dict[str, Any]:
    """Print every due postal notice into a batch now (the hub also does it every letters_every_s)."""
    if ports.print_letters is None:
        raise api_error(404, "not_found", "Letters are not printed by this hub process.",
                        "Ce processus du hub n'imprime pas de courriers.")
    batch = await run_in_threadpool(ports.print_letters)
    return {"batch": batch.to_dict() if batch is not None else None}


@router.get("/v1/letters/{batch_id}.pdf", tags=["notifications"])
async def letter_pdf(batch_id: str, _cred: Admin, ports: Notices, blobs: Blobs) -> Response:
    batch = await run_in_threadpool(ports.notices.batch, batch_id)
    if batch is None:
        raise api_error(404, "not_found", "No such letter batch.", "Lot de courriers introuvable.")
    ref = BlobRef(bucket=batch.bucket, key=batch.pdf_key, sha256=batch.sha256, size=batch.size)
    pdf = await fetch_bytes(blobs, ref, lambda: api_error(404, "not_found", "The batch's PDF is missing.",
                                                          "Le PDF du lot est introuvable."))
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{batch_id}.pdf"'})


@router.post("/v1/notifications/delivery-reports", tags=["notifications"])
async def delivery_report(body: DeliveryReportBody, _cred: Admin, ports: Notices) -> dict[str, Any]:
    """A channel provider's delivery report (SMS delivered, e-mail bounced...)."""
    changed = await run_in_threadpool(ports.notices.set_state, body.provider_ref, NoticeState(body.state),
                                      at=ports.clock())
    return {"updated": changed}
