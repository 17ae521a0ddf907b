"""Delivery reports back to senders: build the RFC 3464 DSN and queue it like any other mail.

Owns: turning per-recipient outcomes into a DSN (pipelines.core.reports) and handing it to intake
as a queued mail from the null sender, so it is routed, retried and recorded by the same pipelines
(a DSN is never answered by another DSN: its sender is <>).
Does not: decide outcomes (the mail and outbound pipelines do) or send anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from hub.envelope import Source
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack
from pipelines.core.reports import DsnAction, DsnRecipient, build_dsn

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

    def _send(self, smtp: SmtpEnvelope, message: bytes, recipients: Sequence[DsnRecipient]) -> None:
        dsn = build_dsn(smtp, recipients, original=message, hub_host=self._hostname, hub_domain=self._domain,
                        now=self._clock())
        if dsn is None:  # null sender, or nobody asked for this report (NOTIFY)
            return
        queued = SmtpEnvelope(mail_from="", recipients=(SmtpRecipient(smtp.mail_from.strip("<>")),),
                              auth="hub:dsn", received_at=self._clock().isoformat())
        record = self._intake.accept(pack(queued, dsn), Source(kind="dsn", producer="hub"),
                                     content_type=MAIL_CONTENT_TYPE, kind="mail")
        log.info("queued a DSN (%s) as submission=%s", ",".join(sorted({str(r.action) for r in recipients})),
                 record.submission_id)
