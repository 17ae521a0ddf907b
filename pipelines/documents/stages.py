"""Stages of the CDA intake pipeline: small functions that glue the pure core to the ports.

Owns: fetch -> validate -> check patient -> classify -> index, each a function of
values and ports.  Every stage is safe to run again on the same envelope (the
store is content-addressed, the index upserts), so a redelivery after a crash
is harmless.
Does not: choose adapters (the composition root does) or talk to the bus.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.access import PRODUCER_CODES
from hub.envelope import Envelope
from hub.findings import Finding, Severity
from hub.ports import BlobStore, Index
from hub.records import DocumentRecord, SubmissionStatus
from pipelines.cda.classification import Classification, ClassificationTables, classify
from pipelines.cda.header import CdaHeader
from pipelines.cda.validation import ValidationRules, patient_findings, validate


@dataclass(frozen=True, slots=True)
class Checked:
    """What validation and the patient check concluded about one document."""

    header: CdaHeader | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return self.header is not None and not any(f.severity is Severity.ERROR for f in self.findings)


def fetch(envelope: Envelope, store: BlobStore) -> bytes:
    return store.get(envelope.raw)


def check(data: bytes, rules: ValidationRules, index: Index) -> Checked:
    report = validate(data, rules)
    if not report.ok or report.header is None or report.header.patient_ins is None:
        return Checked(report.header, report.findings)
    patient = index.patient(report.header.patient_ins)
    status = str(patient.status) if patient is not None else None
    return Checked(report.header, report.findings + patient_findings(report.header, status))


def service_date(effective_time: str) -> str:
    """HL7 TS 'YYYYMMDD...' -> 'YYYY-MM-DD' (what date filters compare)."""
    digits = effective_time[:8]
    return f"{digits[:4]}-{digits[4:6] or '01'}-{digits[6:8] or '01'}" if len(digits) >= 4 else ""


def document_record(envelope: Envelope, header: CdaHeader, found: Classification) -> DocumentRecord:
    assert header.patient_ins is not None  # guaranteed by check(): no INS is an error finding
    return DocumentRecord(
        document_id=header.document_id, patient_ins=header.patient_ins, submission_id=envelope.submission_id,
        blob_bucket=envelope.raw.bucket, blob_key=envelope.raw.key, sha256=envelope.raw.sha256,
        size=envelope.raw.size, type_code=header.type_code, type_label=found.type_label,
        class_code=found.class_code, category=found.category, format_code=found.format_code,
        level=found.level, confidentiality=_with_producer_codes(found.confidentiality, envelope.confidentiality),
        title=header.title,
        effective_time=header.effective_time, service_date=service_date(header.effective_time),
        author_id=header.author_id, custodian_id=header.custodian_id, replaces=header.replaces)


def _with_producer_codes(found: tuple[str, ...], given: tuple[str, ...]) -> tuple[str, ...]:
    """The CDA's own code first, then the masking codes the producer gave beside the document (once each)."""
    return found + tuple(dict.fromkeys(c for c in given if c in PRODUCER_CODES and c not in found))


def index_or_reject(envelope: Envelope, checked: Checked, tables: ClassificationTables,
                    index: Index) -> DocumentRecord | None:
    """The document this submission indexed (again, on a redelivery), or None (rejected, duplicate)."""
    findings = tuple(f.to_dict() for f in checked.findings)
    if not checked.ok or checked.header is None:
        index.reject(envelope, findings)
        return None
    found = classify(checked.header, tables)
    document = document_record(envelope, checked.header, found)
    outcome = index.index_document(envelope, document, findings)
    return document if outcome.status is SubmissionStatus.INDEXED else None
