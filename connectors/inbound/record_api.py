"""HTTP routes of the shared record (DMP): documents read through the access rules, the patient's and
the author's controls, emergency access, and the audit trail.

Owns: credential -> Actor (patient, professional with IDNPS / profession / specialty, admin), the
emergency headers (`X-Access-Mode: bris_de_glace | regulation`, `X-Access-Reason: <percent-encoded
text>`: headers, so the reason never lands in a URL or an access log), and HTTP status codes: 403
with the rule's finding for a refusal (already in the patient's trail), 404 for what does not exist
or is no longer reachable (closed record, deleted document).
Does not: decide who sees what (pipelines.record.ports.RecordService, pipelines.record.access).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http_api import ApiContext, admin, api_error, fetch_bytes, identify, unavailable
from connectors.inbound.params import MAX_SEQ
from hub.access import Change, DocumentFacts
from hub.actors import Access, AccessMode, Actor, ActorKind
from hub.credentials import Credential, Role
from hub.errors import NotFound, Refused, TransientError
from hub.records import DocumentQuery
from pipelines.record.ports import RecordService

DATE = r"^\d{4}-\d{2}-\d{2}$"
MAX_REASON = 2000


class FlagsBody(BaseModel):
    """What the patient changes on one of their documents (absent: unchanged)."""

    masked: bool | None = Field(default=None, description="hidden from professionals (except its author)")
    hidden_from_representatives: bool | None = Field(default=None, description="hidden from legal representatives")


class EmergencyBody(BaseModel):
    bris_de_glace_allowed: bool | None = None
    regulation_allowed: bool | None = None


def actor_of(cred: Credential) -> Actor:
    """The Actor a credential stands for."""
    if cred.role is Role.PATIENT:
        return Actor(ActorKind.PATIENT, cred.ins)
    if cred.role is Role.PROFESSIONAL:
        return Actor(ActorKind.PROFESSIONAL, cred.idnps, profession=cred.profession, specialty=cred.specialty,
                     regulator=cred.regulator)
    if cred.role is Role.ADMIN:
        return Actor(ActorKind.ADMIN, cred.name)
    if cred.role is Role.INSURER:
        return Actor(ActorKind.INSURER, cred.name)
    raise api_error(403, "read.role", "This credential cannot read patient records.",
                    "Cet accès ne permet pas de consulter les dossiers des patients.")


def caller(cred: Annotated[Credential, Depends(identify)],
           x_access_mode: Annotated[str, Header()] = "normal",
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


def refused(exc: Refused) -> HTTPException:
    """403 with the rule as the error's code (`read.role`, `access.habilitation`...) and its finding."""
    return HTTPException(403, detail={"code": str(exc.finding.get("rule") or "refused"), "finding": exc.finding,
                                      "message_en": exc.finding.get("message_en", ""),
                                      "message_fr": exc.finding.get("message_fr", "")})


def not_found(what: str) -> HTTPException:
    return api_error(404, f"unknown-{what}", f"No such {what}, or it is no longer reachable.",
                     "Introuvable, ou plus accessible." if what != "document" else "Document introuvable.")


