"""The profile store on every back end (memory, SQLite, PostgreSQL): same expectations.
Transitions move patients.status in the same transaction; of concurrent requests exactly one wins."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from hub.errors import IndexUnavailable
from hub.ports import Index
from hub.records import PatientRecord, PatientStatus
from pipelines.record.core.profile import Activation, LifecycleStore, Profile
from storage.memory.index import MemoryIndex
from storage.memory.notifications import MemoryNotifications
from storage.memory.profiles import MemoryProfiles
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications
from storage.sql.profiles import SqlProfiles
from tests.builders import TEST_INS, TEST_OID, with_key
from tests.contract.conftest import beside

S = PatientStatus
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SIX_WEEKS = timedelta(weeks=6)
CODE = "c" * 64


@pytest.fixture
def profiles(index: MemoryIndex | SqlIndex) -> Iterator[LifecycleStore]:
    yield beside(index, MemoryProfiles, SqlProfiles)


@pytest.fixture
def sql_profiles(sql_index: SqlIndex) -> Iterator[SqlProfiles]:
    yield SqlProfiles.beside(sql_index)


def patient(index: Index, ins: str = TEST_INS, *, status: PatientStatus = S.CREATED,
            born: str = "1979-03-01") -> None:
    index.upsert_patients([PatientRecord(ins=ins, oid=TEST_OID, birth_date=born, status=status)])


def registered(index: Index, profiles: LifecycleStore, ins: str = TEST_INS) -> Profile:
    patient(index, ins)
    profile = profiles.register(ins, code_sha256=CODE, vitale_sha256="v" * 64, created_at=NOW,
                                expires_at=NOW + SIX_WEEKS)
    assert profile is not None
    return profile


def registry_status(index: Index, ins: str = TEST_INS) -> PatientStatus | None:
    record = index.patient(ins)
    return record.status if record else None


def test_register_inserts_once_and_sets_the_registry_status(index: Index, profiles: LifecycleStore) -> None:
    patient(index, status=S.ACTIVE)  # what a roster said; the new profile's status is written with it
    first = profiles.register(TEST_INS, code_sha256=CODE, vitale_sha256="", created_at=NOW, expires_at=NOW + SIX_WEEKS)
    assert first is not None and first.status is S.CREATED and first.code_generation == 1
    assert first.created_at == NOW and first.code_expires_at == NOW + SIX_WEEKS and first.code_sha256 == CODE
    assert registry_status(index) is S.CREATED
    assert profiles.register(TEST_INS, code_sha256="d" * 64, vitale_sha256="", created_at=NOW,
                             expires_at=None) is None
    assert profiles.profile(TEST_INS) == first
    assert profiles.profile("1" * 15) is None


def test_register_other_states_and_replace_a_purged_profile(index: Index, profiles: LifecycleStore) -> None:
    patient(index, status=S.CLOSED)
    closed = profiles.register(TEST_INS, code_sha256="", vitale_sha256="", created_at=NOW, expires_at=None,
                               status=S.CLOSED, values={"closed_at": NOW, "purge_after": NOW + timedelta(1)})
    assert closed is not None and closed.code_generation == 0 and closed.purge_after == NOW + timedelta(1)
    assert profiles.statuses([TEST_INS, "1" * 15]) == {TEST_INS: S.CLOSED}
    assert profiles.mark_purged(TEST_INS, NOW + timedelta(2)) is not None
    assert profiles.mark_purged(TEST_INS, NOW + timedelta(3)) is None  # once
    assert profiles.statuses([TEST_INS]) == {}  # a purged profile no longer decides the status
    again = profiles.register(TEST_INS, code_sha256=CODE, vitale_sha256="", created_at=NOW + timedelta(9),
                              expires_at=NOW + timedelta(51))
    assert again is not None and again.status is S.CREATED and again.purged_at is None and again.closed_at is None
    assert registry_status(index) is S.CREATED


def test_a_transition_moves_the_registry_status_with_the_profile(index: Index, profiles: LifecycleStore) -> None:
    registered(index, profiles)
    opened = profiles.transition(TEST_INS, from_statuses=(S.CREATED,), to_status=S.ACTIVE,
                                 values={"activated_at": NOW, "activation": Activation.CODE, "code_sha256": ""})
    assert opened is not None and opened.status is S.ACTIVE and opened.activation is Activation.CODE
    assert opened.activated_at == NOW and not opened.code_pending
    assert registry_status(index) is S.ACTIVE
    assert profiles.transition(TEST_INS, from_statuses=(S.CREATED,), to_status=S.OPPOSED, values={}) is None
    assert registry_status(index) is S.ACTIVE  # a lost condition changes nothing
    with pytest.raises(ValueError):
        profiles.transition(TEST_INS, from_statuses=(S.ACTIVE,), to_status=S.CLOSED, values={"nope": 1})


def test_the_profile_and_the_registry_commit_or_roll_back_together(sql_index: SqlIndex,
                                                                     sql_profiles: SqlProfiles) -> None:
    profiles = sql_profiles
    registered(sql_index, profiles)

    def fail_on_registry(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE PATIENTS"):
            raise sa.exc.OperationalError(statement, {}, Exception("injected"))

    sa.event.listen(sql_index.engine, "before_cursor_execute", fail_on_registry)
    try:
        with pytest.raises(IndexUnavailable):
            profiles.transition(TEST_INS, from_statuses=(S.CREATED,), to_status=S.CLOSED, values={"closed_at": NOW})
    finally:
        sa.event.remove(sql_index.engine, "before_cursor_execute", fail_on_registry)
    after = profiles.profile(TEST_INS)
    assert after is not None and after.status is S.CREATED and after.closed_at is None
    assert registry_status(sql_index) is S.CREATED


def test_of_eight_concurrent_activations_exactly_one_wins(index: Index, profiles: LifecycleStore) -> None:
    registered(index, profiles)

    def activate(_: int) -> Profile | None:
        return profiles.transition(TEST_INS, from_statuses=(S.CREATED, S.OPPOSED, S.ACTIVE), to_status=S.ACTIVE,
                                   values={"activated_at": NOW, "activation": Activation.CODE, "code_sha256": ""},
                                   where={"code_sha256": CODE})

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(activate, range(8)))
    assert len([o for o in outcomes if o is not None]) == 1
    assert registry_status(index) is S.ACTIVE


def test_wrong_attempts_are_counted_by_compare_and_set(index: Index, profiles: LifecycleStore) -> None:
    registered(index, profiles)
    with ThreadPoolExecutor(8) as pool:
        same_view = list(pool.map(lambda _: profiles.record_failure(TEST_INS, now=NOW, seen=0, locked_until=None),
                                  range(8)))
    assert len([p for p in same_view if p is not None]) == 1  # the others must read again

    def count_one(_: int) -> None:
        while True:
            seen = profiles.profile(TEST_INS)
            assert seen is not None
            if profiles.record_failure(TEST_INS, now=NOW, seen=seen.failed_attempts, locked_until=None):
                return

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(count_one, range(8)))
    locked = profiles.record_failure(TEST_INS, now=NOW, seen=9, locked_until=NOW + timedelta(minutes=15))
    assert locked is not None and locked.failed_attempts == 10 and locked.locked_until == NOW + timedelta(minutes=15)


def test_reissue_counts_generations_and_keeps_the_status(index: Index, profiles: LifecycleStore) -> None:
    registered(index, profiles)
    issued = profiles.reissue(TEST_INS, code_sha256="d" * 64, expires_at=NOW + timedelta(weeks=7),
                              from_statuses=(S.CREATED,), now=NOW)
    assert issued is not None and issued.code_generation == 2 and issued.code_sha256 == "d" * 64
    assert issued.status is S.CREATED and issued.code_expires_at == NOW + timedelta(weeks=7)
    assert profiles.reissue(TEST_INS, code_sha256="e" * 64, expires_at=NOW, from_statuses=(S.OPPOSED,),
                            now=NOW) is None
    profiles.mark_announced(TEST_INS, 2)
    profiles.mark_announced(TEST_INS, 1)  # never goes back
    profiles.set_vitale(TEST_INS, "w" * 64)
    after = profiles.profile(TEST_INS)
    assert after is not None and after.announced_generation == 2 and after.vitale_sha256 == "w" * 64


def test_due_lists_at_their_exact_boundaries(index: Index, profiles: LifecycleStore) -> None:
    registered(index, profiles)
    other = with_key("1850799123456")
    registered(index, profiles, other)
    profiles.transition(other, from_statuses=(S.CREATED,), to_status=S.CLOSED,
                        values={"closed_at": NOW, "purge_after": NOW + timedelta(days=3650)})
    assert profiles.due_auto_open(NOW + SIX_WEEKS - timedelta(microseconds=1)) == []
    assert [p.ins for p in profiles.due_auto_open(NOW + SIX_WEEKS)] == [TEST_INS]
    assert profiles.due_purge(NOW + timedelta(days=3650) - timedelta(microseconds=1)) == []
    assert [p.ins for p in profiles.due_purge(NOW + timedelta(days=3650))] == [other]
    profiles.mark_purged(other, NOW + timedelta(days=3650))
    assert profiles.due_purge(NOW + timedelta(days=4000)) == []


def test_minors_turning_adult_come_from_the_represented_only(index: Index, profiles: LifecycleStore) -> None:
    reps = beside(index, MemoryNotifications, SqlNotifications)
    minor, older, unrepresented, parent = (with_key(n) for n in (
        "2080675123456", "2070675123456", "1080675123456", "1790399123456"))
    patient(index, minor, born="2008-06-15")
    patient(index, older, born="2007-01-01")
    patient(index, unrepresented, born="2008-06-15")
    patient(index, parent, born="1979-03-01")
    patient(index, with_key("2100675123456"), born="")  # no birth date: never found
    reps.set_representatives(minor, [parent])
    reps.set_representatives(older, [parent, TEST_INS])
    reps.set_representatives(with_key("2100675123456"), [parent])
    assert profiles.minors_turning_adult("2008-06-14") == [(older, "2007-01-01")]
    found = profiles.minors_turning_adult("2008-06-15")
    assert sorted(found) == sorted([(minor, "2008-06-15"), (older, "2007-01-01")])
    first = profiles.minors_turning_adult("2008-06-15", limit=1)
    assert len(first) == 1
    assert profiles.minors_turning_adult("2008-06-15", limit=5, after=first[0][0]) == [
        f for f in found if f[0] > first[0][0]]


def test_sync_status_puts_the_profile_status_back_after_a_roster_upsert(index: Index,
                                                                      profiles: LifecycleStore) -> None:
    registered(index, profiles)
    profiles.transition(TEST_INS, from_statuses=(S.CREATED,), to_status=S.OPPOSED, values={"opposed_at": NOW})
    newcomer = with_key("1850799123456")
    patient(index, TEST_INS, status=S.CREATED)  # the roster still says created
    patient(index, newcomer, status=S.ACTIVE)   # no profile: left alone
    assert profiles.sync_status([TEST_INS, newcomer]) == 1
    assert registry_status(index) is S.OPPOSED and registry_status(index, newcomer) is S.ACTIVE
    assert profiles.sync_status([TEST_INS, newcomer]) == 0
