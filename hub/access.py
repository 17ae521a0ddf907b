"""Who may see and change what in a patient's record: the facts the rules read and what they answer (pure).

Owns: the confidentiality codes a producer sets (JDV_J08: MASQUE_PS, INVISIBLE_PATIENT,
INVISIBLE_REPRESENTANTS_LEGAUX), DocumentFlags (what the patient and the author set afterwards, kept by the
hub beside the index), DocumentFacts (one document as the rules see it), PatientControls (the patient's
blocked professionals and emergency settings), Decision (allowed or not, which rule, what to do, fr/en),
Change (what may be changed on a document), the habilitation matrix (Grant, Habilitations: profession x
document type -> allowed) and the RecordControls port that stores the flags and settings.
Does not: decide (pipelines.record.core.access), load the matrix (config.tables builds it from
config/habilitations.toml or the official JSON:API export) or touch a database (storage.sql.controls).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
#: the three masking codes a producer may add to a document's confidentiality (DOMAIN.md §2.6)
PRODUCER_CODES = (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)
#: root of a professional's identifier in CDA/XDS (`root^extension`, extension = IDNPS), DOMAIN.md §2.9
PS_AUTHOR_ROOT = "1.2.250.1.71.4.2.1"
#: the flags a document carries besides its producer codes, settable by set_flag
FLAG_NAMES = ("masked_by_patient", "hidden_from_representatives", "invisible_lifted")
_BARE_PROFESSION = re.compile(r"^\d{1,3}$")


def profession_code(value: int | str) -> str:
    """The matrix key of a profession: JDV_J01 `G15_<n>`.  A bare TRE_G15 number (the VIHF role `10`,
    the JSON:API `field_code_profession` 10) becomes `G15_10`; a `G15_xx` / `G16_xx` code is kept."""
    text = str(value).strip()
    return f"G15_{int(text):02d}" if _BARE_PROFESSION.match(text) else text


def author_idnps(author_id: str | None) -> str | None:
    """The IDNPS of a document's author when it is a professional (`1.2.250.1.71.4.2.1^<IDNPS>`), else None."""
    if not author_id or "^" not in author_id:
        return None
    root, _, extension = author_id.partition("^")
    return extension if root == PS_AUTHOR_ROOT and extension else None


@dataclass(frozen=True, slots=True)
class DocumentFlags:
    """What the hub keeps about a document besides the index: the patient's mask from professionals,
    the patient's hiding from legal representatives, the author lifting INVISIBLE_PATIENT, deletion."""

    masked_by_patient: bool = False
    hidden_from_representatives: bool = False
    invisible_lifted: bool = False
    deleted: bool = False
    deleted_at: datetime | None = None
    deleted_by: str = ""
    updated_at: datetime | None = None


NO_FLAGS = DocumentFlags()


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    """One document as the access rules see it: its type and class, the confidentiality codes as the index
    stores them (first N/R/V, then any producer masking code), its author as stored (`root^extension`),
    the flags set since, and (when known) whose record it is in."""

    document_id: str
    type_code: str
    class_code: str
    confidentiality: tuple[str, ...] = ()
    author_id: str | None = None
    masked_by_patient: bool = False
    hidden_from_representatives: bool = False
    invisible_lifted: bool = False
    deleted: bool = False
    patient_ins: str = ""  # "" = unknown: the rules then trust the caller that it is the actor's record

    @property
    def author_idnps(self) -> str | None:
        """The IDNPS of its author, when a professional wrote it."""
        return author_idnps(self.author_id)

    @property
    def masked_from_professionals(self) -> bool:
        """MASQUE_PS from the producer, or the patient's (or the author's, at the patient's request) mask."""
        return MASQUE_PS in self.confidentiality or self.masked_by_patient

    @property
    def invisible_to_patient(self) -> bool:
        """INVISIBLE_PATIENT from the producer and not lifted by the author yet."""
        return INVISIBLE_PATIENT in self.confidentiality and not self.invisible_lifted

    @property
    def invisible_to_representatives(self) -> bool:
        """Invisible to the patient, or INVISIBLE_REPRESENTANTS_LEGAUX, or hidden from them by the patient."""
        return (self.invisible_to_patient or INVISIBLE_REPRESENTANTS_LEGAUX in self.confidentiality
                or self.hidden_from_representatives)


