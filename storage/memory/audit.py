"""hub.audit.AuditTrail in memory: a hash-chained list of entries and its head.

Owns: MemoryAuditTrail, with storage.sql.audit's rules: appends are serialised (one lock), numbered and
chained by hub.audit.chain, so no seq is lost or given twice; an idempotency key already stored (or met
earlier in the same batch) is not appended again and its stored entry is answered in its place; entries
are never changed except by `redact` (a purge), which empties the body and keeps seq, time, action,
outcome and hashes.  Does not: decide what is audited, or verify the chain (pipelines.record.audit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hub.audit import GENESIS, AuditEntry, NewAuditEntry, chain, fresh_entries
from storage.memory.index import MemoryIndex


class MemoryAuditTrail:
    """AuditTrail on a list, sharing the index's lock and outage switch."""

    def __init__(self, index: MemoryIndex) -> None:
        self.state = index.state
        self.rows: list[AuditEntry] = []  # in seq order (tests may tamper with it, as with SQL rows)
        self._head: tuple[int, str] = (0, GENESIS)
        self._keys: dict[str, AuditEntry] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryAuditTrail:
        return index.beside(cls, cls)

    def append(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        if not entries:
            return []
        with self.state.lock:
            self.state.check()
            known = {n.key: self._keys[n.key] for n in entries if n.key in self._keys}
            stored = chain(*self._head, fresh_entries(entries, known))
            for entry in stored:
                kept = replace(entry, action=str(entry.action))
                self.rows.append(kept)
                if kept.key:
                    self._keys[kept.key] = kept
            if stored:
                self._head = (stored[-1].seq, stored[-1].entry_hash)
        by_key = {**known, **{e.key: e for e in stored if e.key}}
        unkeyed = iter([e for e in stored if not e.key])
        return [by_key[n.key] if n.key else next(unkeyed) for n in entries]

    def for_patient(self, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[AuditEntry]:
        if not ins:
            return []
        with self.state.lock:
            self.state.check()
            return [e for e in self.rows if e.ins == ins and e.seq > after_seq][:limit]

    def entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        with self.state.lock:
            self.state.check()
            return [e for e in self.rows if e.seq > after_seq][:limit]

    def head(self) -> tuple[int, str]:
        with self.state.lock:
            self.state.check()
            return self._head

    def redact(self, ins: str) -> int:
        if not ins:
            return 0
        with self.state.lock:
            self.state.check()
            count = 0
            for n, entry in enumerate(self.rows):
                if entry.ins == ins and not entry.redacted:
                    self._keys.pop(entry.key, None)
                    self.rows[n] = replace(entry, ins="", actor_id="", target="", key="", detail={}, redacted=True)
                    count += 1
        return count
