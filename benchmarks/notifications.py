"""Notification benchmark: events/second through policy + notice store + durable bus + e-mail channel to a
local SMTP sink, with p50/p99 from announce to the sink's 250, beside the raw smtplib rate to the same sink
in the same run (the transport ceiling: one connection per message, and one reused connection), and the
deterministic counts per notification: SQL statements and commits (announcing, sending) and SMTP sessions
at the sink.  Nothing is asserted.

Stack: RabbitMQ and PostgreSQL when reachable (--stack production), else the embedded default's SQLite bus
and index (--stack embedded).  Each event is a new document for one of --patients active patients with
an e-mail address and no quiet hours (so every notice is due at once); by default one event per patient,
so that no digest merges two e-mails.

    .venv/bin/python -m benchmarks.notifications [--events 2000] [--workers 2] [--stack embedded]
"""

from __future__ import annotations

import argparse
import json
import smtplib
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks.harness import patients
from config.tables import load_notify_policy
from connectors.outbound.notify_channels import InAppChannel, SmtpEmailChannel
from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher, declare, queues
from hub.bus.worker import Worker
from hub.events import NoticeDue
from hub.notices import Channel, Event, EventKind, Preferences
from hub.records import PatientRecord, PatientStatus
from hub.topology import NOTIFY, Topology
from pipelines.definitions import Dispatch, on
from pipelines.notify.ports import NotificationChannel
from pipelines.notify.service import NoticeSender, Notifier, NotifyPorts
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SENDER_THREAD = "notify-sender-"


class CountingSink:
    """aiosmtpd handler: accepts everything, notes when each message arrived (by its Message-ID) and on
    which SMTP session."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.sessions: dict[int, Session] = {}  # kept, so that no id is reused
        self.done = threading.Event()
        self.expected = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.sessions[id(session)] = session
        content = bytes(envelope.original_content or b"")
        start = content.find(b"Message-ID:")
        key = content[start:content.find(b"\r\n", start)] if start >= 0 else str(len(self.arrived)).encode()
        self.arrived[key.decode(errors="replace")] = time.perf_counter()
        if len(self.arrived) >= self.expected:
            self.done.set()
        return "250 2.0.0 Ok"


class SqlCounts:
    """SQL statements and commits on a database's engines, by who made them (announcers or senders, from
    the thread's name)."""

    def __init__(self, engines: Sequence[Engine]) -> None:
        self.statements: Counter[str] = Counter()
        self.commits: Counter[str] = Counter()
        self._lock = threading.Lock()
        for engine in {id(e): e for e in engines}.values():
            sa.event.listen(engine, "before_cursor_execute", self._statement)
            sa.event.listen(engine, "commit", self._commit)

    @staticmethod
    def _who() -> str:
        return "send" if threading.current_thread().name.startswith(SENDER_THREAD) else "announce"

    def _statement(self, *_args: Any) -> None:
        with self._lock:
            self.statements[self._who()] += 1

    def _commit(self, *_args: Any) -> None:
        with self._lock:
            self.commits[self._who()] += 1

    def per(self, count: int) -> dict[str, float]:
        return {f"{what}_{who}": round(n / max(count, 1), 2) for what, counter in
                (("statements", self.statements), ("commits", self.commits)) for who, n in sorted(counter.items())}


