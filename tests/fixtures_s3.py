"""pytest plugin: a real SeaweedFS S3 server for integration tests (register with `pytest_plugins`).

Owns: `seaweed` (one server per session, in a tmp folder, on a free port),
`seaweed_factory` (extra servers for fault tests, stopped at teardown) and
`blob_store` (a MinioBlobStore on a fresh bucket per test).
When `weed` is missing or does not start: skip locally, fail when CI=true.
Does not: mark tests (test modules mark themselves with @pytest.mark.integration).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.errors import ConfigError, StoreUnavailable
from storage.keyring import Keyring, new_kek
from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer
from storage.seaweed_net import free_port
from tests.services import missing

ACCESS_KEY = "hub-test"


def start_server(data_dir: Path, *, fsync: bool = True) -> SeaweedServer:
    """Start a SeaweedServer in `data_dir` on a free port, or skip/fail the test."""
    # Every test gets buckets of its own and a bucket is a SeaweedFS collection with volumes of its own:
    # the session's server needs room for all of them (volumes grow as written; nothing is preallocated).
    server = SeaweedServer(data_dir, s3_port=free_port(), access_key=ACCESS_KEY,
                           secret_key=secrets.token_hex(16), fsync=fsync, max_volumes=2000)
    try:
        server.start(timeout_s=60)
    except (ConfigError, StoreUnavailable, OSError) as exc:
        missing(f"SeaweedFS did not start: {exc}")
    return server


def store_on(server: SeaweedServer, *, bucket: str | None = None, timeout_s: float = 5.0,
             keyring: Keyring | None = None, plaintext: bool = False,
             key_secret: bytes | None = None) -> MinioBlobStore:
    """A MinioBlobStore on `server`, on a fresh bucket unless one is given, sealing under `keyring` (default: a
    fresh one-key keyring); plaintext=True: a store without encryption (objects as stored before it)."""
    bucket = bucket or f"t-{uuid.uuid4().hex[:16]}"
    store = MinioBlobStore.connect(endpoint=server.endpoint, access_key=server.access_key,
                                   secret_key=server.secret_key, bucket=bucket,
                                   key_secret=key_secret or secrets.token_bytes(32), timeout_s=timeout_s,
                                   keyring=None if plaintext else keyring or Keyring.of(new_kek()))
    store.ensure_bucket()
    return store


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = start_server(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.kill()  # every acknowledged PUT is already fsynced; a graceful stop only costs seconds


@pytest.fixture
def seaweed_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], SeaweedServer]]:
    started: list[SeaweedServer] = []

    def make() -> SeaweedServer:
        server = start_server(tmp_path_factory.mktemp("seaweed-extra"))
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()  # fault-test servers hold nothing worth a graceful stop


@pytest.fixture
def blob_store(seaweed: SeaweedServer) -> Iterator[MinioBlobStore]:
    store = store_on(seaweed)
    yield store
    store.client.remove_bucket(bucket_name=store.bucket)  # frees its volumes; SeaweedFS allows non-empty
    store.close()
