"""Run a whole hub in-process on real services for end-to-end tests: HTTP on a loopback port,
worker threads, real S3 (SeaweedFS), real bus and index.  Also a tiny TCP proxy that a test can
cut, to play 'the broker went away' without stopping the shared RabbitMQ."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from config.settings import Settings, StoreSettings
from connectors.inbound.http.app import create_app
from hub.auth import token_sha256
from hub.credentials import Credential
from meshub.compose import Hub, build_hub
from storage.keyring import ensure_key_file
from tests.services import free_port

PRODUCER_TOKEN = "producer-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
CREDENTIALS = (Credential("lab-1", "producer", token_sha256(PRODUCER_TOKEN)),
               Credential("admin", "admin", token_sha256(ADMIN_TOKEN)))


def hub_settings(tmp: Path, *, bus_url: str, index_url: str, s3_endpoint: str, access_key: str,
                 secret_key: str, bucket: str, prefix: str, workers: int = 2) -> Settings:
    kek_file = tmp / "keys" / "kek.json"  # objects are sealed at rest: an external S3 store needs a key file
    ensure_key_file(kek_file)
    return Settings(data_dir=tmp, http_port=free_port(), bus_url=bus_url, bus_prefix=prefix, index_url=index_url,
                    store=StoreSettings(endpoint=s3_endpoint, access_key=access_key, secret_key=secret_key,
                                        bucket=bucket, kek_file=str(kek_file)),
                    workers=workers, filedrop_dir=tmp / "drop", credentials=CREDENTIALS,
                    key_secret=b"test-key-secret", max_body_bytes=4 * 1024 * 1024)


@dataclass
class RunningHub:
    hub: Hub
    url: str

    def client(self, token: str = PRODUCER_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(ADMIN_TOKEN)


@contextmanager
def running_hub(settings: Settings, *, workers: bool = True, filedrop: bool = False,
                gateway: bool = False) -> Iterator[RunningHub]:
    hub = build_hub(settings, workers_in_process=workers)
    server = uvicorn.Server(uvicorn.Config(create_app(hub.api_context()), host="127.0.0.1",
                                           port=settings.http_port, access_log=False, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    try:
        if workers:
            hub.start_workers(settings.workers)
        if filedrop:
            hub.start_filedrop()
        if gateway:
            hub.start_gateway()
            hub.start_imap()
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield RunningHub(hub, f"http://127.0.0.1:{settings.http_port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        hub.close()


class CuttableProxy:
    """A loopback TCP proxy; cut() drops every connection and refuses new ones until restore()."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                except OSError:
                    pass
            self._conns.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.cut()
        self._listener.close()
