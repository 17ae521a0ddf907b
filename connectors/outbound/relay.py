"""SMTP relay to a next hop: one SMTP session per call, one result per recipient (blocking, stdlib smtplib).

Owns: the client side of RFC 5321 towards another MTA (an MSSanté operator, a relay): EHLO (HELO if
refused), STARTTLS as the hop requires (RFC 3207), AUTH (RFC 4954), SIZE (RFC 1870), BODY=8BITMIME
(RFC 6152), SMTPUTF8 (RFC 6531), the DSN parameters RET/ENVID/NOTIFY/ORCPT (RFC 3461) when the server
advertises DSN, and the translation of what it answered into RecipientResult.

Rules:
1. A recipient refused at RCPT keeps its own reply; every accepted recipient gets the DATA reply; a
   refused MAIL gives its reply to all.  2xx delivered, 4xx transient, 5xx permanent (hub.delivery);
   any other code is a protocol error, 451 4.5.0.  `remote_host` is always the hop's host.
2. Anything that ends the session early (connection refused, timeout, TLS failure, lost connection, a
   refused greeting or login) makes every recipient without a final reply TRANSIENT with a local
   `451` reply: 4.4.1 no answer, 4.4.2 bad connection, 4.4.3 name not found, 4.7.4 TLS required but
   not available, 4.7.5 TLS handshake or certificate failure, 4.7.0 authentication.
3. Mail the server cannot take as it is fails PERMANENT without being sent: larger than its SIZE
   (552 5.3.4), 8-bit without 8BITMIME (554 5.6.3), UTF-8 addresses or headers without SMTPUTF8
   (553 5.6.7), a malformed address (553 5.1.3 / 5.1.7).  The bytes are never rewritten, so a
   signed (S/MIME) message stays valid; only bare CR or LF become CRLF, as SMTP requires.
4. Credentials are only sent over TLS.  A reply lost after DATA is TRANSIENT: a retry may deliver twice,
   never zero times.
5. Nothing is logged but the hop, reply codes and counts: no body, no address (a patient address's local
   part is a national health identifier), no reply text from the server (it often quotes the address).

Does not: choose the hop (pipelines.mail.core.relay_schedule), retry, or build bounces (pipelines).
Thread-safe: every call opens its own connection; call it from worker threads, not from an event loop.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hub.delivery import Outcome, RecipientResult
from hub.mailqueue import SmtpRecipient

log = logging.getLogger(__name__)


class Hop(Protocol):
    """Where and how to connect: pipelines.mail.core.relay_schedule.NextHop has this shape.

    `starttls` is "require", "opportunistic" or "off" (any other value counts as "require")."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def starttls(self) -> str: ...
    @property
    def verify_tls(self) -> bool: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...


SslContextFactory = Callable[[Hop], ssl.SSLContext]

_EOL = re.compile(rb"\r\n|\r|\n")
_NOTIFY = ("NEVER", "SUCCESS", "FAILURE", "DELAY")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9-]+")


def crlf(message: bytes) -> bytes:
    """`message` with every line ending made CRLF (bare CR or LF in DATA is how SMTP smuggling starts)."""
    return _EOL.sub(b"\r\n", message)


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except `+` and `=` as is, every other octet (UTF-8) as `+HH`."""
    return "".join(chr(b) if 33 <= b <= 126 and b not in b"+=" else f"+{b:02X}" for b in value.encode())


class _Abort(Exception):
    """Ends the session: every recipient without a final reply gets `code text`.

    `ours` says the text is our own words (host and reason only), so it may be logged."""

    def __init__(self, code: int, text: str, *, ours: bool = True) -> None:
        super().__init__(code, text)
        self.code, self.text, self.ours = code, text, ours


def _name(hop: Hop) -> str:
    """How a hop appears in replies and logs: never its credentials."""
    return f"{hop.host}:{hop.port}"


def _deferred(status: str, detail: str) -> _Abort:
    return _Abort(451, f"{status} {detail}")


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(line.strip() for line in text.splitlines())


def _verdict(code: int, reply: bytes | str) -> tuple[int, str]:
    """The server's 2xx/4xx/5xx reply as it is; anything else (1xx, 3xx, unreadable) is a protocol error."""
    if 200 <= code < 300 or 400 <= code < 600:
        return code, _reply_text(reply)
    return 451, f"4.5.0 unexpected reply: {code} {_reply_text(reply)}"


