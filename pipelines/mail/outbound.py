"""The outbound pipeline: queued mail to local organisational mailboxes (LMTP) and other domains (SMTP).

Owns, for one queued mail on the outbound queue: skipping recipients already delivered or
bounced (a redelivery sends nothing twice), handing the rest to LocalDelivery (with the submission
id as delivery id: a copy that reached a mailbox before the hub could record it is not filed again
there) or to the Relay of their next hop, recording each recipient's state, and then for what failed:
  5xx or no route          -> bounced, DSN "failed" to the sender
  4xx / no answer          -> deferred, retried on the relay schedule (jittered backoff over hours),
                              with one "delayed" DSN after `delay_warning_s`, and bounced once the
                              lifetime is over (status 4.4.7 in the DSN).
The message is read from the queued mail intake stored at the 250, which the mail pipeline hands on as it
is: of its recipients, those for organisations and other domains are this pipeline's.  A retry stores only
what changed, an onward ticket (pipelines.mail.core.onward: the recipients left, the warning sent) pointing
at that queued mail; the message bytes are never written again.
Does not: speak SMTP or LMTP (pipelines.mail.ports.Relay / LocalDelivery adapters do) or parse the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from hub.delivery import Outcome, RecipientResult
from hub.envelope import BlobRef, Envelope
from hub.events import DeliveryRequested
from hub.mailqueue import Reply, SmtpEnvelope, SmtpRecipient, unpack
from hub.ports import BlobStore, Mailboxes, Publisher
from hub.records import DeliveryRecord, DeliveryState
from pipelines.mail.core.mss import MssRules, RecipientKind, classify_recipient
from pipelines.mail.core.onward import TICKET_CONTENT_TYPE, OnwardTicket, is_ticket
from pipelines.mail.core.relay_schedule import Expire, NextHop, RelaySchedule, WarnThenRetry, group_by_hop
from pipelines.mail.ports import LocalDelivery, Relay
from pipelines.mail.reporting import ReportSender

log = logging.getLogger(__name__)
NO_LOCAL_STORE = Reply(451, "4.3.0", "Aucun serveur de boites locales configure / No local mailbox server configured")
NO_ROUTE = Reply(550, "5.4.4", "Aucun relais configure pour ce domaine / No next hop configured for this domain")
_WARNED = "warned"


@dataclass(frozen=True, slots=True)
class OutboundPorts:
    """What the outbound pipeline needs; built by the composition root."""

    store: BlobStore
    mailboxes: Mailboxes
    outbound: Publisher  # to schedule retries on its own queue
    rules: MssRules
    reports: ReportSender
    relay: Relay
    next_hops: Mapping[str, NextHop]
    local: LocalDelivery | None = None
    schedule: RelaySchedule = field(default_factory=RelaySchedule)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


class OutboundPipeline:
    """hub.ports.Handler for the outbound queue."""

    def __init__(self, ports: OutboundPorts) -> None:
        self._p = ports

    def __call__(self, envelope: Envelope) -> None:
        smtp, message, mail = self._read(envelope.raw)
        final = {d.recipient.lower() for d in self._p.mailboxes.deliveries(envelope.submission_id)
                 if d.state in (DeliveryState.DELIVERED, DeliveryState.BOUNCED)}
        pending = [r for r in smtp.recipients if r.address.lower() not in final and self._onward(r)]
        if not pending:
            return
        results = self._attempt(envelope.submission_id, smtp, message, pending)
        by_address = {r.address: r for r in pending}
        attempts = envelope.attempt + 1
        deferred: list[tuple[SmtpRecipient, RecipientResult]] = []
        failed: list[tuple[SmtpRecipient, Reply, str]] = []
        for result in results:
            rcpt = by_address[result.address]
            if result.outcome is Outcome.DELIVERED:
                self._record(envelope, rcpt, DeliveryState.DELIVERED, attempts, result.reply)
                if rcpt.wants("SUCCESS"):
                    self._p.reports.delivered(smtp, message, rcpt, remote_host=result.remote_host,
                                              about=envelope.submission_id)
            elif result.outcome is Outcome.PERMANENT:
                self._record(envelope, rcpt, DeliveryState.BOUNCED, attempts, result.reply)
                failed.append((rcpt, result.reply, result.remote_host))
            else:
                deferred.append((rcpt, result))
        if failed:
            self._p.reports.failed(smtp, message, failed, about=envelope.submission_id)
        if deferred:
            self._defer(envelope, smtp, message, mail, deferred, attempts)
        log.info("outbound submission=%s attempt %d: %d delivered, %d bounced, %d deferred",
                 envelope.submission_id, attempts, len(results) - len(failed) - len(deferred), len(failed),
                 len(deferred))

    def _read(self, ref: BlobRef) -> tuple[SmtpEnvelope, bytes, BlobRef]:
        """(SMTP envelope, message, the queued mail holding the message) from a queued mail or a ticket."""
        data = self._p.store.get(ref)
        if not is_ticket(data):
            smtp, message = unpack(data)
            return smtp, message, ref
        ticket = OnwardTicket.decode(data)
        return ticket.smtp, unpack(self._p.store.get(ticket.mail))[1], ticket.mail

    def _onward(self, rcpt: SmtpRecipient) -> bool:
        """A recipient of this pipeline's: an organisation's mailbox here, or another domain's."""
        return classify_recipient(rcpt.address, self._p.rules).kind in (RecipientKind.LOCAL_ORG,
                                                                        RecipientKind.REMOTE)

    def _attempt(self, submission_id: str, smtp: SmtpEnvelope, message: bytes,
                 pending: Sequence[SmtpRecipient]) -> list[RecipientResult]:
        local = [r for r in pending if classify_recipient(r.address, self._p.rules).kind is RecipientKind.LOCAL_ORG]
        remote = [r for r in pending if r not in local]
        results: list[RecipientResult] = []
        if local:
            if self._p.local is None:
                results += [RecipientResult(r.address, Outcome.TRANSIENT, NO_LOCAL_STORE) for r in local]
            else:
                results += self._p.local.deliver(message, smtp.mail_from, [r.address for r in local],
                                                 delivery_id=submission_id)
        groups = group_by_hop(remote, self._p.next_hops)
        for hop, recipients in groups.routed.items():
            results += self._p.relay.deliver(hop, message, smtp.mail_from, recipients, ret=smtp.ret,
                                             envid=smtp.envid)
        results += [RecipientResult(r.address, Outcome.PERMANENT, NO_ROUTE) for r in groups.unroutable]
        return results

    def _defer(self, envelope: Envelope, smtp: SmtpEnvelope, message: bytes, mail: BlobRef,
               deferred: list[tuple[SmtpRecipient, RecipientResult]], attempts: int) -> None:
        step = self._p.schedule.next_step(envelope.received_at, attempts, self._p.clock(),
                                          warned=smtp.extra.get(_WARNED) == "1")
        if isinstance(step, Expire):
            expired = Reply(550, "4.4.7", "Delai de remise depasse / Delivery time expired")
            for rcpt, result in deferred:
                self._record(envelope, rcpt, DeliveryState.BOUNCED, attempts, result.reply)
            self._p.reports.failed(smtp, message, [(r, _expired(res.reply, expired), res.remote_host)
                                                   for r, res in deferred], about=envelope.submission_id)
            return
        for rcpt, result in deferred:
            self._record(envelope, rcpt, DeliveryState.DEFERRED, attempts, result.reply)
        extra = dict(smtp.extra)
        if isinstance(step, WarnThenRetry):
            self._p.reports.delayed(smtp, message, [(r, res.reply, res.remote_host) for r, res in deferred],
                                    about=envelope.submission_id)
            extra[_WARNED] = "1"
        retry = replace(smtp, recipients=tuple(r for r, _ in deferred), extra=extra)
        ref = self._p.store.put(OnwardTicket(retry, mail).encode(), kind="onward", content_type=TICKET_CONTENT_TYPE)
        self._p.outbound.publish(DeliveryRequested(replace(envelope, raw=ref, attempt=attempts)), delay_s=step.delay_s)

    def _record(self, envelope: Envelope, rcpt: SmtpRecipient, state: DeliveryState, attempts: int,
                reply: Reply) -> None:
        route = "local-org" if classify_recipient(rcpt.address, self._p.rules).kind is RecipientKind.LOCAL_ORG \
            else "remote"
        self._p.mailboxes.record_delivery(DeliveryRecord(envelope.submission_id, rcpt.address, route, state,
                                                         attempts=attempts, last_reply=str(reply)))


def _expired(last: Reply, expired: Reply) -> Reply:
    """The DSN of an expired mail says 4.4.7 and quotes the last answer the next hop gave."""
    return Reply(expired.code, expired.status, f"{expired.text}; last reply: {last}")
