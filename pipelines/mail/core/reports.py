"""Mail the hub writes itself: delivery status notifications and new messages (MDNs: pipelines.mail.core.mdn).

Owns: build_dsn() (RFC 3464 bounce / delay / success report, honouring RFC 3461 NOTIFY, ORCPT, RET,
ENVID), build_message() (a new RFC 5322 message: patient replies, the patient -> pharmacy prescription
mail), and report_id(): the submission id a report is queued under, derived from what it reports, so the
same report queued twice (a redelivery after a crash) is one submission.  The parts they are made of
(headers, report parts, make_message_id) are in pipelines.mail.core.report_parts.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum

from hub.delivery import Outcome, RecipientResult
from hub.mailqueue import Reply, SmtpEnvelope, SmtpRecipient
from pipelines.mail.core.mime import Attachment, ParsedMail
from pipelines.mail.core.report_parts import (
    OUTPUT,
    aware,
    clean,
    domain_of,
    field_block,
    make_message_id,
    make_report,
    original_part,
    report_headers,
)

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
    if clean(envelope.mail_from).strip("<> ") == "":
        return None
    wanted = [r for r in recipients if r.recipient.wants(NOTIFY_EVENT[r.action])]
    if not wanted:
        return None
    main = next(a for a in _DSN_PRIORITY if any(r.action is a for r in wanted))
    subject, fr, en = _DSN_TEXT[main]
    msg = report_headers(from_addr=f"MAILER-DAEMON@{clean(hub_domain)}", to=[envelope.mail_from], subject=subject,
                   now=now, message_id=message_id or make_message_id(hub_domain))
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(_dsn_text(wanted, fr, en, hub_host), cte="quoted-printable")
    make_report(msg, "delivery-status")
    msg.attach(_delivery_status(envelope, wanted, hub_host=hub_host, now=now))
    full = envelope.ret.upper() == "FULL" and main is DsnAction.FAILED
    msg.attach(original_part(original, full=full))
    return msg.as_bytes(policy=OUTPUT)


def _dsn_text(recipients: Sequence[DsnRecipient], fr: str, en: str, hub_host: str) -> str:
    def listing(words: Mapping[DsnAction, str]) -> str:
        return "\n".join(f"<{clean(r.recipient.address)}> : {words[r.action]} ({clean(str(r.reply))})"
                         for r in recipients)
    host = clean(hub_host)
    return (f"Ceci est le service de messagerie de {host}.\n{fr}\n\n{listing(_ACTION_FR)}\n\n"
            f"This is the mail system at {host}.\n{en}\n\n{listing({a: str(a) for a in DsnAction})}\n")


def _delivery_status(envelope: SmtpEnvelope, recipients: Sequence[DsnRecipient], *, hub_host: str,
                     now: datetime) -> EmailMessage:
    part = EmailMessage(policy=policy.SMTP)
    part["Content-Type"] = "message/delivery-status"
    fields = {"Reporting-MTA": f"dns; {clean(hub_host)}"}
    if envelope.envid:
        fields["Original-Envelope-Id"] = clean(envelope.envid)
    fields["Arrival-Date"] = format_datetime(_arrival(envelope.received_at, now))
    part.attach(field_block(fields))
    for recipient in recipients:
        part.attach(field_block(_recipient_fields(recipient)))
    return part


def _recipient_fields(r: DsnRecipient) -> dict[str, str]:
    fields: dict[str, str] = {}
    if r.recipient.orcpt:
        orcpt = clean(r.recipient.orcpt)
        fields["Original-Recipient"] = orcpt if ";" in orcpt else f"rfc822;{orcpt}"
    fields["Final-Recipient"] = f"rfc822;{clean(r.recipient.address)}"
    fields["Action"] = str(r.action)
    fields["Status"] = clean(r.reply.status)
    if r.remote_mta:
        fields["Remote-MTA"] = f"dns; {clean(r.remote_mta)}"
    fields["Diagnostic-Code"] = f"smtp; {clean(str(r.reply))}"
    if r.last_attempt is not None:
        fields["Last-Attempt-Date"] = format_datetime(aware(r.last_attempt))
    if r.will_retry_until is not None and r.action is DsnAction.DELAYED:
        fields["Will-Retry-Until"] = format_datetime(aware(r.will_retry_until))
    return fields


def _arrival(received_at: str, now: datetime) -> datetime:
    try:
        return aware(datetime.fromisoformat(received_at))
    except ValueError:
        return aware(now)


# -- new messages -----------------------------------------------------------------------------------


def build_message(*, from_addr: str, to_addrs: Sequence[str], subject: str, text: str, now: datetime,
                  message_id: str | None = None, cc_addrs: Sequence[str] = (), in_reply_to: str = "",
                  references: Sequence[str] = (), mss_headers: Mapping[str, str] | None = None,
                  attachments: Sequence[Attachment] = (), disposition_notification_to: str = "") -> bytes:
    """A new RFC 5322 message: text body (quoted-printable) then attachments.

    `mss_headers` names must start with "X-MSS-" (ValueError otherwise: a programming error).
    For a reply, reply_threading(original) gives `in_reply_to` and `references`.
    """
    msg = report_headers(from_addr=from_addr, to=to_addrs, subject=subject, now=now,
                   message_id=message_id or make_message_id(domain_of(from_addr)))
    if cc_addrs:
        msg["Cc"] = ", ".join(clean(a) for a in cc_addrs)
    if in_reply_to:
        msg["In-Reply-To"] = clean(in_reply_to)
    if references:
        msg["References"] = " ".join(clean(r) for r in references)
    if disposition_notification_to:
        msg["Disposition-Notification-To"] = clean(disposition_notification_to)
    for name, value in (mss_headers or {}).items():
        if not name.upper().startswith("X-MSS-"):
            raise ValueError(f"not an X-MSS-* header: {name!r}")
        msg[name.upper()] = clean(value)
    msg.set_content(text, cte="quoted-printable")
    for attachment in attachments:
        maintype, _, subtype = (attachment.content_type or "application/octet-stream").partition("/")
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=clean(attachment.filename) or None)
    return msg.as_bytes(policy=OUTPUT)


def reply_threading(original: ParsedMail) -> tuple[str, tuple[str, ...]]:
    """(In-Reply-To, References) for a reply to `original` (RFC 5322 §3.6.4)."""
    if not original.message_id:
        return "", original.references
    return original.message_id, (*original.references, original.message_id)


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


