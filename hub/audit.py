"""The audit trail of patient records (pure): who did what to whose record, chained by SHA-256.

Owns: the vocabulary (AuditAction, NewAuditEntry, AuditEntry, Verification), the AuditTrail port, and the
trail's byte format (canonical body, body digest, link hash, chaining), which the store applies inside
its lock and the verifier (pipelines.record.core.audit_chain) recomputes.
Rule 1: append-only.  Entry `seq` n (1, 2, 3...) carries `prev_hash` = entry n-1's `entry_hash`
(GENESIS for entry 1) and `entry_hash` = link(prev_hash, seq, body_sha256); the trail's head (last seq,
last hash) is kept apart, so removing the last entries is detected too.
Rule 2: a purge removes an entry's body (ins, actor id, target, detail, key) but keeps its seq,
body_sha256 and hashes, so the chain still verifies without the data.
Rule 3: `detail` holds the mode, refusal rule or emergency reason: never a title or a document's content.
Does not: decide what is audited (the record service) or check the chain (pipelines.record.core.audit_chain).

Byte format, version 1 (stable: changing it breaks every stored trail):
  body  = UTF-8 of JSON {action, actor_id, actor_kind, at, detail, ins, key, outcome, target},
          sort_keys, separators (",", ":"), non-ASCII kept; `at` as UTC "YYYY-MM-DDTHH:MM:SS.ffffffZ".
  body_sha256 = sha256(body) hex.
  entry_hash  = sha256(ASCII "meshub-audit/1\\n{seq}\\n{prev_hash}\\n{body_sha256}") hex.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from hub.actors import Actor

GENESIS = "0" * 64
LINK_PREFIX = "meshub-audit/1"
OUTCOMES = ("ok", "refused")


class AuditAction(StrEnum):
    """What was done to (or attempted on) a patient's record."""

    READ = "read"                       # a document or message opened
    LIST = "list"                       # the record's list of documents consulted
    WRITE = "write"                     # a document added (or replaced)
    MASK = "mask"                       # a document hidden from professionals
    UNMASK = "unmask"
    HIDE_FROM_REPRESENTATIVES = "hide_from_representatives"
    SHOW_TO_REPRESENTATIVES = "show_to_representatives"
    DELETE = "delete"
    LIFT_INVISIBLE = "lift_invisible"   # a document made visible to the patient (after the consultation)
    REFUSED = "refused"                 # an access the rules refused (detail: rule)
    EMERGENCY = "emergency"             # bris de glace / regulation (detail: mode, reason)
    BLOCK = "block"                     # the patient blocks a professional
    UNBLOCK = "unblock"
    SETTINGS = "settings"               # the patient changed a setting (notifications, representatives...)
    REGISTER = "register"               # the insurer's roster created the profile
    ACTIVATE = "activate"
    OPPOSE = "oppose"                   # the patient opposes the record's creation
    REOPEN = "reopen"
    CLOSE = "close"
    EXPORT = "export"                   # the record downloaded as a whole
    PURGE = "purge"                     # a closed record's data erased after its retention period
    FIRST_ACCESS = "first_access"       # a professional's first access to this record
    AUTHORIZE = "authorize"             # a professional given access (treating team, médecin traitant)
    REVOKE = "revoke"                   # that access withdrawn
    AUDIT_READ = "audit_read"           # the trail itself consulted (by its patient or an admin)


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """One event to append.  `at` is made UTC; `key` (idempotency): an entry whose key is already in the
    trail is not appended again ("" = always append); `outcome`: "ok" or "refused"."""

    at: datetime
    ins: str
    actor_kind: str
    actor_id: str
    action: AuditAction
    target: str = ""
    outcome: str = "ok"
    detail: Mapping[str, str] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("audit time must be timezone-aware")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {OUTCOMES}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.detail.items()):
            raise ValueError("audit detail maps strings to strings")
        object.__setattr__(self, "at", self.at.astimezone(UTC))
        object.__setattr__(self, "detail", dict(self.detail))

    @classmethod
    def by(cls, actor: Actor, action: AuditAction, *, at: datetime, ins: str, target: str = "",
           outcome: str = "ok", detail: Mapping[str, str] | None = None, key: str = "") -> NewAuditEntry:
        """The entry for `actor` doing `action` on patient `ins`'s record."""
        return cls(at=at, ins=ins, actor_kind=str(actor.kind), actor_id=actor.id, action=action, target=target,
                   outcome=outcome, detail=dict(detail or {}), key=key)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry.  `action`, `actor_kind` and `outcome` are kept as the strings stored (an
    AuditAction compares equal to its value), so an old or tampered value is still read and verified.
    `redacted`: its body was purged (ins, actor_id, target, key "" and detail empty)."""

    seq: int
    at: datetime
    ins: str
    actor_kind: str
    actor_id: str
    action: str
    target: str
    outcome: str
    detail: Mapping[str, str]
    key: str
    body_sha256: str
    prev_hash: str
    entry_hash: str
    redacted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The API's JSON shape (times in ISO 8601, UTC)."""
        return {"seq": self.seq, "at": self.at.isoformat(), "ins": self.ins, "actor_kind": self.actor_kind,
                "actor_id": self.actor_id, "action": str(self.action), "target": self.target,
                "outcome": self.outcome, "detail": dict(self.detail), "key": self.key,
                "body_sha256": self.body_sha256, "prev_hash": self.prev_hash, "entry_hash": self.entry_hash,
                "redacted": self.redacted}


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of checking a trail: `checked` entries verified before `broken_seq` (None when ok)."""

    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} entries verified"
        return f"audit trail broken at entry {self.broken_seq}: {self.reason} ({self.checked} entries verified before)"


class AuditTrail(Protocol):
    """The append-only store of audit entries (storage.sql.audit.SqlAuditTrail)."""

    def append(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        """Chain and store `entries` in one durable transaction, in order; one stored entry per input
        (an input whose key is already stored gets the stored entry, and nothing is appended)."""
        ...

    def for_patient(self, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[AuditEntry]:
        """Patient `ins`'s entries with seq > after_seq, oldest first (purged entries are no one's)."""
        ...

    def entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        """The whole trail with seq > after_seq in seq order, for verification."""
        ...

    def head(self) -> tuple[int, str]:
        """The last seq and its entry_hash; (0, GENESIS) when the trail is empty."""
        ...

    def redact(self, ins: str) -> int:
        """Purge patient `ins`'s entries' bodies (seq, body_sha256 and hashes stay); how many were purged."""
        ...


# -- the byte format ----------------------------------------------------------------------------------

def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_body(entry: NewAuditEntry | AuditEntry) -> bytes:
    """The bytes `body_sha256` is computed over: every field but seq, the hashes and `redacted`."""
    body = {"action": str(entry.action), "actor_id": entry.actor_id, "actor_kind": entry.actor_kind,
            "at": _utc_text(entry.at), "detail": dict(entry.detail), "ins": entry.ins, "key": entry.key,
            "outcome": entry.outcome, "target": entry.target}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def body_digest(entry: NewAuditEntry | AuditEntry) -> str:
    """SHA-256 (hex) of the entry's canonical body."""
    return hashlib.sha256(canonical_body(entry)).hexdigest()


