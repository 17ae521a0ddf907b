"""Ports of the notifications feature: channels, the letter printer, the notification store (and what it
reads for one announcement: Settings, Reachable) and the contact service."""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hub.notices import Channel, Contact, Letter, LetterBatch, Notice, NoticeState, Outgoing, Preferences, SendResult


class NotificationChannel(Protocol):
    """Sends one rendered notification (connectors.outbound.notify_channels).  Returns once the far end
    accepted it; raises ChannelUnavailable (retry later) or ChannelRefused (never: fall back)."""

    def send(self, outgoing: Outgoing) -> SendResult: ...


class LetterPrinter(Protocol):
    """Renders a postal batch as one print-ready PDF (connectors.outbound.letters)."""

    def render(self, letters: Sequence[Letter]) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """What the notice store keeps of one person for an announcement: the e-mail and phone they gave
    themself ("": none, the registry's apply), their choices, their push devices (in the order added) and
    when an e-mail was last sent to them."""

    ins: str
    email: str = ""
    phone: str = ""
    preferences: Preferences = field(default_factory=Preferences)
    devices: tuple[str, ...] = ()
    last_email_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reachable:
    """A patient's settings and their legal representatives' (sorted by INS), read together."""

    own: Settings
    representatives: tuple[Settings, ...] = ()


class NotificationStore(Protocol):
    """Notices, per-patient preferences, push devices, legal representatives and letter batches
    (storage.sql.notifications implements it on the index's database)."""

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
        worker whose lease has not expired); counts an attempt.  One conditional write: the notice
        claimed comes back from it (no read before, none after)."""
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

    def reach(self, ins: str) -> Reachable:
        """Everything an announcement to `ins` reads from this store, in one read: the patient's settings
        and each of their legal representatives' (Settings: contact, preferences, devices, last e-mail)."""
        ...

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


class ContactService(Protocol):
    """The patient's own contact addresses (pipelines.notify.contacts implements it).  Refused `contact.email` /
    `contact.phone` for a malformed address, `contact.code` for a wrong or expired confirmation code."""

    def check(self, email: str, phone: str) -> None: ...

    def current(self, ins: str) -> Contact: ...

    def given_at_activation(self, ins: str, email: str, phone: str) -> Contact | None: ...

    def request_change(self, ins: str, email: str, phone: str) -> Contact: ...

    def confirm(self, ins: str, code: str) -> Contact: ...
