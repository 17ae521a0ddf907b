"""RFC 5322 / MIME mail bytes -> ParsedMail (headers, bodies, attachments) with findings.

Owns: MailLimits, ParsedMail, Attachment, MailReport, parse_mail() and the attachment finders
(find_xdm, find_pdfs).  Pure: stdlib `email` (policy.default) on bytes already in memory.
Does not: read the XDM zip (xdm.py), judge MSSanté rules (mss.py), build replies (reports.py),
log, or raise for a bad mail: every defect is a Finding, and the caller decides by severity.

Rule 1: the size cap and a cheap pre-count of multipart headers are checked before parsing, so a
        hostile nesting never reaches the (recursive) stdlib parser.
Rule 2: header values are read inside a guard: the stdlib header parser can raise on hostile
        input (IndexError, HeaderParseError...); such a header becomes a finding, not a crash.
Rule 3: messages name the rule and the part (IMAP-style section "1.2") or the header name, never a
        header value or body text: a subject carries the patient's name (DOMAIN §4.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email import errors, policy
from email.message import Message
from email.parser import BytesParser
from typing import TypeVar

from hub.findings import Finding, Severity

XDM_FILENAME = "ihe_xdm.zip"
_T = TypeVar("_T")
#: what the stdlib parser may raise on hostile input (all caught, reported as findings).
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    errors.MessageError, LookupError, ValueError, TypeError, AttributeError, AssertionError, RecursionError,
)
_MULTIPART_HEADER = re.compile(rb"^content-type:\s*multipart/", re.IGNORECASE | re.MULTILINE)
_MSG_ID = re.compile(r"<[^<>\s]{1,998}>")


@dataclass(frozen=True, slots=True)
class MailLimits:
    """Caps for one mail.  DOMAIN §4.5: no primary size figure, 25 MB for MES per third parties."""

    max_bytes: int = 25 * 1024 * 1024
    max_parts: int = 64  # MIME parts, multipart containers included
    max_depth: int = 8  # multipart / message nesting
    max_findings: int = 30


@dataclass(frozen=True, slots=True)
class Attachment:
    """A leaf part that is not the text or HTML body: its file name ("" if none), type and decoded bytes."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """What the hub needs from one mail.  Absent headers read as "" or (); addresses are addr-specs."""

    message_id: str
    from_addr: str
    to_addrs: tuple[str, ...]
    cc_addrs: tuple[str, ...]
    subject: str
    date: str
    in_reply_to: str
    references: tuple[str, ...]
    mss: Mapping[str, str]  # X-MSS-* headers, names upper-cased ("X-MSS-MES": "FIN")
    disposition_notification_to: str
    hop_count: int  # number of Received headers
    text_body: str  # first inline text/plain part, line endings normalised to LF
    html_body: str  # first inline text/html part, LF
    attachments: tuple[Attachment, ...]
    content_type: str = "text/plain"  # of the whole message, e.g. "multipart/report"
    original_recipient: str = ""  # Original-Recipient header (RFC 8098), as given
    auto_submitted: str = ""  # Auto-Submitted header (RFC 3834), lower-cased; "" when absent


@dataclass(frozen=True, slots=True)
class MailReport:
    mail: ParsedMail | None  # None when the bytes were refused before parsing
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


def parse_mail(raw: bytes, *, limits: MailLimits = MailLimits()) -> MailReport:
    """Parse untrusted mail bytes.  Never raises for a bad mail."""
    refused = _refuse_early(raw, limits)
    if refused is not None:
        return MailReport(None, (refused,))
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except _PARSE_ERRORS:
        return MailReport(None, (_malformed("/"),))
    sink = _Findings(limits.max_findings)
    body = _Body()
    _walk(msg, limits=limits, sink=sink, body=body)
    mail = _read_headers(msg, sink, body)
    no_from = () if mail.from_addr else (_finding("mime.no-from", "/header/From", *_NO_FROM),)
    return MailReport(mail, (*no_from, *sink.result()))  # never lost to the findings cap


def find_xdm(mail: ParsedMail) -> Attachment | None:
    """The IHE_XDM.ZIP attachment (name compared case-insensitively, any folder stripped), or None."""
    return next((a for a in mail.attachments if _basename(a.filename).casefold() == XDM_FILENAME), None)


def find_pdfs(mail: ParsedMail) -> tuple[Attachment, ...]:
    """Attachments typed application/pdf or named *.pdf (the human-readable copy, DOMAIN §4.1)."""
    return tuple(a for a in mail.attachments
                 if a.content_type == "application/pdf" or a.filename.casefold().endswith(".pdf"))


# -- refusal before parsing -------------------------------------------------------------------------


def _refuse_early(raw: bytes, limits: MailLimits) -> Finding | None:
    if len(raw) > limits.max_bytes:
        return _finding("mime.too-large", "/",
                        f"Le message fait {len(raw)} octets, au-delà de la limite de {limits.max_bytes} octets.",
                        f"The message is {len(raw)} bytes, over the {limits.max_bytes}-byte limit.")
    if len(_MULTIPART_HEADER.findall(raw)) > limits.max_parts:
        return _too_many_parts("/", limits.max_parts)
    return None


# -- walking the parts ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Body:
    """Mutable accumulator while walking (private)."""

    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    parts: int = 0


class _Findings:
    """Collects findings once per (rule, location), up to a cap."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: dict[tuple[str, str], Finding] = {}

    def add(self, finding: Finding) -> None:
        key = (finding.rule, finding.location)
        if key not in self._seen and len(self._seen) < self._cap:
            self._seen[key] = finding

    def result(self) -> tuple[Finding, ...]:
        return tuple(self._seen.values())


