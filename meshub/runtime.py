"""The threads a hub process runs, and its one loop of periodic work.

Owns: Runtime (the stop event, the daemon threads, the scheduler thread started with its first job, and
what to close at the end), spawning a thread at the background nice value, and lowering a thread's
priority.  Does not: know what the threads do (meshub.compose and meshub.compose_edges say).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from meshub.scheduler import Periodic, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Daemon threads of one process; `nice`: the priority of background (filing) threads."""

    nice: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    exit_stack: ExitStack = field(default_factory=ExitStack)
    scheduler: Scheduler = field(default_factory=Scheduler)
    _scheduling: bool = False

    def spawn(self, name: str, target: Callable[[threading.Event], Any], *, background: bool = False) -> None:
        """Run `target(stop)` in a daemon thread; `background` threads (filing work) run at the
        settings' nice value, so that answering SMTP sessions and HTTP requests comes first."""
        nice = self.nice if background else 0

        def run(stop: threading.Event) -> Any:
            if nice:
                lower_priority(nice)
            return target(stop)

        thread = threading.Thread(target=run, args=(self.stop,), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def schedule(self, job: Periodic) -> None:
        """Run `job.tick()` every `job.every_s` in the process's one periodic loop (started with its first job)."""
        self.scheduler.add(job)
        if not self._scheduling:
            self._scheduling = True
            self.spawn("ticks", self.scheduler.run, background=True)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def lower_priority(nice: int) -> None:
    """Lower the calling thread's scheduling priority (Linux schedules threads one by one); a no-op
    where the platform cannot."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as exc:
        log.debug("thread priority unchanged: %s", exc)
