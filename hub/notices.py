"""Patient notifications as the hub carries them (pure): events, notices, channels and delivery states.

Owns: the vocabulary shared by the notification policy (pipelines.notify.core.policy), the notice store
(storage.sql.notifications), the channel adapters (connectors.outbound.notify_channels, .letters) and the
API.  An Event is something that concerns a patient; a Notice is one announcement of one event on one
channel to one addressee, tracked from `queued` to a final state.
Rule: nothing here carries health content.  An event names its kind and the ids the hub needs to
point at (a document id, a message id), never a title, a type label or a sender's words; the texts
sent are built from the kind alone (pipelines.notify.core.policy.render).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What happened (the rows of config/notifications.toml)."""

    NEW_DOCUMENT = "new_document"
    NEW_MESSAGE = "new_message"
    FIRST_ACCESS = "first_access"            # a professional opened the record for the first time
    PROFESSIONAL_ACTION = "professional_action"
    REMINDER = "reminder"                    # e.g. "you have not activated your profile yet"
    ACTIVATION_CODE = "activation_code"      # a provisional code, valid 6 weeks (letter, SMS or e-mail)
    ONE_TIME_CODE = "one_time_code"          # a login code (SMS only)
    CONTACT_CHECK = "contact_check"          # the code confirming a new contact address, sent to it


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    INAPP = "inapp"
    PUSH = "push"
    POSTAL = "postal"


class NoticeState(StrEnum):
    """Delivery tracking.  queued -> sent -> delivered; or bounced (refused for good by the far end),
    failed (gave up: retries exhausted or nothing to send to), skipped (superseded: sent in a digest)."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (NoticeState.DELIVERED, NoticeState.BOUNCED, NoticeState.FAILED)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that concerns patient `ins`.  `event_id` is deterministic (e.g. `document:<id>`), so a
    redelivered event is announced once.  `code`/`code_expires` only for the two code kinds."""

    event_id: str
    kind: EventKind
    ins: str
    occurred_at: datetime
    subject_id: str = ""                       # document id, message id... (never shown in a text)
    confidentiality: tuple[str, ...] = ()      # the document's codes (masking flags), for documents
    urgent: bool = False                       # codes: never held by quiet hours or digests
    code: str = ""
    code_expires: datetime | None = None
    channel: str = ""                          # the channel the person asked for ("": the policy's order)
    address: str = ""                          # with `channel`: exactly this address (a contact to confirm)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(kind=str(self.kind), occurred_at=self.occurred_at.isoformat(),
                    confidentiality=list(self.confidentiality),
                    code_expires=self.code_expires.isoformat() if self.code_expires else None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        expires = data.get("code_expires")
        return cls(event_id=str(data["event_id"]), kind=EventKind(data["kind"]), ins=str(data["ins"]),
                   occurred_at=datetime.fromisoformat(data["occurred_at"]),
                   subject_id=str(data.get("subject_id", "")),
                   confidentiality=tuple(data.get("confidentiality") or ()), urgent=bool(data.get("urgent")),
                   code=str(data.get("code", "")),
                   code_expires=datetime.fromisoformat(expires) if expires else None,
                   channel=str(data.get("channel", "")), address=str(data.get("address", "")))


@dataclass(frozen=True, slots=True)
class Addressee:
    """Who a notice goes to: the patient (`ins` == event's) or one of their legal representatives."""

    ins: str
    email: str = ""
    phone: str = ""
    postal_address: str = ""
    display_name: str = ""
    representative_of: str = ""   # the minor's INS when this is a legal representative


@dataclass(frozen=True, slots=True)
class Notice:
    """One announcement of one event on one channel to one addressee (unique on event, channel, addressee).

    `address` is where it goes (e-mail address, phone number, postal block, device endpoint; "" for
    in-app).  `due_at`: not sent before (quiet hours, digest window).  `batch_id`: the digest e-mail
    or the letter batch it went out in."""

    notice_id: str
    event_id: str
    kind: EventKind
    ins: str                      # the addressee's INS (whose notification centre shows it)
    about_ins: str                # the patient the event concerns
    channel: Channel
    address: str
    state: NoticeState
    created_at: datetime
    due_at: datetime
    attempts: int = 0
    sent_at: datetime | None = None
    read_at: datetime | None = None
    batch_id: str = ""
    provider_ref: str = ""
    last_error: str = ""
    fallback_of: str = ""         # the notice id this one replaces after a permanent failure
    code: str = ""
    code_expires: datetime | None = None
    seq: int = 0                  # store order (the live stream's cursor)

    def to_dict(self, *, with_code: bool = False) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in (
            "notice_id", "event_id", "ins", "about_ins", "address", "attempts", "batch_id", "provider_ref",
            "last_error", "fallback_of", "seq")}
        data.update(kind=str(self.kind), channel=str(self.channel), state=str(self.state),
                    created_at=self.created_at.isoformat(), due_at=self.due_at.isoformat(),
                    sent_at=self.sent_at.isoformat() if self.sent_at else None,
                    read_at=self.read_at.isoformat() if self.read_at else None)
        if with_code:
            data.update(code=self.code, code_expires=self.code_expires.isoformat() if self.code_expires else None)
        return data


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What a channel adapter sends: the rendered texts (no health data) and where to.

    `delivery_id` is deterministic (the digest or notice id): an adapter uses it as Message-ID,
    file name or idempotency key, so a retried send is recognisable downstream."""

    delivery_id: str
    channel: Channel
    address: str
    subject: str
    text: str
    html: str = ""
    link: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    """A channel's answer: accepted (`provider_ref` names it downstream), and whether it is already
    known to be delivered (in-app, local outbox)."""

    provider_ref: str = ""
    delivered: bool = False


@dataclass(frozen=True, slots=True)
class Letter:
    """One page of a postal batch: the address block, the texts, and what the QR code carries."""

    letter_id: str
    recipient_name: str
    address_lines: tuple[str, ...]
    title: str
    paragraphs: tuple[str, ...]
    qr_payload: str
    sent_on: str                  # the date printed on the letter, "2 décembre 2026"
    code: str = ""                # activation letters: the provisional code
    code_valid_until: str = ""    # and the last day it is valid


@dataclass(frozen=True, slots=True)
class Preferences:
    """A patient's choices: which optional channels, quiet hours ("22:00-08:00", local time in
    `timezone`, "" for none) and whether new documents within a digest window make one e-mail."""

    email: bool = True
    push: bool = True
    digest: bool = True
    quiet_hours: str = "22:00-08:00"
    timezone: str = "Europe/Paris"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Contact:
    """Where the patient themself wants to be told (given at activation, changed later): it replaces the
    registry's (the insurer's) e-mail and phone for their notifications.  A change waits in `pending_*`
    until confirmed with the code sent to the new address (`pending_sha256`: its keyed digest)."""

    ins: str
    email: str = ""
    phone: str = ""
    pending_email: str = ""
    pending_phone: str = ""
    pending_expires: datetime | None = None
    pending_attempts: int = 0
    pending_sha256: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The patient's view: the addresses in use and the change waiting for its confirmation."""
        pending = bool(self.pending_sha256)
        return {"email": self.email, "phone": self.phone,
                "pending": {"email": self.pending_email, "phone": self.pending_phone,
                            "expires": self.pending_expires.isoformat() if self.pending_expires else None}
                if pending else None}


@dataclass(frozen=True, slots=True)
class LetterBatch:
    """One printed batch of letters: one PDF for a period, stored in object storage."""

    batch_id: str
    period: str                   # "2026-12" (monthly relevé) or the day of activation letters
    created_at: datetime
    letters: int
    bucket: str
    pdf_key: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}
