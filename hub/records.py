"""Records the index keeps: patients, submissions and documents (pure values).

Owns: the shapes read and written through the Index port and shown by the API.
Does not: decide anything (pipelines decide) or touch a database (storage.index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class SubmissionStatus(StrEnum):
    """Where a submission stands; all but PENDING are final."""

    PENDING = "pending"
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class PatientStatus(StrEnum):
    """A patient profile's state in Mon espace santé."""

    CREATED = "created"
    ACTIVE = "active"
    OPPOSED = "opposed"
    CLOSED = "closed"


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
