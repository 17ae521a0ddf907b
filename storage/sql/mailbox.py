"""Patient mailboxes and delivery states on SQL (SQLite or PostgreSQL, the index's database).

Owns: the `messages`, `deliveries`, `mail_filings` and `mail_filing_documents` tables and the
hub.ports.Mailboxes port.
Rule: storing a message is idempotent per (submission, mailbox), so a redelivered
queued mail never shows twice in a mailbox; a delivery state is one row per
(submission, recipient), updated in place.
Rule: a filing (which document submissions a mail filed) is recorded once, and its integration
report is claimed by one claimant only (a conditional UPDATE: one winner, even under concurrency).
Rule: a row keeps no bytes of its own: it points at the object intake stored at the 250 (the queued
mail) and where the message starts in it (blob_offset, with the object's SHA-256): copies of one mail
in several mailboxes, and the mail's submission, all refer to that one object.
Does not: decide who may write to whom (pipelines.mail.core.mss) or keep message bytes
(they are in object storage; rows point at them).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from hub.records import DeliveryRecord, DeliveryState, FiledDocument, MailFiling, MessageRecord
from storage.sql.database import SqlStore, aware, metadata, utc_now, when

messages = sa.Table(
    "messages", metadata,
    sa.Column("message_id", sa.String(64), primary_key=True),
    sa.Column("mailbox", sa.String(320), nullable=False),
    sa.Column("submission_id", sa.String(64), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("correspondent", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("rfc_message_id", sa.Text, nullable=False),
    sa.Column("in_reply_to", sa.Text, nullable=False),
    sa.Column("blob_bucket", sa.String(128), nullable=False),
    sa.Column("blob_key", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed", sa.Boolean, nullable=False),
    sa.Column("read_at", sa.DateTime(timezone=True)),
    sa.Column("attachments", sa.Text, nullable=False),
    sa.Column("documents", sa.Text, nullable=False),
    sa.Column("blob_offset", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("blob_sha256", sa.String(64), nullable=False, server_default=""),
    sa.UniqueConstraint("submission_id", "mailbox", name="uq_messages_copy"),
    sa.Index("ix_messages_mailbox", "mailbox", "received_at"),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("submission_id", sa.String(64), primary_key=True),
    sa.Column("recipient", sa.String(320), primary_key=True),
    sa.Column("route", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_reply", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

filings = sa.Table(
    "mail_filings", metadata,
    sa.Column("message_id", sa.String(64), primary_key=True),
    sa.Column("mail_submission_id", sa.String(64), nullable=False),
    sa.Column("mailbox", sa.String(320), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("findings", sa.Text, nullable=False),
    sa.Column("report_by", sa.String(64)),  # the submission whose worker sends the report; NULL: not yet
    sa.Column("reported_at", sa.DateTime(timezone=True)),
)

filing_documents = sa.Table(
    "mail_filing_documents", metadata,
    sa.Column("submission_id", sa.String(64), primary_key=True),
    sa.Column("message_id", sa.String(64), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("entry", sa.Text, nullable=False),
)

TABLES = [messages, deliveries, filings, filing_documents]


class SqlMailbox(SqlStore):
    """hub.ports.Mailboxes on the index's database (same durability settings; reads on the
    durable engine's connections)."""

    def store_message(self, message: MessageRecord) -> bool:
        row = _message_row(message)
        statement = self._db.insert(messages).values(row).on_conflict_do_nothing(
            index_elements=["submission_id", "mailbox"]).returning(messages.c.message_id)
        with self._db.begin() as conn:
            return conn.execute(statement).first() is not None

    def messages(self, mailbox: str, *, limit: int = 200, offset: int = 0) -> list[MessageRecord]:
        query = messages.select().where(messages.c.mailbox == mailbox).order_by(
            messages.c.received_at.desc(), messages.c.message_id).limit(limit).offset(offset)
        with self._db.connection() as conn:
            return [_message_from_row(row) for row in conn.execute(query)]

    def message(self, message_id: str) -> MessageRecord | None:
        with self._db.connection() as conn:
            row = conn.execute(messages.select().where(messages.c.message_id == message_id)).first()
        return _message_from_row(row) if row is not None else None

    def mark_read(self, message_id: str) -> MessageRecord | None:
        """Set read_at once (the first read is the one an MDN reports)."""
        with self._db.begin() as conn:
            conn.execute(messages.update().where(messages.c.message_id == message_id,
                                                 messages.c.read_at.is_(None)).values(read_at=utc_now()))
        return self.message(message_id)

    def correspondents(self, mailbox: str) -> tuple[set[str], set[str]]:
        query = sa.select(messages.c.correspondent, messages.c.closed, messages.c.received_at).where(
            messages.c.mailbox == mailbox, messages.c.direction == "in").order_by(messages.c.received_at)
        wrote: set[str] = set()
        closed: set[str] = set()
        with self._db.connection() as conn:
            for row in conn.execute(query):  # in order: a later message that does not close reopens
                address = row.correspondent.lower()
                wrote.add(address)
                (closed.add if row.closed else closed.discard)(address)
        return wrote, closed

    def record_delivery(self, delivery: DeliveryRecord) -> None:
        row = {"submission_id": delivery.submission_id, "recipient": delivery.recipient, "route": delivery.route,
               "state": str(delivery.state), "attempts": delivery.attempts, "last_reply": delivery.last_reply,
               "updated_at": utc_now()}
        statement = self._db.insert(deliveries).values(row).on_conflict_do_update(
            index_elements=["submission_id", "recipient"],
            set_={k: row[k] for k in ("route", "state", "attempts", "last_reply", "updated_at")})
        with self._db.begin() as conn:
            conn.execute(statement)

    def deliveries(self, submission_id: str) -> list[DeliveryRecord]:
        return self._deliveries(deliveries.select().where(deliveries.c.submission_id == submission_id).order_by(
            deliveries.c.recipient))

    def deliveries_to(self, recipient: str, *, limit: int = 200) -> list[DeliveryRecord]:
        return self._deliveries(deliveries.select().where(sa.func.lower(deliveries.c.recipient) == recipient.lower())
                                .order_by(deliveries.c.updated_at.desc()).limit(limit))

    def _deliveries(self, query: sa.Select[Any]) -> list[DeliveryRecord]:
        with self._db.connection() as conn:
            return [DeliveryRecord(submission_id=r.submission_id, recipient=r.recipient, route=r.route,
                                   state=DeliveryState(r.state), attempts=r.attempts, last_reply=r.last_reply,
                                   updated_at=aware(r.updated_at)) for r in conn.execute(query)]

    # -- filings and their integration report ---------------------------------------------------------

    def record_filing(self, filing: MailFiling) -> None:
        row = {"message_id": filing.message_id, "mail_submission_id": filing.mail_submission_id,
               "mailbox": filing.mailbox, "received_at": filing.received_at,
               "findings": json.dumps(list(filing.findings))}
        docs = [{"submission_id": d.submission_id, "message_id": filing.message_id, "position": n, "entry": d.entry}
                for n, d in enumerate(filing.documents)]
        with self._db.begin() as conn:
            created = conn.execute(self._db.insert(filings).values(row).on_conflict_do_nothing(
                index_elements=["message_id"]).returning(filings.c.message_id)).first() is not None
            if created and docs:  # the first record stays whole; a redelivery adds nothing
                conn.execute(self._db.insert(filing_documents).values(docs).on_conflict_do_nothing(
                    index_elements=["submission_id"]))

    def filing(self, message_id: str) -> MailFiling | None:
        with self._db.connection() as conn:
            row = conn.execute(filings.select().where(filings.c.message_id == message_id)).first()
            if row is None:
                return None
            docs = conn.execute(filing_documents.select().where(filing_documents.c.message_id == message_id)
                                .order_by(filing_documents.c.position)).all()
        return MailFiling(message_id=row.message_id, mail_submission_id=row.mail_submission_id, mailbox=row.mailbox,
                          received_at=when(row.received_at), findings=tuple(json.loads(row.findings)),
                          documents=tuple(FiledDocument(d.submission_id, d.entry) for d in docs))

    def filing_of(self, document_submission_id: str) -> MailFiling | None:
        with self._db.connection() as conn:
            message_id = conn.execute(sa.select(filing_documents.c.message_id).where(
                filing_documents.c.submission_id == document_submission_id)).scalar()
        return None if message_id is None else self.filing(str(message_id))

    def claim_report(self, message_id: str, *, by: str) -> bool:
        """A conditional UPDATE decides: on PostgreSQL a second claimant waits for the first one's row lock,
        then finds `report_by` set; SQLite serialises writers."""
        with self._db.begin() as conn:
            conn.execute(filings.update().where(filings.c.message_id == message_id, filings.c.report_by.is_(None))
                         .values(report_by=by, reported_at=utc_now()))
            holder = conn.execute(sa.select(filings.c.report_by).where(filings.c.message_id == message_id)).scalar()
        return holder == by


