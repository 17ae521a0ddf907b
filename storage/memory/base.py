"""What every in-memory adapter shares: one re-entrant lock, an outage switch and UTC time.

Owns: `MemoryState` (the lock that makes each call atomic, as a SQL transaction is, and `down`, which
makes every call raise the adapter's transient error, as an unreachable database or store does).
Does not: hold any port's data (each module keeps its own).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from hub.errors import TransientError


def now() -> datetime:
    """The current time in UTC (what the SQL stores write as updated_at)."""
    return datetime.now(UTC)


class MemoryState:
    """A lock and an outage switch: `down = True` makes `check()` raise `error` (a TransientError)."""

    def __init__(self, error: type[TransientError], what: str) -> None:
        self.lock = threading.RLock()
        self.down = False
        self._error = error
        self._what = what

    def check(self) -> None:
        """Raise the transient error while the adapter is switched down."""
        if self.down:
            raise self._error(f"{self._what} unavailable: switched down (in memory)")
