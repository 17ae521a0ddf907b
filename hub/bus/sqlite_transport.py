"""The embedded default bus: a kombu virtual transport with leases, backed by one SQLite file.

Owns: storing messages durably (WAL; publishes commit with synchronous=FULL, so a publish
that returned is on disk), leasing them to consumers, and giving them back when a
consumer dies.  Leases and acks commit with synchronous=NORMAL: a power failure may
undo the last of them, which only means a redelivery (at-least-once, as before).
Does not: declare the hub's topology or decide retries (hub.bus.kombu_bus, hub.bus.worker).

Rule 1: a message leaves the file only when it is acked.  `_get` *leases* the oldest
visible row (visible_at = now + visibility_timeout, deliveries += 1) and ack deletes it.
Rule 2: a lease ends by ack, by reject/requeue, when its channel closes (restore), when
its owner process is found dead (same host and PID namespace), or when it expires
(another host or container, a hung process).  Redelivery is at-least-once, exactly as on RabbitMQ.
Rule 3: a row already delivered more than the queue's `x-delivery-limit` times is moved
to its `x-dead-letter-routing-key` queue instead of being delivered again (poison
message protection, the semantics of RabbitMQ quorum queues).
Rule 4: the header `x-meshub-delay-ms` on a published message delays its first delivery.

Routing: bindings are stored in the file, so every process routes alike; only direct
exchanges (and the default exchange) are supported.  A message that no binding routes
raises NoRoute, as a mandatory publish on RabbitMQ would.

URL (see hub.bus.open_connection): `sqlite:///abs/path/bus.sqlite3`.  Transport options:
`visibility_timeout` (s, default 600), `polling_interval` (s, default 0.05),
`busy_timeout` (s, default 2.0).
"""

# mypy: disable-error-code="no-untyped-call"
# (kombu ships py.typed but most of its functions are unannotated)

from __future__ import annotations

import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

