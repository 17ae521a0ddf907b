"""The patient's rights over their content once they leave (pure): restitution, purge, opposition receipts.

Owns: what a restitution export and a purge report say (ExportSummary, PurgeReport), when the archive
of a closed profile ends (ARCHIVE_YEARS after closure: purge_due), the ports the purge needs (PurgeStore:
the SQL rows; BlobEraser: the object store), the default visibility rule of a restitution (a document
flagged INVISIBLE_PATIENT stays out until its author lifts the flag), the safe file name of an id inside
the export, and the reference printed on an opposition receipt.
Rule: nothing here reads or writes anything (pipelines.record.restitution does, through these ports and
hub.ports); nothing here logs.
Does not: decide when a profile is closed or purged (the lifecycle does) or build the ZIP or the PDF.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from hub.envelope import BlobRef
from hub.records import DocumentRecord

INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
PARIS = ZoneInfo("Europe/Paris")
EXPORT_FORMAT = "meshub-restitution/1"
ARCHIVE_YEARS = 10  # a closed profile's content is kept in archive this long, then purged
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_STEM = 80  # characters kept from an id before its hash suffix


def patient_visible(document: DocumentRecord) -> bool:
    """The default restitution filter: everything but documents still flagged INVISIBLE_PATIENT (the
    author hides them from the patient until they lift the flag; a restitution must not reveal them)."""
    return INVISIBLE_PATIENT not in document.confidentiality


def safe_name(identifier: str, suffix: str) -> str:
    """A file name for `identifier` that is safe in any ZIP reader and on any file system.

    Runs of characters outside [A-Za-z0-9._-] become one "_", the stem is cut to 80 characters and
    never starts with a dot, and 12 hex digits of the id's SHA-256 follow, so two ids that differ only
    in their unsafe characters ("a/b" and "a:b") still get two names.  The id itself is kept in the
    export's JSON next to the name."""
    stem = _UNSAFE.sub("_", identifier).strip("._")[:_NAME_STEM] or "id"
    digest = hashlib.sha256(identifier.encode("utf-8")).hexdigest()[:12]
    return f"{stem}-{digest}{suffix}"


def receipt_reference(ins: str, opposed_at: datetime, *, secret: bytes) -> str:
    """The reference printed on an opposition receipt: `OPP-YYYYMMDD-XXXX-XXXX-XXXX-XXXX`.

    Deterministic (the same opposition always gets the same reference, so a reprint matches), the date
    is the opposition's day in Europe/Paris, the rest is 80 bits of HMAC-SHA256(secret, INS | instant)
    in Crockford's base32.  Keyed, so the INS cannot be recovered by hashing every possible INS at that
    instant (the INS space is small enough for that): pass the hub's object-key secret or another secret
    of the deployment."""
    if not secret:
        raise ValueError("the receipt-reference secret must not be empty")
    instant = _utc(opposed_at).isoformat(timespec="seconds")
    mac = hmac.new(secret, f"opposition|{ins}|{instant}".encode(), hashlib.sha256).digest()
    code = base64.b32encode(mac[:10]).decode("ascii").translate(_CROCKFORD)
    day = _utc(opposed_at).astimezone(PARIS).strftime("%Y%m%d")
    return f"OPP-{day}-" + "-".join(code[n:n + 4] for n in range(0, 16, 4))


# RFC 4648 base32 -> Crockford (no I, L, O, U: nothing to misread on paper)
_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def archive_ends(closed_at: datetime) -> datetime:
    """When a closed profile's archive period ends: ARCHIVE_YEARS after its closure (29 February -> 28)."""
    closed = _utc(closed_at)
    try:
        return closed.replace(year=closed.year + ARCHIVE_YEARS)
    except ValueError:  # 29 February, and the year ARCHIVE_YEARS later is not a leap year
        return closed.replace(year=closed.year + ARCHIVE_YEARS, day=28)


def purge_due(closed_at: datetime, *, now: datetime) -> bool:
    """True once a closed profile has been archived for ARCHIVE_YEARS: its content is purged then."""
    return _utc(now) >= archive_ends(closed_at)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (everything the hub stores is)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One file of a restitution export, as its manifest lists it."""

    name: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What a restitution export holds: counts per kind and every file with its SHA-256 (no content)."""

    exported_at: datetime
    documents: int
    excluded_documents: int  # left out by the visibility filter (INVISIBLE_PATIENT by default)
    messages: int
    notifications: int
    audit_entries: int | None  # None: no audit trail was given
    files: tuple[ExportFile, ...] = ()

    @property
    def size(self) -> int:
        """Bytes of all files before compression (the manifest excluded)."""
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"exported_at": self.exported_at.isoformat(), "documents": self.documents,
                "excluded_documents": self.excluded_documents, "messages": self.messages,
                "notifications": self.notifications, "audit_entries": self.audit_entries,
                "files": len(self.files), "size": self.size}


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge removed: rows per table, and the objects to erase from the object store.

    `blobs` are the objects no remaining row refers to, queued for erasure in the same transaction as
    the row deletions (PurgeStore.pending_erasures finds them again after a crash).  `erased` and
    `failed` say how the erasure went (filled by pipelines.record.restitution.purge); `audit_redacted` counts
    the audit entries the redaction hook rewrote (None: no hook)."""

    rows: Mapping[str, int] = field(default_factory=dict)
    blobs: tuple[BlobRef, ...] = ()
    erased: int = 0
    failed: tuple[BlobRef, ...] = ()
    audit_redacted: int | None = None

    @property
    def complete(self) -> bool:
        """True when every object of the purge is gone from the object store."""
        return not self.failed and self.erased == len(self.blobs)

    def to_dict(self) -> dict[str, Any]:
        """Counts only: safe to log (object keys are keyed hashes, but they are not needed in a log)."""
        return {"rows": dict(self.rows), "blobs": len(self.blobs), "erased": self.erased,
                "failed": len(self.failed), "audit_redacted": self.audit_redacted}


class PurgeStore(Protocol):
    """Deletes a patient's rows at the end of the archive period (storage.sql.purge.SqlPurge implements it)."""

    def purge(self, ins: str) -> PurgeReport:
        """In one transaction: delete every row of the patient's content, blank the registry row (kept,
        status closed), and queue the objects no remaining row refers to; harmless when run again."""
        ...

    def pending_erasures(self, *, limit: int = 500) -> list[BlobRef]:
        """Objects queued for erasure and still referred to by no row (oldest first)."""
        ...

    def erased(self, refs: Sequence[BlobRef]) -> None:
        """Forget queued objects once they are gone from the object store."""
        ...


class BlobEraser(Protocol):
    """Deletes stored objects (storage.objects.MinioBlobStore).  Idempotent: a missing object is fine;
    raises StoreUnavailable when the store is down."""

    def delete(self, ref: BlobRef) -> None: ...
