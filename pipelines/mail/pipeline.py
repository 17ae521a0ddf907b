"""The mail pipeline: a queued mail (from the SMTP gateway or a patient) to mailboxes, records and next hops.

Owns, for one queued mail on the intake queue (hub.mailqueue):
  parse (pipelines.mail.core.mime) -> per recipient of the SMTP envelope:
    patient address  -> masking check, file the XDM's CDA documents into the record (each one
                        claimed, then DocumentSubmitted published: the same validation/classification/
                        index applies) only from an identified sender, only for the mailbox's patient, and
                        all or nothing
                        (pipelines.mail.core.trust), keep the
                        message in the patient's mailbox, DSN "delivered" if NOTIFY=SUCCESS;
                        the integration report (MDN or notice) goes once every filed document
                        is final (IntegrationReports: after the filing, or after the CDA pipeline)
    local org / other domain -> a queued mail of its own on the outbound queue (OutboundPipeline)
  -> the submission is final (`indexed`: filed), or `rejected` with findings and a DSN to the sender.
The mail is stored once, by intake at the 250 (the queued mail object): each mailbox copy is a row that
refers to that object (and to where the message starts in it), and the outbound queue is handed that same
object; only the documents an XDM carries become objects of their own (one each, through the claim
check, hub.ports.Claims: this step never re-enters hub.intake.Intake, it publishes the event itself).
A redelivered mail changes nothing twice: a mailbox copy is recorded once per (submission, mailbox),
documents are submitted under ids derived from the mail (an id already final is claimed as nothing to
publish), recipients already delivered or bounced are skipped, and the integration report is claimed by
one claimant.  A bus failure while publishing raises (TransientError): the mail is redelivered and does
the same again under the same ids, and the recovery sweep republishes any submission left pending.
Does not: speak SMTP/LMTP (connectors, behind pipelines.mail.ports.Relay and LocalDelivery) or decide the
rules (pipelines.mail.core.mss).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hub.access import PRODUCER_CODES
from hub.envelope import Envelope, Source
from hub.events import DeliveryRequested, DocumentFiled, DocumentRejected, DocumentSubmitted
from hub.findings import Finding
from hub.intake import derived_submission_id
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, unpack
from hub.ports import BlobStore, Claims, Index, Mailboxes, Publisher
from hub.records import (
    DeliveryRecord,
    DeliveryState,
    FiledDocument,
    MailFiling,
    MessageRecord,
    SubmissionRecord,
    SubmissionStatus,
)
from pipelines.mail.core.mime import MailLimits, ParsedMail, find_xdm, parse_mail
from pipelines.mail.core.mss import MssRules, RecipientKind, classify_recipient, masking_findings, mss_flags
from pipelines.mail.core.trust import Carried, all_or_nothing, mailbox_findings, sender_may_file
from pipelines.mail.core.xdm import XdmLimits, XdmReport, read_xdm
from pipelines.mail.reporting import ReportSender

log = logging.getLogger(__name__)
FINAL = (DeliveryState.DELIVERED, DeliveryState.BOUNCED)
MASKED = Reply(550, "5.7.1", "Document non transmissible a ce destinataire (confidentialite) / Document may not "
                             "be sent to this recipient (confidentiality codes)")
#: one CDA document a mail files: its bytes and the producer's masking codes from the XDM metadata
Filed = tuple[bytes, tuple[str, ...]]
UNROUTABLE = Reply(550, "5.1.2", "Destinataire non routable / Recipient cannot be routed")


@dataclass(frozen=True, slots=True)
class MailPorts:
    """What the mail pipelines need; built by the composition root."""

    store: BlobStore
    index: Index
    mailboxes: Mailboxes
    claims: Claims  # stores and records the documents a mail files (hub.intake.ClaimCheck)
    submissions: Publisher  # their DocumentSubmitted (the intake queue)
    outbound: Publisher  # the outbound queue
    rules: MssRules
    reports: ReportSender
    mail_limits: MailLimits = field(default_factory=MailLimits)  # [mime]
    xdm_limits: XdmLimits = field(default_factory=XdmLimits)  # [xdm]
    #: told (message id, INS) of each message filed in a patient's mailbox: the patient's notification
    announce: Callable[[str, str], None] | None = None


@dataclass(frozen=True, slots=True)
class Queued:
    """One queued mail read back: the SMTP envelope, the message bytes and its parse.  The message is the
    tail of the object `envelope.raw` names (hub.mailqueue.pack): mailbox copies point into that object."""

    envelope: Envelope
    smtp: SmtpEnvelope
    message: bytes
    mail: ParsedMail


class MailPipeline:
    """hub.ports.Handler for queued mail on the intake queue."""

    def __init__(self, ports: MailPorts) -> None:
        self._p = ports
        #: also the CDA pipeline's follower for `mss` documents (the composition root wires it)
        self.integration = IntegrationReports(ports)

    def __call__(self, envelope: Envelope) -> None:
        smtp, message = unpack(self._p.store.get(envelope.raw))
        report = parse_mail(message, limits=self._p.mail_limits)
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
        xdm = _xdm_of(q.mail, self._p.xdm_limits)
        masked = masking_findings((d.entry for d in xdm.documents), recipient_is_professional=False)
        if masked:
            self._bounce(q, rcpt, "patient", MASKED)
            return
        message_id = f"{q.envelope.submission_id}-{n}"
        filing, documents = _filing_plan(q, message_id, rcpt.address, xdm, ins, self._p.rules)
        if self._p.mailboxes.message(message_id) is None:  # a redelivery does not file the documents again
            self._file_documents(q, filing, documents)
            # A delivery report (null sender) is a notice about the patient's own mail, not someone writing
            # to them: it never opens a thread the patient could reply to.
            direction, correspondent = ("in", q.smtp.mail_from) if q.smtp.mail_from.strip("<>") else \
                ("notice", q.mail.from_addr)
            self._p.mailboxes.store_message(self._record(q, message_id, rcpt.address, direction, correspondent,
                                                         tuple(d.submission_id for d in filing.documents)))
        if self._p.announce is not None and q.smtp.mail_from.strip("<>"):  # again on a redelivery: deduped
            self._p.announce(message_id, ins)
        if q.smtp.mail_from.strip("<>"):  # a report never gets a report back
            self._p.mailboxes.record_filing(filing)
            self.integration.settle(filing, by=q.envelope.submission_id)
        self._p.mailboxes.record_delivery(DeliveryRecord(q.envelope.submission_id, rcpt.address, "patient",
                                                         DeliveryState.DELIVERED, attempts=1,
                                                         last_reply="250 2.0.0 filed in the patient's mailbox"))
        if rcpt.wants("SUCCESS"):
            self._p.reports.delivered(q.smtp, q.message, rcpt, remote_host="", about=q.envelope.submission_id)

    def _file_documents(self, q: Queued, filing: MailFiling, documents: tuple[Filed, ...]) -> None:
        """Submit the CDA documents of the plan under their derived ids (the CDA pipeline does the rest):
        each is claimed, then its DocumentSubmitted published; one already final publishes nothing.  A bus
        failure raises (the mail is redelivered and claims the same ids again)."""
        source = Source(kind="mss", producer=q.smtp.auth or _domain(q.smtp.mail_from))
        for filed, (data, codes) in zip(filing.documents, documents, strict=True):
            claim = self._p.claims.claim(data, source, submission_id=filed.submission_id, confidentiality=codes)
            if claim.envelope is not None:
                self._p.submissions.publish(DocumentSubmitted(claim.envelope))
        if filing.findings:
            log.warning("mail submission=%s: nothing filed, %d problem(s), first %s", q.envelope.submission_id,
                        len(filing.findings), filing.findings[0].get("rule"))

    def _record(self, q: Queued, message_id: str, mailbox: str, direction: str, correspondent: str,
                filed: tuple[str, ...]) -> MessageRecord:
        """The mailbox copy: a row pointing into the queued mail intake stored (no bytes written here)."""
        ref = q.envelope.raw
        return MessageRecord(
            message_id=message_id, mailbox=mailbox.lower(), submission_id=q.envelope.submission_id,
            direction=direction, correspondent=correspondent.lower(), subject=q.mail.subject,
            rfc_message_id=q.mail.message_id, in_reply_to=q.mail.in_reply_to, blob_bucket=ref.bucket,
            blob_key=ref.key, sha256=hashlib.sha256(q.message).hexdigest(), size=len(q.message),
            received_at=q.envelope.received_at, closed=mss_flags(q.mail).end_of_exchange,
            attachments=tuple(a.filename for a in q.mail.attachments), documents=filed,
            blob_offset=ref.size - len(q.message), blob_sha256=ref.sha256)

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
        """Hand the queued mail itself (the object intake stored) to the outbound queue: the outbound
        pipeline takes from its recipients those for organisations and other domains (nothing is repacked)."""
        for rcpt, route in onward:
            self._p.mailboxes.record_delivery(DeliveryRecord(q.envelope.submission_id, rcpt.address, route,
                                                             DeliveryState.QUEUED))
        self._p.outbound.publish(DeliveryRequested(Envelope(
            submission_id=q.envelope.submission_id, received_at=q.envelope.received_at, source=q.envelope.source,
            raw=q.envelope.raw, content_type=MAIL_CONTENT_TYPE)))

    def _bounce(self, q: Queued, rcpt: SmtpRecipient, route: str, reply: Reply) -> None:
        self._p.mailboxes.record_delivery(DeliveryRecord(q.envelope.submission_id, rcpt.address, route,
                                                         DeliveryState.BOUNCED, attempts=1, last_reply=str(reply)))
        self._p.reports.failed(q.smtp, q.message, [(rcpt, reply, "")], about=q.envelope.submission_id)

    def _reject(self, envelope: Envelope, smtp: SmtpEnvelope, message: bytes, findings: tuple[Finding, ...]) -> None:
        """Unreadable MIME: nothing is filed; every recipient bounces with the first finding's rule."""
        rule = findings[0].rule if findings else "mime.malformed"
        reply = Reply(550, "5.6.0", f"Message illisible / Unreadable message ({rule})")
        for rcpt in smtp.recipients:
            self._p.mailboxes.record_delivery(DeliveryRecord(envelope.submission_id, rcpt.address, "none",
                                                             DeliveryState.BOUNCED, attempts=1, last_reply=str(reply)))
        self._p.reports.failed(smtp, message, [(rcpt, reply, "") for rcpt in smtp.recipients],
                               about=envelope.submission_id)
        self._p.index.reject(envelope, tuple(f.to_dict() for f in findings))
        log.warning("mail submission=%s rejected: %s", envelope.submission_id, rule)


