"""The end of the archive period on SQL: a patient's rows deleted in one transaction (the index's database).

Owns: the `blob_erasures` table (objects waiting to be erased: bucket, keyed-hash key, SHA-256, size;
never an INS) and pipelines.record.core.restitution.PurgeStore: which rows of the index, mailbox and notification tables
belong to a patient, deleting them, and which stored objects no remaining row refers to.
Rule 1: everything is deleted in one transaction, with the objects to erase queued in that same
transaction: a crash leaves either the whole record or none of it plus a durable list of orphans
(pending_erasures), never a half-deleted record.
Rule 2: the registry row is kept as a tombstone, status `closed`, with every identity trait and contact
blanked (only the INS and its OID stay).  Intake and the SMTP gateway go on refusing the INS as a closed
profile (`patient.closed`, DMP code 207; 550 5.2.1) instead of "unknown"; if the insurer's roster brings
the INS back later, the upsert makes a new, empty profile: nothing of the purged one survives to join it.
Rule 3: an object shared with another patient's rows (one mail to two patients is one object: the queued
mail intake stored, which the mail's submission and every mailbox copy refer to) is not queued: only
objects that no remaining document, message or submission row refers to are.
Does not: touch the object store (the record feature's restitution erases through its BlobEraser port),
redact the audit trail (its own store does), or decide when a purge is due (the lifecycle does).
Known limits: postal batch PDFs (letter_batches) hold many patients' letters and are kept whole; a
rejected submission whose document never reached the index names no patient in its row, so it is
not found here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.envelope import BlobRef
from hub.records import PatientStatus
from pipelines.record.core.restitution import PurgeReport
from storage.sql.controls import TABLES as CONTROL_TABLES
from storage.sql.database import Database, OnDatabase, SqlStore, metadata, utc_now
from storage.sql.index_tables import documents, links, patients, submissions
from storage.sql.mailbox import deliveries, filing_documents, filings, messages
from storage.sql.notifications import devices, notices, preferences, representatives
from storage.sql.profiles import profiles
from storage.sql.reimbursements import insurer_documents, reimbursed_acts

PATIENT_DOMAIN = "patient.mssante.fr"
CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
IDENTITY_TRAITS = ("birth_name", "given_names", "birth_date", "sex", "birth_place", "email", "phone",
                   "postal_address")

blob_erasures = sa.Table(
    "blob_erasures", metadata,
    sa.Column("bucket", sa.String(128), primary_key=True),
    sa.Column("blob_key", sa.String(256), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
)


def _chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield list(values[start:start + CHUNK])


class SqlPurge(SqlStore):
    """pipelines.record.core.restitution.PurgeStore on the index's database."""

    def __init__(self, database: Database, *, patient_domain: str = PATIENT_DOMAIN) -> None:
        super().__init__(database)
        self._domain = patient_domain.lower()

    @classmethod
    def beside(cls, index: OnDatabase, *, patient_domain: str = PATIENT_DOMAIN) -> Self:
        """The purge sharing `index`'s database, for the patients of `patient_domain`."""
        return cls(index.database, patient_domain=patient_domain)

    def mailbox_of(self, ins: str) -> str:
        """The patient's MSSanté address (`<INS>@patient.mssante.fr`), as mailboxes are stored: lower case."""
        return f"{ins}@{self._domain}".lower()

    def purge(self, ins: str) -> PurgeReport:
        """Delete the patient's rows, blank their registry row, queue the objects left unreferenced."""
        with self._db.begin() as conn:
            doomed = _Doomed.collect(conn, ins, self.mailbox_of(ins))
            rows = self._delete(conn, ins, doomed)
            refs = _unreferenced(conn, doomed.refs)
            self._queue(conn, refs)
        return PurgeReport(rows=rows, blobs=tuple(refs))

    def pending_erasures(self, *, limit: int = 500) -> list[BlobRef]:
        """Queued objects no row refers to (again); a queued object that is referred to again (the same
        bytes submitted anew since) is dropped from the queue: it is live, not an orphan."""
        query = blob_erasures.select().order_by(blob_erasures.c.queued_at, blob_erasures.c.blob_key).limit(limit)
        with self._db.begin() as conn:
            queued = [BlobRef(r.bucket, r.blob_key, r.sha256, r.size) for r in conn.execute(query)]
            orphans = _unreferenced(conn, queued)
            self._forget(conn, [ref for ref in queued if ref not in orphans])
        return orphans

    def erased(self, refs: Sequence[BlobRef]) -> None:
        with self._db.begin() as conn:
            self._forget(conn, refs)

    # -- inside the transaction -------------------------------------------------------------------

    def _delete(self, conn: Connection, ins: str, doomed: _Doomed) -> dict[str, int]:
        """Children first; every count is what this run removed (0 on a second run)."""
        counts: dict[str, int] = {}

        def run(table: sa.Table, statement: sa.Delete | sa.Update) -> None:
            counts[table.name] = counts.get(table.name, 0) + int(conn.execute(statement).rowcount or 0)

        for ids in _chunks(doomed.document_ids):
            run(links, links.delete().where(sa.or_(links.c.parent_id.in_(ids), links.c.child_id.in_(ids))))
        run(documents, documents.delete().where(documents.c.patient_ins == ins))
        for ids in _chunks(doomed.submission_ids):
            run(submissions, submissions.delete().where(submissions.c.submission_id.in_(ids)))
            run(deliveries, deliveries.delete().where(deliveries.c.submission_id.in_(ids)))
        mailbox = self.mailbox_of(ins)
        run(deliveries, deliveries.delete().where(sa.func.lower(deliveries.c.recipient) == mailbox))
        for ids in _chunks(doomed.filing_ids):
            run(filing_documents, filing_documents.delete().where(filing_documents.c.message_id.in_(ids)))
        run(filings, filings.delete().where(filings.c.mailbox == mailbox))
        run(messages, messages.delete().where(messages.c.mailbox == mailbox))
        run(notices, notices.delete().where(sa.or_(notices.c.ins == ins, notices.c.about_ins == ins)))
        run(preferences, preferences.delete().where(preferences.c.ins == ins))
        run(devices, devices.delete().where(devices.c.ins == ins))
        run(representatives, representatives.delete().where(
            sa.or_(representatives.c.ins == ins, representatives.c.representative_ins == ins)))
        for table in (*CONTROL_TABLES, reimbursed_acts, insurer_documents):  # access flags, held history
            run(table, table.delete().where(table.c.ins == ins))
        run(profiles, profiles.update().where(profiles.c.ins == ins, profiles.c.receipt_key != "").values(
            receipt_key="", receipt_bucket="", receipt_sha256="", receipt_size=0))  # the receipt names them
        run(patients, self._tombstone(ins))
        return counts

    def _tombstone(self, ins: str) -> sa.Update:
        """The registry row kept: status closed, identity and contacts blank; unchanged on a second run."""
        blank = {trait: "" for trait in IDENTITY_TRAITS}
        already = sa.and_(patients.c.status == str(PatientStatus.CLOSED),
                          *(patients.c[trait] == "" for trait in IDENTITY_TRAITS))
        return patients.update().where(patients.c.ins == ins, sa.not_(already)).values(
            **blank, status=str(PatientStatus.CLOSED), updated_at=utc_now())

    def _queue(self, conn: Connection, refs: Sequence[BlobRef]) -> None:
        if not refs:
            return
        now = utc_now()
        rows = [{"bucket": r.bucket, "blob_key": r.key, "sha256": r.sha256, "size": r.size, "queued_at": now}
                for r in refs]
        conn.execute(self._db.insert(blob_erasures).values(rows).on_conflict_do_nothing(
            index_elements=["bucket", "blob_key"]))

    def _forget(self, conn: Connection, refs: Sequence[BlobRef]) -> None:
        for ref in refs:
            conn.execute(blob_erasures.delete().where(blob_erasures.c.bucket == ref.bucket,
                                                      blob_erasures.c.blob_key == ref.key))