def _walk(part: Message, *, limits: MailLimits, sink: _Findings, body: _Body, section: str = "",
          depth: int = 0) -> None:
    """Depth-first over the parts; stops (with a finding) at the part or depth cap."""
    body.parts += 1
    location = f"/{section}" if section else "/"
    if body.parts > limits.max_parts:
        sink.add(_too_many_parts(location, limits.max_parts))
        return
    if depth > limits.max_depth:
        sink.add(_finding("mime.too-deep", location,
                          f"Imbrication MIME au-delà de {limits.max_depth} niveaux ; simplifiez le message.",
                          f"MIME nesting deeper than {limits.max_depth} levels; simplify the message."))
        return
    children = _guard(lambda: _children(part), None)
    if children is None:
        sink.add(_malformed(location))
        return
    if children:
        _defect_findings(part, location, sink)
        for index, child in enumerate(children, start=1):
            _walk(child, limits=limits, sink=sink, body=body, section=_child_section(section, index),
                  depth=depth + 1)
            if body.parts > limits.max_parts:
                return
        return
    if not _guard(lambda: _read_leaf(part, location, sink, body), False):
        sink.add(_malformed(location))
    _defect_findings(part, location, sink)  # after decoding, which adds base64 defects to the part


def _children(part: Message) -> list[Message]:
    """Sub-parts of a multipart; [] for a leaf.  message/rfc822 is kept whole, as an attachment."""
    if not part.is_multipart() or part.get_content_maintype() == "message":
        return []
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _child_section(section: str, index: int) -> str:
    return f"{section}.{index}" if section else str(index)


def _read_leaf(part: Message, location: str, sink: _Findings, body: _Body) -> bool:
    """File one leaf part as text body, HTML body or attachment.  True when done."""
    content_type = part.get_content_type()
    filename = part.get_filename() or ""
    data = _leaf_bytes(part)
    inline_text = not filename and part.get_content_disposition() != "attachment"
    if inline_text and content_type == "text/plain" and not body.text:
        body.text.append(_decode_text(part, data, location, sink))
    elif inline_text and content_type == "text/html" and not body.html:
        body.html.append(_decode_text(part, data, location, sink))
    else:
        body.attachments.append(Attachment(filename=filename, content_type=content_type, data=data))
    return True


