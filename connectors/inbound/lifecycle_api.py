"""HTTP routes of a profile's life: activation, opposition and its PDF receipt, a new code, closure,
restitution (ZIP), and the insurer's reimbursement-history batches.

Owns: who may ask for what (the person themself with the factors of their letter: provisional code,
INS and Vitale card serial number; the patient with their credential; an admin or the insurer for
operator steps), HTTP status codes (403 with the rule's finding for a refusal, 429 with Retry-After
when too many wrong attempts locked activation, 202 once a batch is durable), and streaming the ZIP.
Does not: check codes or change states (hub.ports.LifecycleService) or parse batches (InsurerService).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from config.settings import Credential
from connectors.inbound.http_api import ApiContext, api_error, identify, operator, read_body, unavailable
from connectors.inbound.read_gate import gated
from connectors.inbound.record_api import actor_of
from hub.errors import NotFound, Refused, TransientError
from hub.ports import InsurerService, LifecycleService
from hub.reading import Reading

EXPORT_CHUNK = 256 * 1024
EXPORT_IN_MEMORY = 8 * 1024 * 1024  # a bigger ZIP spills to a temporary file


class Factors(BaseModel):
    """What the information letter gives the person: their INS, the provisional code, and the serial
    number printed on their Vitale card."""

    ins: str = Field(pattern=r"^\d{15}$")
    code: str = Field(min_length=4, max_length=40)
    vitale_serial: str = Field(min_length=4, max_length=40)


def insurer(cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role != "insurer":
        raise api_error(403, "forbidden", "Only the insurer sends reimbursement history.",
                        "Seule l'Assurance Maladie transmet l'historique des remboursements.")
    return cred


def _self_or_operator(ins: str, cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role in ("admin", "insurer") or (cred.role == "patient" and cred.ins == ins):
        return cred
    raise api_error(403, "forbidden", "Only the patient themself (or an operator) may do this.",
                    "Seul le patient lui-même (ou un opérateur) peut faire cette demande.")


def lifecycle_routes(app: FastAPI, ctx: ApiContext) -> None:
    """Register the lifecycle routes (ctx.lifecycle is set) and, when set, the insurer's batches."""
    assert ctx.lifecycle is not None
    _person_routes(app, ctx, ctx.lifecycle)
    _operator_routes(app, ctx.lifecycle)
    if ctx.insurer is not None:
        _insurer_routes(app, ctx, ctx.insurer)


