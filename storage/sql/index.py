"""The per-patient index, submission log and patient registry on SQL (SQLite or PostgreSQL, same code).

Owns: SqlIndex, the hub.ports.Index port on one storage.sql.database.Database: its reads, the registry's
upsert, and the door to the database every other store is built `beside`.  `SqlIndex.connect` brings the
database to the migrations' head first (storage.sql.migrate).
Rule 1: indexing is idempotent: a document id is inserted once (INSERT ... ON CONFLICT DO NOTHING); the
same submission redelivered finds its own row and answers `indexed` again, another submission with the
same id gets `duplicate` (storage.sql.index_writes).
Rule 2: a document and its submission's outcome are written in one transaction, so a crash leaves either
both or neither.
Does not: decide validity or classification (pipelines.cda) or log patient data; the tables and their row
mapping are in storage.sql.index_tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hub.envelope import Envelope
from hub.records import (
    DocumentQuery,
    DocumentRecord,
    PatientRecord,
    PatientStatus,
    SubmissionRecord,
    SubmissionStatus,
)
from storage.sql import migrate
from storage.sql.database import Database, db_errors, make_engine, metadata, utc_now
from storage.sql.index_tables import (
    document_from_row,
    documents,
    links,
    patients,
    submission_from_row,
    submissions,
)
from storage.sql.index_writes import Findings, IndexWrites

# names other modules and tools import from here (the tables moved to storage.sql.index_tables)
__all__ = ["SqlIndex", "db_errors", "documents", "links", "make_engine", "metadata", "patients", "submissions"]


class SqlIndex:
    """hub.ports.Index on SQLAlchemy Core; the same statements serve SQLite and PostgreSQL."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._writes = IndexWrites(database)
        self._patient_by_ins = patients.select().where(patients.c.ins == sa.bindparam("p_ins"))

    @classmethod
    def connect(cls, url: str) -> SqlIndex:
        """The index on `url`, its schema brought to the migrations' head (idempotent; safe when several
        processes start together: storage.sql.migrate)."""
        index = cls(Database.connect(url))
        index.migrate()
        return index

    def migrate(self) -> migrate.Revisions:
        """Apply the migrations this database lacks (none: one read)."""
        return migrate.upgrade(self._db)

    @property
    def database(self) -> Database:
        """The database the stores beside this index share (storage.sql.database.SqlStore.beside)."""
        return self._db

    @property
    def engine(self) -> Engine:
        """The durable engine."""
        return self._db.engine

    @property
    def reader_engine(self) -> Engine:
        """The autocommit engine for one-statement reads."""
        return self._db.reader

    def dispose(self) -> None:
        self._db.dispose()

    def ping(self) -> None:
        with self._db.begin() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- submissions -------------------------------------------------------------------------------------

    def create_submission(self, record: SubmissionRecord) -> bool:
        """Record a pending submission; False (and nothing changed) when its id is already recorded.
        Not fsynced on its own: the durable record of an accepted submission is its envelope on the
        bus (and its bytes in S3); if a power cut loses this row, the worker re-creates it when it
        records the outcome."""
        return self._writes.create_submission(record)

    def forget_submission(self, submission_id: str) -> None:
        with self._db.begin() as conn:
            conn.execute(submissions.delete().where(
                submissions.c.submission_id == submission_id,
                submissions.c.status == str(SubmissionStatus.PENDING)))

    def submission(self, submission_id: str) -> SubmissionRecord | None:
        with self._db.read() as conn:
            row = conn.execute(submissions.select().where(
                submissions.c.submission_id == submission_id)).mappings().first()
        return None if row is None else submission_from_row(row)

    def reject(self, envelope: Envelope, findings: Findings) -> SubmissionRecord:
        return self._writes.finish(envelope, SubmissionStatus.REJECTED, findings)

    def complete(self, envelope: Envelope, findings: Findings = ()) -> SubmissionRecord:
        """Mark a submission that indexes no document of its own (a mail, filed in mailboxes) as done."""
        return self._writes.finish(envelope, SubmissionStatus.INDEXED, findings)

    def index_document(self, envelope: Envelope, document: DocumentRecord, findings: Findings) -> SubmissionRecord:
        return self._writes.index_document(envelope, document, findings)

    def stale_pending(self, older_than: datetime, limit: int = 100) -> list[SubmissionRecord]:
        """Pending submissions received before `older_than` (for the recovery sweep)."""
        with self._db.read() as conn:
            rows = conn.execute(submissions.select().where(
                submissions.c.status == str(SubmissionStatus.PENDING),
                submissions.c.received_at < older_than).limit(limit)).mappings().all()
        return [submission_from_row(r) for r in rows]

    # -- patients ----------------------------------------------------------------------------------------

    def patient(self, ins: str) -> PatientRecord | None:
        with self._db.read() as conn:
            row = conn.execute(self._patient_by_ins, {"p_ins": ins}).mappings().first()
        if row is None:
            return None
        fields = {k: v for k, v in row.items() if k not in ("updated_at", "status")}
        return PatientRecord(**fields, status=PatientStatus(row["status"]))

    def upsert_patients(self, records: Sequence[PatientRecord]) -> int:
        """Insert or update patients by INS (a roster re-import updates traits, contacts and status)."""
        if not records:
            return 0
        rows = [{**r.to_dict(), "updated_at": utc_now()} for r in records]
        with self._db.begin() as conn:
            stmt = self._db.insert(patients)
            updatable = {c.name: stmt.excluded[c.name] for c in patients.columns if c.name != "ins"}
            for start in range(0, len(rows), 500):
                conn.execute(stmt.on_conflict_do_update(index_elements=["ins"], set_=updatable),
                             rows[start:start + 500])
        return len(rows)

    # -- documents ---------------------------------------------------------------------------------------

    def documents(self, ins: str, query: DocumentQuery) -> list[DocumentRecord]:
        c = documents.c
        stmt = sa.select(documents).where(c.patient_ins == ins)
        for column, value in ((c.category, query.category), (c.class_code, query.class_code),
                              (c.type_code, query.type_code)):
            if value:
                stmt = stmt.where(column == value)
        if query.date_from:
            stmt = stmt.where(c.service_date >= query.date_from)
        if query.date_to:
            stmt = stmt.where(c.service_date <= query.date_to)
        if not query.include_deprecated:
            stmt = stmt.where(c.status == "current")
        stmt = stmt.order_by(c.service_date.desc(), c.document_id).limit(query.limit).offset(query.offset)
        with self._db.read() as conn:
            return [document_from_row(row) for row in conn.execute(stmt).mappings()]

    def document(self, document_id: str) -> DocumentRecord | None:
        with self._db.read() as conn:
            row = conn.execute(documents.select().where(
                documents.c.document_id == document_id)).mappings().first()
        return None if row is None else document_from_row(row)
