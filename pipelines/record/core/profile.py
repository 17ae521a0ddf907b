"""A patient profile's life in Mon espace santé (pure): its record, and the ports its service needs.

Owns: Profile (one row per INS: the status and every date of its life, the rate-limit counters, the
keyed digests of the provisional code and of the Vitale card serial, the opposition receipt's object),
Activation (how a profile was opened), LifecycleStore (storage.sql.profiles.SqlProfiles implements it) and
ReceiptPrinter (connectors.outbound.receipts implements it: the PDF receipt of an opposition).
Rule: the provisional code is never kept in clear: `code_sha256` is HMAC-SHA256 under the hub's secret
(pipelines.record.core.lifecycle.code_digest); so is the Vitale serial.  Neither appears in `to_dict` or repr.
Does not: decide anything (pipelines.record.core.lifecycle) or read or write anything (pipelines.record.lifecycle does,
through these ports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from hub.envelope import BlobRef
from hub.records import PatientRecord, PatientStatus


class Activation(StrEnum):
    """How a profile was opened: not through the hub ("": still created, or imported already active from
    the roster), with a code (status `active`), or automatically after the 6 weeks (status `opened`, until
    its holder activates it with a code they asked for: then `code`, with the first `activated_at` kept)."""

    NONE = ""
    CODE = "code"
    AUTOMATIC = "automatic"


@dataclass(frozen=True, slots=True)
class Profile:
    """One patient's profile.  Times are UTC.  `code_expires_at` is the end of the current code's
    validity (for a `created` profile also the moment it opens automatically); None when no code is
    pending.  `code_generation` counts the codes issued (the letter event id is derived from it, so a
    code is announced once); `announced_generation` is the last one whose letter event was handed over.
    `purge_after`: closed profiles, end of the 10-year archive.  `locked_until`: activation refused
    until then after too many wrong attempts (`failed_attempts` since the last success)."""

    ins: str
    status: PatientStatus
    created_at: datetime
    code_expires_at: datetime | None = None
    activated_at: datetime | None = None
    activation: Activation = Activation.NONE
    opposed_at: datetime | None = None
    closed_at: datetime | None = None
    purge_after: datetime | None = None
    purged_at: datetime | None = None
    failed_attempts: int = 0
    locked_until: datetime | None = None
    receipt_key: str = ""            # S3 key of the opposition receipt (PDF); "" before any
    receipt_bucket: str = ""
    receipt_sha256: str = ""
    receipt_size: int = 0
    code_generation: int = 0
    announced_generation: int = 0
    code_sha256: str = field(default="", repr=False)    # keyed digest of the pending code ("" none)
    vitale_sha256: str = field(default="", repr=False)  # keyed digest of the Vitale serial ("" unknown)

    @property
    def code_pending(self) -> bool:
        """A code was issued and is neither used, superseded nor cancelled (it may have expired)."""
        return bool(self.code_sha256) and self.code_expires_at is not None

    @property
    def receipt(self) -> BlobRef | None:
        """Where the opposition receipt is stored (None before an opposition)."""
        if not self.receipt_key:
            return None
        return BlobRef(bucket=self.receipt_bucket, key=self.receipt_key, sha256=self.receipt_sha256,
                       size=self.receipt_size)

    def to_dict(self) -> dict[str, Any]:
        """The public view (API, CLI): no digest, no object key."""
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None
        return {"ins": self.ins, "status": str(self.status), "created_at": when(self.created_at),
                "code_expires_at": when(self.code_expires_at) if self.code_pending else None,
                "activated_at": when(self.activated_at), "activation": str(self.activation),
                "opposed_at": when(self.opposed_at), "closed_at": when(self.closed_at),
                "purge_after": when(self.purge_after), "purged_at": when(self.purged_at),
                "failed_attempts": self.failed_attempts, "locked_until": when(self.locked_until),
                "has_receipt": bool(self.receipt_key), "code_generation": self.code_generation}


class LifecycleStore(Protocol):
    """Profiles on the index's database (storage.sql.profiles.SqlProfiles).

    Rule: every change of status is one transaction that also sets `patients.status` (the registry
    status intake and notifications read), and is a conditional UPDATE on the expected current status
    (plus the `where` columns): of two concurrent requests, one wins, the other gets None.
    Raises IndexUnavailable when the database is down."""

    def register(self, ins: str, *, code_sha256: str, vitale_sha256: str, created_at: datetime,
                 expires_at: datetime | None, status: PatientStatus = PatientStatus.CREATED,
                 values: Mapping[str, Any] | None = None) -> Profile | None:
        """Insert the profile unless one exists (None then); a purged profile is replaced by the new one.
        `status` CREATED starts code generation 1; `values` sets other Profile fields."""
        ...

    def profile(self, ins: str) -> Profile | None: ...

    def statuses(self, ins: Sequence[str]) -> dict[str, PatientStatus]:
        """The status of each of these INS that has a profile not yet purged."""
        ...

    def record_failure(self, ins: str, *, now: datetime, seen: int,
                       locked_until: datetime | None) -> Profile | None:
        """Count one wrong attempt (durably) if `failed_attempts` is still `seen`; None if another attempt
        was counted meanwhile (read again and decide again)."""
        ...

    def transition(self, ins: str, *, from_statuses: Sequence[PatientStatus], to_status: PatientStatus,
                   values: Mapping[str, Any], where: Mapping[str, Any] | None = None) -> Profile | None:
        """Move the profile to `to_status` with `values` (Profile fields, code_sha256, vitale_sha256) if its
        status is one of `from_statuses` and each `where` column has its value; the new profile, or None."""
        ...

    def reissue(self, ins: str, *, code_sha256: str, expires_at: datetime,
                from_statuses: Sequence[PatientStatus], now: datetime) -> Profile | None:
        """A new code (generation + 1) if the status is one of `from_statuses`; the status is unchanged."""
        ...

    def mark_announced(self, ins: str, generation: int) -> None:
        """The letter event of code `generation` was handed to the notifications."""
        ...

    def set_vitale(self, ins: str, vitale_sha256: str) -> None:
        """The roster brought a (new) Vitale card serial."""
        ...

    def sync_status(self, ins: Sequence[str]) -> int:
        """Set patients.status back to the profile's status where they differ (after a roster upsert);
        how many rows changed."""
        ...

    def due_auto_open(self, now: datetime, limit: int = 500) -> list[Profile]:
        """Created profiles whose code expired at or before `now` (soonest first)."""
        ...

    def due_purge(self, now: datetime, limit: int = 500) -> list[Profile]:
        """Closed, not yet purged profiles whose `purge_after` is at or before `now`."""
        ...

    def minors_turning_adult(self, born_on_or_before: str, limit: int = 500,
                             after: str = "") -> list[tuple[str, str]]:
        """(INS, birth date) of patients who still have legal representatives and were born on or before
        `born_on_or_before` (YYYY-MM-DD), by INS, from the first INS greater than `after` (keyset paging)."""
        ...

    def mark_purged(self, ins: str, now: datetime) -> Profile | None:
        """Record that the closed profile's content was purged (once)."""
        ...


class ReceiptPrinter(Protocol):
    """Renders the PDF receipt of an opposition (connectors.outbound.receipts).  `profile` is opposed,
    with its `opposed_at` as stored."""

    def render(self, patient: PatientRecord, profile: Profile) -> bytes: ...
