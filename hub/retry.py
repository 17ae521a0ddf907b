"""Retry arithmetic for deliberate retries of a stage (pure).

Owns: how long to wait before attempt N, and when to give up.  The worker is the
only caller; broker-level redelivery limits are set in hub.topology.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits in [ceiling/2, ceiling], ceiling = base * 2**n."""

    max_attempts: int = 8
    base_delay_s: float = 2.0
    max_delay_s: float = 600.0

    def next_delay(self, attempt: int, *,
                   rand: Callable[[float, float], float] = random.uniform) -> float | None:
        """Seconds before retry number `attempt` (0-based), or None once attempts are exhausted."""
        if attempt >= self.max_attempts:
            return None
        ceiling = min(self.base_delay_s * 2 ** attempt, self.max_delay_s)
        return rand(ceiling / 2, ceiling)
