"""Notification channels: one rendered Outgoing sent by e-mail, SMS, push or in-app (blocking I/O shell).

Owns: putting an `hub.notices.Outgoing` on the wire and translating what the far end answered into
SendResult / ChannelUnavailable (retry later) / ChannelRefused (never: the policy falls back).
* E-mail: `SmtpEmailChannel` hands the message to a smart host (smtplib, STARTTLS, AUTH);
  `OutboxEmailChannel` writes the same message as `<delivery_id>.eml` (the embedded default).
* SMS: `HttpSmsChannel` posts JSON to an HTTP provider; `OutboxSmsChannel` writes `<delivery_id>.json`.
* Push: `HttpPushChannel` posts JSON to the device's endpoint URL, through connectors.outbound.url_guard
  (the URL is a patient's: SSRF rules, no redirect, bounded).  In-app: `InAppChannel` sends nothing.

Rules:
1. `delivery_id` is the idempotency handle: the Message-ID `<delivery_id@sender's domain>`, the file
   name, the `Idempotency-Key` header.  A retried send is recognisable downstream; an outbox file is
   overwritten, never duplicated.  Outbox files are written atomically (temp file, fsync, rename).
2. SMTP: 4xx, refused or lost connections, timeouts, TLS, greeting, EHLO and AUTH failures ->
   ChannelUnavailable; 5xx to MAIL, RCPT or DATA -> ChannelRefused("smtp 550 5.1.1").
   HTTP: timeouts, transport errors, 429, 5xx (and 3xx) -> ChannelUnavailable; other 4xx ->
   ChannelRefused.
3. Error reasons are our own words: codes, host names and exception class names.  Never an address
   (a phone number, a patient's e-mail), the texts sent, the server's reply text or a credential.
4. Credentials go to a smart host only over STARTTLS.
5. An SMTP session is reused for the next e-mail (greeting, EHLO, STARTTLS and AUTH once per session): RSET
   before each reuse; a reused session found lost (RSET fails, or a disconnect or broken pipe under the
   transfer) is replaced once by a new one for the same e-mail; a session that failed a transfer is
   closed; an idle one is QUIT after IDLE_S, and all of them by `close()`.

Does not: choose the channel, render the texts (pipelines.notify.core.policy), retry or track states.
Thread-safe: an SMTP session is used by one send at a time (a locked pool of idle ones); every push send opens
its own connection; an httpx.Client (SMS) is shared between threads.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import http.client
import json
import os
import re
import smtplib
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from connectors.outbound.smtp_sessions import IDLE_S, POOL_SIZE, IdleSessions, quit_smtp, reset
from connectors.outbound.url_guard import (
    DeadlinePassed,
    Resolver,
    UrlPolicy,
    UrlRefused,
    bounded_post,
    check_url,
    system_resolver,
)
from hub.errors import ChannelRefused, ChannelUnavailable, ConfigError
from hub.notices import Outgoing, SendResult

SMS_MAX_CHARS = 160 * 3  # three concatenated SMS

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _delivery_id(outgoing: Outgoing) -> str:
    """The delivery id, checked: it becomes a file name and a Message-ID's left part."""
    if not _SAFE_ID.fullmatch(outgoing.delivery_id):
        raise ChannelRefused("unusable delivery id")
    return outgoing.delivery_id


def _address(outgoing: Outgoing) -> str:
    if not outgoing.address:
        raise ChannelRefused("no address")
    return outgoing.address


def _domain(sender: str) -> str:
    return sender.rpartition("@")[2].strip(" >") or "localhost"


