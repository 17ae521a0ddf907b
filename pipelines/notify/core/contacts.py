"""The patient's own contact addresses (pure): their shapes, the confirmation code and its limits.

Owns: normalising an e-mail address and a phone number the patient gives, the rules of a change (the new
addresses wait until confirmed with the code sent to them; `CONFIRM_VALIDITY`, `MAX_CONFIRM_ATTEMPTS`),
and the keyed digest the store keeps of the confirmation code (never the code itself).
Decisions (as a table):
  what                               | effect
  -----------------------------------|------------------------------------------------------------------
  addresses given at activation      | in use at once (the person just proved themself with 3 factors)
  a change (PUT .../contact)         | pending; a code is sent to each NEW address (e-mail, SMS)
  the right code within 24 h         | the pending addresses replace the ones in use
  a wrong code                       | counted; the 5th wrong code drops the pending change
  an expired or no pending change    | refused (ask again)
  "" for an address                  | that address is removed (the registry's, the insurer's, applies)
Does not: store (storage.sql.notifications) or send anything (pipelines.notify.service).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta

CONFIRM_VALIDITY = timedelta(hours=24)
MAX_CONFIRM_ATTEMPTS = 5
_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+", re.ASCII)
_PHONE_DROP = re.compile(r"[\s.\-()]+")
_PHONE = re.compile(r"\+[1-9][0-9]{7,14}", re.ASCII)
_FRENCH = re.compile(r"0[1-9][0-9]{8}", re.ASCII)


def normalise_email(text: str) -> str | None:
    """The address trimmed, its domain lower case; "" for none; None when it is not an address."""
    value = text.strip()
    if not value:
        return ""
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        return None
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalise_phone(text: str) -> str | None:
    """E.164 (+33612345678; a French 06 12 34 56 78 becomes +33612345678); "" for none; None otherwise."""
    value = _PHONE_DROP.sub("", text.strip())
    if not value:
        return ""
    if _FRENCH.fullmatch(value):
        return "+33" + value[1:]
    return value if _PHONE.fullmatch(value) else None


def confirmation_digest(secret: bytes, ins: str, code: str) -> str:
    """HMAC-SHA256 of (INS, code without separators, upper case): what the store keeps."""
    if not secret:
        raise ValueError("the contact secret must not be empty")
    value = re.sub(r"[\s\-_.]+", "", code).upper()
    return hmac.new(secret, f"contact-code\x1f{ins}\x1f{value}".encode(), hashlib.sha256).hexdigest()
