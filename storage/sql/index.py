"""The per-patient index, submission log and patient registry on SQL (SQLite or PostgreSQL, same code).

Owns: tables, transactions and queries behind the hub.ports.Index port.
Rule 1: indexing is idempotent: a document id is inserted once (INSERT ... ON
CONFLICT DO NOTHING); the same submission redelivered finds its own row and
answers `indexed` again, another submission with the same id gets `duplicate`.
Rule 2: a document and its submission's outcome are written in one transaction,
so a crash leaves either both or neither.
Does not: decide validity or classification (pipelines.cda) or log patient data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from hub.envelope import Envelope
from hub.errors import IndexUnavailable
from hub.records import (
    DocumentQuery,
    DocumentRecord,
    PatientRecord,
    PatientStatus,
    SubmissionRecord,
    SubmissionStatus,
)

metadata = sa.MetaData()

patients = sa.Table(
    "patients", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("oid", sa.String(64), nullable=False),
    *(sa.Column(name, sa.Text, nullable=False, default="") for name in (
        "birth_name", "given_names", "birth_date", "sex", "birth_place", "email", "phone", "postal_address")),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

submissions = sa.Table(
    "submissions", metadata,
    sa.Column("submission_id", sa.String(64), primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("producer", sa.String(128), nullable=False),
    sa.Column("source_kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("document_id", sa.String(256)),
    sa.Column("category", sa.String(32)),
    sa.Column("findings", sa.Text, nullable=False, default="[]"),
    sa.Column("blob_key", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("confidentiality", sa.Text, nullable=False, server_default="[]"),
)

documents = sa.Table(
    "documents", metadata,
    sa.Column("document_id", sa.String(256), primary_key=True),
    sa.Column("patient_ins", sa.String(15), nullable=False),
    sa.Column("submission_id", sa.String(64), nullable=False),
    sa.Column("blob_bucket", sa.String(128), nullable=False),
    sa.Column("blob_key", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    *(sa.Column(name, sa.String(256), nullable=False) for name in (
        "type_code", "class_code", "category", "format_code", "level", "effective_time", "service_date")),
    sa.Column("type_label", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("confidentiality", sa.Text, nullable=False),
    sa.Column("author_id", sa.String(256)),
    sa.Column("custodian_id", sa.String(256)),
    sa.Column("replaces", sa.Text, nullable=False, default="[]"),
    sa.Column("replaced_by", sa.String(256)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_documents_patient", "patient_ins", "service_date"),
)

links = sa.Table(
    "document_links", metadata,
    sa.Column("parent_id", sa.String(256), primary_key=True),
    sa.Column("child_id", sa.String(256), primary_key=True),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()
    return on_connect


def make_engine(url: str, *, durable: bool = True, autocommit: bool = False) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql+psycopg://...) with the hub's settings.

    durable=True: a commit is on disk when it returns (SQLite WAL + synchronous=FULL; PostgreSQL's
    default synchronous_commit), which the worker needs before it acks a bus message.
    durable=False (SQLite synchronous=NORMAL) is for writes that may be lost in a power cut without
    losing anything accepted: a pending submission row, which the worker re-creates if missing.
    autocommit=True: connections made in autocommit mode once, for single-statement reads (no
    isolation level set and reset around every checkout)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, pool_size=16, max_overflow=16, connect_args={"timeout": 15}, **options)
        sa.event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))
        return engine
    # No pre-ping (a round trip per checkout): a dropped connection raises OperationalError, which
    # becomes IndexUnavailable (retried by the worker, 503 at the API) and SQLAlchemy replaces it.
    return sa.create_engine(url, pool_size=16, max_overflow=16, pool_recycle=1800,
                            connect_args={"connect_timeout": 5}, **options)


class SqlIndex:
    """hub.ports.Index on SQLAlchemy Core; the same statements serve SQLite and PostgreSQL."""

    def __init__(self, engine: Engine, *, relaxed_engine: Engine | None = None,
                 reader_engine: Engine | None = None) -> None:
        self._engine = engine
        self._relaxed = relaxed_engine or engine
        self._reader = reader_engine or engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        # Hot statements, built once: parameters come at execute time (saves per-call construction).
        self._new_submission = self._insert(submissions).on_conflict_do_nothing(
            index_elements=["submission_id"]).returning(submissions.c.submission_id)
        self._new_document = self._insert(documents).on_conflict_do_nothing(
            index_elements=["document_id"]).returning(documents.c.submission_id)
        self._successor = sa.select(documents.c.document_id).join(
            links, links.c.child_id == documents.c.document_id).where(
            links.c.parent_id == sa.bindparam("p_doc"), documents.c.patient_ins == sa.bindparam("p_ins"),
            documents.c.document_id != sa.bindparam("p_doc"))
        self._advisory_lock = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("p_key"))))
        self._patient_by_ins = patients.select().where(patients.c.ins == sa.bindparam("p_ins"))
        self._close_submission = submissions.update().where(
            submissions.c.submission_id == sa.bindparam("p_id"),
            submissions.c.status == str(SubmissionStatus.PENDING),
        ).values({c: sa.bindparam(f"p_{c}") for c in ("status", "document_id", "category", "findings",
                                                      "updated_at")}).returning(*submissions.c)

    @classmethod
    def connect(cls, url: str) -> SqlIndex:
        engine = make_engine(url)
        relaxed = make_engine(url, durable=False) if engine.dialect.name == "sqlite" else None
        index = cls(engine, relaxed_engine=relaxed, reader_engine=make_engine(url, autocommit=True))
        index.migrate()
        return index

    def migrate(self) -> None:
        """Create missing tables (idempotent; safe when several processes start together)."""
        with self._tx() as conn:
            metadata.create_all(conn, checkfirst=True)
            _add_missing_columns(conn)

    @property
    def engine(self) -> Engine:
        """The durable engine (other stores on the same database share it: storage.sql.mailbox)."""
        return self._engine

    @property
    def reader_engine(self) -> Engine:
        """The autocommit engine for one-statement reads (shared by the stores beside this index)."""
        return self._reader

    def dispose(self) -> None:
        self._engine.dispose()
        self._relaxed.dispose()
        self._reader.dispose()

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[Connection]:
        with db_errors(), (self._engine if durable else self._relaxed).begin() as conn:
            if not durable and self._postgres:
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One-statement reads in autocommit: no BEGIN/ROLLBACK round trips around a primary-key lookup."""
        with db_errors(), self._reader.connect() as conn:
            yield conn

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- submissions -------------------------------------------------------------------------------------

    def create_submission(self, record: SubmissionRecord) -> bool:
        """Record a pending submission; False (and nothing changed) when its id is already recorded.
        Not fsynced on its own: the durable record of an accepted submission is its envelope on the
        bus (and its bytes in S3); if a power cut loses this row, the worker re-creates it when it
        records the outcome."""
        with self._tx(durable=False) as conn:
            return conn.execute(self._new_submission, {
                "submission_id": record.submission_id, "received_at": record.received_at,
                "producer": record.producer, "source_kind": record.source_kind, "status": str(record.status),
                "document_id": None, "category": None, "findings": "[]", "blob_key": record.blob_key,
                "sha256": record.sha256, "size": record.size, "updated_at": _now(),
                "confidentiality": json.dumps(list(record.confidentiality))}).first() is not None

    def forget_submission(self, submission_id: str) -> None:
        with self._tx() as conn:
            conn.execute(submissions.delete().where(
                submissions.c.submission_id == submission_id,
                submissions.c.status == str(SubmissionStatus.PENDING)))

    def submission(self, submission_id: str) -> SubmissionRecord | None:
        with self._read() as conn:
            row = conn.execute(submissions.select().where(
                submissions.c.submission_id == submission_id)).mappings().first()
        return None if row is None else _submission_from_row(row)

    def reject(self, envelope: Envelope, findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        with self._tx() as conn:
            return self._finish(conn, envelope, SubmissionStatus.REJECTED, None, findings)

    def complete(self, envelope: Envelope, findings: tuple[dict[str, Any], ...] = ()) -> SubmissionRecord:
        """Mark a submission that indexes no document of its own (a mail, filed in mailboxes) as done."""
        with self._tx() as conn:
            return self._finish(conn, envelope, SubmissionStatus.INDEXED, None, findings)

    def index_document(self, envelope: Envelope, document: DocumentRecord,
                       findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        with self._tx() as conn:
            self._lock_related(conn, document)
            owner = self._insert_document(conn, document)
            if owner != envelope.submission_id:
                return self._finish(conn, envelope, SubmissionStatus.DUPLICATE, document,
                                    (*findings, _duplicate_finding(owner)))
            self._link_replacements(conn, document)
            return self._finish(conn, envelope, SubmissionStatus.INDEXED, document, findings)

    def _insert_document(self, conn: Connection, doc: DocumentRecord) -> str:
        """Insert once; return the submission that owns the document id (ours, or an earlier one)."""
        values = {**_document_row(doc), "indexed_at": _now()}
        inserted = conn.execute(self._new_document, values).scalar()
        if inserted is not None:
            return str(inserted)
        owner = conn.execute(sa.select(documents.c.submission_id).where(
            documents.c.document_id == doc.document_id)).scalar_one()
        return str(owner)

    def _lock_related(self, conn: Connection, doc: DocumentRecord) -> None:
        """PostgreSQL (READ COMMITTED): serialise a document with the ones it replaces, so a parent and
        its replacement indexed at the same moment still see each other.  Unrelated documents never
        wait for each other.  SQLite serialises writers already."""
        if not self._postgres:
            return
        for key in sorted({doc.document_id, *doc.replaces}):
            conn.execute(self._advisory_lock, {"p_key": key})

    def _link_replacements(self, conn: Connection, doc: DocumentRecord) -> None:
        """RPLC: the parents this document replaces become deprecated (both kept); a document that
        arrived earlier and already names this one as its parent deprecates this one."""
        if doc.replaces:
            conn.execute(self._insert(links).values(
                [{"parent_id": parent, "child_id": doc.document_id} for parent in doc.replaces]
            ).on_conflict_do_nothing(index_elements=["parent_id", "child_id"]))
            conn.execute(documents.update().where(
                documents.c.document_id.in_(doc.replaces), documents.c.patient_ins == doc.patient_ins,
                documents.c.document_id != doc.document_id,
            ).values(status="deprecated", replaced_by=doc.document_id))
        successor = conn.execute(self._successor, {"p_doc": doc.document_id, "p_ins": doc.patient_ins}).scalar()
        if successor is not None:
            conn.execute(documents.update().where(documents.c.document_id == doc.document_id).values(
                status="deprecated", replaced_by=successor))

    def _finish(self, conn: Connection, envelope: Envelope, status: SubmissionStatus,
                document: DocumentRecord | None, findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        """Record a final outcome; creates the row if intake's row was lost, never downgrades."""
        values = {"status": str(status), "document_id": document.document_id if document else None,
                  "category": document.category if document else None,
                  "findings": json.dumps(list(findings)), "updated_at": _now()}
        updated = conn.execute(self._close_submission, {
            "p_id": envelope.submission_id, **{f"p_{k}": v for k, v in values.items()}}).mappings().first()
        if updated is not None:
            return _submission_from_row(updated)
        conn.execute(self._insert(submissions).values(
            submission_id=envelope.submission_id, received_at=envelope.received_at,
            producer=envelope.source.producer, source_kind=envelope.source.kind, blob_key=envelope.raw.key,
            sha256=envelope.raw.sha256, size=envelope.raw.size,
            confidentiality=json.dumps(list(envelope.confidentiality)), **values,
        ).on_conflict_do_nothing(index_elements=["submission_id"]))
        row = conn.execute(submissions.select().where(
            submissions.c.submission_id == envelope.submission_id)).mappings().one()
        return _submission_from_row(row)

    # -- patients ----------------------------------------------------------------------------------------

    def patient(self, ins: str) -> PatientRecord | None:
        with self._read() as conn:
            row = conn.execute(self._patient_by_ins, {"p_ins": ins}).mappings().first()
        if row is None:
            return None
        fields = {k: v for k, v in row.items() if k not in ("updated_at", "status")}
        return PatientRecord(**fields, status=PatientStatus(row["status"]))

    def upsert_patients(self, records: Sequence[PatientRecord]) -> int:
        """Insert or update patients by INS (a roster re-import updates traits, contacts and status)."""
        if not records:
            return 0
        rows = [{**r.to_dict(), "updated_at": _now()} for r in records]
        with self._tx() as conn:
            stmt = self._insert(patients)
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
        with self._read() as conn:
            return [_document_from_row(row) for row in conn.execute(stmt).mappings()]

    def document(self, document_id: str) -> DocumentRecord | None:
        with self._read() as conn:
            row = conn.execute(documents.select().where(
                documents.c.document_id == document_id)).mappings().first()
        return None if row is None else _document_from_row(row)

    def stale_pending(self, older_than: datetime, limit: int = 100) -> list[SubmissionRecord]:
        """Pending submissions received before `older_than` (for the recovery sweep)."""
        with self._read() as conn:
            rows = conn.execute(submissions.select().where(
                submissions.c.status == str(SubmissionStatus.PENDING),
                submissions.c.received_at < older_than).limit(limit)).mappings().all()
        return [_submission_from_row(r) for r in rows]


#: columns added after a table's first release: (table, column, DDL type and default)
ADDED_COLUMNS = (("submissions", "confidentiality", "TEXT NOT NULL DEFAULT '[]'"),)


def _add_missing_columns(conn: Connection) -> None:
    """Bring a database made by an earlier release up to date (create_all never alters a table)."""
    inspector = sa.inspect(conn)
    for table, column, ddl in ADDED_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


@contextmanager
def db_errors() -> Iterator[None]:
    """Database errors become IndexUnavailable (transient: retried, or 503) at this boundary."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise IndexUnavailable(f"index database unavailable: {type(exc.orig).__name__}") from exc
    except sa.exc.InterfaceError as exc:
        raise IndexUnavailable("index database connection lost") from exc


def _duplicate_finding(owner: str) -> dict[str, Any]:
    return {"rule": "document.duplicate", "location": "/ClinicalDocument/id", "severity": "warning",
            "code": None, "message_fr": f"Ce document (même id) a déjà été indexé par la soumission {owner}; "
            "rien n'a été modifié. Pour le remplacer, envoyez une nouvelle version avec relatedDocument RPLC.",
            "message_en": f"A document with the same id was already indexed by submission {owner}; nothing "
            "was changed. To replace it, send a new version with a relatedDocument of typeCode RPLC."}


def _submission_from_row(row: Any) -> SubmissionRecord:
    return SubmissionRecord(
        submission_id=row["submission_id"], received_at=_aware(row["received_at"]) or _now(),
        producer=row["producer"], source_kind=row["source_kind"], status=SubmissionStatus(row["status"]),
        document_id=row["document_id"], category=row["category"], findings=tuple(json.loads(row["findings"] or "[]")),
        blob_key=row["blob_key"], sha256=row["sha256"], size=row["size"], updated_at=_aware(row["updated_at"]),
        confidentiality=tuple(json.loads(row["confidentiality"] or "[]")))


def _document_row(doc: DocumentRecord) -> dict[str, Any]:
    row = {f: getattr(doc, f) for f in (
        "document_id", "patient_ins", "submission_id", "blob_bucket", "blob_key", "sha256", "size", "type_code",
        "type_label", "class_code", "category", "format_code", "level", "title", "effective_time", "service_date",
        "author_id", "custodian_id", "replaced_by", "status")}
    row["confidentiality"] = json.dumps(list(doc.confidentiality))
    row["replaces"] = json.dumps(list(doc.replaces))
    return row


def _document_from_row(row: Any) -> DocumentRecord:
    data = dict(row)
    data["confidentiality"] = tuple(json.loads(data["confidentiality"]))
    data["replaces"] = tuple(json.loads(data["replaces"]))
    data["indexed_at"] = _aware(data["indexed_at"])
    return DocumentRecord(**data)
