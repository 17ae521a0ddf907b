"""The operators' HTTP router: the insurer's roster import, and the hub's health.

Owns: 422 `roster-rejected` with the lines to fix (nothing imported), `/healthz` (200 `ok`, or 503
`degraded` naming the dependency that failed its ping).
Does not: read the roster (pipelines.record.roster_import) or ping anything itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Operator
from connectors.inbound.http.common import Port, read_body
from connectors.inbound.http.errors import api_error
from hub.errors import HubError, RosterRejected


@dataclass(frozen=True, slots=True)
class OperationPorts:
    """What the operations router needs."""

    import_roster: Callable[[bytes], dict[str, Any]]  # roster CSV bytes -> outcome (raises RosterRejected)
    pings: tuple[tuple[str, Callable[[], None]], ...]  # (name, ping) of each dependency /healthz checks
    max_body_bytes: int


OPERATIONS: Port[OperationPorts] = Port("operations")
Operations = Annotated[OperationPorts, Depends(OPERATIONS.get)]
router = APIRouter()


@router.post("/v1/patients/import", summary="Import the insurer's roster CSV (admin or insurer)")
async def import_roster(request: Request, _cred: Operator, ports: Operations) -> dict[str, Any]:
    raw = await read_body(request, ports.max_body_bytes)
    try:
        return await run_in_threadpool(ports.import_roster, raw)
    except RosterRejected as exc:
        raise api_error(422, "roster-rejected", "The roster was rejected; nothing was imported. "
                        "Fix these lines and send the whole file again: " + "; ".join(exc.problems),
                        "Le fichier a été refusé ; rien n'a été importé. Corrigez ces lignes et renvoyez "
                        "le fichier complet.") from exc


@router.get("/healthz", summary="Liveness and dependencies")
async def health(ports: Operations) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, ping in ports.pings:
        try:
            await run_in_threadpool(ping)
            checks[name] = "ok"
        except HubError as exc:
            checks[name] = type(exc).__name__
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)
