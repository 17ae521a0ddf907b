"""The CDA intake pipeline as a Handler for hub.bus.worker.

Owns: running the stages in order for one envelope, logging the decision
(submission id, outcome, duration: never content or identifiers), then handing the
indexed document to the announcer (patient notifications) and the envelope, now final, to the
follower of its source kind (for `mss`: the integration
report of the mail that filed it, pipelines.mail.pipeline.IntegrationReports).
Does not: ack, retry or dead-letter (the worker does, from what this raises).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from hub.envelope import Envelope
from hub.errors import IntegrityError, NotFound
from hub.findings import Finding
from hub.ports import BlobStore, Index
from hub.records import DocumentRecord
from pipelines.cda.classification import ClassificationTables
from pipelines.cda.validation import ValidationRules
from pipelines.documents import stages

log = logging.getLogger(__name__)


class DocumentPipeline:
    """fetch -> validate -> patient check -> classify -> index (or reject) -> follower of the source kind.

    A follower runs after the outcome is committed, on every delivery of the envelope (it must be
    idempotent); its TransientError retries the envelope, which finds its outcome already recorded."""

    def __init__(self, *, store: BlobStore, index: Index, rules: ValidationRules,
                 tables: ClassificationTables, followers: Mapping[str, Callable[[Envelope], None]] | None = None,
                 announce: Callable[[DocumentRecord], None] | None = None) -> None:
        self._store = store
        self._announce = announce
        self._index = index
        self._rules = rules
        self._tables = tables
        self._followers = dict(followers or {})

    def __call__(self, envelope: Envelope) -> None:
        started = time.perf_counter()
        try:
            data = stages.fetch(envelope, self._store)
        except (IntegrityError, NotFound) as exc:
            self._index.reject(envelope, (_storage_finding(exc).to_dict(),))
            log.error("submission=%s stored bytes unusable: %s", envelope.submission_id, type(exc).__name__)
            self._follow(envelope)
            return
        checked = stages.check(data, self._rules, self._index)
        indexed = stages.index_or_reject(envelope, checked, self._tables, self._index)
        if indexed is not None and self._announce is not None:
            self._announce(indexed)  # before the ack: a redelivery announces again, and the notices dedupe
        log.info("submission=%s %s in %.1f ms", envelope.submission_id, "ok" if checked.ok else "rejected",
                 (time.perf_counter() - started) * 1000)
        self._follow(envelope)

    def _follow(self, envelope: Envelope) -> None:
        follower = self._followers.get(envelope.source.kind)
        if follower is not None:
            follower(envelope)


def _storage_finding(exc: Exception) -> Finding:
    return Finding(
        rule="hub.stored-bytes", location="/",
        message_fr="Les octets stockés pour cette soumission sont introuvables ou altérés (contrôle SHA-256). "
                   "Renvoyez le document ; l'exploitant du hub a été alerté.",
        message_en="The bytes stored for this submission are missing or altered (SHA-256 check). "
                   f"Please submit the document again; the hub operator was alerted ({type(exc).__name__}).")
