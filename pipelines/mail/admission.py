"""What the SMTP gateway asks before taking a message: pipelines.mail.ports.MailAdmission on the MSSanté rules.

Owns: joining the pure rules (pipelines.mail.core.mss, pipelines.mail.core.trust) with the patient registry
(Index port) and the credentials' own addresses:
  - an unauthenticated peer (the MX role) must send from the espace de confiance, or from the null
    reverse-path (DSNs and MDNs), and may only write to addresses hosted here;
  - an authenticated one sends only as its credential's own addresses (`mail_addresses`, and a patient's
    own patient address): anything else, the null reverse-path included, is `550 5.7.1`
    (mss.sender.not-yours); it may relay;
  - a patient address must name a known patient who has neither opposed nor closed their profile;
  - at DATA, a null reverse-path message from an unauthenticated peer that carries documents to file
    (an IHE_XDM.ZIP or a CDA) and is not a delivery report (multipart/report) is `550 5.7.1`
    (mss.sender.untrusted): the null reverse-path is for reports, and a report files nothing anyway.
Does not: speak SMTP (connectors.inbound.smtp) or file anything (the mail pipeline, which applies the
same sender rule again to whatever reaches it).
"""

from __future__ import annotations

from collections.abc import Iterable

from hub.credentials import Credential
from hub.mailqueue import Reply
from hub.ports import Index
from pipelines.mail.core.mime import MailLimits, parse_mail
from pipelines.mail.core.mss import MssRules, RecipientKind, classify_recipient, recipient_reply, sender_trusted
from pipelines.mail.core.trust import carries_documents, own_addresses, sender_is_own

UNTRUSTED_SENDER = Reply(550, "5.7.1", "Expediteur hors de l'espace de confiance MSSante / Sender domain is not "
                                       "in the MSSante trust list")
NOT_YOURS = Reply(550, "5.7.1", "Adresse d'expedition non attribuee a cet identifiant / Sender address not owned "
                                "by the authenticated credential (mss.sender.not-yours)")
NULL_SENDER_DOCUMENTS = Reply(550, "5.7.1", "Adresse de retour vide: reserve aux avis de remise, aucun document "
                                            "classe / Null reverse-path is for delivery reports only, no documents "
                                            "filed (mss.sender.untrusted)")


class Admission:
    """mail.ports.MailAdmission: the rules table, the credentials' addresses, one registry lookup per patient."""

    def __init__(self, rules: MssRules, index: Index, credentials: Iterable[Credential] = (), *,
                 mail_limits: MailLimits | None = None) -> None:
        self._rules = rules
        self._index = index
        self._own = {c.name: own_addresses(c.mail_addresses, role=c.role, ins=c.ins, rules=rules)
                     for c in credentials}
        self._mail_limits = mail_limits or MailLimits()

    def check_sender(self, mail_from: str, *, auth: str) -> Reply | None:
        """Authenticated: only its own addresses.  MX role: a trusted domain, or the null sender (reports)."""
        if auth:
            return None if sender_is_own(mail_from, self._own.get(auth, ())) else NOT_YOURS
        if not mail_from.strip("<>") or sender_trusted(mail_from, self._rules):
            return None
        return UNTRUSTED_SENDER

    def check_recipient(self, address: str, *, mail_from: str, auth: str) -> Reply | None:
        recipient = classify_recipient(address, self._rules)
        status = None
        if recipient.kind is RecipientKind.PATIENT:
            assert recipient.ins is not None
            patient = self._index.patient(recipient.ins)
            status = str(patient.status) if patient is not None else None
        return recipient_reply(recipient, status, authenticated=bool(auth))

    def check_message(self, content: bytes, *, mail_from: str, auth: str) -> Reply | None:
        """At DATA: a null reverse-path message that carries documents and is no report is refused."""
        if auth or mail_from.strip("<> "):
            return None
        mail = parse_mail(content, limits=self._mail_limits).mail
        if mail is None:
            return None  # unreadable: the mail pipeline rejects it and files nothing
        attachments = mail.attachments
        if carries_documents(mail.content_type, (a.filename for a in attachments),
                             (a.content_type for a in attachments)):
            return NULL_SENDER_DOCUMENTS
        return None
