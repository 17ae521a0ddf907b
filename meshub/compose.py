"""Composition root: the only place where concrete adapters are chosen and wired.

Owns: building a running hub from Settings: object store (external S3, or a
SeaweedFS child process for the embedded default), index (SQLite or
PostgreSQL), bus (RabbitMQ, or the durable SQLite transport), worker threads,
the file-drop poller, the recovery sweep and the HTTP server, and stopping
them in order.  Does not: contain any decision about documents.
"""

from __future__ import annotations

import io
import logging
import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn

from config.settings import MailSettings, Settings
from config.tables import load_classification, load_notify_policy, load_validation_rules
from connectors.inbound.file_drop import DropFolders, FileDrop
from connectors.inbound.http_api import ApiContext, create_app
from connectors.inbound.imap import ImapIntake, mail_acceptor
from connectors.inbound.insurer_drop import InsurerDrop
from connectors.inbound.smtp_server import listen, make_dev_certificate
from connectors.outbound.letters import PdfLetterPrinter
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
from connectors.outbound.url_guard import UrlPolicy
from hub.auth import Authenticator
from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher, declare
from hub.bus.worker import Worker
from hub.credentials import Credential, Role
from hub.envelope import BlobRef, Envelope, Source
from hub.errors import ConfigError, HubError, StoreUnavailable
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE
from hub.notices import Channel
from hub.ports import BlobStore, Handler
from hub.retry import RetryPolicy
from hub.topology import Topology
from meshub import datadir
from meshub.compose_records import RecordParts, written_then_announced
from meshub.gateway_process import GatewayPlan, GatewayProcess
from pipelines.documents.router import Router
from pipelines.documents.runner import DocumentPipeline
from pipelines.documents.write_gate import EdgeRefusalTracer, HeaderWriteGate
from pipelines.insurer.reimbursements import InsurerBatches
from pipelines.mail.core.mime import MailLimits
from pipelines.mail.core.mss import MssRules
from pipelines.mail.core.relay_schedule import RelaySchedule, next_hops_from_rows
from pipelines.mail.core.xdm import XdmLimits
from pipelines.mail.mailboxes import PatientMail
from pipelines.mail.outbound import OutboundPipeline, OutboundPorts
from pipelines.mail.pipeline import MailPipeline, MailPorts
from pipelines.mail.reporting import ReportSender
from pipelines.notify.ports import NotificationChannel
from pipelines.notify.service import LetterRun, NoticeSender, Notifier, NotifyPorts
from pipelines.record.lifecycle import Lifecycle
from pipelines.record.roster_import import import_roster
from storage.keyring import open_keyring
from storage.objects import MinioBlobStore
from storage.recent import RecentBlobs
from storage.seaweed import SeaweedServer
from storage.spool import SpoolDrainer
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 60.0
FULL_RELEASE_EVERY_S = 3600.0  # the reimbursement release's safety net: every pending patient, hourly
SWEEP_AGE = timedelta(minutes=15)
OUTBOUND_WORKERS = 2
#: submissions from these sources are queued mail, not CDA documents (the sweep republishes them as such)
MAIL_SOURCES = frozenset({"smtp", "mailbox", "dsn", "imap"})


