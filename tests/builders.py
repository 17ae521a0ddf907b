"""Tiny synthetic inputs for tests: envelopes, document records, rosters.  No real patient data:
the INS values are the ANS test identities or made-up numbers with a computed key."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from hub.envelope import BlobRef, Envelope, Source
from hub.intake import new_submission_id
from hub.records import DocumentRecord, SubmissionRecord

TEST_INS = "279035121518989"          # ANS test INS (OID 1.2.250.1.213.1.4.10), correct key
TEST_OID = "1.2.250.1.213.1.4.10"
ROSTER_HEADER = "ins,oid,birth_name,given_names,birth_date,sex,birth_place,email,phone,postal_address,status\n"


def with_key(nir13: str) -> str:
    """Complete a 13-character NIR with its key (2A/2B handled)."""
    number = int(nir13.replace("2A", "19").replace("2B", "18"))
    return f"{nir13}{97 - number % 97:02d}"


def roster_line(ins: str = TEST_INS, *, status: str = "active", oid: str = TEST_OID) -> str:
    return (f"{ins},{oid},TEST,Jeanne,1979-03-01,F,51215,jeanne@example.org,+33600000000,"
            f"\"1 rue de Test, 75000 Paris\",{status}\n")


def envelope(*, submission_id: str | None = None, sha: str = "a" * 64) -> Envelope:
    return Envelope(submission_id=submission_id or new_submission_id(), received_at=datetime.now(UTC),
                    source=Source(kind="http", producer="lab-1"),
                    raw=BlobRef(bucket="b", key=f"cda/{sha[:2]}/{sha}", sha256=sha, size=10))


def submission_for(env: Envelope) -> SubmissionRecord:
    return SubmissionRecord(submission_id=env.submission_id, received_at=env.received_at,
                            producer=env.source.producer, source_kind=env.source.kind, blob_key=env.raw.key,
                            sha256=env.raw.sha256, size=env.raw.size)


def document(env: Envelope, document_id: str = "1.2.3^doc-1", **changes: Any) -> DocumentRecord:
    doc = DocumentRecord(
        document_id=document_id, patient_ins=TEST_INS, submission_id=env.submission_id, blob_bucket="b",
        blob_key=env.raw.key, sha256=env.raw.sha256, size=env.raw.size, type_code="11502-2",
        type_label="CR d'examens biologiques", class_code="10", category="BIOLOGIE",
        format_code="urn:ihe:lab:xd-lab:2008", level="N3", confidentiality=("N",), title="CR de biologie",
        effective_time="20240105120000+0100", service_date="2024-01-05")
    return replace(doc, **changes)
