"""The access matrix file (tests/access/matrix.toml) reads as the access table: it loads, every cell has
one well-formed expectation, a few cells say what the decisions say, and the OpenAPI coverage check
names a route without a row and a row without a route.  Pure (no hub): the HTTP run is
tests/integration/test_access_matrix.py."""

from __future__ import annotations

import itertools

import pytest

from tests.access import matrix as access_matrix
from tests.access.matrix import Expect, parse_expect


@pytest.fixture(scope="module")
def table() -> access_matrix.Matrix:
    return access_matrix.load()


def test_every_cell_has_one_expectation_and_successes_run_last(table: access_matrix.Matrix) -> None:
    cells = table.cells()
    assert len(cells) > 3000
    phases = [c.route.phase for c in cells]
    assert phases == sorted(phases)
    for a, b in itertools.pairwise(cells):
        if (a.route.key, a.state, a.flag) == (b.route.key, b.state, b.flag):
            assert not (a.expect.success and not b.expect.success), (a.label(), b.label())


@pytest.mark.parametrize(("route", "role", "state", "flag", "expected"), [
    ("GET /v1/documents/{document_id}/content", "insurer", "active", "none", "403 read.role"),
    ("GET /v1/documents/{document_id}/content", "admin", "closed", "none", "404 unknown-patient"),
    ("GET /v1/documents/{document_id}/content", "optician", "active", "none", "403 access.habilitation"),
    ("GET /v1/documents/{document_id}/content", "medecin", "opened", "MASQUE_PS", "403 access.masked"),
    ("GET /v1/documents/{document_id}/content", "medecin", "created", "none", "403 access.record-inactive"),
    ("GET /v1/documents/{document_id}/content", "anonymous", "closed", "deleted", "401"),
    ("GET /v1/patients/{ins}/messages", "admin", "closed", "-", "404 *"),
    ("GET /v1/patients/{ins}/export", "insurer", "active", "-", "403 read.role"),
    ("GET /v1/patients/{ins}/audit", "admin", "closed", "-", "2xx traced"),
    ("POST /v1/documents", "patient", "active", "-", "2xx"),
    ("POST /v1/documents", "medecin", "active", "-", "403 write.author"),
    ("POST /v1/documents", "admin", "active", "-", "403 write.role"),
    ("POST /v1/activation", "anonymous", "opposed", "-", "403 lifecycle.activation-refused"),
    ("GET /v1/audit/verify", "producer", "-", "-", "403 forbidden untraced"),
])
def test_cells_say_what_the_decisions_say(table: access_matrix.Matrix, route: str, role: str, state: str,
                                          flag: str, expected: str) -> None:
    assert str(table.routes[route].expect(role, state, flag)) == expected


def test_refusals_on_a_record_are_expected_in_its_trail(table: access_matrix.Matrix) -> None:
    assert table.routes["GET /v1/patients/{ins}/documents"].expect("insurer", "active", "-").traced
    assert not table.routes["GET /v1/letters"].expect("insurer", "-", "-").traced  # global: no record
    assert not table.routes["GET /v1/patients/{ins}/documents"].expect("anonymous", "active", "-").traced


def test_the_coverage_check_names_a_missing_row_and_a_row_without_a_route(table: access_matrix.Matrix) -> None:
    paths: dict[str, dict[str, object]] = {}
    for key in table.routes:
        method, path = key.split(" ", 1)
        paths.setdefault(path, {})[method.lower()] = {}
    assert access_matrix.coverage_problems(table, {"paths": paths}) == []
    del paths["/healthz"]
    paths["/v1/new-route"] = {"get": {}, "parameters": []}
    assert access_matrix.coverage_problems(table, {"paths": paths}) == [
        "route without a row in tests/access/matrix.toml: GET /v1/new-route",
        "row naming no route of /openapi.json: GET /healthz"]


def test_expectations_are_parsed_strictly() -> None:
    assert parse_expect("404 * untraced", traceable=True) == Expect("404", "*", traced=False)
    assert parse_expect("403 read.role", traceable=True) == Expect("403", "read.role", traced=True)
    assert parse_expect("2xx", traceable=True).status_ok(201)
    for bad in ("", "ok", "403 a b"):
        with pytest.raises(ValueError):
            parse_expect(bad, traceable=True)
