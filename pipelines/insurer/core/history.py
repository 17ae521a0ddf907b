"""The insurer's reimbursement history as the hub holds it (pure): acts, held items, and the holding port.

Owns: ActKind, ReimbursedAct (one act of a batch, as pipelines.insurer.core.reimbursements parses it), BatchHeader,
HeldAct and HeldDocument (what waits until the patient's history may be filed) and the ReimbursementHolds
Protocol (storage.sql.reimbursements.SqlReimbursements implements it on the index's database).
Rule 1: an act is known by its insurer reference (`act_ref`, unique at the insurer): holding it again, from a
re-delivered or overlapping batch, changes nothing.  A CNAM-HR document is known by its CDA id (root^extension).
Rule 2: a held item is "pending" until `filed_submission` names the intake submission that filed it.
Does not: parse batches (core.reimbursements), decide when to file (pipelines.insurer.reimbursements, from the
patient lifecycle) or touch a database.  Amounts are integer cents, dates ISO `YYYY-MM-DD` strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from hub.envelope import BlobRef


class ActKind(StrEnum):
    """What was reimbursed, named by the code system of its code."""

    CIP13 = "CIP13"  # a medication, by its 13-digit CIP code
    NGAP = "NGAP"    # a consultation or act of the Nomenclature Générale des Actes Professionnels
    CCAM = "CCAM"    # a technical medical act (Classification Commune des Actes Médicaux)
    LPP = "LPP"      # a medical device (Liste des Produits et Prestations)
    NABM = "NABM"    # a biology test (Nomenclature des Actes de Biologie Médicale)


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The first line of a batch file: format, version, the insurer's batch id and who issued it."""

    format: str
    version: str
    batch_id: str
    issuer: str


@dataclass(frozen=True, slots=True)
class ReimbursedAct:
    """One reimbursed act.  `prescriber` is an IDNPS; `executant` an IDNPS or a FINESS number ("" if unknown)."""

    act_ref: str
    ins: str
    ins_oid: str
    care_date: str  # YYYY-MM-DD
    kind: ActKind
    code: str
    label: str
    quantity: int
    paid_cents: int
    reimbursed_cents: int
    prescriber: str = ""
    executant: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": str(self.kind)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReimbursedAct:
        return cls(act_ref=str(data["act_ref"]), ins=str(data["ins"]), ins_oid=str(data["ins_oid"]),
                   care_date=str(data["care_date"]), kind=ActKind(data["kind"]), code=str(data["code"]),
                   label=str(data["label"]), quantity=int(data["quantity"]), paid_cents=int(data["paid_cents"]),
                   reimbursed_cents=int(data["reimbursed_cents"]), prescriber=str(data.get("prescriber", "")),
                   executant=str(data.get("executant", "")))


@dataclass(frozen=True, slots=True)
class HeldAct:
    """An act as held: which batch brought it first, when, and the submission that filed it (None: pending)."""

    act: ReimbursedAct
    batch_id: str
    received_at: datetime
    filed_submission: str | None = None


@dataclass(frozen=True, slots=True)
class HeldDocument:
    """A CNAM-HR CDA document sent as such: its id (root^extension), patient, stored bytes, and filing."""

    document_key: str
    ins: str
    blob: BlobRef
    received_at: datetime
    filed_submission: str | None = None
    release_after: datetime | None = None  # when it may be filed (None: the profile is not open yet)


class ReimbursementHolds(Protocol):
    """Where acts and insurer documents wait until the patient's history may be filed.  Raises
    IndexUnavailable when the database is down."""

    def hold_acts(self, batch_id: str, acts: Sequence[ReimbursedAct], *, received_at: datetime,
                  release_after: Mapping[str, datetime | None] | None = None) -> int:
        """Keep every act not held yet (by act_ref), in one transaction; how many were new.
        `release_after`: INS -> when that patient's history may be filed (absent or None: not known yet)."""
        ...

    def schedule(self, ins: str, release_after: datetime) -> int:
        """The patient's profile opened: their pending items may be filed from `release_after`; how many."""
        ...

    def hold_document(self, document: HeldDocument) -> bool:
        """Keep `document` (its bytes already stored); False when its key was already held (nothing changes)."""
        ...

    def pending_patients(self, limit: int = 500, *, after: str = "", due_before: datetime | None = None) -> list[str]:
        """INS values with pending acts or documents, ascending, greater than `after` (to page through all);
        with `due_before`, only those scheduled to be filed by then (an indexed, cheap query)."""
        ...

    def pending_acts(self, ins: str) -> list[HeldAct]:
        """The patient's acts not filed yet, in the order they were received (received_at, act_ref)."""
        ...

    def pending_documents(self, ins: str) -> list[HeldDocument]:
        """The patient's insurer documents not filed yet, in the order they were received."""
        ...

    def mark_filed(self, submission_id: str, *, act_refs: Sequence[str] = (),
                   document_keys: Sequence[str] = ()) -> int:
        """Record that `submission_id` filed these items (those already filed keep their first submission);
        how many rows changed."""
        ...
