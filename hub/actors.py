"""Who acts on a patient's record (pure): patients, their legal representatives, professionals, the insurer.

Owns: the vocabulary shared by the access rules (pipelines.record.core.access), the audit trail (hub.audit),
the record service (pipelines.record.access) and the API that turns a credential into an Actor.
A professional is identified by their IDNPS (`8` + RPPS, 12 digits) with a profession code (JDV_J01:
G15_10 médecin, G15_21 pharmacien...) and, for médecins, a specialty (SM54...).
Does not: authenticate anyone (hub.auth) or decide what they may see (pipelines.record.core.access).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

IDNPS_PATTERN = re.compile(r"^8\d{11}$")


class ActorKind(StrEnum):
    PATIENT = "patient"
    REPRESENTATIVE = "representative"  # a minor's legal representative (a patient credential, own INS)
    PROFESSIONAL = "professional"
    INSURER = "insurer"
    ADMIN = "admin"
    SYSTEM = "system"  # the hub's own jobs (automatic opening, purge...)


class AccessMode(StrEnum):
    """How a professional opens a record: normally, in an emergency ("bris de glace", with a written
    reason) or as the SAMU / Centre 15 regulator."""

    NORMAL = "normal"
    BRIS_DE_GLACE = "bris_de_glace"
    REGULATION = "regulation"


@dataclass(frozen=True, slots=True)
class Actor:
    """One caller.  `id` is an INS (patient, representative), an IDNPS (professional) or a credential
    name (insurer, admin, system).  `regulator`: a professional working as a Centre 15 regulator."""

    kind: ActorKind
    id: str
    profession: str = ""
    specialty: str = ""
    regulator: bool = False

    @property
    def is_professional(self) -> bool:
        return self.kind is ActorKind.PROFESSIONAL


@dataclass(frozen=True, slots=True)
class Access:
    """A caller on one request: who, how (mode) and, for an emergency, the written reason."""

    actor: Actor
    mode: AccessMode = AccessMode.NORMAL
    reason: str = ""


SYSTEM = Actor(ActorKind.SYSTEM, "meshub")


def valid_idnps(value: str) -> bool:
    """IDNPS of a professional registered in RPPS: `8` then the 11 RPPS digits."""
    return bool(IDNPS_PATTERN.match(value))
