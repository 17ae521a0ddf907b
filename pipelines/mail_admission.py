"""What the SMTP gateway asks before taking a message: hub.ports.MailAdmission on the MSSanté rules.

Owns: joining the pure rules (pipelines.core.mss) with the patient registry (Index port):
an unauthenticated peer (the MX role) must send from the espace de confiance and may only
write to addresses hosted here; an authenticated one may relay; a patient address must name a
known patient who has neither opposed nor closed their profile.
Does not: speak SMTP (connectors.inbound.smtp) or read message contents.
"""

from __future__ import annotations

from hub.mailqueue import Reply
from hub.ports import Index
from pipelines.core.mss import MssRules, RecipientKind, classify_recipient, recipient_reply, sender_trusted

UNTRUSTED_SENDER = Reply(550, "5.7.1", "Expediteur hors de l'espace de confiance MSSante / Sender domain is not "
                                       "in the MSSante trust list")


class Admission:
    """hub.ports.MailAdmission: the rules table plus one registry lookup per patient recipient."""

    def __init__(self, rules: MssRules, index: Index) -> None:
        self._rules = rules
        self._index = index

    def check_sender(self, mail_from: str, *, auth: str) -> Reply | None:
        """Authenticated: any sender.  MX role: a trusted domain, or the null sender (bounces, RFC 5321)."""
        if auth or not mail_from.strip("<>") or sender_trusted(mail_from, self._rules):
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
