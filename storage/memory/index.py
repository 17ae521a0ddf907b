"""hub.ports.Index in memory: submissions, documents, replacement links and the patient registry.

Owns: MemoryIndex, with storage.sql.index's rules.  Indexing is idempotent: a document id is kept once;
the same submission redelivered answers `indexed` again, another submission with the same id gets
`duplicate` (with the same finding).  A replacement (RPLC) deprecates its parent in either arrival
order.  An outcome is recorded even when the pending row was lost, and never downgraded.  Every call
holds one lock, as a transaction would.  Stores that live beside the index in SQL are kept per index
here (`beside`), so they can share its registry.
Does not: decide validity or classification (pipelines.cda).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

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
from storage.memory.base import MemoryState, now

T = TypeVar("T")


class MemoryIndex:
    """hub.ports.Index on dicts; `state.down = True` makes every call IndexUnavailable."""

    def __init__(self) -> None:
        self.state = MemoryState(IndexUnavailable, "index database")
        self.submission_rows: dict[str, SubmissionRecord] = {}
        self.document_rows: dict[str, DocumentRecord] = {}
        self.link_rows: dict[str, set[str]] = {}  # parent id -> child ids
        self.patient_rows: dict[str, PatientRecord] = {}
        self._beside: dict[type, object] = {}

    def beside(self, kind: type[T], make: Callable[[MemoryIndex], T]) -> T:
        """The one store of `kind` sharing this index (made by `make` the first time)."""
        with self.state.lock:
            if kind not in self._beside:
                self._beside[kind] = make(self)
            found = self._beside[kind]
        assert isinstance(found, kind)
        return found

    def ping(self) -> None:
        self.state.check()

    # -- submissions -------------------------------------------------------------------------------------

    def create_submission(self, record: SubmissionRecord) -> bool:
        with self.state.lock:
            self.state.check()
            if record.submission_id in self.submission_rows:
                return False
            self.submission_rows[record.submission_id] = replace(
                record, document_id=None, category=None, findings=(), updated_at=now())
            return True

    def forget_submission(self, submission_id: str) -> None:
        with self.state.lock:
            self.state.check()
            found = self.submission_rows.get(submission_id)
            if found is not None and found.status is SubmissionStatus.PENDING:
                del self.submission_rows[submission_id]

    def submission(self, submission_id: str) -> SubmissionRecord | None:
        with self.state.lock:
            self.state.check()
            return self.submission_rows.get(submission_id)

    def reject(self, envelope: Envelope, findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        with self.state.lock:
            self.state.check()
            return self._finish(envelope, SubmissionStatus.REJECTED, None, findings)

    def complete(self, envelope: Envelope, findings: tuple[dict[str, Any], ...] = ()) -> SubmissionRecord:
        with self.state.lock:
            self.state.check()
            return self._finish(envelope, SubmissionStatus.INDEXED, None, findings)

    def index_document(self, envelope: Envelope, document: DocumentRecord,
                       findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        with self.state.lock:
            self.state.check()
            owner = self.document_rows.get(document.document_id)
            if owner is None:
                self.document_rows[document.document_id] = replace(document, indexed_at=now())
            elif owner.submission_id != envelope.submission_id:
                return self._finish(envelope, SubmissionStatus.DUPLICATE, document,
                                    (*findings, duplicate_finding(owner.submission_id)))
            self._link_replacements(document)
            return self._finish(envelope, SubmissionStatus.INDEXED, document, findings)

    def _link_replacements(self, doc: DocumentRecord) -> None:
        """RPLC: parents become deprecated; a child that came first deprecates this document."""
        for parent in doc.replaces:
            self.link_rows.setdefault(parent, set()).add(doc.document_id)
            found = self.document_rows.get(parent)
            if found is not None and parent != doc.document_id and found.patient_ins == doc.patient_ins:
                self.document_rows[parent] = replace(found, status="deprecated", replaced_by=doc.document_id)
        successors = sorted(child for child in self.link_rows.get(doc.document_id, set())
                            if child != doc.document_id and child in self.document_rows
                            and self.document_rows[child].patient_ins == doc.patient_ins)
        if successors:
            self.document_rows[doc.document_id] = replace(self.document_rows[doc.document_id], status="deprecated",
                                                       replaced_by=successors[0])

    def _finish(self, envelope: Envelope, status: SubmissionStatus, document: DocumentRecord | None,
                findings: tuple[dict[str, Any], ...]) -> SubmissionRecord:
        """Record a final outcome; creates the row if intake's row was lost, never downgrades."""
        found = self.submission_rows.get(envelope.submission_id)
        if found is not None and found.final:
            return found
        values: dict[str, Any] = {
            "status": status, "document_id": document.document_id if document else None,
            "category": document.category if document else None, "findings": tuple(findings), "updated_at": now()}
        if found is None:
            found = SubmissionRecord(
                submission_id=envelope.submission_id, received_at=envelope.received_at,
                producer=envelope.source.producer, source_kind=envelope.source.kind, blob_key=envelope.raw.key,
                sha256=envelope.raw.sha256, size=envelope.raw.size,
                confidentiality=tuple(envelope.confidentiality))
        stored = replace(found, **values)
        self.submission_rows[envelope.submission_id] = stored
        return stored

    def stale_pending(self, older_than: datetime, limit: int = 100) -> list[SubmissionRecord]:
        """Pending submissions received before `older_than` (for the recovery sweep)."""
        with self.state.lock:
            self.state.check()
            stale = [s for s in self.submission_rows.values()
                     if s.status is SubmissionStatus.PENDING and s.received_at < older_than]
        return stale[:limit]

    # -- patients ----------------------------------------------------------------------------------------

    def patient(self, ins: str) -> PatientRecord | None:
        with self.state.lock:
            self.state.check()
            return self.patient_rows.get(ins)

    def upsert_patients(self, patients: Sequence[PatientRecord]) -> int:
        with self.state.lock:
            self.state.check()
            self.patient_rows.update((p.ins, p) for p in patients)
        return len(patients)

    def set_patient_status(self, ins: str, status: PatientStatus) -> bool:
        """Move a registered patient's status (what a profile transition does in the same transaction)."""
        with self.state.lock:
            found = self.patient_rows.get(ins)
            if found is None:
                return False
            self.patient_rows[ins] = replace(found, status=status)
            return True

    # -- documents ---------------------------------------------------------------------------------------

    def documents(self, ins: str, query: DocumentQuery) -> list[DocumentRecord]:
        with self.state.lock:
            self.state.check()
            found = [d for d in self.document_rows.values() if d.patient_ins == ins and _matches(d, query)]
        found.sort(key=lambda d: d.document_id)
        found.sort(key=lambda d: d.service_date, reverse=True)
        return found[query.offset:query.offset + query.limit]

    def document(self, document_id: str) -> DocumentRecord | None:
        with self.state.lock:
            self.state.check()
            return self.document_rows.get(document_id)


def _matches(doc: DocumentRecord, query: DocumentQuery) -> bool:
    wanted = ((doc.category, query.category), (doc.class_code, query.class_code), (doc.type_code, query.type_code))
    if any(value and have != value for have, value in wanted):
        return False
    if query.date_from and doc.service_date < query.date_from:
        return False
    if query.date_to and doc.service_date > query.date_to:
        return False
    return query.include_deprecated or doc.status == "current"


def duplicate_finding(owner: str) -> dict[str, Any]:
    """The finding of a document id indexed before by submission `owner` (worded as the SQL index does)."""
    return {"rule": "document.duplicate", "location": "/ClinicalDocument/id", "severity": "warning",
            "code": None, "message_fr": f"Ce document (même id) a déjà été indexé par la soumission {owner}; "
            "rien n'a été modifié. Pour le remplacer, envoyez une nouvelle version avec relatedDocument RPLC.",
            "message_en": f"A document with the same id was already indexed by submission {owner}; nothing "
            "was changed. To replace it, send a new version with a relatedDocument of typeCode RPLC."}
