"""Names of the bus: exchange, queues, dead-letter and delay tiers (pure).

Owns: which queue each bus event travels on (EVENT_QUEUES), how queue names are derived from a prefix
and a queue name, the broker-level redelivery limit, and which delay tier a retry delay falls into.
Every queue has the same tiers: `<prefix>.<queue>` (main), `.wait.<N>s` (delayed retries), `.dead`.
Does not: talk to a broker (hub.bus.kombu_bus declares these names) or decide how
long to wait before a retry (hub.retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.events import (
    DeliveryRequested,
    DocumentFiled,
    DocumentRejected,
    DocumentSubmitted,
    Event,
    MailQueued,
    NoticeDue,
)

INTAKE, OUTBOUND, NOTIFY, OUTCOMES = "intake", "outbound", "notify", "outcomes"
#: every event's queue (a worker of a queue handles every event routed to it); names kept from the
#: release where one envelope type travelled on intake, outbound and notify
EVENT_QUEUES: Mapping[type[Event], str] = {
    DocumentSubmitted: INTAKE,
    MailQueued: INTAKE,
    DeliveryRequested: OUTBOUND,
    NoticeDue: NOTIFY,
    DocumentFiled: OUTCOMES,
    DocumentRejected: OUTCOMES,
}


def queue_of(event: type[Event]) -> str:
    """The queue `event` travels on (KeyError: an event declared without a queue is a programming error)."""
    return EVENT_QUEUES[event]


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


def topologies(prefix: str, queues: tuple[str, ...] | None = None) -> dict[str, Topology]:
    """Queue name -> its Topology under `prefix`, for every queue of EVENT_QUEUES (or those given)."""
    names = queues if queues is not None else tuple(dict.fromkeys(EVENT_QUEUES.values()))
    return {name: Topology(prefix=prefix, queue=name) for name in names}
