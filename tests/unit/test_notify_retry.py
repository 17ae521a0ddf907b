"""The notify channels' retry schedule (pure arithmetic): a channel down for an hour loses nothing."""

from __future__ import annotations

from pipelines.notify.service import CHANNEL_RETRY


def test_a_channel_down_for_hours_is_retried_long_enough() -> None:
    # the shortest the schedule can be (every jitter at its lowest) still spans more than a day
    shortest = [CHANNEL_RETRY.next_delay(n, rand=lambda low, high: low) for n in range(CHANNEL_RETRY.max_attempts)]
    assert all(d is not None for d in shortest)
    assert sum(d for d in shortest if d is not None) > 24 * 3600
    assert CHANNEL_RETRY.next_delay(CHANNEL_RETRY.max_attempts) is None  # then the notice fails and falls back


def test_retries_start_soon_and_never_wait_more_than_an_hour() -> None:
    longest = [CHANNEL_RETRY.next_delay(n, rand=lambda low, high: high) for n in range(CHANNEL_RETRY.max_attempts)]
    assert longest[0] == 30.0 and max(d for d in longest if d is not None) == 3600.0
