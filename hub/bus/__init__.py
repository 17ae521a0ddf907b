"""The bus: kombu connections to RabbitMQ (amqp://) or to the embedded SQLite bus (sqlite:///).

Owns: turning a broker URL into a Connection configured the way the hub needs
(publisher confirms and short timeouts on amqp; the lease transport on sqlite).
Does not: declare queues, publish or consume (kombu_bus.py, worker.py).

URL forms:
* `sqlite:///abs/path/bus.sqlite3`: the embedded bus (hub.bus.sqlite_transport); the
  path must be absolute (`sqlite:////abs/path` is accepted too), so that every process
  finds the same file whatever its working directory.
* anything else (`amqp://user:pass@host:5672/vhost`, `pyamqp://...`) goes to kombu as is.
"""

# mypy: disable-error-code="no-untyped-call"
# (kombu ships py.typed but most of its functions are unannotated)

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from kombu.connection import Connection

from hub.bus.sqlite_transport import SqliteLeaseTransport
from hub.errors import ConfigError

SQLITE_SCHEME = "sqlite"
AMQP_CONNECT_TIMEOUT_S = 2.0


def sqlite_path(url: str) -> str:
    """`sqlite:///abs/path` -> `/abs/path`; ConfigError unless the path is absolute."""
    parts = urlsplit(url)
    if parts.scheme != SQLITE_SCHEME or parts.netloc or parts.query:
        raise ConfigError(f"not a sqlite bus URL (want sqlite:///abs/path): {url!r}")
    path = "/" + unquote(parts.path).lstrip("/")
    if path == "/" or not os.path.isabs(path):
        raise ConfigError(f"sqlite bus URL needs an absolute file path: {url!r}")
    return path


def open_connection(url: str, *, transport_options: Mapping[str, Any] | None = None) -> Connection:
    """A kombu Connection for `url` (not yet connected: kombu connects lazily)."""
    options = dict(transport_options or {})
    if urlsplit(url).scheme == SQLITE_SCHEME:
        return Connection(hostname=sqlite_path(url), transport=SqliteLeaseTransport,
                                transport_options=options)
    options.setdefault("confirm_publish", True)
    return Connection(url, connect_timeout=AMQP_CONNECT_TIMEOUT_S, transport_options=options)


__all__ = ["open_connection", "sqlite_path"]
