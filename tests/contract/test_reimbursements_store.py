"""The reimbursement holding store on every back end (memory, SQLite, PostgreSQL): same expectations."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hub.envelope import BlobRef
from pipelines.insurer.core.history import ActKind, HeldDocument, ReimbursedAct, ReimbursementHolds
from storage.memory.index import MemoryIndex
from storage.memory.reimbursements import MemoryReimbursements
from storage.sql.index import SqlIndex
from storage.sql.reimbursements import SqlReimbursements
from tests.builders import TEST_INS, TEST_OID, with_key
from tests.contract.conftest import beside

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OTHER_INS = with_key("1850175123456")


@pytest.fixture
def store(index: MemoryIndex | SqlIndex) -> Iterator[ReimbursementHolds]:
    yield beside(index, MemoryReimbursements, SqlReimbursements)


def act(ref: str, ins: str = TEST_INS, **changes: object) -> ReimbursedAct:
    base = ReimbursedAct(act_ref=ref, ins=ins, ins_oid=TEST_OID, care_date="2026-11-20", kind=ActKind.NGAP,
                         code="G", label="CONSULTATION", quantity=1, paid_cents=3000, reimbursed_cents=2100)
    return replace(base, **changes)  # type: ignore[arg-type]


def document(key: str, ins: str = TEST_INS, at: datetime = NOW) -> HeldDocument:
    return HeldDocument(document_key=key, ins=ins, blob=BlobRef("b", f"cda/aa/{key}", "a" * 64, 10), received_at=at)


def test_acts_are_held_once_per_reference(store: ReimbursementHolds) -> None:
    assert store.hold_acts("B1", [act("A1"), act("A2", kind=ActKind.CIP13, code="3400935673220")],
                           received_at=NOW) == 2
    assert store.hold_acts("B1", [act("A1"), act("A2")], received_at=NOW + timedelta(hours=1)) == 0  # re-delivery
    assert store.hold_acts("B2", [act("A2"), act("A3")], received_at=NOW + timedelta(hours=2)) == 1  # overlap
    held = store.pending_acts(TEST_INS)
    assert [(h.act.act_ref, h.batch_id) for h in held] == [("A1", "B1"), ("A2", "B1"), ("A3", "B2")]
    assert held[1].act.kind is ActKind.CIP13 and held[1].act.code == "3400935673220"  # the first copy is kept
    assert held[0].received_at == NOW and held[0].filed_submission is None
    assert store.hold_acts("B3", [], received_at=NOW) == 0


def test_a_large_batch_is_held_in_one_call(store: ReimbursementHolds) -> None:
    acts = [act(f"A{n:05d}") for n in range(1234)]
    assert store.hold_acts("BIG", acts, received_at=NOW) == 1234
    assert len(store.pending_acts(TEST_INS)) == 1234
    assert store.mark_filed("s-1", act_refs=[a.act_ref for a in acts]) == 1234
    assert store.pending_acts(TEST_INS) == []


def test_concurrent_deliveries_of_one_batch_hold_each_act_once(store: ReimbursementHolds) -> None:
    acts = [act(f"C{n}") for n in range(50)]
    with ThreadPoolExecutor(4) as pool:
        added = list(pool.map(lambda _: store.hold_acts("B", acts, received_at=NOW), range(4)))
    assert sum(added) == 50 and len(store.pending_acts(TEST_INS)) == 50


def test_documents_are_held_once_per_cda_id(store: ReimbursementHolds) -> None:
    assert store.hold_document(document("1.2.3^d1")) is True
    assert store.hold_document(document("1.2.3^d1", at=NOW + timedelta(days=1))) is False
    [held] = store.pending_documents(TEST_INS)
    assert held.document_key == "1.2.3^d1" and held.received_at == NOW and held.blob.sha256 == "a" * 64
    found = store.held_document("1.2.3^d1")
    assert found is not None and found.blob == held.blob


def test_pending_patients_pages_through_acts_and_documents(store: ReimbursementHolds) -> None:
    store.hold_acts("B", [act("A1"), act("A2", ins=OTHER_INS)], received_at=NOW)
    store.hold_document(document("1.2.3^d1", ins=OTHER_INS))
    third = with_key("2991299123456")
    store.hold_document(document("1.2.3^d2", ins=third))
    everyone = sorted({TEST_INS, OTHER_INS, third})
    assert store.pending_patients(10) == everyone
    assert store.pending_patients(2) == everyone[:2]
    assert store.pending_patients(2, after=everyone[1]) == everyone[2:]
    store.mark_filed("s-1", act_refs=["A1"])
    assert TEST_INS not in store.pending_patients(10)


def test_mark_filed_keeps_the_first_submission(store: ReimbursementHolds) -> None:
    store.hold_acts("B", [act("A1"), act("A2")], received_at=NOW)
    store.hold_document(document("1.2.3^d1"))
    assert store.mark_filed("s-1", act_refs=["A1"], document_keys=["1.2.3^d1"]) == 2
    assert store.mark_filed("s-2", act_refs=["A1", "A2"], document_keys=["1.2.3^d1"]) == 1
    first, second = store.held_act("A1"), store.held_act("A2")
    assert first is not None and first.filed_submission == "s-1"
    assert second is not None and second.filed_submission == "s-2"
    held = store.held_document("1.2.3^d1")
    assert held is not None and held.filed_submission == "s-1"
    assert store.pending_documents(TEST_INS) == [] and store.pending_acts(TEST_INS) == []
    assert store.held_act("nope") is None and store.held_document("nope") is None


def test_beside_is_idempotent(index: MemoryIndex | SqlIndex) -> None:
    beside(index, MemoryReimbursements, SqlReimbursements).hold_acts("B", [act("A1")], received_at=NOW)
    assert len(beside(index, MemoryReimbursements, SqlReimbursements).pending_acts(TEST_INS)) == 1
