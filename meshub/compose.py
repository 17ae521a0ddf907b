"""Composition root: the only place where concrete adapters are chosen and wired.

Owns: Hub, a running hub process: its Core (meshub.compose_core: object store, index, bus, intake,
built by build_core), the parts each role starts (build_api, build_workers, the edges of
meshub.compose_edges), the periodic ticks (recovery sweep, record timers, letters), scheduled by the
process's one loop (meshub.runtime), and stopping them in order; serve() runs the HTTP API.
Does not: contain any decision about documents.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

import uvicorn

from config.settings import Settings
from connectors.inbound.http.app import ApiParts, create_app
from hub.bus import open_connection
from hub.bus.kombu_bus import RoutedPublisher
from hub.bus.worker import Worker
from hub.intake import Intake
from hub.notices import Channel
from hub.ports import BlobStore
from hub.recovery import RecoverySweep
from meshub import compose_edges as edges
from meshub.compose_core import Core, build_api, build_core
from meshub.compose_records import RecordParts, RecordTimers
from meshub.compose_store import StorePermissions
from meshub.compose_workers import WORKER_NAMES, build_workers, notification_channels, parse_limits
from meshub.gateway_process import GatewayProcess
from meshub.runtime import Runtime
from meshub.scheduler import Periodic
from pipelines.definitions import Dispatch
from pipelines.insurer.reimbursements import InsurerBatches
from pipelines.notify.ports import NotificationChannel
from pipelines.notify.service import LetterRun
from pipelines.record.lifecycle import Lifecycle
from storage.objects import MinioBlobStore
from storage.spool import SpoolDrainer
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 60.0

__all__ = ["Hub", "build_hub", "parse_limits", "serve"]


class Hub:
    """A wired hub process: its Core (the ports, by name below), and the threads and child processes it
    started."""

    def __init__(self, core: Core, runtime: Runtime) -> None:
        self.core = core
        self.runtime = runtime
        self.gateways: list[GatewayProcess] = []
        self.drainers: list[SpoolDrainer] = []

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def store(self) -> MinioBlobStore:
        return self.core.store

    @property
    def index(self) -> SqlIndex:
        return self.core.index

    @property
    def publisher(self) -> RoutedPublisher:
        return self.core.publisher

    @property
    def intake(self) -> Intake:
        return self.core.intake

    @property
    def pipeline_store(self) -> BlobStore:
        return self.core.pipeline_store

    @property
    def mailboxes(self) -> SqlMailbox:
        return self.core.mailboxes

    @property
    def notices(self) -> SqlNotifications:
        return self.core.notices

    @property
    def records(self) -> RecordParts:
        return self.core.records

    @property
    def stop(self) -> threading.Event:
        return self.runtime.stop

    def api_context(self) -> ApiParts:
        return build_api(self.core)

    def lifecycle(self) -> Lifecycle:
        return self.core.lifecycle()

    def insurer(self, lifecycle: Lifecycle | None = None) -> InsurerBatches:
        return self.core.insurer(lifecycle)

    def letter_run(self, clock: Callable[[], datetime] | None = None) -> LetterRun:
        return self.core.letter_run(clock)

    def notification_channels(self) -> dict[Channel, NotificationChannel]:
        return notification_channels(self.core)

    # -- what each role starts -----------------------------------------------------------------------
    def start_workers(self, count: int) -> None:
        """The workers of every queue the event table names (`count` on intake), and the letters' tick."""
        plan = build_workers(self.core, count)
        for queue in plan.queues:
            handler = Dispatch(plan.table, queue=queue)
            for n in range(plan.counts.get(queue, 1)):
                worker = Worker(lambda: open_connection(self.settings.bus_url), self.core.topologies[queue], handler)
                self.runtime.spawn(f"{WORKER_NAMES.get(queue, queue)}-{n}", worker.run, background=True)
        self.runtime.schedule(Periodic("letter batch", self.settings.notify.letters_every_s,
                                       self.core.letter_run().tick))

    def start_records(self) -> None:
        """The record's timers (automatic opening after 6 weeks, majority, purge after 10 years, the
        reimbursement history 48 hours after activation), and the insurer's drop folder if configured."""
        edges.start_insurer_drop(self.core, self.runtime)
        lifecycle = self.lifecycle()
        timers = RecordTimers(self.records, lifecycle, self.insurer(lifecycle))
        self.runtime.schedule(Periodic("record timers", self.settings.records.sweep_every_s, timers.tick))

    def start_sweep(self) -> None:
        """The recovery sweep (and, embedded, the store's file modes) every minute."""
        if self.settings.embedded_store:
            self.runtime.schedule(Periodic("store permissions", SWEEP_EVERY_S, StorePermissions(self.settings).tick))
        self.runtime.schedule(Periodic("recovery sweep", SWEEP_EVERY_S, self._sweep().tick))

    def sweep_once(self, older_than: datetime) -> int:
        """Republish pending submissions older than `older_than` (a lost message is processed anyway)."""
        return self._sweep().once(older_than)

    def _sweep(self) -> RecoverySweep:
        return RecoverySweep(self.index, self.publisher, bucket=self.settings.store.bucket)

    def start_gateway(self, *, log_level: int = logging.INFO) -> None:
        gateways, drainers = edges.start_gateway(self.core, self.runtime, log_level=log_level)
        self.gateways += gateways
        self.drainers += drainers

    def start_imap(self) -> None:
        edges.start_imap(self.core, self.runtime)

    def start_filedrop(self) -> None:
        edges.start_filedrop(self.core, self.runtime)

    def close(self) -> None:
        for gateway in self.gateways:  # first: messages being spooled get their answer
            gateway.stop()
        for drainer in self.drainers:  # then what is spooled goes on to intake while it still works
            drainer.drain_all(timeout_s=10)
        self.runtime.join()
        self.core.close()
        self.runtime.exit_stack.close()


def build_hub(settings: Settings, *, workers_in_process: bool = False) -> Hub:
    """Start the services this process depends on and wire the ports (nothing is served yet).

    workers_in_process: this process both accepts and processes (`meshub run`, role all), so its
    workers read what its intake just stored from memory (RecentBlobs) instead of from S3."""
    runtime = Runtime(nice=settings.background_nice)
    try:
        core = build_core(settings, runtime.exit_stack, workers_in_process=workers_in_process)
    except BaseException:
        runtime.exit_stack.close()
        raise
    return Hub(core=core, runtime=runtime)


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