def _leaf_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message":  # message/rfc822 kept whole
        inner = part.get_payload(0)
        return inner.as_bytes(policy=policy.default) if isinstance(inner, Message) else b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _decode_text(part: Message, data: bytes, location: str, sink: _Findings) -> str:
    charset = part.get_content_charset() or "us-ascii"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        sink.add(_finding("mime.charset", location,
                          "Jeu de caractères inconnu ; texte lu en UTF-8.",
                          "Unknown charset; text read as UTF-8.", severity=Severity.WARNING))
        return data.decode("utf-8", errors="replace")


# -- headers ----------------------------------------------------------------------------------------


def _read_headers(msg: Message, sink: _Findings, body: _Body) -> ParsedMail:
    raw = _raw_headers(msg)
    return ParsedMail(
        message_id=_first_msg_id(raw.get("message-id", "")),
        from_addr=next(iter(_addresses(msg, "From", sink)), ""),
        to_addrs=_addresses(msg, "To", sink),
        cc_addrs=_addresses(msg, "Cc", sink),
        subject=_text_header(msg, "Subject", sink),
        date=raw.get("date", "").strip(),
        in_reply_to=_first_msg_id(raw.get("in-reply-to", "")),
        references=tuple(_MSG_ID.findall(raw.get("references", ""))),
        mss=_mss_headers(msg),
        disposition_notification_to=next(iter(_addresses(msg, "Disposition-Notification-To", sink)), ""),
        hop_count=sum(1 for name, _ in msg.raw_items() if name.lower() == "received"),
        text_body=_lf("".join(body.text)),
        html_body=_lf("".join(body.html)),
        attachments=tuple(body.attachments),
        content_type=_guard(msg.get_content_type, "text/plain"),
        original_recipient=raw.get("original-recipient", "").strip(),
        auto_submitted=raw.get("auto-submitted", "").strip().lower(),
    )


def _raw_headers(msg: Message) -> dict[str, str]:
    """First raw (unparsed, unfolded) value of each header, by lower-cased name."""
    raw: dict[str, str] = {}
    for name, value in msg.raw_items():
        raw.setdefault(name.lower(), " ".join(str(value).split()))
    return raw


def _first_msg_id(value: str) -> str:
    found = _MSG_ID.search(value)
    return found.group(0) if found else ""


def _addresses(msg: Message, name: str, sink: _Findings) -> tuple[str, ...]:
    """addr-specs of an address header, parsed as one whatever its name (Disposition-Notification-To is
    not in the stdlib registry); incomplete mailboxes dropped; a value that breaks the parser -> finding."""
    values = [str(v) for n, v in msg.raw_items() if n.lower() == name.lower()]
    if not values:
        return ()
    unfolded = " ".join(values[0].splitlines())
    header = _guard(lambda: policy.default.header_factory("To", unfolded), None)
    if header is None:
        sink.add(_bad_header(name))
        return ()
    return tuple(a.addr_spec for a in getattr(header, "addresses", ()) if a.username and a.domain)


def _text_header(msg: Message, name: str, sink: _Findings) -> str:
    value = _guard(lambda: msg.get(name), None)
    if value is None and name in msg:
        sink.add(_bad_header(name))
    return "" if value is None else str(value)


def _mss_headers(msg: Message) -> dict[str, str]:
    """X-MSS-* headers by upper-cased name (first occurrence wins), values unfolded and stripped."""
    found: dict[str, str] = {}
    for name, value in msg.raw_items():
        if name.upper().startswith("X-MSS-"):
            found.setdefault(name.strip().upper(), " ".join(str(value).split()))
    return found


# -- defects -> findings ----------------------------------------------------------------------------

