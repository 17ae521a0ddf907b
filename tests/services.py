"""Helpers for service fixtures: skip locally, fail in CI."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

#: what the project ships for examples and tests (examples/SOURCE.md): the ANS example CDA documents
#: and a roster of their patients; in the repository, so a fresh clone has them.
EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"
FIXTURES_CDA = EXAMPLES / "cda"
EXAMPLE_ROSTER = EXAMPLES / "roster.csv"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """A required service or file is absent: fail under CI=true, skip otherwise."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: integration services are required, not skipped)")
    pytest.skip(what)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(probe: Callable[[], Any], *, timeout_s: float = 30.0, what: str = "") -> Any:
    """The first truthy value `probe()` returns within `timeout_s` (polled every 0.1 s); AssertionError else."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout_s}s: {what or probe}")
