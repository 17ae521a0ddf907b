"""The worker: consume events, call a Handler, then ack, retry later or dead-letter.

Owns: the decision table below, acking only after the handler returned (the handler
makes its effect durable first), and reconnecting with backoff when the bus drops.
Does not: know any pipeline (the Handler is injected), name queues (hub.topology),
compute backoff (hub.retry) or talk to the broker directly (hub.bus.kombu_bus).

    handler outcome                      then                                  and
    returned                             -                                     ack
    TransientError / other Exception     publish next_attempt() after delay    ack
      ... with retries exhausted         publish to dead queue (with reason)   ack
    PermanentError                       publish to dead queue (with reason)   ack
    body is not an event                 publish to dead queue (with reason)   ack
    worker dies (crash, kill -9)         -                                     broker redelivers;
                                                                               dead after delivery_limit

If publishing the retry or the dead letter fails, the message is not acked: the
connection is dropped and the broker redelivers it.  Logs carry event kinds and ids,
durations and decisions, never payloads.
"""

# mypy: disable-error-code="no-untyped-call"
# (kombu ships py.typed but most of its functions are unannotated)

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer

from hub.bus.kombu_bus import KombuPublisher
from hub.errors import EnvelopeDecodeError, HubError, PermanentError, TransientError
from hub.events import Event
from hub.events import decode as decode_event
from hub.ports import Handler
from hub.retry import RetryPolicy
from hub.topology import Topology

log = logging.getLogger(__name__)

_POLL_S = 1.0
_MAX_BACKOFF_S = 30.0
_REASON_MAX = 160
_DEFAULT_RETRY = RetryPolicy()


def reason_for(exc: BaseException) -> str:
    """`ClassName: first line of the message` for the hub's own errors, whose texts we write and keep
    free of health data; only the class name for anything else (a driver's message may quote values)."""
    if not isinstance(exc, HubError):
        return type(exc).__name__
    first_line = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:_REASON_MAX]


def decode(message: Any) -> Event:
    """kombu message -> Event (hub.events); EnvelopeDecodeError for anything else."""
    if message.content_type != "application/json":
        raise EnvelopeDecodeError(f"unexpected content type {message.content_type!r}")
    try:
        data = json.loads(message.body)
    except (ValueError, TypeError) as exc:
        raise EnvelopeDecodeError(f"body is not JSON: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise EnvelopeDecodeError("body is not a JSON object")
    return decode_event(data)


class Worker:
    """Consumes `topology.main_queue` and runs `handler` on each event (pipelines.definitions.Dispatch)."""

    def __init__(self, connection_factory: Callable[[], Connection], topology: Topology,
                 handler: Handler, *, retry: RetryPolicy = _DEFAULT_RETRY, prefetch: int = 4) -> None:
        self._connection_factory = connection_factory
        self._topology = topology
        self._handler = handler
        self._retry = retry
        self._prefetch = prefetch
        self._processed = 0

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; reconnect with exponential backoff when the bus fails."""
        failures = 0
        while not stop.is_set():
            try:
                self._consume(stop=stop, idle_timeout_s=None)
                failures = 0
            except Exception as exc:  # the bus dropped: kombu, amqp, socket or sqlite errors
                delay = min(0.5 * 2 ** failures, _MAX_BACKOFF_S)
                failures += 1
                log.warning("bus failure (%s), reconnecting in %.1fs", reason_for(exc), delay)
                stop.wait(delay)

    def drain(self, timeout_s: float) -> int:
        """Process messages until none arrived for `timeout_s` seconds; return how many were processed."""
        return self._consume(stop=threading.Event(), idle_timeout_s=timeout_s)

    def _consume(self, *, stop: threading.Event, idle_timeout_s: float | None) -> int:
        start_count = self._processed
        publisher_connection = self._connection_factory()
        publisher = KombuPublisher(publisher_connection, self._topology, pool_size=1)
        try:
            with self._connection_factory() as connection:
                queue = Queue(self._topology.main_queue, no_declare=True)
                consumer = Consumer(connection.channel(), queues=[queue], prefetch_count=self._prefetch,
                                          on_message=lambda message: self._on_message(message, publisher))
                with consumer:
                    self._loop(connection, stop=stop, idle_timeout_s=idle_timeout_s)
        finally:
            publisher.close()
            publisher_connection.release()
        return self._processed - start_count

    def _loop(self, connection: Connection, *, stop: threading.Event,
              idle_timeout_s: float | None) -> None:
        last_message = time.monotonic()
        seen = self._processed
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=min(_POLL_S, idle_timeout_s or _POLL_S))
            if self._processed != seen:
                seen, last_message = self._processed, time.monotonic()
            elif idle_timeout_s is not None and time.monotonic() - last_message >= idle_timeout_s:
                return

    def _on_message(self, message: Any, publisher: KombuPublisher) -> None:
        started = time.monotonic()
        try:
            event = decode(message)
        except EnvelopeDecodeError as exc:
            publisher.dead_letter(message.body, reason=reason_for(exc), content_type=message.content_type,
                                  content_encoding=message.content_encoding)
            message.ack()
            log.warning("undecodable message dead-lettered: %s", reason_for(exc))
            self._processed += 1
            return
        decision = self._handle(event, message, publisher)
        message.ack()
        self._processed += 1
        log.info("%s %s attempt %d: %s in %.3fs", event.kind, event.event_id, event.attempt, decision,
                 time.monotonic() - started)

    def _handle(self, event: Event, message: Any, publisher: KombuPublisher) -> str:
        """Run the handler and publish what must follow; return the decision, for the log."""
        try:
            self._handler(event)
        except PermanentError as exc:
            return self._dead_letter(message, publisher, reason_for(exc))
        except Exception as exc:  # TransientError, or unexpected: retry later
            if not isinstance(exc, TransientError):
                log.warning("%s %s: unexpected %s, treated as transient", event.kind, event.event_id,
                            type(exc).__name__)
                log.debug("traceback of the unexpected error", exc_info=True)
            delay = self._retry.next_delay(event.attempt)
            if delay is None:
                return self._dead_letter(message, publisher, "retries exhausted: " + reason_for(exc))
            publisher.publish(event.next_attempt(), delay_s=delay)
            return f"retry in {delay:.1f}s ({type(exc).__name__})"
        return "done"

    def _dead_letter(self, message: Any, publisher: KombuPublisher, reason: str) -> str:
        publisher.dead_letter(message.body, reason=reason, content_type=message.content_type,
                              content_encoding=message.content_encoding)
        return f"dead-lettered ({reason})"
