"""Delivery reports back to senders: build the RFC 3464 DSN and queue it like any other mail.

Owns: turning per-recipient outcomes into a DSN (pipelines.core.reports), and integration results
or a patient's first reading into an MDN (RFC 8098) when the sender asked for one with
Disposition-Notification-To (without it, an integration error still gets a plain notice, as
MSSanté asks), and handing each to intake as a queued mail from the null sender, so it is routed,
retried and recorded by the same pipelines (a report is never answered by another: its sender is <>).
Does not: decide outcomes (the mail and outbound pipelines do) or send anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from hub.envelope import Source
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack
from pipelines.core.findings import Finding
from pipelines.core.mime import ParsedMail, find_pdfs, find_xdm
from pipelines.core.reports import DsnAction, DsnRecipient, MdnDisposition, build_dsn, build_mdn, build_message

log = logging.getLogger(__name__)
Failure = tuple[SmtpRecipient, Reply, str]  # recipient, the reply that decided, remote host ("" = ours)


class ReportSender:
    """Queues DSNs through `intake`; `hostname` names the hub in Reporting-MTA and MAILER-DAEMON@."""

    def __init__(self, intake: Intake, *, hostname: str, domain: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._intake = intake
        self._hostname = hostname
        self._domain = domain
        self._clock = clock

    def delivered(self, smtp: SmtpEnvelope, message: bytes, rcpt: SmtpRecipient, *, remote_host: str) -> None:
        reply = Reply(250, "2.0.0", "delivered")
        self._send(smtp, message, [DsnRecipient(rcpt, DsnAction.DELIVERED, reply, remote_mta=remote_host,
                                                last_attempt=self._clock())])

    def failed(self, smtp: SmtpEnvelope, message: bytes, failures: Sequence[Failure]) -> None:
        self._send(smtp, message, [DsnRecipient(r, DsnAction.FAILED, reply, remote_mta=host,
                                                last_attempt=self._clock()) for r, reply, host in failures])

    def delayed(self, smtp: SmtpEnvelope, message: bytes, failures: Sequence[Failure]) -> None:
        self._send(smtp, message, [DsnRecipient(r, DsnAction.DELAYED, reply, remote_mta=host,
                                                last_attempt=self._clock()) for r, reply, host in failures])

    def integrated(self, mail: ParsedMail, message: bytes, *, mailbox: str, errors: Sequence[Finding]) -> None:
        """After filing a mail in `mailbox`: MDN processed (or processed/error) if asked; a notice on error."""
        if errors:
            code = next((f.code for f in errors if f.code), None) or "906"
            error = f"{code}^{errors[0].rule}"
            mdn = build_mdn(mail, final_recipient=mailbox, disposition=MdnDisposition.ERROR,
                            reporting_ua=self._hostname, now=self._clock(), original_bytes=message, error=error,
                            reattach=tuple(a for a in (find_xdm(mail), *find_pdfs(mail)) if a is not None))
            if mdn is None and mail.disposition_notification_to == "" and mail.from_addr:
                mdn = self._notice(mail, mailbox, errors)
        else:
            mdn = build_mdn(mail, final_recipient=mailbox, disposition=MdnDisposition.PROCESSED,
                            reporting_ua=self._hostname, now=self._clock(), original_bytes=message)
        if mdn is not None:
            self._queue(mdn, mail.disposition_notification_to or mail.from_addr, "mdn")

    def displayed(self, mail: ParsedMail, *, mailbox: str) -> None:
        """The patient opened the message: MDN displayed, if the sender asked for one."""
        mdn = build_mdn(mail, final_recipient=mailbox, disposition=MdnDisposition.DISPLAYED,
                        reporting_ua=self._hostname, now=self._clock())
        if mdn is not None:
            self._queue(mdn, mail.disposition_notification_to, "mdn")

    def _notice(self, mail: ParsedMail, mailbox: str, errors: Sequence[Finding]) -> bytes:
        lines = "\n".join(f"- [{f.rule}] {f.location}: {f.message_fr} / {f.message_en}" for f in errors)
        text = (f"Le message {mail.message_id} n'a pas pu être intégré dans le dossier du patient.\n"
                f"The message {mail.message_id} could not be filed in the patient's record.\n\n{lines}\n")
        return build_message(from_addr=f"MAILER-DAEMON@{self._domain}", to_addrs=[mail.from_addr],
                             subject=f"[KO Intégration système !] {mail.subject}".strip(), text=text,
                             now=self._clock(), in_reply_to=mail.message_id)

    def _send(self, smtp: SmtpEnvelope, message: bytes, recipients: Sequence[DsnRecipient]) -> None:
        dsn = build_dsn(smtp, recipients, original=message, hub_host=self._hostname, hub_domain=self._domain,
                        now=self._clock())
        if dsn is None:  # null sender, or nobody asked for this report (NOTIFY)
            return
        self._queue(dsn, smtp.mail_from, "dsn:" + ",".join(sorted({str(r.action) for r in recipients})))

    def _queue(self, report: bytes, to: str, what: str) -> None:
        queued = SmtpEnvelope(mail_from="", recipients=(SmtpRecipient(to.strip("<> ")),), auth="hub:report",
                              received_at=self._clock().isoformat())
        record = self._intake.accept(pack(queued, report), Source(kind="dsn", producer="hub"),
                                     content_type=MAIL_CONTENT_TYPE, kind="mail")
        log.info("queued a report (%s) as submission=%s", what, record.submission_id)