def _safe_address(address: str) -> bool:
    """Nothing that could break out of `<...>` on the command line: no controls, spaces or brackets."""
    return bool(address) and all(ord(c) > 32 and c not in "<>\x7f" for c in address)


class SmtpRelay:
    """Hands one message to one next hop over SMTP.

    `helo_name` is our name in EHLO (the hub's public host name).  `timeout_s` bounds every socket
    operation.  Certificates are checked against `cafile` (PEM bundle, e.g. the IGC-Santé chain; the
    system store when None), or against whatever `ssl_context_factory(hop)` returns (client
    certificates, per-hop CAs): give one or the other.
    """

    def __init__(self, *, helo_name: str, timeout_s: float = 60.0, cafile: str | None = None,
                 ssl_context_factory: SslContextFactory | None = None) -> None:
        if cafile and ssl_context_factory:
            raise ValueError("give cafile or ssl_context_factory, not both")
        self._helo_name = helo_name
        self._timeout_s = timeout_s
        self._context_for = ssl_context_factory or _DefaultContexts(cafile)

    def deliver(self, hop: Hop, message: bytes, mail_from: str, recipients: Sequence[SmtpRecipient], *,
                ret: str = "", envid: str = "") -> list[RecipientResult]:
        """Send `message` to `recipients` through `hop`; one result per recipient, in the same order.

        `mail_from` "" or "<>" is the null sender (bounces).  `ret` (FULL/HDRS) and `envid` are the
        RFC 3461 values as received, sent on only when the hop advertises DSN.  Never raises for
        network or protocol failures: they become TRANSIENT or PERMANENT results.
        """
        if not recipients:
            return []
        results = self._malformed(hop, mail_from, recipients)
        if len(results) < len(recipients):
            try:
                self._session(hop, _Transaction(crlf(message), mail_from, recipients, ret, envid), results)
            except _Abort as abort:
                self._settle_rest(hop, recipients, results, abort)
        outcomes = [results[i] for i in range(len(recipients))]
        log.info("relay %s: %s", _name(hop), _summary(outcomes))
        return outcomes

    def _malformed(self, hop: Hop, mail_from: str, recipients: Sequence[SmtpRecipient]) -> dict[int, RecipientResult]:
        """PERMANENT results for addresses that cannot be put on a command line; all of them for a bad sender."""
        if mail_from not in ("", "<>") and not _safe_address(mail_from):
            return {i: self._result(hop, r.address, 553, "5.1.7 Bad sender address syntax")
                    for i, r in enumerate(recipients)}
        return {i: self._result(hop, r.address, 553, "5.1.3 Bad recipient address syntax")
                for i, r in enumerate(recipients) if not _safe_address(r.address)}

    def _session(self, hop: Hop, tx: _Transaction, results: dict[int, RecipientResult]) -> None:
        smtp = self._connect(hop)
        try:
            secure = self._hello(smtp, hop)
            self._login(smtp, hop, secure)
            tx.run(smtp, hop, results)
            _quit(smtp)
        except _Abort:
            _quit(smtp)  # the server is talking: say goodbye
            raise
        except ssl.SSLError as exc:
            raise _deferred("4.7.5", f"TLS with {_name(hop)} failed: {_ssl_reason(exc)}") from None
        except OSError as exc:  # reset, timed out, SMTPServerDisconnected, SMTPResponseException
            raise _deferred("4.4.2", f"conversation with {_name(hop)} failed: {_os_reason(exc)}") from None
        finally:
            smtp.close()

    def _connect(self, hop: Hop) -> smtplib.SMTP:
        """Connected and greeted (220); the host given here is the name STARTTLS checks the certificate against."""
        try:
            return smtplib.SMTP(hop.host, hop.port, local_hostname=self._helo_name, timeout=self._timeout_s)
        except smtplib.SMTPConnectError as exc:  # greeted with something else than 220
            raise _Abort(451, f"4.4.2 {_name(hop)} refused to talk to me: {exc.smtp_code} "
                              f"{_reply_text(exc.smtp_error)}", ours=False) from None
        except socket.gaierror as exc:
            raise _deferred("4.4.3", f"host {hop.host} not found: {_os_reason(exc)}") from None
        except smtplib.SMTPServerDisconnected as exc:  # closed, or timed out, before greeting
            raise _deferred("4.4.2", f"no greeting from {_name(hop)}: {_os_reason(exc)}") from None
        except OSError as exc:  # refused, unreachable, timed out
            raise _deferred("4.4.1", f"connect to {_name(hop)}: {_os_reason(exc)}") from None

    def _hello(self, smtp: smtplib.SMTP, hop: Hop) -> bool:
        """EHLO (or HELO), then STARTTLS as the hop requires; True when the session is encrypted."""
        _ehlo(smtp, hop)
        if hop.starttls == "off":
            return False
        if not smtp.has_extn("starttls"):
            if hop.starttls != "opportunistic":
                raise _deferred("4.7.4", f"TLS is required, but was not offered by {_name(hop)}")
            return False
        try:
            smtp.starttls(context=self._context_for(hop))  # checks the certificate against hop.host
        except smtplib.SMTPResponseException as exc:  # e.g. 454: TLS not available now
            if hop.starttls == "opportunistic":
                return False
            raise _Abort(451, f"4.7.4 {_name(hop)} refused STARTTLS: {exc.smtp_code} {_reply_text(exc.smtp_error)}",
                         ours=False) from None
        _ehlo(smtp, hop)  # RFC 3207: forget what was learnt before TLS
        return True

    def _login(self, smtp: smtplib.SMTP, hop: Hop, secure: bool) -> None:
        if not hop.username:
            return
        if not secure:
            raise _deferred("4.7.0", f"credentials for {_name(hop)} are only sent over TLS")
        try:
            smtp.login(hop.username, hop.password)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPResponseException as exc:
            raise _Abort(451, f"4.7.0 authentication at {_name(hop)} failed: {exc.smtp_code} "
                              f"{_reply_text(exc.smtp_error)}", ours=False) from None
        except smtplib.SMTPException:  # AUTH not offered, or no mechanism in common
            raise _deferred("4.7.0", f"no usable AUTH mechanism at {_name(hop)}") from None

    def _result(self, hop: Hop, address: str, code: int, text: str) -> RecipientResult:
        return RecipientResult.from_reply(address, code, text, remote_host=hop.host)

    def _settle_rest(self, hop: Hop, recipients: Sequence[SmtpRecipient],
                     results: dict[int, RecipientResult], abort: _Abort) -> None:
        """Every recipient without a final reply yet gets the reply that ended the session."""
        status = abort.text.partition(" ")[0]
        log.warning("relay %s: session ended: %d %s", _name(hop), abort.code, abort.text if abort.ours else status)
        for i, recipient in enumerate(recipients):
            if i not in results:
                results[i] = self._result(hop, recipient.address, abort.code, abort.text)