def _html_from_text(text: str) -> str:
    """A minimal page for a text-only notice: paragraphs on blank lines, every character escaped."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<!doctype html><html lang="fr"><body>{body}</body></html>'


def build_email(outgoing: Outgoing, *, sender: str) -> EmailMessage:
    """The notification e-mail: text/plain with a text/html alternative, deterministic Message-ID."""
    message = EmailMessage(policy=policy.SMTP)
    try:
        message["From"] = sender
        message["To"] = _address(outgoing)
        message["Subject"] = outgoing.subject
    except ValueError:  # a line break in a header value: header injection
        raise ChannelRefused("unusable address or subject") from None
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = f"<{_delivery_id(outgoing)}@{_domain(sender)}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(outgoing.text)
    message.add_alternative(outgoing.html or _html_from_text(outgoing.text), subtype="html")
    return message


def write_atomically(directory: Path, name: str, data: bytes) -> None:
    """`directory/name` holds `data` completely or is as it was: temp file, fsync, rename, fsync dir.

    Raises ChannelUnavailable when the disk refuses (full, read-only, I/O error)."""
    tmp = ""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, directory / name)
        tmp = ""
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ChannelUnavailable(f"outbox write failed: {type(exc).__name__}") from None
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _smtp_status(reply: bytes | str) -> str:
    """The enhanced status code (RFC 3463) at the start of a reply, if any: never the reply's text."""
    text = reply.decode("ascii", "replace") if isinstance(reply, bytes) else reply
    found = _STATUS.match(text.strip())
    return f" {found.group(0)}" if found else ""


def _smtp_verdict(code: int, reply: bytes | str) -> ChannelRefused | ChannelUnavailable:
    reason = f"smtp {code}{_smtp_status(reply)}"
    return ChannelRefused(reason) if 500 <= code < 600 else ChannelUnavailable(reason)


