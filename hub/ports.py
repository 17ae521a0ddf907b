"""Ports: the Protocols the kernel and the pipelines need, implemented by adapters elsewhere.

Owns: the shape of every dependency on the outside world.  Adapters live in
storage/ (object store, index) and hub/bus/ (publisher); the composition root
(meshub.compose) is the only place that picks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import IO, Any, Protocol

from hub.access import Change, DocumentFacts
from hub.actors import Access, Actor
from hub.audit import AuditAction
from hub.delivery import RecipientResult
from hub.envelope import BlobRef, Envelope
from hub.lifecycle import Profile
from hub.mailqueue import Reply, SmtpRecipient
from hub.notices import Channel, Contact, Letter, LetterBatch, Notice, NoticeState, Outgoing, Preferences, SendResult
from hub.reading import Reading
from hub.records import (
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
    """Puts envelopes on the intake queue.  Returns only once the broker confirmed the message."""

    def publish(self, envelope: Envelope, *, delay_s: float = 0.0) -> None:
        """Publish durably (persistent, confirmed); raise BusUnavailable otherwise."""
        ...


class Handler(Protocol):
    """What the worker calls for each envelope.

    Return normally: done (the message is acked).  Raise TransientError: retry
    later with backoff.  Raise PermanentError: dead-letter.
    """

    def __call__(self, envelope: Envelope) -> None: ...


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


class MailSpool(Protocol):
    """Where the SMTP gateway makes a mail durable before its 250 (storage.spool.SpoolWriter).

    append() raises SpoolFull (the drain is behind) or SpoolUnavailable at once, or returns a future
    that resolves once the record is on disk (or fails with SpoolUnavailable)."""

    def append(self, payload: bytes) -> Future[None]: ...


class MailAdmission(Protocol):
    """What the SMTP gateway asks before it takes a message; the decisions live in pipelines.

    Each check returns None to go on, or the Reply to refuse with (4xx: try later, 5xx: never).
    `auth` is the authenticated principal ("" when the peer did not authenticate: the MX role).
    """

    def check_sender(self, mail_from: str, *, auth: str) -> Reply | None:
        """Decided on the rules alone, without I/O: the gateway calls it on its event loop."""
        ...

    def check_recipient(self, address: str, *, mail_from: str, auth: str) -> Reply | None: ...

    def check_message(self, content: bytes, *, mail_from: str, auth: str) -> Reply | None:
        """At DATA, on the message as received (e.g. a null reverse-path carrying documents)."""
        ...


class Mailboxes(Protocol):
    """Patient mailboxes and per-recipient delivery states (storage.mailbox implements it)."""

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


class MailService(Protocol):
    """What a patient does with their mailbox, beyond reading it (pipelines.mail implements it).

    Each call queues a mail through the same path as the SMTP gateway and returns its submission id;
    Refused when the rules forbid it, TransientError when storage or the bus is down."""

    def read(self, ins: str, message_id: str) -> MessageRecord:
        """Mark the message read; the first reading sends the read receipt (MDN) its sender asked for."""
        ...

    def reply(self, ins: str, message_id: str, text: str) -> str: ...

    def send_document(self, ins: str, document_id: str, to: str, text: str) -> str: ...

    def file_attachments(self, ins: str, message_id: str) -> list[str]:
        """Submit the CDA documents a message carries to the patient's record; their submission ids."""
        ...


class LocalDelivery(Protocol):
    """Hands a message to the local mailbox store (Dovecot, by LMTP): one result per recipient."""

    def deliver(self, message: bytes, mail_from: str, recipients: Sequence[str], *,
                delivery_id: str = "") -> list[RecipientResult]:
        """`delivery_id` (the submission id) makes a second delivery of the same mail a no-op per mailbox."""
        ...


class Relay(Protocol):
    """Hands a message to another MSSanté domain's server (`hop`: a pipelines.core.relay_schedule.NextHop)."""

    def deliver(self, hop: Any, message: bytes, mail_from: str, recipients: Sequence[SmtpRecipient], *,
                ret: str = "", envid: str = "") -> list[RecipientResult]: ...