def raw_rate(port: int, count: int, *, reuse: bool = False) -> float:
    """smtplib straight to the sink: one connection per message, or (reuse) one for them all, RSET between."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bench@mes.test", "p@example.org", "raw"
    message.set_content("x" * 400)
    started = time.perf_counter()
    client = smtplib.SMTP("127.0.0.1", port, timeout=30) if reuse else None
    for n in range(count):
        del message["Message-ID"]
        message["Message-ID"] = f"<raw-{n}@mes.test>"
        if client is not None:
            client.rset()
            client.send_message(message)
            continue
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as once:
            once.send_message(message)
    if client is not None:
        client.quit()
    return count / (time.perf_counter() - started)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    bus_url, index_url = _urls(args.stack, tmp)
    index = SqlIndex.connect(index_url)
    notices = SqlNotifications.beside(index)
    people = patients(args.patients or args.events)
    index.upsert_patients([PatientRecord(ins=ins, oid="1.2.250.1.213.1.4.10", birth_name="BENCH", given_names="Jo",
                                         birth_date="1980-01-01", email=f"p{n}@example.org",
                                         status=PatientStatus.ACTIVE) for n, ins in enumerate(people)])
    for ins in people:
        notices.set_preferences(ins, Preferences(quiet_hours=""))
    topology = Topology(prefix=f"bench{uuid.uuid4().hex[:6]}", queue=NOTIFY)
    with open_connection(bus_url) as conn:
        declare(conn, topology)
    publisher = KombuPublisher(open_connection(bus_url), topology, pool_size=max(4, args.announcers))
    ports = NotifyPorts(index=index, notices=notices, queue=publisher, policy=load_notify_policy(digest_window_s=0))

    sink = CountingSink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        raw = raw_rate(port, min(args.events, 1000))
        raw_reused = raw_rate(port, min(args.events, 1000), reuse=True)
        sink.arrived.clear()
        sink.sessions.clear()
        db = index.database
        sql = SqlCounts([db.engine, db.relaxed, db.reader])
        sink.expected = args.events
        sink.done.clear()
        email = SmtpEmailChannel("127.0.0.1", port, sender="ne-pas-repondre@mes.test")
        channels: dict[Channel, NotificationChannel] = {Channel.EMAIL: email, Channel.INAPP: InAppChannel()}
        sender = NoticeSender(ports, channels, link="https://mes.test")
        stop = threading.Event()
        handler = Dispatch((on(NoticeDue, sender),), queue=NOTIFY)
        workers = [threading.Thread(target=Worker(lambda: open_connection(bus_url), topology, handler).run,
                                    args=(stop,), daemon=True, name=f"{SENDER_THREAD}{n}")
                   for n in range(args.workers)]
        for worker in workers:
            worker.start()
        notifier = Notifier(ports)
        announced: dict[str, float] = {}

        def announce(n: int) -> None:
            event = Event(event_id=f"document:bench-{uuid.uuid4().hex}", kind=EventKind.NEW_DOCUMENT,
                          ins=people[n % len(people)], occurred_at=datetime.now(UTC))
            at = time.perf_counter()
            for notice in notifier.announce(event):
                if notice.channel is Channel.EMAIL:
                    announced[notice.notice_id] = at

        started = time.perf_counter()
        with ThreadPoolExecutor(args.announcers) as pool:  # as the intake workers do, each announcing its own
            list(pool.map(announce, range(args.events)))
        announce_s = time.perf_counter() - started
        sink.done.wait(timeout=600)
        elapsed = time.perf_counter() - started
        stop.set()
        email.close()
        latencies = sorted((arrived - announced[_notice_of(key)]) * 1000 for key, arrived in sink.arrived.items()
                           if _notice_of(key) in announced)
    finally:
        controller.stop()
        publisher.close()
        index.dispose()
        if args.stack == "production":  # leave the broker as it was
            with open_connection(bus_url) as conn:
                channel = conn.channel()
                for queue in queues(topology, amqp=True):
                    channel.queue_delete(queue.name)
                channel.exchange_delete(topology.exchange)
    return {"stack": args.stack, "events": args.events, "workers": args.workers, "announcers": args.announcers,
            "raw_smtplib_msg_per_s": round(raw, 1), "raw_smtplib_reused_msg_per_s": round(raw_reused, 1),
            "announce_per_s": round(args.events / announce_s, 1),
            "notifications_per_s": round(len(sink.arrived) / elapsed, 1),
            "delivered": len(sink.arrived),
            "per_notification": {**sql.per(len(sink.arrived)),
                                 "smtp_sessions": round(len(sink.sessions) / max(len(sink.arrived), 1), 3)},
            "latency_ms": {"p50": round(statistics.median(latencies), 1),
                           "p99": round(latencies[int(len(latencies) * 0.99) - 1], 1)} if latencies else {}}


def _notice_of(message_id_header: str) -> str:
    """'Message-ID: <n-...@mes.test>' -> 'n-...' (the e-mail channel derives the Message-ID from the notice id)."""
    value = message_id_header.partition(":")[2].strip().strip("<>")
    return value.partition("@")[0]


def _urls(stack: str, tmp: Path) -> tuple[str, str]:
    if stack == "production":
        return "amqp://guest:guest@127.0.0.1:5672//", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    return f"sqlite:///{tmp / 'bus.sqlite3'}", f"sqlite:///{tmp / 'index.sqlite3'}"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--patients", type=int, default=0,
                        help="patients the events are spread over (default: one per event, so no digest merges)")
    parser.add_argument("--workers", type=int, default=2, help="notify workers (sending)")
    parser.add_argument("--announcers", type=int, default=4, help="threads announcing events (the intake workers)")
    parser.add_argument("--stack", choices=("embedded", "production"), default="embedded")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notifybench-") as tmp:
        print(json.dumps(run(args, Path(tmp)), indent=2))


if __name__ == "__main__":
    main()
