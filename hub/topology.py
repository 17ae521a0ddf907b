"""Names of the bus: exchange, queues, dead-letter and delay tiers (pure).

Owns: how queue names are derived from a prefix and a queue name, the broker-level
redelivery limit, and which delay tier a retry delay falls into.
Does not: talk to a broker (hub.bus.kombu_bus declares these names) or decide how
long to wait before a retry (hub.retry).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """The queues of one intake; `prefix` lets tests and tenants isolate themselves.

    `delivery_limit` is the number of broker *redeliveries* (after a crash or a lost
    connection) before a message is dead-lettered, as RabbitMQ's `x-delivery-limit`.
    `delay_tiers_s` are the wait queues used for delayed retries, in ascending order.
    """

    prefix: str = "meshub"
    queue: str = "intake"
    delivery_limit: int = 5
    delay_tiers_s: tuple[int, ...] = (1, 5, 30, 120, 600, 3600)

    def __post_init__(self) -> None:
        if not self.delay_tiers_s or list(self.delay_tiers_s) != sorted(set(self.delay_tiers_s)):
            raise ValueError("delay_tiers_s must be non-empty, strictly ascending")
        if self.delay_tiers_s[0] <= 0 or self.delivery_limit < 0:
            raise ValueError("delay tiers must be positive and delivery_limit >= 0")

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def main_queue(self) -> str:
        return f"{self.prefix}.{self.queue}"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.{self.queue}.dead"

    def wait_queue(self, tier_s: int) -> str:
        """Name of the wait queue holding messages for `tier_s` seconds."""
        if tier_s not in self.delay_tiers_s:
            raise ValueError(f"{tier_s}s is not a delay tier of {self.main_queue}")
        return f"{self.prefix}.{self.queue}.wait.{tier_s}s"

    @property
    def wait_queues(self) -> dict[int, str]:
        """Delay tier (seconds) -> wait queue name."""
        return {tier: self.wait_queue(tier) for tier in self.delay_tiers_s}

    @property
    def all_queues(self) -> tuple[str, ...]:
        return (self.main_queue, self.dead_queue, *self.wait_queues.values())

    def tier_for(self, delay_s: float) -> int:
        """Smallest tier >= `delay_s`, capped at the largest tier."""
        return next((tier for tier in self.delay_tiers_s if tier >= delay_s), self.delay_tiers_s[-1])
