r"""Makes the pre-Alembic fixtures beside this file: an index database as the hub made it before migrations
(commit 56d1499: `create_all` plus the ad-hoc ALTER TABLE in the stores), with a few rows in every table.

Not a test and not run by the test suite: the fixtures are committed (tests/integration/test_migrations.py
upgrades them).  To make them again, run this file with the tree of 56d1499 first on the path:

    git archive 56d1499 | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python tests/data/pre_alembic/make.py \
        tests/data/pre_alembic/index.sqlite3 postgresql+psycopg://postgres@127.0.0.1:5432/meshub_pre_alembic
    pg_dump --no-owner --no-privileges --inserts -d meshub_pre_alembic -h 127.0.0.1 -U postgres \
        | grep -v '^\\' > tests/data/pre_alembic/index.pg.sql

Every value is fixed (ids, times, digests), except the `updated_at` columns the stores stamp themselves.
"""

from __future__ import annotations

# ruff: noqa: I001  (the imports are of the tree of 56d1499: several of its modules are gone from this one)

import sqlite3
import sys
from datetime import UTC, datetime, timedelta

from config.settings import Credential
from hub.actors import Actor, ActorKind
from hub.audit import AuditAction, NewAuditEntry
from hub.envelope import BlobRef, Envelope, Source
from hub.lifecycle import Activation
from hub.notices import (
    Channel,
    EventKind,
    LetterBatch,
    Notice,
    NoticeState,
    Preferences,
)
from hub.records import (
    DeliveryRecord,
    DeliveryState,
    DocumentRecord,
    FiledDocument,
    MailFiling,
    MessageRecord,
    PatientRecord,
    PatientStatus,
    SubmissionRecord,
)
from hub.reimbursements import ActKind, HeldDocument, ReimbursedAct
from storage.audit import SqlAuditTrail
from storage.controls import SqlRecordControls
from storage.index import SqlIndex
from storage.mailbox import SqlMailbox
from storage.notifications import SqlNotifications
from storage.profiles import SqlProfiles
from storage.purge import SqlPurge
from storage.reimbursements import SqlReimbursements
from storage.tokens import SqlTokens

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
OID = "1.2.250.1.213.1.4.10"
KEPT = "279035121518989"      # ANS test INS: has rows in every table
PURGED = "185077512345678"    # purged at the end: a tombstone and objects waiting to be erased
MINOR = "210017512345619"     # represented by KEPT
DOCTOR = Actor(ActorKind.PROFESSIONAL, "810000000001", profession="G15_10")


def blob(name: str, kind: str = "cda") -> BlobRef:
    sha = name.encode().hex().ljust(64, "0")[:64]
    return BlobRef(bucket="meshub", key=f"{kind}/{sha[:2]}/{sha}", sha256=sha, size=100 + len(name))


def envelope(n: int, ins: str, kind: str = "http") -> Envelope:
    return Envelope(submission_id=f"sub-{ins[:4]}-{n}", received_at=NOW + timedelta(minutes=n),
                    source=Source(kind=kind, producer="lab-1"), raw=blob(f"raw-{ins}-{n}"),
                    confidentiality=("N",))


def document(env: Envelope, ins: str, doc_id: str, **changes: object) -> DocumentRecord:
    fields: dict[str, object] = dict(
        document_id=doc_id, patient_ins=ins, submission_id=env.submission_id, blob_bucket="meshub",
        blob_key=env.raw.key, sha256=env.raw.sha256, size=env.raw.size, type_code="11502-2",
        type_label="CR d'examens biologiques", class_code="10", category="BIOLOGIE",
        format_code="urn:ihe:lab:xd-lab:2008", level="N3", confidentiality=("N",), title=f"CR {doc_id}",
        effective_time="20240105120000+0100", service_date="2024-01-05")
    fields.update(changes)
    return DocumentRecord(**fields)


