"""Reading the previous release's bus messages: envelopes without a kind (pure).

Owns: turning such an envelope into the event it meant, by the content type it carried (a queued mail,
a notice's wake-up, else a document).  Only messages still in a queue at an upgrade are read this way;
nothing writes them any more, and nothing else decides by content type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.envelope import Envelope
from hub.events.base import LEGACY, Event
from hub.events.notices import NoticeDue
from hub.events.submissions import DocumentSubmitted, MailQueued
from hub.mailqueue import MAIL_CONTENT_TYPE

NOTICE_CONTENT_TYPE = "application/x-meshub-notice"


def from_envelope(data: Mapping[str, Any]) -> Event:
    envelope = Envelope.from_dict(data)
    if envelope.content_type == NOTICE_CONTENT_TYPE:
        return NoticeDue(notice_id=envelope.submission_id, created_at=envelope.received_at,
                         channel=envelope.source.producer, tries=envelope.attempt)
    return (MailQueued if envelope.content_type == MAIL_CONTENT_TYPE else DocumentSubmitted)(envelope)


LEGACY.append(from_envelope)
