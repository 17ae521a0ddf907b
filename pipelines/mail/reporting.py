"""Delivery reports back to senders: build the RFC 3464 DSN and queue it like any other mail.

Owns: turning per-recipient outcomes into a DSN (pipelines.mail.core.reports), and integration results
or a patient's first reading into an MDN (RFC 8098) when the sender asked for one with
Disposition-Notification-To (without it, an integration error still gets a plain notice, as
MSSanté asks), and queueing each as a mail from the null sender: the claim check (hub.ports.Claims)
stores and records it, and MailQueued is published here, so it is routed, retried and recorded by the
same pipelines (a report is never answered by another: its sender is <>).  Reports are written inside
pipeline steps (the mail and outbound pipelines) and by a door (a patient's first reading): none
re-enters hub.intake.Intake.
A DSN is queued under a submission id derived from what it reports (report_id: the mail's submission,
the event, the recipients), and its Message-ID derives from that id: queueing it again is a no-op.
Does not: decide outcomes (the mail and outbound pipelines do) or send anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from hub.envelope import Source
from hub.events import MailQueued
from hub.findings import Finding
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack
from hub.ports import Claims, Publisher
from pipelines.mail.core.mdn import MdnDisposition, build_integration_mdn, build_integration_notice, build_mdn
from pipelines.mail.core.mime import ParsedMail, find_pdfs, find_xdm
from pipelines.mail.core.reports import DsnAction, DsnRecipient, build_dsn, report_id

log = logging.getLogger(__name__)
Failure = tuple[SmtpRecipient, Reply, str]  # recipient, the reply that decided, remote host ("" = ours)


class ReportSender:
    """Queues reports as mail: `claims` stores and records each, `publisher` puts its MailQueued on the
    intake queue; `hostname` names the hub in Reporting-MTA and MAILER-DAEMON@.

    When the bus does not confirm, BusUnavailable (a TransientError) is raised and the report's
    submission stays pending: inside a step, the step's message is redelivered and the report queued
    again under the same derived id (one submission); and the recovery sweep republishes any pending
    submission, so a report recorded but never published is still sent (a patient's read receipt too)."""

    def __init__(self, claims: Claims, publisher: Publisher, *, hostname: str, domain: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._claims = claims
        self._publisher = publisher
        self._hostname = hostname
        self._domain = domain
        self._clock = clock

    # DSNs: `about` is the submission id of the mail reported on.  The report is queued under
    # report_id(about, event, recipients), so the same report asked for again (a redelivery after the hub
    # died between queueing it and recording the delivery state) is no new mail: the claim check returns
    # the one already queued (final: nothing published) or hands that same submission on again (pending).

    def delivered(self, smtp: SmtpEnvelope, message: bytes, rcpt: SmtpRecipient, *, remote_host: str,
                  about: str) -> None:
        reply = Reply(250, "2.0.0", "delivered")
        self._send(smtp, message, [DsnRecipient(rcpt, DsnAction.DELIVERED, reply, remote_mta=remote_host,
                                                last_attempt=self._clock())], about=about)

    def failed(self, smtp: SmtpEnvelope, message: bytes, failures: Sequence[Failure], *, about: str) -> None:
        self._send(smtp, message, [DsnRecipient(r, DsnAction.FAILED, reply, remote_mta=host,
                                                last_attempt=self._clock()) for r, reply, host in failures],
                   about=about)

    def delayed(self, smtp: SmtpEnvelope, message: bytes, failures: Sequence[Failure], *, about: str) -> None:
        self._send(smtp, message, [DsnRecipient(r, DsnAction.DELAYED, reply, remote_mta=host,
                                                last_attempt=self._clock()) for r, reply, host in failures],
                   about=about)

    def integration_result(self, mail: ParsedMail, message: bytes, *, mailbox: str, errors: Sequence[Finding],
                           submission_id: str, at: datetime) -> bool:
        """The integration result of a mail filed in `mailbox`, once every document it filed is final: an MDN
        `processed`, or `processed/Error` listing each error, when the sender asked for one; a plain notice on
        error otherwise (False: nothing was due).  Queued under `submission_id` (derived by the caller from
        the mailbox copy), with a Message-ID from it and `at` as its date: queuing it again gives the same
        bytes under the same id, which the claim check turns into nothing (final) or the same mail again
        (pending)."""
        reattach = tuple(a for a in (find_xdm(mail), *find_pdfs(mail)) if a is not None)
        report = build_integration_mdn(mail, final_recipient=mailbox, reporting_ua=self._hostname, now=at,
                                       message_id=f"<{submission_id}@{mailbox.rpartition('@')[2]}>", errors=errors,
                                       original_bytes=message, reattach=reattach)
        to = mail.disposition_notification_to
        if report is None and errors and not mail.disposition_notification_to and mail.from_addr:
            report = build_integration_notice(mail, from_addr=f"MAILER-DAEMON@{self._domain}", errors=errors,
                                              now=at, message_id=f"<{submission_id}@{self._domain}>")
            to = mail.from_addr
        if report is None:
            return False
        queued = SmtpEnvelope(mail_from="", recipients=(SmtpRecipient(to.strip("<> ")),), auth="hub:report",
                              received_at=at.isoformat())
        queued_id = self._claim_and_publish(pack(queued, report), submission_id=submission_id, received_at=at)
        log.info("queued the integration report (%s) as submission=%s", "error" if errors else "processed",
                 queued_id)
        return True

    def displayed(self, mail: ParsedMail, *, mailbox: str) -> None:
        """The patient opened the message: MDN displayed, if the sender asked for one."""
        mdn = build_mdn(mail, final_recipient=mailbox, disposition=MdnDisposition.DISPLAYED,
                        reporting_ua=self._hostname, now=self._clock())
        if mdn is not None:
            self._queue(mdn, mail.disposition_notification_to, "mdn")

    def _send(self, smtp: SmtpEnvelope, message: bytes, recipients: Sequence[DsnRecipient], *, about: str) -> None:
        what = "dsn:" + ",".join(sorted({str(r.action) for r in recipients}))
        submission_id = report_id(about, what, [r.recipient.address for r in recipients])
        dsn = build_dsn(smtp, recipients, original=message, hub_host=self._hostname, hub_domain=self._domain,
                        now=self._clock(), message_id=f"<{submission_id}@{self._domain}>")
        if dsn is None:  # null sender, or nobody asked for this report (NOTIFY)
            return
        self._queue(dsn, smtp.mail_from, what, submission_id=submission_id)

    def _queue(self, report: bytes, to: str, what: str, *, submission_id: str | None = None) -> None:
        queued = SmtpEnvelope(mail_from="", recipients=(SmtpRecipient(to.strip("<> ")),), auth="hub:report",
                              received_at=self._clock().isoformat())
        queued_id = self._claim_and_publish(pack(queued, report), submission_id=submission_id)
        log.info("queued a report (%s) as submission=%s", what, queued_id)

    def _claim_and_publish(self, packed: bytes, *, submission_id: str | None,
                           received_at: datetime | None = None) -> str:
        """Store and record the queued report, then publish its MailQueued (nothing when already final)."""
        claim = self._claims.claim(packed, Source(kind="dsn", producer="hub"), content_type=MAIL_CONTENT_TYPE,
                                   kind="mail", submission_id=submission_id, received_at=received_at)
        if claim.envelope is not None:
            self._publisher.publish(MailQueued(claim.envelope))
        return claim.record.submission_id
