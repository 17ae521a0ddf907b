"""The access test matrix as data (tests/access/matrix.toml): load it, resolve every cell's expected answer,
and check it covers exactly the routes of the hub's OpenAPI document.

Owns: the vocabulary (roles, record states, document flags, scopes), the expectation syntax
("2xx", "403 read.role", "404 unknown-patient", "404 *", "401", suffixes "untraced" / "traced"), how a cell's
expectation is resolved (profiles in `like` order, then the route's own `roles` and `rules`; a later rule
wins), and the order cells run in (phases; within a route, refusals before successes).
Does not: send requests or build patients (tests/access/world.py and the integration test do).
Pure: no I/O but reading the TOML file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MATRIX = Path(__file__).with_name("matrix.toml")
SCOPES = ("global", "patient", "document")
#: the extra state of routes with `with_unknown = true`: an INS with no profile (nobody's trail)
UNKNOWN = "unknown"
#: HTTP methods that count as routes (the OpenAPI document's operations)
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True, slots=True)
class Expect:
    """One cell's expected answer: a status ("2xx" or an exact code), the rule code of a refusal (None: not
    checked, "*": any non-empty), and whether the request must leave an entry in the patient's trail (a
    refusal: a refused entry with that rule; a success marked "traced": an entry of the column's actor)."""

    status: str
    rule: str | None
    traced: bool

    @property
    def refusal(self) -> bool:
        return self.status in ("403", "404")

    @property
    def success(self) -> bool:
        return self.status.startswith("2")

    def status_ok(self, got: int) -> bool:
        if self.status.endswith("xx"):
            return str(got)[0] == self.status[0]
        return str(got) == self.status

    def rule_ok(self, got: str) -> bool:
        return self.rule is None or (self.rule == "*" and bool(got)) or self.rule == got

    def __str__(self) -> str:
        mark = ("untraced" if self.refusal and not self.traced else
                "traced" if self.traced and not self.refusal else "")
        return " ".join([self.status] + ([self.rule] if self.rule else []) + ([mark] if mark else []))


def parse_expect(text: str, *, traceable: bool) -> Expect:
    """"403 read.role" -> Expect("403", "read.role", traced); `traceable`: the route's refusals can be
    attributed to a known patient, so they are expected in the trail unless marked "untraced".  A success
    is expected in the trail only when marked "traced"."""
    words = text.split()
    if not words or not (words[0] in ("2xx", "4xx") or (len(words[0]) == 3 and words[0].isdigit())):
        raise ValueError(f"bad expectation {text!r}: a status (2xx, 403, ...) then an optional rule code")
    untraced, traced = "untraced" in words[1:], "traced" in words[1:]
    rest = [w for w in words[1:] if w not in ("untraced", "traced")]
    if len(rest) > 1:
        raise ValueError(f"bad expectation {text!r}: one rule code at most")
    status = words[0]
    refusal = status in ("403", "404")
    return Expect(status, rest[0] if rest else None,
                  traced=traced or (refusal and traceable and not untraced))


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the matrix: an OpenAPI operation and how its cells are made and run."""

    key: str                      # "GET /v1/documents/{document_id}"
    scope: str                    # global (role), patient (role x state) or document (role x state x flag)
    roles: tuple[str, ...]        # the columns this route is asked as
    phase: int                    # 0 reads, 1 changes, 2 writes, 3 lifecycle steps (fresh patients)
    fresh: bool                   # each cell on a patient of its own (the step changes the profile)
    traced: bool                  # refusals can be attributed to the patient (its trail is checked)
    body: str                     # name of the example body (tests/access/world.py BODIES)
    table: Mapping[str, str]      # role -> expectation text (after profiles)
    rules: tuple[tuple[str, str, str, str], ...]  # (state, flag, role, expectation); later wins
    note: str = ""
    trace_not_found: bool = True  # [settings] trace_not_found
    with_unknown: bool = False    # also asked about an INS that has no profile (state "unknown")

    @property
    def method(self) -> str:
        return self.key.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.key.split(" ", 1)[1]

    def expect(self, role: str, state: str, flag: str) -> Expect:
        text = self.table.get(role, self.table.get("*", ""))
        for r_state, r_flag, r_role, value in self.rules:
            if _match(r_state, state) and _match(r_flag, flag) and _match(r_role, role):
                text = value
        if not text:
            raise ValueError(f"{self.key}: no expectation for role {role}")
        expect = parse_expect(text, traceable=self.traced and self.scope != "global" and state != UNKNOWN)
        if expect.status == "404" and not self.trace_not_found:
            return Expect(expect.status, expect.rule, traced=False)
        return expect


def _match(pattern: str, value: str) -> bool:
    return pattern == "*" or value in pattern.split("|")


@dataclass(frozen=True, slots=True)
class Cell:
    route: Route
    role: str
    state: str   # "-" for global routes
    flag: str    # "-" for global and patient routes
    expect: Expect

    def label(self) -> str:
        return f"{self.role:14} {self.route.key:55} {self.state:8} {self.flag:30}"


@dataclass(frozen=True, slots=True)
class Matrix:
    roles: tuple[str, ...]
    states: tuple[str, ...]
    flags: tuple[str, ...]
    routes: Mapping[str, Route]
    settings: Mapping[str, Any]

    def states_of(self, route: Route) -> tuple[str, ...]:
        if route.scope == "global":
            return ("-",)
        return (*self.states, UNKNOWN) if route.with_unknown else self.states

    def cells(self) -> list[Cell]:
        """Every cell, in the order they run: by phase, then route, then (state, flag), refusals first."""
        out: list[Cell] = []
        for route in sorted(self.routes.values(), key=lambda r: r.phase):
            flags = self.flags if route.scope == "document" else ("-",)
            for state in self.states_of(route):
                for flag in flags:
                    group = [Cell(route, role, state, flag, route.expect(role, state, flag)) for role in route.roles]
                    out += sorted(group, key=lambda c: c.expect.success)  # successes last: they may change it
        return out


def load(path: Path = MATRIX) -> Matrix:
    """Read and check the matrix file (every name known, every expectation well formed)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    roles, states, flags = (tuple(str(x) for x in data[k]) for k in ("roles", "states", "flags"))
    profiles: Mapping[str, Any] = data.get("profiles", {})
    settings = data.get("settings", {})
    routes = {key: _route(key, row, profiles, roles, trace_not_found=bool(settings.get("trace_not_found", True)))
              for key, row in data["routes"].items()}
    matrix = Matrix(roles, states, flags, routes, settings)
    for route in routes.values():
        if route.with_unknown and route.scope != "patient":
            raise ValueError(f"{route.key}: with_unknown is for routes of scope patient")
        _check_names(route, roles, (*states, UNKNOWN), flags)
    matrix.cells()  # every cell resolves to one well-formed expectation
    return matrix


