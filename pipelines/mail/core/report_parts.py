"""The MIME parts every mail the hub writes is made of (pure, stdlib email): headers, report parts, the
returned original, attachments, header-safe values.

Owns: OUTPUT (CRLF, policy.SMTP, header text written as given), report_headers(), make_report()
(multipart/report), field_block() (a report's header block, folded here), original_part() (message/rfc822
or text/rfc822-headers), attachment_part(), make_message_id(), and clean(): every value that reaches a
header is stripped of CR, LF and other control characters (no header injection).
Does not: decide what a report says (pipelines.mail.core.reports, pipelines.mail.core.mdn).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

from pipelines.mail.core.mime import Attachment

#: CRLF output; header values given as text (report fields folded by _block, the returned original's
#: headers) are written as they are, not refolded into encoded words.
OUTPUT = policy.SMTP.clone(refold_source="none")
_PARSE_ERRORS: tuple[type[BaseException], ...] = (LookupError, ValueError, TypeError, AttributeError,
                                                  AssertionError, RecursionError)


def make_message_id(domain: str) -> str:
    """A fresh Message-ID: <uuid4@domain>; no host lookup (unlike email.utils.make_msgid)."""
    return f"<{uuid.uuid4().hex}@{clean(domain) or 'localhost'}>"


def report_headers(*, from_addr: str, to: Sequence[str], subject: str, now: datetime, message_id: str) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = clean(from_addr)
    msg["To"] = ", ".join(clean(a) for a in to)
    msg["Subject"] = clean(subject)
    msg["Date"] = format_datetime(aware(now))
    msg["Message-ID"] = clean(message_id)
    return msg


def make_report(msg: EmailMessage, report_type: str) -> None:
    """Turn a message with a text body into multipart/report; report-type=<report_type>."""
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", report_type)


def field_block(fields: Mapping[str, str]) -> EmailMessage:
    """A header block of a report part.  Values are folded here (compat32 keeps them as given), so the
    SMTP policy does not refold them right after the colon, which stdlib readers return with a leading space."""
    block = EmailMessage(policy=policy.compat32)
    for name, value in fields.items():
        block[name] = _folded(name, value) if value.isascii() else Header(value, "utf-8", header_name=name).encode(
            linesep="\r\n")
    return block


def _folded(name: str, value: str, width: int = 78) -> str:
    """`value` folded at spaces so that each line of "Name: value" stays within `width` where it can."""
    lines: list[str] = []
    current, budget = "", width - len(name) - 2
    for word in value.split(" "):
        if current and len(current) + 1 + len(word) > budget:
            lines.append(current)
            current, budget = word, width - 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def original_part(original: bytes, *, full: bool) -> EmailMessage:
    """message/rfc822 (full) or text/rfc822-headers; falls back to headers if the original will not re-serialise."""
    if full:
        try:
            inner = BytesParser(policy=policy.default).parsebytes(original)
            part = EmailMessage(policy=policy.SMTP)
            part.set_content(inner, cte="7bit" if original.isascii() else "8bit")
            part.as_bytes(policy=OUTPUT)  # fail here, not in the caller, on an unserialisable original
            return part
        except _PARSE_ERRORS:
            pass
    headers = _header_block(original)
    part = EmailMessage(policy=policy.SMTP)
    part.set_content(headers, subtype="rfc822-headers", cte="7bit" if headers.isascii() else "8bit")
    return part


def _header_block(original: bytes) -> str:
    end = min((i for i in (original.find(b"\r\n\r\n"), original.find(b"\n\n")) if i >= 0), default=len(original))
    return original[:end].decode("utf-8", errors="replace").replace("\r\n", "\n") + "\n"


def attachment_part(attachment: Attachment) -> EmailMessage:
    part = EmailMessage(policy=policy.SMTP)
    maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
    part.set_content(attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                     disposition="attachment", filename=clean(attachment.filename) or None)
    return part


def clean(value: str) -> str:
    """One header-safe line: control characters (CR, LF, NUL...) become spaces, then trimmed."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip("<> ")
