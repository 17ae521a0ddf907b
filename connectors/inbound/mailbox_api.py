"""HTTP routes of a patient's MSSanté mailbox: list, read, reply, file attachments, send a document.

Owns: who may touch which mailbox (the read table first, connectors.inbound.read_gate: 403 `read.role`
for the insurer and professionals, 404 once the profile is closed, the admin's reads traced; then the
patient themself with a `patient` credential bound to their INS, or an admin), HTTP status codes, and
reading message bytes back from storage.  An admin's
look at a message marks nothing read and sends no read receipt; an admin files nothing (`write.role`).
Does not: decide whether a reply is allowed or compose mail (pipelines.mail.ports.MailService does, in
pipelines.mail.pipeline); a refusal comes back as hub.errors.Refused and becomes 403 with its finding.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from config.settings import Credential
from connectors.inbound.http_api import ApiContext, admin, api_error, fetch_bytes, identify, unavailable
from connectors.inbound.params import MAX_OFFSET
from connectors.inbound.read_gate import gated, reading_of, target_of
from hub.errors import NotFound, Refused, TransientError
from hub.reading import Reading
from hub.records import MessageRecord


class ReplyBody(BaseModel):
    text: str = Field(min_length=1, max_length=100_000, description="Plain-text body of the reply")


class SendDocumentBody(BaseModel):
    document_id: str = Field(description="A document of the patient's record (root^extension)")
    to: str = Field(description="The organisational MSSanté mailbox of the chosen pharmacy")
    text: str = Field(default="", max_length=100_000)


async def _mailbox_owner(ins: str, request: Request, cred: Annotated[Credential, Depends(identify)]) -> Credential:
    """The read table for this route's part (the mailbox, or the notifications), then the patient
    themself or an admin; anyone else gets 403 (and no hint whether the INS exists)."""
    await gated(request, cred, ins, reading_of(request), target=target_of(request))
    if cred.role == "admin" or (cred.role == "patient" and cred.ins == ins):
        return cred
    raise api_error(403, "read.role", "Only the patient (or an administrator) may use this mailbox.",
                    "Seul le patient (ou un administrateur) peut utiliser cette messagerie.")


def _own_reading(cred: Credential, ins: str) -> bool:
    """Whether this is the patient's own use of their mailbox (not an operator's): only that marks a
    message read, sends the read receipt (MDN displayed) and files documents into the record."""
    return cred.role == "patient" and cred.ins == ins


def _refused(exc: Refused) -> HTTPException:
    return HTTPException(403, detail={"code": str(exc.finding.get("rule") or "refused"), "finding": exc.finding,
                                      "message_en": exc.finding.get("message_en", ""),
                                      "message_fr": exc.finding.get("message_fr", "")})


def _no_message() -> HTTPException:
    return api_error(404, "not_found", "No such message in this mailbox.", "Message introuvable dans cette messagerie.")


Owner = Annotated[Credential, Depends(_mailbox_owner)]


def mailbox_routes(app: FastAPI, ctx: ApiContext) -> None:
    """Register the mailbox routes on `app` (ctx.mailboxes and ctx.mail are set)."""
    _read_routes(app, ctx)
    _write_routes(app, ctx)


def _address(ctx: ApiContext, ins: str) -> str:
    return f"{ins}@{ctx.patient_domain}"


def _patient_of(ctx: ApiContext, address: str) -> str:
    """The INS of a patient mailbox address (`<INS>@<patient domain>`), else ""."""
    local, _, domain = address.strip().lower().rpartition("@")
    return local if domain == ctx.patient_domain.lower() and len(local) == 15 and local.isascii() \
        and local.isalnum() else ""


async def _owned(ctx: ApiContext, ins: str, message_id: str) -> MessageRecord:
    """The message, if it is in this patient's mailbox; 404 otherwise (same answer either way)."""
    assert ctx.mailboxes is not None
    record = await run_in_threadpool(ctx.mailboxes.message, message_id)
    if record is None or record.mailbox != _address(ctx, ins):
        raise _no_message()
    return record


