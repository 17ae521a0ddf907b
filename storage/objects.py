"""MinioBlobStore: the BlobStore port over any S3 server (SeaweedFS in our stack), through the minio client.

Owns: object keys from storage.keys (keyed hash of the content, never an INS
or a name), encryption at rest (storage.sealing: every body is AES-256-GCM under a
per-object data key, wrapped by the keyring's current KEK, the wrapped key and the
KEK id in the object's user metadata), the SHA-256 check of the plaintext on read;
the urllib3 pool and the translation of minio/urllib3 errors into hub errors are
in storage.s3_client (`mapped_errors`, around every call).

| object read | has `x-amz-meta-meshub-enc` | what get() does |
|---|---|---|
| sealed (every object written since encryption) | yes | unwrap the DEK, decrypt segment by segment, SHA-256 |
| plaintext, stored before encryption | no | SHA-256 check only; `meshub keys rotate` encrypts it in place |

An encrypted object carries no plaintext digest in its metadata (a SHA-256 there would let anyone holding a
guessed document confirm it) and is stored as `application/octet-stream`.  Memory: put() streams the
ciphertext (minio cuts objects over 5 MiB into parts), get() decrypts as it reads; a get holds the plaintext
once plus one segment.  `keyring=None` stores plaintext: benchmarks only (the hub always passes a keyring).
Does not: decide what is stored or when (callers do), retry (the caller's
RetryPolicy does; urllib3 retries a refused connection once, nothing more),
log object contents or keys.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error

from hub.envelope import BlobRef
from hub.errors import ConfigError, IntegrityError, NotFound, StoreUnavailable
from storage import sealing
from storage.keyring import Keyring
from storage.keys import keyed_digest, object_key
from storage.s3_client import make_pool, mapped_errors
from storage.sealing import DecryptionError, KeyUnavailable

logger = logging.getLogger(__name__)

SEALED_TYPE = "application/octet-stream"  # the Content-Type of every encrypted object
_REGION = "us-east-1"  # fixed, so minio does not ask the server for the bucket location first


class MinioBlobStore:
    """Content-addressed BlobStore over S3.  Thread-safe: share one instance between worker threads."""

    def __init__(self, client: Minio, *, bucket: str, key_secret: bytes, keyring: Keyring | None) -> None:
        if not key_secret:
            raise ConfigError("object-key secret is empty")
        self._client = client
        self._bucket = bucket
        self._key_secret = key_secret
        self._keyring = keyring
        self._pool: urllib3.PoolManager | None = None

    @classmethod
    def connect(cls, *, endpoint: str, access_key: str, secret_key: str, bucket: str, key_secret: bytes,
                keyring: Keyring | None, secure: bool = False, timeout_s: float = 5.0) -> MinioBlobStore:
        """Build the minio client on our own pool (see make_pool) and return the store."""
        pool = make_pool(timeout_s=timeout_s, secure=secure)
        client = Minio(endpoint=endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                       region=_REGION, http_client=pool)
        store = cls(client, bucket=bucket, key_secret=key_secret, keyring=keyring)
        store._pool = pool
        return store

    @property
    def keyring(self) -> Keyring | None:
        """The KEKs this store seals with (None: a plaintext store, benchmarks only)."""
        return self._keyring

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> Minio:
        """The underlying minio client (benchmarks and fault tests)."""
        return self._client

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe to call from several processes at once)."""
        with mapped_errors("ensure_bucket"):
            if self._client.bucket_exists(bucket_name=self._bucket):
                return
            try:
                self._client.make_bucket(bucket_name=self._bucket)
                logger.info("created bucket %s", self._bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef:
        """Store `data` under its keyed digest, sealed under a fresh data key; storing the same bytes again
        returns the same ref (and rewrites the object under a new data key)."""
        sha256 = hashlib.sha256(data).hexdigest()
        ref = BlobRef(bucket=self._bucket, key=object_key(kind, keyed_digest(self._key_secret, data)),
                      sha256=sha256, size=len(data))
        if self._keyring is None:
            with mapped_errors("put"):
                self._client.put_object(bucket_name=ref.bucket, object_name=ref.key, data=io.BytesIO(data),
                                        length=len(data), content_type=content_type, metadata={"sha256": sha256})
            return ref
        sealed, pieces = sealing.seal(data, self._keyring.current(), ref.key)
        body = cast(BinaryIO, _PieceReader(pieces))
        with mapped_errors("put"):
            # One part at a time: minio's parallel upload reads every part ahead, the whole object in memory.
            self._client.put_object(bucket_name=ref.bucket, object_name=ref.key, data=body, length=sealed.length,
                                    content_type=SEALED_TYPE, metadata=dict(sealed.metadata), num_parallel_uploads=1)
        return ref

    def get(self, ref: BlobRef, *, verify: bool = True) -> bytes:
        """The plaintext; IntegrityError if it no longer matches ref.sha256 (DecryptionError, a subclass, if
        the object does not decrypt under its keys), KeyUnavailable if its KEK is not in the keyring,
        NotFound if absent."""
        with mapped_errors("get"):
            response = self._client.get_object(bucket_name=ref.bucket, object_name=ref.key)
            try:
                wrapped = _meta(response.headers, sealing.META_DEK)  # None: stored before encryption
                data = bytes(response.read()) if wrapped is None else self._open(ref, response, wrapped)
            finally:
                response.close()
                response.release_conn()
        if verify:
            _check(ref, data)
        return data

    def _open(self, ref: BlobRef, response: _Body, wrapped: str) -> bytes:
        headers = response.headers
        if _meta(headers, sealing.META_FORMAT) != sealing.FORMAT:
            raise DecryptionError(f"object in bucket {ref.bucket} is in an unknown sealed format")
        kek = self._kek(_meta(headers, sealing.META_KEK) or "")
        dek = sealing.unwrap(wrapped, kek, ref.key)
        header = _read_exact(response, sealing.HEADER_SIZE)
        segment = sealing.segment_size(header)
        length = int(headers.get("Content-Length") or -1)
        if sealing.plain_length(length, segment) != ref.size:  # before allocating anything of that size
            raise DecryptionError(f"object in bucket {ref.bucket} does not hold {ref.size} bytes")
        out = io.BytesIO()
        for plain in sealing.open_segments(header, _pieces(response, length - len(header), segment + sealing.TAG),
                                           dek, ref.key):
            out.write(plain)
        return out.getvalue()

    def _kek(self, kek_id: str) -> sealing.Kek:
        if self._keyring is None:
            raise ConfigError("a sealed object was read by a store without a keyring")
        kek = self._keyring.get(kek_id)
        if kek is None:
            logger.error("object sealed under KEK %s, which is not in the keyring (%s)", kek_id,
                         self._keyring.source)
            raise KeyUnavailable(f"object sealed under KEK {kek_id}, not in this hub's keyring "
                                 f"({self._keyring.source})")
        return kek

    # -- rotation (storage.rotation): metadata only, the body is never read --------------------------------

    def keys(self, *, start_after: str | None = None) -> Iterator[str]:
        """Every object key in the bucket, in key order, after `start_after` (resume)."""
        with mapped_errors("list"):
            for item in self._client.list_objects(bucket_name=self._bucket, recursive=True,
                                                  start_after=start_after):
                if item.object_name and not item.is_dir:
                    yield item.object_name

    def inspect(self, key: str) -> ObjectState:
        """What the object's metadata says about its sealing (one HEAD)."""
        with mapped_errors("stat"):
            stat = self._client.stat_object(bucket_name=self._bucket, object_name=key)
        headers = stat.metadata or {}
        return ObjectState(key=key, etag=stat.etag or "", size=int(stat.size or 0),
                           kek_id=_meta(headers, sealing.META_KEK), wrapped=_meta(headers, sealing.META_DEK),
                           content_type=stat.content_type or "")

    def rewrap(self, state: ObjectState) -> bool:
        """Re-wrap a sealed object's DEK under the current KEK by a server-side copy onto itself that only
        replaces the metadata, on condition that the object is still the one inspected (its ETag): False
        when it changed meanwhile (a concurrent put: inspect again)."""
        if self._keyring is None or state.wrapped is None or state.kek_id is None:
            raise ConfigError("rewrap needs a keyring and a sealed object")
        current = self._keyring.current()
        wrapped = sealing.rewrap(state.wrapped, self._kek(state.kek_id), current, state.key)
        metadata: dict[str, Any] = {"Content-Type": SEALED_TYPE, **sealing.metadata(current, wrapped)}
        with mapped_errors("rewrap"):
            try:
                self._client.copy_object(
                    bucket_name=self._bucket, object_name=state.key,
                    source=CopySource(bucket_name=self._bucket, object_name=state.key, match_etag=state.etag),
                    metadata=metadata, metadata_directive=REPLACE)
            except S3Error as exc:
                if exc.code == "PreconditionFailed":
                    return False
                raise
        return True

    def seal_plaintext(self, state: ObjectState) -> bool:
        """Encrypt an object stored before encryption, in place.  The plaintext is read once and must hash
        to its own key (keyed digest): False, nothing written, for an object this hub did not store."""
        kind = state.key.split("/", 1)[0]
        with mapped_errors("get"):
            response = self._client.get_object(bucket_name=self._bucket, object_name=state.key)
            try:
                data = bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        try:
            expected = object_key(kind, keyed_digest(self._key_secret, data))
        except ValueError:
            return False
        if expected != state.key:
            return False
        self.put(data, kind=kind, content_type=state.content_type or SEALED_TYPE)
        return True

    def delete(self, ref: BlobRef) -> None:
        """Remove the object (pipelines.record.core.restitution.BlobEraser: the purge; tests).  Idempotent: a missing
        object is not an error (S3 answers 204 anyway; a NoSuchKey from another server is swallowed).
        StoreUnavailable when the store is down, StoreRejected/ConfigError when it refuses."""
        try:
            with mapped_errors("delete"):
                self._client.remove_object(bucket_name=ref.bucket, object_name=ref.key)
        except NotFound:
            return

    def ping(self) -> None:
        """Raise StoreUnavailable unless the S3 server answers now and the bucket exists."""
        with mapped_errors("ping"):
            exists = self._client.bucket_exists(bucket_name=self._bucket)
        if not exists:
            raise StoreUnavailable(f"object store answers but bucket {self._bucket} does not exist")

    def close(self) -> None:
        """Drop pooled connections (only those of a pool this store built in connect())."""
        if self._pool is not None:
            self._pool.clear()


@dataclass(frozen=True, slots=True)
class ObjectState:
    """An object as its metadata describes it: sealed (kek_id and wrapped set) or plaintext (both None)."""

    key: str
    etag: str
    size: int
    kek_id: str | None
    wrapped: str | None
    content_type: str = ""

    @property
    def sealed(self) -> bool:
        return self.wrapped is not None


class _Body(Protocol):
    """What get() reads from (urllib3's HTTPResponse)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def read(self, amt: int | None = None) -> bytes: ...


def _meta(headers: Mapping[str, str], name: str) -> str | None:
    """A user-metadata value (x-amz-meta-<name>), whatever case the server answered in."""
    wanted = f"x-amz-meta-{name}"
    for key, value in headers.items():
        if key.lower() == wanted:
            return str(value)
    return None


def _read_exact(response: _Body, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = response.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    data = b"".join(chunks)
    if len(data) != size:
        raise DecryptionError("sealed object is shorter than its length")
    return data


def _pieces(response: _Body, remaining: int, step: int) -> Iterator[bytes]:
    """The body after its header, cut into sealed segments (the last one may be shorter)."""
    while remaining > 0:
        piece = _read_exact(response, min(step, remaining))
        remaining -= len(piece)
        yield piece


class _PieceReader:
    """A read-only stream over the sealed body's pieces: read(n) answers exactly n bytes until the end (minio
    concatenates what read() returns, so one joined answer per call keeps that linear)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = size if size is not None and size >= 0 else 1 << 62
        parts, have = ([self._rest] if self._rest else []), len(self._rest)
        self._rest = b""
        while have < want:
            piece = next(self._pieces, None)
            if piece is None:
                break
            parts.append(piece)
            have += len(piece)
        if have > want:  # only the last piece is cut
            keep = len(parts[-1]) - (have - want)
            parts[-1], self._rest = parts[-1][:keep], parts[-1][keep:]
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _check(ref: BlobRef, data: bytes) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256 or len(data) != ref.size:
        logger.error("integrity check failed in bucket %s (size %d, expected %d)",
                     ref.bucket, len(data), ref.size)
        raise IntegrityError(f"stored object in bucket {ref.bucket} does not match its SHA-256")
