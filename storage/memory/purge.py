"""pipelines.record.core.restitution.PurgeStore in memory: a patient's rows deleted from the stores beside
one MemoryIndex, and the objects left unreferenced queued for erasure.

Owns: MemoryPurge, with storage.sql.purge's rules: everything is deleted under the index's one lock, the
counts are per SQL table name (what a run removed; 0 on a second run), the registry row is kept as a
closed tombstone with its identity and contacts blanked, and an object another remaining document,
message or submission still refers to is never queued.  The contact addresses are kept, as in SQL.
Does not: touch the object store (the restitution's BlobEraser does) or redact the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from hub.envelope import BlobRef
from hub.records import PatientStatus, SubmissionRecord
from pipelines.record.core.restitution import PurgeReport
from storage.memory.controls import MemoryRecordControls
from storage.memory.index import MemoryIndex
from storage.memory.mailbox import MemoryMailbox
from storage.memory.notifications import MemoryNotifications
from storage.memory.profiles import MemoryProfiles
from storage.memory.reimbursements import MemoryReimbursements

PATIENT_DOMAIN = "patient.mssante.fr"
K = TypeVar("K")
V = TypeVar("V")
IDENTITY_TRAITS = ("birth_name", "given_names", "birth_date", "sex", "birth_place", "email", "phone",
                   "postal_address")


class _Doomed:
    """What belongs to one patient: the ids to delete by and the objects their rows point at."""

    def __init__(self) -> None:
        self.document_ids: list[str] = []
        self.submission_ids: list[str] = []
        self.filing_ids: list[str] = []
        self.refs: list[BlobRef] = []

    def add_raw(self, sub: SubmissionRecord | None, bucket: str | None) -> None:
        """A submission's raw bytes (its row names no bucket: the one of the rows that lead to it)."""
        if sub is not None and bucket is not None and sub.blob_key:
            self.refs.append(BlobRef(bucket, sub.blob_key, sub.sha256, sub.size))


