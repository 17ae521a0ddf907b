"""Composition of the edges that feed intake: the SMTP gateway and its spool drains, IMAP, the file drop,
the insurer's drop folder.

Owns: starting each edge from settings on a Runtime (threads, child processes), returning what the
caller must stop in order (gateways first, then drains).
Does not: accept anything itself (hub.intake does) or decide anything.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from config.settings import Settings
from connectors.inbound.file_drop import DropFolders, FileDrop
from connectors.inbound.imap import ImapIntake, mail_acceptor
from connectors.inbound.insurer_drop import InsurerDrop
from connectors.inbound.smtp_server import listen, make_dev_certificate
from hub.credentials import Credential, Role
from hub.errors import ConfigError
from meshub.compose_core import Core
from meshub.gateway_process import GatewayPlan, GatewayProcess
from meshub.runtime import Runtime, lower_priority
from storage.spool import SpoolDrainer

log = logging.getLogger(__name__)


def start_gateway(core: Core, runtime: Runtime, *, log_level: int = logging.INFO
                  ) -> tuple[list[GatewayProcess], list[SpoolDrainer]]:
    """The MSSanté SMTP gateway (unless smtp_port is 0), with a development certificate by default:
    `[smtp] processes` processes accepting on one socket, each spooling its mail, drained into
    intake by threads of this one."""
    settings, mail = core.settings, core.settings.mail
    if not mail.smtp_port:
        return [], []
    cert, key = mail.tls_cert, mail.tls_key
    if cert is None or key is None:
        cert, key = make_dev_certificate(settings.data_dir / "tls", mail.hostname)
    spools = settings.data_dir / "spool" / "smtp"
    dirs = [spools / str(n) for n in range(mail.smtp_processes)]
    for spool_dir in dirs:
        spool_dir.mkdir(parents=True, exist_ok=True)
    # every spool is drained, those of processes a smaller [smtp] processes no longer starts too
    drainers = [start_drain(core, runtime, spool_dir, n)
                for n, spool_dir in enumerate(sorted(p for p in spools.iterdir() if p.is_dir()))]
    try:
        listener = listen(mail.smtp_host, mail.smtp_port)  # bound here: a port in use fails here
    except OSError as exc:
        raise ConfigError(f"the SMTP port {mail.smtp_host}:{mail.smtp_port} cannot be listened on "
                          f"({exc.strerror or type(exc).__name__}): choose another with --smtp-port N "
                          f"(or [smtp] port; 0 turns the gateway off)") from None
    gateways: list[GatewayProcess] = []
    try:
        for spool_dir in dirs:  # each process accepts on it, and spools on its own
            gateway = GatewayProcess(GatewayPlan(settings=settings, spool_dir=spool_dir, cert=cert, key=key,
                                                 log_level=log_level), listener)
            gateway.start()
            gateways.append(gateway)
    finally:
        port = int(listener.getsockname()[1])
        listener.close()  # the children hold their own copies
    log.info("MSSanté SMTP gateway on %s:%d (%d process(es))", mail.smtp_host, port, mail.smtp_processes)
    return gateways, drainers


def start_drain(core: Core, runtime: Runtime, spool_dir: Path, n: int) -> SpoolDrainer:
    """Hand the SMTP spool's mail to intake (S3, index, bus), in a thread of this process."""
    nice = runtime.nice
    drainer = SpoolDrainer(spool_dir, core.intake.accept_spooled,
                           thread_init=(lambda: lower_priority(nice)) if nice else None)
    runtime.exit_stack.callback(drainer.close)
    runtime.spawn(f"spool-drain-{n}", drainer.run, background=True)
    return drainer


def start_imap(core: Core, runtime: Runtime) -> None:
    """One IMAP intake per configured mailbox ([[imap]]): new messages come in as mail."""
    for n, source in enumerate(core.settings.mail.imap):
        intake = ImapIntake(source.host, source.port, source.user, source.password, mailbox=source.mailbox,
                            poll_s=source.poll_s, ssl_context=ssl.create_default_context() if source.tls else None,
                            accept=mail_acceptor(core.intake, recipient=source.recipient, producer=source.producer))
        runtime.spawn(f"imap-{n}", intake.run_blocking)


def start_filedrop(core: Core, runtime: Runtime) -> None:
    settings = core.settings
    assert settings.filedrop_dir is not None
    writer = drop_writer(settings)
    if writer.role is not Role.PRODUCER:
        log.error("file drop: [filedrop] producer names a %s credential; only a producer feeds a drop, "
                  "every file will be refused (write.role)", writer.role)
    drop = FileDrop(DropFolders(settings.filedrop_dir), intake=core.intake, index=core.index,
                    writer=writer, gate=core.write_gate(), max_bytes=settings.max_body_bytes)
    runtime.spawn("filedrop", drop.run)


def start_insurer_drop(core: Core, runtime: Runtime) -> None:
    """The insurer's drop folder, if configured ([records] insurer_drop_dir)."""
    records = core.settings.records
    if records.insurer_drop_dir:
        batches = core.insurer()
        drop = InsurerDrop(Path(records.insurer_drop_dir), accept_batch=batches.accept_batch,
                           accept_document=batches.accept_document, max_bytes=core.settings.max_body_bytes)
        runtime.spawn("insurer-drop", drop.run)


def drop_writer(settings: Settings) -> Credential:
    """Who writes through the file drop: the credential named by `[filedrop] producer`, or, when no
    credential has that name, a producer of that name (the drop folder's owner, an establishment's system)."""
    name = settings.filedrop_producer
    named = [c for c in settings.credentials if c.name == name]
    return named[0] if named else Credential(name=name, role=Role.PRODUCER, token_sha256="")
