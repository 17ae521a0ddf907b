"""MSSanté relay rules as data, and the small decisions made with them (DOMAIN §2.6, §4.1).

Owns: MssRules (loaded from a mapping, e.g. a [mss] TOML table), recipient classification with the
patient address rule (15-character INS with a valid key @ patient domain), the SMTP refusal table at
RCPT time, sender trust, the patient reply rule (X-MSS-MES: FIN, pharmacy first contact), the X-MSS-*
flags of a mail, the masking rules for mailing documents, and the hop limit.
Does not: look a patient up (the caller passes the registry status), talk SMTP (the gateway turns a
Reply into its answer), parse mail (mime.py) or archives (xdm.py), or log.

Rule 1: SMTP reply texts are short, ASCII (an SMTP reply line is US-ASCII), French then English, and
        never carry an INS, a name or any health data.
Rule 2: decisions are tables (REPLIES, PATIENT_STATUS_REASONS, FORBIDDEN_FOR); functions look them up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hub.errors import ConfigError
from hub.findings import Finding, Severity
from hub.ins import check_ins
from hub.mailqueue import PATIENT_DOMAIN, Reply
from pipelines.mail.core.mime import ParsedMail
from pipelines.mail.core.xdm_metadata import XdmEntry

INS_LENGTH = 15
#: a mail address carries no OID: check_ins() is called with this placeholder as the only accepted one,
#: so that only the matricule format and key are checked.
_NO_OID = "mail-address"
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


@dataclass(frozen=True, slots=True)
class MssRules:
    """MSSanté settings of this hub.  Addresses and domains are stored lower-cased."""

    patient_domain: str = PATIENT_DOMAIN
    local_domains: tuple[str, ...] = ()  # domains whose mailboxes this hub hosts (besides the patient domain)
    org_mailboxes: tuple[str, ...] = ()  # organisational mailboxes (BAL ORG) hosted here
    trusted_domains: tuple[str, ...] = ("*.mssante.fr",)  # "*.x" = any subdomain of x; else exact
    max_hops: int = 30
    pharmacy_first_contact: tuple[str, ...] = ()  # BAL ORG a patient may write to first (DOMAIN §4.1)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> MssRules:
        """Build from a mapping (a TOML table).  ConfigError names a key of the wrong type."""
        return cls(
            patient_domain=_string(table, "patient_domain", PATIENT_DOMAIN).lower(),
            local_domains=_strings(table, "local_domains"),
            org_mailboxes=_strings(table, "org_mailboxes"),
            trusted_domains=_strings(table, "trusted_domains", ("*.mssante.fr",)),
            max_hops=_integer(table, "max_hops", 30),
            pharmacy_first_contact=_strings(table, "pharmacy_first_contact"),
        )


# -- recipients -------------------------------------------------------------------------------------


class RecipientKind(StrEnum):
    PATIENT = "patient"  # <INS>@patient domain, INS well-formed with a valid key
    LOCAL_ORG = "local-org"  # an organisational mailbox hosted here
    LOCAL_UNKNOWN = "local-unknown"  # a hosted domain, but no such mailbox
    REMOTE = "remote"  # any other domain: relay
    BAD_ADDRESS = "bad-address"  # not an address, or a malformed patient address


@dataclass(frozen=True, slots=True)
class Recipient:
    """A classified recipient: the address normalised (domain lower-cased), the INS when PATIENT."""

    kind: RecipientKind
    address: str
    ins: str | None = None
    finding: Finding | None = None  # why BAD_ADDRESS


def classify_recipient(address: str, rules: MssRules) -> Recipient:
    """Classify one RCPT address against the hub's domains and the patient address rule."""
    parsed = split_address(address)
    if parsed is None:
        return Recipient(RecipientKind.BAD_ADDRESS, address.strip(), finding=_finding("mss.address.syntax"))
    local, domain = parsed
    normalised = f"{local}@{domain}"
    if domain == rules.patient_domain:
        return _patient(local.upper(), domain)
    if normalised.lower() in rules.org_mailboxes:
        return Recipient(RecipientKind.LOCAL_ORG, normalised)
    if domain in rules.local_domains:
        return Recipient(RecipientKind.LOCAL_UNKNOWN, normalised)
    return Recipient(RecipientKind.REMOTE, normalised)