class MemoryPurge:
    """PurgeStore over the memory stores beside `index`, with its own erasure queue."""

    def __init__(self, index: MemoryIndex, *, patient_domain: str = PATIENT_DOMAIN) -> None:
        self.state = index.state
        self._index = index
        self._domain = patient_domain.lower()
        self.erasure_rows: dict[tuple[str, str], tuple[int, BlobRef]] = {}  # (bucket, key) -> (purge run, ref)
        self._runs = 0

    @classmethod
    def beside(cls, index: MemoryIndex, *, patient_domain: str = PATIENT_DOMAIN) -> MemoryPurge:
        return index.beside(cls, lambda i: cls(i, patient_domain=patient_domain))

    def mailbox_of(self, ins: str) -> str:
        return f"{ins}@{self._domain}".lower()

    def purge(self, ins: str) -> PurgeReport:
        with self.state.lock:
            self.state.check()
            doomed, counts = self._collect(ins, self.mailbox_of(ins)), _Counts()
            self._delete_index(ins, doomed, counts)
            self._delete_mail(doomed, self.mailbox_of(ins), counts)
            self._delete_notices(ins, counts)
            self._delete_record(ins, counts)
            counts.add("patients", self._tombstone(ins))
            refs = self._unreferenced(doomed.refs)
            self._runs += 1
            for ref in refs:
                self.erasure_rows.setdefault((ref.bucket, ref.key), (self._runs, ref))
        return PurgeReport(rows=dict(counts), blobs=tuple(refs))

    def pending_erasures(self, *, limit: int = 500) -> list[BlobRef]:
        with self.state.lock:
            self.state.check()
            queued = [ref for _, ref in sorted(self.erasure_rows.values(), key=lambda q: (q[0], q[1].key))][:limit]
            orphans = self._unreferenced(queued)
            self.erased([ref for ref in queued if ref not in orphans])
        return orphans

    def erased(self, refs: Sequence[BlobRef]) -> None:
        with self.state.lock:
            self.state.check()
            for ref in refs:
                self.erasure_rows.pop((ref.bucket, ref.key), None)

    def _collect(self, ins: str, mailbox: str) -> _Doomed:
        index, mail, doomed = self._index, MemoryMailbox.beside(self._index), _Doomed()
        bucket_of = {d.document_id: d.blob_bucket for d in index.document_rows.values() if d.patient_ins == ins}
        doomed.document_ids = list(bucket_of)
        for doc in (index.document_rows[d] for d in bucket_of):
            doomed.refs.append(BlobRef(doc.blob_bucket, doc.blob_key, doc.sha256, doc.size))
            doomed.submission_ids.append(doc.submission_id)
        for sub in index.submission_rows.values():
            if sub.document_id in bucket_of:
                doomed.submission_ids.append(sub.submission_id)
                doomed.add_raw(sub, bucket_of[sub.document_id])
        mine = [m for m in mail.message_rows.values() if m.mailbox == mailbox]
        doomed.refs += [BlobRef(m.blob_bucket, m.blob_key, m.sha256, m.size) for m in mine]
        shared = {m.submission_id for m in mail.message_rows.values() if m.mailbox != mailbox}
        for message in mine:
            if message.submission_id not in shared:
                doomed.submission_ids.append(message.submission_id)
                doomed.add_raw(index.submission_rows.get(message.submission_id), message.blob_bucket)
        doomed.filing_ids = [f.message_id for f in mail.filing_rows.values() if f.mailbox == mailbox]
        for filing in (mail.filing_rows[f] for f in doomed.filing_ids):
            for filed in filing.documents:
                doomed.submission_ids.append(filed.submission_id)
                doomed.add_raw(index.submission_rows.get(filed.submission_id), mine[0].blob_bucket if mine else None)
        self._held(ins, doomed)
        doomed.submission_ids = sorted(set(doomed.submission_ids))
        return doomed

    def _held(self, ins: str, doomed: _Doomed) -> None:
        """The insurer's documents still held for the patient, and their opposition receipt."""
        holds = MemoryReimbursements.beside(self._index)
        doomed.refs += [d.blob for d in holds.document_rows.values() if d.ins == ins]
        profile = MemoryProfiles.beside(self._index).profile_rows.get(ins)
        if profile is not None and profile.receipt is not None:
            doomed.refs.append(profile.receipt)

    def _delete_index(self, ins: str, doomed: _Doomed, counts: _Counts) -> None:
        index = self._index
        if doomed.document_ids:
            gone = set(doomed.document_ids)
            pairs = [(p, c) for p, children in index.link_rows.items() for c in children if p in gone or c in gone]
            for parent, child in pairs:
                index.link_rows[parent].discard(child)
            counts.add("document_links", len(pairs))
        counts.add("documents", _drop(index.document_rows, lambda d: d.patient_ins == ins))
        if doomed.submission_ids:
            ids = set(doomed.submission_ids)
            counts.add("submissions", _drop(index.submission_rows, lambda s: s.submission_id in ids))
            deliveries = MemoryMailbox.beside(index).delivery_rows
            counts.add("deliveries", _drop(deliveries, lambda d: d.submission_id in ids))

    def _delete_mail(self, doomed: _Doomed, mailbox: str, counts: _Counts) -> None:
        mail = MemoryMailbox.beside(self._index)
        counts.add("deliveries", _drop(mail.delivery_rows, lambda d: d.recipient.lower() == mailbox))
        if doomed.filing_ids:
            filings = set(doomed.filing_ids)
            counts.add("mail_filing_documents", _drop(mail.filed_rows, lambda f: f in filings))
        counts.add("mail_filings", _drop(mail.filing_rows, lambda f: f.mailbox == mailbox))
        for filing in doomed.filing_ids:
            mail.claim_rows.pop(filing, None)
        mail.copy_rows -= {(m.submission_id, m.mailbox) for m in mail.message_rows.values() if m.mailbox == mailbox}
        counts.add("messages", _drop(mail.message_rows, lambda m: m.mailbox == mailbox))

    def _delete_notices(self, ins: str, counts: _Counts) -> None:
        notes = MemoryNotifications.beside(self._index)
        counts.add("notices", _drop(notes.notice_rows, lambda n: ins in (n.ins, n.about_ins)))
        counts.add("notification_preferences", 1 if notes.preference_rows.pop(ins, None) is not None else 0)
        counts.add("push_devices", len(notes.device_rows.pop(ins, [])))
        removed = len(notes.representative_rows.pop(ins, []))
        for reps in notes.representative_rows.values():
            removed += reps.count(ins)
            reps[:] = [r for r in reps if r != ins]
        counts.add("legal_representatives", removed)

    def _delete_record(self, ins: str, counts: _Counts) -> None:
        """Access flags and settings, held insurer history, the opposition receipt's reference."""
        controls = MemoryRecordControls.beside(self._index)
        counts.add("document_controls", _drop(controls.flag_rows, lambda row: row[0] == ins))
        counts.add("patient_access_settings", 1 if controls.setting_rows.pop(ins, None) is not None else 0)
        counts.add("blocked_professionals", len(controls.blocked_rows.pop(ins, set())))
        accesses = [k for k in controls.first_rows if k[0] == ins]
        for key in accesses:
            del controls.first_rows[key]
        counts.add("professional_access", len(accesses))
        holds = MemoryReimbursements.beside(self._index)
        counts.add("reimbursed_acts", _drop(holds.act_rows, lambda a: a.held.act.ins == ins))
        counts.add("insurer_documents", _drop(holds.document_rows, lambda d: d.ins == ins))
        profiles = MemoryProfiles.beside(self._index).profile_rows
        found = profiles.get(ins)
        blanked = found is not None and found.receipt_key != ""
        if found is not None and blanked:
            profiles[ins] = replace(found, receipt_key="", receipt_bucket="", receipt_sha256="", receipt_size=0)
        counts.add("profiles", int(blanked))

    def _tombstone(self, ins: str) -> int:
        """The registry row kept: closed, identity and contacts blank; unchanged on a second run."""
        found = self._index.patient_rows.get(ins)
        blank = dict.fromkeys(IDENTITY_TRAITS, "")
        if found is None or (found.status is PatientStatus.CLOSED
                             and all(getattr(found, t) == "" for t in IDENTITY_TRAITS)):
            return 0
        self._index.patient_rows[ins] = replace(found, **blank, status=PatientStatus.CLOSED)
        return 1

    def _unreferenced(self, refs: Sequence[BlobRef]) -> list[BlobRef]:
        """The refs (deduplicated by bucket and key) that no document, message or submission points at."""
        index, mail = self._index, MemoryMailbox.beside(self._index)
        used = {(d.blob_bucket, d.blob_key) for d in index.document_rows.values()}
        used |= {(m.blob_bucket, m.blob_key) for m in mail.message_rows.values()}
        used_keys = {s.blob_key for s in index.submission_rows.values()}  # no bucket: a key in use is in use
        unique = {(r.bucket, r.key): r for r in refs}
        return [r for k, r in unique.items() if k not in used and r.key not in used_keys]


class _Counts(dict[str, int]):
    """Rows removed per SQL table name (a table touched twice adds up)."""

    def add(self, table: str, n: int) -> None:
        self[table] = self.get(table, 0) + n


def _drop(rows: dict[K, V], doomed: Callable[[V], bool]) -> int:
    """Delete the rows `doomed` picks; how many."""
    keys = [k for k, v in rows.items() if doomed(v)]
    for key in keys:
        del rows[key]
    return len(keys)