#: stdlib defect class -> (rule, severity).  Structure and encoding losses are errors; the rest warnings.
_DEFECTS: Mapping[str, tuple[str, Severity]] = {
    "NoBoundaryInMultipartDefect": ("mime.malformed", Severity.ERROR),
    "StartBoundaryNotFoundDefect": ("mime.malformed", Severity.ERROR),
    "MultipartInvariantViolationDefect": ("mime.malformed", Severity.ERROR),
    "CloseBoundaryNotFoundDefect": ("mime.malformed", Severity.WARNING),
    "MissingHeaderBodySeparatorDefect": ("mime.malformed", Severity.WARNING),
    "InvalidMultipartContentTransferEncodingDefect": ("mime.malformed", Severity.WARNING),
    "InvalidBase64PaddingDefect": ("mime.bad-encoding", Severity.ERROR),
    "InvalidBase64CharactersDefect": ("mime.bad-encoding", Severity.ERROR),
    "InvalidBase64LengthDefect": ("mime.bad-encoding", Severity.ERROR),
    "UndecodableBytesDefect": ("mime.bad-encoding", Severity.WARNING),
}
#: rule -> (French, English).
_DEFECT_TEXT: Mapping[str, tuple[str, str]] = {
    "mime.malformed": ("Structure MIME incorrecte (frontière absente ou incomplète) ; le contenu peut être "
                       "incomplet.", "Malformed MIME structure (missing or incomplete boundary); content may be "
                       "incomplete."),
    "mime.bad-encoding": ("Encodage de transfert invalide (base64) ; le contenu décodé n'est pas fiable.",
                          "Invalid transfer encoding (base64); the decoded content cannot be trusted."),
    "mime.bad-header": ("En-tête mal formé ; il a été lu au mieux.", "Malformed header; read on a best-effort basis."),
}
_NO_FROM = ("Aucune adresse d'expéditeur (From) utilisable ; ajoutez un en-tête From valide.",
            "No usable sender address (From); add a valid From header.")


def _defect_findings(part: Message, location: str, sink: _Findings) -> None:
    for defect in part.defects:
        name = type(defect).__name__
        rule, severity = _DEFECTS.get(name, ("mime.bad-header" if isinstance(defect, errors.HeaderDefect)
                                             else "mime.malformed", Severity.WARNING))
        sink.add(_finding(rule, location, *_DEFECT_TEXT[rule], severity=severity))
    for name in part:
        if not _header_clean(part, name):
            sink.add(_bad_header(name))


def _header_clean(part: Message, name: str) -> bool:
    """False when the header breaks the stdlib parser or parses with defects."""
    try:
        return not getattr(part.get(name), "defects", ())
    except _PARSE_ERRORS:
        return False


def _bad_header(name: str) -> Finding:
    fr, en = _DEFECT_TEXT["mime.bad-header"]
    return _finding("mime.bad-header", f"/header/{_safe_name(name)}", fr, en, severity=Severity.WARNING)


def _malformed(location: str) -> Finding:
    return _finding("mime.malformed", location, *_DEFECT_TEXT["mime.malformed"])


def _too_many_parts(location: str, limit: int) -> Finding:
    return _finding("mime.too-many-parts", location,
                    f"Le message compte plus de {limit} parties MIME ; réduisez le nombre de pièces jointes.",
                    f"The message has more than {limit} MIME parts; send fewer attachments.")


def _finding(rule: str, location: str, fr: str, en: str, *, severity: Severity = Severity.ERROR) -> Finding:
    return Finding(rule=rule, location=location, message_fr=fr, message_en=en, severity=severity)


# -- small helpers ----------------------------------------------------------------------------------


def _guard(read: Callable[[], _T], default: _T) -> _T:
    """read(), or `default` when the stdlib parser raises on hostile input."""
    try:
        return read()
    except _PARSE_ERRORS:
        return default


def _safe_name(name: str) -> str:
    """A header name fit for a finding location: printable ASCII, at most 64 characters."""
    return "".join(c if 32 < ord(c) < 127 else "?" for c in name)[:64]


def _lf(text: str) -> str:
    """Line endings normalised to LF (a mail received over SMTP has CRLF)."""
    return text.replace("\r\n", "\n")


def _basename(filename: str) -> str:
    return re.split(r"[/\\]", filename)[-1]