def index_rows(index: SqlIndex) -> None:
    """patients, submissions (pending, indexed, rejected, duplicate), documents, document_links."""
    index.upsert_patients([
        PatientRecord(ins=ins, oid=OID, birth_name="TEST", given_names=given, birth_date=born, sex="F",
                      birth_place="51215", email=f"{given.lower()}@example.org", phone="+33600000000",
                      postal_address="1 rue de Test, 75000 Paris", status=PatientStatus.ACTIVE)
        for ins, given, born in ((KEPT, "Jeanne", "1979-03-01"), (PURGED, "Paule", "1985-07-01"),
                                 (MINOR, "Lou", "2010-01-01"))])
    for ins in (KEPT, PURGED):
        first, second, third, pending = (envelope(n, ins) for n in range(4))
        for env in (first, second, third, pending):
            index.create_submission(SubmissionRecord(
                submission_id=env.submission_id, received_at=env.received_at, producer=env.source.producer,
                source_kind=env.source.kind, blob_key=env.raw.key, sha256=env.raw.sha256, size=env.raw.size,
                confidentiality=env.confidentiality))
        index.index_document(first, document(first, ins, f"1.2.3^{ins}-a"), ())
        index.index_document(second, document(second, ins, f"1.2.3^{ins}-b", replaces=(f"1.2.3^{ins}-a",),
                                              service_date="2024-02-01"), ())
        index.reject(third, ({"rule": "cda.schema", "location": "/ClinicalDocument", "severity": "error"},))
    dup = envelope(9, KEPT)
    index.index_document(dup, document(dup, KEPT, f"1.2.3^{KEPT}-a"), ())


def mailbox_rows(mail: SqlMailbox) -> None:
    for ins in (KEPT, PURGED):
        box = f"{ins}@patient.mssante.fr"
        for n in range(2):
            raw = blob(f"msg-{ins}-{n}", "msg")
            mail.store_message(MessageRecord(
                message_id=f"msg-{ins[:4]}-{n}", mailbox=box, submission_id=f"mail-{ins[:4]}-{n}",
                direction="in", correspondent="dr.house@hopital.mssante.fr", subject=f"Compte rendu {n}",
                rfc_message_id=f"<{n}.{ins}@hopital>", in_reply_to="", blob_bucket=raw.bucket, blob_key=raw.key,
                sha256=raw.sha256, size=raw.size, received_at=NOW + timedelta(hours=n), closed=n == 1,
                attachments=("IHE_XDM.ZIP",), documents=(f"1.2.3^{ins}-a",)))
            mail.record_delivery(DeliveryRecord(
                submission_id=f"mail-{ins[:4]}-{n}", recipient=f"dr{n}@hopital.mssante.fr", route="relay",
                state=DeliveryState.DELIVERED if n else DeliveryState.QUEUED, attempts=n + 1,
                last_reply="250 2.0.0 ok"))
        mail.record_filing(MailFiling(
            message_id=f"msg-{ins[:4]}-0", mail_submission_id=f"mail-{ins[:4]}-0", mailbox=box, received_at=NOW,
            documents=(FiledDocument(f"sub-{ins[:4]}-0", "SUBSET01#Document01"),
                       FiledDocument(f"sub-{ins[:4]}-1", "SUBSET01#Document02")),
            findings=({"rule": "mss.xdm.other-patient", "location": "SUBSET01#Document03"},)))
        mail.claim_report(f"msg-{ins[:4]}-0", by=f"sub-{ins[:4]}-0")


def notification_rows(notes: SqlNotifications) -> None:
    for ins in (KEPT, PURGED):
        batch = [Notice(notice_id=f"n-{ins[:4]}-{channel}", event_id=f"document:1.2.3^{ins}-a",
                        kind=EventKind.NEW_DOCUMENT, ins=ins, about_ins=ins, channel=channel,
                        address=f"{ins[:4]}@example.org" if channel is Channel.EMAIL else "",
                        state=NoticeState.QUEUED, created_at=NOW, due_at=NOW + timedelta(minutes=5))
                 for channel in (Channel.EMAIL, Channel.INAPP, Channel.POSTAL)]
        notes.add(batch)
        notes.finish([f"n-{ins[:4]}-{Channel.EMAIL}"], NoticeState.SENT, at=NOW, provider_ref=f"ref-{ins[:4]}")
        notes.set_preferences(ins, Preferences(email=True, push=False, digest=False, quiet_hours=""))
        notes.add_device(ins, f"https://push.example.org/{ins[:4]}")
        notes.set_contact(ins, email=f"own-{ins[:4]}@example.org", phone="+33611111111")
        notes.record_batch(LetterBatch(batch_id=f"b-{ins[:4]}", period="2026-12", created_at=NOW, letters=1,
                                       bucket="meshub", pdf_key=blob(f"letters-{ins}", "letters").key,
                                       sha256="0" * 64, size=10), [f"n-{ins[:4]}-{Channel.POSTAL}"])
    notes.set_representatives(MINOR, [KEPT])
    notes.set_pending_contact(KEPT, email="new@example.org", phone="", code_sha256="d" * 64,
                              expires=NOW + timedelta(hours=1))


