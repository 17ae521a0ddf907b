"""The SMTP gateway's protocol and handler, on aiosmtpd 1.4.6: the MX and submission edge of the relay.

Owns: the ESMTP dialogue beyond aiosmtpd's defaults: RFC 3461 DSN parameters (RET and ENVID on MAIL,
NOTIFY and ORCPT on RCPT) validated, xtext-decoded and kept with their case; SIZE, BODY and SMTPUTF8;
the null reverse-path `<>`; a recipient limit; RFC 3463 enhanced status codes on aiosmtpd's fixed
replies; AUTH PLAIN/LOGIN (over TLS only) checked by hub.auth.Authenticator.  Per message: the hop
count (mail loops), a `Received:` trace header, hub.mailqueue.pack() and intake.accept().

Rule 1: the 250 after DATA is sent only once intake.accept() returned (bytes in S3, submission
recorded, envelope confirmed by the bus).  Anything else is a 4xx, so the sending MTA keeps the
message and retries: nothing is ever accepted and then lost.
Rule 2: no local part, subject or body is logged (a patient's local part is an INS): addresses are
logged as `*@domain`; logs carry submission and trace ids, peer IPs, sizes and reply codes.

Does not: decide who may write to whom (hub.ports.MailAdmission, implemented by the pipelines), parse
the message (pipelines.core.mime), send DSNs, or own sockets, threads and TLS files (smtp_server.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException, syntax

from hub.auth import Authenticator
from hub.envelope import Source
from hub.errors import PermanentError, TransientError
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack
from hub.ports import MailAdmission

log = logging.getLogger(__name__)

DEFAULT_MAX_RECIPIENTS = 100
DEFAULT_MAX_HOPS = 30
ENVID_MAX = 100  # RFC 3461 §4.4
ORCPT_MAX = 500  # RFC 3461 §4.2
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


class Refused(Exception):
    """A command the gateway refuses; `reply` is the whole SMTP reply to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


# -- parameters (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailParams:
    """MAIL FROM parameters, validated.  `ret` is "", FULL or HDRS; `envid` is xtext-decoded."""

    size: int | None = None
    body: str = ""  # "", 7BIT or 8BITMIME
    smtputf8: bool = False
    ret: str = ""
    envid: str = ""


@dataclass(frozen=True, slots=True)
class RcptParams:
    """RCPT TO parameters, validated: NOTIFY (upper case) and ORCPT (`addr-type;` + decoded xtext)."""

    notify: tuple[str, ...] = ()
    orcpt: str = ""


_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(r"(?:[!-<>-~]|[^\x00-\x7f])+")  # RFC 5321 esmtp-value, plus UTF-8 (RFC 6531)
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")  # RFC 3461 §4: xchar / "+" 2HEXCHAR
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")
_DIGITS = re.compile(r"[0-9]{1,20}")
_NOTIFY_EVENTS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def xtext_decode(text: str) -> str:
    """RFC 3461 xtext -> text.  ValueError if malformed or if it decodes to anything but printable ASCII
    (these values end up in DSN headers: no control characters).  Lower-case hex is tolerated."""
    if not _XTEXT.fullmatch(text):
        raise ValueError("not xtext")
    decoded = _HEXCHAR.sub(lambda m: chr(int(m[1], 16)), text)
    if not all(" " <= ch <= "~" for ch in decoded):
        raise ValueError("xtext decodes to a non-printable character")
    return decoded


def split_params(text: str) -> dict[str, str | None]:
    """`KEY=value FLAG` -> {"KEY": "value", "FLAG": None}: keywords upper-cased, values kept as sent."""
    params: dict[str, str | None] = {}
    for token in text.split():
        keyword, eq, value = token.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            raise Refused("501 5.5.4 Malformed parameter")
        key = keyword.upper()
        if eq and not _VALUE.fullmatch(value):
            raise Refused(f"501 5.5.4 Malformed value for {key}")
        if key in params:
            raise Refused(f"501 5.5.4 Duplicate {key} parameter")
        params[key] = value if eq else None
    return params


def _xtext_param(name: str, value: str | None) -> str:
    try:
        return xtext_decode(value or "")
    except ValueError:
        raise Refused(f"501 5.5.4 {name} must be xtext of printable ASCII") from None


