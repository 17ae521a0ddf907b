"""The purge's store side on every back end (memory, SQLite, PostgreSQL): same expectations.
Objects are not touched here (tests/integration/test_restitution.py erases them on SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hub.envelope import BlobRef, Envelope, Source
from hub.intake import new_submission_id
from hub.notices import Channel, EventKind, Notice, NoticeState, Preferences
from hub.records import (
    DeliveryRecord,
    DeliveryState,
    DocumentQuery,
    FiledDocument,
    MailFiling,
    MessageRecord,
    PatientRecord,
    PatientStatus,
    SubmissionRecord,
)
from pipelines.notify.core.policy import notice_id
from storage.memory.index import MemoryIndex
from storage.memory.mailbox import MemoryMailbox
from storage.memory.notifications import MemoryNotifications
from storage.memory.purge import MemoryPurge
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications
from storage.sql.purge import SqlPurge
from tests.builders import TEST_INS, TEST_OID, document, with_key
from tests.contract.conftest import beside

OTHER = with_key("1850775123456")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class Stores:
    def __init__(self, index: MemoryIndex | SqlIndex) -> None:
        self.index = index
        self.mail = beside(index, MemoryMailbox, SqlMailbox)
        self.notices = beside(index, MemoryNotifications, SqlNotifications)
        self.purge = beside(index, MemoryPurge, SqlPurge)


@pytest.fixture
def stores(index: MemoryIndex | SqlIndex) -> Iterator[Stores]:
    index.upsert_patients([PatientRecord(ins=ins, oid=TEST_OID, birth_name="TEST", given_names="Jeanne",
                                             email="j@example.org", status=PatientStatus.ACTIVE)
                               for ins in (TEST_INS, OTHER)])
    yield Stores(index)


def ref(name: str, kind: str = "cda") -> BlobRef:
    return BlobRef(bucket="b", key=f"{kind}/{name[:2]}/{name}", sha256=name.ljust(64, "0")[:64], size=10)


def index_doc(s: Stores, doc_id: str, ins: str, raw: BlobRef, **changes: object) -> str:
    env = Envelope(new_submission_id(), NOW, Source("http", "lab-1"), raw)
    s.index.index_document(env, document(env, doc_id, patient_ins=ins, **changes), ())
    return env.submission_id


def keep_mail(s: Stores, raw: BlobRef, *inses: str) -> str:
    submission = new_submission_id()
    for ins in inses:
        s.mail.store_message(MessageRecord(
            message_id=f"{submission}-{ins}", mailbox=f"{ins}@patient.mssante.fr", submission_id=submission,
            direction="in", correspondent="dr@h.mssante.fr", subject="s", rfc_message_id="<m@h>", in_reply_to="",
            blob_bucket=raw.bucket, blob_key=raw.key, sha256=raw.sha256, size=raw.size, received_at=NOW))
        s.mail.record_delivery(DeliveryRecord(submission, f"{ins}@patient.mssante.fr", "patient",
                                              DeliveryState.DELIVERED))
    return submission


def fill(s: Stores, ins: str, tag: str) -> None:
    index_doc(s, f"1.2.3^{tag}-1", ins, ref(f"{tag}aa"))
    index_doc(s, f"1.2.3^{tag}-2", ins, ref(f"{tag}bb"), replaces=(f"1.2.3^{tag}-1",))
    mail = keep_mail(s, ref(f"{tag}cc", "msg"), ins)
    s.mail.record_filing(MailFiling(message_id=f"{mail}-{ins}", mail_submission_id=mail,
                                    mailbox=f"{ins}@patient.mssante.fr", received_at=NOW,
                                    documents=(FiledDocument(new_submission_id(), "SUBSET01#doc1"),)))
    s.notices.add([Notice(notice_id=notice_id(f"document:{tag}", Channel.INAPP, ins, ""),
                          event_id=f"document:{tag}", kind=EventKind.NEW_DOCUMENT, ins=ins, about_ins=ins,
                          channel=Channel.INAPP, address="", state=NoticeState.SENT, created_at=NOW, due_at=NOW)])
    s.notices.set_preferences(ins, Preferences(push=False))
    s.notices.add_device(ins, f"https://push.example.org/{tag}")


def test_purge_deletes_the_patients_rows_in_every_table_and_queues_their_objects(stores: Stores) -> None:
    fill(stores, TEST_INS, "me")
    fill(stores, OTHER, "ot")
    shared = ref("sharedmail", "msg")
    keep_mail(stores, shared, TEST_INS, OTHER)
    stores.notices.set_representatives(OTHER, [TEST_INS])
    report = stores.purge.purge(TEST_INS)
    assert {r.key for r in report.blobs} == {ref("meaa").key, ref("mebb").key, ref("mecc", "msg").key}
    assert report.rows["documents"] == 2 and report.rows["document_links"] == 1
    assert report.rows["messages"] == 2 and report.rows["mail_filings"] == 1
    assert report.rows["mail_filing_documents"] == 1 and report.rows["notices"] == 1
    assert report.rows["notification_preferences"] == report.rows["push_devices"] == 1
    assert report.rows["legal_representatives"] == 1 and report.rows["patients"] == 1
    assert report.rows["submissions"] == 2 and report.rows["deliveries"] == 2
    assert stores.index.documents(TEST_INS, DocumentQuery(include_deprecated=True)) == []
    assert stores.mail.messages(f"{TEST_INS}@patient.mssante.fr") == []
    assert stores.notices.for_patient(TEST_INS) == [] and stores.notices.devices(TEST_INS) == []
    assert stores.notices.preferences(TEST_INS) == Preferences()
    assert stores.index.patient(TEST_INS) == PatientRecord(ins=TEST_INS, oid=TEST_OID, status=PatientStatus.CLOSED)
    # the other patient: everything kept (the shared mail's copy and its delivery too)
    assert len(stores.index.documents(OTHER, DocumentQuery(include_deprecated=True))) == 2
    assert len(stores.mail.messages(f"{OTHER}@patient.mssante.fr")) == 2
    assert len(stores.notices.for_patient(OTHER)) == 1 and stores.notices.representatives(OTHER) == []
    other = stores.index.patient(OTHER)
    assert other is not None and other.birth_name == "TEST" and other.status is PatientStatus.ACTIVE


def test_a_second_purge_changes_nothing_and_the_queue_empties_once_erased(stores: Stores) -> None:
    fill(stores, TEST_INS, "me")
    first = stores.purge.purge(TEST_INS)
    again = stores.purge.purge(TEST_INS)
    assert again.blobs == () and set(again.rows.values()) == {0}
    assert set(stores.purge.pending_erasures()) == set(first.blobs)
    stores.purge.erased(first.blobs[:1])
    assert set(stores.purge.pending_erasures()) == set(first.blobs[1:])
    stores.purge.erased(first.blobs)
    assert stores.purge.pending_erasures() == []


def test_an_object_another_row_still_points_at_is_never_queued(stores: Stores) -> None:
    same = ref("samebytes")
    index_doc(stores, "1.2.3^mine", TEST_INS, same)
    index_doc(stores, "1.2.3^theirs", OTHER, same)  # odd, but the rows are what counts
    assert stores.purge.purge(TEST_INS).blobs == ()
    assert stores.purge.purge("199999999999999").rows["patients"] == 0  # unknown INS: nothing, no error


def test_a_mail_kept_once_in_the_queued_mail_is_erased_with_its_last_mailbox(stores: Stores) -> None:
    # Given one mail to two patients, stored once by intake (the queued mail: its submission's object), each
    # mailbox copy pointing into it (the message after a 100-byte queued-mail header)
    queued = BlobRef(bucket="b", key="mail/qq/queued", sha256="f" * 64, size=110)
    submission = new_submission_id()
    stores.index.create_submission(SubmissionRecord(submission, NOW, "clinic", "smtp", blob_key=queued.key,
                                                    sha256=queued.sha256, size=queued.size))
    for ins in (TEST_INS, OTHER):
        stores.mail.store_message(MessageRecord(
            message_id=f"{submission}-{ins}", mailbox=f"{ins}@patient.mssante.fr", submission_id=submission,
            direction="in", correspondent="dr@h.mssante.fr", subject="s", rfc_message_id="<m@h>", in_reply_to="",
            blob_bucket=queued.bucket, blob_key=queued.key, sha256="e" * 64, size=10, received_at=NOW,
            blob_offset=100, blob_sha256=queued.sha256))

    # When the first patient is purged, then the second
    first = stores.purge.purge(TEST_INS)
    second = stores.purge.purge(OTHER)

    # Then the object stays while a copy refers to it, and goes with the last one, under its own SHA-256 and size
    assert queued.key not in {r.key for r in first.blobs}
    assert [r for r in second.blobs if r.key == queued.key] == [queued]
    assert stores.index.submission(submission) is None
