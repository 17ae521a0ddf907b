"""Who may send and file what by mail: the sender binding, the sender rule and the XDM's all or nothing.

Owns the decisions every mail door shares (the SMTP gateway's admission, the mail pipeline, the
patient's "file this message" action), as tables and pure functions:
  - sender binding: after SMTP AUTH a credential sends only as its own addresses (`mss.sender.not-yours`);
  - the sender rule: only an identified sender files documents: an authenticated one, or a sender of the
    trust list; a null reverse-path (`MAIL FROM:<>`, DSNs and MDNs only) never does (`mss.sender.untrusted`);
  - the mailbox rule: a document that came by mail goes only into the record of the mailbox it was
    addressed to: its XDM metadata patientId and its CDA recordTarget INS must both name that patient
    (an empty one too is refused), else `xdm.patient-mismatch` (DMP code 904);
  - all or nothing: one hostile or refused member (any XDM error, a mismatch, a CDA that cannot be read
    safely) files nothing from the mail, and `xdm.rejected` closes the list the sender is told.
Does not: read archives (xdm.py), validate CDA documents beyond finding their INS (the CDA pipeline
does, per document, later), look anything up, or log.

Decision table (what a mail to a patient files):

| sender                                   | XDM / documents                       | filed         |
|------------------------------------------|---------------------------------------|---------------|
| null reverse-path, with or without AUTH  | anything                              | nothing       |
| unauthenticated, outside the trust list  | anything                              | nothing       |
| authenticated, or in the trust list      | any error finding, or one mismatch    | nothing       |
| authenticated, or in the trust list      | every member clean, all name the box  | every member  |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hub.credentials import Role
from hub.findings import Finding, Severity
from pipelines.cda.header import ROOT_TAG, ins_candidates
from pipelines.cda.validation import parse_untrusted
from pipelines.mail.core.mss import MssRules, sender_trusted, split_address

#: principals that are the hub itself (its reports), never a sender who files documents
HUB_PRINCIPALS = frozenset({"hub:report"})
#: attachment content types of a CDA R2 document
CDA_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-cda+xml"})


# -- sender binding -------------------------------------------------------------------------------


def sender_is_own(mail_from: str, own: Iterable[str]) -> bool:
    """Whether `mail_from` is one of `own`: "name@domain" (exact, case-insensitive), "domain" (any
    address of it) or "*.domain" (any address of a subdomain).  The null reverse-path is nobody's."""
    parsed = split_address(mail_from)
    if parsed is None:
        return False
    address = f"{parsed[0].lower()}@{parsed[1]}"
    for entry in (e.strip().lower() for e in own):
        if "@" in entry:
            if entry == address:
                return True
        elif entry.startswith("*."):
            if parsed[1].endswith(entry[1:]) and len(parsed[1]) > len(entry) - 1:
                return True
        elif parsed[1] == entry:
            return True
    return False


def own_addresses(mail_addresses: Sequence[str], *, role: Role, ins: str, rules: MssRules) -> tuple[str, ...]:
    """What a credential may send as: its configured addresses, and a patient's own patient address."""
    own = tuple(mail_addresses)
    return (*own, f"{ins}@{rules.patient_domain}".lower()) if role == Role.PATIENT and ins else own


# -- the sender rule ------------------------------------------------------------------------------


def sender_may_file(mail_from: str, *, auth: str, rules: MssRules) -> Finding | None:
    """None when this envelope sender may file documents, else the `mss.sender.untrusted` finding."""
    if not mail_from.strip("<> "):
        return finding("mss.sender.untrusted", "MAIL FROM")
    if auth and auth not in HUB_PRINCIPALS:
        return None  # the gateway bound the authenticated sender to its credential's addresses
    return None if sender_trusted(mail_from, rules) else finding("mss.sender.untrusted", "MAIL FROM")


def carries_documents(content_type: str, attachment_names: Iterable[str], attachment_types: Iterable[str]) -> bool:
    """Whether a mail that is not a delivery report (multipart/report) carries documents to file: an
    IHE_XDM.ZIP or a CDA attachment.  Used to refuse such a mail from the null reverse-path at DATA."""
    if content_type.lower() == "multipart/report":
        return False
    names = [n.rsplit("/", 1)[-1].casefold() for n in attachment_names]
    return "ihe_xdm.zip" in names or any(n.endswith(".xml") for n in names) or any(
        t.lower() in CDA_TYPES for t in attachment_types)


