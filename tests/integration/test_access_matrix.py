"""The access matrix (tests/access/matrix.toml) run over HTTP, on the embedded default (SQLite bus and index,
SeaweedFS child process) and on the production stack (RabbitMQ, PostgreSQL, SeaweedFS): one hub per stack
for the whole module, every cell one request, every refusal looked up in the patient's trail.

A failing cell is one line: role, route, state, flag, expected, got (status and rule), and what the trail
missed.  The full list is also written to access-matrix-<stack>.txt in the module's temporary folder.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from config.settings import NotifySettings, Settings, settings_from_mapping
from tests.access import matrix as access_matrix
from tests.access.matrix import Cell, Matrix
from tests.access.world import PHARMACY, Plan, World, make_states, request_for
from tests.fixtures_db import PG_ADMIN_URL
from tests.integration.hub_harness import CREDENTIALS, hub_settings, running_hub
from tests.services import free_port

pytestmark = pytest.mark.integration
MAIL_RULES = {"pharmacy_first_contact": [PHARMACY]}
#: the trail's actor_kind of each column (a success marked "traced" must leave an entry of that kind)
ACTOR_KIND = {"author": "professional", "medecin": "professional", "pharmacien": "professional",
              "optician": "professional", "regulator": "professional", "stranger": "patient"}


@dataclass
class Stack:
    name: str
    world: World
    report: Path


def LOOPBACK_PUSH(settings: Settings) -> NotifySettings:
    """The example device registers a loopback push endpoint (nothing listens there): tests only."""
    return replace(settings.notify, push_allow_http=True, push_allow_private=True)


def _embedded(tmp: Path, plan: Plan) -> Settings:
    """The embedded default as `meshub run` builds it from an empty configuration, on free ports."""
    settings = settings_from_mapping({"s3": {"embedded_port": free_port()}, "mss": MAIL_RULES}, data_dir=tmp)
    return replace(settings, http_port=free_port(), workers=2, credentials=CREDENTIALS + plan.credentials(),
                   mail=replace(settings.mail, smtp_port=0), notify=LOOPBACK_PUSH(settings))


@pytest.fixture(scope="module", params=["embedded", "production"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    matrix = access_matrix.load()
    plan = Plan(matrix)
    tmp = tmp_path_factory.mktemp(f"matrix-{request.param}")
    if request.param == "embedded":
        settings = _embedded(tmp, plan)
        with running_hub(settings) as hub:
            yield Stack("embedded", make_states(hub, plan), tmp / "access-matrix-embedded.txt")
        return
    seaweed = request.getfixturevalue("seaweed")
    amqp_url = request.getfixturevalue("amqp_url")
    pg_admin: sa.Engine = request.getfixturevalue("pg_admin")
    name = f"meshub_matrix_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        base = hub_settings(tmp, bus_url=amqp_url, index_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
                            s3_endpoint=seaweed.endpoint, access_key=seaweed.access_key,
                            secret_key=seaweed.secret_key, bucket=f"matrix-{uuid.uuid4().hex[:10]}",
                            prefix=f"matrix-{uuid.uuid4().hex[:10]}")
        settings = replace(base, credentials=CREDENTIALS + plan.credentials(),
                           mail=replace(base.mail, smtp_port=0, rules=MAIL_RULES), notify=LOOPBACK_PUSH(base))
        with running_hub(settings) as hub:
            yield Stack("production", make_states(hub, plan), tmp / "access-matrix-production.txt")
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_every_route_of_the_openapi_document_has_a_row_and_every_row_a_route(stack: Stack) -> None:
    with stack.world.hub.client() as client:
        document = client.get("/openapi.json").json()
    problems = access_matrix.coverage_problems(stack.world.plan.matrix, document)
    assert not problems, "\n".join(problems)


def test_every_record_state_is_made_as_planned(stack: Stack) -> None:
    assert not stack.world.problems, "\n".join(stack.world.problems)


def test_the_access_matrix(stack: Stack) -> None:
    matrix: Matrix = stack.world.plan.matrix
    failures: list[tuple[Cell, str]] = []
    with Runner(stack.world) as runner:
        for cell in matrix.cells():
            problem = runner.run(cell)
            if problem:
                failures.append((cell, problem))
    lines = [f"{cell.label()} expected {cell.expect!s:40} {problem}" for cell, problem in failures]
    groups = Counter((cell.route.key, str(cell.expect), problem.split(" (new refused")[0])
                     for cell, problem in failures)
    summary = [f"{n:5} x {route} expected {expect}, {got}" for (route, expect, got), n in sorted(groups.items())]
    text = "\n".join(["by route and answer:", *summary, "", "every failing cell (role, route, state, flag):", *lines])
    stack.report.write_text(text + "\n", encoding="utf-8")
    assert not failures, (f"{len(failures)} of {len(matrix.cells())} cells wrong on the {stack.name} stack "
                          f"(also in {stack.report})\n{text}")


#: answers that are the same whatever the reason (the trail has the reason)
OPAQUE_RULES = frozenset({"lifecycle.activation-refused"})


class Runner:
    """Sends the cells' requests on one connection pool and reads the trail after each refusal."""

    def __init__(self, world: World) -> None:
        self._world = world
        self._http = httpx.Client(base_url=world.hub.url, timeout=30)  # requests carry their own credentials
        self._seen: dict[str, int] = {}

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def run(self, cell: Cell) -> str:
        """"" when the answer is the expected one, else what was wrong (got ..., not in the trail)."""
        request = request_for(self._world, cell)
        if request.ins and request.ins not in self._seen:
            self._seen[request.ins] = self._last_seq(request.ins)
        status, rule = self._send(request.method, request.path, request.headers, request.body)
        got = f"got {status} {rule}".rstrip()
        expect = cell.expect
        if not expect.status_ok(status) or (expect.refusal and not expect.rule_ok(rule)):
            return got
        if expect.refusal and not rule:
            return f"{got} (a refusal without its rule)"
        if expect.traced and request.ins:
            entries = self._new_entries(request.ins)
            if expect.success:
                if not any(e.get("actor_kind") == ACTOR_KIND.get(cell.role, cell.role) for e in entries):
                    return f"{got}, not traced in the patient's trail"
                return ""
            rules = [str((e.get("detail") or {}).get("rule", "")) for e in entries if e.get("outcome") == "refused"]
            # A 404 and the one activation answer hide the reason from the caller on purpose: the trail
            # keeps the precise one (read.closed, lifecycle.bad-code...), so any refusal entry will do there.
            opaque = status == 404 or rule in OPAQUE_RULES
            if rule not in rules and not (opaque and rules):
                return f"{got} not in the patient's trail (new refused entries: {rules or 'none'})"
        elif request.ins in self._seen:
            self._new_entries(request.ins)  # move past what this cell left, so the next cell sees only its own
        return ""

    def _send(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
        if path.endswith("/stream"):  # Server-Sent Events: the answer's status, then hang up
            with self._http.stream(method, path, headers=headers, timeout=10) as response:
                if response.status_code >= 300:
                    response.read()
                    return response.status_code, rule_of(response)
                return response.status_code, ""
        response = self._http.request(method, path, headers=headers, **body)
        return response.status_code, rule_of(response) if response.status_code >= 300 else ""

    def _last_seq(self, ins: str) -> int:
        entries = self._entries(ins, 0)
        return max((int(e["seq"]) for e in entries), default=0)

    def _new_entries(self, ins: str) -> list[dict[str, Any]]:
        entries = self._entries(ins, self._seen[ins])
        if entries:
            self._seen[ins] = max(int(e["seq"]) for e in entries)
        return entries

    def _entries(self, ins: str, after: int) -> list[dict[str, Any]]:
        """The stored trail after `after` (the chain itself: no viewer's redaction, and reading it traces nothing)."""
        trail = self._world.hub.hub.records.audit
        out: list[dict[str, Any]] = []
        while page := trail.for_patient(ins, after_seq=after, limit=1000):
            out += [e.to_dict() for e in page]
            after = page[-1].seq
        return out


def rule_of(response: httpx.Response) -> str:
    """A refusal's rule: error.finding.rule when the body carries a finding, else error.code."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "<no JSON body>"
    if not isinstance(error, dict):
        return str(error)
    finding = error.get("finding")
    if isinstance(finding, dict) and finding.get("rule"):
        return str(finding["rule"])
    return str(error.get("code", ""))
