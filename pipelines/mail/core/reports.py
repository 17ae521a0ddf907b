"""Mail the hub writes itself: delivery status notifications, disposition notifications, new messages.

Owns: build_dsn() (RFC 3464 bounce / delay / success report, honouring RFC 3461 NOTIFY, ORCPT, RET,
ENVID), build_mdn() (RFC 8098 receipt, MSSanté forms of DOMAIN §4.4), build_message() (a new
RFC 5322 message: patient replies, the patient -> pharmacy prescription mail), make_message_id(), and
report_id(): the submission id a report is queued under, derived from what it reports, so the same
report queued twice (a redelivery after a crash) is one submission.
All return bytes with CRLF line endings (policy.SMTP), ready for an SMTP DATA.
Does not: send anything, choose the envelope (DSNs and MDNs go out with a null MAIL FROM:<>; the caller
does that), decide retries (hub.retry) or log.

Rule 1: no DSN to a null sender, no MDN without Disposition-Notification-To, no MDN about a report:
        the builders return None, which is how mail loops are avoided.
Rule 2: every value that reaches a header is stripped of CR, LF and other control characters
        (no header injection from an envelope, a reply text or a subject).
Rule 3: a DSN returns the full original only when the sender asked RET=FULL and a delivery failed;
        otherwise only its headers (RFC 3461 §4.3; less health data travels back).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from enum import StrEnum

from hub.delivery import Outcome, RecipientResult
from hub.findings import Finding
from hub.mailqueue import Reply, SmtpEnvelope, SmtpRecipient
from pipelines.mail.core.mime import Attachment, ParsedMail

#: CRLF output; header values given as text (report fields folded by _block, the returned original's
#: headers) are written as they are, not refolded into encoded words.
_OUTPUT = policy.SMTP.clone(refold_source="none")
_PARSE_ERRORS: tuple[type[BaseException], ...] = (LookupError, ValueError, TypeError, AttributeError,
                                                  AssertionError, RecursionError)


# -- DSN (RFC 3464) ---------------------------------------------------------------------------------


class DsnAction(StrEnum):
    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"  # handed to a next hop that does not report DSNs


#: action -> the RFC 3461 NOTIFY event that asks for it.
NOTIFY_EVENT: Mapping[DsnAction, str] = {
    DsnAction.FAILED: "FAILURE", DsnAction.DELAYED: "DELAY",
    DsnAction.DELIVERED: "SUCCESS", DsnAction.RELAYED: "SUCCESS",
}
#: delivery outcome -> DSN action.
OUTCOME_ACTION: Mapping[Outcome, DsnAction] = {
    Outcome.PERMANENT: DsnAction.FAILED, Outcome.TRANSIENT: DsnAction.DELAYED, Outcome.DELIVERED: DsnAction.DELIVERED,
}
#: most important action present -> (subject, French sentence, English sentence).
_DSN_TEXT: Mapping[DsnAction, tuple[str, str, str]] = {
    DsnAction.FAILED: ("Message non distribué / Undelivered Mail Returned to Sender",
                       "Votre message n'a pas pu être remis au(x) destinataire(s) ci-dessous.",
                       "Your message could not be delivered to the recipient(s) below."),
    DsnAction.DELAYED: ("Distribution retardée / Delayed Mail (still being retried)",
                        "Votre message n'a pas encore pu être remis ; de nouvelles tentatives auront lieu.",
                        "Your message could not be delivered yet; delivery will be retried."),
    DsnAction.DELIVERED: ("Message distribué / Successful Mail Delivery Report",
                          "Votre message a été remis au(x) destinataire(s) ci-dessous.",
                          "Your message was delivered to the recipient(s) below."),
    DsnAction.RELAYED: ("Message relayé / Mail Relayed",
                        "Votre message a été transmis au serveur suivant, qui ne renvoie pas d'avis de remise.",
                        "Your message was relayed to a server that does not send delivery reports."),
}
_ACTION_FR: Mapping[DsnAction, str] = {
    DsnAction.FAILED: "échec", DsnAction.DELAYED: "retardé", DsnAction.DELIVERED: "remis", DsnAction.RELAYED: "relayé",
}
_DSN_PRIORITY = (DsnAction.FAILED, DsnAction.DELAYED, DsnAction.DELIVERED, DsnAction.RELAYED)


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One recipient line of a DSN: who, what happened, and the reply that says so."""

    recipient: SmtpRecipient
    action: DsnAction
    reply: Reply
    remote_mta: str = ""  # host name of the server that answered, "" for our own decision
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None  # for DELAYED