def _message_row(message: MessageRecord) -> dict[str, Any]:
    return {"message_id": message.message_id, "mailbox": message.mailbox, "submission_id": message.submission_id,
            "direction": message.direction, "correspondent": message.correspondent, "subject": message.subject,
            "rfc_message_id": message.rfc_message_id, "in_reply_to": message.in_reply_to,
            "blob_bucket": message.blob_bucket, "blob_key": message.blob_key, "sha256": message.sha256,
            "size": message.size, "received_at": message.received_at, "closed": message.closed,
            "read_at": message.read_at, "attachments": json.dumps(list(message.attachments)),
            "documents": json.dumps(list(message.documents)), "blob_offset": message.blob_offset,
            "blob_sha256": message.blob_sha256}


def _message_from_row(row: Any) -> MessageRecord:
    return MessageRecord(
        message_id=row.message_id, mailbox=row.mailbox, submission_id=row.submission_id, direction=row.direction,
        correspondent=row.correspondent, subject=row.subject, rfc_message_id=row.rfc_message_id,
        in_reply_to=row.in_reply_to, blob_bucket=row.blob_bucket, blob_key=row.blob_key, sha256=row.sha256,
        size=row.size, received_at=when(row.received_at), closed=bool(row.closed), read_at=aware(row.read_at),
        attachments=tuple(json.loads(row.attachments)), documents=tuple(json.loads(row.documents)),
        blob_offset=int(row.blob_offset), blob_sha256=row.blob_sha256)