def split_address(address: str) -> tuple[str, str] | None:
    """(local part, lower-cased domain) of a plain addr-spec, "<...>" allowed; None when malformed."""
    bare = address.strip().removeprefix("<").removesuffix(">")
    local, at, domain = bare.rpartition("@")
    if not at or len(bare) > 254 or not _LOCAL_PART.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    return local, domain.lower()


def _patient(local: str, domain: str) -> Recipient:
    address = f"{local}@{domain}"
    if len(local) != INS_LENGTH:
        return Recipient(RecipientKind.BAD_ADDRESS, address, finding=_finding("mss.patient-address.length"))
    problems = check_ins(local, _NO_OID, location="RCPT", accepted_oids=frozenset({_NO_OID}))
    if problems:
        rule = "mss.patient-address.key" if problems[0].rule == "ins.key" else "mss.patient-address.format"
        return Recipient(RecipientKind.BAD_ADDRESS, address, finding=_finding(rule))
    return Recipient(RecipientKind.PATIENT, address, ins=local)


# -- SMTP refusals ----------------------------------------------------------------------------------

#: reason -> the SMTP reply.  ASCII only (Rule 1).
REPLIES: Mapping[str, Reply] = {
    "patient-unknown": Reply(550, "5.1.1", "Adresse patient inconnue / Unknown patient address"),
    "bad-patient-address": Reply(553, "5.1.3", "Adresse patient invalide: INS de 15 caracteres avec cle attendu"
                                               " / Invalid patient address: 15-character INS with key expected"),
    "bad-address": Reply(553, "5.1.3", "Adresse mal formee / Malformed address"),
    "patient-opposed": Reply(550, "5.7.1", "Le patient s'est oppose aux echanges MSSante: cessez tout echange par "
                                           "cette messagerie et recourez a un autre moyen / The patient opposed "
                                           "MSSante exchanges: stop using this service and use another means"),
    "patient-closed": Reply(550, "5.2.1", "Boite desactivee, profil ferme (DMP ferme) / Mailbox disabled, "
                                          "profile closed"),
    "mailbox-unknown": Reply(550, "5.1.1", "Boite inconnue / Unknown mailbox"),
    "relay-denied": Reply(554, "5.7.1", "Relais refuse sans authentification / Relay denied without "
                                        "authentication"),
    "too-many-hops": Reply(554, "5.4.6", "Trop de relais, boucle probable / Too many hops, probable mail loop"),
}
#: patient registry status (None = no such INS) -> reason in REPLIES, or None to accept.
PATIENT_STATUS_REASONS: Mapping[str | None, str | None] = {
    None: "patient-unknown", "created": None, "opened": None, "active": None,
    "opposed": "patient-opposed", "closed": "patient-closed",
}
#: recipient kind -> reason, for kinds that do not depend on a status or on authentication.
_KIND_REASONS: Mapping[RecipientKind, str | None] = {
    RecipientKind.LOCAL_ORG: None,
    RecipientKind.LOCAL_UNKNOWN: "mailbox-unknown",
    RecipientKind.BAD_ADDRESS: "bad-address",
}


