"""Who may read which part of a profile, by role and profile state (pure): the read table.

Owns: READS (role -> the parts it reads), CONTENT (what a closed profile keeps from everyone), the
answer of one read (ReadRule: allowed, refused `read.role` (403), or not found (404); traced or not)
and the messages of those rules (en, fr).  Every route that reads a profile asks may_read first; the
document-level rules (pipelines.record.core.access: habilitations, INVISIBLE_*, masks) come after it.

| role           | documents | messages, notifications | export | audit | profile | deliveries |
|----------------|-----------|-------------------------|--------|-------|---------|------------|
| patient (own)  | yes       | yes                     | yes    | yes   | yes     | -          |
| representative | yes       | -                       | -      | yes   | -       | -          |
| professional   | yes (1)   | -                       | -      | -     | -       | -          |
| insurer        | -         | -                       | -      | -     | yes     | -          |
| admin          | yes (2)   | yes (2)                 | yes (2)| yes(2)| yes (2) | yes (2)    |
"-": 403 `read.role`.  (1) then open_record and the habilitation matrix.  (2) traced in the patient's trail.
Closed profile: documents, messages, notifications and export are 404 for everyone, admin included; the
admin keeps the profile's state, the audit trail (the legal archive, 10 years) and delivery states.
Opposed profile: its documents are 404 for everyone but the admin (as the record rules always did).
Unknown profile: 404 (after the role check, so a refused role learns nothing about which INS exist).
Does not: read, trace or decide about one document (pipelines.record.access, pipelines.record.core.access).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hub.access import Decision
from hub.actors import ActorKind
from hub.reading import Reading

CLOSED = "closed"
OPPOSED = "opposed"
EVERYTHING = frozenset(Reading)
#: the parts of a profile each role reads (anything else: 403 read.role)
READS: Mapping[ActorKind, frozenset[Reading]] = MappingProxyType({
    ActorKind.PATIENT: frozenset({Reading.DOCUMENTS, Reading.MESSAGES, Reading.NOTIFICATIONS, Reading.EXPORT,
                                  Reading.AUDIT, Reading.PROFILE}),
    ActorKind.REPRESENTATIVE: frozenset({Reading.DOCUMENTS, Reading.AUDIT}),
    ActorKind.PROFESSIONAL: frozenset({Reading.DOCUMENTS}),
    ActorKind.INSURER: frozenset({Reading.PROFILE}),
    ActorKind.ADMIN: EVERYTHING,
})
#: what a closed profile keeps from everyone, the operator included
CONTENT = frozenset({Reading.DOCUMENTS, Reading.MESSAGES, Reading.NOTIFICATIONS, Reading.EXPORT})
#: whose reads are traced by this table (the others' reads are traced where they happen, if at all)
TRACED = frozenset({ActorKind.ADMIN})

RULES: dict[str, tuple[str, str]] = {
    "read.patient": ("The patient's own profile.", "Le profil du patient lui-même."),
    "read.operator": ("Read by the hub's operator: traced in the patient's trail.",
                      "Lecture par l'opérateur du hub : tracée dans l'historique du patient."),
    "read.allowed": ("Allowed for this role.", "Autorisé pour ce rôle."),
    "read.role": (
        "This kind of account cannot read this part of a profile (the insurer reads no health data; a "
        "professional reads documents only, through the habilitation matrix).",
        "Ce type de compte ne peut pas consulter cette partie d'un profil (l'Assurance Maladie ne consulte "
        "aucune donnée de santé ; un professionnel ne consulte que des documents, selon la matrice "
        "d'habilitations)."),
    "read.closed": ("This profile is closed: its content is no longer reachable.",
                    "Ce profil est fermé : son contenu n'est plus accessible."),
    "read.opposed": ("The patient opposed this profile: it holds no record.",
                     "Le patient s'est opposé à ce profil : il ne contient aucun dossier."),
    "read.unknown": ("No such profile.", "Profil introuvable."),
}


@dataclass(frozen=True, slots=True)
class ReadRule:
    """The answer for one read: `decision` (allowed, or which rule refused it), `not_found` (answer 404:
    the part is not reachable, so nothing says whether it exists) and `traced` (one trail entry)."""

    decision: Decision
    not_found: bool = False
    traced: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision.allowed and not self.not_found


def _decision(rule: str, *, allowed: bool) -> Decision:
    en, fr = RULES[rule]
    return Decision.allow(rule, en, fr) if allowed else Decision.refuse(rule, en, fr)


def may_read(kind: ActorKind, reading: Reading, status: str | None) -> ReadRule:
    """May a caller of this kind read this part of a profile in this state (`status`: the
    PatientStatus value, None when no profile has this INS)?"""
    traced = kind in TRACED
    if reading not in READS.get(kind, frozenset()):
        return ReadRule(_decision("read.role", allowed=False), traced=traced)
    if status is None:
        return ReadRule(_decision("read.unknown", allowed=False), not_found=True)
    if status == CLOSED and reading in CONTENT:
        return ReadRule(_decision("read.closed", allowed=False), not_found=True, traced=traced)
    if status == OPPOSED and reading is Reading.DOCUMENTS and kind is not ActorKind.ADMIN:
        return ReadRule(_decision("read.opposed", allowed=False), not_found=True)
    rule = {ActorKind.ADMIN: "read.operator", ActorKind.PATIENT: "read.patient"}.get(kind, "read.allowed")
    return ReadRule(_decision(rule, allowed=True), traced=traced)


def read_role() -> Decision:
    """Refusal: this role does not read this part (e.g. a producer's credential on a record route)."""
    return _decision("read.role", allowed=False)
