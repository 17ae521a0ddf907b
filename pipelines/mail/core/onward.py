"""The retry of an onward mail: what is left to send and what was said, beside the queued mail (pure).

Owns: the framing of an onward ticket, the small object the outbound pipeline stores when it defers a
mail: the SMTP envelope of the retry (the recipients still to try, and `extra["warned"]` once the
"delayed" DSN went out) and the reference of the queued mail whose message it sends.  The message bytes
stay in the object intake stored at the 250 (read back and cut out with hub.mailqueue.unpack), so a
retry, however many there are, never writes them again.
Does not: decide when to retry (pipelines.mail.core.relay_schedule), read or write storage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hub.envelope import BlobRef
from hub.errors import EnvelopeDecodeError
from hub.mailqueue import SmtpEnvelope

TICKET_CONTENT_TYPE = "application/vnd.meshub.onward-ticket+json"
_MAGIC = b"MESHUB-ONWARD-TICKET/1\n"


@dataclass(frozen=True, slots=True)
class OnwardTicket:
    """A deferred onward mail: the retry's SMTP envelope and the queued mail (hub.mailqueue.pack) it sends."""

    smtp: SmtpEnvelope
    mail: BlobRef

    def encode(self) -> bytes:
        body = {"smtp": self.smtp.to_dict(), "mail": self.mail.to_dict()}
        return _MAGIC + json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> OnwardTicket:
        """Inverse of encode(); EnvelopeDecodeError if `data` is not an onward ticket."""
        if not is_ticket(data):
            raise EnvelopeDecodeError("not an onward ticket (bad magic)")
        try:
            body = json.loads(data[len(_MAGIC):])
            return cls(smtp=SmtpEnvelope.from_dict(body["smtp"]), mail=BlobRef.from_dict(body["mail"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeDecodeError(f"unreadable onward ticket: {exc}") from exc


def is_ticket(data: bytes) -> bool:
    """Whether stored bytes are an onward ticket (else a queued mail)."""
    return data.startswith(_MAGIC)
