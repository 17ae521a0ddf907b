"""Run the SMTP gateway: TLS material, the listening socket, and a thread with its own event loop.

Owns: listen() (a listening socket several gateway processes can share), SmtpGateway (start() binds
(or takes a listening socket) and serves from a background thread running its own asyncio loop;
stop() stops listening, lets messages being spooled finish for up to `drain_s`, then closes
the sessions and waits for admission checks still running), server_tls_context() (PEM cert + key files ->
a server SSLContext, TLS 1.2 or later), make_dev_certificate() (a self-signed certificate for the
embedded default, made once and then reused), and the default level of aiosmtpd's "mail.log" logger
(WARNING: at INFO it logs every command line, addresses included).
Does not: speak SMTP or decide anything (smtp.py and the MailAdmission port), or read settings (the
composition root passes plain values).

Why a thread and not `async def serve()`: `meshub run` is a synchronous program (worker threads, then
uvicorn in the main thread), so its composition root calls start() before serving HTTP and stop()
after, like the other background services.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import secrets
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.inbound.smtp import DEFAULT_MAX_HOPS, DEFAULT_MAX_RECIPIENTS, GatewayHandler, GatewaySMTP, smtp_login
from hub.auth import Authenticator
from hub.errors import ConfigError
from pipelines.mail.ports import MailAdmission, MailSpool

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # MES: 25 MB (DOMAIN.md §4.5)
AUTH_ATTEMPTS_PER_CONNECTION = 5
GREETING = "ESMTP MES Hub"


def quiet_mail_log() -> None:
    """aiosmtpd's "mail.log" logs each command line at INFO: keep it at WARNING unless someone set it."""
    mail_log = logging.getLogger("mail.log")
    if mail_log.level == logging.NOTSET:
        mail_log.setLevel(logging.WARNING)


def server_tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server-side SSLContext (TLS 1.2+, no client certificate asked) from PEM files; ConfigError if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"SMTP TLS certificate {cert_path} / key {key_path} unusable: {exc}") from exc
    return context


class SmtpGateway:
    """The SMTP gateway on `host:port` (port 0: any free port, read `port` after start()).

    TLS: pass `cert_path` and `key_path`, or a ready `tls_context`, to offer STARTTLS (and AUTH, which
    is only offered over TLS); with neither, the gateway speaks plain SMTP only.  `require_tls` refuses
    everything but EHLO/NOOP/QUIT/STARTTLS before STARTTLS (530 5.7.0).
    """

    def __init__(self, *, spool: MailSpool, admission: MailAdmission, authenticator: Authenticator,
                 host: str = "127.0.0.1", port: int = 2525, hostname: str | None = None,
                 cert_path: Path | None = None, key_path: Path | None = None,
                 tls_context: ssl.SSLContext | None = None, require_tls: bool = False,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_recipients: int = DEFAULT_MAX_RECIPIENTS,
                 max_hops: int = DEFAULT_MAX_HOPS, timeout_s: float = 300.0, smtputf8: bool = True,
                 drain_s: float = 10.0, sock: socket.socket | None = None) -> None:
        if (cert_path is None) != (key_path is None):
            raise ConfigError("SMTP TLS needs both a certificate and a key file")
        if cert_path is not None and key_path is not None:
            tls_context = server_tls_context(cert_path, key_path)
        if require_tls and tls_context is None:
            raise ConfigError("SMTP require_tls needs a TLS certificate and key")
        quiet_mail_log()
        self.handler = GatewayHandler(spool=spool, admission=admission, max_hops=max_hops)
        self.host, self.port = host, port
        self._smtp_options: dict[str, Any] = {
            "hostname": hostname or socket.getfqdn(), "ident": GREETING, "tls_context": tls_context,
            "require_starttls": require_tls, "auth_require_tls": True, "authenticator": smtp_login(authenticator),
            "data_size_limit": max_message_bytes, "max_recipients": max_recipients, "timeout": timeout_s,
            "enable_SMTPUTF8": smtputf8, "command_call_limit": {"AUTH": AUTH_ATTEMPTS_PER_CONNECTION, "*": 1_000_000},
        }
        self._drain_s = drain_s
        self._sock = sock
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    def start(self, *, ready_timeout_s: float = 10.0) -> None:
        """Bind and serve from a background thread; returns once listening (OSError if it cannot bind)."""
        if self._thread is not None:
            raise RuntimeError("SMTP gateway already started")
        ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(ready,), name="smtp-gateway", daemon=True)
        self._thread.start()
        if not ready.wait(ready_timeout_s):
            raise TimeoutError(f"SMTP gateway did not start within {ready_timeout_s} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        log.info("SMTP gateway listening on %s:%d (STARTTLS %s)", self.host, self.port,
                 "on" if self._smtp_options["tls_context"] else "off")

    def stop(self) -> None:
        """Stop listening, let messages being queued finish (up to drain_s), close sessions, join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._loop = None
        log.info("SMTP gateway on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> SmtpGateway:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> GatewaySMTP:
        return GatewaySMTP(self.handler, loop=loop, **self._smtp_options)

    def _run(self, ready: threading.Event) -> None:
        loop = _new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            if self._sock is not None:  # a listening socket shared with other gateway processes
                listening = loop.create_server(lambda: self._protocol(loop), sock=self._sock)
            else:
                listening = loop.create_server(lambda: self._protocol(loop), self.host, self.port)
            server = loop.run_until_complete(listening)
        except BaseException as exc:  # reported to start(), which re-raises it in the caller's thread
            self._error = exc
            loop.close()
            ready.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._loop = loop
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown(server))
            loop.run_until_complete(loop.shutdown_default_executor())  # admission checks still running end here
            loop.close()

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        self.handler.closing = True
        deadline = asyncio.get_running_loop().time() + self._drain_s
        while self.handler.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        await server.wait_closed()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: any free port), to share among gateway processes."""
    return socket.create_server((host, port), backlog=1024)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (about a third more SMTP sessions per second), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- development certificate ----------------------------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9.-]")


def make_dev_certificate(directory: Path, hostname: str, *, days: int = 825) -> tuple[Path, Path]:
    """A self-signed certificate for `hostname` (also valid for localhost, 127.0.0.1 and ::1) in `directory`:
    (cert_path, key_path).  Made on first call, reused afterwards; both files are mode 0600 (private data dir)."""
    stem = "smtp-" + _UNSAFE_FILENAME.sub("_", hostname)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_atomically(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), mode=0o600)
    certificate = _self_signed(key, hostname, days=days)
    _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o600)
    log.warning("made a self-signed SMTP certificate for %s in %s (development only)", hostname, directory)
    return cert_path, key_path


def _self_signed(key: ec.EllipticCurvePrivateKey, hostname: str, *, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_alt_names(hostname)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _alt_names(hostname: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        own: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        own = x509.DNSName(hostname)
    return names if own in names else [own, *names]


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # whatever the umask
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
