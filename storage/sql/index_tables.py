"""The per-patient index's tables (patients, submissions, documents, document_links) and their rows.

Owns: the four tables (the models: storage/migrations makes them) and the mapping between their rows and
hub.records (SubmissionRecord, DocumentRecord), shared by the index's reads (storage.sql.index) and its
writes (storage.sql.index_writes).
Does not: run a statement.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from hub.records import DocumentRecord, SubmissionRecord, SubmissionStatus
from storage.sql.database import aware, metadata, utc_now

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

TABLES = [patients, submissions, documents, links]


def submission_from_row(row: Any) -> SubmissionRecord:
    return SubmissionRecord(
        submission_id=row["submission_id"], received_at=aware(row["received_at"]) or utc_now(),
        producer=row["producer"], source_kind=row["source_kind"], status=SubmissionStatus(row["status"]),
        document_id=row["document_id"], category=row["category"], findings=tuple(json.loads(row["findings"] or "[]")),
        blob_key=row["blob_key"], sha256=row["sha256"], size=row["size"], updated_at=aware(row["updated_at"]),
        confidentiality=tuple(json.loads(row["confidentiality"] or "[]")))


def document_row(doc: DocumentRecord) -> dict[str, Any]:
    row = {f: getattr(doc, f) for f in (
        "document_id", "patient_ins", "submission_id", "blob_bucket", "blob_key", "sha256", "size", "type_code",
        "type_label", "class_code", "category", "format_code", "level", "title", "effective_time", "service_date",
        "author_id", "custodian_id", "replaced_by", "status")}
    row["confidentiality"] = json.dumps(list(doc.confidentiality))
    row["replaces"] = json.dumps(list(doc.replaces))
    return row


def document_from_row(row: Any) -> DocumentRecord:
    data = dict(row)
    data["confidentiality"] = tuple(json.loads(data["confidentiality"]))
    data["replaces"] = tuple(json.loads(data["replaces"]))
    data["indexed_at"] = aware(data["indexed_at"])
    return DocumentRecord(**data)
