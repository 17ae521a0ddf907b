"""The HTTP API (FastAPI): submit documents, follow submissions, list and fetch a patient's documents.

Owns: HTTP semantics only: authentication, content type, body size, status codes
(403 with the write rule when the write gate refuses, before anything is stored;
202 only once intake returned; 503 with Retry-After when a dependency is down),
and a redacted access log (route templates, never INS values from paths).
Does not: parse or validate documents (the pipeline does) or pick adapters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.inbound.params import install_param_errors
from connectors.outbound.url_guard import UrlPolicy
from hub.access import PRODUCER_CODES
from hub.audit import Verification
from hub.auth import Authenticator
from hub.credentials import Credential, Role
from hub.envelope import BlobRef, Source
from hub.errors import HubError, IntegrityError, NotFound, RosterRejected, TransientError
from hub.intake import Intake
from hub.notices import LetterBatch
from hub.ports import BlobStore, Index
from hub.records import SubmissionRecord
from hub.refusals import already_traced, close_scope, open_scope
from hub.writes import HTTP_DOOR, ProducersOnly, WriteGate
from pipelines.insurer.ports import InsurerService
from pipelines.mail.ports import Mailboxes, MailService
from pipelines.notify.ports import ContactService, NotificationStore
from pipelines.record.ports import LifecycleService, RecordService

log = logging.getLogger(__name__)
access_log = logging.getLogger("meshub.access")

CDA_MEDIA_TYPES = frozenset({"application/xml", "text/xml", "application/hl7-cda+xml", "application/hl7-v3+xml"})
MAX_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The ports and limits the API needs; built by the composition root."""

    intake: Intake
    index: Index
    store: BlobStore
    auth: Authenticator
    max_body_bytes: int
    import_roster: Callable[[bytes], dict[str, Any]]  # roster CSV bytes -> outcome (raises RosterRejected)
    mailboxes: Mailboxes | None = None  # patient mailboxes (MSSanté); None: the mailbox routes are absent
    mail: MailService | None = None
    patient_domain: str = "patient.mssante.fr"
    notices: NotificationStore | None = None  # patient notifications; None: those routes are absent
    print_letters: Callable[[], LetterBatch | None] | None = None  # print due postal notices now
    records: RecordService | None = None  # the record read through the access rules; None: no record routes
    verify_trail: Callable[[], Verification] | None = None  # check the audit trail's whole hash chain
    trail_head: Callable[[], tuple[int, str]] | None = None  # the trail's last seq and hash (to publish)
    lifecycle: LifecycleService | None = None  # activation, opposition, closure, restitution
    insurer: InsurerService | None = None  # reimbursement history batches
    issue_token: Callable[[str], str] | None = None  # a new bearer token for a patient (INS), after activation
    revoke_tokens: Callable[[str], int] | None = None  # a closed profile's issued tokens stop working
    write_gate: WriteGate = field(default_factory=ProducersOnly)  # who may submit what (before storing)
    #: (who, ins, document id, rule, route template): a refusal no service traced, into the patient's trail
    trace_refusal: Callable[[Credential, str, str, str, str], None] | None = None
    contacts: ContactService | None = None  # the patient's own contact addresses; None: those routes are absent
    push_policy: UrlPolicy = field(default_factory=UrlPolicy)  # where patients' push endpoints may point


