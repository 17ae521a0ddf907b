"""The Mailboxes contract, run against memory, SQLite and PostgreSQL: same code, same expectations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hub.envelope import BlobRef
from hub.ports import Mailboxes
from hub.records import DeliveryRecord, DeliveryState, MessageRecord
from storage.memory.index import MemoryIndex
from storage.memory.mailbox import MemoryMailbox
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox, messages
from storage.sql.migrate import downgrade, upgrade
from tests import builders
from tests.contract.conftest import beside

pytestmark = pytest.mark.integration
MAILBOX = f"{builders.TEST_INS}@patient.mssante.fr"


@pytest.fixture
def mailbox(index: MemoryIndex | SqlIndex) -> Iterator[Mailboxes]:
    yield beside(index, MemoryMailbox, SqlMailbox)


def message(n: int, *, sender: str = "dr.house@hopital.mssante.fr", closed: bool = False,
            at: datetime | None = None) -> MessageRecord:
    return MessageRecord(message_id=f"m{n}", mailbox=MAILBOX, submission_id=f"s{n}", direction="in",
                         correspondent=sender, subject=f"Compte rendu {n}", rfc_message_id=f"<{n}@hopital>",
                         in_reply_to="", blob_bucket="b", blob_key=f"msg/aa/{n}", sha256="a" * 64, size=10,
                         received_at=at or datetime.now(UTC), closed=closed, attachments=("IHE_XDM.ZIP",))


def test_a_redelivered_message_is_stored_once(mailbox: Mailboxes) -> None:
    assert mailbox.store_message(message(1)) is True
    assert mailbox.store_message(replace(message(1), message_id="m1-again")) is False
    listed = mailbox.messages(MAILBOX)
    assert [m.message_id for m in listed] == ["m1"] and listed[0].attachments == ("IHE_XDM.ZIP",)


def test_messages_are_listed_newest_first_and_marked_read_once(mailbox: Mailboxes) -> None:
    now = datetime.now(UTC)
    mailbox.store_message(message(1, at=now - timedelta(hours=1)))
    mailbox.store_message(message(2, at=now))
    assert [m.message_id for m in mailbox.messages(MAILBOX)] == ["m2", "m1"]
    first = mailbox.mark_read("m1")
    assert first is not None and first.read_at is not None
    again = mailbox.mark_read("m1")
    assert again is not None and again.read_at == first.read_at
    assert mailbox.mark_read("nope") is None


def test_correspondents_know_who_wrote_first_and_who_closed(mailbox: Mailboxes) -> None:
    now = datetime.now(UTC)
    mailbox.store_message(message(1, sender="Dr.A@hopital.mssante.fr", at=now - timedelta(hours=2)))
    mailbox.store_message(message(2, sender="dr.b@clinique.mssante.fr", closed=True, at=now - timedelta(hours=1)))
    wrote, closed = mailbox.correspondents(MAILBOX)
    assert wrote == {"dr.a@hopital.mssante.fr", "dr.b@clinique.mssante.fr"} and closed == {"dr.b@clinique.mssante.fr"}
    # A later message from the same professional without FIN reopens the exchange
    mailbox.store_message(message(3, sender="dr.b@clinique.mssante.fr", at=now))
    assert mailbox.correspondents(MAILBOX)[1] == set()


def test_delivery_state_is_one_row_per_recipient_updated_in_place(mailbox: Mailboxes) -> None:
    mailbox.record_delivery(DeliveryRecord("s1", "pharma@org.mssante.fr", "local-org", DeliveryState.QUEUED))
    mailbox.record_delivery(DeliveryRecord("s1", "pharma@org.mssante.fr", "local-org", DeliveryState.DEFERRED,
                                           attempts=1, last_reply="451 4.3.0 try later"))
    mailbox.record_delivery(DeliveryRecord("s1", MAILBOX, "patient", DeliveryState.DELIVERED, attempts=1))
    rows = mailbox.deliveries("s1")
    assert [(r.recipient, r.state, r.attempts) for r in rows] == [
        (MAILBOX, DeliveryState.DELIVERED, 1), ("pharma@org.mssante.fr", DeliveryState.DEFERRED, 1)]
    assert rows[1].last_reply == "451 4.3.0 try later"


def test_a_copy_pointing_into_the_queued_mail_reads_back_with_its_place(mailbox: SqlMailbox) -> None:
    # A row made by the mail pipeline: the object is the queued mail, the message starts at blob_offset
    record = replace(message(7), blob_key="mail/bb/7", blob_offset=120, blob_sha256="b" * 64)
    mailbox.store_message(record)
    stored = mailbox.message("m7")
    assert stored == record
    assert (stored.blob.key, stored.blob.sha256, stored.blob.size) == ("mail/bb/7", "b" * 64, 130)
    assert stored.message_in(b"h" * 120 + b"m" * 10) == b"m" * 10
    assert "blob_offset" not in stored.to_dict() and stored.to_dict()["sha256"] == "a" * 64


def test_a_messages_table_of_an_earlier_release_gains_the_columns_and_keeps_its_rows(sql_index: SqlIndex) -> None:
    # Given a `messages` table as revision 0001 made it, with one row (its object: the message alone)
    old = sa.MetaData()
    columns = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in messages.columns if c.name not in ("blob_offset", "blob_sha256")]
    table = sa.Table("messages", old, *columns)
    row = {c.name: None for c in columns} | {"message_id": "m1", "mailbox": MAILBOX, "submission_id": "s1",
                                             "direction": "in", "correspondent": "dr@h", "subject": "s",
                                             "rfc_message_id": "", "in_reply_to": "", "blob_bucket": "b",
                                             "blob_key": "msg/aa/1", "sha256": "a" * 64, "size": 10,
                                             "received_at": datetime.now(UTC), "closed": False,
                                             "attachments": "[]", "documents": "[]"}
    downgrade(sql_index.database, "0001")
    with sql_index.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS messages"))
        old.create_all(conn)
        conn.execute(table.insert().values(row))

    # When the database is migrated to the current revision and the mailbox store starts on it
    upgrade(sql_index.database)
    store = SqlMailbox.beside(sql_index)

    # Then the row reads as before: its object is the message, offset 0
    stored = store.message("m1")
    assert stored is not None and (stored.blob_offset, stored.blob_sha256) == (0, "")
    assert stored.blob == BlobRef("b", "msg/aa/1", "a" * 64, 10) and stored.message_in(b"x" * 10) == b"x" * 10
