"""The CDA intake pipeline as a Handler for hub.bus.worker.

Owns: running the stages in order for one envelope, logging the decision
(submission id, outcome, duration: never content or identifiers), then publishing the outcome,
now committed: DocumentFiled or DocumentRejected (hub.events; who follows is pipelines.definitions:
the write trail entry, the patient's notification, a mail's integration report).
While the outcome is published, `indexed(document_id)` hands the followers run in process (LocalBus) the
document this step just indexed, so none of them reads it back.
Does not: ack, retry or dead-letter (the worker does, from what this raises).
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

from hub.envelope import Envelope
from hub.errors import IntegrityError, NotFound
from hub.events import DocumentFiled, DocumentRejected, Event
from hub.findings import Finding
from hub.ports import BlobStore, Index, Publisher
from hub.records import DocumentRecord
from pipelines.cda.classification import ClassificationTables
from pipelines.cda.validation import ValidationRules
from pipelines.documents import stages

log = logging.getLogger(__name__)
#: the document the step under way in this thread indexed, while its outcome is published
_INDEXED: ContextVar[DocumentRecord | None] = ContextVar("pipelines_documents_indexed", default=None)


class DocumentPipeline:
    """fetch -> validate -> patient check -> classify -> index (or reject) -> publish the outcome.

    The outcome is published after it is committed, on every delivery of the envelope (its handlers
    are idempotent); a publish that fails retries the envelope, which finds its outcome recorded."""

    def __init__(self, *, store: BlobStore, index: Index, rules: ValidationRules,
                 tables: ClassificationTables, outcomes: Publisher | None = None) -> None:
        self._store = store
        self._index = index
        self._rules = rules
        self._tables = tables
        self._outcomes = outcomes

    def __call__(self, envelope: Envelope) -> None:
        started = time.perf_counter()
        try:
            data = stages.fetch(envelope, self._store)
        except (IntegrityError, NotFound) as exc:
            self._index.reject(envelope, (_storage_finding(exc).to_dict(),))
            log.error("submission=%s stored bytes unusable: %s", envelope.submission_id, type(exc).__name__)
            self._publish(DocumentRejected(envelope.submission_id, envelope.source.kind))
            return
        checked = stages.check(data, self._rules, self._index)
        indexed = stages.index_or_reject(envelope, checked, self._tables, self._index)
        log.info("submission=%s %s in %.1f ms", envelope.submission_id, "ok" if checked.ok else "rejected",
                 (time.perf_counter() - started) * 1000)
        # before the ack: a redelivery publishes again, and what follows dedupes
        token = _INDEXED.set(indexed)
        try:
            self._publish(DocumentFiled(envelope.submission_id, envelope.source.kind,
                                        document_id=indexed.document_id if indexed is not None else "")
                          if checked.ok else DocumentRejected(envelope.submission_id, envelope.source.kind))
        finally:
            _INDEXED.reset(token)

    @staticmethod
    def indexed(document_id: str) -> DocumentRecord | None:
        """The document with this id that the step under way in this thread indexed (as it wrote it), while
        its outcome is handled in process; None elsewhere (another step, a follower on another worker)."""
        record = _INDEXED.get()
        return record if record is not None and record.document_id == document_id else None

    def _publish(self, event: Event) -> None:
        if self._outcomes is not None:
            self._outcomes.publish(event)


def _storage_finding(exc: Exception) -> Finding:
    return Finding(
        rule="hub.stored-bytes", location="/",
        message_fr="Les octets stockés pour cette soumission sont introuvables ou altérés (contrôle SHA-256). "
                   "Renvoyez le document ; l'exploitant du hub a été alerté.",
        message_en="The bytes stored for this submission are missing or altered (SHA-256 check). "
                   f"Please submit the document again; the hub operator was alerted ({type(exc).__name__}).")
