"""Outbound relay decisions: when to try a deferred mail again, and which server to hand it to (pure).

Owns:
* RelaySchedule.next_step(): after a failed attempt (4xx or no answer), Retry, WarnThenRetry (send the
  "delayed" DSN once, RFC 3464 action=delayed) or Expire (bounce).  Arithmetic only: the caller passes
  the clock and the random source, so the schedule is tested without sleeping.
* NextHop and the next-hop table: per recipient domain, which server, port, TLS policy and credentials;
  exact domains first, then `*.parent` wildcards from the most specific, then the default `*`.
* Loading that table from configuration (ConfigError naming the bad key) and grouping recipients by hop,
  so one SMTP session carries every recipient that goes to the same server.

Does not: talk SMTP (connectors.outbound.relay), build DSNs (pipelines.mail.core.reports), or decide what a
5xx means (hub.delivery): a permanent failure never reaches the schedule.

Defaults are those an MTA operator expects from Postfix: first retry after 300 s (minimal_backoff_time),
at most about an hour between tries (maximal_backoff_time is 4000 s; ours is 3600 s, the largest delay
tier of hub.topology), give up after 5 days (maximal_queue_lifetime), and one "delayed" warning after 4 h
(delay_warning_time, off in stock Postfix, commonly set to 4h; sendmail's Timeout.queuewarn is 4h).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from hub.errors import ConfigError
from hub.mailqueue import SmtpRecipient

DAY_S = 24 * 3600

# -- retry schedule ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again in `delay_s` seconds."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class WarnThenRetry:
    """Send the "delayed" DSN now (to recipients whose NOTIFY asks for DELAY), then retry in `delay_s`."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Expire:
    """The mail is older than its lifetime: stop trying and bounce (RFC 3463 status 4.4.7 in the DSN)."""

    age_s: float


Step = Retry | WarnThenRetry | Expire


@dataclass(frozen=True, slots=True)
class RelaySchedule:
    """When to retry a deferred mail.

    After failed attempt number n (1 for the first attempt), the wait is drawn uniformly in
    [initial_s, ceiling], ceiling = min(initial_s * factor**n, max_delay_s): "full jitter" above a floor,
    so retries of mails deferred together spread out, yet none comes back sooner than `initial_s`
    (greylisting servers refuse retries that come too soon).  The wait never goes past the end of the
    lifetime: the last attempt is made when the lifetime ends, then the mail expires.
    `delay_warning_s = 0` turns the "delayed" warning off.
    """

    initial_s: float = 300.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    lifetime_s: float = 5 * DAY_S
    delay_warning_s: float = 4 * 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_delay_s:
            raise ValueError("need 0 < initial_s <= max_delay_s")
        if self.factor < 1 or self.lifetime_s <= 0 or self.delay_warning_s < 0:
            raise ValueError("need factor >= 1, lifetime_s > 0 and delay_warning_s >= 0")

    def ceiling(self, attempt: int) -> float:
        """Longest wait after failed attempt number `attempt` (1-based)."""
        try:
            return min(self.initial_s * self.factor ** max(attempt, 1), self.max_delay_s)
        except OverflowError:  # far past the cap
            return self.max_delay_s

    def next_step(self, first_attempt_at: datetime, attempt: int, now: datetime, *,
                  rng: Callable[[], float] = random.random, warned: bool = False) -> Step:
        """What to do after failed attempt number `attempt` (1-based), made `now`.

        `first_attempt_at` starts the lifetime (the queue time of the mail); `rng` returns a float in
        [0, 1); `warned` says whether the "delayed" DSN was already sent (it is sent once).
        """
        age_s = (now - first_attempt_at).total_seconds()
        remaining_s = self.lifetime_s - age_s
        if remaining_s <= 0:
            return Expire(age_s)
        floor, ceiling = self.initial_s, self.ceiling(attempt)
        delay_s = min(floor + rng() * (ceiling - floor), remaining_s)
        if not warned and 0 < self.delay_warning_s <= age_s:
            return WarnThenRetry(delay_s)
        return Retry(delay_s)


# -- next hops ---------------------------------------------------------------------------------------------

StartTls = Literal["require", "opportunistic", "off"]
_STARTTLS_MODES: tuple[str, ...] = get_args(StartTls)
_HOP_KEYS = frozenset({"host", "port", "starttls", "verify_tls", "username", "password"})


@dataclass(frozen=True, slots=True)
class NextHop:
    """The server that takes mail for some domains, and how to talk to it.

    `starttls`: "require" (no TLS offered defers the mail), "opportunistic" (TLS when offered, clear
    text otherwise), "off" (never).  In both TLS modes a failed handshake defers the mail: there is no
    fallback to clear text once TLS was tried.  `verify_tls`: check the certificate chain against the
    configured CA and the name against `host`.  `username`/`password`: SMTP AUTH, only over TLS.
    The password is left out of repr() so that a logged hop never shows it.
    """

    host: str
    port: int = 25
    starttls: StartTls = "require"
    verify_tls: bool = True
    username: str = ""
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


