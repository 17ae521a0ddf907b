"""Typed, versioned bus events: what one step tells the next (pure).

Owns: the public names of every event and decode().  Each event's queue is declared in hub.topology
(EVENT_QUEUES), its handler in pipelines.definitions (one table).  Importing this package registers
every kind, so decode() knows them all.
"""

from hub.events import legacy as _legacy  # noqa: F401  (registers the previous release's reader)
from hub.events.base import Event, decode
from hub.events.documents import DocumentFiled, DocumentRejected
from hub.events.notices import NoticeDue
from hub.events.submissions import (
    DeliveryRequested,
    DocumentSubmitted,
    MailQueued,
    Submitted,
    submission_event,
)

__all__ = ["DeliveryRequested", "DocumentFiled", "DocumentRejected", "DocumentSubmitted", "Event", "MailQueued",
           "NoticeDue", "Submitted", "decode", "submission_event"]
