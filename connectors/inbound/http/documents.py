"""The documents feature's HTTP router: submit one CDA document, follow its submission.

Owns: HTTP semantics of intake: content type (415), body size (413), an empty body (400), the
X-Confidentiality masking codes (400 for an unknown one), 403 with the write rule when the write gate
refuses (before anything is stored), 202 and Location only once intake returned; a submission is shown
to its producer or an admin only (404 otherwise), optionally waiting (`wait=`) for its final state.
Does not: parse or validate documents (the pipeline does) or decide who may write (hub.writes.WriteGate).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Identified
from connectors.inbound.http.common import Port, read_body
from connectors.inbound.http.errors import api_error
from hub.access import PRODUCER_CODES
from hub.credentials import Credential, Role
from hub.envelope import Source
from hub.records import SubmissionRecord
from hub.writes import HTTP_DOOR, WriteGate

CDA_MEDIA_TYPES = frozenset({"application/xml", "text/xml", "application/hl7-cda+xml", "application/hl7-v3+xml"})
MAX_WAIT_S = 60.0


class Accepts(Protocol):
    """The way in (hub.intake.Intake.accept): the bytes made durable and queued, or TransientError."""

    def accept(self, raw: bytes, source: Source, *, content_type: str = ...,
               confidentiality: tuple[str, ...] = ...) -> SubmissionRecord: ...


class Submissions(Protocol):
    """Where a submission's state is read (hub.ports.Index.submission)."""

    def submission(self, submission_id: str) -> SubmissionRecord | None: ...


@dataclass(frozen=True, slots=True)
class DocumentPorts:
    """What the documents router needs."""

    intake: Accepts
    submissions: Submissions
    write_gate: WriteGate  # who may submit what (before storing)
    max_body_bytes: int


DOCUMENTS: Port[DocumentPorts] = Port("documents")
Documents = Annotated[DocumentPorts, Depends(DOCUMENTS.get)]
router = APIRouter()


@router.post("/v1/documents", status_code=202, summary="Submit one CDA document")
async def submit(request: Request, response: Response, cred: Identified, ports: Documents) -> dict[str, Any]:
    media_type = _check_media_type(request)
    raw = await read_body(request, ports.max_body_bytes)
    if not raw or raw.isspace():  # (not raw.strip(): the same test without copying the body)
        raise api_error(400, "empty-body", "The body is empty: send the CDA XML document.",
                        "Le corps est vide : envoyez le document CDA XML.")
    source = Source(kind="http", producer=cred.name)
    codes = _masking_codes(request.headers.get("x-confidentiality", ""))
    # one hop to the thread pool for the gate and the intake (each hop costs a thread handover)
    record = await run_in_threadpool(_admit_and_accept, ports, cred, raw, source, media_type, codes)
    response.headers["Location"] = f"/v1/submissions/{record.submission_id}"
    return record.to_dict()


def _admit_and_accept(ports: DocumentPorts, cred: Credential, raw: bytes, source: Source, media_type: str,
                      codes: tuple[str, ...]) -> SubmissionRecord:
    """The writer's rights first: a refusal (403) stores nothing (no object, submission or message)."""
    refusal = ports.write_gate.admit(cred, raw, door=HTTP_DOOR)
    if refusal is not None:
        raise api_error(403, refusal.rule, refusal.message_en, refusal.message_fr)
    return ports.intake.accept(raw, source, content_type=media_type, confidentiality=codes)


@router.get("/v1/submissions/{submission_id}", summary="Status of a submission (pending, indexed, ...)")
async def submission(submission_id: str, cred: Identified, ports: Documents,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0) -> dict[str, Any]:
    record = await _wait_final(ports.submissions, submission_id, wait)
    if record is None or (cred.role is not Role.ADMIN and record.producer != cred.name):
        raise api_error(404, "unknown-submission", "No such submission for this credential.",
                        "Soumission inconnue pour cet accès.")
    return record.to_dict()


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


async def _wait_final(submissions: Submissions, submission_id: str, wait_s: float) -> SubmissionRecord | None:
    deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
    delay = 0.02
    while True:
        record = await run_in_threadpool(submissions.submission, submission_id)
        if record is None or record.final or time.monotonic() >= deadline:
            return record
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)
