"""The embedded bus's file: its schema, one process's connection, and the row operations of a lease.

Owns: the SQLite schema (messages, queues, bindings), write transactions (BEGIN IMMEDIATE retried every
~1 ms; `durable` commits with synchronous=FULL), leasing the oldest visible row, dead-lettering a row
past its queue's delivery limit, giving back the leases of dead processes of this host, and what the
channels of one process share for a file (a writer lock and a bell rung on publish).
Does not: speak kombu (hub.bus.sqlite_transport, whose docstring states the rules).
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

from kombu.utils.json import dumps, loads

log = logging.getLogger("hub.bus.sqlite_transport")

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

RELEASE = "visible_at = ready_at, lease = NULL, owner_host = NULL, owner_pid = NULL"


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


def local_file(path: str) -> _LocalFile:
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


class BusFile:
    """One process's connection to the bus file: transactions, leases and dead-lettering on its rows.
    The channel (hub.bus.sqlite_transport.SqliteChannel) holds one and serialises its use with `lock`."""

    def __init__(self, path: str, *, busy_timeout_s: float, visibility_timeout_s: float) -> None:
        self.db = connect_db(path, busy_timeout_s=busy_timeout_s)
        self.db.execute("PRAGMA busy_timeout=10")  # writers wait in _begin_immediate; readers barely wait
        self._busy_timeout = busy_timeout_s
        self.lock = threading.RLock()
        self.host = _host_identity()
        self._next_reap = 0.0
        self.local = local_file(path)
        self._visibility_timeout = visibility_timeout_s
        self._full: bool | None = False  # synchronous=FULL on this connection (connect_db sets NORMAL)

    @contextmanager
    def write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction; `durable` commits with synchronous=FULL (fsync before returning).
        The connection keeps the level of its last write (a publishing channel stays at FULL, a
        consuming one at NORMAL): the PRAGMA runs only when the level changes, not twice per write."""
        with self.lock, self.local.writer:
            self._synchronous(full=durable)
            self._begin_immediate()
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _synchronous(self, *, full: bool) -> None:
        if self._full is not full:
            self._full = None  # unknown until the PRAGMA returned
            self.db.execute("PRAGMA synchronous=FULL" if full else "PRAGMA synchronous=NORMAL")
            self._full = full

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, retrying every ~1 ms while another process writes.

        SQLite's own busy handler backs off to sleeps of up to 100 ms, which starves
        writers when a publisher and a worker process share the file.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.0005 + random.random() * 0.001)

    def _queue_settings(self, db: sqlite3.Connection, queue: str) -> tuple[int | None, str | None]:
        row = db.execute("SELECT delivery_limit, dead_letter FROM queues WHERE name = ?", (queue,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def move_to_dead(self, db: sqlite3.Connection, *, row_id: int, payload: str, queue: str,
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

    def lease_one(self, db: sqlite3.Connection, queue: str, now: float) -> tuple[int, str, int, str] | None:
        limit, _ = self._queue_settings(db, queue)
        while True:
            row = db.execute("SELECT id, payload, deliveries FROM messages "
                             "WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT 1",
                             (queue, now)).fetchone()
            if row is None:
                return None
            row_id, payload, deliveries = row
            if limit is not None and deliveries > limit:
                self.move_to_dead(db, row_id=row_id, payload=payload, queue=queue, reason="delivery_limit")
                continue
            tag = uuid.uuid4().hex
            db.execute("UPDATE messages SET deliveries = deliveries + 1, visible_at = ?, lease = ?, "
                       "owner_host = ?, owner_pid = ? WHERE id = ?",
                       (now + self._visibility_timeout, tag, self.host, os.getpid(), row_id))
            return row_id, payload, deliveries + 1, tag

    def reap_dead_owners(self, now: float) -> None:
        """Give back the leases of processes of this host that died (kill -9, OOM) without releasing them."""
        if now < self._next_reap:
            return
        self._next_reap = now + 5.0
        with self.lock:
            pids = [pid for (pid,) in self.db.execute(
                "SELECT DISTINCT owner_pid FROM messages WHERE owner_pid IS NOT NULL AND owner_host = ?",
                (self.host,))]
        dead = [pid for pid in pids if pid != os.getpid() and not _pid_alive(pid)]
        if not dead:
            return
        with self.write() as db:
            for pid in dead:
                count = db.execute(f"UPDATE messages SET {RELEASE} WHERE owner_pid = ? AND owner_host = ?",
                                   (pid, self.host)).rowcount
                log.warning("released %d message(s) leased by dead process %d", count, pid)
