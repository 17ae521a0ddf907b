"""Intake: the only way in.  Store the raw bytes first (claim check), record, then publish.

Owns: ClaimCheck.claim(raw, source) -> Claim (the durable half: the bytes stored, the submission
recorded, the envelope to publish) and Intake.accept(raw, source) -> SubmissionRecord (the doors' way
in: the claim, then the event published).  accept returns only once the bytes are durably stored, the
submission is recorded and the envelope is confirmed by the broker; otherwise it raises a TransientError
(dropping the submission it had just recorded) and the caller answers 503/451, so nothing is ever
accepted and then lost.
A caller that may hand the same item in twice (a spool replayed after a crash, an IMAP message seen
again, a pipeline step redelivered) names the submission itself: claiming an id that is already final
changes nothing and gives nothing to publish, so it is processed once.
The doors (HTTP, SMTP spool, file drop, IMAP, insurer, a patient's mailbox actions) use Intake; a
pipeline step that makes a new item (a mail's documents, the hub's reports) never re-enters it: it
takes a ClaimCheck (the hub.ports.Claims port) and publishes the event through its own Publisher.
Does not: parse or validate documents (the pipeline does, after the answer).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from hub.envelope import BlobRef, Envelope, Source
from hub.errors import BusUnavailable, IndexUnavailable
from hub.events import Submitted, submission_event
from hub.mailqueue import MAIL_CONTENT_TYPE, SpooledMail
from hub.ports import BlobStore, Index, Publisher
from hub.records import Claim, SubmissionRecord

log = logging.getLogger(__name__)


def new_submission_id() -> str:
    """Time-ordered, random, and free of any patient data: 12 hex of ms clock + 20 hex random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class ClaimCheck:
    """hub.ports.Claims: make an item durable and recorded as a pending submission; publish nothing."""

    def __init__(self, *, store: BlobStore, index: Index,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._index = index
        self._clock = clock

    def claim(self, raw: bytes, source: Source, *, content_type: str = "text/xml", kind: str = "cda",
              submission_id: str | None = None, received_at: datetime | None = None,
              confidentiality: tuple[str, ...] = ()) -> Claim:
        """Store `raw` and record its submission; the Claim's envelope is what to publish next.

        `kind` is the object-key family (`cda` for documents, `mail` for queued SMTP messages); it says
        which event starts the work (hub.events.submission_event: DocumentSubmitted or MailQueued).
        `confidentiality`: the producer's masking codes given beside the document (kept with the
        submission, applied when it is indexed).
        `submission_id` (and `received_at`) are given by callers that may claim the same item again:
        an id already recorded as final is returned as it is, with no envelope (nothing is stored or
        published again); a pending one gives its envelope again (harmless: processing is idempotent).
        Raises StoreUnavailable / IndexUnavailable (TransientError) when either is down."""
        if submission_id is not None:
            known = self._index.submission(submission_id)
            if known is not None and known.final:
                return Claim(known, None)
        ref = self._store.put(raw, kind=kind, content_type=content_type)
        record = SubmissionRecord(submission_id=submission_id or new_submission_id(),
                                  received_at=received_at or self._clock(), producer=source.producer,
                                  source_kind=source.kind, blob_key=ref.key, sha256=ref.sha256, size=ref.size,
                                  confidentiality=confidentiality)
        created = self._index.create_submission(record)
        envelope = Envelope(submission_id=record.submission_id, received_at=record.received_at,
                            source=source, raw=ref, content_type=content_type, confidentiality=confidentiality)
        return Claim(record, envelope, created)


class Intake:
    """Accepts raw items from any connector (a door) and hands them to the bus."""

    def __init__(self, *, store: BlobStore, index: Index, publisher: Publisher,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._claims = ClaimCheck(store=store, index=index, clock=clock)
        self._index = index
        self._publisher = publisher

    def accept(self, raw: bytes, source: Source, *, content_type: str = "text/xml", kind: str = "cda",
               submission_id: str | None = None, received_at: datetime | None = None,
               confidentiality: tuple[str, ...] = ()) -> SubmissionRecord:
        """Make `raw` durable and queued; raise TransientError if any step could not be confirmed.

        The arguments are ClaimCheck.claim's.  An id already recorded as final is returned as it is
        (nothing published); a pending one is published again.  When the broker does not confirm, the
        submission this call recorded is dropped again (the caller's 503/451 says it was not taken)."""
        started = time.perf_counter()
        claim = self._claims.claim(raw, source, content_type=content_type, kind=kind, submission_id=submission_id,
                                   received_at=received_at, confidentiality=confidentiality)
        if claim.envelope is None:
            return claim.record
        try:
            self._publisher.publish(submission_event(kind)(claim.envelope))
        except BusUnavailable:
            if claim.created:
                self._forget(claim.record.submission_id)
            raise
        log.info("accepted submission=%s source=%s size=%d in %.1f ms", claim.record.submission_id, source.kind,
                 claim.envelope.raw.size, (time.perf_counter() - started) * 1000)
        return claim.record

    def accept_spooled(self, record: bytes) -> SubmissionRecord:
        """Accept one record of the SMTP gateway's spool under the id and time its 250 gave (idempotent)."""
        spooled = SpooledMail.decode(record)
        return self.accept(spooled.packed, Source(kind="smtp", producer=spooled.producer),
                           content_type=MAIL_CONTENT_TYPE, kind="mail", submission_id=spooled.submission_id,
                           received_at=spooled.received_at)

    def _forget(self, submission_id: str) -> None:
        try:
            self._index.forget_submission(submission_id)
        except IndexUnavailable:
            # The recovery sweep republishes it later; processing it is harmless (idempotent index).
            log.warning("could not drop unpublished submission=%s", submission_id)


def record_kind(record: SubmissionRecord) -> str:
    """The object-key family the submission's bytes were stored under (`cda`, `mail`): what it is."""
    return record.blob_key.partition("/")[0]


def resubmitted(record: SubmissionRecord, *, bucket: str) -> Submitted:
    """The event a pending submission is published again as (the recovery sweep), by its record kind."""
    ref = BlobRef(bucket=bucket, key=record.blob_key, sha256=record.sha256, size=record.size)
    return submission_event(record_kind(record))(Envelope(
        submission_id=record.submission_id, received_at=record.received_at,
        source=Source(kind=record.source_kind, producer=record.producer), raw=ref,
        confidentiality=record.confidentiality))


def derived_submission_id(identity: str, at: datetime) -> str:
    """The same submission id every time for the same item, in the shape of hub.intake.new_submission_id:
    12 hex of `at` in ms (a stable time), then 20 hex of SHA-256(identity); no patient data in either."""
    return f"{int(at.timestamp() * 1000):012x}{hashlib.sha256(identity.encode()).hexdigest()[:20]}"
