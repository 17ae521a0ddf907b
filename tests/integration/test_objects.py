"""Contract of MinioBlobStore over a real SeaweedFS (started as a child process by tests/fixtures_s3.py)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import threading
import time
from collections.abc import Callable

import pytest

from hub.envelope import BlobRef
from hub.errors import IntegrityError, NotFound, StoreUnavailable
from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer
from tests.fixtures_s3 import store_on

pytestmark = pytest.mark.integration

INS = "184057512345678"  # synthetic 15-character INS (NIR + key), not a real person
DOC = f"<ClinicalDocument><patient><id root='1.2.250.1.213.1.4.8' extension='{INS}'/>" \
      "<name>DUPONT Jeanne</name></patient></ClinicalDocument>".encode()


def test_put_then_get_returns_the_same_bytes(blob_store: MinioBlobStore) -> None:
    ref = blob_store.put(DOC, kind="raw", content_type="text/xml")

    assert blob_store.get(ref) == DOC
    assert ref == BlobRef(bucket=blob_store.bucket, key=ref.key, sha256=hashlib.sha256(DOC).hexdigest(),
                          size=len(DOC))


def test_put_is_idempotent_for_identical_bytes(blob_store: MinioBlobStore) -> None:
    first = blob_store.put(DOC, kind="raw", content_type="text/xml")
    second = blob_store.put(DOC, kind="raw", content_type="text/xml")

    assert first == second
    assert blob_store.get(second) == DOC


def test_stored_metadata_carries_the_kek_id_and_no_plaintext_digest(blob_store: MinioBlobStore) -> None:
    # Issue 12 (encryption at rest) changed this on purpose: the plaintext SHA-256 used to be in the metadata
    # (it would confirm a guessed document); now it travels only in BlobRef, and the body is ciphertext.
    ref = blob_store.put(DOC, kind="raw", content_type="text/xml")

    stat = blob_store.client.stat_object(bucket_name=ref.bucket, object_name=ref.key)

    assert stat.metadata is not None and blob_store.keyring is not None
    assert stat.metadata["x-amz-meta-meshub-kek"] == blob_store.keyring.current().id
    assert "x-amz-meta-sha256" not in stat.metadata and ref.sha256 not in str(stat.metadata)
    assert stat.content_type == "application/octet-stream"


def test_key_reveals_neither_content_nor_ins_nor_plain_hash(blob_store: MinioBlobStore) -> None:
    ref = blob_store.put(DOC, kind="raw", content_type="text/xml")

    kind, fanout, digest = ref.key.split("/")
    assert (kind, fanout) == ("raw", digest[:2])
    assert INS not in ref.key and "DUPONT" not in ref.key.upper()
    assert digest != ref.sha256  # a guessed document hashed with plain SHA-256 does not find the object


def test_get_detects_an_object_overwritten_behind_our_back(blob_store: MinioBlobStore) -> None:
    ref = blob_store.put(DOC, kind="raw", content_type="text/xml")
    tampered = DOC.replace(b"DUPONT", b"DURAND")  # written as plaintext without metadata: read as legacy
    blob_store.client.put_object(bucket_name=ref.bucket, object_name=ref.key, data=io.BytesIO(tampered),
                                 length=len(tampered))

    with pytest.raises(IntegrityError):
        blob_store.get(ref)
    assert blob_store.get(ref, verify=False) == tampered


def test_get_of_a_missing_object_raises_not_found(blob_store: MinioBlobStore) -> None:
    ref = BlobRef(bucket=blob_store.bucket, key="raw/00/" + "0" * 64, sha256="0" * 64, size=1)

    with pytest.raises(NotFound):
        blob_store.get(ref)


def test_delete_removes_the_object(blob_store: MinioBlobStore) -> None:
    ref = blob_store.put(DOC, kind="raw", content_type="text/xml")

    blob_store.delete(ref)

    with pytest.raises(NotFound):
        blob_store.get(ref)


def test_ping_answers_when_the_store_is_up(blob_store: MinioBlobStore) -> None:
    blob_store.ping()


@pytest.mark.slow
def test_put_raises_store_unavailable_quickly_when_the_server_is_killed(
        seaweed_factory: Callable[[], SeaweedServer]) -> None:
    server = seaweed_factory()
    store = store_on(server, timeout_s=2.0)
    store.put(b"before the crash", kind="raw", content_type="text/plain")
    server.kill()

    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.put(DOC, kind="raw", content_type="text/xml")
    assert time.monotonic() - started < 5.0
    with pytest.raises(StoreUnavailable):
        store.ping()


@pytest.mark.slow
def test_object_acknowledged_before_kill_9_is_there_after_restart(
        seaweed_factory: Callable[[], SeaweedServer]) -> None:
    server = seaweed_factory()
    assert re.search(r'"fsync":\s*true', server.filer_conf())
    store = store_on(server)
    refs = [store.put(DOC + bytes([i]) * 50_000, kind="raw", content_type="text/xml") for i in range(5)]
    server.kill()  # SIGKILL right after the last PUT returned 200

    server.start()

    assert [store.get(ref) for ref in refs] == [DOC + bytes([i]) * 50_000 for i in range(5)]


@pytest.mark.slow
def test_put_raises_store_unavailable_within_the_timeout_when_the_server_hangs(
        seaweed_factory: Callable[[], SeaweedServer]) -> None:
    server = seaweed_factory()
    store = store_on(server, timeout_s=2.0)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)  # accepts TCP connections (kernel backlog) but never answers
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.put(DOC, kind="raw", content_type="text/xml")
        assert time.monotonic() - started < 6.0
    finally:
        os.kill(server.pid, signal.SIGCONT)


@pytest.mark.slow
def test_every_put_acknowledged_before_a_kill_9_under_load_survives_restart(
        seaweed_factory: Callable[[], SeaweedServer]) -> None:
    server = seaweed_factory()
    store = store_on(server, timeout_s=2.0)
    acknowledged: list[tuple[BlobRef, bytes]] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        for i in range(10_000):
            data = f"{worker}-{i}-".encode() + os.urandom(20_000)
            try:
                ref = store.put(data, kind="raw", content_type="application/octet-stream")
            except StoreUnavailable:
                return
            with lock:
                acknowledged.append((ref, data))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.kill()
    for thread in threads:
        thread.join(timeout=30)

    server.start()

    assert len(acknowledged) > 20
    assert all(store.get(ref) == data for ref, data in acknowledged)
