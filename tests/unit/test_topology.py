"""Topology names and tiers, and RetryPolicy arithmetic (pure)."""

from __future__ import annotations

import pytest

from hub.retry import RetryPolicy
from hub.topology import Topology


def test_names_derive_from_prefix_and_queue() -> None:
    topology = Topology(prefix="p", queue="intake", delay_tiers_s=(1, 30))
    assert topology.exchange == "p"
    assert topology.main_queue == "p.intake"
    assert topology.dead_queue == "p.intake.dead"
    assert topology.wait_queues == {1: "p.intake.wait.1s", 30: "p.intake.wait.30s"}
    assert topology.all_queues == ("p.intake", "p.intake.dead", "p.intake.wait.1s", "p.intake.wait.30s")


@pytest.mark.parametrize(("delay_s", "tier"), [
    (0.0, 1), (0.2, 1), (1.0, 1), (1.01, 5), (5.0, 5), (29.9, 30), (121, 600), (3600, 3600), (10**6, 3600),
])
def test_tier_is_the_smallest_tier_not_shorter_than_the_delay(delay_s: float, tier: int) -> None:
    assert Topology().tier_for(delay_s) == tier


def test_unknown_tier_and_bad_tiers_are_refused() -> None:
    with pytest.raises(ValueError, match="not a delay tier"):
        Topology().wait_queue(7)
    for tiers in [(), (5, 1), (1, 1), (0, 5)]:
        with pytest.raises(ValueError):
            Topology(delay_tiers_s=tiers)


def test_retry_delay_doubles_within_jitter_bounds_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_s=2.0, max_delay_s=600.0)
    bounds = [policy.next_delay(n, rand=lambda low, high: (low, high)) for n in range(3)]  # type: ignore[arg-type, return-value]
    assert bounds == [(1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]
    assert policy.next_delay(20, rand=lambda low, high: high) is None
    assert RetryPolicy(max_attempts=30).next_delay(20, rand=lambda low, high: high) == 600.0


def test_retries_stop_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.next_delay(n, rand=lambda low, high: high) is None for n in range(5)] == [
        False, False, False, True, True]
