"""The mail feature's HTTP router: a patient's MSSanté mailbox: list, read, reply, file attachments,
send a document; and what the hub delivered to an address (admin).

Owns: who may touch which mailbox (the read table first, connectors.inbound.http.read_gate.Owner: 403
`read.role` for the insurer and professionals, 404 once the profile is closed, the admin's reads
traced; then the patient themself with a `patient` credential bound to their INS, or an admin), HTTP
status codes, and reading message bytes back from storage.  An admin's look at a message marks nothing
read and sends no read receipt; an admin files nothing (`write.role`).
Does not: decide whether a reply is allowed or compose mail (pipelines.mail.ports.MailService does, in
pipelines.mail.pipeline); a refusal comes back as hub.errors.Refused and becomes 403 with its finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Admin
from connectors.inbound.http.common import Blobs, Port, fetch_bytes
from connectors.inbound.http.errors import api_error, refused
from connectors.inbound.http.params import MAX_OFFSET, InsPath, Plain
from connectors.inbound.http.read_gate import Gate, Owner, gated
from hub.credentials import Credential, Role
from hub.errors import NotFound, Refused
from hub.ports import Mailboxes
from hub.reading import Reading
from hub.records import MessageRecord
from pipelines.mail.ports import MailService


@dataclass(frozen=True, slots=True)
class MailboxPorts:
    """What the mailbox router needs."""

    mailboxes: Mailboxes  # patient mailboxes (MSSanté)
    mail: MailService
    patient_domain: str = "patient.mssante.fr"

    def address(self, ins: str) -> str:
        return f"{ins}@{self.patient_domain}"

    def patient_of(self, address: str) -> str:
        """The INS of a patient mailbox address (`<INS>@<patient domain>`), else ""."""
        local, _, domain = address.strip().lower().rpartition("@")
        return local if domain == self.patient_domain.lower() and len(local) == 15 and local.isascii() \
            and local.isalnum() else ""


MAILBOX: Port[MailboxPorts] = Port("mailbox")
Mail = Annotated[MailboxPorts, Depends(MAILBOX.get)]
router = APIRouter()


class ReplyBody(BaseModel):
    text: str = Field(min_length=1, max_length=100_000, description="Plain-text body of the reply")


class SendDocumentBody(BaseModel):
    document_id: Plain = Field(min_length=1, max_length=256,
                               description="A document of the patient's record (root^extension)")
    to: Plain = Field(min_length=3, max_length=320,
                      description="The organisational MSSanté mailbox of the chosen pharmacy")
    text: str = Field(default="", max_length=100_000)


def _own_reading(cred: Credential, ins: str) -> bool:
    """Whether this is the patient's own use of their mailbox (not an operator's): only that marks a
    message read, sends the read receipt (MDN displayed) and files documents into the record."""
    return cred.role is Role.PATIENT and cred.ins == ins


def _no_message() -> HTTPException:
    return api_error(404, "not_found", "No such message in this mailbox.", "Message introuvable dans cette messagerie.")


async def _owned(ports: MailboxPorts, ins: str, message_id: str) -> MessageRecord:
    """The message, if it is in this patient's mailbox; 404 otherwise (same answer either way)."""
    record = await run_in_threadpool(ports.mailboxes.message, message_id)
    if record is None or record.mailbox != ports.address(ins):
        raise _no_message()
    return record


async def _call(function: Any, *args: Any) -> Any:
    """Run a MailService call off the event loop, mapping refusals to 403 (outages: TransientError)."""
    try:
        return await run_in_threadpool(function, *args)
    except Refused as exc:
        raise refused(exc) from exc
    except NotFound as exc:
        raise api_error(404, "not_found", str(exc), "Élément introuvable.") from exc


@router.get("/v1/patients/{ins}/messages", summary="List a patient's MSSanté messages, newest first")
async def list_messages(ins: InsPath, _cred: Owner, ports: Mail, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    records = await run_in_threadpool(ports.mailboxes.messages, ports.address(ins), limit=limit, offset=offset)
    return {"messages": [m.to_dict() for m in records]}


@router.get("/v1/patients/{ins}/messages/{message_id}/raw", summary="The message as received (RFC 5322)",
            response_class=Response)
async def raw_message(ins: InsPath, message_id: str, _cred: Owner, ports: Mail, blobs: Blobs) -> Response:
    record = await _owned(ports, ins, message_id)
    data = record.message_in(await fetch_bytes(blobs, record.blob, _no_message))
    return Response(data, media_type="message/rfc822")


@router.get("/v1/mailboxes/{address}/deliveries", summary="What the hub delivered to an address (admin)")
async def deliveries_to(address: str, request: Request, _cred: Admin, ports: Mail, gate: Gate,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    ins = ports.patient_of(address)
    if ins:  # a patient's mailbox: the admin's read is in the patient's trail (closed profiles too)
        try:
            await gated(gate, _cred, ins, Reading.DELIVERIES)
        except HTTPException as exc:  # no profile for that INS: no trail to write, the states still shown
            if exc.status_code != 404:
                raise
    rows = await run_in_threadpool(ports.mailboxes.deliveries_to, address, limit=limit)
    return {"deliveries": [r.to_dict() for r in rows]}


@router.get("/v1/patients/{ins}/messages/{message_id}",
            summary="One message's metadata; marks it read (and sends the read receipt it asked for)")
async def read_message(ins: InsPath, message_id: str, cred: Owner, ports: Mail) -> dict[str, Any]:
    record = await _owned(ports, ins, message_id)
    if not _own_reading(cred, ins):  # an operator's look is not the patient's reading: no read mark, no MDN
        return dict(record.to_dict())
    record = await _call(ports.mail.read, ins, message_id)
    return dict(record.to_dict())


@router.post("/v1/patients/{ins}/messages/{message_id}/reply", status_code=202,
             summary="Reply to a professional who wrote first and did not close the exchange")
async def reply(ins: InsPath, message_id: str, body: ReplyBody, _cred: Owner, ports: Mail) -> dict[str, Any]:
    await _owned(ports, ins, message_id)
    return {"submission": await _call(ports.mail.reply, ins, message_id, body.text)}


@router.post("/v1/patients/{ins}/messages/{message_id}/file", status_code=202,
             summary="File the CDA documents the message carries into the patient's record")
async def file_attachments(ins: InsPath, message_id: str, cred: Owner, ports: Mail) -> dict[str, Any]:
    if not _own_reading(cred, ins):
        raise api_error(403, "write.role", "Only the patient may file their messages' documents into their "
                        "record.", "Seul le patient peut classer les documents de ses messages dans son dossier.")
    await _owned(ports, ins, message_id)
    return {"submissions": await _call(ports.mail.file_attachments, ins, message_id)}


@router.post("/v1/patients/{ins}/send-document", status_code=202,
             summary="Send a document of the record (e.g. a prescription) to a pharmacy's mailbox")
async def send_document(ins: InsPath, body: SendDocumentBody, _cred: Owner, ports: Mail) -> dict[str, Any]:
    """The patient's own act: the document is read through the record's access rules (a document
    hidden from them, deleted or not theirs is 404, traced); an admin does not send as the patient."""
    if _cred.role is not Role.PATIENT:
        raise api_error(403, "access.patient-only", "Only the patient sends a document of their record.",
                        "Seul le patient envoie un document de son dossier.")
    return {"submission": await _call(ports.mail.send_document, ins, body.document_id, body.to, body.text)}