@dataclass
class Hub:
    """A wired hub: its ports, and the background threads and child processes it owns."""

    settings: Settings
    store: MinioBlobStore
    index: SqlIndex
    publisher: KombuPublisher
    intake: Intake
    topology: Topology
    pipeline_store: BlobStore
    mailboxes: SqlMailbox
    outbound_topology: Topology
    outbound_publisher: KombuPublisher
    rules: MssRules
    notices: SqlNotifications
    notify_ports: NotifyPorts
    notify_topology: Topology
    notify_publisher: KombuPublisher
    records: RecordParts
    stop: threading.Event = field(default_factory=threading.Event)
    gateways: list[GatewayProcess] = field(default_factory=list)
    drainers: list[SpoolDrainer] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    exit_stack: ExitStack = field(default_factory=ExitStack)

    def api_context(self) -> ApiContext:
        notifier, lifecycle = Notifier(self.notify_ports), self.lifecycle()
        records = self.records.record_access(notifier)
        mail = PatientMail(store=self.store, index=self.index, mailboxes=self.mailboxes, intake=self.intake,
                           rules=self.rules, reports=self.reports(), records=records)
        return ApiContext(intake=self.intake, index=self.index, store=self.store,
                          auth=Authenticator(self.settings.credentials, issued=self.records.tokens.lookup),
                          max_body_bytes=self.settings.max_body_bytes,
                          import_roster=lambda raw: import_roster(raw, self.index, lifecycle),
                          mailboxes=self.mailboxes, mail=mail, patient_domain=self.rules.patient_domain,
                          notices=self.notices, print_letters=lambda: self.letter_run().run(),
                          records=records, verify_trail=self.records.verify,
                          trail_head=self.records.audit.head,
                          lifecycle=lifecycle, insurer=self.insurer(lifecycle),
                          issue_token=self.records.issue_token, revoke_tokens=self.records.tokens.revoke,
                          contacts=self.records.contacts(notifier),
                          write_gate=self.write_gate(),
                          trace_refusal=EdgeRefusalTracer(index=self.index, trail=self.records.audit),
                          push_policy=self.push_policy())

    def write_gate(self) -> HeaderWriteGate:
        """Who may write what, checked at the doors before anything is stored (refusals traced)."""
        return HeaderWriteGate(index=self.index, trail=self.records.audit)

    def lifecycle(self) -> Lifecycle:
        return self.records.lifecycle(Notifier(self.notify_ports))

    def insurer(self, lifecycle: Lifecycle | None = None) -> InsurerBatches:
        return self.records.insurer(self.intake, self.pipeline_store, lifecycle or self.lifecycle())

    def start_records(self) -> None:
        """The record's timers (automatic opening after 6 weeks, majority, purge after 10 years, the
        reimbursement history 48 hours after activation), and the insurer's drop folder if configured."""
        records = self.settings.records
        if records.insurer_drop_dir:
            batches = self.insurer()
            drop = InsurerDrop(Path(records.insurer_drop_dir), accept_batch=batches.accept_batch,
                               accept_document=batches.accept_document, max_bytes=self.settings.max_body_bytes)
            self.spawn("insurer-drop", drop.run)
        self.spawn("records", self._records_loop, background=True)

    def _records_loop(self, stop: threading.Event) -> None:
        lifecycle = self.lifecycle()
        insurer = self.insurer(lifecycle)
        last_full = 0.0
        while not stop.wait(self.settings.records.sweep_every_s):
            full = time.monotonic() - last_full >= FULL_RELEASE_EVERY_S
            try:
                log.info("record timers: %s", self.records.sweep(lifecycle, insurer, full=full))
                last_full = time.monotonic() if full else last_full
            except HubError as exc:
                log.warning("record timers skipped: %s", type(exc).__name__)

    def reports(self) -> ReportSender:
        return ReportSender(self.intake, hostname=self.settings.mail.hostname, domain=self.settings.mail.hostname)

    def spawn(self, name: str, target: Callable[[threading.Event], Any], *, background: bool = False) -> None:
        """Run `target(stop)` in a daemon thread; `background` threads (filing work) run at the
        settings' nice value, so that answering SMTP sessions and HTTP requests comes first."""
        nice = self.settings.background_nice if background else 0

        def run(stop: threading.Event) -> Any:
            if nice:
                lower_priority(nice)
            return target(stop)

        thread = threading.Thread(target=run, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start_workers(self, count: int) -> None:
        """`count` intake workers (CDA documents and queued mail) and the outbound workers."""
        mail_limits, xdm_limits = parse_limits(self.settings.mail)
        notifier = Notifier(self.notify_ports)
        written = written_then_announced(self.records.record_access(notifier), notifier)
        mail = MailPipeline(MailPorts(store=self.pipeline_store, index=self.index, mailboxes=self.mailboxes,
                                      intake=self.intake, outbound=self.outbound_publisher, rules=self.rules,
                                      reports=self.reports(), mail_limits=mail_limits, xdm_limits=xdm_limits,
                                      announce=notifier.message_filed))
        # A document filed from a mail ("mss") settles that mail's integration report once it is final.
        documents = DocumentPipeline(store=self.pipeline_store, index=self.index, rules=load_validation_rules(
            max_bytes=self.settings.max_body_bytes), tables=load_classification(),
            followers={"mss": mail.integration}, announce=written)
        pipeline: Handler = Router({MAIL_CONTENT_TYPE: mail}, default=documents)
        for n in range(count):
            worker = Worker(lambda: open_connection(self.settings.bus_url), self.topology, pipeline)
            self.spawn(f"worker-{n}", worker.run, background=True)
        outbound = OutboundPipeline(self._outbound_ports())
        for n in range(OUTBOUND_WORKERS):
            worker = Worker(lambda: open_connection(self.settings.bus_url), self.outbound_topology, outbound)
            self.spawn(f"outbound-{n}", worker.run, background=True)
        self.start_notifications()

    def start_notifications(self) -> None:
        """The notify workers (one send per wake-up, retried on the bus) and the letter printer."""
        notify = self.settings.notify
        retry = RetryPolicy(max_attempts=notify.retry_attempts, base_delay_s=notify.retry_base_s,
                            max_delay_s=notify.retry_max_delay_s)
        sender = NoticeSender(self.notify_ports, self.notification_channels(), link=notify.link, retry=retry)
        for n in range(self.settings.notify.workers):
            worker = Worker(lambda: open_connection(self.settings.bus_url), self.notify_topology, sender)
            self.spawn(f"notify-{n}", worker.run, background=True)
        self.spawn("letters", self._letters_loop, background=True)

    def letter_run(self, clock: Callable[[], datetime] | None = None) -> LetterRun:
        """Printing due postal notices into one PDF batch (`clock`: tests look a month ahead)."""
        run = LetterRun(index=self.index, notices=self.notices, printer=PdfLetterPrinter(), store=self.store,
                        link=self.settings.notify.link)
        if clock is not None:
            run.clock = clock
        return run

    def _letters_loop(self, stop: threading.Event) -> None:
        run = self.letter_run()
        while not stop.wait(self.settings.notify.letters_every_s):
            try:
                run.run()
            except HubError as exc:
                log.warning("letter batch skipped: %s", type(exc).__name__)

    def notification_channels(self) -> dict[Channel, NotificationChannel]:
        """[notify]: a smart host and an SMS provider when configured, else outbox folders in the data dir."""
        notify, outbox = self.settings.notify, self.settings.data_dir / "outbox"
        email: NotificationChannel = SmtpEmailChannel(
            notify.smtp_host, notify.smtp_port, sender=notify.sender, helo_name=self.settings.mail.hostname,
            starttls=notify.smtp_starttls, username=notify.smtp_username, password=notify.smtp_password,
        ) if notify.smtp_host else OutboxEmailChannel(outbox / "email", sender=notify.sender)
        sms: NotificationChannel = HttpSmsChannel(notify.sms_url, notify.sms_api_key) if notify.sms_url \
            else OutboxSmsChannel(outbox / "sms")
        return {Channel.EMAIL: email, Channel.SMS: sms, Channel.PUSH: HttpPushChannel(policy=self.push_policy()),
                Channel.INAPP: InAppChannel()}

    def push_policy(self) -> UrlPolicy:
        """[notify] push_allow_*: where patients' push endpoints may point (production: public https only)."""
        notify = self.settings.notify
        return UrlPolicy(allow_http=notify.push_allow_http, allow_private=notify.push_allow_private)

    def _outbound_ports(self) -> OutboundPorts:
        mail = self.settings.mail
        local = LmtpDelivery(mail.lmtp_host, mail.lmtp_port) if mail.lmtp_host else None
        try:
            schedule = RelaySchedule(**mail.retry)
        except ValueError as exc:
            raise ConfigError(f"config [relay.retry]: {exc}") from exc
        relay = SmtpRelay(helo_name=mail.hostname, timeout_s=mail.relay_timeout_s, cafile=mail.relay_cafile)
        return OutboundPorts(store=self.store, mailboxes=self.mailboxes, outbound=self.outbound_publisher,
                             rules=self.rules, reports=self.reports(), relay=relay,
                             next_hops=next_hops_from_rows(mail.next_hops), local=local, schedule=schedule)

    def start_imap(self) -> None:
        """One IMAP intake per configured mailbox ([[imap]]): new messages come in as mail."""
        for n, source in enumerate(self.settings.mail.imap):
            intake = ImapIntake(source.host, source.port, source.user, source.password, mailbox=source.mailbox,
                                poll_s=source.poll_s, ssl_context=ssl.create_default_context() if source.tls else None,
                                accept=mail_acceptor(self.intake, recipient=source.recipient,
                                                     producer=source.producer))
            self.spawn(f"imap-{n}", intake.run_blocking)

    def start_gateway(self, *, log_level: int = logging.INFO) -> None:
        """The MSSanté SMTP gateway (unless smtp_port is 0), with a development certificate by default:
        `[smtp] processes` processes accepting on one socket, each spooling its mail, drained into
        intake by threads of this one."""
        mail = self.settings.mail
        if not mail.smtp_port:
            return
        cert, key = mail.tls_cert, mail.tls_key
        if cert is None or key is None:
            cert, key = make_dev_certificate(self.settings.data_dir / "tls", mail.hostname)
        spools = self.settings.data_dir / "spool" / "smtp"
        dirs = [spools / str(n) for n in range(mail.smtp_processes)]
        for spool_dir in dirs:
            spool_dir.mkdir(parents=True, exist_ok=True)
        # every spool is drained, those of processes a smaller [smtp] processes no longer starts too
        for spool_dir in sorted(p for p in spools.iterdir() if p.is_dir()):
            self.start_drain(spool_dir)
        try:
            listener = listen(mail.smtp_host, mail.smtp_port)  # bound here: a port in use fails here
        except OSError as exc:
            raise ConfigError(f"the SMTP port {mail.smtp_host}:{mail.smtp_port} cannot be listened on "
                              f"({exc.strerror or type(exc).__name__}): choose another with --smtp-port N "
                              f"(or [smtp] port; 0 turns the gateway off)") from None
        try:
            for spool_dir in dirs:  # each process accepts on it, and spools on its own
                gateway = GatewayProcess(GatewayPlan(settings=self.settings, spool_dir=spool_dir, cert=cert,
                                                     key=key, log_level=log_level), listener)
                gateway.start()
                self.gateways.append(gateway)
        finally:
            port = int(listener.getsockname()[1])
            listener.close()  # the children hold their own copies
        log.info("MSSanté SMTP gateway on %s:%d (%d process(es))", mail.smtp_host, port, mail.smtp_processes)

    def start_drain(self, spool_dir: Path) -> None:
        """Hand the SMTP spool's mail to intake (S3, index, bus), in a thread of this process."""
        nice = self.settings.background_nice
        drainer = SpoolDrainer(spool_dir, self.intake.accept_spooled,
                               thread_init=(lambda: lower_priority(nice)) if nice else None)
        self.exit_stack.callback(drainer.close)
        self.spawn(f"spool-drain-{len(self.drainers)}", drainer.run, background=True)
        self.drainers.append(drainer)

    def start_filedrop(self) -> None:
        assert self.settings.filedrop_dir is not None
        writer = drop_writer(self.settings)
        if writer.role is not Role.PRODUCER:
            log.error("file drop: [filedrop] producer names a %s credential; only a producer feeds a drop, "
                      "every file will be refused (write.role)", writer.role)
        drop = FileDrop(DropFolders(self.settings.filedrop_dir), intake=self.intake, index=self.index,
                        writer=writer, gate=self.write_gate(), max_bytes=self.settings.max_body_bytes)
        self.spawn("filedrop", drop.run)

    def start_sweep(self) -> None:
        self.spawn("sweep", self._sweep_loop)

    def _sweep_loop(self, stop: threading.Event) -> None:
        while not stop.wait(SWEEP_EVERY_S):
            if self.settings.embedded_store:  # volumes SeaweedFS grew since (their .vif files are 0644)
                datadir.strip_group_other(self.settings.data_dir / "s3")
            try:
                self.sweep_once(datetime.now(UTC) - SWEEP_AGE)
            except HubError as exc:
                log.warning("recovery sweep skipped: %s", type(exc).__name__)

    def sweep_once(self, older_than: datetime) -> int:
        """Republish pending submissions older than `older_than` (a lost message is processed anyway)."""
        stale = self.index.stale_pending(older_than)
        for record in stale:
            ref = BlobRef(bucket=self.settings.store.bucket, key=record.blob_key, sha256=record.sha256,
                          size=record.size)
            content_type = MAIL_CONTENT_TYPE if record.source_kind in MAIL_SOURCES else "text/xml"
            self.publisher.publish(Envelope(submission_id=record.submission_id, received_at=record.received_at,
                                            source=Source(kind=record.source_kind, producer=record.producer),
                                            raw=ref, content_type=content_type,
                                            confidentiality=record.confidentiality))
        if stale:
            log.warning("recovery sweep republished %d stale submission(s)", len(stale))
        return len(stale)

    def close(self) -> None:
        for gateway in self.gateways:  # first: messages being spooled get their answer
            gateway.stop()
        for drainer in self.drainers:  # then what is spooled goes on to intake while it still works
            drainer.drain_all(timeout_s=10)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.publisher.close()
        self.outbound_publisher.close()
        self.notify_publisher.close()
        self.index.dispose()
        self.exit_stack.close()


def drop_writer(settings: Settings) -> Credential:
    """Who writes through the file drop: the credential named by `[filedrop] producer`, or, when no
    credential has that name, a producer of that name (the drop folder's owner, an establishment's system)."""
    name = settings.filedrop_producer
    named = [c for c in settings.credentials if c.name == name]
    return named[0] if named else Credential(name=name, role=Role.PRODUCER, token_sha256="")


def parse_limits(mail: MailSettings) -> tuple[MailLimits, XdmLimits]:
    """The mail pipeline's caps from [mime] and [xdm] (keys already checked by config.settings)."""
    try:
        return MailLimits(**mail.limits.mime), XdmLimits(**mail.limits.xdm)
    except TypeError as exc:
        raise ConfigError(f"config [mime] / [xdm]: {exc}") from exc


def lower_priority(nice: int) -> None:
    """Lower the calling thread's scheduling priority (Linux schedules threads one by one); a no-op
    where the platform cannot."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:
        log.debug("thread priority unchanged: %s", exc)


def _object_store(settings: Settings, stack: ExitStack) -> MinioBlobStore:
    keyring = open_keyring(environ=os.environ, kek_file=settings.store.kek_file, data_dir=settings.data_dir,
                           embedded=settings.embedded_store)  # first: a missing key fails the start, not a PUT
    store = settings.store
    if settings.embedded_store:
        keys = datadir.secrets_for(settings.data_dir)
        server = SeaweedServer(settings.data_dir / "s3", s3_port=store.embedded_port,
                               access_key=keys["s3_access_key"], secret_key=keys["s3_secret_key"],
                               fsync=store.fsync)
        server.start()
        stack.callback(server.stop)
        store = replace(store, endpoint=server.endpoint, access_key=keys["s3_access_key"],
                        secret_key=keys["s3_secret_key"])
    assert store.endpoint is not None
    blobs = MinioBlobStore.connect(endpoint=store.endpoint, access_key=store.access_key,
                                   secret_key=store.secret_key, bucket=store.bucket,
                                   key_secret=settings.key_secret, secure=store.secure, keyring=keyring)
    blobs.ensure_bucket()
    if settings.embedded_store:
        _probe_embedded(blobs)
        datadir.strip_group_other(settings.data_dir / "s3")
    return blobs


def _probe_embedded(blobs: MinioBlobStore) -> None:
    """Write, read back and delete a random object with this start's credentials: the child answers as the
    store the hub created (and has grown its first volumes, whose files strip_group_other then makes private)."""
    key, data = f"meshub-probe/{uuid.uuid4().hex}", os.urandom(1024)
    try:
        blobs.client.put_object(bucket_name=blobs.bucket, object_name=key, data=io.BytesIO(data), length=len(data))
        answer = blobs.client.get_object(bucket_name=blobs.bucket, object_name=key)
        try:
            same = answer.read() == data
        finally:
            answer.close()
            answer.release_conn()
        blobs.client.remove_object(bucket_name=blobs.bucket, object_name=key)
    except Exception as exc:  # minio and urllib3 errors alike: the store is not ours
        raise StoreUnavailable(f"the embedded object store failed its start probe: {type(exc).__name__}") from None
    if not same:
        raise StoreUnavailable("the embedded object store answered the start probe with other bytes")


def build_hub(settings: Settings, *, workers_in_process: bool = False) -> Hub:
    """Start the services this process depends on and wire the ports (nothing is served yet).

    workers_in_process: this process both accepts and processes (`meshub run`, role all), so its
    workers read what its intake just stored from memory (RecentBlobs) instead of from S3."""
    if not settings.key_secret:
        settings = replace(settings, key_secret=datadir.secrets_for(settings.data_dir)["key_secret"].encode())
    stack = ExitStack()
    try:
        store = _object_store(settings, stack)
        index = SqlIndex.connect(settings.index_url)
        topology = Topology(prefix=settings.bus_prefix)
        outbound_topology = Topology(prefix=settings.bus_prefix, queue="outbound")
        notify_topology = Topology(prefix=settings.bus_prefix, queue="notify")
        with open_connection(settings.bus_url) as conn:
            declare(conn, topology)
            declare(conn, outbound_topology)
            declare(conn, notify_topology)
        publisher = KombuPublisher(open_connection(settings.bus_url), topology, pool_size=32)
        outbound_publisher = KombuPublisher(open_connection(settings.bus_url), outbound_topology, pool_size=4)
        notify_publisher = KombuPublisher(open_connection(settings.bus_url), notify_topology, pool_size=4)
        mailboxes = SqlMailbox.beside(index)
        notices = SqlNotifications.beside(index)
        policy = load_notify_policy(digest_window_s=settings.notify.digest_window_s)
        rules = MssRules.from_mapping(settings.mail.rules)
        records = RecordParts.build(settings, index, store, notices, mailboxes, patient_domain=rules.patient_domain)
    except BaseException:
        stack.close()
        raise
    blobs: BlobStore = RecentBlobs(store) if workers_in_process else store
    intake = Intake(store=blobs, index=index, publisher=publisher)
    return Hub(settings=settings, store=store, index=index, publisher=publisher, intake=intake,
               topology=topology, pipeline_store=blobs, mailboxes=mailboxes, outbound_topology=outbound_topology,
               outbound_publisher=outbound_publisher, rules=rules, records=records,
               notices=notices, notify_ports=NotifyPorts(index=index, notices=notices, queue=notify_publisher,
                                                         policy=policy),
               notify_topology=notify_topology, notify_publisher=notify_publisher, exit_stack=stack)


def serve(hub: Hub, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the HTTP API in this thread until SIGINT/SIGTERM."""
    settings = hub.settings
    config = uvicorn.Config(create_app(hub.api_context()), host=settings.http_host, port=settings.http_port,
                            access_log=False, log_config=None, timeout_graceful_shutdown=10,
                            # Producers keep connections open between documents: a 5 s keep-alive (the
                            # default) races with their reuse and resets connections.
                            timeout_keep_alive=75)
    server = uvicorn.Server(config)
    url = f"http://{settings.http_host}:{settings.http_port}"
    if on_ready is not None:
        threading.Thread(target=_announce_when_started, args=(server, url, on_ready), daemon=True).start()
    server.run()


def _announce_when_started(server: uvicorn.Server, url: str, on_ready: Callable[[str], None]) -> None:
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.started:
        on_ready(url)
