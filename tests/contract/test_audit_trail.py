"""The audit trail on every back end (memory, SQLite, PostgreSQL): same expectations.  The tampering
tests change SQL rows, so they run on the SQL back ends (sql_audit)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hub.actors import Actor, ActorKind
from hub.audit import GENESIS, AuditAction, AuditTrail, NewAuditEntry
from pipelines.record.audit import verify_trail
from storage.memory.audit import MemoryAuditTrail
from storage.memory.index import MemoryIndex
from storage.sql.audit import SqlAuditTrail
from storage.sql.index import SqlIndex
from tests.builders import TEST_INS
from tests.contract.conftest import beside

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OTHER_INS = "199999999999999"
DOCTOR = Actor(ActorKind.PROFESSIONAL, "810000000001", profession="G15_10")


@pytest.fixture
def audit(index: MemoryIndex | SqlIndex) -> Iterator[AuditTrail]:
    yield beside(index, MemoryAuditTrail, SqlAuditTrail)


@pytest.fixture
def sql_audit(sql_index: SqlIndex) -> Iterator[SqlAuditTrail]:
    yield SqlAuditTrail.beside(sql_index)


def event(n: int = 0, *, ins: str = TEST_INS, key: str = "", action: AuditAction = AuditAction.READ) -> NewAuditEntry:
    return NewAuditEntry.by(DOCTOR, action, at=NOW + timedelta(microseconds=n), ins=ins, target=f"doc-{n}",
                            detail={"mode": "normal", "note": "é"}, key=key)


def raw(index: SqlIndex, statement: str) -> None:
    with index.engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_an_empty_trail_verifies(audit: AuditTrail, index: MemoryIndex | SqlIndex) -> None:
    assert audit.head() == (0, GENESIS)
    assert verify_trail(audit).ok and verify_trail(audit).checked == 0
    assert audit.append([]) == []
    assert beside(index, MemoryAuditTrail, SqlAuditTrail).head() == (0, GENESIS)  # beside is idempotent


def test_entries_are_appended_in_order_and_read_per_patient(audit: AuditTrail) -> None:
    stored = audit.append([event(1), event(2, ins=OTHER_INS), event(3, action=AuditAction.EMERGENCY)])
    assert [e.seq for e in stored] == [1, 2, 3]
    assert audit.head() == (3, stored[-1].entry_hash)
    mine = audit.for_patient(TEST_INS)
    assert mine == [stored[0], stored[2]]
    assert mine[0].at == NOW + timedelta(microseconds=1) and mine[0].detail == {"mode": "normal", "note": "é"}
    assert audit.for_patient(TEST_INS, after_seq=1) == [stored[2]]
    assert audit.for_patient(TEST_INS, limit=1) == [stored[0]]
    assert [e.ins for e in audit.for_patient(OTHER_INS)] == [OTHER_INS]
    assert audit.entries(after_seq=1, limit=1) == [stored[1]]
    assert verify_trail(audit, page=2).checked == 3


def test_an_idempotency_key_is_appended_once(audit: AuditTrail) -> None:
    [first] = audit.append([event(1, key="read:doc-1:req-1")])
    again = audit.append([event(2, key="read:doc-1:req-1"), event(3), event(4, key="k2"), event(5, key="k2")])
    assert again[0] == first and again[1].seq == 2 and again[2].seq == 3 and again[3] == again[2]
    assert audit.head()[0] == 3 and verify_trail(audit).ok


def test_concurrent_appenders_get_contiguous_seqs_and_a_valid_chain(audit: AuditTrail) -> None:
    def writer(worker: int) -> list[int]:
        return [audit.append([event(worker * 100 + i)])[0].seq for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        seqs = [s for batch in pool.map(writer, range(8)) for s in batch]
    assert sorted(seqs) == list(range(1, 321))
    result = verify_trail(audit, page=64)
    assert result.ok and result.checked == 320 and audit.head()[0] == 320


def test_concurrent_appends_of_one_key_store_one_entry(audit: AuditTrail) -> None:
    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda n: audit.append([event(n, key="first_access:810000000001")])[0], range(8)))
    assert len({e.seq for e in stored}) == 1 and audit.head()[0] == 1


@pytest.mark.parametrize("tamper", [
    "UPDATE audit_trail SET actor_id = '810000000999' WHERE seq = 3",
    "UPDATE audit_trail SET detail = '{\"mode\":\"bris_de_glace\"}' WHERE seq = 3",
    "UPDATE audit_trail SET detail = 'not json' WHERE seq = 3",
    "UPDATE audit_trail SET ins = '199999999999999' WHERE seq = 3",
])
def test_a_row_changed_in_sql_is_named_by_its_seq(sql_audit: SqlAuditTrail, sql_index: SqlIndex, tamper: str) -> None:
    sql_audit.append([event(n) for n in range(5)])
    raw(sql_index, tamper)
    result = verify_trail(sql_audit)
    assert not result.ok and result.broken_seq == 3 and result.checked == 2
    assert "entry 3" in str(result)


def test_a_deleted_middle_row_is_detected(sql_audit: SqlAuditTrail, sql_index: SqlIndex) -> None:
    sql_audit.append([event(n) for n in range(5)])
    raw(sql_index, "DELETE FROM audit_trail WHERE seq = 3")
    result = verify_trail(sql_audit)
    assert not result.ok and result.broken_seq == 3 and "missing" in result.reason


def test_a_deleted_last_row_is_detected(sql_audit: SqlAuditTrail, sql_index: SqlIndex) -> None:
    sql_audit.append([event(n) for n in range(5)])
    raw(sql_index, "DELETE FROM audit_trail WHERE seq = 5")
    result = verify_trail(sql_audit)
    assert not result.ok and result.broken_seq == 5 and "missing" in result.reason


def test_an_entry_changed_or_deleted_in_memory_is_named_by_its_seq() -> None:
    audit = MemoryAuditTrail.beside(MemoryIndex())
    audit.append([event(n) for n in range(5)])
    audit.rows[2] = replace(audit.rows[2], actor_id="810000000999")
    result = verify_trail(audit)
    assert not result.ok and result.broken_seq == 3 and result.checked == 2
    del audit.rows[2]
    result = verify_trail(audit)
    assert not result.ok and result.broken_seq == 3 and "missing" in result.reason


def test_a_purge_removes_the_bodies_and_keeps_the_chain(audit: AuditTrail) -> None:
    stored = audit.append([event(1), event(2, ins=OTHER_INS, key="k"), event(3, ins=OTHER_INS), event(4)])
    assert audit.redact(OTHER_INS) == 2
    assert audit.redact(OTHER_INS) == 0 and audit.redact("") == 0
    assert audit.for_patient(OTHER_INS) == []
    purged = audit.entries()[1]
    assert purged.redacted and purged.seq == 2 and purged.ins == "" and purged.detail == {} and purged.key == ""
    assert purged.body_sha256 == stored[1].body_sha256 and purged.entry_hash == stored[1].entry_hash
    assert purged.action == "read" and purged.at == stored[1].at
    assert audit.for_patient(TEST_INS) == [stored[0], stored[3]]
    assert verify_trail(audit).ok and verify_trail(audit).checked == 4
    assert audit.append([event(5)])[0].seq == 5 and verify_trail(audit).ok


def test_for_patient_never_returns_another_patients_entries(audit: AuditTrail) -> None:
    audit.append([event(n, ins=TEST_INS if n % 3 else OTHER_INS) for n in range(30)])
    assert all(e.ins == TEST_INS for e in audit.for_patient(TEST_INS))
    assert all(e.ins == OTHER_INS for e in audit.for_patient(OTHER_INS))
    assert len(audit.for_patient(TEST_INS)) == 20 and audit.for_patient("") == []
