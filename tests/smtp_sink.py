"""A scripted SMTP server on loopback (aiosmtpd) that plays a next hop: the tests' peer for outbound mail.

It answers from a script per recipient (RCPT) and per attempt (DATA), advertises DSN or not, and
records what it was told (MAIL/RCPT arguments, RFC 3461 parameters, the accepted messages).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipelines.mail.core.relay_schedule import NextHop
from tests.services import free_port

DSN_PARAMS = ("RET", "ENVID", "NOTIFY", "ORCPT")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool


@dataclass
class Sink:
    """Handler for aiosmtpd: scripted answers, and a record of every command and accepted message."""

    dsn: bool = True
    rcpt_script: dict[str, list[str]] = field(default_factory=dict)  # address -> replies, one per attempt
    data_script: list[str] = field(default_factory=list)  # one reply per DATA, then 250
    mail_args: list[str] = field(default_factory=list)  # raw MAIL FROM arguments, case kept
    rcpt_args: list[str] = field(default_factory=list)
    dsn_seen: list[dict[str, str]] = field(default_factory=list)  # RFC 3461 params per MAIL/RCPT, as sent
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # a 5-argument EHLO hook must do this itself
        return [*responses[:-1], "250-DSN", responses[-1]] if self.dsn else responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        script = self.rcpt_script.get(address, [])
        reply = script.pop(0) if script else "250 2.1.5 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)  # a RCPT hook must do this itself
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.data_script.pop(0) if self.data_script else "250 2.0.0 queued as 42"
        if reply.startswith("2"):
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                          bytes(envelope.original_content or b""), session.ssl is not None))
        return reply

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"hub", b"pw")
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def take_dsn_params(self, arg: str) -> str:
        """Record and remove the RFC 3461 parameters, which aiosmtpd 1.4.6 would refuse with 555."""
        words = arg.split(" ")
        seen = {w.partition("=")[0].upper(): w.partition("=")[2] for w in words[1:]
                if w.partition("=")[0].upper() in DSN_PARAMS}
        self.dsn_seen.append(seen)
        return " ".join([words[0], *(w for w in words[1:] if w.partition("=")[0].upper() not in DSN_PARAMS)])


class DsnSMTP(SMTP):
    """aiosmtpd's server, plus: RET/ENVID/NOTIFY/ORCPT accepted (and recorded) when the sink advertises DSN."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        sink: Sink = self.event_handler
        sink.mail_args.append(arg or "")
        await super().smtp_MAIL(sink.take_dsn_params(arg) if arg and sink.dsn else arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        sink: Sink = self.event_handler
        sink.rcpt_args.append(arg or "")
        await super().smtp_RCPT(sink.take_dsn_params(arg) if arg and sink.dsn else arg)


class SinkController(Controller):
    def factory(self) -> SMTP:
        return DsnSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class Running:
    sink: Sink
    port: int

    def hop(self, **kwargs: Any) -> NextHop:
        return NextHop("127.0.0.1", self.port, **{"starttls": "off", **kwargs})


def start_sink(sink: Sink, **smtp_kwargs: Any) -> Iterator[Running]:
    """Run `sink` on a free loopback port until the generator is closed (wrap with contextmanager or a fixture)."""
    port = free_port()
    controller = SinkController(sink, hostname="127.0.0.1", port=port, server_hostname="sink.test", **smtp_kwargs)
    controller.start()
    try:
        yield Running(sink, port)
    finally:
        controller.stop()
