"""The BlobStore contract, run against every implementation the hub composes, on a real SeaweedFS:
the sealed MinioBlobStore (what the hub uses), the RecentBlobs cache in front of it (the embedded hub's
workers), and the plaintext MinioBlobStore (objects stored before encryption at rest); and against the
in-memory store (storage.memory.blobs), which needs no server.  Same expectations."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Protocol

import pytest

from hub.envelope import BlobRef
from hub.errors import NotFound
from storage.memory.blobs import MemoryBlobStore
from storage.recent import RecentBlobs
from storage.sealing import SEGMENT
from storage.seaweed import SeaweedServer
from tests.fixtures_s3 import store_on

pytestmark = pytest.mark.integration


class Store(Protocol):
    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef: ...
    def get(self, ref: BlobRef) -> bytes: ...
    def delete(self, ref: BlobRef) -> None: ...
    def ping(self) -> None: ...


@pytest.fixture(params=["memory", "sealed", "recent-over-sealed", "plaintext"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryBlobStore()
        return
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    inner = store_on(seaweed, plaintext=request.param == "plaintext")
    yield RecentBlobs(inner) if request.param == "recent-over-sealed" else inner
    inner.client.remove_bucket(bucket_name=inner.bucket)
    inner.close()


@pytest.mark.parametrize("size", [0, 1, SEGMENT, SEGMENT + 1, 200_000])
def test_what_is_put_is_what_is_got_with_its_plaintext_digest(store: Store, size: int) -> None:
    data = os.urandom(size)

    ref = store.put(data, kind="cda", content_type="text/xml")

    assert (ref.sha256, ref.size) == (hashlib.sha256(data).hexdigest(), size)
    assert store.get(ref) == data
    assert store.get(ref) == data  # and again (a cache hands an entry out once, then the store answers)


def test_the_same_bytes_give_the_same_ref_and_another_kind_another_key(store: Store) -> None:
    first = store.put(b"<ClinicalDocument/>", kind="cda", content_type="text/xml")
    again = store.put(b"<ClinicalDocument/>", kind="cda", content_type="text/xml")
    mail = store.put(b"<ClinicalDocument/>", kind="mail", content_type="message/rfc822")

    assert first == again and mail.key != first.key and mail.sha256 == first.sha256
    assert store.get(again) == store.get(mail) == b"<ClinicalDocument/>"


def test_concurrent_puts_of_the_same_bytes_leave_one_readable_object(store: Store) -> None:
    data = os.urandom(3 * SEGMENT)
    refs: list[BlobRef] = []
    threads = [threading.Thread(target=lambda: refs.append(store.put(data, kind="cda", content_type="x")))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(refs)) == 1
    assert store.get(refs[0]) == data


def test_a_missing_object_is_not_found_and_delete_is_idempotent(store: Store) -> None:
    ref = store.put(b"to be erased", kind="cda", content_type="text/plain")

    store.delete(ref)
    store.delete(ref)

    with pytest.raises(NotFound):
        store.get(ref)
    with pytest.raises(NotFound):
        store.get(BlobRef(bucket=ref.bucket, key="cda/00/" + "0" * 64, sha256="0" * 64, size=1))


def test_ping_answers(store: Store) -> None:
    store.ping()
