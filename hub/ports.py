"""Ports: the Protocols the kernel and the pipelines need, implemented by adapters elsewhere.

Owns: the shape of every dependency on the outside world.  Adapters live in
storage/ (object store, index, issued tokens) and hub/bus/ (publisher), and Claims is hub.intake.ClaimCheck
over a BlobStore and an Index; the composition root (meshub.compose) is the only place that picks them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from hub.credentials import Credential
from hub.envelope import BlobRef, Envelope, Source
from hub.events import Event
from hub.records import (
    Claim,
    DeliveryRecord,
    DocumentQuery,
    DocumentRecord,
    MailFiling,
    MessageRecord,
    PatientRecord,
    SubmissionRecord,
)


class BlobStore(Protocol):
    """Content-addressed object storage.  Raises StoreUnavailable when the store is down."""

    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef:
        """Store `data` durably and return where it is; idempotent for identical bytes."""
        ...

    def get(self, ref: BlobRef) -> bytes:
        """Return the stored bytes after checking their SHA-256 (IntegrityError on mismatch)."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers now."""
        ...


class Publisher(Protocol):
    """Puts events on the bus (each on its queue, hub.topology).  Returns once the broker confirmed it."""

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        """Publish durably (persistent, confirmed); raise BusUnavailable otherwise."""
        ...


class Claims(Protocol):
    """The durable half of intake (hub.intake.ClaimCheck), for a pipeline step that makes a new item.

    The step publishes the Claim's envelope itself, as the typed event it starts (DocumentSubmitted,
    MailQueued), through its own Publisher; the doors use hub.intake.Intake instead."""

    def claim(self, raw: bytes, source: Source, *, content_type: str = "text/xml", kind: str = "cda",
              submission_id: str | None = None, received_at: datetime | None = None,
              confidentiality: tuple[str, ...] = ()) -> Claim:
        """Store `raw` and record a pending submission; no envelope when `submission_id` is already final."""
        ...


class Handler(Protocol):
    """What the worker calls for each event (pipelines.definitions says which handles which).

    Return normally: done (the message is acked).  Raise TransientError: retry
    later with backoff.  Raise PermanentError: dead-letter.
    """

    def __call__(self, event: Event) -> None: ...


class Index(Protocol):
    """Per-patient index, submission log and patient registry (SQLite or PostgreSQL, same code)."""

    def create_submission(self, record: SubmissionRecord) -> bool:
        """Record a new pending submission (before its envelope is published); False when a submission
        with this id is already recorded (nothing is changed then)."""
        ...

    def forget_submission(self, submission_id: str) -> None:
        """Drop a pending submission whose envelope could not be published (the client got a 503)."""
        ...

    def submission(self, submission_id: str) -> SubmissionRecord | None: ...

    def reject(self, envelope: Envelope, findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        """Mark a submission rejected with its findings; idempotent."""
        ...

    def complete(self, envelope: Envelope, findings: tuple[dict[str, Any], ...] = ()) -> SubmissionRecord:
        """Mark a submission that indexes no document of its own (a mail) as done; idempotent."""
        ...

    def index_document(self, envelope: Envelope, document: DocumentRecord,
                       findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        """Index `document` once (atomically with the submission's outcome): indexed or duplicate."""
        ...

    def patient(self, ins: str) -> PatientRecord | None: ...

    def upsert_patients(self, patients: list[PatientRecord]) -> int: ...

    def documents(self, ins: str, query: DocumentQuery) -> list[DocumentRecord]: ...

    def document(self, document_id: str) -> DocumentRecord | None: ...

    def ping(self) -> None: ...


class Mailboxes(Protocol):
    """Patient mailboxes and per-recipient delivery states (storage.sql.mailbox implements it)."""

    def store_message(self, message: MessageRecord) -> bool:
        """Keep `message` once: False when this (submission, mailbox) copy was already stored."""
        ...

    def messages(self, mailbox: str, *, limit: int = 200, offset: int = 0) -> list[MessageRecord]: ...

    def message(self, message_id: str) -> MessageRecord | None: ...

    def mark_read(self, message_id: str) -> MessageRecord | None: ...

    def correspondents(self, mailbox: str) -> tuple[set[str], set[str]]:
        """(addresses that wrote to this mailbox, addresses that closed the exchange with X-MSS-MES: FIN)."""
        ...

    def record_delivery(self, delivery: DeliveryRecord) -> None:
        """Insert or update the state of one recipient of one queued mail."""
        ...

    def deliveries(self, submission_id: str) -> list[DeliveryRecord]: ...

    def deliveries_to(self, recipient: str, *, limit: int = 200) -> list[DeliveryRecord]:
        """The latest deliveries to one address, newest first."""
        ...

    def record_filing(self, filing: MailFiling) -> None:
        """Keep which document submissions a mail filed (idempotent: a filing is recorded once)."""
        ...

    def filing(self, message_id: str) -> MailFiling | None: ...

    def filing_of(self, document_submission_id: str) -> MailFiling | None:
        """The filing a document submission belongs to; None when it was not filed from a mail."""
        ...

    def claim_report(self, message_id: str, *, by: str) -> bool:
        """Claim the sending of a filing's integration report: True for the first claimant `by` (a
        submission id) and for that same claimant again (a redelivery), False for anyone else."""
        ...


class IssuedTokens(Protocol):
    """The bearer tokens the hub hands out itself (a patient's, on activation), kept by their SHA-256 only
    (storage.sql.tokens implements it; hub.auth.Authenticator reads `lookup`).  IndexUnavailable when down."""

    def issue(self, credential: Credential) -> None:
        """Keep `credential` (name, role, INS and its token's digest; durable when this returns).  A digest
        is issued once: one already kept, live or revoked, is PermanentError (nothing changes)."""
        ...

    def lookup(self, token_sha256: str) -> Credential | None:
        """The live credential whose token has this digest (name, role, digest, INS), or None (unknown, revoked)."""
        ...

    def revoke(self, ins: str) -> int:
        """Every live token issued for this patient stops working (closure, opposition); how many did."""
        ...
