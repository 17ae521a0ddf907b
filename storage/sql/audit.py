"""The audit trail on the index's database (SQLite or PostgreSQL, same code): hub.audit.AuditTrail.

Owns: the `audit_trail` rows and the one-row `audit_head` (last seq, last hash).
Rule 1: appends are serialised on the head row.  An append's first statement is a no-op UPDATE of that
row, so it holds the row lock (PostgreSQL) or the database's write lock (SQLite: the UPDATE is the first
statement of its transaction, so a busy writer is waited for, never read stale) before it reads the
head; it then numbers and chains the new entries (hub.audit.chain), inserts them and moves the head, in
the same durable transaction.  No seq is lost or given twice, whatever the number of writers.
Inside a unit of work (storage.sql.unit) the append is the unit's last write: the head lock is then held
until the unit commits, and taken after the unit's other row locks, in every unit alike (no cycle).
Rule 2: an idempotency key already stored is checked under that lock: that entry is not appended again.
Rule 3: rows are never updated, except by `redact` (a purge), which empties the body columns (ins,
actor_id, target, key, detail) and sets `redacted`; seq, time, action, outcome and hashes stay.
The hashed body is rebuilt from the columns (hub.audit.canonical_body), so a changed column is a changed
body: there is no second copy that could disagree.
Does not: decide what is audited, or verify the chain (pipelines.record.audit.verify_trail).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.audit import GENESIS, AuditEntry, NewAuditEntry, chain, fresh_entries
from hub.errors import NotFound
from storage.sql.database import Database, OnDatabase, SqlStore, metadata, when

trail = sa.Table(
    "audit_trail", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),  # assigned under the head lock
    sa.Column("key", sa.String(256), unique=True),                           # NULL: no idempotency key
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ins", sa.String(64), nullable=False),                          # "" once redacted
    sa.Column("actor_kind", sa.String(32), nullable=False),
    sa.Column("actor_id", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),                                             # canonical JSON; NULL once redacted
    sa.Column("redacted", sa.Boolean, nullable=False, default=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_trail_ins", "ins", "seq"),
)

head = sa.Table(
    "audit_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),      # always 1
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

TABLES = [trail, head]
HEAD_ID = 1


class SqlAuditTrail(SqlStore):
    """hub.audit.AuditTrail on the index's database: durable appends, autocommit reads."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._lock = head.update().where(head.c.id == HEAD_ID).values(seq=head.c.seq)
        self._read_head = sa.select(head.c.seq, head.c.hash).where(head.c.id == HEAD_ID)

    @classmethod
    def beside(cls, index: OnDatabase) -> SqlAuditTrail:
        """The trail sharing `index`'s database; creates its head row if missing (idempotent: the row is
        data, the table comes from the migrations)."""
        trail = cls(index.database)
        with trail._db.begin() as conn:
            conn.execute(trail._db.insert(head).values(id=HEAD_ID, seq=0, hash=GENESIS)
                         .on_conflict_do_nothing(index_elements=["id"]))
        return trail

    def append(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        """Chain and store `entries` in one durable transaction (see Rule 1 and 2)."""
        if not entries:
            return []
        with self._db.begin() as conn:
            last_seq, last_hash = self._locked_head(conn)
            known = self._stored_keys(conn, {n.key for n in entries if n.key})
            stored = chain(last_seq, last_hash, fresh_entries(entries, known))
            if stored:
                conn.execute(trail.insert(), [_row(e) for e in stored])
                conn.execute(head.update().where(head.c.id == HEAD_ID)
                             .values(seq=stored[-1].seq, hash=stored[-1].entry_hash))
        return _in_input_order(entries, known, stored)

    def _locked_head(self, conn: Connection) -> tuple[int, str]:
        """Take the head row's lock (first statement of the transaction), then read it."""
        conn.execute(self._lock)
        row = conn.execute(self._read_head).first()
        if row is None:
            raise NotFound("the audit trail has no head row (create it with SqlAuditTrail.beside)")
        return int(row.seq), str(row.hash)

    @staticmethod
    def _stored_keys(conn: Connection, keys: set[str]) -> dict[str, AuditEntry]:
        if not keys:
            return {}
        rows = conn.execute(trail.select().where(trail.c.key.in_(sorted(keys))))
        return {r.key: _entry(r) for r in rows}

    def for_patient(self, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[AuditEntry]:
        if not ins:
            return []
        query = (trail.select().where(trail.c.ins == ins, trail.c.seq > after_seq)
                 .order_by(trail.c.seq).limit(limit))
        with self._db.read() as conn:
            return [_entry(r) for r in conn.execute(query)]

    def entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        query = trail.select().where(trail.c.seq > after_seq).order_by(trail.c.seq).limit(limit)
        with self._db.read() as conn:
            return [_entry(r) for r in conn.execute(query)]

    def head(self) -> tuple[int, str]:
        with self._db.read() as conn:
            row = conn.execute(self._read_head).first()
        return (int(row.seq), str(row.hash)) if row is not None else (0, GENESIS)

    def redact(self, ins: str) -> int:
        if not ins:
            return 0
        purge = trail.update().where(trail.c.ins == ins, trail.c.redacted.is_(False)).values(
            ins="", actor_id="", target="", key=None, detail=None, redacted=True)
        with self._db.begin() as conn:
            return int(conn.execute(purge).rowcount)


def _in_input_order(entries: Sequence[NewAuditEntry], known: Mapping[str, AuditEntry],
                    stored: Sequence[AuditEntry]) -> list[AuditEntry]:
    """One stored entry per input: a keyed input gets the entry stored under its key."""
    by_key = {**known, **{e.key: e for e in stored if e.key}}
    unkeyed = iter([e for e in stored if not e.key])
    return [by_key[n.key] if n.key else next(unkeyed) for n in entries]


def _detail_text(detail: Mapping[str, str]) -> str:
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _detail_of(raw: str | None) -> dict[str, str]:
    """The stored detail; unreadable JSON is kept as text, so verification reports it as altered."""
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"": raw}
    if not isinstance(value, dict):
        return {"": raw}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _row(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "key": e.key or None, "at": e.at, "ins": e.ins, "actor_kind": e.actor_kind,
            "actor_id": e.actor_id, "action": str(e.action), "target": e.target, "outcome": e.outcome,
            "detail": _detail_text(e.detail), "redacted": e.redacted, "body_sha256": e.body_sha256,
            "prev_hash": e.prev_hash, "entry_hash": e.entry_hash}


def _entry(r: Any) -> AuditEntry:
    return AuditEntry(seq=int(r.seq), at=when(r.at).astimezone(UTC), ins=r.ins, actor_kind=r.actor_kind,
                      actor_id=r.actor_id, action=r.action, target=r.target, outcome=r.outcome,
                      detail=_detail_of(r.detail), key=r.key or "", body_sha256=r.body_sha256,
                      prev_hash=r.prev_hash, entry_hash=r.entry_hash, redacted=bool(r.redacted))
