"""Group commit for the audit trail: concurrent appends of one process share one chained transaction.

Owns: GroupCommitTrail, an hub.audit.AuditTrail around another (SqlAuditTrail).  The chain serialises appends on
its head row, held through each commit (storage/sql/audit.py Rule 1), so one entry per transaction caps the
whole hub at one commit per entry.  Here, callers that arrive while a commit is under way queue up; the
caller that finds no commit under way becomes the leader and appends everything queued in one
transaction, again until the queue is empty, then hands back each caller's own entries.
Rule: nobody returns before their entries are durable (the leader's commit covered them); an error of
that commit is raised to every caller of the batch, and none of its entries is stored.
Rule 2: inside a unit of work on the trail's database (storage.sql.unit: a document's index, notice and
trail rows in one transaction), an append goes straight to the trail in the caller's thread, in the unit's
transaction, whose one commit covers it (a leader's separate commit would not be atomic with the unit, and
on SQLite would wait for the unit's write lock held by the caller).
Does not: change what is chained or how (SqlAuditTrail does), or delay anyone when there is no
contention (a lone caller is its own leader and commits at once).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from hub import refusals
from hub.audit import AuditAction, AuditEntry, AuditTrail, NewAuditEntry
from storage.sql.unit import current_unit

MAX_BATCH = 500  # entries per transaction at most (keeps one commit's statement and lock time bounded)


@dataclass
class _Request:
    entries: list[NewAuditEntry]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[AuditEntry] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommitTrail:
    """hub.audit.AuditTrail: appends batched across this process's threads; reads go straight through."""

    def __init__(self, inner: AuditTrail, *, max_batch: int = MAX_BATCH) -> None:
        self.inner = inner
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._leading = False

    def append(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        """Durable when it returns, like SqlAuditTrail.append; shares a transaction with concurrent callers."""
        if not entries:
            return []
        refusals.note(e.ins for e in entries if e.action == AuditAction.REFUSED)
        if self._in_unit():
            return self.inner.append(entries)
        request = _Request(list(entries))
        with self._lock:
            self._queue.append(request)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _in_unit(self) -> bool:
        """A unit of work is under way on the inner trail's database (Rule 2)."""
        database = getattr(self.inner, "database", None)
        return database is not None and current_unit(database) is not None

    def _lead(self) -> None:
        """Commit batches until the queue is empty, then step down (the next caller leads).  Interrupted
        (KeyboardInterrupt, SystemExit), it fails whatever is still queued rather than leave it waiting."""
        try:
            while True:
                with self._lock:
                    batch = self._take()
                    if not batch:
                        self._leading = False
                        return
                self._commit(batch)
        except BaseException as exc:
            with self._lock:
                left, self._queue, self._leading = self._queue, [], False
            for request in left:
                request.error = exc
                request.done.set()
            raise

    def _take(self) -> list[_Request]:
        """Queued requests up to max_batch entries (at least one request); called under the lock."""
        batch: list[_Request] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].entries) <= self._max_batch):
            request = self._queue.pop(0)
            batch.append(request)
            size += len(request.entries)
        return batch

    def _commit(self, batch: list[_Request]) -> None:
        try:
            stored = self.inner.append([e for r in batch for e in r.entries])
        except BaseException as exc:  # every caller of the batch gets the commit's error
            for request in batch:
                request.error = exc
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for request in batch:
            request.result = stored[start:start + len(request.entries)]
            start += len(request.entries)
            request.done.set()

    # -- reads and the purge: straight to the store ------------------------------------------------------

    def for_patient(self, ins: str, *, after_seq: int = 0, limit: int = 500) -> list[AuditEntry]:
        return self.inner.for_patient(ins, after_seq=after_seq, limit=limit)

    def entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        return self.inner.entries(after_seq=after_seq, limit=limit)

    def head(self) -> tuple[int, str]:
        return self.inner.head()

    def redact(self, ins: str) -> int:
        return self.inner.redact(ins)
