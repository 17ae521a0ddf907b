"""The index's writes that record a submission's outcome: the transactions behind SqlIndex's Rules 1 and 2.

Owns: creating a pending submission, closing it (indexed, duplicate, rejected; re-created if intake's row
was lost, never downgraded) and indexing a document with its replacements (RPLC), each in one transaction,
with the hot statements built once.
Rule 1: a document id is inserted once (INSERT ... ON CONFLICT DO NOTHING); another submission with the
same id gets `duplicate`, the same one redelivered finds its own row and `indexed` again.
Rule 2: a document and its submission's outcome are written in one transaction.
Does not: read for the API (storage.sql.index) or decide validity (pipelines.cda).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.envelope import Envelope
from hub.records import DocumentRecord, SubmissionRecord, SubmissionStatus
from storage.sql.database import Database, utc_now
from storage.sql.index_tables import document_row, documents, links, submission_from_row, submissions

Findings = tuple[dict[str, Any], ...]


class IndexWrites:
    """hub.ports.Index's writes on one Database (SqlIndex delegates to it)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        insert = database.insert
        # Hot statements, built once: parameters come at execute time (saves per-call construction).
        self._new_submission = insert(submissions).on_conflict_do_nothing(
            index_elements=["submission_id"]).returning(submissions.c.submission_id)
        self._new_document = insert(documents).on_conflict_do_nothing(
            index_elements=["document_id"]).returning(documents.c.submission_id)
        self._successor = sa.select(documents.c.document_id).join(
            links, links.c.child_id == documents.c.document_id).where(
            links.c.parent_id == sa.bindparam("p_doc"), documents.c.patient_ins == sa.bindparam("p_ins"),
            documents.c.document_id != sa.bindparam("p_doc"))
        self._advisory_lock = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("p_key"))))
        self._close_submission = submissions.update().where(
            submissions.c.submission_id == sa.bindparam("p_id"),
            submissions.c.status == str(SubmissionStatus.PENDING),
        ).values({c: sa.bindparam(f"p_{c}") for c in ("status", "document_id", "category", "findings",
                                                      "updated_at")}).returning(*submissions.c)

    def create_submission(self, record: SubmissionRecord) -> bool:
        """See SqlIndex.create_submission: not fsynced on its own (the relaxed transaction)."""
        with self._db.begin(durable=False) as conn:
            return conn.execute(self._new_submission, {
                "submission_id": record.submission_id, "received_at": record.received_at,
                "producer": record.producer, "source_kind": record.source_kind, "status": str(record.status),
                "document_id": None, "category": None, "findings": "[]", "blob_key": record.blob_key,
                "sha256": record.sha256, "size": record.size, "updated_at": utc_now(),
                "confidentiality": json.dumps(list(record.confidentiality))}).first() is not None

    def finish(self, envelope: Envelope, status: SubmissionStatus, findings: Findings) -> SubmissionRecord:
        """Close a submission that indexes no document (rejected, or a mail filed in mailboxes)."""
        with self._db.begin() as conn:
            return self._finish(conn, envelope, status, None, findings)

    def index_document(self, envelope: Envelope, document: DocumentRecord, findings: Findings) -> SubmissionRecord:
        with self._db.begin() as conn:
            self._lock_related(conn, document)
            owner = self._insert_document(conn, document)
            if owner != envelope.submission_id:
                return self._finish(conn, envelope, SubmissionStatus.DUPLICATE, document,
                                    (*findings, _duplicate_finding(owner)))
            self._link_replacements(conn, document)
            return self._finish(conn, envelope, SubmissionStatus.INDEXED, document, findings)

    def _insert_document(self, conn: Connection, doc: DocumentRecord) -> str:
        """Insert once; return the submission that owns the document id (ours, or an earlier one)."""
        values = {**document_row(doc), "indexed_at": utc_now()}
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
        if not self._db.postgres:
            return
        for key in sorted({doc.document_id, *doc.replaces}):
            conn.execute(self._advisory_lock, {"p_key": key})

    def _link_replacements(self, conn: Connection, doc: DocumentRecord) -> None:
        """RPLC: the parents this document replaces become deprecated (both kept); a document that
        arrived earlier and already names this one as its parent deprecates this one."""
        if doc.replaces:
            conn.execute(self._db.insert(links).values(
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
                document: DocumentRecord | None, findings: Findings) -> SubmissionRecord:
        """Record a final outcome; creates the row if intake's row was lost, never downgrades."""
        values = {"status": str(status), "document_id": document.document_id if document else None,
                  "category": document.category if document else None,
                  "findings": json.dumps(list(findings)), "updated_at": utc_now()}
        updated = conn.execute(self._close_submission, {
            "p_id": envelope.submission_id, **{f"p_{k}": v for k, v in values.items()}}).mappings().first()
        if updated is not None:
            return submission_from_row(updated)
        conn.execute(self._db.insert(submissions).values(
            submission_id=envelope.submission_id, received_at=envelope.received_at,
            producer=envelope.source.producer, source_kind=envelope.source.kind, blob_key=envelope.raw.key,
            sha256=envelope.raw.sha256, size=envelope.raw.size,
            confidentiality=json.dumps(list(envelope.confidentiality)), **values,
        ).on_conflict_do_nothing(index_elements=["submission_id"]))
        row = conn.execute(submissions.select().where(
            submissions.c.submission_id == envelope.submission_id)).mappings().one()
        return submission_from_row(row)


def _duplicate_finding(owner: str) -> dict[str, Any]:
    return {"rule": "document.duplicate", "location": "/ClinicalDocument/id", "severity": "warning",
            "code": None, "message_fr": f"Ce document (même id) a déjà été indexé par la soumission {owner}; "
            "rien n'a été modifié. Pour le remplacer, envoyez une nouvelle version avec relatedDocument RPLC.",
            "message_en": f"A document with the same id was already indexed by submission {owner}; nothing "
            "was changed. To replace it, send a new version with a relatedDocument of typeCode RPLC."}
