"""The patient's own contact addresses: given at activation, changed later with a confirmation sent to the
new address (rules and decisions: pipelines.notify.core.contacts).

Owns: the order of the steps: check the shapes, keep the change pending (only the code's digest), announce
one CONTACT_CHECK event per new address (e-mail -> that e-mail, phone -> an SMS to that phone; the code
is never logged), and apply the change once the right code comes back.  Every change goes to the audit
hook as "lifecycle.contact-*" (no address in the trail).
Does not: authenticate (the API: the patient's own token), render or send (pipelines.notify.service).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.codes import new_code
from hub.errors import Refused
from hub.notices import Channel, Contact, Event, EventKind
from pipelines.notify.core.contacts import (
    CONFIRM_VALIDITY,
    MAX_CONFIRM_ATTEMPTS,
    confirmation_digest,
    normalise_email,
    normalise_phone,
)
from pipelines.notify.ports import NotificationStore

MAX_RACES = 20
#: rule -> (English, French)
MESSAGES: dict[str, tuple[str, str]] = {
    "contact.email": ("This e-mail address is not valid.", "Cette adresse e-mail n'est pas valide."),
    "contact.phone": ("This phone number is not valid (e.g. 06 12 34 56 78 or +33612345678).",
                      "Ce numéro de téléphone n'est pas valide (par exemple 06 12 34 56 78 ou +33612345678)."),
    "contact.nothing": ("Give an e-mail address or a phone number.",
                        "Indiquez une adresse e-mail ou un numéro de téléphone."),
    "contact.code": ("This confirmation code does not match, or it has expired: ask for the change again.",
                     "Ce code de confirmation ne correspond pas, ou il a expiré : demandez à nouveau la "
                     "modification."),
}


def refusal(rule: str) -> Refused:
    english, french = MESSAGES[rule]
    return Refused({"rule": rule, "location": "contact", "message_en": english, "message_fr": french})


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ContactPorts:
    """The notification store (where contacts live), the announcer, the code digests' secret."""

    notices: NotificationStore
    announce: Callable[[Event], object]
    secret: bytes
    clock: Callable[[], datetime] = field(default=_utcnow)
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes)
    audit: Callable[[str, str, str], None] | None = None


class Contacts:
    """hub.ports-style service behind the contact routes."""

    def __init__(self, ports: ContactPorts) -> None:
        if not ports.secret:
            raise ValueError("the contact secret must not be empty")
        self._p = ports

    def check(self, email: str, phone: str) -> None:
        """Refused (contact.email / contact.phone) unless both are well formed or empty."""
        _shapes(email, phone)

    def current(self, ins: str) -> Contact:
        return self._p.notices.contact(ins) or Contact(ins=ins)

    def given_at_activation(self, ins: str, email: str, phone: str) -> Contact | None:
        """What the person typed when activating, in use at once; None when they gave nothing.  Refused
        (contact.email / contact.phone) for a malformed address (checked before the activation)."""
        mail, tel = _shapes(email, phone)
        if not (mail or tel):
            return None
        done = self._p.notices.set_contact(ins, email=mail, phone=tel)
        self._audit(ins, "lifecycle.contact-set")
        return done

    def request_change(self, ins: str, email: str, phone: str) -> Contact:
        """Keep the change pending and send its code to each new address ("" removes that address: applied
        with the confirmation too; with no new address, the code goes to the address in use)."""
        mail, tel = _shapes(email, phone)
        now, current = self._p.clock(), self.current(ins)
        targets: list[tuple[Channel, str]] = []
        if mail and mail != current.email:
            targets.append((Channel.EMAIL, mail))
        if tel and tel != current.phone:
            targets.append((Channel.SMS, tel))
        if not targets:  # only removals (or nothing new): confirm from an address already in use
            targets = [(c, a) for c, a in ((Channel.EMAIL, current.email), (Channel.SMS, current.phone)) if a]
        if not targets:
            raise refusal("contact.nothing")
        code = new_code(self._p.random_bytes)
        digest = confirmation_digest(self._p.secret, ins, code)
        pending = self._p.notices.set_pending_contact(ins, email=mail, phone=tel, code_sha256=digest,
                                                      expires=now + CONFIRM_VALIDITY)
        tag = hashlib.sha256(digest.encode()).hexdigest()[:24]
        for channel, address in targets:
            self._p.announce(Event(event_id=f"contact:{tag}:{channel}", kind=EventKind.CONTACT_CHECK, ins=ins,
                                   occurred_at=now, urgent=True, code=code, code_expires=now + CONFIRM_VALIDITY,
                                   channel=str(channel), address=address))
        self._audit(ins, "lifecycle.contact-requested")
        return pending

    def confirm(self, ins: str, code: str) -> Contact:
        """Apply the pending change with its code (Refused contact.code: wrong, expired or none)."""
        for _ in range(MAX_RACES):
            current = self._p.notices.contact(ins)
            if current is None or not current.pending_sha256:
                raise refusal("contact.code")
            if current.pending_expires is None or self._p.clock() >= current.pending_expires:
                self._p.notices.count_contact_attempt(ins, seen=current.pending_attempts, drop=True)
                raise refusal("contact.code")
            digest = confirmation_digest(self._p.secret, ins, code)
            if hmac.compare_digest(digest, current.pending_sha256):
                done = self._p.notices.confirm_contact(ins, code_sha256=digest)
                if done is not None:
                    self._audit(ins, "lifecycle.contact-changed")
                    return done
                continue
            drop = current.pending_attempts + 1 >= MAX_CONFIRM_ATTEMPTS
            if self._p.notices.count_contact_attempt(ins, seen=current.pending_attempts, drop=drop):
                raise refusal("contact.code")
        raise refusal("contact.code")

    def _audit(self, ins: str, step: str) -> None:
        if self._p.audit is not None:
            self._p.audit(ins, step, f"patient:{ins}")


def _shapes(email: str, phone: str) -> tuple[str, str]:
    mail, tel = normalise_email(email), normalise_phone(phone)
    if mail is None:
        raise refusal("contact.email")
    if tel is None:
        raise refusal("contact.phone")
    return mail, tel