class NotificationChannel(Protocol):
    """Sends one rendered notification (connectors.outbound.notify_channels).  Returns once the far end
    accepted it; raises ChannelUnavailable (retry later) or ChannelRefused (never: fall back)."""

    def send(self, outgoing: Outgoing) -> SendResult: ...


class LetterPrinter(Protocol):
    """Renders a postal batch as one print-ready PDF (connectors.outbound.letters)."""

    def render(self, letters: Sequence[Letter]) -> bytes: ...


class NotificationStore(Protocol):
    """Notices, per-patient preferences, push devices, legal representatives and letter batches
    (storage.notifications implements it on the index's database)."""

    def add(self, notices: Sequence[Notice]) -> list[Notice]:
        """Insert each notice once per (event, channel, addressee); return the stored rows for all of
        them, new or already there (a redelivered event finds its notices)."""
        ...

    def notice(self, notice_id: str) -> Notice | None: ...

    def for_patient(self, ins: str, *, channel: Channel | None = None, after_seq: int | None = None,
                    limit: int = 200) -> list[Notice]:
        """The addressee's notices, newest first (or, with after_seq, those stored after it, oldest first)."""
        ...

    def mark_read(self, ins: str, notice_id: str, *, at: datetime) -> Notice | None: ...

    def claim(self, notice_id: str, *, now: datetime, lease_s: float) -> Notice | None:
        """Take a queued, due notice for sending (None when it is final, not due, or leased by another
        worker whose lease has not expired); counts an attempt."""
        ...

    def release(self, notice_id: str, *, error: str) -> None:
        """Give a claimed notice back after a transient failure (it stays queued)."""
        ...

    def digest_group(self, notice: Notice, *, due_before: datetime) -> list[Notice]:
        """The other queued notices to the same addressee, channel and address, due before `due_before`."""
        ...

    def finish(self, notice_ids: Sequence[str], state: NoticeState, *, at: datetime, batch_id: str = "",
               provider_ref: str = "", error: str = "") -> None: ...

    def set_state(self, provider_ref: str, state: NoticeState, *, at: datetime) -> int:
        """A provider's delivery report (delivered, bounced): update the notices it sent; how many."""
        ...

    def last_sent(self, ins: str, channel: Channel, *, exclude_event: str = "") -> datetime | None: ...

    def queued_letters(self, *, due_before: datetime) -> list[Notice]: ...

    def record_batch(self, batch: LetterBatch, notice_ids: Sequence[str]) -> None:
        """Keep a printed batch and mark its notices sent, in one transaction."""
        ...

    def withdraw_codes(self, about_ins: str) -> int:
        """Queued activation-code notices about `about_ins` become failed, their code blanked (the code
        was superseded, used, or the profile opened); how many."""
        ...

    def batches(self, *, limit: int = 100) -> list[LetterBatch]: ...

    def batch(self, batch_id: str) -> LetterBatch | None: ...

    def preferences(self, ins: str) -> Preferences: ...

    def set_preferences(self, ins: str, preferences: Preferences) -> None: ...

    def devices(self, ins: str) -> list[str]: ...

    def add_device(self, ins: str, endpoint: str) -> None: ...

    def representatives(self, ins: str) -> list[str]: ...

    def set_representatives(self, ins: str, representatives: Sequence[str]) -> None: ...

    def contact(self, ins: str) -> Contact | None:
        """The patient's own contact addresses (None: never given; the registry's apply)."""
        ...

    def set_contact(self, ins: str, *, email: str, phone: str) -> Contact:
        """Set the addresses in use at once (given at activation); drops any pending change."""
        ...

    def set_pending_contact(self, ins: str, *, email: str, phone: str, code_sha256: str,
                            expires: datetime) -> Contact:
        """Keep a change waiting for its confirmation code (replaces a previous pending change)."""
        ...

    def confirm_contact(self, ins: str, *, code_sha256: str) -> Contact | None:
        """Apply the pending change if its digest is still `code_sha256` (one transaction); None if not."""
        ...

    def count_contact_attempt(self, ins: str, *, seen: int, drop: bool) -> bool:
        """One more wrong confirmation code (compare-and-set on the count `seen`); `drop`: forget the
        pending change.  False when another attempt was counted meanwhile."""
        ...