def _read_routes(app: FastAPI, ctx: ApiContext) -> None:
    mailboxes = ctx.mailboxes
    assert mailboxes is not None

    @app.get("/v1/patients/{ins}/messages", summary="List a patient's MSSanté messages, newest first")
    async def list_messages(ins: str, _cred: Owner, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                            offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
        records = await run_in_threadpool(mailboxes.messages, _address(ctx, ins), limit=limit, offset=offset)
        return {"messages": [m.to_dict() for m in records]}


    @app.get("/v1/patients/{ins}/messages/{message_id}/raw", summary="The message as received (RFC 5322)",
             response_class=Response)
    async def raw_message(ins: str, message_id: str, _cred: Owner) -> Response:
        record = await _owned(ctx, ins, message_id)
        data = record.message_in(await fetch_bytes(ctx, record.blob, _no_message))
        return Response(data, media_type="message/rfc822")

    @app.get("/v1/mailboxes/{address}/deliveries", summary="What the hub delivered to an address (admin)")
    async def deliveries_to(address: str, request: Request, _cred: Annotated[Credential, Depends(admin)],
                            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        ins = _patient_of(ctx, address)
        if ins:  # a patient's mailbox: the admin's read is in the patient's trail (closed profiles too)
            try:
                await gated(request, _cred, ins, Reading.DELIVERIES)
            except HTTPException as exc:  # no profile for that INS: no trail to write, the states still shown
                if exc.status_code != 404:
                    raise
        rows = await run_in_threadpool(mailboxes.deliveries_to, address, limit=limit)
        return {"deliveries": [r.to_dict() for r in rows]}


def _write_routes(app: FastAPI, ctx: ApiContext) -> None:
    mail = ctx.mail
    assert mail is not None

    @app.get("/v1/patients/{ins}/messages/{message_id}",
             summary="One message's metadata; marks it read (and sends the read receipt it asked for)")
    async def read_message(ins: str, message_id: str, cred: Owner) -> dict[str, Any]:
        record = await _owned(ctx, ins, message_id)
        if not _own_reading(cred, ins):  # an operator's look is not the patient's reading: no read mark, no MDN
            return dict(record.to_dict())
        record = await _call(mail.read, ins, message_id)
        return dict(record.to_dict())

    @app.post("/v1/patients/{ins}/messages/{message_id}/reply", status_code=202,
              summary="Reply to a professional who wrote first and did not close the exchange")
    async def reply(ins: str, message_id: str, body: ReplyBody, _cred: Owner) -> dict[str, Any]:
        await _owned(ctx, ins, message_id)
        return {"submission": await _call(mail.reply, ins, message_id, body.text)}

    @app.post("/v1/patients/{ins}/messages/{message_id}/file", status_code=202,
              summary="File the CDA documents the message carries into the patient's record")
    async def file_attachments(ins: str, message_id: str, cred: Owner) -> dict[str, Any]:
        if not _own_reading(cred, ins):
            raise api_error(403, "write.role", "Only the patient may file their messages' documents into their "
                            "record.", "Seul le patient peut classer les documents de ses messages dans son dossier.")
        await _owned(ctx, ins, message_id)
        return {"submissions": await _call(mail.file_attachments, ins, message_id)}

    @app.post("/v1/patients/{ins}/send-document", status_code=202,
              summary="Send a document of the record (e.g. a prescription) to a pharmacy's mailbox")
    async def send_document(ins: str, body: SendDocumentBody, _cred: Owner) -> dict[str, Any]:
        """The patient's own act: the document is read through the record's access rules (a document
        hidden from them, deleted or not theirs is 404, traced); an admin does not send as the patient."""
        if _cred.role != "patient":
            raise api_error(403, "access.patient-only", "Only the patient sends a document of their record.",
                            "Seul le patient envoie un document de son dossier.")
        return {"submission": await _call(mail.send_document, ins, body.document_id, body.to, body.text)}


async def _call(function: Any, *args: Any) -> Any:
    """Run a MailService call off the event loop, mapping refusals to 403 and outages to 503."""
    try:
        return await run_in_threadpool(function, *args)
    except Refused as exc:
        raise _refused(exc) from exc
    except NotFound as exc:
        raise api_error(404, "not_found", str(exc), "Élément introuvable.") from exc
    except TransientError as exc:
        raise unavailable(exc) from exc