def api_error(status: int, code: str, en: str, fr: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message_en": en, "message_fr": fr}, headers=headers)


def unavailable(exc: TransientError) -> HTTPException:
    return api_error(503, "unavailable", f"The hub cannot make your submission durable right now "
                     f"({type(exc).__name__}); nothing was accepted. Retry later.",
                     "Le hub ne peut pas enregistrer durablement votre envoi pour l'instant ; rien n'a été "
                     "accepté. Réessayez plus tard.", {"Retry-After": "5"})


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="MES Hub", version="0.1.0",
                  description="Intake of health documents (HL7 CDA R2, CI-SIS) into per-patient records.")
    app.state.ctx = ctx
    app.add_middleware(AccessLog)
    app.exception_handler(HTTPException)(_http_error)
    install_param_errors(app)
    _submission_routes(app, ctx)
    _operation_routes(app, ctx)
    if ctx.records is not None:
        from connectors.inbound.record_api import record_routes
        record_routes(app, ctx)
    if ctx.lifecycle is not None:
        from connectors.inbound.lifecycle_api import lifecycle_routes
        lifecycle_routes(app, ctx)
    if ctx.mailboxes is not None and ctx.mail is not None:
        from connectors.inbound.mailbox_api import mailbox_routes
        mailbox_routes(app, ctx)
    if ctx.notices is not None:
        from connectors.inbound.notifications_api import notification_routes
        notification_routes(app, ctx)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (403, 404):
        await _trace_refusal(request, exc)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _trace_refusal(request: Request, exc: HTTPException) -> None:
    """A 403/404 to an identified caller on a route naming a patient is in that patient's trail: written
    here when no service wrote it while serving the request (hub.refusals).  A trail that cannot be
    written is logged; the refusal stands."""
    ctx: ApiContext = request.app.state.ctx
    cred = getattr(request.state, "credential", None)
    params = request.path_params
    ins, document_id = str(params.get("ins", "")), str(params.get("document_id", ""))
    if ctx.trace_refusal is None or cred is None or not (ins or document_id) or (ins and already_traced(ins)):
        return
    rule = _rule_of(exc.detail)
    route = str(getattr(request.scope.get("route"), "path", ""))
    try:
        await run_in_threadpool(ctx.trace_refusal, cred, ins, document_id, rule or str(exc.status_code), route)
    except HubError as error:
        log.warning("refusal not traced (%s) on %s", type(error).__name__, route)


def _rule_of(detail: object) -> str:
    """The refusal's rule: the finding's when the body carries one, else the error's code."""
    if not isinstance(detail, dict):
        return ""
    found = detail.get("finding")
    rule = found.get("rule") if isinstance(found, dict) else None
    return str(rule or detail.get("code", ""))


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
        scope_token = open_scope()  # which trails a service wrote a refusal into, for _trace_refusal

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


def identify(request: Request) -> Credential:
    ctx: ApiContext = request.app.state.ctx
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        cred = ctx.auth.identify(token.strip()) if scheme.lower() == "bearer" else None
    except TransientError as exc:  # the issued tokens' store is down: say so, do not pretend 401
        raise unavailable(exc) from exc
    if cred is None:
        raise api_error(401, "unauthenticated", "Missing or unknown bearer token (Authorization: Bearer ...).",
                        "Jeton d'accès absent ou inconnu (Authorization: Bearer ...).",
                        {"WWW-Authenticate": "Bearer"})
    request.state.credential = cred  # who is refused, if this request is (see _trace_refusal)
    return cred


