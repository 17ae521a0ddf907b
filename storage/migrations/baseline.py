"""The index database's schema as the hub made it before migrations (commit 56d1499), frozen.

Owns: BASELINE, a private MetaData with every table, column, key and index that `create_all` plus the
stores' ad-hoc ALTER TABLE made then, written out in full; LATE_COLUMNS, the columns a database of an
earlier release may still lack (that ALTER TABLE added them).  The first revision creates these tables,
or adopts a database that has them already (versions/r0001_baseline.py).
Rule: never edited: a schema change is a new revision, never a change here (the models live in the stores;
tests/integration/test_migrations.py checks that the revisions and the models agree).
Does not: know the stores (their tables are the models, storage.sql.schema).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

BASELINE = sa.MetaData()


def _req(name: str, type_: Any, *args: Any, **kwargs: Any) -> sa.Column[Any]:
    """A NOT NULL column."""
    return sa.Column(name, type_, *args, nullable=False, **kwargs)


api_tokens = sa.Table(
    "api_tokens", BASELINE,
    _req("token_sha256", sa.String(64)),
    _req("name", sa.String(128)),
    _req("role", sa.String(16)),
    _req("ins", sa.String(15)),
    _req("issued_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("token_sha256"),
)
sa.Index("ix_api_tokens_ins", api_tokens.c.ins)

audit_head = sa.Table(
    "audit_head", BASELINE,
    _req("id", sa.Integer, autoincrement=False),
    _req("seq", sa.BigInteger),
    _req("hash", sa.String(64)),
    sa.PrimaryKeyConstraint("id"),
)

audit_trail = sa.Table(
    "audit_trail", BASELINE,
    _req("seq", sa.BigInteger, autoincrement=False),
    sa.Column("key", sa.String(256)),
    _req("at", sa.DateTime(timezone=True)),
    _req("ins", sa.String(64)),
    _req("actor_kind", sa.String(32)),
    _req("actor_id", sa.String(256)),
    _req("action", sa.String(64)),
    _req("target", sa.String(300)),
    _req("outcome", sa.String(16)),
    sa.Column("detail", sa.Text),
    _req("redacted", sa.Boolean),
    _req("body_sha256", sa.String(64)),
    _req("prev_hash", sa.String(64)),
    _req("entry_hash", sa.String(64)),
    sa.PrimaryKeyConstraint("seq"),
    sa.UniqueConstraint("key"),
)
sa.Index("ix_audit_trail_ins", audit_trail.c.ins, audit_trail.c.seq)

blob_erasures = sa.Table(
    "blob_erasures", BASELINE,
    _req("bucket", sa.String(128)),
    _req("blob_key", sa.String(256)),
    _req("sha256", sa.String(64)),
    _req("size", sa.BigInteger),
    _req("queued_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("bucket", "blob_key"),
)

blocked_professionals = sa.Table(
    "blocked_professionals", BASELINE,
    _req("ins", sa.String(15)),
    _req("idnps", sa.String(32)),
    sa.PrimaryKeyConstraint("ins", "idnps"),
)

deliveries = sa.Table(
    "deliveries", BASELINE,
    _req("submission_id", sa.String(64)),
    _req("recipient", sa.String(320)),
    _req("route", sa.String(16)),
    _req("state", sa.String(16)),
    _req("attempts", sa.Integer),
    _req("last_reply", sa.Text),
    _req("updated_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("submission_id", "recipient"),
)

document_controls = sa.Table(
    "document_controls", BASELINE,
    _req("document_id", sa.String(256)),
    _req("ins", sa.String(15)),
    _req("masked_by_patient", sa.Boolean),
    _req("hidden_from_representatives", sa.Boolean),
    _req("invisible_lifted", sa.Boolean),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    _req("deleted_by", sa.String(64)),
    _req("updated_at", sa.DateTime(timezone=True)),
    _req("updated_by", sa.String(64)),
    sa.PrimaryKeyConstraint("document_id"),
)
sa.Index("ix_document_controls_ins", document_controls.c.ins)

document_links = sa.Table(
    "document_links", BASELINE,
    _req("parent_id", sa.String(256)),
    _req("child_id", sa.String(256)),
    sa.PrimaryKeyConstraint("parent_id", "child_id"),
)

documents = sa.Table(
    "documents", BASELINE,
    _req("document_id", sa.String(256)),
    _req("patient_ins", sa.String(15)),
    _req("submission_id", sa.String(64)),
    _req("blob_bucket", sa.String(128)),
    _req("blob_key", sa.String(256)),
    _req("sha256", sa.String(64)),
    _req("size", sa.BigInteger),
    _req("type_code", sa.String(256)),
    _req("class_code", sa.String(256)),
    _req("category", sa.String(256)),
    _req("format_code", sa.String(256)),
    _req("level", sa.String(256)),
    _req("effective_time", sa.String(256)),
    _req("service_date", sa.String(256)),
    _req("type_label", sa.Text),
    _req("title", sa.Text),
    _req("confidentiality", sa.Text),
    sa.Column("author_id", sa.String(256)),
    sa.Column("custodian_id", sa.String(256)),
    _req("replaces", sa.Text),
    sa.Column("replaced_by", sa.String(256)),
    _req("status", sa.String(16)),
    _req("indexed_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("document_id"),
)
sa.Index("ix_documents_patient", documents.c.patient_ins, documents.c.service_date)

insurer_documents = sa.Table(
    "insurer_documents", BASELINE,
    _req("document_key", sa.String(256)),
    _req("ins", sa.String(15)),
    _req("blob_bucket", sa.String(128)),
    _req("blob_key", sa.String(256)),
    _req("sha256", sa.String(64)),
    _req("size", sa.BigInteger),
    _req("received_at", sa.DateTime(timezone=True)),
    sa.Column("filed_submission", sa.String(64)),
    sa.Column("release_after", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("document_key"),
)
sa.Index("ix_insurer_documents_due", insurer_documents.c.filed_submission, insurer_documents.c.release_after)
sa.Index("ix_insurer_documents_pending", insurer_documents.c.filed_submission, insurer_documents.c.ins)

legal_representatives = sa.Table(
    "legal_representatives", BASELINE,
    _req("ins", sa.String(15)),
    _req("representative_ins", sa.String(15)),
    sa.PrimaryKeyConstraint("ins", "representative_ins"),
)

letter_batches = sa.Table(
    "letter_batches", BASELINE,
    _req("batch_id", sa.String(64)),
    _req("period", sa.String(16)),
    _req("created_at", sa.DateTime(timezone=True)),
    _req("letters", sa.Integer),
    _req("bucket", sa.String(128)),
    _req("pdf_key", sa.String(256)),
    _req("sha256", sa.String(64)),
    _req("size", sa.BigInteger),
    sa.PrimaryKeyConstraint("batch_id"),
)

mail_filing_documents = sa.Table(
    "mail_filing_documents", BASELINE,
    _req("submission_id", sa.String(64)),
    _req("message_id", sa.String(64)),
    _req("position", sa.Integer),
    _req("entry", sa.Text),
    sa.PrimaryKeyConstraint("submission_id"),
)
sa.Index("ix_mail_filing_documents_message_id", mail_filing_documents.c.message_id)

mail_filings = sa.Table(
    "mail_filings", BASELINE,
    _req("message_id", sa.String(64)),
    _req("mail_submission_id", sa.String(64)),
    _req("mailbox", sa.String(320)),
    _req("received_at", sa.DateTime(timezone=True)),
    _req("findings", sa.Text),
    sa.Column("report_by", sa.String(64)),
    sa.Column("reported_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("message_id"),
)

messages = sa.Table(
    "messages", BASELINE,
    _req("message_id", sa.String(64)),
    _req("mailbox", sa.String(320)),
    _req("submission_id", sa.String(64)),
    _req("direction", sa.String(8)),
    _req("correspondent", sa.String(320)),
    _req("subject", sa.Text),
    _req("rfc_message_id", sa.Text),
    _req("in_reply_to", sa.Text),
    _req("blob_bucket", sa.String(128)),
    _req("blob_key", sa.String(256)),
    _req("sha256", sa.String(64)),
    _req("size", sa.BigInteger),
    _req("received_at", sa.DateTime(timezone=True)),
    _req("closed", sa.Boolean),
    sa.Column("read_at", sa.DateTime(timezone=True)),
    _req("attachments", sa.Text),
    _req("documents", sa.Text),
    sa.PrimaryKeyConstraint("message_id"),
    sa.UniqueConstraint("submission_id", "mailbox", name="uq_messages_copy"),
)
sa.Index("ix_messages_mailbox", messages.c.mailbox, messages.c.received_at)

notices = sa.Table(
    "notices", BASELINE,
    _req("seq", sa.Integer, sa.Identity()),
    _req("notice_id", sa.String(40)),
    _req("event_id", sa.String(300)),
    _req("kind", sa.String(32)),
    _req("ins", sa.String(15)),
    _req("about_ins", sa.String(15)),
    _req("channel", sa.String(16)),
    _req("address", sa.Text),
    _req("state", sa.String(16)),
    _req("created_at", sa.DateTime(timezone=True)),
    _req("due_at", sa.DateTime(timezone=True)),
    _req("attempts", sa.Integer),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("read_at", sa.DateTime(timezone=True)),
    _req("batch_id", sa.String(64)),
    _req("provider_ref", sa.String(256)),
    _req("last_error", sa.Text),
    _req("fallback_of", sa.String(40)),
    _req("code", sa.String(64)),
    sa.Column("code_expires", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("seq"),
    sa.UniqueConstraint("notice_id"),
)
sa.Index("ix_notices_ins", notices.c.ins, notices.c.seq)
sa.Index("ix_notices_provider", notices.c.provider_ref)
sa.Index("ix_notices_queue", notices.c.state, notices.c.channel, notices.c.due_at)

notification_contacts = sa.Table(
    "notification_contacts", BASELINE,
    _req("ins", sa.String(15)),
    _req("email", sa.Text),
    _req("phone", sa.String(32)),
    _req("pending_email", sa.Text),
    _req("pending_phone", sa.String(32)),
    _req("pending_sha256", sa.String(64)),
    sa.Column("pending_expires", sa.DateTime(timezone=True)),
    _req("pending_attempts", sa.Integer),
    _req("updated_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("ins"),
)

notification_preferences = sa.Table(
    "notification_preferences", BASELINE,
    _req("ins", sa.String(15)),
    _req("choices", sa.Text),
    sa.PrimaryKeyConstraint("ins"),
)

patient_access_settings = sa.Table(
    "patient_access_settings", BASELINE,
    _req("ins", sa.String(15)),
    _req("bris_de_glace_allowed", sa.Boolean),
    _req("regulation_allowed", sa.Boolean),
    sa.PrimaryKeyConstraint("ins"),
)

patients = sa.Table(
    "patients", BASELINE,
    _req("ins", sa.String(15)),
    _req("oid", sa.String(64)),
    _req("birth_name", sa.Text),
    _req("given_names", sa.Text),
    _req("birth_date", sa.Text),
    _req("sex", sa.Text),
    _req("birth_place", sa.Text),
    _req("email", sa.Text),
    _req("phone", sa.Text),
    _req("postal_address", sa.Text),
    _req("status", sa.String(16)),
    _req("updated_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("ins"),
)

professional_access = sa.Table(
    "professional_access", BASELINE,
    _req("ins", sa.String(15)),
    _req("idnps", sa.String(32)),
    _req("first_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("ins", "idnps"),
)

profiles = sa.Table(
    "profiles", BASELINE,
    _req("ins", sa.String(15)),
    _req("status", sa.String(16)),
    _req("created_at", sa.DateTime(timezone=True)),
    sa.Column("code_expires_at", sa.DateTime(timezone=True)),
    sa.Column("activated_at", sa.DateTime(timezone=True)),
    _req("activation", sa.String(16)),
    sa.Column("opposed_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("purge_after", sa.DateTime(timezone=True)),
    sa.Column("purged_at", sa.DateTime(timezone=True)),
    _req("failed_attempts", sa.Integer),
    sa.Column("locked_until", sa.DateTime(timezone=True)),
    _req("receipt_key", sa.String(256)),
    _req("receipt_bucket", sa.String(128)),
    _req("receipt_sha256", sa.String(64)),
    _req("receipt_size", sa.BigInteger),
    _req("code_generation", sa.Integer),
    _req("announced_generation", sa.Integer),
    _req("code_sha256", sa.String(64)),
    _req("vitale_sha256", sa.String(64)),
    _req("updated_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("ins"),
)
sa.Index("ix_profiles_code_expiry", profiles.c.status, profiles.c.code_expires_at)
sa.Index("ix_profiles_purge", profiles.c.status, profiles.c.purge_after)

push_devices = sa.Table(
    "push_devices", BASELINE,
    _req("ins", sa.String(15)),
    _req("endpoint", sa.String(1000)),
    _req("added_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("ins", "endpoint"),
)

reimbursed_acts = sa.Table(
    "reimbursed_acts", BASELINE,
    _req("act_ref", sa.String(64)),
    _req("ins", sa.String(15)),
    _req("batch_id", sa.String(64)),
    _req("fields", sa.Text),
    _req("received_at", sa.DateTime(timezone=True)),
    sa.Column("filed_submission", sa.String(64)),
    sa.Column("release_after", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("act_ref"),
)
sa.Index("ix_reimbursed_acts_due", reimbursed_acts.c.filed_submission, reimbursed_acts.c.release_after)
sa.Index("ix_reimbursed_acts_ins", reimbursed_acts.c.ins, reimbursed_acts.c.received_at)
sa.Index("ix_reimbursed_acts_pending", reimbursed_acts.c.filed_submission, reimbursed_acts.c.ins)

submissions = sa.Table(
    "submissions", BASELINE,
    _req("submission_id", sa.String(64)),
    _req("received_at", sa.DateTime(timezone=True)),
    _req("producer", sa.String(128)),
    _req("source_kind", sa.String(32)),
    _req("status", sa.String(16)),
    sa.Column("document_id", sa.String(256)),
    sa.Column("category", sa.String(32)),
    _req("findings", sa.Text),
    _req("blob_key", sa.String(256)),
    _req("sha256", sa.String(64)),
    _req("size", sa.BigInteger),
    _req("updated_at", sa.DateTime(timezone=True)),
    _req("confidentiality", sa.Text, server_default="[]"),
    sa.PrimaryKeyConstraint("submission_id"),
)
sa.Index("ix_submissions_status", submissions.c.status)

#: (table, column): added by an ALTER TABLE after the table's first release (an older database may lack it)
LATE_COLUMNS: tuple[tuple[str, str], ...] = (("submissions", "confidentiality"),)
