"""Composition of what every process of the hub shares: stores, index, bus, intake and its claim check (built
once per process).

Owns: Core (a small frozen part: the ports every process uses), build_core (start the services this
process depends on and wire the ports, nothing served yet) and build_api (the HTTP API's context).
Does not: start threads (meshub.compose) or build the workers' steps (meshub.compose_workers).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime

from config.settings import Settings
from config.tables import load_notify_policy
from connectors.inbound.http.app import (
    ApiParts,
    DocumentPorts,
    InsurerPorts,
    LifecyclePorts,
    MailboxPorts,
    NotificationPorts,
    OperationPorts,
    TrailChecks,
)
from connectors.outbound.letters import PdfLetterPrinter
from connectors.outbound.url_guard import UrlPolicy
from hub.auth import Authenticator
from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher, RoutedPublisher, declare
from hub.intake import ClaimCheck, Intake
from hub.ports import BlobStore
from hub.topology import INTAKE, Topology, topologies
from meshub import datadir
from meshub.compose_records import RecordParts
from meshub.compose_store import object_store
from pipelines.documents.write_gate import EdgeRefusalTracer, HeaderWriteGate
from pipelines.insurer.reimbursements import InsurerBatches
from pipelines.mail.core.mss import MssRules
from pipelines.mail.mailboxes import PatientMail
from pipelines.mail.reporting import ReportSender
from pipelines.notify.service import LetterRun, Notifier, NotifyPorts
from pipelines.record.lifecycle import Lifecycle
from pipelines.record.roster_import import import_roster
from storage.objects import MinioBlobStore
from storage.recent import RecentBlobs
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications
from storage.sql.unit import AfterCommit

#: publisher connections per queue (intake answers producers: the most)
PUBLISH_POOLS = {INTAKE: 32}


@dataclass(frozen=True)
class Core:
    """The ports of one process: what the API, the workers and the edges all use."""

    settings: Settings
    store: MinioBlobStore
    index: SqlIndex
    publisher: RoutedPublisher  # every event to its queue (hub.topology)
    intake: Intake  # the doors' way in
    claims: ClaimCheck  # the steps' (a mail's documents, the hub's reports): they publish the events themselves
    topologies: dict[str, Topology]
    pipeline_store: BlobStore  # the workers' reads (RecentBlobs when this process also accepts)
    mailboxes: SqlMailbox
    rules: MssRules
    notices: SqlNotifications
    notify_ports: NotifyPorts
    records: RecordParts

    def lifecycle(self) -> Lifecycle:
        return self.records.lifecycle(Notifier(self.notify_ports))

    def insurer(self, lifecycle: Lifecycle | None = None) -> InsurerBatches:
        return self.records.insurer(self.intake, self.pipeline_store, lifecycle or self.lifecycle())

    def reports(self) -> ReportSender:
        """The hub's reports, queued as mail from inside the steps: the claim check, then MailQueued published."""
        hostname = self.settings.mail.hostname
        return ReportSender(self.claims, self.publisher, hostname=hostname, domain=hostname)

    def write_gate(self) -> HeaderWriteGate:
        """Who may write what, checked at the doors before anything is stored (refusals traced)."""
        return HeaderWriteGate(index=self.index, trail=self.records.audit)

    def push_policy(self) -> UrlPolicy:
        """[notify] push_allow_*: where patients' push endpoints may point (production: public https only)."""
        notify = self.settings.notify
        return UrlPolicy(allow_http=notify.push_allow_http, allow_private=notify.push_allow_private)

    def letter_run(self, clock: Callable[[], datetime] | None = None) -> LetterRun:
        """Printing due postal notices into one PDF batch (`clock`: tests look a month ahead)."""
        run = LetterRun(index=self.index, notices=self.notices, printer=PdfLetterPrinter(), store=self.store,
                        link=self.settings.notify.link)
        if clock is not None:
            run.clock = clock
        return run

    def close(self) -> None:
        self.publisher.close()
        self.index.dispose()


def build_core(settings: Settings, stack: ExitStack, *, workers_in_process: bool = False) -> Core:
    """Start the services this process depends on and wire the ports (nothing is served yet); what must be
    stopped goes on `stack`.  workers_in_process: this process both accepts and processes (`meshub run`,
    role all), so its workers read what its intake just stored from memory (RecentBlobs), not from S3."""
    if not settings.key_secret:
        settings = replace(settings, key_secret=datadir.secrets_for(settings.data_dir)["key_secret"].encode())
    store = object_store(settings, stack)
    index = SqlIndex.connect(settings.index_url)
    publisher, bus = _bus(settings)
    mailboxes = SqlMailbox.beside(index)
    notices = SqlNotifications.beside(index)
    policy = load_notify_policy(digest_window_s=settings.notify.digest_window_s)
    rules = MssRules.from_mapping(settings.mail.rules)
    records = RecordParts.build(settings, index, store, notices, mailboxes, patient_domain=rules.patient_domain)
    blobs: BlobStore = RecentBlobs(store) if workers_in_process else store
    return Core(settings=settings, store=store, index=index, publisher=publisher,
                intake=Intake(store=blobs, index=index, publisher=publisher),
                claims=ClaimCheck(store=blobs, index=index), topologies=bus,
                pipeline_store=blobs, mailboxes=mailboxes, rules=rules, notices=notices,
                notify_ports=NotifyPorts(index=index, notices=notices, queue=AfterCommit(publisher),
                                         policy=policy),  # wake-ups after the unit's commit
                records=records)


def _bus(settings: Settings) -> tuple[RoutedPublisher, dict[str, Topology]]:
    """Every queue of hub.topology declared (idempotent), and one publisher routing each event to its own."""
    bus = topologies(settings.bus_prefix)
    with open_connection(settings.bus_url) as conn:
        for topology in bus.values():
            declare(conn, topology)
    return RoutedPublisher({queue: KombuPublisher(open_connection(settings.bus_url), topology,
                                                  pool_size=PUBLISH_POOLS.get(queue, 4))
                            for queue, topology in bus.items()}), bus


def build_api(core: Core) -> ApiParts:
    """The HTTP API's parts, feature by feature (connectors.inbound.http.app.create_app)."""
    notifier, lifecycle = Notifier(core.notify_ports), core.lifecycle()
    records = core.records.record_access(notifier)
    mail = PatientMail(store=core.store, index=core.index, mailboxes=core.mailboxes, intake=core.intake,
                       rules=core.rules, reports=core.reports(), records=records)
    max_body = core.settings.max_body_bytes
    return ApiParts(
        auth=Authenticator(core.settings.credentials, issued=core.records.tokens.lookup), blobs=core.store,
        documents=DocumentPorts(core.intake, core.index, core.write_gate(), max_body),
        operations=OperationPorts(lambda raw: import_roster(raw, core.index, lifecycle),
                                  (("index", core.index.ping), ("store", core.store.ping)), max_body),
        trace_refusal=EdgeRefusalTracer(index=core.index, trail=core.records.audit),
        records=records, trail=TrailChecks(verify=core.records.verify, head=core.records.audit.head),
        lifecycle=LifecyclePorts(lifecycle, contacts=core.records.contacts(notifier),
                                 issue_token=core.records.issue_token, revoke_tokens=core.records.tokens.revoke),
        insurer=InsurerPorts(core.insurer(lifecycle), max_body),
        mailbox=MailboxPorts(core.mailboxes, mail, patient_domain=core.rules.patient_domain),
        notifications=NotificationPorts(core.notices, print_letters=lambda: core.letter_run().run(),
                                        push_policy=core.push_policy()))
