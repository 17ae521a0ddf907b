"""The SMTP gateway's protocol and handler, on aiosmtpd 1.4.6: the MX and submission edge of the relay.

Owns: the ESMTP dialogue beyond aiosmtpd's defaults: RFC 3461 DSN parameters (RET and ENVID on MAIL,
NOTIFY and ORCPT on RCPT) validated, xtext-decoded and kept with their case; SIZE, BODY and SMTPUTF8;
the null reverse-path `<>`; a recipient limit; RFC 3463 enhanced status codes on aiosmtpd's fixed
replies; AUTH PLAIN/LOGIN (over TLS only) checked by hub.auth.Authenticator.  Parameter parsing,
xtext and trace headers are pure and live in smtp_params.py.  Per message: the hop
count (mail loops), a `Received:` trace header, hub.mailqueue.pack() and the spool (pipelines.mail.ports.MailSpool).

Rule 1: the 250 after DATA is sent only once the message, its SMTP envelope and the submission id
named in the 250 are on disk in the spool (fdatasync'ed, group-committed with the other sessions'
messages), as an MTA's queue file is; the spool's drain then hands it to intake (S3, index, bus).
Anything else is a 4xx (451 when the spool cannot write, 452 4.3.1 when its backlog is full), so
the sending MTA keeps the message and retries: nothing is ever accepted and then lost.
Rule 2: no local part, subject or body is logged (a patient's local part is an INS): addresses are
logged as `*@domain`; logs carry submission and trace ids, peer IPs, sizes and reply codes.

Does not: decide who may write to whom (pipelines.mail.ports.MailAdmission, implemented by the pipelines), parse
the message (pipelines.mail.core.mime), send DSNs, or own sockets, threads and TLS files (smtp_server.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException, syntax

from connectors.inbound.smtp_params import (
    MailParams,
    Refused,
    count_received,
    parse_mail_params,
    parse_rcpt_params,
    received_header,
    redact,
    tls_comment,
    with_protocol,
)
from hub.auth import Authenticator
from hub.errors import SpoolFull, TransientError
from hub.intake import new_submission_id
from hub.mailqueue import Reply, SmtpEnvelope, SmtpRecipient, SpooledMail, pack
from pipelines.mail.ports import MailAdmission, MailSpool

log = logging.getLogger(__name__)

DEFAULT_MAX_RECIPIENTS = 100
DEFAULT_MAX_HOPS = 30
EHLO_EXTENSIONS = ("DSN",)  # advertised on top of aiosmtpd's SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH
TRY_LATER = "451 4.3.0 Temporary failure, try again later"

#: aiosmtpd 1.4.6's fixed replies that carry no enhanced status code (RFC 3463), and what we send instead.
ENHANCED_REPLIES: Mapping[str, str] = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
    "503 Error: send EHLO first": "503 5.5.1 Error: send EHLO first",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
    "501 Syntax: DATA": "501 5.5.4 Syntax: DATA",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
}


# -- the protocol ---------------------------------------------------------------------------------------


class GatewayEnvelope(Envelope):
    """aiosmtpd's per-transaction envelope, plus the DSN parameters and the recipients as SmtpRecipient."""

    def __init__(self) -> None:
        super().__init__()
        self.params = MailParams()
        self.recipients: list[SmtpRecipient] = []
        self.rcpt_attempts = 0

    def begin(self, mail_from: str, params: MailParams) -> None:
        """Record an accepted MAIL FROM (a handle_MAIL hook calls this, as aiosmtpd hooks must)."""
        self.mail_from, self.params, self.smtp_utf8 = mail_from, params, params.smtputf8

    def add(self, recipient: SmtpRecipient) -> None:
        """Record an accepted RCPT TO (a handle_RCPT hook must call this itself)."""
        self.rcpt_tos.append(recipient.address)
        self.recipients.append(recipient)


class GatewaySession(Session):
    """aiosmtpd's session, with the principal and peer IP at hand.  Its deprecated `login_data` is
    dropped: aiosmtpd sets it on every AUTH and the setter logs a warning each time."""

    @property
    def login_data(self) -> Any:
        return None

    @login_data.setter
    def login_data(self, value: Any) -> None:
        pass

    @property
    def principal(self) -> str:
        """The authenticated credential's name, or "" for an unauthenticated peer (the MX role)."""
        data: object = self.auth_data
        return data if self.authenticated and isinstance(data, str) else ""

    @property
    def peer_ip(self) -> str:
        peer: object = self.peer
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")


