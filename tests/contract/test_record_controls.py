"""The record controls store on every back end (memory, SQLite, PostgreSQL): same expectations."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from hub.access import NO_FLAGS, DocumentFlags, PatientControls, RecordControls
from storage.memory.controls import MemoryRecordControls
from storage.memory.index import MemoryIndex
from storage.sql.controls import SqlRecordControls
from storage.sql.index import SqlIndex
from tests.builders import TEST_INS
from tests.contract.conftest import beside

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
OTHER_INS = "180012B01234578"
PS_A, PS_B = "810001234567", "810009876543"


@pytest.fixture
def store(index: MemoryIndex | SqlIndex) -> Iterator[RecordControls]:
    yield beside(index, MemoryRecordControls, SqlRecordControls)


def test_it_is_the_record_controls_port(store: RecordControls) -> None:
    port: RecordControls = store
    assert port.flags([]) == {}


def test_documents_without_flags_have_none_set(store: RecordControls) -> None:
    assert store.flags(["d1", "d2", "d1"]) == {"d1": NO_FLAGS, "d2": NO_FLAGS}


def test_flags_are_set_and_cleared_one_by_one(store: RecordControls) -> None:
    # Given a document the patient masks, then hides from representatives, and its author lifts INVISIBLE_PATIENT
    store.set_flag("d1", TEST_INS, "masked_by_patient", True, by=TEST_INS, at=NOW)
    store.set_flag("d1", TEST_INS, "hidden_from_representatives", True, by=TEST_INS, at=NOW)
    store.set_flag("d1", TEST_INS, "invisible_lifted", True, by=PS_A, at=LATER)
    flags = store.flags(["d1"])["d1"]
    assert (flags.masked_by_patient, flags.hidden_from_representatives, flags.invisible_lifted, flags.deleted) == (
        True, True, True, False)
    assert flags.updated_at == LATER
    # When the patient unmasks it, Then only that flag changes
    store.set_flag("d1", TEST_INS, "masked_by_patient", False, by=TEST_INS, at=LATER)
    assert store.flags(["d1", "d2"]) == {
        "d1": DocumentFlags(hidden_from_representatives=True, invisible_lifted=True, updated_at=LATER),
        "d2": NO_FLAGS}


def test_an_unknown_flag_is_refused(store: RecordControls) -> None:
    with pytest.raises(ValueError, match="unknown document flag 'deleted'"):
        store.set_flag("d1", TEST_INS, "deleted", True, by=TEST_INS, at=NOW)


def test_delete_keeps_the_first_deletion(store: RecordControls) -> None:
    assert store.delete("d1", TEST_INS, by=PS_A, at=NOW) is True
    assert store.delete("d1", TEST_INS, by=PS_B, at=LATER) is False
    flags = store.flags(["d1"])["d1"]
    assert (flags.deleted, flags.deleted_at, flags.deleted_by) == (True, NOW, PS_A)


def test_a_flagged_document_can_be_deleted_and_stays_deleted(store: RecordControls) -> None:
    store.set_flag("d1", TEST_INS, "masked_by_patient", True, by=TEST_INS, at=NOW)
    assert store.delete("d1", TEST_INS, by=PS_A, at=LATER) is True
    store.set_flag("d1", TEST_INS, "masked_by_patient", False, by=TEST_INS, at=LATER)
    flags = store.flags(["d1"])["d1"]
    assert flags.deleted and flags.deleted_by == PS_A and not flags.masked_by_patient


def test_many_documents_are_read_in_chunks(store: RecordControls) -> None:
    ids = [f"doc-{n}" for n in range(1200)]
    for n in (0, 499, 500, 1199):
        store.set_flag(ids[n], TEST_INS, "hidden_from_representatives", True, by=TEST_INS, at=NOW)
    flags = store.flags(ids)
    assert len(flags) == 1200
    assert sorted(d for d, f in flags.items() if f.hidden_from_representatives) == sorted(
        ids[n] for n in (0, 499, 500, 1199))


def test_emergency_settings_default_to_allowed_and_change_one_at_a_time(store: RecordControls) -> None:
    assert store.controls(TEST_INS) == PatientControls()
    store.set_emergency(TEST_INS, bris_de_glace=False, regulation=None)
    assert store.controls(TEST_INS) == PatientControls(bris_de_glace_allowed=False, regulation_allowed=True)
    store.set_emergency(TEST_INS, bris_de_glace=None, regulation=False)
    assert store.controls(TEST_INS) == PatientControls(bris_de_glace_allowed=False, regulation_allowed=False)
    store.set_emergency(TEST_INS, bris_de_glace=True, regulation=None)
    store.set_emergency(TEST_INS, bris_de_glace=None, regulation=None)  # nothing to change
    assert store.controls(TEST_INS) == PatientControls(bris_de_glace_allowed=True, regulation_allowed=False)
    assert store.controls(OTHER_INS) == PatientControls()  # another patient's settings are their own


def test_blocking_is_per_patient_and_idempotent(store: RecordControls) -> None:
    store.block(TEST_INS, PS_A)
    store.block(TEST_INS, PS_A)
    store.block(TEST_INS, PS_B)
    store.block(OTHER_INS, PS_B)
    assert store.controls(TEST_INS).blocked == frozenset({PS_A, PS_B})
    store.unblock(TEST_INS, PS_B)
    store.unblock(TEST_INS, PS_B)
    assert store.controls(TEST_INS).blocked == frozenset({PS_A})
    assert store.controls(OTHER_INS).blocked == frozenset({PS_B})


def test_a_first_access_is_noted_once(store: RecordControls) -> None:
    assert store.note_access(TEST_INS, PS_A, NOW) is True
    assert store.note_access(TEST_INS, PS_A, LATER) is False
    assert store.note_access(OTHER_INS, PS_A, LATER) is True  # another record
    assert store.first_access(TEST_INS, PS_A) == NOW
    assert store.first_access(TEST_INS, PS_B) is None


def test_of_concurrent_first_accesses_exactly_one_is_first(store: RecordControls) -> None:
    with ThreadPoolExecutor(8) as pool:
        firsts = list(pool.map(lambda n: store.note_access(TEST_INS, PS_B, NOW + timedelta(seconds=n)), range(8)))
    assert firsts.count(True) == 1


def test_beside_is_idempotent(index: MemoryIndex | SqlIndex, store: RecordControls) -> None:
    store.block(TEST_INS, PS_A)
    again = beside(index, MemoryRecordControls, SqlRecordControls)
    assert again.controls(TEST_INS).blocked == frozenset({PS_A})
