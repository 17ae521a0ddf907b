"""The pure half of the SMTP gateway: ESMTP parameters, xtext, trace headers and loop counting.

Owns: parsing MAIL and RCPT parameters (SIZE, BODY, SMTPUTF8, AUTH, and the RFC 3461 DSN parameters
RET, ENVID, NOTIFY, ORCPT: validated, xtext-decoded, case kept) into MailParams / RcptParams, or a
Refused carrying the exact reply; counting `Received:` headers; writing our own trace header; and
redacting addresses for logs (`*@domain`: a patient's local part is an INS).
Does not: hold a session or a socket (connectors.inbound.smtp) or decide who may write to whom.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import format_datetime
from typing import Any

ENVID_MAX = 100  # RFC 3461 §4.4
ORCPT_MAX = 500  # RFC 3461 §4.2


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


def one_line(text: str, limit: int = 200) -> str:
    return "".join(ch if " " <= ch <= "~" else " " for ch in text)[:limit] or "refused"