async def guarded(fn: Callable[..., Any], *args: Any, what: str = "document", **kwargs: Any) -> Any:
    """Run a record call off the loop: Refused -> 403, NotFound -> 404, a store down -> 503."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except Refused as exc:
        raise refused(exc) from exc
    except NotFound as exc:
        raise not_found(str(exc) if str(exc) in ("patient", "document") else what) from exc
    except TransientError as exc:
        raise unavailable(exc) from exc


def record_routes(app: FastAPI, ctx: ApiContext) -> None:
    """Register the record routes (ctx.records is set)."""
    assert ctx.records is not None
    _reading_routes(app, ctx, ctx.records)
    _control_routes(app, ctx.records)
    _trail_routes(app, ctx)


def _reading_routes(app: FastAPI, ctx: ApiContext, records: RecordService) -> None:
    @app.get("/v1/patients/{ins}/documents", tags=["record"], summary="List a patient's documents")
    async def patient_documents(ins: str, who: Caller, category: str | None = None,
                                class_code: Annotated[str | None, Query(alias="class")] = None,
                                type_code: Annotated[str | None, Query(alias="type")] = None,
                                date_from: Annotated[str | None, Query(alias="from", pattern=DATE)] = None,
                                date_to: Annotated[str | None, Query(alias="to", pattern=DATE)] = None,
                                include_deprecated: bool = False) -> dict[str, Any]:
        """What this caller may see of the record: the patient, a legal representative of a minor, a
        professional through the habilitation matrix (and the emergency headers), or an admin."""
        query = DocumentQuery(category=category, class_code=class_code, type_code=type_code,
                              date_from=date_from, date_to=date_to, include_deprecated=include_deprecated)
        docs = await guarded(records.documents, who, ins, query, what="patient")
        return {"documents": [d.to_dict() for d in docs]}

    @app.get("/v1/documents/{document_id}", tags=["record"], summary="Metadata of one document")
    async def document(document_id: str, who: Caller) -> dict[str, Any]:
        record = await guarded(records.document, who, document_id)
        return dict(record.to_dict())

    @app.get("/v1/documents/{document_id}/content", tags=["record"], summary="The exact bytes submitted",
             response_class=Response)
    async def content(document_id: str, who: Caller) -> Response:
        record = await guarded(records.document, who, document_id)
        data = await fetch_bytes(ctx, record.blob, lambda: not_found("document"))
        return Response(data, media_type="text/xml", headers={"X-Content-SHA256": record.sha256})


def _control_routes(app: FastAPI, records: RecordService) -> None:
    @app.patch("/v1/documents/{document_id}/flags", tags=["record"])
    async def set_flags(document_id: str, body: FlagsBody, who: Caller) -> dict[str, Any]:
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

    @app.post("/v1/documents/{document_id}/lift-invisible", tags=["record"])
    async def lift(document_id: str, who: Caller) -> dict[str, Any]:
        """The author makes an INVISIBLE_PATIENT document visible to the patient (after the consultation)."""
        return _flags(await guarded(records.change, who, document_id, Change.LIFT_INVISIBLE))

    @app.post("/v1/documents/{document_id}/mask", tags=["record"])
    async def author_mask(document_id: str, who: Caller) -> dict[str, Any]:
        """The author masks their document from other professionals, at the patient's request."""
        return _flags(await guarded(records.change, who, document_id, Change.MASK_AT_PATIENT_REQUEST))

    @app.delete("/v1/documents/{document_id}", tags=["record"])
    async def delete(document_id: str, who: Caller) -> dict[str, Any]:
        """The author deletes their document: it is no longer shown to anyone (kept for the trail)."""
        return _flags(await guarded(records.change, who, document_id, Change.DELETE))

    @app.get("/v1/patients/{ins}/access-settings", tags=["record"])
    async def access_settings(ins: str, who: Caller) -> dict[str, Any]:
        return dict(await guarded(records.settings, who, ins, what="patient"))

    @app.patch("/v1/patients/{ins}/access-settings", tags=["record"])
    async def set_access_settings(ins: str, body: EmergencyBody, who: Caller) -> dict[str, Any]:
        """The patient allows or forbids bris de glace and Centre 15 regulation access."""
        await guarded(records.set_emergency, who, ins, bris_de_glace=body.bris_de_glace_allowed,
                      regulation=body.regulation_allowed, what="patient")
        return dict(await guarded(records.settings, who, ins, what="patient"))

    @app.put("/v1/patients/{ins}/blocked/{idnps}", tags=["record"])
    async def block(ins: str, idnps: str, who: Caller) -> dict[str, Any]:
        """The patient blocks one professional (IDNPS) from their whole record, emergencies included."""
        await guarded(records.block, who, ins, _idnps(idnps), blocked=True, what="patient")
        return dict(await guarded(records.settings, who, ins, what="patient"))

    @app.delete("/v1/patients/{ins}/blocked/{idnps}", tags=["record"])
    async def unblock(ins: str, idnps: str, who: Caller) -> dict[str, Any]:
        await guarded(records.block, who, ins, _idnps(idnps), blocked=False, what="patient")
        return dict(await guarded(records.settings, who, ins, what="patient"))


def _trail_routes(app: FastAPI, ctx: ApiContext) -> None:
    assert ctx.records is not None
    records = ctx.records

    @app.get("/v1/patients/{ins}/audit", tags=["audit"], summary="Who did what on this record")
    async def trail(ins: str, who: Caller, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> dict[str, Any]:
        """The record's audit trail: every read, write, mask, deletion, refusal and emergency access."""
        entries = await guarded(records.trail, who, ins, after_seq=after, limit=limit, what="patient")
        return {"entries": entries}  # as the caller is shown it (pipelines.record.core.trail_view)

    @app.get("/v1/audit/verify", tags=["audit"], summary="Verify the whole hash chain (admin)")
    async def verify(_cred: Annotated[Credential, Depends(admin)]) -> dict[str, Any]:
        assert ctx.verify_trail is not None and ctx.trail_head is not None
        try:
            head = await run_in_threadpool(ctx.trail_head)
            result = await run_in_threadpool(ctx.verify_trail)
        except TransientError as exc:
            raise unavailable(exc) from exc
        return {"ok": result.ok, "checked": result.checked, "broken_seq": result.broken_seq,
                "reason": result.reason, "message": str(result), "head": {"seq": head[0], "hash": head[1]}}


def _idnps(value: str) -> str:
    if len(value) != 12 or not value.isdigit() or not value.startswith("8"):
        raise api_error(422, "bad-idnps", "A professional is named by their IDNPS: 8 then the 11 RPPS digits.",
                        "Un professionnel est désigné par son IDNPS : 8 suivi des 11 chiffres RPPS.")
    return value


def _flags(facts: DocumentFacts) -> dict[str, Any]:
    return {"document_id": facts.document_id, "masked_by_patient": facts.masked_by_patient,
            "hidden_from_representatives": facts.hidden_from_representatives,
            "invisible_lifted": facts.invisible_lifted, "deleted": facts.deleted}
