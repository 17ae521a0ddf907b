"""What every feature router of the HTTP door shares besides auth and errors.

Owns: `Port`, how a router asks for one of its feature's ports (`Depends(PORT.get)`) and how the app
factory provides it (on app.state, so no router imports the factory nor another router); reading a
request body within a size limit (413); `BodyLimit`, the bound on every request body whatever the route
(413 `body-too-large`: a JSON body over JSON_MAX_BYTES, any other over the door's largest limit), so no
route reads an unbounded body into memory; reading stored bytes back (SHA-256 checked: 502 when they fail
their check, the caller's 404 when they are gone; a store down raises TransientError, answered 503).
Does not: know which feature provides what (connectors.inbound.http.app does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Generic, Protocol, TypeVar, cast

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.inbound.http.errors import api_error
from hub.envelope import BlobRef
from hub.errors import IntegrityError, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")
#: the largest JSON body (the longest is a reply: 100,000 characters, escaped as JSON)
JSON_MAX_BYTES = 2 * 1024 * 1024


class Port(Generic[T]):
    """One port a router needs: `Annotated[X, Depends(PORT.get)]` in a route; `PORT.provide(app, x)`
    in the app factory (a route of a feature that was not provided is not included either)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def provide(self, app: FastAPI, value: T) -> None:
        ports: dict[str, object] = app.state.ports
        ports[self.name] = value

    async def get(self, request: Request) -> T:
        return cast(T, request.app.state.ports[self.name])


class StoredBytes(Protocol):
    """Reading a stored object back (hub.ports.BlobStore.get)."""

    def get(self, ref: BlobRef) -> bytes: ...


BLOBS: Port[StoredBytes] = Port("stored bytes")
Blobs = Annotated[StoredBytes, Depends(BLOBS.get)]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """Pure ASGI middleware: a request body over its bound is never read whole (413 `body-too-large`):
    a declared Content-Length over it is answered at once, a streamed one when it crosses the bound."""

    def __init__(self, app: ASGIApp, *, limit: int, json_limit: int = JSON_MAX_BYTES) -> None:
        self._app = app
        self._limit = limit
        self._json_limit = min(json_limit, limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        limit = self._json_limit if media.endswith(b"json") else self._limit
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            too_large = _too_large(limit)
            await JSONResponse({"error": too_large.detail}, status_code=413)(scope, receive, send)
            return
        size = 0

        async def bounded() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if size > limit:
                raise _too_large(limit)  # answered by the door's error handler
            return message

        await self._app(scope, bounded, send)


def _too_large(limit: int) -> HTTPException:
    return api_error(413, "body-too-large", f"The body exceeds the limit of {limit} bytes.",
                     f"Le corps de la requête dépasse la limite de {limit} octets.")


async def fetch_bytes(blobs: StoredBytes, ref: BlobRef, missing: Callable[[], HTTPException]) -> bytes:
    """Stored bytes (SHA-256 checked), `missing()` when they are gone, 502 when what the store gave back
    fails its check (tampered, or sealed under another key): never those bytes."""
    try:
        return await run_in_threadpool(blobs.get, ref)
    except NotFound as exc:
        raise missing() from exc
    except IntegrityError as exc:
        log.error("stored object failed its integrity check (%s)", type(exc).__name__)
        raise api_error(502, "stored-bytes-corrupt", "The stored copy failed its integrity check (SHA-256 or "
                        "decryption); nothing was sent. The operator has been told by the hub's log.",
                        "La copie stockée n'a pas passé son contrôle d'intégrité ; rien n'a été envoyé. "
                        "L'incident est consigné dans le journal du hub.") from exc