def dsn_recipients(envelope: SmtpEnvelope, results: Iterable[RecipientResult], *,
                   last_attempt: datetime | None = None) -> tuple[DsnRecipient, ...]:
    """DsnRecipients for delivery results, with the NOTIFY/ORCPT given at RCPT time for each address."""
    by_address = {r.address.lower(): r for r in envelope.recipients}
    return tuple(
        DsnRecipient(recipient=by_address.get(result.address.lower(), SmtpRecipient(result.address)),
                     action=OUTCOME_ACTION[result.outcome], reply=result.reply, remote_mta=result.remote_host,
                     last_attempt=last_attempt)
        for result in results
    )


def build_dsn(envelope: SmtpEnvelope, recipients: Sequence[DsnRecipient], *, original: bytes, hub_host: str,
              hub_domain: str, now: datetime, message_id: str | None = None) -> bytes | None:
    """A multipart/report; report-type=delivery-status for the recipients whose NOTIFY asks for it.

    None for a null sender (<>), or when no recipient wants this report (NOTIFY=NEVER, or e.g. a
    success nobody asked for).  From MAILER-DAEMON@hub_domain to the envelope sender.
    """
    if _clean(envelope.mail_from).strip("<> ") == "":
        return None
    wanted = [r for r in recipients if r.recipient.wants(NOTIFY_EVENT[r.action])]
    if not wanted:
        return None
    main = next(a for a in _DSN_PRIORITY if any(r.action is a for r in wanted))
    subject, fr, en = _DSN_TEXT[main]
    msg = _headers(from_addr=f"MAILER-DAEMON@{_clean(hub_domain)}", to=[envelope.mail_from], subject=subject,
                   now=now, message_id=message_id or make_message_id(hub_domain))
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(_dsn_text(wanted, fr, en, hub_host), cte="quoted-printable")
    _make_report(msg, "delivery-status")
    msg.attach(_delivery_status(envelope, wanted, hub_host=hub_host, now=now))
    full = envelope.ret.upper() == "FULL" and main is DsnAction.FAILED
    msg.attach(_original_part(original, full=full))
    return msg.as_bytes(policy=_OUTPUT)


def _dsn_text(recipients: Sequence[DsnRecipient], fr: str, en: str, hub_host: str) -> str:
    def listing(words: Mapping[DsnAction, str]) -> str:
        return "\n".join(f"<{_clean(r.recipient.address)}> : {words[r.action]} ({_clean(str(r.reply))})"
                         for r in recipients)
    host = _clean(hub_host)
    return (f"Ceci est le service de messagerie de {host}.\n{fr}\n\n{listing(_ACTION_FR)}\n\n"
            f"This is the mail system at {host}.\n{en}\n\n{listing({a: str(a) for a in DsnAction})}\n")


def _delivery_status(envelope: SmtpEnvelope, recipients: Sequence[DsnRecipient], *, hub_host: str,
                     now: datetime) -> EmailMessage:
    part = EmailMessage(policy=policy.SMTP)
    part["Content-Type"] = "message/delivery-status"
    fields = {"Reporting-MTA": f"dns; {_clean(hub_host)}"}
    if envelope.envid:
        fields["Original-Envelope-Id"] = _clean(envelope.envid)
    fields["Arrival-Date"] = format_datetime(_arrival(envelope.received_at, now))
    part.attach(_block(fields))
    for recipient in recipients:
        part.attach(_block(_recipient_fields(recipient)))
    return part


def _recipient_fields(r: DsnRecipient) -> dict[str, str]:
    fields: dict[str, str] = {}
    if r.recipient.orcpt:
        orcpt = _clean(r.recipient.orcpt)
        fields["Original-Recipient"] = orcpt if ";" in orcpt else f"rfc822;{orcpt}"
    fields["Final-Recipient"] = f"rfc822;{_clean(r.recipient.address)}"
    fields["Action"] = str(r.action)
    fields["Status"] = _clean(r.reply.status)
    if r.remote_mta:
        fields["Remote-MTA"] = f"dns; {_clean(r.remote_mta)}"
    fields["Diagnostic-Code"] = f"smtp; {_clean(str(r.reply))}"
    if r.last_attempt is not None:
        fields["Last-Attempt-Date"] = format_datetime(_aware(r.last_attempt))
    if r.will_retry_until is not None and r.action is DsnAction.DELAYED:
        fields["Will-Retry-Until"] = format_datetime(_aware(r.will_retry_until))
    return fields


