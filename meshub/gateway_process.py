"""The SMTP gateway in a process of its own: listener, admission checks and the spool writer.

Owns: GatewayProcess (start() spawns the child and returns once it listens, with the port it bound;
stop() asks it to finish the messages being spooled and waits), and the child's own composition
root (_serve: index for the admission checks, rules, credentials, SpoolWriter, SmtpGateway).

Why a process: the gateway's work per message is small (the SMTP dialogue, two index look-ups, one
group-committed append) but constant, while the drain and the pipelines behind it are heavy Python
work.  In one process they share one interpreter lock and the sessions wait on it; in two, the
operating system schedules them on the cores (Postfix splits smtpd from its queue manager the same
way).  The two share nothing but the spool directory (storage.spool) and the index database.
The child stops when asked (SIGTERM or stop()), and by itself when its parent dies (the pipe closes).
Does not: drain the spool (the parent does) or decide anything.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import socket
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from config.settings import Settings
from connectors.inbound.smtp_server import SmtpGateway
from hub.auth import Authenticator
from hub.errors import ConfigError
from pipelines.mail.admission import Admission
from pipelines.mail.core.mime import MailLimits
from pipelines.mail.core.mss import MssRules
from storage.spool import SpoolWriter
from storage.sql.index import SqlIndex

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    """What the child needs, all picklable: settings, the TLS files, its spool and the log level."""

    settings: Settings
    spool_dir: Path
    cert: Path
    key: Path
    log_level: int


class GatewayProcess:
    """A running gateway child process; `port` is the port it listens on."""

    def __init__(self, plan: GatewayPlan, listener: socket.socket) -> None:
        self._plan = plan
        self._listener = listener  # bound by the parent: several children accept on it
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None
        self.port = int(listener.getsockname()[1])

    def start(self) -> None:
        """Spawn the child; return once it listens (OSError or ConfigError as the child met them)."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(self._plan, self._listener, theirs),
                                        name="meshub-smtp", daemon=True)
        self._process.start()
        theirs.close()
        self._pipe = ours
        if not ours.poll(START_TIMEOUT_S):
            self.stop()
            raise TimeoutError(f"SMTP gateway process did not start within {START_TIMEOUT_S} s")
        try:
            kind, value = ours.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("SMTP gateway process died while starting (see its log)") from None
        if kind == "error":
            self.stop()
            raise OSError(value) if value.startswith("OSError") else ConfigError(value)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the child to stop (it answers what it is spooling first) and wait for it."""
        if self._pipe is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._pipe.send(("stop", ""))
        if self._process is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                log.warning("SMTP gateway process did not stop in %.0f s: terminated", timeout_s)
                self._process.kill()
                self._process.join()
            self._process = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


def _serve(plan: GatewayPlan, listener: socket.socket, pipe: Connection) -> None:
    """The child: wire the gateway, say which port it bound, serve until told to stop or orphaned."""
    logging.basicConfig(level=plan.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings, mail = plan.settings, plan.settings.mail
    index = SqlIndex.connect(settings.index_url)
    spool = SpoolWriter(plan.spool_dir, max_backlog_bytes=mail.spool_max_backlog_bytes)
    try:
        spool.start()
        rules = MssRules.from_mapping(mail.rules)
        gateway = SmtpGateway(spool=spool, admission=Admission(rules, index, settings.credentials,
                                                                  mail_limits=MailLimits(**mail.limits.mime)),
                              authenticator=Authenticator(settings.credentials), host=mail.smtp_host,
                              sock=listener, hostname=mail.hostname, cert_path=plan.cert, key_path=plan.key,
                              require_tls=mail.require_tls, max_message_bytes=mail.max_message_bytes,
                              max_hops=rules.max_hops)
        gateway.start()
    except (OSError, ConfigError) as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        spool.close()
        index.dispose()
        return
    pipe.send(("ready", gateway.port))
    threading.Thread(target=_watch_parent, args=(pipe, stop), name="parent-watch", daemon=True).start()
    stop.wait()
    gateway.stop()
    spool.close()
    index.dispose()


def _watch_parent(pipe: Connection, stop: threading.Event) -> None:
    """Set `stop` when the parent says so or goes away (the pipe closes when it dies, even by SIGKILL)."""
    with contextlib.suppress(EOFError, OSError):
        pipe.recv()
    stop.set()