def _pdf(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


async def _step(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A lifecycle step: a lockout is 429 with Retry-After, any other refusal 403."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except Refused as exc:
        retry = exc.finding.get("retry_after_s")
        if retry is not None:
            raise HTTPException(429, detail={"code": "locked", "finding": exc.finding,
                                             "message_en": exc.finding.get("message_en", ""),
                                             "message_fr": exc.finding.get("message_fr", "")},
                                headers={"Retry-After": str(int(str(retry)))}) from exc
        raise HTTPException(403, detail={"code": "refused", "finding": exc.finding,
                                         "message_en": exc.finding.get("message_en", ""),
                                         "message_fr": exc.finding.get("message_fr", "")}) from exc
    except NotFound as exc:
        raise api_error(404, "unknown-patient", "No profile for this INS.", "Aucun profil pour cet INS.") from exc
    except TransientError as exc:
        raise unavailable(exc) from exc


def _person_routes(app: FastAPI, ctx: ApiContext, lifecycle: LifecycleService) -> None:
    @app.post("/v1/activation", tags=["lifecycle"], summary="Activate a profile with the letter's code")
    async def activate(body: Factors) -> dict[str, Any]:
        """The provisional code, the INS and the Vitale card serial number, checked together; wrong
        attempts are counted and lock activation for a while (429).  The answer carries the patient's
        own bearer token (`token`, shown this once): their access to their record and mailbox."""
        profile = await _step(lifecycle.activate, body.ins, body.code, body.vitale_serial)
        answer = dict(profile.to_dict())
        if ctx.issue_token is not None:
            answer["token"] = await _step(ctx.issue_token, body.ins)
        return answer

    @app.post("/v1/opposition", tags=["lifecycle"], summary="Oppose the creation of the profile",
              response_class=Response)
    async def oppose(body: Factors) -> Response:
        """Within the 6 weeks, with the letter's factors: the profile is not opened, and the answer
        is the PDF receipt of the opposition."""
        await _step(lifecycle.oppose, body.ins, code=body.code, vitale_serial=body.vitale_serial)
        return _pdf(await _step(lifecycle.receipt, body.ins), "justificatif-opposition.pdf")

    @app.get("/v1/patients/{ins}/profile", tags=["lifecycle"])
    async def profile(ins: str, request: Request,
                      _cred: Annotated[Credential, Depends(_self_or_operator)]) -> dict[str, Any]:
        """The profile's state: the patient, the insurer, an admin (closed profiles too; traced)."""
        await gated(request, _cred, ins, Reading.PROFILE)
        found = await _step(lifecycle.profile, ins)
        if found is None:
            raise api_error(404, "unknown-patient", "No profile for this INS.", "Aucun profil pour cet INS.")
        return dict(found.to_dict())

    @app.post("/v1/patients/{ins}/close", tags=["lifecycle"])
    async def close(ins: str, cred: Annotated[Credential, Depends(_self_or_operator)]) -> dict[str, Any]:
        """Close the profile: its content is no longer reachable (and the patient's issued tokens stop
        working); archived 10 years, then purged.  Ask for the restitution ZIP first."""
        closed = await _step(lifecycle.close, ins, actor=actor_of(cred))
        if ctx.revoke_tokens is not None:
            await _step(ctx.revoke_tokens, ins)
        return dict(closed.to_dict())

    @app.get("/v1/patients/{ins}/export", tags=["lifecycle"], summary="Restitution: the whole record as a ZIP")
    async def export(ins: str, request: Request,
                     cred: Annotated[Credential, Depends(_self_or_operator)]) -> StreamingResponse:
        """The patient's restitution (or an admin's, for them): 403 `read.role` for the insurer, 404 once
        the profile is closed; its audit.json is the trail as the patient is shown it."""
        await gated(request, cred, ins, Reading.EXPORT)
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=EXPORT_IN_MEMORY)  # noqa: SIM115 - closed by _chunks
        try:
            await _step(lifecycle.export, ins, out, actor=actor_of(cred))
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return StreamingResponse(_chunks(out), media_type="application/zip",
                                 headers={"Content-Disposition": 'attachment; filename="mon-espace-sante.zip"'})


def _chunks(out: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := out.read(EXPORT_CHUNK):
            yield chunk
    finally:
        out.close()


def _operator_routes(app: FastAPI, lifecycle: LifecycleService) -> None:
    @app.post("/v1/patients/{ins}/oppose", tags=["lifecycle"], response_class=Response)
    async def oppose_for(ins: str, cred: Annotated[Credential, Depends(operator)]) -> Response:
        """An operator records an opposition received in writing; the answer is the PDF receipt."""
        await _step(lifecycle.oppose, ins, actor=actor_of(cred))
        return _pdf(await _step(lifecycle.receipt, ins), "justificatif-opposition.pdf")

    @app.get("/v1/patients/{ins}/opposition-receipt", tags=["lifecycle"], response_class=Response)
    async def receipt(ins: str, _cred: Annotated[Credential, Depends(operator)]) -> Response:
        return _pdf(await _step(lifecycle.receipt, ins), "justificatif-opposition.pdf")

    @app.post("/v1/patients/{ins}/code", tags=["lifecycle"])
    async def new_code(ins: str, cred: Annotated[Credential, Depends(operator)]) -> dict[str, Any]:
        """A new provisional code, sent by letter: a lost letter, or reversing an opposition."""
        return dict((await _step(lifecycle.reissue_code, ins, actor=actor_of(cred))).to_dict())


def _insurer_routes(app: FastAPI, ctx: ApiContext, batches: InsurerService) -> None:
    @app.post("/v1/insurer/batches", tags=["insurer"], status_code=202,
              summary="Reimbursement history: a batch of reimbursed acts, or one CNAM-HR CDA document")
    async def batch(request: Request, _cred: Annotated[Credential, Depends(insurer)]) -> dict[str, Any]:
        """Held durably when this answers 202; filed 48 hours after the profile's activation."""
        raw = await read_body(request, ctx.max_body_bytes)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        accept = batches.accept_document if media.endswith("xml") else batches.accept_batch
        try:
            return dict(await run_in_threadpool(accept, raw))
        except Refused as exc:  # all or nothing: a rejected batch keeps nothing
            raise HTTPException(422, detail={"code": "batch-rejected", "finding": exc.finding,
                                             "message_en": exc.finding.get("message_en", ""),
                                             "message_fr": exc.finding.get("message_fr", "")}) from exc
        except TransientError as exc:
            raise unavailable(exc) from exc
