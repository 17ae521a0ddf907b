"""Retry schedule and next-hop table of the outbound relay: table-driven, injected clock and random source."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.errors import ConfigError
from hub.mailqueue import SmtpRecipient
from pipelines.mail.core.relay_schedule import (
    DAY_S,
    Expire,
    NextHop,
    RelaySchedule,
    Retry,
    Step,
    WarnThenRetry,
    group_by_hop,
    next_hop_for,
    next_hops_from_mapping,
    next_hops_from_rows,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
H = 3600


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


# -- schedule ----------------------------------------------------------------------------------------------

# (attempt, age of the mail in seconds, rng value, warned) -> expected step, with the default schedule
SCHEDULE_CASES: list[tuple[int, float, float, bool, Step]] = [
    (1, 0, 0.0, False, Retry(300)),               # floor: never sooner than initial_s
    (1, 0, 0.5, False, Retry(450)),               # attempt 1: uniform in [300, 600]
    (1, 0, 0.999, False, Retry(300 + 0.999 * 300)),
    (2, 900, 1.0, False, Retry(1200)),            # attempt 2: ceiling 300 * 2**2
    (3, 2 * H, 1.0, False, Retry(2400)),
    (4, 3 * H, 1.0, False, Retry(3600)),          # capped at max_delay_s
    (40, 3 * H, 1.0, False, Retry(3600)),
    (5000, 3 * H, 0.5, False, Retry(1950)),       # huge attempt numbers do not overflow
    (6, 4 * H - 1, 0.0, False, Retry(300)),       # just before the warning threshold
    (6, 4 * H, 0.0, False, WarnThenRetry(300)),   # warning due at 4 h ...
    (9, 10 * H, 0.0, False, WarnThenRetry(300)),  # ... or later, if not sent yet
    (9, 10 * H, 0.0, True, Retry(300)),           # sent once only
    (90, 5 * DAY_S - 100, 1.0, True, Retry(100)),  # last wait stops at the end of the lifetime
    (91, 5 * DAY_S, 0.0, True, Expire(5 * DAY_S)),
    (91, 6 * DAY_S, 0.0, False, Expire(6 * DAY_S)),  # expiry wins over a pending warning
]


@pytest.mark.parametrize(("attempt", "age_s", "rand", "warned", "expected"), SCHEDULE_CASES)
def test_next_step(attempt: int, age_s: float, rand: float, warned: bool, expected: Step) -> None:
    now = T0 + timedelta(seconds=age_s)
    step = RelaySchedule().next_step(T0, attempt, now, rng=fixed(rand), warned=warned)
    assert step == expected


def test_delays_spread_between_floor_and_ceiling() -> None:
    # Given many mails deferred together, with a seeded random source
    import random
    rng = random.Random(7).random
    schedule = RelaySchedule()
    # When each computes its third retry
    delays = [step.delay_s for step in (schedule.next_step(T0, 3, T0, rng=rng) for _ in range(500))
              if isinstance(step, Retry)]
    # Then they spread over [300, 2400], not all at the same instant
    assert len(delays) == 500 and min(delays) >= 300 and max(delays) <= 2400
    assert max(delays) - min(delays) > 1500


def test_warning_off_when_delay_warning_is_zero() -> None:
    schedule = RelaySchedule(delay_warning_s=0)
    assert schedule.next_step(T0, 3, T0 + timedelta(days=2), rng=fixed(0.0)) == Retry(300)


def test_custom_schedule() -> None:
    schedule = RelaySchedule(initial_s=60, factor=3.0, max_delay_s=600, lifetime_s=H, delay_warning_s=0)
    assert [schedule.ceiling(n) for n in (1, 2, 3)] == [180, 540, 600]
    assert schedule.next_step(T0, 1, T0 + timedelta(seconds=H), rng=fixed(0.5)) == Expire(H)


@pytest.mark.parametrize("kwargs", [{"initial_s": 0}, {"initial_s": 4000}, {"factor": 0.5},
                                    {"lifetime_s": 0}, {"delay_warning_s": -1}])
def test_bad_schedule_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RelaySchedule(**kwargs)


# -- next-hop table ----------------------------------------------------------------------------------------

MSS = NextHop("relay.mssante.example", 25)
SUB = NextHop("sub.example.org", 587, starttls="opportunistic")
DEEP = NextHop("deep.example.org", 25)
EXACT = NextHop("exact.example.org", 2525, starttls="off", verify_tls=False)
DEFAULT = NextHop("smarthost.example", 25)
TABLE = {"patient.mssante.fr": MSS, "*.example.org": SUB, "*.deep.example.org": DEEP,
         "example.org": EXACT, "*": DEFAULT}

HOP_CASES: list[tuple[str, dict[str, NextHop], NextHop | None]] = [
    ("patient.mssante.fr", TABLE, MSS),                # exact
    ("Patient.MSSante.FR.", TABLE, MSS),               # case and trailing dot do not matter
    ("example.org", TABLE, EXACT),                     # a wildcard does not take its own parent
    ("a.example.org", TABLE, SUB),                     # wildcard
    ("x.y.example.org", TABLE, SUB),                   # any depth
    ("deep.example.org", TABLE, SUB),                  # *.deep... is for its subdomains only
    ("a.deep.example.org", TABLE, DEEP),               # the most specific wildcard wins
    ("elsewhere.fr", TABLE, DEFAULT),                  # the default entry
    ("", TABLE, None),                                 # no domain: no hop
    ("elsewhere.fr", {"patient.mssante.fr": MSS}, None),  # no default: unroutable
]


@pytest.mark.parametrize(("domain", "table", "expected"), HOP_CASES)
def test_next_hop_for(domain: str, table: dict[str, NextHop], expected: NextHop | None) -> None:
    assert next_hop_for(domain, table) == expected


def test_group_by_hop_keeps_order_and_shares_equal_hops() -> None:
    # Given two domains served by the same relay, one by another, and one unroutable
    same = NextHop("relay.example", 25)
    table = {"a.example": same, "b.example": NextHop("relay.example", 25), "c.example": NextHop("other", 25)}
    rcpts = [SmtpRecipient(f"{n}@{d}") for n, d in [("1", "a.example"), ("2", "c.example"), ("3", "b.example"),
                                                  ("4", "nowhere.example"), ("5", "a.example")]]
    # When they are grouped
    groups = group_by_hop(rcpts, table)
    # Then equal hops share one session, in first-seen order, and the rest is set aside
    assert [(hop.host, [r.address for r in group]) for hop, group in groups.routed.items()] == [
        ("relay.example", ["1@a.example", "3@b.example", "5@a.example"]), ("other", ["2@c.example"])]
    assert groups.unroutable == (rcpts[3],)


def test_password_is_not_in_repr() -> None:
    hop = NextHop("relay.example", 587, username="hub", password="s3cret")
    assert "s3cret" not in repr(hop) and "s3cret" not in str(hop)


# -- loading from configuration ----------------------------------------------------------------------------


def test_mapping_loader() -> None:
    table = next_hops_from_mapping({
        "Patient.MSSante.fr": {"host": "relay.mssante.example"},
        "*.example.org": {"host": "sub.example.org", "port": 587, "starttls": "opportunistic",
                          "username": "hub", "password": "pw"},
        "*": {"host": "smarthost", "starttls": "off", "verify_tls": False},
    })
    assert table == {
        "patient.mssante.fr": NextHop("relay.mssante.example"),
        "*.example.org": NextHop("sub.example.org", 587, "opportunistic", True, "hub", "pw"),
        "*": NextHop("smarthost", 25, "off", False),
    }


def test_rows_loader() -> None:
    rows: list[dict[str, Any]] = [
        {"domains": ["patient.mssante.fr", "*.mssante.fr"], "host": "relay.mssante.example"},
        {"domains": ["*"], "host": "smarthost", "port": 2525},
    ]
    table = next_hops_from_rows(rows)
    assert table == {"patient.mssante.fr": NextHop("relay.mssante.example"),
                     "*.mssante.fr": NextHop("relay.mssante.example"), "*": NextHop("smarthost", 2525)}


# mapping -> the key the error must name
BAD_MAPPINGS: list[tuple[dict[str, Any], str]] = [
    ({"a.example": {"port": 25}}, "relay.next_hops.'a.example'.host"),
    ({"a.example": {"host": ""}}, "relay.next_hops.'a.example'.host"),
    ({"a.example": {"host": "h", "port": "25"}}, "relay.next_hops.'a.example'.port"),
    ({"a.example": {"host": "h", "port": True}}, "relay.next_hops.'a.example'.port"),
    ({"a.example": {"host": "h", "port": 70000}}, "relay.next_hops.'a.example'.port"),
    ({"a.example": {"host": "h", "starttls": "maybe"}}, "relay.next_hops.'a.example'.starttls"),
    ({"a.example": {"host": "h", "verify_tls": "yes"}}, "relay.next_hops.'a.example'.verify_tls"),
    ({"a.example": {"host": "h", "verify_tsl": False}}, "relay.next_hops.'a.example'.verify_tsl"),
    ({"a.example": {"host": "h", "username": "u"}}, "relay.next_hops.'a.example'.username"),
    ({"a.example": "h"}, "relay.next_hops.'a.example'"),
    ({"a.*.example": {"host": "h"}}, "relay.next_hops.'a.*.example'"),
    ({"*example.org": {"host": "h"}}, "relay.next_hops.'*example.org'"),
    ({"A.example": {"host": "h"}, "a.example": {"host": "h"}}, "relay.next_hops.'a.example'"),
]


@pytest.mark.parametrize(("mapping", "key"), BAD_MAPPINGS)
def test_bad_mapping_names_the_key(mapping: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("*", r"\*")):
        next_hops_from_mapping(mapping)


BAD_ROWS: list[tuple[list[Any], str]] = [
    ([{"host": "h"}], r"relay\.hops\[0\]\.domains"),
    ([{"domains": [], "host": "h"}], r"relay\.hops\[0\]\.domains"),
    ([{"domains": "a.example", "host": "h"}], r"relay\.hops\[0\]\.domains"),
    ([{"domains": ["a.example"], "host": "h"}, {"domains": ["a.example"], "host": "i"}], r"relay\.hops\[1\]\.domains"),
    ([{"domains": ["a.example"], "host": "h"}, {"domains": ["*"], "host": "i", "port": 0}], r"relay\.hops\[1\]\.port"),
    ([{"domains": ["x y"], "host": "h"}], r"relay\.hops\[0\]\.domains"),
    (["a.example"], r"relay\.hops\[0\]"),
]


@pytest.mark.parametrize(("rows", "key"), BAD_ROWS)
def test_bad_rows_name_the_key(rows: list[Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        next_hops_from_rows(rows)