class SmtpEmailChannel:
    """E-mail through a smart host.  `helo_name` defaults to the sender's domain; `cafile` (PEM) checks
    the STARTTLS certificate (the system store when None); `username` needs `starttls`.

    Sessions are reused (Rule 5): a small pool of open, idle sessions, each used by one send at a time."""

    def __init__(self, host: str, port: int, *, sender: str, helo_name: str = "", starttls: bool = False,
                 cafile: str | None = None, username: str = "", password: str = "", timeout_s: float = 30,
                 idle_s: float = IDLE_S, pool_size: int = POOL_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if username and not starttls:
            raise ConfigError("notify smtp_username needs smtp_starttls: credentials only go over TLS")
        self._host, self._port = host, port
        self._sender = sender
        self._helo_name = helo_name or _domain(sender)
        self._starttls = starttls
        self._cafile = cafile
        self._username, self._password = username, password
        self._timeout_s = timeout_s
        self._idle = IdleSessions(idle_s=idle_s, size=pool_size, clock=clock)
        self.sessions_opened = 0  # how many SMTP sessions this channel opened (the benchmarks count them)

    @property
    def _name(self) -> str:
        return f"{self._host}:{self._port}"

    def send(self, outgoing: Outgoing) -> SendResult:
        message = build_email(outgoing, sender=self._sender)
        smtp = self._reused()
        if smtp is None or not self._transfer(smtp, message, outgoing.address, reused=True):
            smtp = self._connect()  # none idle, or the idle one was lost: a new session (once)
            self._transfer(smtp, message, outgoing.address)
        self._idle.give_back(smtp)
        return SendResult(provider_ref=str(message["Message-ID"]), delivered=False)

    def close(self) -> None:
        """QUIT every idle session (at shutdown; sessions in use are closed by their send)."""
        self._idle.close()

    def _connect(self) -> smtplib.SMTP:
        """A new session: greeting, EHLO, STARTTLS, AUTH (ChannelUnavailable when any of them fails)."""
        try:
            smtp = smtplib.SMTP(self._host, self._port, local_hostname=self._helo_name, timeout=self._timeout_s)
        except smtplib.SMTPConnectError as exc:
            raise ChannelUnavailable(f"smtp {self._name} greeting {exc.smtp_code}") from None
        except OSError as exc:  # refused, unreachable, timed out, closed before the greeting
            raise ChannelUnavailable(f"smtp {self._name} unreachable: {type(exc).__name__}") from None
        self.sessions_opened += 1
        try:
            self._open(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _open(self, smtp: smtplib.SMTP) -> None:
        """EHLO, STARTTLS, AUTH: a failure here is the smart host's, not this notice's."""
        try:
            smtp.ehlo()
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=self._cafile))
                smtp.ehlo()
            if self._username:
                smtp.login(self._username, self._password)
        except smtplib.SMTPResponseException as exc:  # EHLO refused, AUTH 535...
            raise ChannelUnavailable(f"smtp {self._name} session {exc.smtp_code}"
                                     f"{_smtp_status(exc.smtp_error)}") from None
        except OSError as exc:  # TLS failure, STARTTLS not offered, lost connection, timeout
            raise ChannelUnavailable(f"smtp {self._name} session failed: {type(exc).__name__}") from None

    def _reused(self) -> smtplib.SMTP | None:
        """An idle session that answers RSET (the smart host may have closed it: restart, idle timeout)."""
        smtp = self._idle.take()
        return smtp if smtp is not None and reset(smtp) else None

    def _transfer(self, smtp: smtplib.SMTP, message: EmailMessage, address: str, *, reused: bool = False) -> bool:
        """MAIL, RCPT, DATA: their 5xx refuse this notice for good.  On a `reused` session, False when the
        session was lost under it (closed here: the caller tries once more on a new session)."""
        try:
            smtp.send_message(message, from_addr=self._sender, to_addrs=[address])
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if not reused:
                raise self._verdict(smtp, exc) from None
            smtp.close()
            return False
        except Exception as exc:  # mapped (or re-raised) by _verdict
            raise self._verdict(smtp, exc) from None
        return True

    def _verdict(self, smtp: smtplib.SMTP, exc: Exception) -> Exception:
        """Close the session after a failed transfer (QUIT when the server is still talking) and say what
        `exc` means: 5xx -> ChannelRefused, 4xx and lost sessions -> ChannelUnavailable."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPResponseException
                      | smtplib.SMTPNotSupportedError):
            quit_smtp(smtp)  # the server is talking: say goodbye
        smtp.close()
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, reply = next(iter(exc.recipients.values()), (451, b""))
            return _smtp_verdict(code, reply)
        if isinstance(exc, smtplib.SMTPResponseException):  # SMTPSenderRefused, SMTPDataError
            return _smtp_verdict(exc.smtp_code, exc.smtp_error)
        if isinstance(exc, smtplib.SMTPNotSupportedError):  # an internationalised address, no SMTPUTF8 there
            return ChannelRefused("smtp address needs SMTPUTF8")
        if isinstance(exc, OSError | UnicodeError):  # lost connection, timeout
            return ChannelUnavailable(f"smtp {self._name} transfer failed: {type(exc).__name__}")
        return exc


class OutboxEmailChannel:
    """The embedded default with no smart host: each e-mail is `<directory>/<delivery_id>.eml`."""

    def __init__(self, directory: Path, *, sender: str = "ne-pas-repondre@localhost") -> None:
        self._directory = Path(directory)
        self._sender = sender

    def send(self, outgoing: Outgoing) -> SendResult:
        message = build_email(outgoing, sender=self._sender)
        name = f"{_delivery_id(outgoing)}.eml"
        write_atomically(self._directory, name, message.as_bytes())
        return SendResult(provider_ref=name, delivered=True)


def sms_payload(outgoing: Outgoing, *, sender_id: str) -> dict[str, str]:
    """What an SMS provider is given (and what the SMS outbox keeps); refused when over three SMS."""
    if len(outgoing.text) > SMS_MAX_CHARS:
        raise ChannelRefused(f"sms text too long: {len(outgoing.text)} > {SMS_MAX_CHARS} chars")
    return {"to": _address(outgoing), "text": outgoing.text, "sender": sender_id,
            "reference": _delivery_id(outgoing)}


def _post(client: httpx.Client, url: str, payload: dict[str, str], *, headers: dict[str, str],
          timeout_s: float, what: str) -> httpx.Response:
    try:
        return client.post(url, json=payload, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise ChannelUnavailable(f"{what} timed out") from None
    except httpx.HTTPError as exc:  # connection refused or reset, protocol error
        raise ChannelUnavailable(f"{what} unreachable: {type(exc).__name__}") from None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(response: httpx.Response) -> str:
    """A provider's short error code (`{"error": "invalid_number"}`), only if it looks like one."""
    error = _json(response).get("error")
    if isinstance(error, dict):
        error = error.get("code")
    return str(error) if isinstance(error, str | int) and _ERROR_CODE.fullmatch(str(error)) else ""


