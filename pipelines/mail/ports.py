"""Ports of the mail feature: the spool, admission, mailboxes, the mailbox service, local delivery and the relay."""


from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from hub.delivery import RecipientResult
from hub.mailqueue import Reply, SmtpRecipient
from hub.records import (
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