@dataclass(frozen=True, slots=True)
class PatientControls:
    """The patient's own access settings: professionals (IDNPS) blocked from the whole record, and whether
    bris de glace and SAMU / Centre 15 regulation may open it (both allowed unless the patient said no)."""

    blocked: frozenset[str] = frozenset()
    bris_de_glace_allowed: bool = True
    regulation_allowed: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a rule: allowed or not, the rule's stable name, and what it means / what to do (en, fr).
    Messages never carry health data (no title, type, author or patient identity)."""

    allowed: bool
    rule: str
    message_en: str = ""
    message_fr: str = ""

    @classmethod
    def allow(cls, rule: str = "access.allowed", message_en: str = "", message_fr: str = "") -> Decision:
        """An allowed decision, naming the rule that allowed it (kept in the audit trail)."""
        return cls(True, rule, message_en, message_fr)

    @classmethod
    def refuse(cls, rule: str, message_en: str, message_fr: str) -> Decision:
        """A refusal: which rule, and what the caller can do about it."""
        return cls(False, rule, message_en, message_fr)

    def finding(self, location: str = "record") -> dict[str, object]:
        """The shape hub.errors.Refused carries: rule, location, message_en, message_fr."""
        return {"rule": self.rule, "location": location, "message_en": self.message_en,
                "message_fr": self.message_fr}


ALLOWED = Decision.allow()


class Change(StrEnum):
    """What may be changed on a document, and by whom.  Values match hub.audit.AuditAction where one exists.

    The patient (own record): MASK / UNMASK (from professionals), HIDE / SHOW (to legal representatives).
    The author (a professional): DELETE, LIFT_INVISIBLE (INVISIBLE_PATIENT no longer applies),
    MASK_AT_PATIENT_REQUEST (the same mask as MASK, set by the author when the patient asks)."""

    MASK = "mask"
    UNMASK = "unmask"
    HIDE = "hide_from_representatives"
    SHOW = "show_to_representatives"
    DELETE = "delete"
    LIFT_INVISIBLE = "lift_invisible"
    MASK_AT_PATIENT_REQUEST = "mask_at_patient_request"


PATIENT_CHANGES = frozenset({Change.MASK, Change.UNMASK, Change.HIDE, Change.SHOW})
AUTHOR_CHANGES = frozenset({Change.DELETE, Change.LIFT_INVISIBLE, Change.MASK_AT_PATIENT_REQUEST})
#: the flag (name, value) each change sets through RecordControls.set_flag; DELETE uses RecordControls.delete
CHANGE_FLAGS: Mapping[Change, tuple[str, bool]] = MappingProxyType({
    Change.MASK: ("masked_by_patient", True),
    Change.UNMASK: ("masked_by_patient", False),
    Change.HIDE: ("hidden_from_representatives", True),
    Change.SHOW: ("hidden_from_representatives", False),
    Change.LIFT_INVISIBLE: ("invisible_lifted", True),
    Change.MASK_AT_PATIENT_REQUEST: ("masked_by_patient", True),
})


# -- the habilitation matrix ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """What one profession may read: the listed type codes, or (all_types) every type except `except_types`."""

    types: frozenset[str] = frozenset()
    all_types: bool = False
    except_types: frozenset[str] = frozenset()

    def allows(self, type_code: str) -> bool:
        """Whether a document of this typeCode may be read."""
        if type_code in self.except_types:
            return False
        return self.all_types or type_code in self.types


@dataclass(frozen=True, slots=True)
class Habilitations:
    """The habilitation matrix: profession (JDV_J01 `G15_xx`) -> Grant.  A profession not in it reads
    nothing.  `source` says where the table came from (the shipped default or the official export)."""

    grants: Mapping[str, Grant]
    source: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def allows(self, profession: str, type_code: str) -> bool:
        """Whether `profession` may read documents of `type_code`."""
        grant = self.grants.get(profession_code(profession)) if profession else None
        return grant is not None and grant.allows(type_code)

    def professions(self) -> tuple[str, ...]:
        """Every profession of the matrix, sorted."""
        return tuple(sorted(self.grants))

    def grant(self, profession: str) -> Grant | None:
        """The Grant of a profession, or None when it is not in the matrix."""
        return self.grants.get(profession_code(profession))

    def label(self, profession: str) -> str:
        """The profession's name as the source gives it ("" when none)."""
        return self.labels.get(profession_code(profession), "")


# -- the port -------------------------------------------------------------------------------------


class RecordControls(Protocol):
    """Flags and settings the patient and authors set on a record (storage.sql.controls.SqlRecordControls)."""

    def flags(self, document_ids: Sequence[str]) -> dict[str, DocumentFlags]:
        """The flags of each document asked (NO_FLAGS when none were ever set)."""
        ...

    def set_flag(self, document_id: str, ins: str, flag_name: str, value: bool, *, by: str, at: datetime) -> None:
        """Set one of FLAG_NAMES on a document of `ins`'s record (ValueError on another name)."""
        ...

    def delete(self, document_id: str, ins: str, *, by: str, at: datetime) -> bool:
        """Mark a document deleted; True the first time (the first deletion's time and author are kept)."""
        ...

    def controls(self, ins: str) -> PatientControls:
        """The patient's blocked professionals and emergency settings (defaults when never set)."""
        ...

    def set_emergency(self, ins: str, *, bris_de_glace: bool | None, regulation: bool | None) -> None:
        """Allow or forbid bris de glace / regulation access; None leaves a setting as it is."""
        ...

    def block(self, ins: str, idnps: str) -> None:
        """Block one professional from the whole record (idempotent)."""
        ...

    def unblock(self, ins: str, idnps: str) -> None:
        """Lift a block (idempotent)."""
        ...

    def first_access(self, ins: str, idnps: str) -> datetime | None:
        """When this professional first opened the record (None: never); a read, no write."""
        ...

    def note_access(self, ins: str, idnps: str, at: datetime) -> bool:
        """Record that a professional opened the record; True only the first time."""
        ...
