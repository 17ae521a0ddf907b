"""An in-process bus: events handed to their handler at once, in the publisher's thread.

Owns: LocalBus, a Publisher (hub.ports) that runs the handler before publish() returns, so a step's
follow-ups are done before the step's own message is acked (what the step promised: a redelivery does
them again, and they are idempotent).  A follow-up that fails raises into the publishing step, whose
message is then retried by its worker.  The handler runs in the publisher's thread and context, so inside
the step's unit of work when it has one (meshub.compose_workers.InUnit: one commit for the step and its
follow-ups).
Does not: delay (a delayed event is a programming error here) or persist anything.
"""

from __future__ import annotations

from hub.events import Event
from hub.ports import Handler


class LocalBus:
    """Publisher for events whose handlers run in the publishing step (wired by the composition root)."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        if self.handler is None or delay_s > 0:
            raise RuntimeError(f"LocalBus cannot take {event.kind} (handler set: {self.handler is not None}, "
                               f"delay {delay_s}s)")
        self.handler(event)