class _Doomed:
    """What belongs to one patient, read at the start of the purge transaction: the ids to delete by and
    the objects their rows point at (candidates: whether another row still refers to one is checked after
    the deletions)."""

    def __init__(self) -> None:
        self.document_ids: list[str] = []
        self.submission_ids: list[str] = []
        self.filing_ids: list[str] = []
        self.refs: list[BlobRef] = []

    @classmethod
    def collect(cls, conn: Connection, ins: str, mailbox: str) -> _Doomed:
        doomed = cls()
        doomed._documents(conn, ins)
        doomed._messages(conn, mailbox)
        doomed._filed(conn, mailbox)
        doomed._held(conn, ins)
        doomed.submission_ids = sorted(set(doomed.submission_ids))
        return doomed

    def _documents(self, conn: Connection, ins: str) -> None:
        """The patient's documents, their own submissions and any other submission of the same document
        id (duplicates: the same id sent again, possibly with other bytes)."""
        rows = conn.execute(sa.select(documents.c.document_id, documents.c.submission_id, documents.c.blob_bucket,
                                      documents.c.blob_key, documents.c.sha256, documents.c.size)
                            .where(documents.c.patient_ins == ins)).all()
        bucket_of = {r.document_id: r.blob_bucket for r in rows}
        self.document_ids = [r.document_id for r in rows]
        self.refs += [BlobRef(r.blob_bucket, r.blob_key, r.sha256, r.size) for r in rows]
        self.submission_ids += [r.submission_id for r in rows]
        for ids in _chunks(self.document_ids):  # a submission's row names the document it indexed or duplicated
            for sub in conn.execute(sa.select(submissions).where(submissions.c.document_id.in_(ids))):
                self.submission_ids.append(sub.submission_id)
                self._add_raw(sub, bucket_of[sub.document_id])

    def _messages(self, conn: Connection, mailbox: str) -> None:
        """The mailbox's messages, and the mail submissions that only this mailbox kept a copy of."""
        rows = conn.execute(sa.select(messages.c.submission_id, messages.c.blob_bucket, messages.c.blob_key,
                                      messages.c.sha256, messages.c.size, messages.c.blob_offset,
                                      messages.c.blob_sha256).where(messages.c.mailbox == mailbox)).all()
        # the object a row points at: the queued mail (its own SHA-256, the message at blob_offset) or, for
        # rows made before, the message alone
        self.refs += [BlobRef(r.blob_bucket, r.blob_key, r.blob_sha256 or r.sha256, r.blob_offset + r.size)
                      for r in rows]
        bucket_of = {r.submission_id: r.blob_bucket for r in rows}
        for ids in _chunks(sorted(bucket_of)):
            shared = {s for (s,) in conn.execute(sa.select(messages.c.submission_id).where(
                messages.c.submission_id.in_(ids), messages.c.mailbox != mailbox))}
            own = [s for s in ids if s not in shared]
            self.submission_ids += own
            for sub in conn.execute(sa.select(submissions).where(submissions.c.submission_id.in_(own))):
                self._add_raw(sub, bucket_of[sub.submission_id])

    def _filed(self, conn: Connection, mailbox: str) -> None:
        """The document submissions the mailbox's mails filed (rejected ones included: their raw bytes are
        the patient's too)."""
        bucket = conn.execute(sa.select(messages.c.blob_bucket).where(messages.c.mailbox == mailbox)).scalar()
        self.filing_ids = [m for (m,) in conn.execute(sa.select(filings.c.message_id)
                                                      .where(filings.c.mailbox == mailbox))]
        for ids in _chunks(self.filing_ids):
            filed = [s for (s,) in conn.execute(sa.select(filing_documents.c.submission_id).where(
                filing_documents.c.message_id.in_(ids)))]
            self.submission_ids += filed
            for sub in conn.execute(sa.select(submissions).where(submissions.c.submission_id.in_(filed))):
                if bucket is not None:
                    self._add_raw(sub, str(bucket))

    def _held(self, conn: Connection, ins: str) -> None:
        """The insurer's CDA documents still held for the patient, and their opposition receipt."""
        for r in conn.execute(sa.select(insurer_documents).where(insurer_documents.c.ins == ins)):
            self.refs.append(BlobRef(r.blob_bucket, r.blob_key, r.sha256, r.size))
        for r in conn.execute(sa.select(profiles).where(profiles.c.ins == ins, profiles.c.receipt_key != "")):
            self.refs.append(BlobRef(r.receipt_bucket, r.receipt_key, r.receipt_sha256, r.receipt_size))

    def _add_raw(self, sub: Any, bucket: str) -> None:
        """A submission's raw bytes (the row names no bucket: it is the one of the rows that lead to it)."""
        if sub.blob_key:
            self.refs.append(BlobRef(bucket, sub.blob_key, sub.sha256, sub.size))


def _unreferenced(conn: Connection, refs: Sequence[BlobRef]) -> list[BlobRef]:
    """The refs (deduplicated by bucket and key) that no document, message or submission row points at."""
    unique = list({(r.bucket, r.key): r for r in refs}.values())
    keys = sorted({r.key for r in unique})
    used: set[tuple[str, str]] = set()
    for chunk in _chunks(keys):
        used |= {(b, k) for b, k in conn.execute(sa.select(documents.c.blob_bucket, documents.c.blob_key).where(
            documents.c.blob_key.in_(chunk)))}
        used |= {(b, k) for b, k in conn.execute(sa.select(messages.c.blob_bucket, messages.c.blob_key).where(
            messages.c.blob_key.in_(chunk)))}
        used_keys = {k for (k,) in conn.execute(sa.select(submissions.c.blob_key).where(
            submissions.c.blob_key.in_(chunk)))}  # submissions name no bucket: a key in use is in use
        used |= {(r.bucket, r.key) for r in unique if r.key in used_keys}
    return [r for r in unique if (r.bucket, r.key) not in used]