class IntegrationReports:
    """The integration report of a mail filed in a patient's mailbox, sent once every document it filed is
    final: MDN `processed` when all were indexed (or duplicates), `processed/Error` listing each problem
    otherwise (each rejected document: its XDM entry, rule and DMP code; each XDM-level error).

    The step after the CDA pipeline's outcome of an `mss` document (pipelines.definitions), and called by
    the mail pipeline right after filing (all documents may already be final, or there may be none). Whoever
    sees the last outcome claims the report (Mailboxes.claim_report: one winner, even for two workers
    finishing the last two documents at the same moment) and queues it under a submission id derived from
    the mailbox copy; a redelivery of the winner's envelope claims again and queues the same bytes under the
    same id, which the claim check never hands on again once final. A report stays unsent while a document
    is pending (not yet processed, or dead-lettered)."""

    def __init__(self, ports: MailPorts) -> None:
        self._p = ports

    def __call__(self, outcome: DocumentFiled | DocumentRejected) -> None:
        filing = self._p.mailboxes.filing_of(outcome.submission_id)
        if filing is not None:
            self.settle(filing, by=outcome.submission_id)

    def settle(self, filing: MailFiling, *, by: str) -> bool:
        """Queue the report if every document is final and `by` holds the claim; True when it was queued."""
        outcomes = [self._p.index.submission(d.submission_id) for d in filing.documents]
        final = [o for o in outcomes if o is not None and o.final]
        if len(final) < len(filing.documents) or not self._p.mailboxes.claim_report(filing.message_id, by=by):
            return False
        kept = self._p.mailboxes.message(filing.message_id)
        raw = kept.message_in(self._p.store.get(kept.blob)) if kept is not None else b""
        mail = parse_mail(raw, limits=self._p.mail_limits).mail if kept is not None else None
        if mail is None:
            log.error("mail message=%s: no integration report (mailbox copy missing or unreadable)", filing.message_id)
            return False
        errors = [*(_stored_finding(f, f.get("location", "/")) for f in filing.findings),
                  *_rejections(filing.documents, final)]
        at = max((o.updated_at for o in final if o.updated_at is not None), default=filing.received_at)
        sent = self._p.reports.integration_result(
            mail, raw, mailbox=filing.mailbox, errors=errors, at=at,
            submission_id=derived_submission_id(f"mss-integration-report:{filing.message_id}", filing.received_at))
        log.info("mail message=%s: %d document(s) final, %d problem(s), integration report %s", filing.message_id,
                 len(final), len(errors), "queued" if sent else "not asked for")
        return sent


