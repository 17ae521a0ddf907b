"""Disposition notifications (RFC 8098) the hub writes: receipts, and the integration result of a mail.

Owns: build_mdn() (an RFC 8098 receipt, MSSanté forms of DOMAIN §4.4), and the integration result of a
mail once every document it filed is final: build_integration_mdn() (one MDN, `processed` or
`processed/Error: <code>^<libellé>`), build_integration_notice() (the plain notice when no MDN was asked
for), integration_error() and integration_listing().  Rule: no MDN without Disposition-Notification-To,
no MDN about a report (the builders return None: no mail loops).
Does not: send anything or build DSNs and new messages (pipelines.mail.core.reports).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from email import policy
from email.message import EmailMessage
from enum import StrEnum

from hub.findings import Finding
from pipelines.mail.core.mime import Attachment, ParsedMail
from pipelines.mail.core.report_parts import (
    OUTPUT,
    attachment_part,
    clean,
    domain_of,
    field_block,
    make_message_id,
    make_report,
    original_part,
    report_headers,
)
from pipelines.mail.core.reports import build_message

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
    error = clean(error)
    subject = clean(original.subject)
    if disposition is MdnDisposition.ERROR:
        subject = f"[KO Intégration système !][{error.split('^', 1)[0]}] {subject}".strip()
    msg = report_headers(from_addr=final_recipient, to=[original.disposition_notification_to], subject=subject, now=now,
                   message_id=message_id or make_message_id(domain_of(final_recipient)))
    if disposition.value.startswith("automatic-action"):
        msg["Auto-Submitted"] = "auto-replied"
    fr, en = _MDN_TEXT[disposition]
    msg.set_content(f"{fr.format(error=error)}\n\n{en.format(error=error)}\n", cte="quoted-printable")
    make_report(msg, "disposition-notification")
    msg.attach(_disposition_part(original, final_recipient=final_recipient, disposition=disposition,
                                 reporting_ua=reporting_ua, original_recipient=original_recipient, error=error))
    if original_bytes and return_content is not ReturnContent.NONE:
        msg.attach(original_part(original_bytes, full=return_content is ReturnContent.FULL))
    for attachment in reattach:
        msg.attach(attachment_part(attachment))
    return msg.as_bytes(policy=OUTPUT)


def _disposition_part(original: ParsedMail, *, final_recipient: str, disposition: MdnDisposition,
                      reporting_ua: str, original_recipient: str, error: str) -> EmailMessage:
    fields = {"Reporting-UA": clean(reporting_ua)}
    orcpt = clean(original_recipient or original.original_recipient)
    if orcpt:
        fields["Original-Recipient"] = orcpt if ";" in orcpt else f"rfc822;{orcpt}"
    fields["Final-Recipient"] = f"rfc822;{clean(final_recipient)}"
    if original.message_id:
        fields["Original-Message-ID"] = clean(original.message_id)
    value = str(disposition)
    if disposition is MdnDisposition.ERROR and error:
        value = value.removesuffix("/error") + f"/Error: {error}"
    fields["Disposition"] = value
    if error and disposition is MdnDisposition.ERROR:
        fields["Error"] = error
    part = EmailMessage(policy=policy.SMTP)
    part["Content-Type"] = "message/disposition-notification"
    part.attach(field_block(fields))
    return part


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
    error = clean(integration_error(errors))
    subject = clean(original.subject)
    if errors:
        subject = f"[KO Intégration système !][{error.split('^', 1)[0]}] {subject}".strip()
    msg = report_headers(from_addr=final_recipient, to=[original.disposition_notification_to], subject=subject, now=now,
                   message_id=message_id)
    msg["Auto-Submitted"] = "auto-replied"
    fr, en = _MDN_TEXT[disposition]
    msg.set_content(f"{fr.format(error=error)}\n{integration_listing(errors, english=False)}\n"
                    f"{en.format(error=error)}\n{integration_listing(errors, english=True)}", cte="quoted-printable")
    make_report(msg, "disposition-notification")
    msg.set_boundary(_boundary(message_id))
    msg.attach(_disposition_part(original, final_recipient=final_recipient, disposition=disposition,
                                 reporting_ua=reporting_ua, original_recipient="", error=error))
    if original_bytes:
        msg.attach(original_part(original_bytes, full=True))
    for attachment in reattach if errors else ():
        msg.attach(attachment_part(attachment))
    return msg.as_bytes(policy=OUTPUT)


def build_integration_notice(original: ParsedMail, *, from_addr: str, errors: Sequence[Finding], now: datetime,
                             message_id: str) -> bytes:
    """The plain RFC 5322 notice MSSanté asks for when an integration failed and no MDN was asked for
    (DOMAIN §4.4), listing every error like build_integration_mdn; deterministic for the same inputs."""
    text = (f"Le message {original.message_id} n'a pas pu être intégré dans le dossier du patient.\n"
            f"{integration_listing(errors, english=False)}\n"
            f"The message {original.message_id} could not be filed in the patient's record.\n"
            f"{integration_listing(errors, english=True)}")
    return build_message(from_addr=from_addr, to_addrs=[original.from_addr],
                         subject=f"[KO Intégration système !] {clean(original.subject)}".strip(), text=text, now=now,
                         message_id=message_id, in_reply_to=original.message_id)


def integration_listing(errors: Sequence[Finding], *, english: bool) -> str:
    """One line per error: `- <where> [<rule>] (code <code>) <what to do>`; "" without errors."""
    lines = [f"- {clean(f.location)} [{clean(f.rule)}]{f' (code {clean(f.code)})' if f.code else ''} "
             f"{clean(f.message_en if english else f.message_fr)}" for f in errors]
    return "".join(f"{line}\n" for line in lines)


def _boundary(message_id: str) -> str:
    return "=_mes_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
