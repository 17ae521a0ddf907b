"""Who holds an API credential, with which role (pure): the Role enum and the Credential value.

Owns: the credential roles (their strings are the ones written in a config file's [[credentials]] and
kept in the tokens table), and one credential's fields.  Does not: read a config file (config.settings
builds Credentials from the TOML and checks the fields each role needs), check a token (hub.auth) or
decide what a role may do (hub.writes, pipelines.record.core.read_rules, the API's doors).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """producer: sends documents; admin: operates the hub; patient: their own record and mailbox;
    professional: reads records through the habilitation matrix; insurer: the roster and reimbursement
    history.  (A minor's legal representative holds a patient credential: hub.actors.ActorKind.)"""

    PRODUCER = "producer"
    ADMIN = "admin"
    PATIENT = "patient"
    PROFESSIONAL = "professional"
    INSURER = "insurer"


@dataclass(frozen=True, slots=True)
class Credential:
    """One API credential: who, with which role, and the SHA-256 of the bearer token.  A role given as
    its string (a config file, a database row) becomes its Role; an unknown one raises ValueError."""

    name: str
    role: Role
    token_sha256: str
    ins: str = ""  # the patient's own INS, for role "patient" (a patient reads and writes only their own record)
    idnps: str = ""  # role "professional": IDNPS (8 + RPPS)
    profession: str = ""  # role "professional": JDV_J01 profession (G15_10 médecin, G15_21 pharmacien...)
    specialty: str = ""  # role "professional": specialty (SM54...), for médecins
    regulator: bool = False  # role "professional": SAMU / Centre 15 regulator (regulation access)
    #: MSSanté addresses this credential may send as after SMTP AUTH (MAIL FROM): "name@domain" exactly, "domain"
    #: any address of it, "*.domain" any address of a subdomain; lower-cased.  A patient credential may also send
    #: as its own <ins>@patient domain.  Empty: the credential sends no mail (550 5.7.1 mss.sender.not-yours).
    mail_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            object.__setattr__(self, "role", Role(self.role))