def _route(key: str, row: Mapping[str, Any], profiles: Mapping[str, Any], roles: Sequence[str], *,
           trace_not_found: bool) -> Route:
    table: dict[str, str] = {}
    rules: list[tuple[str, str, str, str]] = []
    for name in row.get("like", []):
        profile = profiles.get(name)
        if profile is None:
            raise ValueError(f"{key}: unknown profile {name!r}")
        table.update(profile.get("roles", {}))
        rules += [tuple(r) for r in profile.get("rules", [])]
    table.update(row.get("roles", {}))
    rules += [tuple(r) for r in row.get("rules", [])]
    if not row.get("credential_free"):
        table.update(profiles["always"].get("roles", {}))
        rules += [tuple(r) for r in profiles["always"].get("rules", [])]
    scope = str(row.get("scope", "patient"))
    if scope not in SCOPES:
        raise ValueError(f"{key}: scope must be one of {SCOPES}")
    asked = tuple(row.get("asked_as", roles))
    return Route(key=key, scope=scope, roles=asked, phase=int(row.get("phase", 0)), fresh=bool(row.get("fresh")),
                 traced=bool(row.get("traced", scope != "global")), body=str(row.get("body", "")),
                 table=table, rules=tuple((str(a), str(b), str(c), str(d)) for a, b, c, d in rules),
                 note=str(row.get("note", "")), trace_not_found=trace_not_found,
                 with_unknown=bool(row.get("with_unknown")))


def _check_names(route: Route, roles: Sequence[str], states: Sequence[str], flags: Sequence[str]) -> None:
    for role in [*route.roles, *(r for r in route.table if r != "*")]:
        if role not in roles:
            raise ValueError(f"{route.key}: unknown role {role!r}")
    for state, flag, role, _ in route.rules:
        for pattern, known, what in ((state, states, "state"), (flag, flags, "flag"), (role, roles, "role")):
            unknown = [x for x in pattern.split("|") if pattern != "*" and x not in known]
            if unknown:
                raise ValueError(f"{route.key}: unknown {what} {unknown} in rule {(state, flag, role)}")


def openapi_routes(document: Mapping[str, Any]) -> set[str]:
    """"METHOD /path" of every operation of an OpenAPI document."""
    return {f"{method.upper()} {path}" for path, item in document.get("paths", {}).items()
            for method in item if method in METHODS}


def coverage_problems(matrix: Matrix, document: Mapping[str, Any]) -> list[str]:
    """A route without a row, or a row naming no route: each one line."""
    served = openapi_routes(document)
    rows = set(matrix.routes)
    return ([f"route without a row in tests/access/matrix.toml: {r}" for r in sorted(served - rows)]
            + [f"row naming no route of /openapi.json: {r}" for r in sorted(rows - served)])
