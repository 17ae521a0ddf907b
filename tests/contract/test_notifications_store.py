"""The notice store on every back end (memory, SQLite, PostgreSQL): same expectations."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hub.notices import Channel, EventKind, LetterBatch, Notice, NoticeState, Preferences
from pipelines.notify.core.policy import notice_id
from pipelines.notify.ports import NotificationStore, Reachable, Settings
from storage.memory.index import MemoryIndex
from storage.memory.notifications import MemoryNotifications
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications
from tests.builders import TEST_INS
from tests.contract.conftest import beside

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(index: MemoryIndex | SqlIndex) -> Iterator[NotificationStore]:
    yield beside(index, MemoryNotifications, SqlNotifications)


def notice(event: str, channel: Channel = Channel.EMAIL, *, due: datetime = NOW, address: str = "a@example.org",
           kind: EventKind = EventKind.NEW_DOCUMENT) -> Notice:
    return Notice(notice_id=notice_id(event, channel, TEST_INS, address), event_id=event, kind=kind, ins=TEST_INS,
                  about_ins=TEST_INS, channel=channel, address=address, state=NoticeState.QUEUED, created_at=NOW,
                  due_at=due)


def test_a_notice_is_stored_once_however_often_its_event_is_announced(store: NotificationStore) -> None:
    first = store.add([notice("document:1"), notice("document:1", Channel.INAPP, address="")])
    again = store.add([notice("document:1"), notice("document:1", Channel.INAPP, address="")])
    assert [n.notice_id for n in first] == [n.notice_id for n in again]
    assert len(store.for_patient(TEST_INS)) == 2
    assert store.add([]) == []


def test_only_one_worker_claims_a_due_notice(store: NotificationStore) -> None:
    [stored] = store.add([notice("document:2")])
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: store.claim(stored.notice_id, now=NOW, lease_s=60), range(8)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].attempts == 1
    assert store.claim(stored.notice_id, now=NOW + timedelta(seconds=61), lease_s=60) is not None  # lease over
    store.finish([stored.notice_id], NoticeState.SENT, at=NOW, provider_ref="<x@y>")
    assert store.claim(stored.notice_id, now=NOW + timedelta(hours=1), lease_s=60) is None  # final


def test_a_notice_is_not_claimed_before_it_is_due_and_release_keeps_it_queued(store: NotificationStore) -> None:
    [stored] = store.add([notice("document:3", due=NOW + timedelta(hours=8))])
    assert store.claim(stored.notice_id, now=NOW, lease_s=60) is None
    assert store.claim(stored.notice_id, now=NOW + timedelta(hours=8), lease_s=60) is not None
    store.release(stored.notice_id, error="smtp 451 4.3.0")
    again = store.notice(stored.notice_id)
    assert again is not None and again.state is NoticeState.QUEUED and again.last_error == "smtp 451 4.3.0"
    assert store.claim(stored.notice_id, now=NOW + timedelta(hours=8), lease_s=60) is not None


def test_digest_group_takes_the_queued_notices_of_the_same_address_and_kind(store: NotificationStore) -> None:
    rows = store.add([notice(f"document:{n}") for n in range(4)] + [notice("document:x", address="b@example.org"),
                                                                    notice("message:1", kind=EventKind.NEW_MESSAGE),
                                                                    notice("document:later", due=NOW + timedelta(1))])
    group = store.digest_group(rows[0], due_before=NOW)
    assert sorted(n.event_id for n in group) == ["document:1", "document:2", "document:3"]


def test_stream_cursor_and_read_marks(store: NotificationStore) -> None:
    rows = store.add([notice(f"document:{n}", Channel.INAPP, address="") for n in range(3)])
    assert [n.seq for n in store.for_patient(TEST_INS, after_seq=rows[0].seq)] == [rows[1].seq, rows[2].seq]
    assert [n.seq for n in store.for_patient(TEST_INS)] == [rows[2].seq, rows[1].seq, rows[0].seq]
    read = store.mark_read(TEST_INS, rows[1].notice_id, at=NOW)
    assert read is not None and read.read_at == NOW
    assert store.mark_read("999999999999999", rows[1].notice_id, at=NOW) is None  # not someone else's


def test_provider_reports_and_letter_batches(store: NotificationStore) -> None:
    [sms, letter] = store.add([notice("code:1", Channel.SMS, address="+33600000000", kind=EventKind.ONE_TIME_CODE),
                               notice("document:9", Channel.POSTAL, address="1 rue; 75000 PARIS")])
    store.finish([sms.notice_id], NoticeState.SENT, at=NOW, provider_ref="prov-1")
    assert store.set_state("prov-1", NoticeState.DELIVERED, at=NOW) == 1
    assert store.set_state("unknown", NoticeState.DELIVERED, at=NOW) == 0
    assert [n.notice_id for n in store.queued_letters(due_before=NOW)] == [letter.notice_id]
    batch = LetterBatch(batch_id="b-1", period="2026-12", created_at=NOW, letters=1, bucket="meshub",
                        pdf_key="letters/ab/cd", sha256="0" * 64, size=10)
    store.record_batch(batch, [letter.notice_id])
    store.record_batch(batch, [letter.notice_id])  # a retried run changes nothing
    assert store.batches() == [batch]
    printed = store.notice(letter.notice_id)
    assert printed is not None and printed.state is NoticeState.SENT and printed.batch_id == "b-1"
    assert store.queued_letters(due_before=NOW) == []


def test_preferences_devices_and_representatives(store: NotificationStore) -> None:
    assert store.preferences(TEST_INS) == Preferences()
    store.set_preferences(TEST_INS, replace(Preferences(), email=False, quiet_hours=""))
    assert store.preferences(TEST_INS).email is False
    store.add_device(TEST_INS, "https://push.example/1")
    store.add_device(TEST_INS, "https://push.example/1")
    assert store.devices(TEST_INS) == ["https://push.example/1"]
    store.set_representatives(TEST_INS, ["111111111111111", "222222222222222"])
    store.set_representatives(TEST_INS, ["222222222222222"])
    assert store.representatives(TEST_INS) == ["222222222222222"]


def test_reach_reads_a_patient_and_their_representatives_at_once(store: NotificationStore) -> None:
    rep_a, rep_b = "111111111111111", "222222222222222"
    # Given nothing stored, Then the defaults, and no representative
    assert store.reach(TEST_INS) == Reachable(own=Settings(ins=TEST_INS))
    # Given settings for the patient and for one of two representatives
    store.set_preferences(TEST_INS, replace(Preferences(), push=False, quiet_hours=""))
    store.add_device(TEST_INS, "https://push.example/1")
    store.add_device(TEST_INS, "https://push.example/2")
    store.set_contact(TEST_INS, email="moi@example.org", phone="")
    store.set_representatives(TEST_INS, [rep_b, rep_a])
    store.set_contact(rep_b, email="", phone="+33600000000")
    [sent, _queued] = store.add([notice("document:r1"), notice("document:r2")])
    store.finish([sent.notice_id], NoticeState.SENT, at=NOW, provider_ref="<x@y>")
    later = store.add([replace(notice("document:r3", Channel.SMS, address="+33600000000"), ins=rep_b)])
    store.finish([later[0].notice_id], NoticeState.SENT, at=NOW + timedelta(hours=1))  # not an e-mail
    # When reached, Then as the single reads say, representatives sorted
    reached = store.reach(TEST_INS)
    assert reached.own == Settings(ins=TEST_INS, email="moi@example.org", phone="",
                                   preferences=store.preferences(TEST_INS),
                                   devices=("https://push.example/1", "https://push.example/2"), last_email_at=NOW)
    assert reached.own.devices == tuple(store.devices(TEST_INS))
    assert reached.own.last_email_at == store.last_sent(TEST_INS, Channel.EMAIL)
    assert reached.representatives == (Settings(ins=rep_a), Settings(ins=rep_b, phone="+33600000000"))
    assert store.reach(rep_b) == Reachable(own=Settings(ins=rep_b, phone="+33600000000"))


def test_claim_hands_back_the_claimed_row(store: NotificationStore) -> None:
    [stored] = store.add([notice("document:c1")])
    claimed = store.claim(stored.notice_id, now=NOW, lease_s=60)
    assert claimed is not None and claimed.attempts == 1 and claimed.state is NoticeState.QUEUED
    assert replace(claimed, attempts=0) == stored
    assert store.claim("n-unknown", now=NOW, lease_s=60) is None


def test_add_returns_new_and_existing_rows_in_store_order(store: NotificationStore) -> None:
    [first] = store.add([notice("document:o1")])
    both = store.add([notice("document:o2"), notice("document:o1")])
    assert [n.event_id for n in both] == ["document:o1", "document:o2"] and both[0] == first
    assert both[0].seq < both[1].seq
