"""hub.ports.Publisher in memory: the events published, in order.

Owns: MemoryPublisher.  Like the kombu publisher it returns only once the event is kept, and raises
BusUnavailable (nothing kept) while `down`.  Does not: consume or run handlers (tests drive those).
"""

from __future__ import annotations

from hub.errors import BusUnavailable
from hub.events import Event
from storage.memory.base import MemoryState


class MemoryPublisher:
    """A Publisher keeping what it was given in `published` (and each delay in `delays`)."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.delays: list[float] = []
        self.state = MemoryState(BusUnavailable, "bus")

    @property
    def down(self) -> bool:
        return self.state.down

    @down.setter
    def down(self, value: bool) -> None:
        self.state.down = value

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        """Keep `event` (BusUnavailable while switched down)."""
        with self.state.lock:
            self.state.check()
            self.published.append(event)
            self.delays.append(delay_s)