def _size(value: str | None, params: MailParams) -> MailParams:
    if value is None or not _DIGITS.fullmatch(value):
        raise Refused("501 5.5.4 SIZE must be a number of octets")
    return replace(params, size=int(value))


def _body(value: str | None, params: MailParams) -> MailParams:
    body = (value or "").upper()
    if body not in ("7BIT", "8BITMIME"):
        raise Refused("501 5.5.4 BODY must be 7BIT or 8BITMIME")
    return replace(params, body=body)


def _smtputf8(value: str | None, params: MailParams) -> MailParams:
    if value is not None:
        raise Refused("501 5.5.4 SMTPUTF8 takes no value")
    return replace(params, smtputf8=True)


def _ret(value: str | None, params: MailParams) -> MailParams:
    ret = (value or "").upper()
    if ret not in ("FULL", "HDRS"):
        raise Refused("501 5.5.4 RET must be FULL or HDRS")
    return replace(params, ret=ret)


def _envid(value: str | None, params: MailParams) -> MailParams:
    if value is None or len(value) > ENVID_MAX:
        raise Refused(f"501 5.5.4 ENVID must be 1 to {ENVID_MAX} characters of xtext")
    return replace(params, envid=_xtext_param("ENVID", value))


def _auth_identity(value: str | None, params: MailParams) -> MailParams:
    # RFC 4954 §5 AUTH=: validated, never trusted (the session's own AUTH names the principal).
    _xtext_param("AUTH", value)
    return params


def _notify(value: str | None, params: RcptParams) -> RcptParams:
    events = tuple(dict.fromkeys((value or "").upper().split(",")))
    if events != ("NEVER",) and not (events and _NOTIFY_EVENTS.issuperset(events)):
        raise Refused("501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return replace(params, notify=events)


def _orcpt(value: str | None, params: RcptParams) -> RcptParams:
    addr_type, semicolon, xtext = (value or "").partition(";")
    if not semicolon or not _KEYWORD.fullmatch(addr_type) or not xtext or len(value or "") > ORCPT_MAX:
        raise Refused(f"501 5.5.4 ORCPT must be addr-type;xtext of at most {ORCPT_MAX} characters")
    return replace(params, orcpt=f"{addr_type};{_xtext_param('ORCPT', xtext)}")


_MAIL_PARAMS: Mapping[str, Callable[[str | None, MailParams], MailParams]] = {
    "SIZE": _size, "BODY": _body, "SMTPUTF8": _smtputf8, "RET": _ret, "ENVID": _envid, "AUTH": _auth_identity,
}
_RCPT_PARAMS: Mapping[str, Callable[[str | None, RcptParams], RcptParams]] = {"NOTIFY": _notify, "ORCPT": _orcpt}


def parse_mail_params(text: str) -> MailParams:
    """The parameters after `MAIL FROM:<path>`; Refused (501/555 5.5.4) on the first bad or unknown one."""
    params = MailParams()
    for key, value in split_params(text).items():
        parser = _MAIL_PARAMS.get(key)
        if parser is None:
            raise Refused(f"555 5.5.4 MAIL FROM parameter {key} not recognized")
        params = parser(value, params)
    return params


def parse_rcpt_params(text: str) -> RcptParams:
    """The parameters after `RCPT TO:<path>`; Refused (501/555 5.5.4) on the first bad or unknown one."""
    params = RcptParams()
    for key, value in split_params(text).items():
        parser = _RCPT_PARAMS.get(key)
        if parser is None:
            raise Refused(f"555 5.5.4 RCPT TO parameter {key} not recognized")
        params = parser(value, params)
    return params


# -- trace and loops (pure) ----------------------------------------------------------------------------

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)
_NOT_DOMAIN = re.compile(r"[^A-Za-z0-9.:\[\]_-]")


def count_received(message: bytes) -> int:
    """How many `Received:` fields the header section of `message` holds (RFC 5321 §6.3 loop detection)."""
    if message.startswith((b"\r\n", b"\n")):
        return 0
    end = _HEADER_END.search(message)
    return len(_RECEIVED.findall(message, 0, end.start() if end else len(message)))


