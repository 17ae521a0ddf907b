"""Reimbursed acts and insurer documents held until the patient's history may be filed, on the index's database.

Owns: the tables and transactions behind pipelines.insurer.core.history.ReimbursementHolds.
Rule 1: an act is inserted once per insurer act reference (INSERT ... ON CONFLICT DO NOTHING, one transaction
per batch): a re-delivered batch adds nothing, an overlapping one only its new acts.  The new rows are counted
with RETURNING, which both back ends answer (psycopg's rowcount is -1 for such an insert).
Rule 2: an insurer document is inserted once per CDA id (root^extension), after its bytes are in the object
store; a re-delivery finds its row.
Rule 3: `mark_filed` only fills an empty `filed_submission`: an item keeps the submission that filed it first.
Does not: parse, decide when to file (pipelines.insurer.reimbursements) or log patient data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.envelope import BlobRef
from pipelines.insurer.core.history import HeldAct, HeldDocument, ReimbursedAct
from storage.sql.database import SqlStore, aware, metadata, when

reimbursed_acts = sa.Table(
    "reimbursed_acts", metadata,
    sa.Column("act_ref", sa.String(64), primary_key=True),
    sa.Column("ins", sa.String(15), nullable=False),
    sa.Column("batch_id", sa.String(64), nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("filed_submission", sa.String(64)),
    sa.Column("release_after", sa.DateTime(timezone=True)),
    sa.Index("ix_reimbursed_acts_pending", "filed_submission", "ins"),
    sa.Index("ix_reimbursed_acts_due", "filed_submission", "release_after"),
    sa.Index("ix_reimbursed_acts_ins", "ins", "received_at"),
)

insurer_documents = sa.Table(
    "insurer_documents", metadata,
    sa.Column("document_key", sa.String(256), primary_key=True),
    sa.Column("ins", sa.String(15), nullable=False),
    sa.Column("blob_bucket", sa.String(128), nullable=False),
    sa.Column("blob_key", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("filed_submission", sa.String(64)),
    sa.Column("release_after", sa.DateTime(timezone=True)),
    sa.Index("ix_insurer_documents_pending", "filed_submission", "ins"),
    sa.Index("ix_insurer_documents_due", "filed_submission", "release_after"),
)

TABLES = [reimbursed_acts, insurer_documents]
#: rows per INSERT statement (well under SQLite's bound-parameter limit).
_CHUNK = 500


class SqlReimbursements(SqlStore):
    """pipelines.insurer.core.history.ReimbursementHolds on the index's database (SQLite or PostgreSQL, same code)."""

    def hold_acts(self, batch_id: str, acts: Sequence[ReimbursedAct], *, received_at: datetime,
                  release_after: Mapping[str, datetime | None] | None = None) -> int:
        release = release_after or {}
        rows = [{"act_ref": a.act_ref, "ins": a.ins, "batch_id": batch_id, "fields": json.dumps(a.to_dict()),
                 "received_at": received_at, "filed_submission": None, "release_after": release.get(a.ins)}
                for a in acts]
        added = 0
        with self._db.begin() as conn:
            for start in range(0, len(rows), _CHUNK):
                statement = self._db.insert(reimbursed_acts).values(rows[start:start + _CHUNK]).on_conflict_do_nothing(
                    index_elements=["act_ref"]).returning(reimbursed_acts.c.act_ref)
                added += len(conn.execute(statement).all())
        return added

    def hold_document(self, document: HeldDocument) -> bool:
        row = {"document_key": document.document_key, "ins": document.ins, "blob_bucket": document.blob.bucket,
               "blob_key": document.blob.key, "sha256": document.blob.sha256, "size": document.blob.size,
               "received_at": document.received_at, "filed_submission": None,
               "release_after": document.release_after}
        statement = self._db.insert(insurer_documents).values(row).on_conflict_do_nothing(
            index_elements=["document_key"]).returning(insurer_documents.c.document_key)
        with self._db.begin() as conn:
            return conn.execute(statement).first() is not None

    def schedule(self, ins: str, release_after: datetime) -> int:
        changed = 0
        with self._db.begin() as conn:
            for table in (reimbursed_acts, insurer_documents):
                changed += int(conn.execute(table.update().where(
                    table.c.ins == ins, table.c.filed_submission.is_(None)).values(
                    release_after=release_after)).rowcount)
        return changed

    def pending_patients(self, limit: int = 500, *, after: str = "", due_before: datetime | None = None) -> list[str]:
        def pending(table: sa.Table) -> sa.Select[Any]:
            query = sa.select(table.c.ins).where(table.c.filed_submission.is_(None), table.c.ins > after)
            return query.where(table.c.release_after <= due_before) if due_before is not None else query
        acts, documents = pending(reimbursed_acts), pending(insurer_documents)
        both = sa.union(acts, documents).subquery()
        query = sa.select(both.c.ins).order_by(both.c.ins).limit(limit)
        with self._db.read() as conn:
            return [str(r.ins) for r in conn.execute(query)]

    def pending_acts(self, ins: str) -> list[HeldAct]:
        query = reimbursed_acts.select().where(reimbursed_acts.c.ins == ins,
                                               reimbursed_acts.c.filed_submission.is_(None)).order_by(
            reimbursed_acts.c.received_at, reimbursed_acts.c.act_ref)
        with self._db.read() as conn:
            return [_act_from_row(r) for r in conn.execute(query)]

    def pending_documents(self, ins: str) -> list[HeldDocument]:
        query = insurer_documents.select().where(insurer_documents.c.ins == ins,
                                                 insurer_documents.c.filed_submission.is_(None)).order_by(
            insurer_documents.c.received_at, insurer_documents.c.document_key)
        with self._db.read() as conn:
            return [_document_from_row(r) for r in conn.execute(query)]

    def mark_filed(self, submission_id: str, *, act_refs: Sequence[str] = (),
                   document_keys: Sequence[str] = ()) -> int:
        changed = 0
        with self._db.begin() as conn:
            for table, column, keys in ((reimbursed_acts, reimbursed_acts.c.act_ref, list(act_refs)),
                                        (insurer_documents, insurer_documents.c.document_key, list(document_keys))):
                for start in range(0, len(keys), _CHUNK):
                    changed += int(conn.execute(table.update().where(
                        column.in_(keys[start:start + _CHUNK]), table.c.filed_submission.is_(None)).values(
                        filed_submission=submission_id)).rowcount)
        return changed

    def held_act(self, act_ref: str) -> HeldAct | None:
        """One act by its reference, filed or not (for operators and tests)."""
        with self._db.read() as conn:
            row = conn.execute(reimbursed_acts.select().where(reimbursed_acts.c.act_ref == act_ref)).first()
        return _act_from_row(row) if row is not None else None

    def held_document(self, document_key: str) -> HeldDocument | None:
        """One insurer document by its CDA id, filed or not (for operators and tests)."""
        with self._db.read() as conn:
            row = conn.execute(insurer_documents.select().where(
                insurer_documents.c.document_key == document_key)).first()
        return _document_from_row(row) if row is not None else None


def _act_from_row(r: Any) -> HeldAct:
    return HeldAct(act=ReimbursedAct.from_dict(json.loads(r.fields)), batch_id=r.batch_id,
                   received_at=when(r.received_at), filed_submission=r.filed_submission)


def _document_from_row(r: Any) -> HeldDocument:
    return HeldDocument(document_key=r.document_key, ins=r.ins,
                        blob=BlobRef(bucket=r.blob_bucket, key=r.blob_key, sha256=r.sha256, size=r.size),
                        received_at=when(r.received_at), filed_submission=r.filed_submission,
                        release_after=aware(r.release_after))
