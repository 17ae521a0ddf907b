"""Issue 12: every numeric query parameter of every route is bounded.  The routes are taken from the hub's own
/openapi.json, so a new route with an unbounded number fails here: 2**63 and -1 are a `422 param.out-of-range`
with a clear body (never a 500 from a store that cannot hold the number)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests import builders
from tests.integration.hub_harness import RunningHub

pytestmark = pytest.mark.integration

HUGE, NEGATIVE = str(2**63), "-1"


def _numeric_query_parameters(openapi: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, parameter) for every integer or number query parameter the hub declares."""
    found = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if parameter["in"] == "query" and kinds & {"integer", "number"}:
                    found.append((method.upper(), path, parameter["name"]))
    return found


def _concrete(path: str) -> str:
    """A path template with its placeholders filled: an INS where one is named, a dummy id elsewhere."""
    return re.sub(r"\{([^}]+)\}", lambda m: builders.TEST_INS if m.group(1) == "ins" else "x", path)


def test_every_numeric_query_parameter_is_bounded(stack: RunningHub) -> None:
    with stack.admin() as admin:
        assert admin.post("/v1/patients/import",
                          content=builders.ROSTER_HEADER + builders.roster_line()).status_code == 200
        parameters = _numeric_query_parameters(admin.get("/openapi.json").json())
        names = {(path, name) for _, path, name in parameters}
        assert {("/v1/patients/{ins}/audit", "after"), ("/v1/patients/{ins}/messages", "offset"),
                ("/v1/submissions/{submission_id}", "wait")} <= names, names
        wrong = []
        for method, path, name in parameters:
            for value in (HUGE, NEGATIVE):
                response = admin.request(method, _concrete(path), params={name: value})
                body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                    else {}
                error = body.get("error", {}) if isinstance(body, dict) else {}
                if response.status_code != 422 or error.get("code") != "param.out-of-range":
                    wrong.append((method, path, name, value, response.status_code, response.text[:200]))
                elif value not in error["message_en"] and name in error["message_en"] and error["message_fr"]:
                    continue
                else:
                    wrong.append((method, path, name, value, "unclear body", error))
    assert not wrong, wrong


def test_a_bounded_parameter_in_range_still_works(stack: RunningHub) -> None:
    with stack.admin() as admin:
        assert admin.post("/v1/patients/import",
                          content=builders.ROSTER_HEADER + builders.roster_line()).status_code == 200
        trail = admin.get(f"/v1/patients/{builders.TEST_INS}/audit", params={"after": 2**53 - 1})
        assert trail.status_code == 200 and trail.json()["entries"] == []
        not_a_number = admin.get(f"/v1/patients/{builders.TEST_INS}/audit", params={"limit": "ten"})
        assert not_a_number.status_code == 422 and not_a_number.json()["error"]["code"] == "param.out-of-range"