def _filing_plan(q: Queued, message_id: str, mailbox: str, xdm: XdmReport, ins: str, rules: MssRules
                 ) -> tuple[MailFiling, tuple[Filed, ...]]:
    """What this mail files for this patient (pipelines.mail.core.trust): every CDA of its XDM, or none.

    Nothing when the sender may not file (the null reverse-path, an unauthenticated sender outside the
    trust list), nor when one member is hostile or refused (an XDM error, a metadata patientId or a
    recordTarget INS that is not the mailbox's, or empty): the findings say why, closed by
    `xdm.rejected`, and go to the sender in the integration report.  Otherwise each document under a
    submission id derived from the mailbox copy and its place in the XDM (so filing again submits
    nothing twice), with the masking codes its XDS metadata gives."""
    carries = bool(xdm.documents or xdm.findings)
    refusal = sender_may_file(q.smtp.mail_from, auth=q.smtp.auth, rules=rules) if carries else None
    carried = [Carried(f"{d.entry.subset}#{d.entry.entry_id}"[:200], d.data, d.entry.patient_ins)
               for d in xdm.documents]
    errors: tuple[Finding, ...] = (refusal,) if refusal is not None else \
        all_or_nothing((*xdm.findings, *mailbox_findings(carried, ins)))
    filed: list[FiledDocument] = []
    data: list[Filed] = []
    for n, (document, where) in enumerate(() if errors else zip(xdm.documents, carried, strict=True)):
        submission_id = derived_submission_id(f"mss-document:{message_id}:{n}", q.envelope.received_at)
        filed.append(FiledDocument(submission_id, where.location))
        data.append((document.data, tuple(c for c in document.entry.confidentiality if c in PRODUCER_CODES)))
    return MailFiling(message_id=message_id, mail_submission_id=q.envelope.submission_id, mailbox=mailbox,
                      received_at=q.envelope.received_at, documents=tuple(filed),
                      findings=tuple(f.to_dict() for f in errors)), tuple(data)


