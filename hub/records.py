"""Records the index keeps: patients, submissions and documents (pure values).

Owns: the shapes read and written through the Index port and shown by the API.
Does not: decide anything (pipelines decide) or touch a database (storage.sql.index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from hub.envelope import BlobRef, Envelope
from hub.errors import IntegrityError


class SubmissionStatus(StrEnum):
    """Where a submission stands; all but PENDING are final."""

    PENDING = "pending"
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class PatientStatus(StrEnum):
    """A patient profile's state in Mon espace santé.  `opened`: opened automatically after the code's 6
    weeks, never activated by its holder (an open record for intake and professionals, like `active`;
    notified like `created`); `active`: activated by its holder with a code."""

    CREATED = "created"
    OPENED = "opened"
    ACTIVE = "active"
    OPPOSED = "opposed"
    CLOSED = "closed"


#: the statuses of an open record (intake and professional access treat them alike)
OPEN_STATUSES = frozenset({PatientStatus.ACTIVE, PatientStatus.OPENED})


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """A patient in the registry: INS, the strict identity traits, contact points and status."""

    ins: str
    oid: str
    birth_name: str = ""
    given_names: str = ""
    birth_date: str = ""
    sex: str = ""
    birth_place: str = ""
    email: str = ""
    phone: str = ""
    postal_address: str = ""
    status: PatientStatus = PatientStatus.CREATED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    """One accepted submission and its outcome so far."""

    submission_id: str
    received_at: datetime
    producer: str
    source_kind: str
    status: SubmissionStatus = SubmissionStatus.PENDING
    document_id: str | None = None
    category: str | None = None
    findings: tuple[dict[str, Any], ...] = ()
    blob_key: str = ""
    sha256: str = ""
    size: int = 0
    updated_at: datetime | None = None
    confidentiality: tuple[str, ...] = ()  # the producer's masking codes given beside the document

    @property
    def final(self) -> bool:
        return self.status is not SubmissionStatus.PENDING

    def to_dict(self) -> dict[str, Any]:
        return {"submission": self.submission_id, "status": str(self.status),
                "received_at": self.received_at.isoformat(), "producer": self.producer,
                "source": self.source_kind, "document_id": self.document_id, "category": self.category,
                "findings": list(self.findings),
                "sha256": self.sha256, "size": self.size,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


@dataclass(frozen=True, slots=True)
class Claim:
    """What the claim check (hub.intake.ClaimCheck) made of one item: its submission record, and the
    envelope to publish, None when the submission was already final (nothing to do again).  `created`:
    this call recorded the submission (False: it was recorded before, e.g. a redelivered step)."""

    record: SubmissionRecord
    envelope: Envelope | None
    created: bool = False


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """One indexed document: identity, classification, where its exact bytes are, and its state."""

    document_id: str
    patient_ins: str
    submission_id: str
    blob_bucket: str
    blob_key: str
    sha256: str
    size: int
    type_code: str
    type_label: str
    class_code: str
    category: str
    format_code: str
    level: str
    confidentiality: tuple[str, ...]
    title: str
    effective_time: str
    service_date: str  # YYYY-MM-DD from effectiveTime, for date filters
    author_id: str | None = None
    custodian_id: str | None = None
    replaces: tuple[str, ...] = ()
    replaced_by: str | None = None
    status: str = "current"  # "current" or "deprecated"
    indexed_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def blob(self) -> BlobRef:
        """Where the exact bytes are, with what to check them against."""
        return BlobRef(bucket=self.blob_bucket, key=self.blob_key, sha256=self.sha256, size=self.size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["confidentiality"] = list(self.confidentiality)
        data["replaces"] = list(self.replaces)
        data["indexed_at"] = self.indexed_at.isoformat() if self.indexed_at else None
        for private in ("blob_bucket", "blob_key", "extra"):
            data.pop(private)
        return data


@dataclass(frozen=True, slots=True)
class DocumentQuery:
    """Filters for listing a patient's documents (all optional)."""

    category: str | None = None
    class_code: str | None = None
    type_code: str | None = None
    date_from: str | None = None  # YYYY-MM-DD, inclusive
    date_to: str | None = None    # YYYY-MM-DD, inclusive
    include_deprecated: bool = False
    limit: int = 200
    offset: int = 0


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message in a mailbox the hub keeps (a patient's): who wrote, about what, where its bytes are.

    `message_id` is ours (one per mailbox copy); `rfc_message_id` is the Message-ID header.
    `direction` is "in" (received), "out" (sent by the mailbox owner) or "notice" (a delivery report
    about the owner's own mail, from the null sender).  `closed` is True when the
    professional forbade replies (X-MSS-MES: FIN).
    `sha256` and `size` are the message's.  Its bytes are those intake stored at the 250: the queued mail
    (hub.mailqueue.pack), where the message starts at `blob_offset`, the whole object's SHA-256 being
    `blob_sha256`; a row made before that points at an object of the message alone (offset 0, "")."""

    message_id: str
    mailbox: str
    submission_id: str
    direction: str
    correspondent: str
    subject: str
    rfc_message_id: str
    in_reply_to: str
    blob_bucket: str
    blob_key: str
    sha256: str
    size: int
    received_at: datetime
    closed: bool = False
    read_at: datetime | None = None
    attachments: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()  # submission ids of the CDA documents filed from its XDM
    blob_offset: int = 0  # where the message starts in the stored object
    blob_sha256: str = ""  # the stored object's SHA-256 when it holds more than the message

    @property
    def blob(self) -> BlobRef:
        """The stored object holding the message, with what to check it against (cut it with message_in)."""
        return BlobRef(bucket=self.blob_bucket, key=self.blob_key, sha256=self.blob_sha256 or self.sha256,
                       size=self.blob_offset + self.size)

    def message_in(self, stored: bytes) -> bytes:
        """The message's exact bytes out of the object `blob` names (already checked by the store's get)."""
        message = stored[self.blob_offset:] if self.blob_offset else stored
        if len(message) != self.size:
            raise IntegrityError(f"stored object in bucket {self.blob_bucket} does not hold this message")
        return message

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for private in ("blob_bucket", "blob_key", "blob_offset", "blob_sha256"):
            data.pop(private)
        data["attachments"], data["documents"] = list(self.attachments), list(self.documents)
        data["received_at"] = self.received_at.isoformat()
        data["read_at"] = self.read_at.isoformat() if self.read_at else None
        return data


class DeliveryState(StrEnum):
    """Where one recipient of one queued mail stands."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One recipient of one queued mail: route, state, attempts and the last reply seen."""

    submission_id: str
    recipient: str
    route: str  # "patient", "local-org", "remote"
    state: DeliveryState
    attempts: int = 0
    last_reply: str = ""
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": str(self.state),
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


@dataclass(frozen=True, slots=True)
class FiledDocument:
    """One CDA document a mail filed into the record: its submission and the XDM entry it came from
    (`<subset>#<ExtrinsicObject id>`, what the integration report names; never patient data)."""

    submission_id: str
    entry: str


@dataclass(frozen=True, slots=True)
class MailFiling:
    """What one mail, kept in a patient's mailbox, filed into the record: the document submissions it
    made and the XDM-level problems that kept documents out.  Its integration report (MDN or notice)
    is sent once every document submission is final (pipelines.mail.pipeline.IntegrationReports)."""

    message_id: str  # the mailbox copy (MessageRecord.message_id)
    mail_submission_id: str
    mailbox: str
    received_at: datetime
    documents: tuple[FiledDocument, ...] = ()
    findings: tuple[dict[str, Any], ...] = ()  # Finding.to_dict() of each XDM-level error


#: a patient is a minor before this age (legal representatives act for them)
ADULT_AGE = 18


def is_minor(patient: PatientRecord, on: date) -> bool:
    """Under 18 on `on`, from the birth date of the registry ("YYYY-MM-DD"); unknown -> adult."""
    try:
        born = date.fromisoformat(patient.birth_date[:10])
    except ValueError:
        return False
    had_birthday = (on.month, on.day) >= (born.month, born.day)
    return on.year - born.year - (0 if had_birthday else 1) < ADULT_AGE