def admin(cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role is not Role.ADMIN:
        raise api_error(403, "forbidden", "This operation needs an admin credential.",
                        "Cette opération demande un accès administrateur.")
    return cred


def operator(cred: Annotated[Credential, Depends(identify)]) -> Credential:
    """An admin or the insurer (roster, new codes, operator-made oppositions and closures)."""
    if cred.role not in (Role.ADMIN, Role.INSURER):
        raise api_error(403, "forbidden", "This operation needs an admin or insurer credential.",
                        "Cette opération demande un accès administrateur ou Assurance Maladie.")
    return cred


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return api_error(413, "body-too-large", f"The body exceeds the limit of {limit} bytes.",
                     f"Le corps de la requête dépasse la limite de {limit} octets.")


def _check_media_type(request: Request) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CDA_MEDIA_TYPES:
        raise api_error(415, "unsupported-media-type",
                        f"Send the CDA document as one of: {', '.join(sorted(CDA_MEDIA_TYPES))}.",
                        f"Envoyez le document CDA avec l'un des types : {', '.join(sorted(CDA_MEDIA_TYPES))}.")
    return media_type


def _masking_codes(header: str) -> tuple[str, ...]:
    """X-Confidentiality: the XDS masking codes the producer sets beside the document (comma-separated)."""
    codes = tuple(dict.fromkeys(c.strip().upper() for c in header.split(",") if c.strip()))
    unknown = [c for c in codes if c not in PRODUCER_CODES]
    if unknown:
        raise api_error(400, "bad-confidentiality", "X-Confidentiality takes " + ", ".join(PRODUCER_CODES)
                        + " (JDV_J08, comma-separated); N/R/V go in the CDA's confidentialityCode.",
                        "X-Confidentiality accepte " + ", ".join(PRODUCER_CODES) + " (JDV_J08, séparés par des "
                        "virgules) ; N/R/V se placent dans le confidentialityCode du CDA.")
    return codes


async def _wait_final(index: Index, submission_id: str, wait_s: float) -> SubmissionRecord | None:
    deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
    delay = 0.02
    while True:
        record = await run_in_threadpool(index.submission, submission_id)
        if record is None or record.final or time.monotonic() >= deadline:
            return record
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _submission_routes(app: FastAPI, ctx: ApiContext) -> None:
    """POST a document; follow its submission."""
    @app.post("/v1/documents", status_code=202, summary="Submit one CDA document")
    async def submit(request: Request, response: Response,
                     cred: Annotated[Credential, Depends(identify)]) -> dict[str, Any]:
        media_type = _check_media_type(request)
        raw = await read_body(request, ctx.max_body_bytes)
        if not raw.strip():
            raise api_error(400, "empty-body", "The body is empty: send the CDA XML document.",
                            "Le corps est vide : envoyez le document CDA XML.")
        source = Source(kind="http", producer=cred.name)
        codes = _masking_codes(request.headers.get("x-confidentiality", ""))
        try:  # the writer's rights first: a refusal stores nothing (no object, submission or message)
            refusal = await run_in_threadpool(ctx.write_gate.admit, cred, raw, door=HTTP_DOOR)
        except TransientError as exc:
            raise unavailable(exc) from exc
        if refusal is not None:
            raise api_error(403, refusal.rule, refusal.message_en, refusal.message_fr)
        try:
            record = await run_in_threadpool(ctx.intake.accept, raw, source, content_type=media_type,
                                             confidentiality=codes)
        except TransientError as exc:
            raise unavailable(exc) from exc
        response.headers["Location"] = f"/v1/submissions/{record.submission_id}"
        return record.to_dict()

    @app.get("/v1/submissions/{submission_id}", summary="Status of a submission (pending, indexed, ...)")
    async def submission(submission_id: str, cred: Annotated[Credential, Depends(identify)],
                         wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0) -> dict[str, Any]:
        try:
            record = await _wait_final(ctx.index, submission_id, wait)
        except TransientError as exc:
            raise unavailable(exc) from exc
        if record is None or (cred.role is not Role.ADMIN and record.producer != cred.name):
            raise api_error(404, "unknown-submission", "No such submission for this credential.",
                            "Soumission inconnue pour cet accès.")
        return record.to_dict()



def _operation_routes(app: FastAPI, ctx: ApiContext) -> None:
    """Roster import and health."""

    @app.post("/v1/patients/import", summary="Import the insurer's roster CSV (admin or insurer)")
    async def import_roster(request: Request, _cred: Annotated[Credential, Depends(operator)]) -> dict[str, Any]:
        raw = await read_body(request, ctx.max_body_bytes)
        try:
            return await run_in_threadpool(ctx.import_roster, raw)
        except RosterRejected as exc:
            raise api_error(422, "roster-rejected", "The roster was rejected; nothing was imported. "
                            "Fix these lines and send the whole file again: " + "; ".join(exc.problems),
                            "Le fichier a été refusé ; rien n'a été importé. Corrigez ces lignes et renvoyez "
                            "le fichier complet.") from exc
        except TransientError as exc:
            raise unavailable(exc) from exc

    @app.get("/healthz", summary="Liveness and dependencies")
    async def health() -> JSONResponse:
        checks: dict[str, str] = {}
        for name, ping in (("index", ctx.index.ping), ("store", ctx.store.ping)):
            try:
                await run_in_threadpool(ping)
                checks[name] = "ok"
            except HubError as exc:
                checks[name] = type(exc).__name__
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)


async def fetch_bytes(ctx: ApiContext, ref: BlobRef, missing: Callable[[], HTTPException]) -> bytes:
    """Stored bytes (SHA-256 checked), 503 when the store is down, `missing()` when they are gone, 502 when
    what the store gave back fails its check (tampered, or sealed under another key): never those bytes."""
    try:
        return await run_in_threadpool(ctx.store.get, ref)
    except TransientError as exc:
        raise unavailable(exc) from exc
    except NotFound as exc:
        raise missing() from exc
    except IntegrityError as exc:
        log.error("stored object failed its integrity check (%s)", type(exc).__name__)
        raise api_error(502, "stored-bytes-corrupt", "The stored copy failed its integrity check (SHA-256 or "
                        "decryption); nothing was sent. The operator has been told by the hub's log.",
                        "La copie stockée n'a pas passé son contrôle d'intégrité ; rien n'a été envoyé. "
                        "L'incident est consigné dans le journal du hub.") from exc


def _no_document() -> HTTPException:
    return api_error(404, "unknown-document", "No such document.", "Document inconnu.")
