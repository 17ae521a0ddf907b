"""Group commit of the audit trail on both index back ends: concurrent appends share transactions, each
caller gets its own entries back once they are durable, and a failed commit fails its whole batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from hub.audit import AuditEntry, NewAuditEntry
from hub.errors import IndexUnavailable
from pipelines.record.audit import verify_trail
from storage.sql.audit import SqlAuditTrail
from storage.sql.audit_batching import GroupCommitTrail
from storage.sql.index import SqlIndex
from tests.contract.test_audit_trail import event


class Counted(SqlAuditTrail):
    """The real store, counting its transactions (and, when asked, failing the next one)."""

    def __init__(self, index: SqlIndex) -> None:
        super().__init__(index.database)
        self.transactions = 0
        self.fail_next = False
        self.slow = threading.Event()

    def append(self, entries: Sequence[NewAuditEntry]) -> list[AuditEntry]:
        self.transactions += 1
        self.slow.wait(0.01)  # a commit that takes a moment, as an fsync does, so that callers queue up
        if self.fail_next:
            self.fail_next = False
            raise IndexUnavailable("index database unavailable: test")
        return super().append(entries)


def test_concurrent_callers_share_transactions_and_each_gets_its_own_entries(sql_index: SqlIndex) -> None:
    SqlAuditTrail.beside(sql_index)
    store = Counted(sql_index)
    trail = GroupCommitTrail(store)

    def one(n: int) -> tuple[int, AuditEntry]:
        [entry] = trail.append([event(n)])
        return n, entry

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(320)))
    assert all(entry.target == f"doc-{n}" for n, entry in results)  # each caller its own entry back
    assert sorted(e.seq for _, e in results) == list(range(1, 321))
    assert store.transactions < 320  # callers that queued up shared a commit
    check = verify_trail(trail)
    assert check.ok and check.checked == 320


def test_a_failed_commit_fails_every_caller_of_its_batch_and_stores_none_of_them(sql_index: SqlIndex) -> None:
    SqlAuditTrail.beside(sql_index)
    store = Counted(sql_index)
    trail = GroupCommitTrail(store)
    store.fail_next = True
    with pytest.raises(IndexUnavailable):
        trail.append([event(1), event(2)])
    assert trail.head()[0] == 0
    assert [e.seq for e in trail.append([event(3)])] == [1]  # the next caller leads again
    assert trail.append([]) == []
