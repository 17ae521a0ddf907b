"""Declaring the topology and publishing events with kombu, on RabbitMQ or on the SQLite bus.

Owns: queue arguments (quorum queue, delivery limit, dead-letter and wait queues), KombuPublisher (one
queue) and RoutedPublisher (each event to its queue): persistent, confirmed, mandatory publishes with a
short connection retry budget, and the mapping of kombu/amqp/sqlite errors to BusUnavailable.
Does not: consume or decide retries (hub.bus.worker), or name queues (hub.topology).

Delayed delivery: on RabbitMQ a delayed message goes to the wait queue of its tier
(`Topology.tier_for`), whose x-message-ttl dead-letters it back to the main queue; on
the SQLite bus it goes straight to the main queue with the `x-meshub-delay-ms` header.
"""

# mypy: disable-error-code="no-untyped-call"
# (kombu ships py.typed but most of its functions are unannotated)

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import KombuError
from kombu.messaging import Producer

from hub.bus.sqlite_transport import DELAY_HEADER
from hub.errors import BusUnavailable
from hub.events import Event
from hub.topology import Topology, queue_of

log = logging.getLogger(__name__)

REASON_HEADER = "x-meshub-reason"

#: kombu connection-level retry: at most 3 attempts within ~1.5 s of sleeping, so that
#: the HTTP API answers 503 fast when the broker is down.
DEFAULT_RETRY_POLICY: Mapping[str, float] = {
    "max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0,
}
CONFIRM_TIMEOUT_S = 5.0  # a timed-out confirm drops the connection; the retry may duplicate


def is_amqp(connection: Connection) -> bool:
    return bool(connection.transport.driver_type == "amqp")


def _quorum(arguments: Mapping[str, Any]) -> dict[str, Any]:
    # at-least-once dead-lettering (RabbitMQ >= 3.10) needs overflow=reject-publish
    return {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish", **arguments}


def queues(topology: Topology, *, amqp: bool) -> list[Queue]:
    """Every queue of `topology`, bound to its exchange by its own name."""
    exchange = Exchange(topology.exchange, type="direct", durable=True)
    main_args = {"x-delivery-limit": topology.delivery_limit,
                 "x-dead-letter-exchange": topology.exchange,
                 "x-dead-letter-routing-key": topology.dead_queue}
    declared = [
        Queue(topology.main_queue, exchange, routing_key=topology.main_queue, durable=True,
                    queue_arguments=_quorum(main_args) if amqp else main_args),
        Queue(topology.dead_queue, exchange, routing_key=topology.dead_queue, durable=True,
                    queue_arguments={"x-queue-type": "quorum"} if amqp else {}),
    ]
    if amqp:  # the SQLite bus delays with a header: it needs no wait queues
        declared += [
            Queue(name, exchange, routing_key=name, durable=True, queue_arguments=_quorum({
                "x-message-ttl": tier * 1000, "x-dead-letter-exchange": topology.exchange,
                "x-dead-letter-routing-key": topology.main_queue}))
            for tier, name in topology.wait_queues.items()]
    return declared


def declare(connection: Connection, topology: Topology) -> None:
    """Declare the exchange, the queues and their bindings (idempotent); BusUnavailable if unreachable."""
    with map_bus_errors(connection, "declare"):
        channel = connection.default_channel
        for queue in queues(topology, amqp=is_amqp(connection)):
            queue(channel).declare()


@contextmanager
def map_bus_errors(connection: Connection, what: str) -> Iterator[None]:
    """Translate broker, socket and SQLite errors into BusUnavailable (the boundary of hub.errors)."""
    try:
        yield
    except BusUnavailable:
        raise
    except (KombuError, OSError, *connection.connection_errors,
            *connection.channel_errors) as exc:
        raise BusUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def route(topology: Topology, *, delay_s: float, amqp: bool) -> tuple[str, dict[str, Any]]:
    """Routing key and headers for a publish to the main queue after `delay_s` seconds."""
    if delay_s <= 0:
        return topology.main_queue, {}
    if amqp:
        return topology.wait_queue(topology.tier_for(delay_s)), {}
    return topology.main_queue, {DELAY_HEADER: int(delay_s * 1000)}


class KombuPublisher:
    """Publisher (hub.ports) over a pool of kombu connections; safe to call from many threads.

    Publishes are persistent and mandatory, and on amqp confirmed (the connection
    must have `confirm_publish`, as hub.bus.open_connection sets).  publish() returns
    once the broker (or the SQLite file) has the message, else raises BusUnavailable
    after a short retry budget.  Pooled connections reconnect after a broker restart.
    """

    def __init__(self, connection: Connection, topology: Topology, *, pool_size: int = 8,
                 retry_policy: Mapping[str, float] = DEFAULT_RETRY_POLICY,
                 acquire_timeout_s: float = 5.0) -> None:
        self._topology = topology
        self._pool = connection.Pool(limit=pool_size)
        self._amqp = is_amqp(connection)
        self._retry_policy = dict(retry_policy)
        self._acquire_timeout_s = acquire_timeout_s

    @property
    def topology(self) -> Topology:
        return self._topology

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        """Publish `event` on this publisher's queue (a worker's retries go back where they came from)."""
        routing_key, headers = route(self._topology, delay_s=delay_s, amqp=self._amqp)
        body = json.dumps(event.to_dict(), separators=(",", ":")).encode()
        self._send(body, routing_key=routing_key, headers=headers)
        log.debug("published %s %s to %s (attempt %d)", event.kind, event.event_id, routing_key, event.attempt)

    def dead_letter(self, body: bytes, *, reason: str, content_type: str | None = "application/json",
                    content_encoding: str | None = "utf-8") -> None:
        """Put a message body, as received, on the dead-letter queue with `reason` in a header."""
        self._send(body, routing_key=self._topology.dead_queue, headers={REASON_HEADER: reason},
                   content_type=content_type, content_encoding=content_encoding)

    def close(self) -> None:
        self._pool.force_close_all()

    def _send(self, body: bytes, *, routing_key: str, headers: dict[str, Any],
              content_type: str | None = "application/json", content_encoding: str | None = "utf-8") -> None:
        try:
            connection = self._pool.acquire(block=True, timeout=self._acquire_timeout_s)
        except Exception as exc:  # kombu raises its own LimitExceeded / queue.Empty here
            raise BusUnavailable(f"no bus connection available: {type(exc).__name__}") from exc
        try:
            with map_bus_errors(connection, f"publish to {routing_key}"):
                producer = Producer(connection, auto_declare=False)
                producer.publish(body, exchange=self._topology.exchange, routing_key=routing_key,
                                 headers=headers, content_type=content_type,
                                 content_encoding=content_encoding, delivery_mode=2, mandatory=True,
                                 retry=True, retry_policy=self._retry_policy,
                                 confirm_timeout=CONFIRM_TIMEOUT_S)
        except BusUnavailable:
            connection.collect()  # a half-broken connection must not go back to the pool as is
            raise
        finally:
            connection.release()


class RoutedPublisher:
    """Publisher (hub.ports) that puts each event on its own queue (hub.topology.EVENT_QUEUES)."""

    def __init__(self, publishers: Mapping[str, KombuPublisher]) -> None:
        self._by_queue = dict(publishers)

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        self._by_queue[queue_of(type(event))].publish(event, delay_s=delay_s)

    def close(self) -> None:
        for publisher in self._by_queue.values():
            publisher.close()
