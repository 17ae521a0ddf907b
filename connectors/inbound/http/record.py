"""The record feature's HTTP router (DMP): documents read through the access rules, the patient's and
the author's controls, emergency access, and the audit trail.

Owns: the emergency headers (`X-Access-Mode: bris_de_glace | regulation`, `X-Access-Reason: <percent-
encoded text>`: headers, so the reason never lands in a URL or an access log), and HTTP status codes:
403 with the rule's finding for a refusal (already in the patient's trail), 404 for what does not exist
or is no longer reachable (closed record, deleted document), 422 for a listing's `from` / `to` that is
not a calendar day or an empty range.
Does not: decide who sees what (pipelines.record.ports.RecordService, pipelines.record.access).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Admin, Identified, actor_of
from connectors.inbound.http.common import Blobs, Port, fetch_bytes
from connectors.inbound.http.errors import api_error
from connectors.inbound.http.params import MAX_SEQ, InsPath, bad_parameters
from connectors.inbound.http.read_gate import guarded, not_found
from hub.access import Change, DocumentFacts
from hub.actors import Access, AccessMode
from hub.audit import Verification
from hub.records import DocumentQuery
from pipelines.record.ports import RecordService

DATE = r"^\d{4}-\d{2}-\d{2}$"
MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class TrailChecks:
    """The audit trail's seal, for the admin's check."""

    verify: Callable[[], Verification]  # check the audit trail's whole hash chain
    head: Callable[[], tuple[int, str]]  # the trail's last seq and hash (to publish)


RECORDS: Port[RecordService] = Port("records")
TRAIL: Port[TrailChecks] = Port("trail checks")
Records = Annotated[RecordService, Depends(RECORDS.get)]
router = APIRouter()


class FlagsBody(BaseModel):
    """What the patient changes on one of their documents (absent: unchanged)."""

    masked: bool | None = Field(default=None, description="hidden from professionals (except its author)")
    hidden_from_representatives: bool | None = Field(default=None, description="hidden from legal representatives")


class EmergencyBody(BaseModel):
    bris_de_glace_allowed: bool | None = None
    regulation_allowed: bool | None = None


def caller(cred: Identified, x_access_mode: Annotated[str, Header()] = "normal",
           x_access_reason: Annotated[str, Header()] = "") -> Access:
    """The request's Access: the credential's actor, the access mode and the written reason."""
    try:
        mode = AccessMode(x_access_mode.strip().lower())
    except ValueError:
        raise api_error(400, "bad-access-mode", "X-Access-Mode must be normal, bris_de_glace or regulation.",
                        "X-Access-Mode doit valoir normal, bris_de_glace ou regulation.") from None
    reason = unquote(x_access_reason)[:MAX_REASON]
    return Access(actor_of(cred), mode, reason)


Caller = Annotated[Access, Depends(caller)]


@router.get("/v1/patients/{ins}/documents", tags=["record"], summary="List a patient's documents")
async def patient_documents(ins: InsPath, who: Caller, records: Records, category: str | None = None,
                            class_code: Annotated[str | None, Query(alias="class")] = None,
                            type_code: Annotated[str | None, Query(alias="type")] = None,
                            date_from: Annotated[str | None, Query(alias="from", pattern=DATE)] = None,
                            date_to: Annotated[str | None, Query(alias="to", pattern=DATE)] = None,
                            include_deprecated: bool = False) -> dict[str, Any]:
    """What this caller may see of the record: the patient, a legal representative of a minor, a
    professional through the habilitation matrix (and the emergency headers), or an admin."""
    _check_dates(date_from, date_to)
    query = DocumentQuery(category=category, class_code=class_code, type_code=type_code,
                          date_from=date_from, date_to=date_to, include_deprecated=include_deprecated)
    docs = await guarded(records.documents, who, ins, query, what="patient")
    return {"documents": [d.to_dict() for d in docs]}


@router.get("/v1/documents/{document_id}", tags=["record"], summary="Metadata of one document")
async def document(document_id: str, who: Caller, records: Records) -> dict[str, Any]:
    record = await guarded(records.document, who, document_id)
    return dict(record.to_dict())


@router.get("/v1/documents/{document_id}/content", tags=["record"], summary="The exact bytes submitted",
            response_class=Response)
async def content(document_id: str, who: Caller, records: Records, blobs: Blobs) -> Response:
    record = await guarded(records.document, who, document_id)
    data = await fetch_bytes(blobs, record.blob, lambda: not_found("document"))
    return Response(data, media_type="text/xml", headers={"X-Content-SHA256": record.sha256})


@router.patch("/v1/documents/{document_id}/flags", tags=["record"])
async def set_flags(document_id: str, body: FlagsBody, who: Caller, records: Records) -> dict[str, Any]:
    """The patient masks a document from professionals or hides it from their representatives."""
    changes = [on if value else off for value, on, off in (
        (body.masked, Change.MASK, Change.UNMASK),
        (body.hidden_from_representatives, Change.HIDE, Change.SHOW)) if value is not None]
    if not changes:
        raise api_error(400, "nothing-to-change", "Send masked and/or hidden_from_representatives.",
                        "Envoyez masked et/ou hidden_from_representatives.")
    for change in changes:
        facts = await guarded(records.change, who, document_id, change)
    return _flags(facts)


@router.post("/v1/documents/{document_id}/lift-invisible", tags=["record"])
async def lift(document_id: str, who: Caller, records: Records) -> dict[str, Any]:
    """The author makes an INVISIBLE_PATIENT document visible to the patient (after the consultation)."""
    return _flags(await guarded(records.change, who, document_id, Change.LIFT_INVISIBLE))


@router.post("/v1/documents/{document_id}/mask", tags=["record"])
async def author_mask(document_id: str, who: Caller, records: Records) -> dict[str, Any]:
    """The author masks their document from other professionals, at the patient's request."""
    return _flags(await guarded(records.change, who, document_id, Change.MASK_AT_PATIENT_REQUEST))