def _unavailable(status: int) -> bool:
    return status == 429 or status >= 500 or status < 400


class HttpSmsChannel:
    """SMS through an HTTP provider: POST JSON with a bearer key and the delivery id as Idempotency-Key."""

    def __init__(self, url: str, api_key: str, *, sender_id: str = "MonEspaceSante", timeout_s: float = 10,
                 client: httpx.Client | None = None) -> None:
        self._url, self._api_key = url, api_key
        self._sender_id = sender_id
        self._timeout_s = timeout_s
        self._client = client or httpx.Client(timeout=timeout_s)

    def send(self, outgoing: Outgoing) -> SendResult:
        payload = sms_payload(outgoing, sender_id=self._sender_id)
        headers = {"Authorization": f"Bearer {self._api_key}", "Idempotency-Key": outgoing.delivery_id}
        response = _post(self._client, self._url, payload, headers=headers, timeout_s=self._timeout_s,
                         what="sms provider")
        status = response.status_code
        if 200 <= status < 300:
            data = _json(response)
            ref = data.get("id") or data.get("message_id")
            return SendResult(provider_ref=str(ref) if isinstance(ref, str | int) else outgoing.delivery_id)
        if _unavailable(status):
            raise ChannelUnavailable(f"sms provider {status}")
        code = _error_code(response)
        raise ChannelRefused(f"sms provider {status}: {code}" if code else f"sms provider {status}")

    def close(self) -> None:
        self._client.close()


class OutboxSmsChannel:
    """The embedded default with no SMS provider: each SMS is `<directory>/<delivery_id>.json`."""

    def __init__(self, directory: Path, *, sender_id: str = "MonEspaceSante") -> None:
        self._directory = Path(directory)
        self._sender_id = sender_id

    def send(self, outgoing: Outgoing) -> SendResult:
        payload = sms_payload(outgoing, sender_id=self._sender_id)
        name = f"{_delivery_id(outgoing)}.json"
        data = json.dumps(payload, ensure_ascii=False, indent=2).encode() + b"\n"
        write_atomically(self._directory, name, data)
        return SendResult(provider_ref=name, delivered=True)


class HttpPushChannel:
    """Push to a device: `outgoing.address` is the endpoint URL the device registered.

    The URL is the patient's: it is checked again at every send (connectors.outbound.url_guard: https, a
    public address after resolution, the checked address is the one connected to, no redirect, one
    deadline, a bounded answer).  A refused URL is a ChannelRefused (never retried)."""

    def __init__(self, *, timeout_s: float | None = None, policy: UrlPolicy | None = None,
                 resolve: Resolver = system_resolver) -> None:
        guard = policy or UrlPolicy()
        self._policy = guard if timeout_s is None else replace(guard, timeout_s=timeout_s)
        self._resolve = resolve

    def send(self, outgoing: Outgoing) -> SendResult:
        try:
            target = check_url(_address(outgoing), self._policy, resolve=self._resolve)
        except UrlRefused as refused:
            raise ChannelRefused(f"push endpoint refused: {refused.rule}") from None
        payload = {"title": outgoing.subject, "body": outgoing.text, "link": outgoing.link,
                   "id": _delivery_id(outgoing)}
        try:
            status = bounded_post(target, payload, policy=self._policy).status
        except DeadlinePassed:
            raise ChannelUnavailable("push endpoint timed out") from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, TLS, not HTTP
            raise ChannelUnavailable(f"push endpoint unreachable: {type(exc).__name__}") from None
        if 200 <= status < 300:
            return SendResult(provider_ref=outgoing.delivery_id)
        if status in (404, 410):
            raise ChannelRefused("push endpoint gone")
        if _unavailable(status):  # 3xx included: a redirect is not followed
            raise ChannelUnavailable(f"push endpoint {status}")
        raise ChannelRefused(f"push endpoint {status}")

    def close(self) -> None:
        """Nothing to release: every push opens its own connection to the checked address."""


class InAppChannel:
    """In-app: the notice row itself is the notification; nothing is sent, it is delivered at once."""

    def send(self, outgoing: Outgoing) -> SendResult:
        return SendResult(provider_ref=outgoing.delivery_id, delivered=True)