# -- the mailbox rule and all or nothing -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Carried:
    """One document a mail carries: where (an XDM entry "SUBSET01#Document01", or an attachment's name),
    its bytes, and the patientId CX.1 its XDM metadata gives (None: not from an XDM, no metadata)."""

    location: str
    data: bytes
    metadata_ins: str | None = None


def cda_ins(data: bytes) -> tuple[str, Finding | None]:
    """The matricule of a CDA's first recordTarget INS ("" when it has none), or the finding that says why
    the bytes cannot be read safely (not well-formed, a DOCTYPE, not a ClinicalDocument)."""
    root, problem = parse_untrusted(data)
    if root is None:
        return "", problem
    if root.tag != ROOT_TAG:
        return "", finding("cda.root", "/")
    candidates = ins_candidates(root)
    return (candidates[0].matricule if candidates else ""), None


def mailbox_findings(documents: Iterable[Carried], ins: str) -> tuple[Finding, ...]:
    """One finding per document that may not go into this patient's record: a metadata patientId or a
    CDA recordTarget INS that is not the mailbox's (or is empty), or CDA bytes unsafe to read."""
    found: list[Finding] = []
    for document in documents:
        if document.metadata_ins is not None and document.metadata_ins != ins:
            found.append(finding("xdm.patient-mismatch", document.location))
            continue
        matricule, problem = cda_ins(document.data)
        if problem is not None:
            found.append(Finding(rule=problem.rule, location=document.location, message_fr=problem.message_fr,
                                 message_en=problem.message_en, code=problem.code))
        elif matricule != ins:
            found.append(finding("xdm.patient-mismatch", document.location))
    return tuple(found)


def all_or_nothing(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """The errors that stop a mail's filing, closed by `xdm.rejected`; () when every member may be filed.
    Warnings (a missing hash slot, a nested zip left unexpanded) do not stop it."""
    errors = [f for f in findings if f.severity is Severity.ERROR]
    return (*errors, finding("xdm.rejected", "/")) if errors else ()


# -- findings -------------------------------------------------------------------------------------

#: rule -> (DMP code or None, French, English).  Never an INS, a name or document content.
RULES: Mapping[str, tuple[str | None, str, str]] = {
    "xdm.patient-mismatch": (
        "904",
        "Ce document concerne un autre patient que le titulaire de la boîte à laquelle il a été envoyé "
        "(patientId des métadonnées XDM ou INS du recordTarget différent ou absent) : il n'a pas été classé.",
        "This document is about another patient than the owner of the mailbox it was sent to (XDM metadata "
        "patientId or recordTarget INS different or missing): it was not filed."),
    "xdm.rejected": (
        None,
        "Rien n'a été classé depuis ce message : l'archive est acceptée entière ou pas du tout, et elle "
        "contient au moins un élément refusé (voir ci-dessus). Corrigez-le et renvoyez le message.",
        "Nothing was filed from this message: the archive is taken whole or not at all, and at least one of "
        "its members was refused (see above). Fix it and send the message again."),
    "mss.sender.untrusted": (
        None,
        "Expéditeur non identifié (adresse de retour vide ou hors de l'espace de confiance) : un tel message "
        "ne classe aucun document.",
        "Unidentified sender (null reverse-path or outside the trust list): such a message files no document."),
    "mss.sender.not-yours": (
        None,
        "Cette adresse d'expédition n'est pas attribuée à l'identifiant authentifié.",
        "This sender address does not belong to the authenticated credential."),
    "cda.root": (None, "Le document n'est pas un ClinicalDocument CDA R2.", "The document is not a CDA R2 "
                 "ClinicalDocument."),
}


def finding(rule: str, location: str) -> Finding:
    code, fr, en = RULES[rule]
    return Finding(rule=rule, location=location, message_fr=fr, message_en=en, severity=Severity.ERROR, code=code)