def _arrival(received_at: str, now: datetime) -> datetime:
    try:
        return _aware(datetime.fromisoformat(received_at))
    except ValueError:
        return _aware(now)


# -- MDN (RFC 8098) ---------------------------------------------------------------------------------


class MdnDisposition(StrEnum):
    """The Disposition field value (RFC 8098 §3.2.6) for each receipt the hub sends."""

    DISPLAYED = "manual-action/MDN-sent-manually; displayed"  # the patient opened it
    PROCESSED = "automatic-action/MDN-sent-automatically; processed"  # integrated
    ERROR = "automatic-action/MDN-sent-automatically; processed/error"  # integration failed
    DELETED = "manual-action/MDN-sent-manually; deleted"


#: disposition -> (French, English) human-readable sentence.
_MDN_TEXT: Mapping[MdnDisposition, tuple[str, str]] = {
    MdnDisposition.DISPLAYED: ("Le message a été affiché par son destinataire.",
                               "The message was displayed by its recipient."),
    MdnDisposition.PROCESSED: ("Le message a été intégré.", "The message was processed."),
    MdnDisposition.ERROR: ("Le message ci-dessous n'a pas pu être intégré automatiquement pour la raison "
                           "suivante : {error}", "The message below could not be processed automatically, "
                           "for this reason: {error}"),
    MdnDisposition.DELETED: ("Le message a été supprimé sans être nécessairement lu.",
                             "The message was deleted, possibly without being read."),
}


class ReturnContent(StrEnum):
    FULL = "full"  # message/rfc822
    HEADERS = "headers"  # text/rfc822-headers
    NONE = "none"


def build_mdn(original: ParsedMail, *, final_recipient: str, disposition: MdnDisposition, reporting_ua: str,
              now: datetime, original_bytes: bytes = b"", return_content: ReturnContent = ReturnContent.FULL,
              original_recipient: str = "", error: str = "", message_id: str | None = None,
              reattach: Sequence[Attachment] = ()) -> bytes | None:
    """A multipart/report; report-type=disposition-notification to the original's Disposition-Notification-To.

    None when the original asked for no MDN or is itself a report (no loops).  `error` is
    "<code>^<libellé>" (DOMAIN §4.4): with ERROR it gives the MSSanté form
    `processed/Error: <code>^<libellé>`, an RFC 8098 `Error:` field and the subject prefix
    `[KO Intégration système !][<code>]`.  `reattach` adds files after the report (MSSanté asks
    for IHE_XDM.ZIP and the PDF).
    """
    if not original.disposition_notification_to or original.content_type == "multipart/report":
        return None
    error = _clean(error)
    subject = _clean(original.subject)
    if disposition is MdnDisposition.ERROR:
        subject = f"[KO Intégration système !][{error.split('^', 1)[0]}] {subject}".strip()
    msg = _headers(from_addr=final_recipient, to=[original.disposition_notification_to], subject=subject, now=now,
                   message_id=message_id or make_message_id(_domain_of(final_recipient)))
    if disposition.value.startswith("automatic-action"):
        msg["Auto-Submitted"] = "auto-replied"
    fr, en = _MDN_TEXT[disposition]
    msg.set_content(f"{fr.format(error=error)}\n\n{en.format(error=error)}\n", cte="quoted-printable")
    _make_report(msg, "disposition-notification")
    msg.attach(_disposition_part(original, final_recipient=final_recipient, disposition=disposition,
                                 reporting_ua=reporting_ua, original_recipient=original_recipient, error=error))
    if original_bytes and return_content is not ReturnContent.NONE:
        msg.attach(_original_part(original_bytes, full=return_content is ReturnContent.FULL))
    for attachment in reattach:
        msg.attach(_attachment_part(attachment))
    return msg.as_bytes(policy=_OUTPUT)


def _disposition_part(original: ParsedMail, *, final_recipient: str, disposition: MdnDisposition,
                      reporting_ua: str, original_recipient: str, error: str) -> EmailMessage:
    fields = {"Reporting-UA": _clean(reporting_ua)}
    orcpt = _clean(original_recipient or original.original_recipient)
    if orcpt:
        fields["Original-Recipient"] = orcpt if ";" in orcpt else f"rfc822;{orcpt}"
    fields["Final-Recipient"] = f"rfc822;{_clean(final_recipient)}"
    if original.message_id:
        fields["Original-Message-ID"] = _clean(original.message_id)
    value = str(disposition)
    if disposition is MdnDisposition.ERROR and error:
        value = value.removesuffix("/error") + f"/Error: {error}"
    fields["Disposition"] = value
    if error and disposition is MdnDisposition.ERROR:
        fields["Error"] = error
    part = EmailMessage(policy=policy.SMTP)
    part["Content-Type"] = "message/disposition-notification"
    part.attach(_block(fields))
    return part


