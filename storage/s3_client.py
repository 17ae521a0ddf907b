"""The S3 client's edges: minio/urllib3 errors become hub errors, in one place, and the urllib3 pool.

Owns: the table from S3 error codes and third-party exceptions to hub errors (`mapped_errors`), and the
pool's short timeouts (one quick retry on a refused connect, nothing more).
Does not: retry (the caller's RetryPolicy does) or read and write objects (storage.objects).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import certifi
import urllib3
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from hub.errors import ConfigError, HubError, NotFound, PermanentError, StoreUnavailable

POOL_SIZE = 32  # connections kept per host: enough for ~32 worker threads sharing one store


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
def mapped_errors(operation: str) -> Iterator[None]:
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
