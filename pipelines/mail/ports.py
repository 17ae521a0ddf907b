"""Ports of the mail feature: the spool, admission, mailboxes, the mailbox service, local delivery and the relay."""


from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from hub.delivery import RecipientResult
from hub.mailqueue import Reply, SmtpRecipient
from hub.records import (
    DeliveryRecord,
    MailFiling,
    MessageRecord,
)


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


class MailService(Protocol):
    """What a patient does with their mailbox, beyond reading it (pipelines.mail.pipeline implements it).

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
    """Hands a message to another MSSanté domain's server (`hop`: a pipelines.mail.core.relay_schedule.NextHop)."""

    def deliver(self, hop: Any, message: bytes, mail_from: str, recipients: Sequence[SmtpRecipient], *,
                ret: str = "", envid: str = "") -> list[RecipientResult]: ...