@dataclass(frozen=True, slots=True)
class _Transaction:
    """MAIL, RCPT for each recipient, DATA: what one message needs from an open session."""

    data: bytes
    mail_from: str
    recipients: Sequence[SmtpRecipient]
    ret: str
    envid: str

    @property
    def sender(self) -> str:
        return "" if self.mail_from in ("", "<>") else self.mail_from

    def run(self, smtp: smtplib.SMTP, hop: Hop, results: dict[int, RecipientResult]) -> None:
        params = self._mail_params(smtp)
        code, text = _verdict(*smtp.docmd("MAIL", f"FROM:<{self.sender}>{_joined(params)}"))
        if not 200 <= code < 300:
            raise _Abort(code, text, ours=False)
        dsn = smtp.has_extn("dsn")
        accepted: list[int] = []
        for i, recipient in enumerate(self.recipients):
            if i in results:
                continue
            code, text = _verdict(*smtp.docmd("RCPT", f"TO:<{recipient.address}>"
                                                      f"{_joined(_rcpt_params(recipient, dsn))}"))
            if 200 <= code < 300:
                accepted.append(i)
            else:
                results[i] = RecipientResult.from_reply(recipient.address, code, text, remote_host=hop.host)
        if accepted:
            self._data(smtp, hop, accepted, results)

    def _data(self, smtp: smtplib.SMTP, hop: Hop, accepted: list[int],
              results: dict[int, RecipientResult]) -> None:
        try:
            code, text = _verdict(*smtp.data(self.data))
        except smtplib.SMTPDataError as exc:  # DATA itself refused
            code, text = _verdict(exc.smtp_code, exc.smtp_error)
        for i in accepted:
            results[i] = RecipientResult.from_reply(self.recipients[i].address, code, text, remote_host=hop.host)

    def _mail_params(self, smtp: smtplib.SMTP) -> list[str]:
        """SIZE, BODY, SMTPUTF8 and the DSN parameters the server understands; _Abort when it cannot take it."""
        params = _size_param(smtp, len(self.data))
        if not self.data.isascii():
            if not (smtp.has_extn("8bitmime") or smtp.has_extn("smtputf8")):
                raise _Abort(554, "5.6.3 Conversion to 7 bit required but not supported; the server has no 8BITMIME")
            if smtp.has_extn("8bitmime"):
                params.append("BODY=8BITMIME")
        if self._needs_utf8():
            if not smtp.has_extn("smtputf8"):
                raise _Abort(553, "5.6.7 SMTPUTF8 is required, but was not offered by the server")
            smtp.command_encoding = "utf-8"
            params.append("SMTPUTF8")
        if smtp.has_extn("dsn"):
            if self.ret.upper() in ("FULL", "HDRS"):
                params.append(f"RET={self.ret.upper()}")
            if self.envid:
                params.append(f"ENVID={xtext(self.envid)}")
        return params

    def _needs_utf8(self) -> bool:
        header = self.data.partition(b"\r\n\r\n")[0]
        addresses = (self.sender, *(r.address for r in self.recipients))
        return not header.isascii() or not all(a.isascii() for a in addresses)


