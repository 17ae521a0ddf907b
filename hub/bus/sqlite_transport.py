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
Rule 5: an ack deletes its row in the channel's next write (the next lease, or a flush when nothing
is ready and when the channel closes), so a steady consumer commits once per message, not twice.

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

import contextlib
import logging
import os
import sqlite3
import time
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from hub.bus.sqlite_file import RELEASE, BusFile, local_file

log = logging.getLogger(__name__)

DELAY_HEADER = "x-meshub-delay-ms"
DELIVERY_COUNT_HEADER = "x-delivery-count"

class NoRoute(ChannelError):  # type: ignore[misc]
    """No binding routes this exchange and routing key to a queue (RabbitMQ: 312 NO_ROUTE)."""


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
        self._bus = BusFile(connection.path, busy_timeout_s=connection.busy_timeout,
                            visibility_timeout_s=connection.visibility_timeout)
        self._file = self._bus.local
        self._closed = False
        self._leases: dict[str, int] = {}
        self._acked: list[tuple[int, str]] = []  # acked rows not yet deleted (Rule 5)

    # -- what kombu calls ------------------------------------------------------------------

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        delay_ms = float((message.get("headers") or {}).get(DELAY_HEADER) or 0)
        ready_at = time.time() + max(delay_ms, 0.0) / 1000.0
        with self._bus.write(durable=True) as db:  # Rule: a publish that returned is on disk
            db.execute("INSERT INTO messages (queue, payload, ready_at, visible_at) VALUES (?, ?, ?, ?)",
                       (queue, dumps(message), ready_at, ready_at))
        self._file.ring()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        now = time.time()
        self._bus.reap_dead_owners(now)
        with self._bus.lock:
            ready = self._bus.db.execute("SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1",
                                     (queue, now)).fetchone()
        if ready is None:
            self._flush_acks()
            raise Empty()
        with self._bus.write() as db:
            self._delete_acked(db)
            leased = self._bus.lease_one(db, queue, now)
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
        """Ack: the message is done, remove it (unless its lease expired and was taken by another).
        Rule 5: the row is deleted in this channel's next write (the next lease, or the flush when
        nothing is ready or the channel closes): one transaction per message instead of two.  Until
        then the row stays leased by this live process; if the process dies first, it is delivered
        again (at-least-once, as a power failure after an unsynced ack always allowed)."""
        row_id = self._leases.pop(delivery_tag, None)
        if row_id is not None:
            with self._bus.lock:
                self._acked.append((row_id, delivery_tag))

    def _delete_acked(self, db: sqlite3.Connection) -> None:
        if self._acked:
            db.executemany("DELETE FROM messages WHERE id = ? AND lease = ?", self._acked)
            self._acked.clear()

    def _flush_acks(self) -> None:
        if self._acked and not self._closed:
            with self._bus.write() as db:
                self._delete_acked(db)

    def release(self, delivery_tag: str) -> None:
        """Requeue: end the lease, the message is visible again at its original place."""
        row_id = self._leases.pop(delivery_tag, None)
        if row_id is not None and not self._closed:
            with self._bus.write() as db:
                db.execute(f"UPDATE messages SET {RELEASE} WHERE id = ? AND lease = ?",
                           (row_id, delivery_tag))
            self._file.ring()

    def dead_letter_leased(self, delivery_tag: str, *, reason: str) -> None:
        row_id = self._leases.pop(delivery_tag, None)
        if row_id is None:
            return
        with self._bus.write() as db:
            row = db.execute("SELECT payload, queue FROM messages WHERE id = ? AND lease = ?",
                             (row_id, delivery_tag)).fetchone()
            if row is not None:
                self._bus.move_to_dead(db, row_id=row_id, payload=row[0], queue=row[1], reason=reason)

    def _restore(self, message: Any) -> None:
        self.release(message.delivery_tag)

    def _restore_at_beginning(self, message: Any) -> None:
        self.release(message.delivery_tag)

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        if not exchange:
            return [routing_key]
        with self._bus.lock:
            queues = [q for (q,) in self._bus.db.execute(
                "SELECT queue FROM bindings WHERE exchange = ? AND routing_key = ?", (exchange, routing_key))]
        if not queues:
            raise NoRoute(f"NO_ROUTE: exchange {exchange!r} routing key {routing_key!r}")
        return queues

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        arguments = kwargs.get("arguments") or {}
        verb = "INSERT OR REPLACE" if arguments else "INSERT OR IGNORE"
        with self._bus.write() as db:
            db.execute(f"{verb} INTO queues (name, delivery_limit, dead_letter) VALUES (?, ?, ?)",
                       (queue, arguments.get("x-delivery-limit"), arguments.get("x-dead-letter-routing-key")))

    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "",
                   arguments: Any = None, **kwargs: Any) -> None:
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)
        with self._bus.write() as db:
            db.execute("INSERT OR IGNORE INTO bindings (exchange, routing_key, queue) VALUES (?, ?, ?)",
                       (exchange or "amq.direct", routing_key, queue))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        with self._bus.lock:
            return self._bus.db.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone() is not None

    def _size(self, queue: str) -> int:
        with self._bus.lock:
            row = self._bus.db.execute("SELECT count(*) FROM messages WHERE queue = ? AND lease IS NULL",
                                   (queue,)).fetchone()
        return int(row[0])

    def _purge(self, queue: str) -> int:
        with self._bus.write() as db:
            cursor = db.execute("DELETE FROM messages WHERE queue = ? AND lease IS NULL", (queue,))
            return int(cursor.rowcount)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self._bus.write() as db:
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
            with contextlib.suppress(sqlite3.Error):  # not flushed: delivered again (Rule 5)
                self._flush_acks()
            super().close()
        finally:
            with self._bus.lock:
                self._closed = True
                self._bus.db.close()


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
        self.local_file = local_file(self.path)

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