def recipient_reply(recipient: Recipient | RecipientKind, patient_status: str | None = None, *,
                    authenticated: bool = False) -> Reply | None:
    """The refusal at RCPT time, or None to accept.

    `patient_status` is the registry status of a PATIENT recipient (None: unknown INS); a REMOTE
    recipient is refused unless the session is authenticated.  ValueError for a status the
    registry does not define (a programming error).
    """
    kind = recipient.kind if isinstance(recipient, Recipient) else recipient
    if kind is RecipientKind.PATIENT:
        if patient_status not in PATIENT_STATUS_REASONS:
            raise ValueError(f"unknown patient status {patient_status!r}")
        reason = PATIENT_STATUS_REASONS[patient_status]
    elif kind is RecipientKind.REMOTE:
        reason = None if authenticated else "relay-denied"
    elif kind is RecipientKind.BAD_ADDRESS and isinstance(recipient, Recipient) and _is_patient_finding(recipient):
        reason = "bad-patient-address"
    else:
        reason = _KIND_REASONS[kind]
    return None if reason is None else REPLIES[reason]


def hops_reply(hop_count: int, rules: MssRules) -> Reply | None:
    """554 5.4.6 when the mail went through more relays than allowed (loop), else None."""
    return REPLIES["too-many-hops"] if too_many_hops(hop_count, rules) else None


def too_many_hops(hop_count: int, rules: MssRules) -> bool:
    return hop_count > rules.max_hops


def _is_patient_finding(recipient: Recipient) -> bool:
    return recipient.finding is not None and recipient.finding.rule.startswith("mss.patient-address.")


# -- senders and patient replies --------------------------------------------------------------------


def sender_trusted(mail_from: str, rules: MssRules) -> bool:
    """Whether the sender's domain is in the espace de confiance (a trusted pattern); null sender: False."""
    parsed = split_address(mail_from)
    if parsed is None:
        return False
    return any(_domain_matches(parsed[1], pattern.lower()) for pattern in rules.trusted_domains)


def _domain_matches(domain: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:]) and len(domain) > len(pattern) - 1
    return domain == pattern


@dataclass(frozen=True, slots=True)
class ThreadFacts:
    """One conversation seen from the patient's mailbox: who wrote to the patient, who closed it."""

    wrote_to_patient: frozenset[str] = frozenset()  # lower-cased addresses
    closed_by: frozenset[str] = frozenset()  # addresses whose latest mail to the patient had X-MSS-MES: FIN

    @classmethod
    def from_messages(cls, messages: Iterable[tuple[str, bool]]) -> ThreadFacts:
        """Fold (sender, ended) pairs in chronological order: a later mail without FIN reopens."""
        wrote: set[str] = set()
        closed: set[str] = set()
        for sender, ended in messages:
            address = sender.strip().lower()
            wrote.add(address)
            (closed.add if ended else closed.discard)(address)
        return cls(frozenset(wrote), frozenset(closed))


def may_patient_reply(thread: ThreadFacts, target: str, rules: MssRules) -> Finding | None:
    """None when the patient may write to `target` in this thread, else the finding that forbids it.

    A patient writes only to a professional who wrote first and did not close the exchange
    (X-MSS-MES: FIN); exception: a pharmacy BAL ORG listed in rules.pharmacy_first_contact.
    """
    address = target.strip().lower()
    if address in thread.closed_by:
        return _finding("mss.reply.closed")
    if address in thread.wrote_to_patient or address in rules.pharmacy_first_contact:
        return None
    return _finding("mss.reply.not-initiated")


# -- X-MSS-* flags and masking ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MssFlags:
    """The MSSanté headers of one mail (DOMAIN §4.1)."""

    end_of_exchange: bool  # X-MSS-MES: FIN, replies forbidden
    cda_codes: tuple[str, ...]  # X-MSS-CODECDA, comma-separated CDA codes
    qualified_ins: bool | None  # X-MSS-INS: O -> True, N -> False, absent -> None
    nil: str  # X-MSS-NIL product reference


def mss_flags(mail: ParsedMail) -> MssFlags:
    headers = mail.mss
    ins = headers.get("X-MSS-INS", "").strip().upper()
    return MssFlags(
        end_of_exchange=headers.get("X-MSS-MES", "").strip().upper() == "FIN",
        cda_codes=tuple(c.strip() for c in headers.get("X-MSS-CODECDA", "").split(",") if c.strip()),
        qualified_ins={"O": True, "N": False}.get(ins),
        nil=headers.get("X-MSS-NIL", "").strip(),
    )