def link(prev_hash: str, seq: int, body_sha256: str) -> str:
    """The entry hash: SHA-256 (hex) of "meshub-audit/1\\n{seq}\\n{prev_hash}\\n{body_sha256}"."""
    return hashlib.sha256(f"{LINK_PREFIX}\n{seq}\n{prev_hash}\n{body_sha256}".encode("ascii")).hexdigest()


def chain(after_seq: int, prev_hash: str, news: Sequence[NewAuditEntry]) -> list[AuditEntry]:
    """Number `news` after_seq+1, after_seq+2... and link each to the one before, starting from
    `prev_hash` (the head's hash): `chain(*trail.head(), news)`."""
    out: list[AuditEntry] = []
    for seq, new in enumerate(news, start=after_seq + 1):
        digest = body_digest(new)
        entry_hash = link(prev_hash, seq, digest)
        out.append(AuditEntry(seq=seq, at=new.at, ins=new.ins, actor_kind=new.actor_kind, actor_id=new.actor_id,
                              action=new.action, target=new.target, outcome=new.outcome, detail=dict(new.detail),
                              key=new.key, body_sha256=digest, prev_hash=prev_hash, entry_hash=entry_hash))
        prev_hash = entry_hash
    return out


def fresh_entries(entries: Sequence[NewAuditEntry], known: Iterable[str]) -> list[NewAuditEntry]:
    """The entries to append: all but those whose idempotency key is in `known` or came earlier in the batch."""
    seen: set[str] = set(known)
    out: list[NewAuditEntry] = []
    for new in entries:
        if new.key:
            if new.key in seen:
                continue
            seen.add(new.key)
        out.append(new)
    return out
