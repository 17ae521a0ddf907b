"""How the HTTP door answers an error, for every feature router alike.

Owns: the error body {"error": {"code", "message_en", "message_fr", ...}} (api_error; the framework's own
answers, no such route, wrong method, an unreadable body, are put in the same shape), 403 with a
service's finding (refused), the one handler mapping hub.errors.TransientError (a dependency down) to
`503 unavailable` with Retry-After, and the edge's last-resort refusal tracing: a 403/404 to an
identified caller on a route naming a patient ({ins}) or a document ({document_id}) is written into the
patient's trail when no service wrote it while serving the request (hub.refusals).
Does not: decide refusals (the services do) or bound parameters (connectors.inbound.http.params).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.inbound.http.params import install_param_errors
from hub.credentials import Credential
from hub.errors import HubError, Refused, TransientError
from hub.refusals import already_traced

log = logging.getLogger(__name__)
RETRY_AFTER_S = "5"

#: (who, ins, document id, rule, route template): a refusal no service traced, into the patient's trail
RefusalTracer = Callable[[Credential, str, str, str, str], None]


def api_error(status: int, code: str, en: str, fr: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message_en": en, "message_fr": fr}, headers=headers)


def refused(exc: Refused) -> HTTPException:
    """403 with the rule as the error's code (`read.role`, `access.habilitation`...) and its finding."""
    return HTTPException(403, detail={"code": str(exc.finding.get("rule") or "refused"), "finding": exc.finding,
                                      "message_en": exc.finding.get("message_en", ""),
                                      "message_fr": exc.finding.get("message_fr", "")})


def install_errors(app: FastAPI, trace_refusal: RefusalTracer | None) -> None:
    """The door's error handlers on `app`; `trace_refusal` writes the refusals no service traced."""
    app.state.trace_refusal = trace_refusal
    app.exception_handler(StarletteHTTPException)(_http_error)  # ours, and the framework's (404, 405, 400)
    app.exception_handler(TransientError)(_unavailable)
    install_param_errors(app)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """A dependency (store, index, bus, trail) is down: nothing was done, retry later."""
    body = {"code": "unavailable",
            "message_en": f"The hub cannot make your submission durable right now ({type(exc).__name__}); "
                          "nothing was accepted. Retry later.",
            "message_fr": "Le hub ne peut pas enregistrer durablement votre envoi pour l'instant ; rien n'a "
                          "été accepté. Réessayez plus tard."}
    return JSONResponse({"error": body}, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (403, 404):
        await _trace_refusal(request, exc)
    return JSONResponse({"error": _detail(exc)}, status_code=exc.status_code, headers=exc.headers)


#: status -> (code, French text) of the framework's own answers (a text detail: no route, wrong method,
#: a body that is not UTF-8 JSON), so that every error has the same body
_FRAMEWORK = {400: ("bad-request", "Requête illisible : envoyez un corps JSON en UTF-8 conforme au schéma de la "
                     "route."),
              404: ("not-found", "Aucune route à cette adresse (voir /docs)."),
              405: ("method-not-allowed", "Cette méthode n'est pas acceptée sur cette route (voir /docs).")}


def _detail(exc: StarletteHTTPException) -> object:
    """The error body: ours as it is; the framework's text detail as code / message_en / message_fr."""
    if isinstance(exc.detail, dict):
        return exc.detail
    code, fr = _FRAMEWORK.get(exc.status_code, ("http-error", "Requête refusée."))
    en = str(exc.detail or "")
    if exc.status_code == 400:
        en = f"{en}: send a UTF-8 JSON body matching the route's schema (see /openapi.json)."
    return {"code": code, "message_en": en, "message_fr": fr}


async def _trace_refusal(request: Request, exc: StarletteHTTPException) -> None:
    """A 403/404 to an identified caller on a route naming a patient is in that patient's trail: written
    here when no service wrote it while serving the request (hub.refusals).  A trail that cannot be
    written is logged; the refusal stands."""
    trace: RefusalTracer | None = request.app.state.trace_refusal
    cred = getattr(request.state, "credential", None)
    params = request.path_params
    ins, document_id = str(params.get("ins", "")), str(params.get("document_id", ""))
    if trace is None or cred is None or not (ins or document_id) or (ins and already_traced(ins)):
        return
    rule = _rule_of(exc.detail)
    route = str(getattr(request.scope.get("route"), "path", ""))
    try:
        await run_in_threadpool(trace, cred, ins, document_id, rule or str(exc.status_code), route)
    except HubError as error:
        log.warning("refusal not traced (%s) on %s", type(error).__name__, route)


def _rule_of(detail: object) -> str:
    """The refusal's rule: the finding's when the body carries one, else the error's code."""
    if not isinstance(detail, dict):
        return ""
    found = detail.get("finding")
    rule = found.get("rule") if isinstance(found, dict) else None
    return str(rule or detail.get("code", ""))