# -- new messages -----------------------------------------------------------------------------------


def build_message(*, from_addr: str, to_addrs: Sequence[str], subject: str, text: str, now: datetime,
                  message_id: str | None = None, cc_addrs: Sequence[str] = (), in_reply_to: str = "",
                  references: Sequence[str] = (), mss_headers: Mapping[str, str] | None = None,
                  attachments: Sequence[Attachment] = (), disposition_notification_to: str = "") -> bytes:
    """A new RFC 5322 message: text body (quoted-printable) then attachments.

    `mss_headers` names must start with "X-MSS-" (ValueError otherwise: a programming error).
    For a reply, reply_threading(original) gives `in_reply_to` and `references`.
    """
    msg = _headers(from_addr=from_addr, to=to_addrs, subject=subject, now=now,
                   message_id=message_id or make_message_id(_domain_of(from_addr)))
    if cc_addrs:
        msg["Cc"] = ", ".join(_clean(a) for a in cc_addrs)
    if in_reply_to:
        msg["In-Reply-To"] = _clean(in_reply_to)
    if references:
        msg["References"] = " ".join(_clean(r) for r in references)
    if disposition_notification_to:
        msg["Disposition-Notification-To"] = _clean(disposition_notification_to)
    for name, value in (mss_headers or {}).items():
        if not name.upper().startswith("X-MSS-"):
            raise ValueError(f"not an X-MSS-* header: {name!r}")
        msg[name.upper()] = _clean(value)
    msg.set_content(text, cte="quoted-printable")
    for attachment in attachments:
        maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=_clean(attachment.filename) or None)
    return msg.as_bytes(policy=_OUTPUT)


def reply_threading(original: ParsedMail) -> tuple[str, tuple[str, ...]]:
    """(In-Reply-To, References) for a reply to `original` (RFC 5322 §3.6.4)."""
    if not original.message_id:
        return "", original.references
    return original.message_id, (*original.references, original.message_id)


def make_message_id(domain: str) -> str:
    """A fresh Message-ID: <uuid4@domain>; no host lookup (unlike email.utils.make_msgid)."""
    return f"<{uuid.uuid4().hex}@{_clean(domain) or 'localhost'}>"


# -- report identity --------------------------------------------------------------------------------

_TIME_PART = re.compile(r"[0-9a-f]{12}")


def report_id(about: str, kind: str, recipients: Iterable[str] = ()) -> str:
    """The submission id of the report of `kind` about submission `about` for `recipients`.

    Same shape as hub.intake.new_submission_id() (32 lowercase hex): the 12 hex time part of `about`
    (so a report sorts beside what it reports; 12 hex of the digest when `about` has none), then 20 hex
    of SHA-256 over (about, kind, the recipients lower-cased and sorted).  `kind` names the event:
    "dsn:failed", "dsn:delayed,failed", "mdn:processed", "notice"...  The same inputs always give the
    same id; any other report (another event, another recipient set) gets another."""
    identity = "\n".join((about, kind, *sorted({r.strip().lower() for r in recipients})))
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()
    time_part = about[:12] if _TIME_PART.fullmatch(about[:12]) else digest[-12:]
    return time_part + digest[:20]


# -- shared helpers ---------------------------------------------------------------------------------


def _headers(*, from_addr: str, to: Sequence[str], subject: str, now: datetime, message_id: str) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _clean(from_addr)
    msg["To"] = ", ".join(_clean(a) for a in to)
    msg["Subject"] = _clean(subject)
    msg["Date"] = format_datetime(_aware(now))
    msg["Message-ID"] = _clean(message_id)
    return msg


def _make_report(msg: EmailMessage, report_type: str) -> None:
    """Turn a message with a text body into multipart/report; report-type=<report_type>."""
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", report_type)


def _block(fields: Mapping[str, str]) -> EmailMessage:
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


def _original_part(original: bytes, *, full: bool) -> EmailMessage:
    """message/rfc822 (full) or text/rfc822-headers; falls back to headers if the original will not re-serialise."""
    if full:
        try:
            inner = BytesParser(policy=policy.default).parsebytes(original)
            part = EmailMessage(policy=policy.SMTP)
            part.set_content(inner, cte="7bit" if original.isascii() else "8bit")
            part.as_bytes(policy=_OUTPUT)  # fail here, not in the caller, on an unserialisable original
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


