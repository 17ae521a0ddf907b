"""pytest plugin: bus fixtures (a reachable RabbitMQ, an isolated topology, an SQLite bus file).

Register with `pytest_plugins = ["tests.fixtures_bus"]`.  Real-broker fixtures skip
when RabbitMQ is not reachable, except under CI=true where they fail.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hub.bus import open_connection
from hub.bus.kombu_bus import queues
from hub.topology import Topology, topologies

AMQP_URL = os.environ.get("MESHUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1.0).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of a reachable RabbitMQ (MESHUB_TEST_AMQP_URL, default guest@127.0.0.1:5672)."""
    if not _reachable(AMQP_URL):
        message = f"RabbitMQ not reachable at {urlsplit(AMQP_URL).netloc.rpartition('@')[2]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL


@pytest.fixture
def topology() -> Iterator[Topology]:
    """A topology with a unique prefix, short delay tiers and delivery_limit=2; its RabbitMQ queues
    (if any were declared) are deleted after the test."""
    topology = Topology(prefix=f"test-{uuid.uuid4().hex[:12]}", delivery_limit=2, delay_tiers_s=(1, 2, 5))
    yield topology
    if _reachable(AMQP_URL):
        _delete_amqp_topology(topology)


def _delete_amqp_topology(topology: Topology) -> None:
    # A whole hub built on this prefix declares every queue of hub.topology.EVENT_QUEUES with the default
    # delay tiers: delete those too (quorum queues left behind cost the broker a Raft group each).
    hub_topologies = (topology, *topologies(topology.prefix).values())
    names = {q.name for t in hub_topologies for q in queues(t, amqp=True)}
    with open_connection(AMQP_URL) as connection:
        channel = connection.channel()
        for queue in sorted(names):
            try:
                channel.queue_delete(queue)
            except Exception:  # a queue never declared closes the channel: open another
                channel = connection.channel()
        with contextlib.suppress(Exception):
            channel.exchange_delete(topology.exchange)


@pytest.fixture
def sqlite_bus_url(tmp_path: Path) -> str:
    """URL of an embedded SQLite bus in the test's temporary directory."""
    return f"sqlite://{tmp_path / 'bus.sqlite3'}"
