"""MinioBlobStore: the BlobStore port over any S3 server (SeaweedFS in our stack), through the minio client.

Owns: object keys from storage.keys (keyed hash of the content, never an INS
or a name), the SHA-256 check on read, the urllib3 pool and its short timeouts,
and the translation of minio/urllib3 errors into hub errors, in one place
(`_mapped_errors`).
Does not: decide what is stored or when (callers do), retry (the caller's
RetryPolicy does; urllib3 retries a refused connection once, nothing more),
log object contents or keys.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from hub.envelope import BlobRef
from hub.errors import ConfigError, HubError, IntegrityError, NotFound, PermanentError, StoreUnavailable
from storage.keys import keyed_digest, object_key

logger = logging.getLogger(__name__)

POOL_SIZE = 32  # connections kept per host: enough for ~32 worker threads sharing one store
_REGION = "us-east-1"  # fixed, so minio does not ask the server for the bucket location first


class StoreRejected(PermanentError):
    """The object store refused the request for a reason retrying cannot fix (4xx other than below)."""


# S3 error code -> hub error.  Codes not listed fall back on the HTTP status (5xx transient, else permanent).
_S3_CODES: Mapping[str, type[HubError]] = {
    "NoSuchKey": NotFound,
    "NoSuchVersion": NotFound,
    "SlowDown": StoreUnavailable,
    "InternalError": StoreUnavailable,
    "ServiceUnavailable": StoreUnavailable,
    "RequestTimeout": StoreUnavailable,
    "OperationAborted": StoreUnavailable,
    "AccessDenied": ConfigError,
    "AllAccessDisabled": ConfigError,
    "InvalidAccessKeyId": ConfigError,
    "SignatureDoesNotMatch": ConfigError,
    "RequestTimeTooSkewed": ConfigError,
    "NoSuchBucket": ConfigError,
}


def _from_s3_error(exc: Exception, operation: str) -> HubError:
    assert isinstance(exc, S3Error)
    status = int(getattr(exc.response, "status", 0) or 0)
    kind = _S3_CODES.get(exc.code or "") or (StoreUnavailable if status >= 500 else StoreRejected)
    return kind(f"object store {operation}: {exc.code} (HTTP {status}, bucket {exc.bucket_name})")


def _from_server_error(exc: Exception, operation: str) -> HubError:
    status = int(getattr(exc, "status_code", 0) or getattr(exc, "_code", 0) or 0)
    kind = StoreRejected if 0 < status < 500 else StoreUnavailable
    return kind(f"object store {operation}: HTTP {status} without a usable S3 error body")


def _from_transport_error(exc: Exception, operation: str) -> HubError:
    return StoreUnavailable(f"object store {operation}: {type(exc).__name__}: no answer from the S3 server")


# Third-party exception type -> translator.  First match wins; HubError passes through untouched.
_ERROR_TABLE: tuple[tuple[type[Exception], Callable[[Exception, str], HubError]], ...] = (
    (S3Error, _from_s3_error),
    (ServerError, _from_server_error),
    (InvalidResponseError, _from_server_error),
    (urllib3.exceptions.HTTPError, _from_transport_error),  # MaxRetryError, timeouts, ProtocolError...
    (OSError, _from_transport_error),  # refused, reset, socket timeouts
)


@contextmanager
def _mapped_errors(operation: str) -> Iterator[None]:
    """The one place where minio/urllib3 errors become hub errors."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        for exc_type, translate in _ERROR_TABLE:
            if isinstance(exc, exc_type):
                raise translate(exc, operation) from exc
        raise