DELAY_HEADER = "x-meshub-delay-ms"
DELIVERY_COUNT_HEADER = "x-delivery-count"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,
    queue       TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    ready_at    REAL    NOT NULL,   -- first visible (publish time + delay)
    visible_at  REAL    NOT NULL,   -- not delivered before this (delay or lease expiry)
    deliveries  INTEGER NOT NULL DEFAULT 0,
    lease       TEXT,               -- delivery tag of the current lease
    owner_host  TEXT,
    owner_pid   INTEGER
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at, id);
CREATE INDEX IF NOT EXISTS messages_owner ON messages (owner_pid) WHERE owner_pid IS NOT NULL;
CREATE TABLE IF NOT EXISTS queues (
    name           TEXT PRIMARY KEY,
    delivery_limit INTEGER,
    dead_letter    TEXT
);
CREATE TABLE IF NOT EXISTS bindings (
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    queue       TEXT NOT NULL,
    PRIMARY KEY (exchange, routing_key, queue)
);
"""

_RELEASE = "visible_at = ready_at, lease = NULL, owner_host = NULL, owner_pid = NULL"


class NoRoute(ChannelError):  # type: ignore[misc]
    """No binding routes this exchange and routing key to a queue (RabbitMQ: 312 NO_ROUTE)."""


class _LocalFile:
    """What the channels of this process share for one file: a writer lock (threads queue here
    rather than in SQLite's sleepy busy handler) and a bell that wakes local consumers on publish."""

    def __init__(self) -> None:
        self.writer = threading.Lock()
        self._cond = threading.Condition()
        self.generation = 0

    def ring(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            if self.generation == seen:
                self._cond.wait(timeout)


_FILES: dict[str, _LocalFile] = {}
_FILES_LOCK = threading.Lock()


def _local_file(path: str) -> _LocalFile:
    with _FILES_LOCK:
        return _FILES.setdefault(os.path.realpath(path), _LocalFile())


def _pid_alive(pid: int) -> bool:
    """True unless `pid` surely is dead on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _host_identity() -> str:
    """Hostname plus PID namespace: pids are only comparable between processes that share both."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def connect_db(path: str, *, busy_timeout_s: float = 2.0) -> sqlite3.Connection:
    """Open the bus file in autocommit mode (transactions are explicit), WAL, synchronous=NORMAL."""
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'bindings'").fetchone() is None:
        db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
    return db


class SqliteQoS(virtual.QoS):
    """Ack deletes the leased row; reject requeues it or dead-letters it."""

    channel: SqliteChannel

    def ack(self, delivery_tag: str) -> None:
        self.channel.delete_leased(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.release(delivery_tag)
        else:
            self.channel.dead_letter_leased(delivery_tag, reason="rejected")
        self._quick_ack(delivery_tag)


class SqliteChannel(virtual.Channel):
    """One SQLite connection; the unit kombu uses for consuming or publishing."""

    QoS = SqliteQoS
    connection: SqliteLeaseTransport

    def __init__(self, connection: SqliteLeaseTransport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._db = connect_db(connection.path, busy_timeout_s=connection.busy_timeout)
        self._db.execute("PRAGMA busy_timeout=10")  # writers wait in _begin_immediate; readers barely wait
        self._busy_timeout = connection.busy_timeout
        self._lock = threading.RLock()
        self._closed = False
        self._leases: dict[str, int] = {}
        self._host = _host_identity()
        self._next_reap = 0.0
        self._file = connection.local_file
        self._visibility_timeout = connection.visibility_timeout

    # -- storage primitives -------------------------------------------------------------

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction; `durable` commits with synchronous=FULL (fsync before returning)."""
        with self._lock, self._file.writer:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._begin_immediate()
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, retrying every ~1 ms while another process writes.

        SQLite's own busy handler backs off to sleeps of up to 100 ms, which starves
        writers when a publisher and a worker process share the file.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.0005 + random.random() * 0.001)

    def _queue_settings(self, db: sqlite3.Connection, queue: str) -> tuple[int | None, str | None]:
        row = db.execute("SELECT delivery_limit, dead_letter FROM queues WHERE name = ?", (queue,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def _move_to_dead(self, db: sqlite3.Connection, *, row_id: int, payload: str, queue: str,
                      reason: str) -> None:
        _, dead_letter = self._queue_settings(db, queue)
        if dead_letter is None:
            log.warning("dropping message %s of %s (%s): no dead-letter queue", row_id, queue, reason)
            db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            return
        message = loads(payload)
        headers = message.setdefault("headers", {})
        headers.update({"x-first-death-reason": reason, "x-first-death-queue": queue})
        now = time.time()
        db.execute("UPDATE messages SET queue = ?, payload = ?, ready_at = ?, visible_at = ?, "
                   "deliveries = 0, lease = NULL, owner_host = NULL, owner_pid = NULL WHERE id = ?",
                   (dead_letter, dumps(message), now, now, row_id))
        log.info("message %s of %s dead-lettered to %s (%s)", row_id, queue, dead_letter, reason)

    def _lease_one(self, db: sqlite3.Connection, queue: str, now: float) -> tuple[int, str, int, str] | None:
        limit, _ = self._queue_settings(db, queue)
        while True:
            row = db.execute("SELECT id, payload, deliveries FROM messages "
                             "WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT 1",
                             (queue, now)).fetchone()
            if row is None:
                return None
            row_id, payload, deliveries = row
            if limit is not None and deliveries > limit:
                self._move_to_dead(db, row_id=row_id, payload=payload, queue=queue, reason="delivery_limit")
                continue
            tag = uuid.uuid4().hex
            db.execute("UPDATE messages SET deliveries = deliveries + 1, visible_at = ?, lease = ?, "
                       "owner_host = ?, owner_pid = ? WHERE id = ?",
                       (now + self._visibility_timeout, tag, self._host, os.getpid(), row_id))
            return row_id, payload, deliveries + 1, tag

    def _reap_dead_owners(self, now: float) -> None:
        """Give back the leases of processes of this host that died (kill -9, OOM) without releasing them."""
        if now < self._next_reap:
            return
        self._next_reap = now + 5.0
        with self._lock:
            pids = [pid for (pid,) in self._db.execute(
                "SELECT DISTINCT owner_pid FROM messages WHERE owner_pid IS NOT NULL AND owner_host = ?",
                (self._host,))]
        dead = [pid for pid in pids if pid != os.getpid() and not _pid_alive(pid)]
        if not dead:
            return
        with self._write() as db:
            for pid in dead:
                count = db.execute(f"UPDATE messages SET {_RELEASE} WHERE owner_pid = ? AND owner_host = ?",
                                   (pid, self._host)).rowcount
                log.warning("released %d message(s) leased by dead process %d", count, pid)

    # -- what kombu calls ------------------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        delay_ms = float((message.get("headers") or {}).get(DELAY_HEADER) or 0)
        ready_at = time.time() + max(delay_ms, 0.0) / 1000.0
        with self._write(durable=True) as db:  # Rule: a publish that returned is on disk
            db.execute("INSERT INTO messages (queue, payload, ready_at, visible_at) VALUES (?, ?, ?, ?)",
                       (queue, dumps(message), ready_at, ready_at))
        self._file.ring()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        now = time.time()
        self._reap_dead_owners(now)
        with self._lock:
            ready = self._db.execute("SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1",
                                     (queue, now)).fetchone()
        if ready is None:
            raise Empty()
        with self._write() as db:
            leased = self._lease_one(db, queue, now)
        if leased is None:
            raise Empty()
        row_id, payload, deliveries, tag = leased
        self._leases[tag] = row_id
        message: dict[str, Any] = loads(payload)
        message["properties"]["delivery_tag"] = tag
        if deliveries > 1:
            message.setdefault("headers", {})[DELIVERY_COUNT_HEADER] = deliveries - 1
            message["redelivered"] = True
        return message

    def delete_leased(self, delivery_tag: str) -> None:
        """Ack: the message is done, remove it (unless its lease expired and was taken by another)."""
        row_id = self._leases.pop(delivery_tag, None)
        if row_id is not None:
            with self._write() as db:
                db.execute("DELETE FROM messages WHERE id = ? AND lease = ?", (row_id, delivery_tag))

    def release(self, delivery_tag: str) -> None:
        """Requeue: end the lease, the message is visible again at its original place."""
        row_id = self._leases.pop(delivery_tag, None)
        if row_id is not None and not self._closed:
            with self._write() as db:
                db.execute(f"UPDATE messages SET {_RELEASE} WHERE id = ? AND lease = ?",
                           (row_id, delivery_tag))
            self._file.ring()

    def dead_letter_leased(self, delivery_tag: str, *, reason: str) -> None:
        row_id = self._leases.pop(delivery_tag, None)
        if row_id is None:
            return
        with self._write() as db:
            row = db.execute("SELECT payload, queue FROM messages WHERE id = ? AND lease = ?",
                             (row_id, delivery_tag)).fetchone()
            if row is not None:
                self._move_to_dead(db, row_id=row_id, payload=row[0], queue=row[1], reason=reason)

    def _restore(self, message: Any) -> None:
        self.release(message.delivery_tag)

    def _restore_at_beginning(self, message: Any) -> None:
        self.release(message.delivery_tag)

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        if not exchange:
            return [routing_key]
        with self._lock:
            queues = [q for (q,) in self._db.execute(
                "SELECT queue FROM bindings WHERE exchange = ? AND routing_key = ?", (exchange, routing_key))]
        if not queues:
            raise NoRoute(f"NO_ROUTE: exchange {exchange!r} routing key {routing_key!r}")
        return queues

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        arguments = kwargs.get("arguments") or {}
        verb = "INSERT OR REPLACE" if arguments else "INSERT OR IGNORE"
        with self._write() as db:
            db.execute(f"{verb} INTO queues (name, delivery_limit, dead_letter) VALUES (?, ?, ?)",
                       (queue, arguments.get("x-delivery-limit"), arguments.get("x-dead-letter-routing-key")))

    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                   arguments: Any = None, **kwargs: Any) -> None:
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO bindings (exchange, routing_key, queue) VALUES (?, ?, ?)",
                       (exchange or "amq.direct", routing_key, queue))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone() is not None

    def _size(self, queue: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM messages WHERE queue = ? AND lease IS NULL",
                                   (queue,)).fetchone()
        return int(row[0])

    def _purge(self, queue: str) -> int:
        with self._write() as db:
            cursor = db.execute("DELETE FROM messages WHERE queue = ? AND lease IS NULL", (queue,))
            return int(cursor.rowcount)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self._write() as db:
            db.execute("DELETE FROM messages WHERE queue = ?", (queue,))
            db.execute("DELETE FROM queues WHERE name = ?", (queue,))
            db.execute("DELETE FROM bindings WHERE queue = ?", (queue,))

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> int:
        size = self._size(queue)
        if if_empty and size:
            return 0
        self._delete(queue)
        self.state.queue_bindings_delete(queue)
        return size

    def close(self) -> None:
        if self._closed:
            return
        try:
            super().close()
        finally:
            with self._lock:
                self._closed = True
                self._db.close()


class SqliteLeaseTransport(virtual.Transport):
    """kombu transport for `sqlite:///abs/path` (use hub.bus.open_connection)."""

    Channel = SqliteChannel
    polling_interval = 0.05
    driver_type = "sqlite"
    driver_name = "sqlite3"
    connection_errors = (*virtual.Transport.connection_errors, sqlite3.OperationalError)  # type: ignore[assignment]
    channel_errors = (*virtual.Transport.channel_errors, sqlite3.DatabaseError)  # type: ignore[assignment]
    implements = virtual.Transport.implements.extend(exchange_type=frozenset(["direct"]))

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self.path: str = client.hostname
        if not self.path or not os.path.isabs(self.path):
            raise ValueError(f"sqlite bus needs an absolute file path, got {self.path!r}")
        self.visibility_timeout = float(options.get("visibility_timeout", 600.0))
        self.busy_timeout = float(options.get("busy_timeout", 2.0))
        self.local_file = _local_file(self.path)

    def driver_version(self) -> str:
        return sqlite3.sqlite_version

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver one message; between empty polls, sleep until a local publish or the polling interval."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cycle = self.cycle
        assert cycle is not None
        while True:
            seen = self.local_file.generation
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            wait = self.polling_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError()
                wait = min(wait, remaining)
            self.local_file.wait(seen, wait)