def _attachment_part(attachment: Attachment) -> EmailMessage:
    part = EmailMessage(policy=policy.SMTP)
    maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
    part.set_content(attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                     disposition="attachment", filename=_clean(attachment.filename) or None)
    return part


def _clean(value: str) -> str:
    """One header-safe line: control characters (CR, LF, NUL...) become spaces, then trimmed."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip("<> ")


# -- integration results (one per mail, once every document it filed is final) ----------------------


def integration_error(errors: Sequence[Finding]) -> str:
    """The MSSanté `<code>^<libellé>` of a failed integration: the first error that has a DMP code, with its
    own rule; else 906 ("autre", DOMAIN §4.6) with the first error's rule."""
    coded = next((f for f in errors if f.code), None)
    return f"{coded.code}^{coded.rule}" if coded is not None else f"906^{errors[0].rule}" if errors else ""


def build_integration_mdn(original: ParsedMail, *, final_recipient: str, reporting_ua: str, now: datetime,
                          message_id: str, errors: Sequence[Finding] = (), original_bytes: bytes = b"",
                          reattach: Sequence[Attachment] = ()) -> bytes | None:
    """The integration result of a mail as one MDN: `processed` without errors; otherwise
    `processed/Error: <code>^<libellé>` (integration_error) with a text that lists every error on a line of
    its own (where, i.e. the XDM entry; the rule; the DMP code; what to do), and `reattach` after the report.

    Rule 1 as for build_mdn: None without Disposition-Notification-To or about a report.  Deterministic:
    the Message-ID is given and the MIME boundary derives from it, so the same inputs give the same bytes
    (a report queued again is the same mail, under the same object key)."""
    if not original.disposition_notification_to or original.content_type == "multipart/report":
        return None
    disposition = MdnDisposition.ERROR if errors else MdnDisposition.PROCESSED
    error = _clean(integration_error(errors))
    subject = _clean(original.subject)
    if errors:
        subject = f"[KO Intégration système !][{error.split('^', 1)[0]}] {subject}".strip()
    msg = _headers(from_addr=final_recipient, to=[original.disposition_notification_to], subject=subject, now=now,
                   message_id=message_id)
    msg["Auto-Submitted"] = "auto-replied"
    fr, en = _MDN_TEXT[disposition]
    msg.set_content(f"{fr.format(error=error)}\n{integration_listing(errors, english=False)}\n"
                    f"{en.format(error=error)}\n{integration_listing(errors, english=True)}", cte="quoted-printable")
    _make_report(msg, "disposition-notification")
    msg.set_boundary(_boundary(message_id))
    msg.attach(_disposition_part(original, final_recipient=final_recipient, disposition=disposition,
                                 reporting_ua=reporting_ua, original_recipient="", error=error))
    if original_bytes:
        msg.attach(_original_part(original_bytes, full=True))
    for attachment in reattach if errors else ():
        msg.attach(_attachment_part(attachment))
    return msg.as_bytes(policy=_OUTPUT)


def build_integration_notice(original: ParsedMail, *, from_addr: str, errors: Sequence[Finding], now: datetime,
                             message_id: str) -> bytes:
    """The plain RFC 5322 notice MSSanté asks for when an integration failed and no MDN was asked for
    (DOMAIN §4.4), listing every error like build_integration_mdn; deterministic for the same inputs."""
    text = (f"Le message {original.message_id} n'a pas pu être intégré dans le dossier du patient.\n"
            f"{integration_listing(errors, english=False)}\n"
            f"The message {original.message_id} could not be filed in the patient's record.\n"
            f"{integration_listing(errors, english=True)}")
    return build_message(from_addr=from_addr, to_addrs=[original.from_addr],
                         subject=f"[KO Intégration système !] {_clean(original.subject)}".strip(), text=text, now=now,
                         message_id=message_id, in_reply_to=original.message_id)


def integration_listing(errors: Sequence[Finding], *, english: bool) -> str:
    """One line per error: `- <where> [<rule>] (code <code>) <what to do>`; "" without errors."""
    lines = [f"- {_clean(f.location)} [{_clean(f.rule)}]{f' (code {_clean(f.code)})' if f.code else ''} "
             f"{_clean(f.message_en if english else f.message_fr)}" for f in errors]
    return "".join(f"{line}\n" for line in lines)


def _boundary(message_id: str) -> str:
    return "=_mes_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
