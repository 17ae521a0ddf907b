"""The `opened` status (issue 12) on both index back ends: stored beside the older statuses in the same
columns (no CHECK to extend: status is a plain String(16) in `profiles` and `patients`), so a database made
before it keeps working: its `active` rows stay `active`, and a profile opened by the sweep is `opened` in
both tables.  The contact table is created beside an existing database and round-trips a change (on every
back end, memory included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from hub.records import PatientRecord, PatientStatus
from storage.memory.index import MemoryIndex
from storage.memory.notifications import MemoryNotifications
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications
from storage.sql.profiles import SqlProfiles, profiles
from tests.builders import TEST_INS, TEST_OID, with_key
from tests.contract.conftest import beside

S = PatientStatus
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
OLD_ACTIVE = with_key("1850799123456")


def test_old_active_rows_stay_active_and_opened_round_trips(sql_index: SqlIndex) -> None:
    store = SqlProfiles.beside(sql_index)
    sql_index.upsert_patients([PatientRecord(ins=i, oid=TEST_OID) for i in (TEST_INS, OLD_ACTIVE)])
    store.register(OLD_ACTIVE, code_sha256="", vitale_sha256="", created_at=NOW, expires_at=None,
                   status=S.ACTIVE, values={"activated_at": NOW})
    store.register(TEST_INS, code_sha256="c" * 64, vitale_sha256="", created_at=NOW, expires_at=NOW)
    SqlProfiles.beside(sql_index)  # a restart on the existing database: create_all changes nothing
    opened = store.transition(TEST_INS, from_statuses=(S.CREATED,), to_status=S.OPENED,
                              values={"activated_at": NOW, "code_sha256": ""})
    assert opened is not None and opened.status is S.OPENED
    with sql_index.engine.connect() as conn:
        stored = dict(conn.execute(sa.select(profiles.c.ins, profiles.c.status)).all())
    assert stored == {TEST_INS: "opened", OLD_ACTIVE: "active"}
    assert store.statuses([TEST_INS, OLD_ACTIVE]) == {TEST_INS: S.OPENED, OLD_ACTIVE: S.ACTIVE}
    assert [p.status for p in (sql_index.patient(TEST_INS), sql_index.patient(OLD_ACTIVE)) if p] == [S.OPENED, S.ACTIVE]
    assert store.due_auto_open(NOW + timedelta(days=1)) == []  # opened is never opened again


def test_a_contact_change_waits_for_its_code(index: MemoryIndex | SqlIndex) -> None:
    notes = beside(index, MemoryNotifications, SqlNotifications)
    assert notes.contact(TEST_INS) is None
    notes.set_contact(TEST_INS, email="a@example.org", phone="")
    pending = notes.set_pending_contact(TEST_INS, email="b@example.org", phone="+33612345678", code_sha256="d" * 64,
                                        expires=NOW)
    assert (pending.email, pending.pending_email, pending.pending_phone) == ("a@example.org", "b@example.org",
                                                                              "+33612345678")
    assert notes.count_contact_attempt(TEST_INS, seen=0, drop=False)
    assert not notes.count_contact_attempt(TEST_INS, seen=0, drop=False)  # compare-and-set
    assert notes.confirm_contact(TEST_INS, code_sha256="e" * 64) is None
    done = notes.confirm_contact(TEST_INS, code_sha256="d" * 64)
    assert done is not None and (done.email, done.phone, done.pending_sha256) == ("b@example.org", "+33612345678", "")
    assert notes.confirm_contact(TEST_INS, code_sha256="d" * 64) is None  # once