class RecordService(Protocol):
    """A patient's record read and changed as someone (pipelines.record_access implements it).

    Every call applies the access rules, writes the audit trail and tells the patient what a
    professional did; a refusal is hub.errors.Refused (already traced), an absent or unreachable
    record or document is NotFound."""

    def documents(self, who: Access, ins: str, query: DocumentQuery) -> list[DocumentRecord]: ...

    def gate(self, who: Access, ins: str, reading: Reading, *, target: str = "") -> Actor:
        """The read table for one part of a profile (403 `read.role`, 404 closed); the caller as seen."""
        ...

    def document(self, who: Access, document_id: str, *, action: AuditAction = ...,
                 detail: Mapping[str, str] | None = None) -> DocumentRecord: ...

    def trail(self, who: Access, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """The trail as this viewer is shown it (entries about documents they may not see redacted)."""
        ...

    def change(self, who: Access, document_id: str, change: Change) -> DocumentFacts:
        """The patient's masks, or the author's deletion / lift of INVISIBLE_PATIENT / mask."""
        ...

    def block(self, who: Access, ins: str, idnps: str, *, blocked: bool) -> None: ...

    def set_emergency(self, who: Access, ins: str, *, bris_de_glace: bool | None,
                      regulation: bool | None) -> None: ...

    def settings(self, who: Access, ins: str) -> dict[str, object]: ...


class LifecycleService(Protocol):
    """A profile's life: activation, opposition (and its receipt), a new code, closure, restitution
    (pipelines.lifecycle and pipelines.restitution implement it).  Refused when the rules forbid the
    step (wrong factors, locked, wrong state), NotFound for an unknown INS."""

    def profile(self, ins: str) -> Profile | None: ...

    def activate(self, ins: str, code: str, vitale_serial: str) -> Profile: ...

    def oppose(self, ins: str, *, code: str | None = None, vitale_serial: str | None = None,
               actor: Actor | None = None) -> Profile:
        """Oppose; `code`/`vitale_serial` given: the person themself, checked like an activation
        (None: an operator acting on a written request)."""
        ...

    def receipt(self, ins: str) -> bytes: ...

    def reissue_code(self, ins: str, *, actor: Actor | None = None) -> Profile: ...

    def request_code(self, ins: str, vitale_serial: str, channel: Channel = ...) -> None:
        """The holder asks for a code (INS + Vitale serial); no outcome is told (Refused: locked only)."""
        ...

    def close(self, ins: str, *, actor: Actor | None = None) -> Profile: ...

    def export(self, ins: str, out: IO[bytes], *, actor: Actor | None = None) -> dict[str, Any]:
        """Write the restitution ZIP of the whole record to `out`; a summary (counts, size)."""
        ...


class ContactService(Protocol):
    """The patient's own contact addresses (pipelines.contacts implements it).  Refused `contact.email` /
    `contact.phone` for a malformed address, `contact.code` for a wrong or expired confirmation code."""

    def check(self, email: str, phone: str) -> None: ...

    def current(self, ins: str) -> Contact: ...

    def given_at_activation(self, ins: str, email: str, phone: str) -> Contact | None: ...

    def request_change(self, ins: str, email: str, phone: str) -> Contact: ...

    def confirm(self, ins: str, code: str) -> Contact: ...


class InsurerService(Protocol):
    """The insurer's reimbursement history (pipelines.reimbursements implements it): held until 48 h
    after the profile's activation, then filed; a re-delivery adds nothing."""

    def accept_batch(self, raw: bytes) -> dict[str, Any]: ...

    def accept_document(self, raw: bytes) -> dict[str, Any]: ...