HopTable = Mapping[str, NextHop]


def _normal_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def next_hop_for(domain: str, table: HopTable) -> NextHop | None:
    """The hop for `domain`: exact entry, else the closest `*.parent` wildcard, else `*`, else None.

    A wildcard matches subdomains only: `*.example.org` takes `a.example.org`, not `example.org`.
    """
    name = _normal_domain(domain)
    if not name:
        return None
    if name in table:
        return table[name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        hop = table.get("*." + ".".join(labels[i:]))
        if hop is not None:
            return hop
    return table.get("*")


@dataclass(frozen=True, slots=True)
class HopGroups:
    """Recipients grouped for delivery: one entry per hop (first-seen order), and those with no hop."""

    routed: Mapping[NextHop, tuple[SmtpRecipient, ...]]
    unroutable: tuple[SmtpRecipient, ...]


def group_by_hop(recipients: Iterable[SmtpRecipient], table: HopTable) -> HopGroups:
    """Split recipients by next hop, keeping their order; equal hops (same server and settings) share a group."""
    routed: dict[NextHop, list[SmtpRecipient]] = {}
    unroutable: list[SmtpRecipient] = []
    for recipient in recipients:
        hop = next_hop_for(recipient.address.rpartition("@")[2], table)
        if hop is None:
            unroutable.append(recipient)
        else:
            routed.setdefault(hop, []).append(recipient)
    return HopGroups({hop: tuple(group) for hop, group in routed.items()}, tuple(unroutable))


# -- loading the table from configuration ------------------------------------------------------------------


def _valid_pattern(pattern: str) -> bool:
    if pattern == "*":
        return True
    name = pattern.removeprefix("*.")
    labels = name.split(".")
    return all(label and "*" not in label and " " not in label for label in labels)


def _want(where: str, key: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config key {where}.{key} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _hop_from_table(where: str, table: Any) -> NextHop:
    if not isinstance(table, Mapping):
        raise ConfigError(f"config key {where} must be a table")
    unknown = sorted(set(table) - _HOP_KEYS)
    if unknown:
        raise ConfigError(f"config key {where}.{unknown[0]} is not a next-hop setting")
    if "host" not in table or not _want(where, "host", table["host"], str).strip():
        raise ConfigError(f"config key {where}.host is required")
    port = _want(where, "port", table.get("port", 25), int)
    if not 0 < port < 65536:
        raise ConfigError(f"config key {where}.port must be 1..65535, got {port}")
    starttls = _want(where, "starttls", table.get("starttls", "require"), str)
    if starttls not in _STARTTLS_MODES:
        raise ConfigError(f"config key {where}.starttls must be one of {', '.join(_STARTTLS_MODES)}")
    username = _want(where, "username", table.get("username", ""), str)
    password = _want(where, "password", table.get("password", ""), str)
    if bool(username) != bool(password):
        raise ConfigError(f"config keys {where}.username and {where}.password go together")
    return NextHop(host=table["host"].strip(), port=port, starttls=starttls,
                   verify_tls=_want(where, "verify_tls", table.get("verify_tls", True), bool),
                   username=username, password=password)


def next_hops_from_mapping(mapping: Mapping[str, Any], *, where: str = "relay.next_hops") -> dict[str, NextHop]:
    """Domain pattern -> hop table, from `{"example.org": {"host": ...}, "*.example.org": {...}, "*": {...}}`."""
    table: dict[str, NextHop] = {}
    for pattern, hop_table in mapping.items():
        key = _normal_domain(str(pattern))
        if not _valid_pattern(key):
            raise ConfigError(f"config key {where}.{pattern!r} is not a domain, '*.domain' or '*'")
        if key in table:
            raise ConfigError(f"config key {where}.{pattern!r} is given twice")
        table[key] = _hop_from_table(f"{where}.{pattern!r}", hop_table)
    return table


def next_hops_from_rows(rows: Sequence[Mapping[str, Any]], *, where: str = "relay.hops") -> dict[str, NextHop]:
    """The same table from `[[relay.hops]]` rows: each row has `domains = [...]` plus the hop settings."""
    table: dict[str, NextHop] = {}
    for i, row in enumerate(rows):
        here = f"{where}[{i}]"
        if not isinstance(row, Mapping):
            raise ConfigError(f"config key {here} must be a table")
        domains = row.get("domains")
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) for d in domains):
            raise ConfigError(f"config key {here}.domains must be a non-empty list of domain patterns")
        hop = _hop_from_table(here, {k: v for k, v in row.items() if k != "domains"})
        for domain in domains:
            key = _normal_domain(domain)
            if not _valid_pattern(key):
                raise ConfigError(f"config key {here}.domains: {domain!r} is not a domain, '*.domain' or '*'")
            if key in table:
                raise ConfigError(f"config key {here}.domains: {domain!r} is given twice")
            table[key] = hop
    return table