def record_rows(index: SqlIndex) -> None:
    """audit_trail/audit_head, the controls, profiles, the insurer's holds and issued tokens."""
    SqlAuditTrail.beside(index).append([
        NewAuditEntry.by(DOCTOR, action, at=NOW + timedelta(seconds=n), ins=ins, target=f"1.2.3^{ins}-a",
                         detail={"mode": "normal", "note": "é"}, key=f"k-{ins[:4]}-{n}")
        for n, (ins, action) in enumerate([(KEPT, AuditAction.READ), (KEPT, AuditAction.WRITE),
                                           (PURGED, AuditAction.READ)])])
    controls = SqlRecordControls.beside(index)
    for ins in (KEPT, PURGED):
        controls.set_flag(f"1.2.3^{ins}-b", ins, "masked_by_patient", True, by=ins, at=NOW)
        controls.delete(f"1.2.3^{ins}-a", ins, by="810000000001", at=NOW)
        controls.set_emergency(ins, bris_de_glace=False, regulation=None)
        controls.block(ins, "810000000002")
        controls.note_access(ins, "810000000001", NOW)
    profiles = SqlProfiles.beside(index)
    for ins in (KEPT, PURGED, MINOR):
        profiles.register(ins, code_sha256="c" * 64, vitale_sha256="v" * 64, created_at=NOW,
                          expires_at=NOW + timedelta(days=42))
    profiles.transition(KEPT, from_statuses=(PatientStatus.CREATED,), to_status=PatientStatus.ACTIVE,
                        values={"activated_at": NOW, "activation": Activation.CODE, "code_sha256": ""})
    profiles.transition(PURGED, from_statuses=(PatientStatus.CREATED,), to_status=PatientStatus.CLOSED,
                        values={"closed_at": NOW, "purge_after": NOW, "receipt_key": blob("receipt", "r").key,
                                "receipt_bucket": "meshub", "receipt_sha256": "e" * 64, "receipt_size": 5})
    holds = SqlReimbursements.beside(index)
    for ins in (KEPT, PURGED):
        holds.hold_acts(f"batch-{ins[:4]}", [
            ReimbursedAct(act_ref=f"act-{ins[:4]}-{n}", ins=ins, ins_oid=OID, care_date="2026-11-20",
                          kind=ActKind.NGAP, code="G", label="CONSULTATION", quantity=1, paid_cents=3000,
                          reimbursed_cents=2100) for n in range(2)], received_at=NOW)
        holds.hold_document(HeldDocument(document_key=f"1.2.250.1^{ins}", ins=ins, blob=blob(f"held-{ins}"),
                                         received_at=NOW, release_after=NOW + timedelta(days=1)))
        holds.mark_filed(f"sub-{ins[:4]}-0", act_refs=[f"act-{ins[:4]}-0"])
    tokens = SqlTokens.beside(index)
    for ins in (KEPT, PURGED):
        tokens.issue(Credential(name=f"patient-{ins[:4]}", role="patient", token_sha256=ins.ljust(64, "f"),
                                ins=ins))


def fill(url: str) -> None:
    index = SqlIndex.connect(url)
    try:
        index_rows(index)
        mailbox_rows(SqlMailbox.beside(index))
        notification_rows(SqlNotifications.beside(index))
        record_rows(index)
        purge = SqlPurge.beside(index)
        purge.purge(PURGED)
        SqlProfiles.beside(index).mark_purged(PURGED, NOW)
    finally:
        index.dispose()


def compact(path: str) -> None:
    """One small file: the WAL folded back, 1 KiB pages, no free pages."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA page_size=1024")
    db.execute("VACUUM")
    db.close()


if __name__ == "__main__":
    for target in sys.argv[1:]:
        fill(target if "://" in target else f"sqlite:///{target}")
        if "://" not in target:
            compact(target)
