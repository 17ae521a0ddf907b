"""The insurer feature's HTTP router: the reimbursement-history batches the insurer sends.

Owns: who may send them (the `insurer` credential only: 403 `forbidden`), 202 once a batch is durable,
422 `batch-rejected` with the finding when the batch is refused (all or nothing: it keeps nothing).
Does not: parse or file batches (pipelines.insurer.ports.InsurerService).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Identified
from connectors.inbound.http.common import Port, read_body
from connectors.inbound.http.errors import api_error
from hub.credentials import Credential, Role
from hub.errors import Refused
from pipelines.insurer.ports import InsurerService


@dataclass(frozen=True, slots=True)
class InsurerPorts:
    """What the insurer router needs."""

    batches: InsurerService  # reimbursement history batches
    max_body_bytes: int


INSURER: Port[InsurerPorts] = Port("insurer")
router = APIRouter()


def insurer(cred: Identified) -> Credential:
    if cred.role is not Role.INSURER:
        raise api_error(403, "forbidden", "Only the insurer sends reimbursement history.",
                        "Seule l'Assurance Maladie transmet l'historique des remboursements.")
    return cred


@router.post("/v1/insurer/batches", tags=["insurer"], status_code=202,
             summary="Reimbursement history: a batch of reimbursed acts, or one CNAM-HR CDA document")
async def batch(request: Request, _cred: Annotated[Credential, Depends(insurer)],
                ports: Annotated[InsurerPorts, Depends(INSURER.get)]) -> dict[str, Any]:
    """Held durably when this answers 202; filed 48 hours after the profile's activation."""
    raw = await read_body(request, ports.max_body_bytes)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    accept = ports.batches.accept_document if media.endswith("xml") else ports.batches.accept_batch
    try:
        return dict(await run_in_threadpool(accept, raw))
    except Refused as exc:  # all or nothing: a rejected batch keeps nothing
        raise HTTPException(422, detail={"code": "batch-rejected", "finding": exc.finding,
                                         "message_en": exc.finding.get("message_en", ""),
                                         "message_fr": exc.finding.get("message_fr", "")}) from exc