def _rejections(documents: Iterable[FiledDocument], outcomes: Iterable[SubmissionRecord]) -> list[Finding]:
    """One finding per rejected document, at its XDM entry: its first error (rule, DMP code, what to do)."""
    by_id = {o.submission_id: o for o in outcomes}
    found = []
    for document in documents:
        outcome = by_id[document.submission_id]
        if outcome.status is not SubmissionStatus.REJECTED:
            continue
        first = next((f for f in outcome.findings if f.get("severity", "error") == "error"), _REJECTED)
        found.append(_stored_finding(first, document.entry))
    return found


def _stored_finding(data: dict[str, object], location: object) -> Finding:
    code = data.get("code")
    return Finding(rule=str(data.get("rule", _REJECTED["rule"])), location=str(location),
                   message_fr=str(data.get("message_fr", "")), message_en=str(data.get("message_en", "")),
                   code=str(code) if code else None)


_REJECTED: dict[str, object] = {
    "rule": "document.rejected", "code": None,
    "message_fr": "Ce document a été refusé : il n'a pas été classé.",
    "message_en": "This document was rejected: it was not filed."}


def _xdm_of(mail: ParsedMail, limits: XdmLimits) -> XdmReport:
    attachment = find_xdm(mail)
    return read_xdm(attachment.data, limits=limits) if attachment is not None else XdmReport(documents=(), findings=())


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(">").lower() or "unknown"

