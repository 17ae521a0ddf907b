"""Events that carry a stored submission (claim check): a document or a mail to process, a mail to relay.

Owns: DocumentSubmitted (a CDA document to file), MailQueued (a queued mail to route), DeliveryRequested
(a queued mail for the outbound relay), the table record kind -> event (submission_event: intake and the
recovery sweep both read it).
Does not: decide anything about the bytes (the handlers in pipelines/ do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Self

from hub.envelope import BlobRef, Envelope, Source
from hub.events.base import Event, registered


@dataclass(frozen=True, slots=True)
class Submitted(Event):
    """An event about one submission: its envelope (who sent it, when, where its bytes are)."""

    envelope: Envelope
    kind: ClassVar[str] = "submission"

    @property
    def event_id(self) -> str:
        return self.envelope.submission_id

    @property
    def attempt(self) -> int:
        return self.envelope.attempt

    @property
    def submission_id(self) -> str:
        return self.envelope.submission_id

    @property
    def received_at(self) -> datetime:
        return self.envelope.received_at

    @property
    def source(self) -> Source:
        return self.envelope.source

    @property
    def raw(self) -> BlobRef:
        return self.envelope.raw

    def next_attempt(self) -> Self:
        return replace(self, envelope=self.envelope.next_attempt())

    def data(self) -> dict[str, Any]:
        return self.envelope.to_dict()

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, attempt: int) -> Self:
        return cls(replace(Envelope.from_dict(data), attempt=attempt))


@registered
@dataclass(frozen=True, slots=True)
class DocumentSubmitted(Submitted):
    """A CDA document was accepted (HTTP, file drop, an insurer, a mail's XDM): validate, classify, file it.
    Producers: hub.intake.Intake (the doors), pipelines.mail.pipeline.MailPipeline (a mail's XDM, claimed
    through hub.intake.ClaimCheck).  Handler: pipelines.documents.runner.DocumentPipeline."""

    kind: ClassVar[str] = "document.submitted"


@registered
@dataclass(frozen=True, slots=True)
class MailQueued(Submitted):
    """A mail was accepted (SMTP 250, IMAP, a patient's API mail, a report the hub writes): route it.
    Producers: hub.intake.Intake (the doors), pipelines.mail.reporting.ReportSender (the hub's reports,
    claimed through hub.intake.ClaimCheck).  Handler: pipelines.mail.pipeline.MailPipeline."""

    kind: ClassVar[str] = "mail.queued"


@registered
@dataclass(frozen=True, slots=True)
class DeliveryRequested(Submitted):
    """A mail's recipients outside the patients' domain: relay it (LMTP or SMTP), with retries.
    Producer: pipelines.mail.pipeline.MailPipeline.  Handler: pipelines.mail.outbound.OutboundPipeline."""

    kind: ClassVar[str] = "delivery.requested"


#: record kind (the object-key family a submission's bytes are stored under) -> the event it starts
SUBMISSION_EVENTS: Mapping[str, type[Submitted]] = {"cda": DocumentSubmitted, "mail": MailQueued}


def submission_event(record_kind: str) -> type[Submitted]:
    """What a submission stored under `record_kind` is on the bus (documents unless it is mail)."""
    return SUBMISSION_EVENTS.get(record_kind, DocumentSubmitted)