#: recipient is a professional (PS, BAL ORG/APP) -> confidentiality codes that forbid mailing the document.
#: DOMAIN §2.6 allowed combinations: to a PS only with MASQUE_PS = N and INVISIBLE_REP_LEGAUX = N;
#: to the patient only with INVISIBLE_PATIENT = N.
FORBIDDEN_FOR: Mapping[bool, Mapping[str, str]] = {
    True: {"MASQUE_PS": "mss.masking.masked-ps",
           "INVISIBLE_REPRESENTANTS_LEGAUX": "mss.masking.invisible-representatives"},
    False: {"INVISIBLE_PATIENT": "mss.masking.invisible-patient"},
}


def masking_findings(entries: Iterable[XdmEntry], recipient_is_professional: bool) -> tuple[Finding, ...]:
    """One finding per document whose confidentiality codes forbid mailing it to this kind of recipient."""
    forbidden = FORBIDDEN_FOR[recipient_is_professional]
    return tuple(
        _finding(forbidden[code], location=f"{entry.subset}#{entry.entry_id}")
        for entry in entries for code in entry.confidentiality if code in forbidden
    )


# -- findings and config helpers --------------------------------------------------------------------

#: rule -> (French, English).  Never the address, the INS or a name.
_MESSAGES: Mapping[str, tuple[str, str]] = {
    "mss.address.syntax": ("Adresse de destinataire mal formée.", "Malformed recipient address."),
    "mss.patient-address.length": (
        "Adresse patient : la partie locale doit être le matricule INS de 15 caractères (clé comprise), pas "
        "un autre identifiant.", "Patient address: the local part must be the 15-character INS matricule "
        "(key included), not another identifier."),
    "mss.patient-address.format": (
        "Adresse patient : l'INS doit compter 13 chiffres (2A/2B admis en positions 6-7) puis une clé de 2 "
        "chiffres.", "Patient address: the INS must be 13 digits (2A/2B allowed at positions 6-7) then a "
        "2-digit key."),
    "mss.patient-address.key": (
        "Adresse patient : la clé de l'INS ne correspond pas ; vérifiez le matricule INS.",
        "Patient address: the INS key does not match; check the INS matricule."),
    "mss.reply.not-initiated": (
        "Un patient ne peut écrire qu'à un professionnel qui lui a écrit en premier (ou à sa pharmacie).",
        "A patient may only write to a professional who wrote first (or to their pharmacy)."),
    "mss.reply.closed": (
        "Le professionnel a clos l'échange (X-MSS-MES: FIN) : la réponse n'est pas possible.",
        "The professional closed the exchange (X-MSS-MES: FIN): replying is not possible."),
    "mss.masking.masked-ps": (
        "Document masqué aux professionnels (MASQUE_PS) : il ne peut pas être envoyé à un professionnel.",
        "Document masked from professionals (MASQUE_PS): it cannot be sent to a professional."),
    "mss.masking.invisible-representatives": (
        "Document invisible aux représentants légaux : il ne peut être envoyé qu'au patient.",
        "Document invisible to legal representatives: it can only be sent to the patient."),
    "mss.masking.invisible-patient": (
        "Document non visible par le patient (INVISIBLE_PATIENT) : il ne peut pas lui être envoyé.",
        "Document not visible to the patient (INVISIBLE_PATIENT): it cannot be sent to them."),
}


def _finding(rule: str, location: str = "RCPT") -> Finding:
    fr, en = _MESSAGES[rule]
    return Finding(rule=rule, location=location, message_fr=fr, message_en=en, severity=Severity.ERROR)


def _string(table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"mss.{key} must be a non-empty string")
    return value


def _strings(table: Mapping[str, Any], key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = table.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"mss.{key} must be a list of strings")
    return tuple(v.strip().lower() for v in value)


def _integer(table: Mapping[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"mss.{key} must be a positive integer")
    return value
