"""Intake: the only way in.  Store the raw bytes first (claim check), record, then publish.

Owns: accept(raw, source) -> SubmissionRecord.  It returns only once the bytes are
durably stored, the submission is recorded and the envelope is confirmed by the
broker; otherwise it raises a TransientError and the caller answers 503/451,
so nothing is ever accepted and then lost.
Does not: parse or validate documents (the pipeline does, after the answer).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from hub.envelope import Envelope, Source
from hub.errors import BusUnavailable, IndexUnavailable
from hub.ports import BlobStore, Index, Publisher
from hub.records import SubmissionRecord

log = logging.getLogger(__name__)


def new_submission_id() -> str:
    """Time-ordered, random, and free of any patient data: 12 hex of ms clock + 20 hex random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class Intake:
    """Accepts raw items from any connector and hands them to the bus."""

    def __init__(self, *, store: BlobStore, index: Index, publisher: Publisher,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._index = index
        self._publisher = publisher
        self._clock = clock

    def accept(self, raw: bytes, source: Source, *, content_type: str = "text/xml",
               kind: str = "cda") -> SubmissionRecord:
        """Make `raw` durable and queued; raise TransientError if any step could not be confirmed.

        `kind` is the object-key family (`cda` for documents, `mail` for queued SMTP messages)."""
        started = time.perf_counter()
        ref = self._store.put(raw, kind=kind, content_type=content_type)
        record = SubmissionRecord(submission_id=new_submission_id(), received_at=self._clock(),
                                  producer=source.producer, source_kind=source.kind, blob_key=ref.key,
                                  sha256=ref.sha256, size=ref.size)
        self._index.create_submission(record)
        envelope = Envelope(submission_id=record.submission_id, received_at=record.received_at,
                            source=source, raw=ref, content_type=content_type)
        try:
            self._publisher.publish(envelope)
        except BusUnavailable:
            self._forget(record.submission_id)
            raise
        log.info("accepted submission=%s source=%s size=%d in %.1f ms", record.submission_id, source.kind,
                 ref.size, (time.perf_counter() - started) * 1000)
        return record

    def _forget(self, submission_id: str) -> None:
        try:
            self._index.forget_submission(submission_id)
        except IndexUnavailable:
            # The recovery sweep republishes it later; processing it is harmless (idempotent index).
            log.warning("could not drop unpublished submission=%s", submission_id)
