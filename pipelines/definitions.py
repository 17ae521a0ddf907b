"""The one table from bus event to handler: which step runs when an event arrives.

Owns: Route (an event type and the step that handles it), the table of the hub's steps (routes), and
Dispatch, the Handler a worker of one queue runs (it picks the step by the event's type).  Which queue an
event travels on is hub.topology.EVENT_QUEUES; the worker consumes the queues this table names.
Does not: build the steps (the composition root does, meshub.compose) or talk to the bus.

To add a step: declare its event in hub/events/ (kind, version, data), give it a queue in
hub.topology.EVENT_QUEUES, add a Route here; whoever leads to it publishes the event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from hub.envelope import Envelope
from hub.errors import PermanentError
from hub.events import (
    DeliveryRequested,
    DocumentFiled,
    DocumentRejected,
    DocumentSubmitted,
    Event,
    MailQueued,
    NoticeDue,
    Submitted,
)
from hub.topology import queue_of

E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Route:
    """`handle` runs for each `event` (it returns: done; TransientError: retried; PermanentError: dead)."""

    event: type[Event]
    handle: Callable[[Any], None]

    @property
    def queue(self) -> str:
        return queue_of(self.event)


def on(event: type[E], handle: Callable[[E], None]) -> Route:
    """A route, typed: `handle` takes exactly the event it is routed."""
    return Route(event, cast(Callable[[Any], None], handle))


def by_envelope(step: Callable[[Envelope], None]) -> Callable[[Submitted], None]:
    """A step that reads the submission's envelope (the documents, mail and outbound pipelines)."""
    return lambda event: step(event.envelope)


@dataclass(frozen=True, slots=True)
class Steps:
    """The hub's steps, built by the composition root."""

    documents: Callable[[Envelope], None]
    mail: Callable[[Envelope], None]
    outbound: Callable[[Envelope], None]
    notices: Callable[[NoticeDue], None]
    filed: Callable[[DocumentFiled], None]
    rejected: Callable[[DocumentRejected], None]


def routes(steps: Steps) -> tuple[Route, ...]:
    """THE table: event -> handler (its queue: hub.topology.EVENT_QUEUES)."""
    return (
        on(DocumentSubmitted, by_envelope(steps.documents)),
        on(MailQueued, by_envelope(steps.mail)),
        on(DeliveryRequested, by_envelope(steps.outbound)),
        on(NoticeDue, steps.notices),
        on(DocumentFiled, steps.filed),
        on(DocumentRejected, steps.rejected),
    )


def queues(table: Iterable[Route]) -> tuple[str, ...]:
    """The queues the workers consume: those of the table's events, in the table's order."""
    return tuple(dict.fromkeys(route.queue for route in table))


class Dispatch:
    """hub.ports.Handler for the workers of one queue: each event to the step the table names for it."""

    def __init__(self, table: Iterable[Route], *, queue: str) -> None:
        self._steps = {route.event: route.handle for route in table if route.queue == queue}
        self.queue = queue

    def __call__(self, event: Event) -> None:
        step = self._steps.get(type(event))
        if step is None:  # an event on a queue whose workers have no step for it: never retried
            raise PermanentError(f"no step handles {event.kind} on the {self.queue} queue")
        step(event)