def smtp_login(authenticator: Authenticator) -> Callable[[SMTP, Session, Envelope, str, Any], AuthResult]:
    """aiosmtpd's `authenticator=` callback: user name = credential name, password = its token."""

    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            credential = authenticator.login(data.login.decode("utf-8", "replace"),
                                             data.password.decode("utf-8", "replace"))
            if credential is not None:
                return AuthResult(success=True, auth_data=credential.name)
        peer = session.peer_ip if isinstance(session, GatewaySession) else "?"
        log.info("AUTH %s refused peer=%s reply=535", mechanism, peer)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8

    return check


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with the DSN extension, the null sender, a recipient limit and enhanced codes.

    Hooks it calls on the handler (aiosmtpd's names, with parsed arguments): handle_MAIL(server,
    session, envelope, address, MailParams) and handle_RCPT(server, session, envelope, address,
    SmtpRecipient); each returns a reply and records what it accepts (envelope.begin / envelope.add).
    """

    def __init__(self, handler: Any, *, max_recipients: int = DEFAULT_MAX_RECIPIENTS, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._max_recipients = max_recipients
        # RFC 3461 §5 lengthens MAIL and RCPT lines (ENVID, ORCPT); aiosmtpd keeps its limits in a dict
        # shared by the class and cleared per connection, so this instance gets its own.
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit,
                                                           {"MAIL": 1000, "RCPT": 1000})

    def _create_session(self) -> GatewaySession:
        return GatewaySession(self.loop)

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    def _transaction(self) -> GatewayEnvelope:
        assert isinstance(self.envelope, GatewayEnvelope)
        return self.envelope

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(ENHANCED_REPLIES.get(status, status))
        else:
            await super().push(status)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self._transaction().mail_from is not None:  # RFC 4954 §4
            await self.push("503 5.5.1 AUTH not permitted during a mail transaction")
            return
        await super().smtp_AUTH(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        envelope = self._transaction()
        try:
            address, params = self._mail_arguments(envelope, arg)
        except Refused as refused:
            await self.push(refused.reply)
            return
        status = await self._call_handler_hook("MAIL", address, params)
        if status is MISSING:
            envelope.begin(address, params)
            status = "250 2.1.0 Ok"
        await self.push(status)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        envelope = self._transaction()
        try:
            recipient = self._rcpt_arguments(envelope, arg)
        except Refused as refused:
            await self.push(refused.reply)
            return
        envelope.rcpt_attempts += 1
        status = await self._call_handler_hook("RCPT", recipient.address, recipient)
        if status is MISSING:
            envelope.add(recipient)
            status = "250 2.1.5 Ok"
        await self.push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        envelope = self._transaction()
        if envelope.mail_from is not None and not envelope.rcpt_tos:
            await self.push("554 5.5.1 Error: no valid recipients" if envelope.rcpt_attempts
                            else "503 5.5.1 Error: need RCPT command")
            return
        await super().smtp_DATA(arg)

    def _mail_arguments(self, envelope: GatewayEnvelope, arg: str | None) -> tuple[str, MailParams]:
        if envelope.mail_from is not None:
            raise Refused("503 5.5.1 Error: nested MAIL command")
        address, rest = self._path("FROM:", arg)
        params = parse_mail_params(rest)
        if params.size is not None and self.data_size_limit and params.size > self.data_size_limit:
            raise Refused("552 5.3.4 Message size exceeds fixed maximum message size")
        if params.smtputf8 and not self.enable_SMTPUTF8:
            raise Refused("555 5.5.4 SMTPUTF8 is not available")
        if not address.isascii() and not params.smtputf8:
            raise Refused("553 5.6.7 Non-ASCII address needs SMTPUTF8")
        return address, params

    def _rcpt_arguments(self, envelope: GatewayEnvelope, arg: str | None) -> SmtpRecipient:
        if envelope.mail_from is None:
            raise Refused("503 5.5.1 Error: need MAIL command")
        if len(envelope.rcpt_tos) >= self._max_recipients:
            raise Refused("452 4.5.3 Too many recipients")
        address, rest = self._path("TO:", arg)
        if not address:
            raise Refused("501 5.1.3 The null address is not a recipient")
        if not address.isascii() and not envelope.smtp_utf8:
            raise Refused("553 5.6.7 Non-ASCII address needs SMTPUTF8")
        params = parse_rcpt_params(rest)
        return SmtpRecipient(address=address, notify=params.notify, orcpt=params.orcpt)

    def _path(self, keyword: str, arg: str | None) -> tuple[str, str]:
        """`FROM:<a@b> KEY=v` -> ("a@b", "KEY=v"), address case kept; `<>` is the null path ("")."""
        syntax_error = Refused(f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM:' else 'RCPT TO'}:<address>")
        text = self._strip_command_keyword(keyword, arg or "")
        if not text:
            raise syntax_error
        if text.startswith("<>"):
            address, rest = "", text[2:]
        else:
            parsed, rest_or_none = self._getaddr(text)
            if not parsed:
                raise Refused("553 5.1.3 Malformed address")
            address, rest = parsed, rest_or_none or ""
        assert self.session is not None
        if rest.strip() and not self.session.extended_smtp:
            raise syntax_error
        return address, rest.strip()


# -- the handler ----------------------------------------------------------------------------------------


class GatewayHandler:
    """aiosmtpd handler: asks the admission port at MAIL and RCPT; at DATA checks the hop count, asks the
    admission port about the message, adds the trace header and spools the packed message under a new
    submission id.  Every outcome is an SMTP reply.

    `in_flight` counts messages being spooled; `closing` makes new DATA answer 451 (shutdown).
    """

    def __init__(self, *, spool: MailSpool, admission: MailAdmission, max_hops: int = DEFAULT_MAX_HOPS,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._spool = spool
        self._admission = admission
        self._max_hops = max_hops
        self._clock = clock
        self.in_flight = 0
        self.closing = False

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # aiosmtpd: the 5-argument EHLO hook records the name itself
        return [*responses[:-1], *(f"250-{keyword}" for keyword in EHLO_EXTENSIONS), responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: GatewaySession, envelope: GatewayEnvelope, address: str,
                          params: MailParams) -> str:
        reply = self._admission.check_sender(address, auth=session.principal)  # the rules alone: no I/O
        refusal = None if reply is None or reply.code < 400 else str(reply)
        if refusal is not None:
            log.info("sender refused peer=%s from=%s reply=%s", session.peer_ip, redact(address), refusal[:9])
            return refusal
        envelope.begin(address, params)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: GatewaySession, envelope: GatewayEnvelope, address: str,
                          recipient: SmtpRecipient) -> str:
        refusal = await self._admit(partial(self._admission.check_recipient, address,
                                            mail_from=envelope.mail_from or "", auth=session.principal))
        if refusal is not None:
            log.info("recipient refused peer=%s to=%s reply=%s", session.peer_ip, redact(address), refusal[:9])
            return refusal
        envelope.add(recipient)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: GatewaySession, envelope: GatewayEnvelope) -> str:
        content = envelope.original_content or b""
        if self.closing:
            return self._refused(session, "451 4.3.2 Shutting down, try again later", len(content))
        if count_received(content) > self._max_hops:
            return self._refused(session, "554 5.4.6 Too many hops: mail loop?", len(content))
        refusal = await self._admit(partial(self._admission.check_message, content, mail_from=envelope.mail_from
                                            or "", auth=session.principal))
        if refusal is not None:
            return self._refused(session, refusal, len(content))
        when, trace_id = self._clock(), secrets.token_hex(8)
        trace = received_header(
            helo=session.host_name or "", peer_ip=session.peer_ip, hostname=server.hostname, trace_id=trace_id,
            protocol=with_protocol(extended=session.extended_smtp, tls=session.ssl is not None,
                                   auth=bool(session.principal), utf8=envelope.smtp_utf8),
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            tls=tls_comment(session.ssl), when=when)
        packed = pack(self._smtp_envelope(session, envelope, when), trace + content)
        spooled = SpooledMail(submission_id=new_submission_id(), received_at=when,
                              producer=session.principal or "mx", packed=packed)
        return await self._queue(spooled, session, trace_id=trace_id, recipients=len(envelope.rcpt_tos))

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            log.info("TLS handshake failed: %s", type(error.__cause__).__name__)
        else:
            log.error("SMTP session error (answered 451): %s", type(error).__name__, exc_info=error)
        return TRY_LATER

    async def _admit(self, check: Callable[[], Reply | None]) -> str | None:
        """Run a (blocking) admission check off the loop: None to go on, else the reply to send."""
        try:
            reply = await asyncio.to_thread(check)
        except TransientError as exc:
            log.warning("admission check unavailable (%s): reply=451", type(exc).__name__)
            return TRY_LATER
        return None if reply is None or reply.code < 400 else str(reply)

    async def _queue(self, spooled: SpooledMail, session: GatewaySession, *, trace_id: str,
                     recipients: int) -> str:
        self.in_flight += 1
        try:
            await asyncio.wrap_future(self._spool.append(spooled.encode()))
        except SpoolFull:
            log.warning("not queued (spool full) trace=%s peer=%s size=%d reply=452", trace_id, session.peer_ip,
                        len(spooled.packed))
            return "452 4.3.1 Insufficient system storage, try again later"
        except TransientError as exc:
            log.warning("not queued (%s) trace=%s peer=%s size=%d reply=451", type(exc).__name__, trace_id,
                        session.peer_ip, len(spooled.packed))
            return "451 4.3.0 Could not queue the message now, try again later"
        finally:
            self.in_flight -= 1
        log.info("queued submission=%s trace=%s peer=%s auth=%s size=%d recipients=%d reply=250",
                 spooled.submission_id, trace_id, session.peer_ip, session.principal or "-", len(spooled.packed),
                 recipients)
        return f"250 2.0.0 Ok: queued as {spooled.submission_id}"

    @staticmethod
    def _refused(session: GatewaySession, reply: str, size: int) -> str:
        log.info("message refused peer=%s size=%d reply=%s", session.peer_ip, size, reply[:9])
        return reply

    @staticmethod
    def _smtp_envelope(session: GatewaySession, envelope: GatewayEnvelope, when: datetime) -> SmtpEnvelope:
        extra = {"body": envelope.params.body, "smtputf8": "yes" if envelope.smtp_utf8 else "",
                 "tls": tls_comment(session.ssl)}
        return SmtpEnvelope(mail_from=envelope.mail_from or "", recipients=tuple(envelope.recipients),
                            auth=session.principal, peer=session.peer_ip, helo=session.host_name or "",
                            ret=envelope.params.ret, envid=envelope.params.envid, received_at=when.isoformat(),
                            extra={key: value for key, value in extra.items() if value})
