"""Composition of the workers: the hub's steps, the event -> step table, and how many workers per queue.

Owns: build_workers (a small frozen WorkerPlan: pipelines.definitions' table of the steps built here,
and the worker count of each queue it names), the notification channels and the outbound relay's ports
from settings; AfterFiling (a document's followers) and InUnit (the document step and its followers in one
unit of work: index, notice and trail rows in one commit, publishes after it).
Does not: start threads (meshub.compose does) or decide anything (the steps do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.settings import MailSettings
from config.tables import load_classification, load_validation_rules
from connectors.outbound.lmtp import LmtpDelivery
from connectors.outbound.notify_channels import (
    HttpPushChannel,
    HttpSmsChannel,
    InAppChannel,
    OutboxEmailChannel,
    OutboxSmsChannel,
    SmtpEmailChannel,
)
from connectors.outbound.relay import SmtpRelay
from hub.bus.local import LocalBus
from hub.envelope import Envelope
from hub.errors import ConfigError
from hub.events import DocumentFiled, DocumentRejected
from hub.notices import Channel
from hub.records import DocumentRecord
from hub.retry import RetryPolicy
from hub.topology import INTAKE, NOTIFY, OUTBOUND, OUTCOMES
from meshub.compose_core import Core
from pipelines.definitions import Dispatch, Route, Steps, queues, routes
from pipelines.documents.runner import DocumentPipeline
from pipelines.mail.core.mime import MailLimits
from pipelines.mail.core.relay_schedule import RelaySchedule, next_hops_from_rows
from pipelines.mail.core.xdm import XdmLimits
from pipelines.mail.outbound import OutboundPipeline, OutboundPorts
from pipelines.mail.pipeline import IntegrationReports, MailPipeline, MailPorts
from pipelines.notify.ports import NotificationChannel
from pipelines.notify.service import NoticeSender, Notifier
from pipelines.record.access import RecordAccess
from storage.sql.database import Database
from storage.sql.index import SqlIndex
from storage.sql.unit import after_commit

OUTBOUND_WORKERS = 2
MAIL_DOCUMENTS = "mss"  # the source kind of the documents a mail files (pipelines.mail.pipeline)
#: thread names of each queue's workers (`worker-0`, `outbound-1`, `notify-0`...)
WORKER_NAMES = {INTAKE: "worker", OUTBOUND: "outbound", NOTIFY: "notify"}


@dataclass(frozen=True)
class WorkerPlan:
    """What the workers of this process run: the table, and how many workers consume each queue
    (the outcomes of documents are handled in the documents' workers, before their ack: LocalBus)."""

    table: tuple[Route, ...]
    counts: dict[str, int]

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(q for q in queues(self.table) if q != OUTCOMES)


class AfterFiling:
    """The steps after a document's outcome: the patient's notification (a new document) and its `write`
    trail entry, and the integration report of the mail that carried it (`mss`); all idempotent.
    The document comes from the step that indexed it, in process (`indexed`); it is read from the index
    only when that step is not this process's (the outcome came from the bus).  The trail entry is the
    last write: in the document's unit of work, the trail's head lock is held the least and taken last."""

    def __init__(self, index: SqlIndex, records: RecordAccess, notifier: Notifier,
                 integration: IntegrationReports,
                 indexed: Callable[[str], DocumentRecord | None] = lambda _id: None) -> None:
        self._index, self._records, self._notifier, self._integration = index, records, notifier, integration
        self._indexed = indexed

    def filed(self, event: DocumentFiled) -> None:
        document = (self._indexed(event.document_id) or self._index.document(event.document_id)
                    if event.document_id else None)
        if document is not None:
            self._notifier.document_indexed(document)
            self._records.record_written(document)
        self.rejected(event)

    def rejected(self, event: DocumentFiled | DocumentRejected) -> None:
        """The mail's report once the outcome is committed: it reads the mail's other documents' outcomes,
        which a unit under way in another worker has not committed yet (the last to commit sees them all)."""
        if event.source_kind == MAIL_DOCUMENTS:
            after_commit(lambda: self._integration(event))


def build_workers(core: Core, count: int) -> WorkerPlan:
    """The steps wired on `core`; `count` workers on intake (CDA documents and queued mail)."""
    mail_limits, xdm_limits = parse_limits(core.settings.mail)
    notifier = Notifier(core.notify_ports)
    mail = MailPipeline(MailPorts(store=core.pipeline_store, index=core.index, mailboxes=core.mailboxes,
                                  claims=core.claims, submissions=core.publisher, outbound=core.publisher,
                                  rules=core.rules, reports=core.reports(), mail_limits=mail_limits,
                                  xdm_limits=xdm_limits,
                                  announce=notifier.message_filed))
    outcomes = LocalBus()
    documents = DocumentPipeline(store=core.pipeline_store, index=core.index, rules=load_validation_rules(
        max_bytes=core.settings.max_body_bytes), tables=load_classification(), outcomes=outcomes)
    after = AfterFiling(core.index, core.records.record_access(notifier), notifier, mail.integration,
                        indexed=documents.indexed)
    table = routes(Steps(documents=InUnit(documents, core.index.database), mail=mail,
                         outbound=OutboundPipeline(outbound_ports(core)), notices=notice_sender(core),
                         filed=after.filed, rejected=after.rejected))
    outcomes.handler = Dispatch(table, queue=OUTCOMES)
    return WorkerPlan(table, {INTAKE: count, OUTBOUND: OUTBOUND_WORKERS, NOTIFY: core.settings.notify.workers})


class InUnit:
    """A step whose writes on `database` (and its in-process followers', LocalBus) are one transaction,
    its publishes made after the commit (storage.sql.unit; the worker acks after both)."""

    def __init__(self, step: Callable[[Envelope], None], database: Database) -> None:
        self._step, self._db = step, database

    def __call__(self, envelope: Envelope) -> None:
        with self._db.unit():
            self._step(envelope)


def notice_sender(core: Core) -> NoticeSender:
    """One send per wake-up (NoticeDue), retried on the bus."""
    notify = core.settings.notify
    retry = RetryPolicy(max_attempts=notify.retry_attempts, base_delay_s=notify.retry_base_s,
                        max_delay_s=notify.retry_max_delay_s)
    return NoticeSender(core.notify_ports, notification_channels(core), link=notify.link, retry=retry)


def notification_channels(core: Core) -> dict[Channel, NotificationChannel]:
    """[notify]: a smart host and an SMS provider when configured, else outbox folders in the data dir."""
    settings = core.settings
    notify, outbox = settings.notify, settings.data_dir / "outbox"
    email: NotificationChannel = SmtpEmailChannel(
        notify.smtp_host, notify.smtp_port, sender=notify.sender, helo_name=settings.mail.hostname,
        starttls=notify.smtp_starttls, username=notify.smtp_username, password=notify.smtp_password,
    ) if notify.smtp_host else OutboxEmailChannel(outbox / "email", sender=notify.sender)
    sms: NotificationChannel = HttpSmsChannel(notify.sms_url, notify.sms_api_key) if notify.sms_url \
        else OutboxSmsChannel(outbox / "sms")
    return {Channel.EMAIL: email, Channel.SMS: sms, Channel.PUSH: HttpPushChannel(policy=core.push_policy()),
            Channel.INAPP: InAppChannel()}


def outbound_ports(core: Core) -> OutboundPorts:
    """The outbound relay's ports: LMTP to local organisations, SMTP next hops, the retry schedule."""
    mail = core.settings.mail
    local = LmtpDelivery(mail.lmtp_host, mail.lmtp_port) if mail.lmtp_host else None
    try:
        schedule = RelaySchedule(**mail.retry)
    except ValueError as exc:
        raise ConfigError(f"config [relay.retry]: {exc}") from exc
    relay = SmtpRelay(helo_name=mail.hostname, timeout_s=mail.relay_timeout_s, cafile=mail.relay_cafile)
    return OutboundPorts(store=core.store, mailboxes=core.mailboxes, outbound=core.publisher,
                         rules=core.rules, reports=core.reports(), relay=relay,
                         next_hops=next_hops_from_rows(mail.next_hops), local=local, schedule=schedule)


def parse_limits(mail: MailSettings) -> tuple[MailLimits, XdmLimits]:
    """The mail pipeline's caps from [mime] and [xdm] (keys already checked by config.settings)."""
    try:
        return MailLimits(**mail.limits.mime), XdmLimits(**mail.limits.xdm)
    except TypeError as exc:
        raise ConfigError(f"config [mime] / [xdm]: {exc}") from exc
