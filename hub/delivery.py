"""Outcomes of handing a message to the next hop (pure).

Owns: RecipientResult, what one recipient's delivery attempt gave (delivered,
transient or permanent failure, with the remote SMTP/LMTP reply), shared by every
outbound channel (SMTP relay, LMTP to the local IMAP store).
Does not: decide retries (hub.retry, pipelines) or build bounces (pipelines.mail.core.reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hub.mailqueue import Reply


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"  # 4xx or no answer: try again later
    PERMANENT = "permanent"  # 5xx: bounce


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """One recipient after one attempt: the outcome, the reply that decided it, and who answered."""

    address: str
    outcome: Outcome
    reply: Reply
    remote_host: str = ""

    @classmethod
    def from_reply(cls, address: str, code: int, text: str, *, remote_host: str = "") -> RecipientResult:
        """Classify a raw SMTP/LMTP reply; the enhanced status is taken from the text when present."""
        status, _, rest = text.partition(" ")
        if not (len(status.split(".")) == 3 and all(p.isdigit() for p in status.split("."))):
            status, rest = f"{code // 100}.0.0", text
        outcome = (Outcome.DELIVERED if 200 <= code < 300 else
                   Outcome.TRANSIENT if 400 <= code < 500 or code <= 0 else Outcome.PERMANENT)
        return cls(address=address, outcome=outcome, reply=Reply(code, status, rest.strip()), remote_host=remote_host)
