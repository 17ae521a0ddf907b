"""The mail pipeline: a queued mail (from the SMTP gateway or a patient) to mailboxes, records and next hops.

Owns, for one queued mail on the intake queue (hub.mailqueue):
  parse (pipelines.core.mime) -> per recipient of the SMTP envelope:
    patient address  -> masking check, file the XDM's CDA documents into the record (through
                        intake, so the same validation/classification/index applies), keep the
                        message in the patient's mailbox, DSN "delivered" if NOTIFY=SUCCESS
    local org / other domain -> a queued mail of its own on the outbound queue (OutboundPipeline)
  -> the submission is final (`indexed`: filed), or `rejected` with findings and a DSN to the sender.
A redelivered mail changes nothing twice: a mailbox copy is stored once per (submission, mailbox)
and recipients already delivered or bounced are skipped.
Does not: speak SMTP/LMTP (connectors, behind hub.ports.Relay and LocalDelivery) or decide the
rules (pipelines.core.mss).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hub.envelope import BlobRef, Envelope, Source
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack, unpack
from hub.ports import BlobStore, Index, Mailboxes, Publisher
from hub.records import DeliveryRecord, DeliveryState, MessageRecord
from pipelines.core.findings import Finding, Severity
from pipelines.core.mime import ParsedMail, find_xdm, parse_mail
from pipelines.core.mss import MssRules, RecipientKind, classify_recipient, masking_findings, mss_flags
from pipelines.core.xdm import XdmReport, read_xdm
from pipelines.mail_reports import ReportSender

log = logging.getLogger(__name__)
FINAL = (DeliveryState.DELIVERED, DeliveryState.BOUNCED)
MASKED = Reply(550, "5.7.1", "Document non transmissible a ce destinataire (confidentialite) / Document may not "
                             "be sent to this recipient (confidentiality codes)")
UNROUTABLE = Reply(550, "5.1.2", "Destinataire non routable / Recipient cannot be routed")


@dataclass(frozen=True, slots=True)
class MailPorts:
    """What the mail pipelines need; built by the composition root."""

    store: BlobStore
    index: Index
    mailboxes: Mailboxes
    intake: Intake
    outbound: Publisher  # the outbound queue
    rules: MssRules
    reports: ReportSender


@dataclass(slots=True)
class Queued:
    """One queued mail read back: the SMTP envelope, the message bytes and its parse; `stored` is where
    the message alone is kept for mailboxes, once stored (one PUT however many mailbox copies)."""

    envelope: Envelope
    smtp: SmtpEnvelope
    message: bytes
    mail: ParsedMail
    stored: BlobRef | None = None


class MailPipeline:
    """hub.ports.Handler for queued mail on the intake queue."""

    def __init__(self, ports: MailPorts) -> None:
        self._p = ports

    def __call__(self, envelope: Envelope) -> None:
        smtp, message = unpack(self._p.store.get(envelope.raw))
        report = parse_mail(message)
        if report.mail is None:
            self._reject(envelope, smtp, message, report.findings)
            return
        queued = Queued(envelope, smtp, message, report.mail)
        done = {d.recipient.lower() for d in self._p.mailboxes.deliveries(envelope.submission_id)
                if d.state in FINAL}
        onward: list[tuple[SmtpRecipient, str]] = []
        for n, rcpt in enumerate(smtp.recipients):
            if rcpt.address.lower() in done:
                continue
            target = classify_recipient(rcpt.address, self._p.rules)
            if target.kind is RecipientKind.PATIENT and target.ins is not None:
                self._to_patient(queued, n, rcpt, target.ins)
            elif target.kind in (RecipientKind.LOCAL_ORG, RecipientKind.REMOTE):
                onward.append((rcpt, str(target.kind)))
            else:
                self._bounce(queued, rcpt, str(target.kind), UNROUTABLE)
        if onward:
            self._queue_outbound(queued, onward)
        self._keep_sent_copy(queued)
        self._p.index.complete(envelope, tuple(f.to_dict() for f in report.findings))
        log.info("mail submission=%s: %d recipient(s), %d onward", envelope.submission_id, len(smtp.recipients),
                 len(onward))

    # -- patients --------------------------------------------------------------------------------------

    def _to_patient(self, q: Queued, n: int, rcpt: SmtpRecipient, ins: str) -> None:
        xdm = _xdm_of(q.mail)
        masked = masking_findings((d.entry for d in xdm.documents), recipient_is_professional=False)
        if masked:
            self._bounce(q, rcpt, "patient", MASKED)
            return
        message_id = f"{q.envelope.submission_id}-{n}"
        if self._p.mailboxes.message(message_id) is None:  # a redelivery does not file the documents again
            filed, errors = self._file_documents(q, xdm, ins)
            if q.smtp.mail_from.strip("<>"):  # a report never gets a report back
                self._p.reports.integrated(q.mail, q.message, mailbox=rcpt.address, errors=errors)
            # A delivery report (null sender) is a notice about the patient's own mail, not someone writing
            # to them: it never opens a thread the patient could reply to.
            direction, correspondent = ("in", q.smtp.mail_from) if q.smtp.mail_from.strip("<>") else \
                ("notice", q.mail.from_addr)
            self._p.mailboxes.store_message(self._record(q, message_id, rcpt.address, direction, correspondent,
                                                         filed))
        self._p.mailboxes.record_delivery(DeliveryRecord(q.envelope.submission_id, rcpt.address, "patient",
                                                         DeliveryState.DELIVERED, attempts=1,
                                                         last_reply="250 2.0.0 filed in the patient's mailbox"))
        if rcpt.wants("SUCCESS"):
            self._p.reports.delivered(q.smtp, q.message, rcpt, remote_host="")

    def _file_documents(self, q: Queued, xdm: XdmReport, ins: str) -> tuple[tuple[str, ...], list[Finding]]:
        """Submit each CDA of the XDM that names this patient (the CDA pipeline does the rest); return the
        submission ids and what kept documents out (an unreadable or hostile XDM, another patient's INS)."""
        source = Source(kind="mss", producer=q.smtp.auth or _domain(q.smtp.mail_from))
        errors = [f for f in xdm.findings if f.severity is Severity.ERROR]
        submitted = []
        for document in xdm.documents:
            if document.entry.patient_ins and document.entry.patient_ins != ins:
                errors.append(_other_patient(document.entry.subset, document.entry.entry_id))
                continue
            submitted.append(self._p.intake.accept(document.data, source).submission_id)
        if errors:
            log.warning("mail submission=%s: %d XDM problem(s), first %s", q.envelope.submission_id, len(errors),
                        errors[0].rule)
        return tuple(submitted), errors

    def _record(self, q: Queued, message_id: str, mailbox: str, direction: str, correspondent: str,
                filed: tuple[str, ...]) -> MessageRecord:
        if q.stored is None:
            q.stored = self._p.store.put(q.message, kind="msg", content_type="message/rfc822")
        ref = q.stored
        return MessageRecord(
            message_id=message_id, mailbox=mailbox.lower(), submission_id=q.envelope.submission_id,
            direction=direction, correspondent=correspondent.lower(), subject=q.mail.subject,
            rfc_message_id=q.mail.message_id, in_reply_to=q.mail.in_reply_to, blob_bucket=ref.bucket,
            blob_key=ref.key, sha256=ref.sha256, size=ref.size, received_at=q.envelope.received_at,
            closed=mss_flags(q.mail).end_of_exchange, attachments=tuple(a.filename for a in q.mail.attachments),
            documents=filed)

    def _keep_sent_copy(self, q: Queued) -> None:
        """A mail a patient sent through the API is kept in their own mailbox, as sent."""
        sender = classify_recipient(q.smtp.mail_from, self._p.rules) if q.smtp.mail_from else None
        if sender is None or sender.kind is not RecipientKind.PATIENT or not q.smtp.auth.startswith("patient:"):
            return
        to = ", ".join(r.address for r in q.smtp.recipients)
        self._p.mailboxes.store_message(self._record(q, f"{q.envelope.submission_id}-out", sender.address, "out",
                                                     to, ()))

    # -- onward and failures ---------------------------------------------------------------------------

    def _queue_outbound(self, q: Queued, onward: list[tuple[SmtpRecipient, str]]) -> None:
        smtp = SmtpEnvelope(mail_from=q.smtp.mail_from, recipients=tuple(r for r, _ in onward), auth=q.smtp.auth,
                            peer=q.smtp.peer, helo=q.smtp.helo, ret=q.smtp.ret, envid=q.smtp.envid,
                            received_at=q.smtp.received_at)
        ref = self._p.store.put(pack(smtp, q.message), kind="mail", content_type=MAIL_CONTENT_TYPE)
        for rcpt, route in onward:
            self._p.mailboxes.record_delivery(DeliveryRecord(q.envelope.submission_id, rcpt.address, route,
                                                             DeliveryState.QUEUED))
        self._p.outbound.publish(Envelope(submission_id=q.envelope.submission_id, received_at=q.envelope.received_at,
                                          source=q.envelope.source, raw=ref, content_type=MAIL_CONTENT_TYPE))

    def _bounce(self, q: Queued, rcpt: SmtpRecipient, route: str, reply: Reply) -> None:
        self._p.mailboxes.record_delivery(DeliveryRecord(q.envelope.submission_id, rcpt.address, route,
                                                         DeliveryState.BOUNCED, attempts=1, last_reply=str(reply)))
        self._p.reports.failed(q.smtp, q.message, [(rcpt, reply, "")])

    def _reject(self, envelope: Envelope, smtp: SmtpEnvelope, message: bytes, findings: tuple[Finding, ...]) -> None:
        """Unreadable MIME: nothing is filed; every recipient bounces with the first finding's rule."""
        rule = findings[0].rule if findings else "mime.malformed"
        reply = Reply(550, "5.6.0", f"Message illisible / Unreadable message ({rule})")
        for rcpt in smtp.recipients:
            self._p.mailboxes.record_delivery(DeliveryRecord(envelope.submission_id, rcpt.address, "none",
                                                             DeliveryState.BOUNCED, attempts=1, last_reply=str(reply)))
        self._p.reports.failed(smtp, message, [(rcpt, reply, "") for rcpt in smtp.recipients])
        self._p.index.reject(envelope, tuple(f.to_dict() for f in findings))
        log.warning("mail submission=%s rejected: %s", envelope.submission_id, rule)


def _other_patient(subset: str, entry_id: str) -> Finding:
    return Finding(rule="mss.xdm.other-patient", location=f"{subset}#{entry_id}", code="904",
                   message_fr="Ce document concerne un autre patient que le destinataire : il n'a pas été classé.",
                   message_en="This document is about another patient than the recipient: it was not filed.")


def _xdm_of(mail: ParsedMail) -> XdmReport:
    attachment = find_xdm(mail)
    return read_xdm(attachment.data) if attachment is not None else XdmReport(documents=(), findings=())


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(">").lower() or "unknown"

