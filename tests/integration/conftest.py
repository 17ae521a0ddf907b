"""Fixtures for whole-hub tests on the production stack: RabbitMQ + SeaweedFS + PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from hub.topology import Topology
from storage.sql.index import SqlIndex
from tests.integration.hub_harness import RunningHub, hub_settings, running_hub


@pytest.fixture
def stack_settings(tmp_path: Path, seaweed: object, amqp_url: str, topology: Topology, pg_url: str) -> Settings:
    return hub_settings(tmp_path, bus_url=amqp_url, index_url=pg_url, s3_endpoint=seaweed.endpoint,  # type: ignore[attr-defined]
                        access_key=seaweed.access_key, secret_key=seaweed.secret_key,  # type: ignore[attr-defined]
                        bucket=f"e2e-{uuid.uuid4().hex[:10]}", prefix=topology.prefix)


@pytest.fixture
def stack(stack_settings: Settings) -> Iterator[RunningHub]:
    with running_hub(stack_settings) as hub:
        yield hub


@pytest.fixture
def index(sqlite_url: str) -> Iterator[SqlIndex]:
    """An index on SQLite in the test's folder, for tests that wire parts of the hub by hand."""
    index = SqlIndex.connect(sqlite_url)
    yield index
    index.dispose()
