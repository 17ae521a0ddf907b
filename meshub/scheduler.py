"""The one loop of periodic work in a process: each service's tick(), at its own period.

Owns: Periodic (a name, a period, a tick) and Scheduler, one thread that runs each tick when it is due;
a tick that fails with a HubError (a store down) is logged and tried again at its next period.
Does not: know what the ticks do (the services own their tick(): recovery sweep, record timers,
letters).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.errors import HubError

log = logging.getLogger(__name__)
_IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Periodic:
    """`tick` every `every_s` seconds (the first run one period after the start)."""

    name: str
    every_s: float
    tick: Callable[[], object]


class Scheduler:
    """Runs every scheduled Periodic in one loop (Scheduler.run(stop), in a thread of its own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._due: list[tuple[float, Periodic]] = []

    def add(self, job: Periodic) -> None:
        with self._lock:
            self._due.append((self._clock() + job.every_s, job))

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._wait_s()):
            self.run_due()

    def run_due(self) -> int:
        """Run every job whose time has come; return how many ran."""
        now = self._clock()
        with self._lock:
            due = [job for at, job in self._due if at <= now]
            self._due = [(now + job.every_s, job) if at <= now else (at, job) for at, job in self._due]
        for job in due:
            try:
                log.info("%s: %s", job.name, job.tick())
            except HubError as exc:
                log.warning("%s skipped: %s", job.name, type(exc).__name__)
        return len(due)

    def _wait_s(self) -> float:
        with self._lock:
            soonest = min((at for at, _ in self._due), default=self._clock() + _IDLE_S)
        return max(0.0, min(_IDLE_S, soonest - self._clock()))
