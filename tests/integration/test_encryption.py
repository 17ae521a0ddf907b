"""Encryption at rest on a real SeaweedFS: what a stolen bucket holds, tampering, key rotation, large objects."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.errors import IntegrityError
from storage import sealing
from storage.keyring import Keyring, add_key, ensure_key_file, new_kek, remove_key
from storage.objects import MinioBlobStore
from storage.rotation import rotate
from storage.sealing import DecryptionError, KeyUnavailable
from storage.seaweed import SeaweedServer
from tests.fixtures_s3 import store_on

pytestmark = pytest.mark.integration

CDA = (Path(__file__).parents[1] / "data" / "minimal_cda.xml").read_bytes()
INS, TITLE = b"279035121518989", b"Lettre de liaison (test)"
assert INS in CDA and TITLE in CDA


def _raw(store: MinioBlobStore, key: str) -> tuple[bytes, dict[str, str]]:
    response = store.client.get_object(bucket_name=store.bucket, object_name=key)
    try:
        return bytes(response.read()), {k.lower(): v for k, v in response.headers.items()}
    finally:
        response.close()
        response.release_conn()


def _raw_put(store: MinioBlobStore, key: str, body: bytes, metadata: dict[str, str]) -> None:
    meta = {k.removeprefix("x-amz-meta-"): v for k, v in metadata.items() if k.startswith("x-amz-meta-")}
    store.client.put_object(bucket_name=store.bucket, object_name=key, data=io.BytesIO(body), length=len(body),
                            metadata=meta)  # type: ignore[arg-type]


def _files_containing(root: Path, needles: tuple[bytes, ...]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and path.name != "weed.log":
            data = path.read_bytes()
            hits += [f"{path.name}:{needle!r}" for needle in needles if needle in data]
    return hits


@pytest.fixture
def own_server(seaweed_factory: Callable[[], SeaweedServer]) -> SeaweedServer:
    return seaweed_factory()


def test_round_trip_stores_only_ciphertext_and_the_kek_id(blob_store: MinioBlobStore) -> None:
    ref = blob_store.put(CDA, kind="cda", content_type="text/xml")

    body, headers = _raw(blob_store, ref.key)

    assert blob_store.get(ref) == CDA and ref.sha256 == hashlib.sha256(CDA).hexdigest() and ref.size == len(CDA)
    assert INS not in body and TITLE not in body and CDA[:200] not in body
    assert body.startswith(sealing.MAGIC) and len(body) == sealing.sealed_length(len(CDA))
    assert blob_store.keyring is not None
    assert headers["x-amz-meta-meshub-kek"] == blob_store.keyring.current().id
    assert headers["x-amz-meta-meshub-enc"] == "1"
    assert "x-amz-meta-sha256" not in headers  # a plaintext digest would confirm a guessed document
    assert ref.sha256 not in str(headers) and headers["content-type"] == "application/octet-stream"


def test_a_stolen_disk_holds_no_fragment_of_a_document(own_server: SeaweedServer) -> None:
    sealed = store_on(own_server)
    plain = store_on(own_server, plaintext=True)  # the control: proves the search finds plaintext on this disk
    marker = b"CONTROL-" + os.urandom(8).hex().encode()

    sealed_ref = sealed.put(CDA, kind="cda", content_type="text/xml")
    plain.put(marker + b" plaintext control object", kind="cda", content_type="application/octet-stream")
    own_server.stop()  # everything flushed to the volume files and the filer database

    hits = _files_containing(own_server.data_dir, (INS, TITLE, sealed_ref.sha256.encode(), marker))
    assert hits and all(repr(marker) in hit for hit in hits), hits


def test_a_tampered_ciphertext_is_an_integrity_error_not_data(blob_store: MinioBlobStore) -> None:
    ref = blob_store.put(CDA, kind="cda", content_type="text/xml")
    body, headers = _raw(blob_store, ref.key)
    tampered = bytearray(body)
    tampered[len(body) // 2] ^= 0x20
    _raw_put(blob_store, ref.key, bytes(tampered), headers)

    with pytest.raises(DecryptionError):
        blob_store.get(ref)
    with pytest.raises(DecryptionError):  # verify=False skips the SHA-256, never the authentication
        blob_store.get(ref, verify=False)


def test_objects_swapped_between_keys_do_not_decrypt(blob_store: MinioBlobStore) -> None:
    a = blob_store.put(CDA, kind="cda", content_type="text/xml")
    b = blob_store.put(CDA.replace(b"(test)", b"(autre)"), kind="cda", content_type="text/xml")
    body_a, headers_a = _raw(blob_store, a.key)
    body_b, headers_b = _raw(blob_store, b.key)

    _raw_put(blob_store, b.key, body_a, headers_a)  # A's object, whole, under B's key
    with pytest.raises(IntegrityError):
        blob_store.get(b)
    _raw_put(blob_store, b.key, body_b, {**headers_b, "x-amz-meta-meshub-dek": headers_a["x-amz-meta-meshub-dek"]})
    with pytest.raises(DecryptionError):  # A's wrapped key beside B's body
        blob_store.get(b)
    _raw_put(blob_store, b.key, body_b[: len(body_b) - 20], headers_b)
    with pytest.raises(IntegrityError):  # cut short
        blob_store.get(b)


def test_a_wrong_or_missing_kek_is_a_clear_error(blob_store: MinioBlobStore, seaweed: SeaweedServer) -> None:
    ref = blob_store.put(CDA, kind="cda", content_type="text/xml")
    assert blob_store.keyring is not None
    kek = blob_store.keyring.current()
    impostor = sealing.Kek(id=kek.id, key=os.urandom(32))
    other = MinioBlobStore.connect(endpoint=seaweed.endpoint, access_key=seaweed.access_key,
                                   secret_key=seaweed.secret_key, bucket=blob_store.bucket, key_secret=b"x",
                                   keyring=Keyring.of(impostor))
    stranger = MinioBlobStore.connect(endpoint=seaweed.endpoint, access_key=seaweed.access_key,
                                      secret_key=seaweed.secret_key, bucket=blob_store.bucket, key_secret=b"x",
                                      keyring=Keyring.of(new_kek()))

    with pytest.raises(DecryptionError):
        other.get(ref)
    with pytest.raises(KeyUnavailable, match=kek.id):
        stranger.get(ref)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "kek.json"
    ensure_key_file(path)
    return path


@pytest.fixture
def filed_store(seaweed: SeaweedServer, key_file: Path) -> Iterator[MinioBlobStore]:
    store = store_on(seaweed, keyring=Keyring.from_file(key_file))
    yield store
    store.close()


def test_rotation_rewraps_without_reading_bodies_then_the_old_kek_can_go(
        filed_store: MinioBlobStore, key_file: Path, seaweed: SeaweedServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = filed_store
    assert store.keyring is not None
    old = store.keyring.current()
    payloads = [CDA, b"", os.urandom(3 * sealing.SEGMENT + 5), os.urandom(6 * 1024 * 1024)]  # last: multipart
    refs = [store.put(data, kind="cda", content_type="text/xml") for data in payloads]
    etags = {ref.key: store.inspect(ref.key).etag for ref in refs}
    new = add_key(key_file)

    def no_body_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("rotation read an object's body")

    with monkeypatch.context() as patch:
        patch.setattr(store.client, "get_object", no_body_reads)
        report = rotate(store)
        again = rotate(store)

    assert (report.scanned, report.rewrapped, report.failed) == (4, 4, 0)
    assert (again.rewrapped, again.already_current) == (0, 4)  # idempotent
    assert report.by_kek == {new.id: 4} and report.retirable == [old.id]
    assert {ref.key: store.inspect(ref.key).etag for ref in refs} == etags  # the bodies were not rewritten
    assert {store.inspect(ref.key).kek_id for ref in refs} == {new.id}
    remove_key(key_file, old.id)
    fresh = store_on(seaweed, bucket=store.bucket, keyring=Keyring.from_file(key_file))
    fresh._key_secret = store._key_secret  # same hub secret: same object keys
    assert [fresh.get(ref) for ref in refs] == payloads
    assert Keyring.from_file(key_file).ids() == [new.id]


def test_a_put_during_rotation_wins_over_the_stale_rewrap(filed_store: MinioBlobStore, key_file: Path) -> None:
    store = filed_store
    ref = store.put(CDA, kind="cda", content_type="text/xml")
    stale = store.inspect(ref.key)
    add_key(key_file)
    assert store.keyring is not None
    store.keyring.reload()  # a running hub sees a new key within a second; this one at once
    store.put(CDA, kind="cda", content_type="text/xml")  # the same bytes again: new DEK under the new KEK

    assert store.rewrap(stale) is False  # the server refused the copy: the object is not the one inspected
    assert store.get(ref) == CDA
    assert rotate(store).already_current == 1


def test_a_kek_unknown_to_the_keyring_is_reported_and_the_run_goes_on(filed_store: MinioBlobStore,
                                                                     seaweed: SeaweedServer) -> None:
    lost = store_on(seaweed, bucket=filed_store.bucket, keyring=Keyring.of(new_kek()))
    lost.put(b"sealed under a key nobody kept", kind="cda", content_type="text/plain")
    filed_store.put(CDA, kind="cda", content_type="text/xml")

    report = rotate(filed_store)

    assert report.failed == 1 and sum(report.unknown_kek.values()) == 1 and report.already_current == 1


def test_plaintext_objects_from_before_stay_readable_and_rotation_encrypts_them(seaweed: SeaweedServer) -> None:
    secret = os.urandom(32)
    before = store_on(seaweed, plaintext=True, key_secret=secret)
    after = store_on(seaweed, bucket=before.bucket, key_secret=secret)
    old_ref = before.put(CDA, kind="cda", content_type="text/xml")
    before.client.put_object(bucket_name=before.bucket, object_name="elsewhere/not-ours", data=io.BytesIO(b"x"),
                             length=1)

    assert after.get(old_ref) == CDA  # no sealing metadata: plaintext, SHA-256 checked
    scan = rotate(after, apply=False)
    assert (scan.plaintext, scan.sealed_plaintext) == (2, 0)
    report = rotate(after)

    assert (report.sealed_plaintext, report.foreign) == (1, 1)
    body, headers = _raw(after, old_ref.key)
    assert INS not in body and "x-amz-meta-meshub-dek" in headers
    assert after.get(old_ref) == CDA
    assert rotate(after).sealed_plaintext == 0


def _peak_during(action: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_20_mib_object_round_trips_in_bounded_memory(blob_store: MinioBlobStore) -> None:
    size = 20 * 1024 * 1024
    data = os.urandom(size)
    refs = []

    put_peak = _peak_during(lambda: refs.append(blob_store.put(data, kind="cda", content_type="text/xml")))
    out: list[bytes] = []
    get_peak = _peak_during(lambda: out.append(blob_store.get(refs[0])))

    assert out[0] == data
    # put: the ciphertext is made as minio asks for its 5 MiB parts, one part at a time: the peak depends on
    # the part size, not on the object's (about 3 parts: the one read, its pieces, the one sent); a plain
    # put of the same object holds all of it.  get: the plaintext once plus the segments in flight.
    part = 5 * 1024 * 1024
    assert put_peak < 3.5 * part, put_peak
    assert get_peak < 1.25 * size, get_peak