def with_protocol(*, extended: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """The `with` keyword of the trace header (RFC 3848, RFC 6531): ESMTP, ESMTPS, ESMTPSA, UTF8SMTPA..."""
    if not extended:
        return "SMTP"
    return ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")


def received_header(*, helo: str, peer_ip: str, hostname: str, protocol: str, trace_id: str,
                    recipient: str | None, tls: str, when: datetime) -> bytes:
    """The RFC 5321 §4.4 trace field this gateway prepends, folded and CRLF-terminated.
    `recipient` is given only when the message has exactly one (never list several)."""
    ip = f"[IPv6:{peer_ip}]" if ":" in peer_ip else f"[{peer_ip}]" if peer_ip else "unknown"
    parts = [f"Received: from {_NOT_DOMAIN.sub('', helo)[:255] or 'unknown'} ({ip})"]
    if tls:
        parts.append(f"({tls})")
    parts.append(f"by {hostname} (MES Hub) with {protocol} id {trace_id}")
    if recipient is not None and recipient.isprintable():
        parts.append(f"for <{recipient}>")
    return ("\r\n\t".join(parts) + f"; {format_datetime(when)}\r\n").encode()


def tls_comment(ssl_info: Mapping[str, Any] | None) -> str:
    """`using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits)` from aiosmtpd's session.ssl, or ""."""
    if not ssl_info:
        return ""
    cipher = ssl_info.get("cipher")
    if isinstance(cipher, tuple) and len(cipher) == 3:
        return f"using {cipher[1]} with cipher {cipher[0]} ({cipher[2]} bits)"
    return "using TLS"


def redact(address: str) -> str:
    """An address as logs may show it: `*@domain` (a patient's local part is an INS)."""
    return "<>" if not address else "*@" + address.rpartition("@")[2].lower()


def _one_line(text: str, limit: int = 200) -> str:
    return "".join(ch if " " <= ch <= "~" else " " for ch in text)[:limit] or "refused"


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


class IntakeHandler:
    """aiosmtpd handler: asks the admission port at MAIL and RCPT; at DATA checks the hop count, adds the
    trace header and hands the packed message to intake.  Every outcome is an SMTP reply.

    `in_flight` counts messages being handed to intake; `closing` makes new DATA answer 451 (shutdown).
    """

    def __init__(self, *, intake: Intake, admission: MailAdmission, max_hops: int = DEFAULT_MAX_HOPS,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._intake = intake
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
        refusal = await self._admit(partial(self._admission.check_sender, address, auth=session.principal))
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
        when, trace_id = self._clock(), secrets.token_hex(8)
        trace = received_header(
            helo=session.host_name or "", peer_ip=session.peer_ip, hostname=server.hostname, trace_id=trace_id,
            protocol=with_protocol(extended=session.extended_smtp, tls=session.ssl is not None,
                                   auth=bool(session.principal), utf8=envelope.smtp_utf8),
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            tls=tls_comment(session.ssl), when=when)
        packed = pack(self._smtp_envelope(session, envelope, when), trace + content)
        return await self._queue(packed, session, trace_id=trace_id, recipients=len(envelope.rcpt_tos))

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

    async def _queue(self, packed: bytes, session: GatewaySession, *, trace_id: str, recipients: int) -> str:
        source = Source(kind="smtp", producer=session.principal or "mx")
        self.in_flight += 1
        try:
            record = await asyncio.to_thread(self._intake.accept, packed, source, content_type=MAIL_CONTENT_TYPE,
                                              kind="mail")
        except TransientError as exc:
            log.warning("not queued (%s) trace=%s peer=%s size=%d reply=451", type(exc).__name__, trace_id,
                        session.peer_ip, len(packed))
            return "451 4.3.0 Could not queue the message now, try again later"
        except PermanentError as exc:
            log.warning("not queued (%s) trace=%s peer=%s size=%d reply=554", type(exc).__name__, trace_id,
                        session.peer_ip, len(packed))
            return f"554 5.6.0 {_one_line(str(exc))}"
        finally:
            self.in_flight -= 1
        log.info("queued submission=%s trace=%s peer=%s auth=%s size=%d recipients=%d reply=250",
                 record.submission_id, trace_id, session.peer_ip, session.principal or "-", len(packed), recipients)
        return f"250 2.0.0 Ok: queued as {record.submission_id}"

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