def _size_param(smtp: smtplib.SMTP, size: int) -> list[str]:
    if not smtp.has_extn("size"):
        return []
    limit = smtp.esmtp_features["size"].strip()
    if limit.isdigit() and 0 < int(limit) < size:
        raise _Abort(552, f"5.3.4 Message size {size} exceeds the server's limit of {limit}")
    return [f"SIZE={size}"]


def _rcpt_params(recipient: SmtpRecipient, dsn: bool) -> list[str]:
    """NOTIFY and ORCPT as received (RFC 3461), when the server advertises DSN; malformed values are dropped."""
    if not dsn:
        return []
    params = []
    notify = [v.upper() for v in recipient.notify if v.upper() in _NOTIFY]
    if notify:
        params.append("NOTIFY=" + ("NEVER" if "NEVER" in notify else ",".join(dict.fromkeys(notify))))
    addr_type, sep, original = recipient.orcpt.partition(";")
    if sep and original.strip() and _ADDR_TYPE.fullmatch(addr_type.strip()):
        params.append(f"ORCPT={addr_type.strip()};{xtext(original.strip())}")
    return params


def _joined(params: Sequence[str]) -> str:
    return "".join(" " + p for p in params)


def _ehlo(smtp: smtplib.SMTP, hop: Hop) -> None:
    code, reply = smtp.ehlo()
    if code == 250:
        return
    code, reply = smtp.helo()
    if code != 250:
        raise _Abort(451, f"4.4.2 {_name(hop)} refused HELO: {code} {_reply_text(reply)}", ours=False)


def _quit(smtp: smtplib.SMTP) -> None:
    """Polite QUIT; the results are already known, so a failure here changes nothing."""
    with contextlib.suppress(OSError):  # smtplib's errors are OSErrors
        smtp.quit()


def _os_reason(exc: OSError) -> str:
    """A short reason in smtplib's or the OS's own words; nothing from the peer."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return str(exc) or "connection closed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return exc.reason or type(exc).__name__


def _summary(results: Sequence[RecipientResult]) -> str:
    counts = {outcome: sum(r.outcome is outcome for r in results) for outcome in Outcome}
    codes = sorted({r.reply.code for r in results})
    return ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count) + f" (codes {codes})"


class _DefaultContexts:
    """TLS client contexts built once: verified against `cafile` (or the system store), or unverified."""

    def __init__(self, cafile: str | None) -> None:
        self._verified = ssl.create_default_context(cafile=cafile)
        self._unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._unverified.check_hostname = False
        self._unverified.verify_mode = ssl.CERT_NONE
        for context in (self._verified, self._unverified):
            context.minimum_version = ssl.TLSVersion.TLSv1_2

    def __call__(self, hop: Hop) -> ssl.SSLContext:
        return self._verified if hop.verify_tls else self._unverified