@router.delete("/v1/documents/{document_id}", tags=["record"])
async def delete(document_id: str, who: Caller, records: Records) -> dict[str, Any]:
    """The author deletes their document: it is no longer shown to anyone (kept for the trail)."""
    return _flags(await guarded(records.change, who, document_id, Change.DELETE))


@router.get("/v1/patients/{ins}/access-settings", tags=["record"])
async def access_settings(ins: InsPath, who: Caller, records: Records) -> dict[str, Any]:
    return dict(await guarded(records.settings, who, ins, what="patient"))


@router.patch("/v1/patients/{ins}/access-settings", tags=["record"])
async def set_access_settings(ins: InsPath, body: EmergencyBody, who: Caller, records: Records) -> dict[str, Any]:
    """The patient allows or forbids bris de glace and Centre 15 regulation access."""
    await guarded(records.set_emergency, who, ins, bris_de_glace=body.bris_de_glace_allowed,
                  regulation=body.regulation_allowed, what="patient")
    return dict(await guarded(records.settings, who, ins, what="patient"))


@router.put("/v1/patients/{ins}/blocked/{idnps}", tags=["record"])
async def block(ins: InsPath, idnps: str, who: Caller, records: Records) -> dict[str, Any]:
    """The patient blocks one professional (IDNPS) from their whole record, emergencies included."""
    await guarded(records.block, who, ins, _idnps(idnps), blocked=True, what="patient")
    return dict(await guarded(records.settings, who, ins, what="patient"))


@router.delete("/v1/patients/{ins}/blocked/{idnps}", tags=["record"])
async def unblock(ins: InsPath, idnps: str, who: Caller, records: Records) -> dict[str, Any]:
    await guarded(records.block, who, ins, _idnps(idnps), blocked=False, what="patient")
    return dict(await guarded(records.settings, who, ins, what="patient"))


@router.get("/v1/patients/{ins}/audit", tags=["audit"], summary="Who did what on this record")
async def trail(ins: InsPath, who: Caller, records: Records, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> dict[str, Any]:
    """The record's audit trail: every read, write, mask, deletion, refusal and emergency access."""
    entries = await guarded(records.trail, who, ins, after_seq=after, limit=limit, what="patient")
    return {"entries": entries}  # as the caller is shown it (pipelines.record.core.trail_view)


@router.get("/v1/audit/verify", tags=["audit"], summary="Verify the whole hash chain (admin)")
async def verify(_cred: Admin, checks: Annotated[TrailChecks, Depends(TRAIL.get)]) -> dict[str, Any]:
    head = await run_in_threadpool(checks.head)
    result = await run_in_threadpool(checks.verify)
    return {"ok": result.ok, "checked": result.checked, "broken_seq": result.broken_seq,
            "reason": result.reason, "message": str(result), "head": {"seq": head[0], "hash": head[1]}}


def _check_dates(date_from: str | None, date_to: str | None) -> None:
    """`from` and `to` are calendar days (YYYY-MM-DD in ASCII digits), `from` not after `to` (else 422)."""
    start, end = _day("from", date_from), _day("to", date_to)
    if start is not None and end is not None and start > end:
        raise bad_parameters("param.out-of-range", {"from": "after `to`: the range is empty"})


def _day(name: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if value.isascii():
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise bad_parameters("param.out-of-range", {name: "not a calendar day (YYYY-MM-DD)"})


def _idnps(value: str) -> str:
    if len(value) != 12 or not value.isdigit() or not value.startswith("8"):
        raise api_error(422, "bad-idnps", "A professional is named by their IDNPS: 8 then the 11 RPPS digits.",
                        "Un professionnel est désigné par son IDNPS : 8 suivi des 11 chiffres RPPS.")
    return value


def _flags(facts: DocumentFacts) -> dict[str, Any]:
    return {"document_id": facts.document_id, "masked_by_patient": facts.masked_by_patient,
            "hidden_from_representatives": facts.hidden_from_representatives,
            "invisible_lifted": facts.invisible_lifted, "deleted": facts.deleted}