def make_pool(*, timeout_s: float = 5.0, secure: bool = False,
              maxsize: int = POOL_SIZE) -> urllib3.PoolManager:
    """urllib3 pool for the minio client: short timeouts, one quick retry on a refused connect, no more."""
    retries = Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0, backoff_factor=0.1,
                    raise_on_status=False)
    timeout = Timeout(connect=min(2.0, timeout_s), read=timeout_s)
    if not secure:
        return urllib3.PoolManager(num_pools=4, maxsize=maxsize, timeout=timeout, retries=retries)
    ca_certs = os.environ.get("SSL_CERT_FILE") or certifi.where()
    return urllib3.PoolManager(num_pools=4, maxsize=maxsize, timeout=timeout, retries=retries,
                               cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)


class MinioBlobStore:
    """Content-addressed BlobStore over S3.  Thread-safe: share one instance between worker threads."""

    def __init__(self, client: Minio, *, bucket: str, key_secret: bytes) -> None:
        if not key_secret:
            raise ConfigError("object-key secret is empty")
        self._client = client
        self._bucket = bucket
        self._key_secret = key_secret
        self._pool: urllib3.PoolManager | None = None

    @classmethod
    def connect(cls, *, endpoint: str, access_key: str, secret_key: str, bucket: str, key_secret: bytes,
                secure: bool = False, timeout_s: float = 5.0) -> MinioBlobStore:
        """Build the minio client on our own pool (see make_pool) and return the store."""
        pool = make_pool(timeout_s=timeout_s, secure=secure)
        client = Minio(endpoint=endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                       region=_REGION, http_client=pool)
        store = cls(client, bucket=bucket, key_secret=key_secret)
        store._pool = pool
        return store

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> Minio:
        """The underlying minio client (benchmarks and fault tests)."""
        return self._client

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe to call from several processes at once)."""
        with _mapped_errors("ensure_bucket"):
            if self._client.bucket_exists(bucket_name=self._bucket):
                return
            try:
                self._client.make_bucket(bucket_name=self._bucket)
                logger.info("created bucket %s", self._bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef:
        """Store `data` under its keyed digest; storing the same bytes again returns the same ref."""
        sha256 = hashlib.sha256(data).hexdigest()
        ref = BlobRef(bucket=self._bucket, key=object_key(kind, keyed_digest(self._key_secret, data)),
                      sha256=sha256, size=len(data))
        with _mapped_errors("put"):
            self._client.put_object(bucket_name=ref.bucket, object_name=ref.key, data=io.BytesIO(data),
                                    length=len(data), content_type=content_type, metadata={"sha256": sha256})
        return ref

    def get(self, ref: BlobRef, *, verify: bool = True) -> bytes:
        """The stored bytes; IntegrityError if they no longer match ref.sha256, NotFound if absent."""
        with _mapped_errors("get"):
            response = self._client.get_object(bucket_name=ref.bucket, object_name=ref.key)
            try:
                data = bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        if verify:
            _check(ref, data)
        return data

    def delete(self, ref: BlobRef) -> None:
        """Remove the object (hub.restitution.BlobEraser: the purge; tests).  Idempotent: a missing
        object is not an error (S3 answers 204 anyway; a NoSuchKey from another server is swallowed).
        StoreUnavailable when the store is down, StoreRejected/ConfigError when it refuses."""
        try:
            with _mapped_errors("delete"):
                self._client.remove_object(bucket_name=ref.bucket, object_name=ref.key)
        except NotFound:
            return

    def ping(self) -> None:
        """Raise StoreUnavailable unless the S3 server answers now and the bucket exists."""
        with _mapped_errors("ping"):
            exists = self._client.bucket_exists(bucket_name=self._bucket)
        if not exists:
            raise StoreUnavailable(f"object store answers but bucket {self._bucket} does not exist")

    def close(self) -> None:
        """Drop pooled connections (only those of a pool this store built in connect())."""
        if self._pool is not None:
            self._pool.clear()


def _check(ref: BlobRef, data: bytes) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256 or len(data) != ref.size:
        logger.error("integrity check failed in bucket %s (size %d, expected %d)",
                     ref.bucket, len(data), ref.size)
        raise IntegrityError(f"stored object in bucket {ref.bucket} does not match its SHA-256")
