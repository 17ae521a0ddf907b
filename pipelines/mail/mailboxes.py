"""What a patient does with their mailbox: reply, send a document to a pharmacy, file attachments.

Owns: pipelines.mail.ports.MailService.  Each action checks the MSSanté rules (pipelines.mail.core.mss: a patient
writes only to a professional who wrote first and did not close the exchange, or to a pharmacy
listed for first contact; a document masked from professionals is never mailed to one; a message's
documents are filed only into the mailbox owner's record, all or nothing: core.mail_trust), composes
the message (pipelines.mail.core.reports, with a QR code for an e-prescription) and queues it through
intake exactly as the SMTP gateway does (this service is a door, called from HTTP: it keeps
hub.intake.Intake.accept, while the read receipt goes through the ReportSender the pipeline steps share:
claim check and publisher), so the mail pipeline routes and records it.  A document sent on
is read through the record's access rules (pipelines.record.ports.RecordService.document, as the patient): one
hidden from the patient (INVISIBLE_PATIENT), deleted, or in another record is NotFound, and traced.
Does not: speak HTTP (connectors.inbound.http.mailbox) or deliver anything itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from hub.actors import Access, Actor, ActorKind
from hub.audit import AuditAction
from hub.envelope import Source
from hub.errors import NotFound, Refused
from hub.findings import Finding, Severity
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, SmtpEnvelope, SmtpRecipient, pack
from hub.ports import BlobStore, Index, Mailboxes
from hub.records import MessageRecord
from pipelines.mail.core.mime import Attachment, ParsedMail, find_xdm, parse_mail
from pipelines.mail.core.mss import MssRules, RecipientKind, ThreadFacts, classify_recipient, may_patient_reply
from pipelines.mail.core.prescription import prescription_number, qr_png
from pipelines.mail.core.reports import build_message, reply_threading
from pipelines.mail.core.trust import Carried, all_or_nothing, mailbox_findings
from pipelines.mail.core.trust import finding as mail_finding
from pipelines.mail.core.xdm import read_xdm
from pipelines.mail.reporting import ReportSender
from pipelines.record.ports import RecordService

CDA_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-cda+xml"})
MASKED_FROM_PROFESSIONALS = "MASQUE_PS"


class PatientMail:
    """pipelines.mail.ports.MailService over the stores, the index and intake."""

    def __init__(self, *, store: BlobStore, index: Index, mailboxes: Mailboxes, intake: Intake, rules: MssRules,
                 reports: ReportSender, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 records: RecordService | None = None) -> None:
        self._reports = reports
        self._records = records
        self._store = store
        self._index = index
        self._mailboxes = mailboxes
        self._intake = intake
        self._rules = rules
        self._clock = clock

    def address(self, ins: str) -> str:
        return f"{ins}@{self._rules.patient_domain}"

    def read(self, ins: str, message_id: str) -> MessageRecord:
        record = self._message(ins, message_id)
        if record.read_at is not None:
            return record
        updated = self._mailboxes.mark_read(message_id)
        assert updated is not None
        if record.direction == "in":
            self._reports.displayed(self._parsed(record), mailbox=record.mailbox)
        return updated

    def reply(self, ins: str, message_id: str, text: str) -> str:
        record = self._message(ins, message_id)
        self._may_write(ins, record.correspondent)
        original = self._parsed(record)
        in_reply_to, references = reply_threading(original)
        subject = original.subject if original.subject.lower().startswith("re:") else f"Re: {original.subject}"
        raw = build_message(from_addr=self.address(ins), to_addrs=[record.correspondent], subject=subject,
                            text=text, now=self._clock(), in_reply_to=in_reply_to, references=references)
        return self._queue(ins, record.correspondent, raw)

    def send_document(self, ins: str, document_id: str, to: str, text: str) -> str:
        document = self._index.document(document_id)
        if document is None or document.patient_ins != ins:
            raise NotFound("no such document in this patient's record")
        if self._records is not None:  # the same access decision as reading it (traced, with the recipient)
            try:
                document = self._records.document(Access(Actor(ActorKind.PATIENT, ins)), document_id,
                                                  action=AuditAction.READ,
                                                  detail={"purpose": "send-document", "to": to[:256]})
            except NotFound:
                raise NotFound("no such document in this patient's record") from None
        target = classify_recipient(to, self._rules)
        if target.kind not in (RecipientKind.LOCAL_ORG, RecipientKind.REMOTE):
            raise Refused(_finding("mss.send.not-a-professional-mailbox"))
        if MASKED_FROM_PROFESSIONALS in document.confidentiality:
            raise Refused(_finding("mss.masking.masked-ps"))
        self._may_write(ins, target.address)
        cda = self._store.get(document.blob)
        attachments = [Attachment(f"{_safe_name(document.document_id)}.xml", "text/xml", cda)]
        number = prescription_number(cda)
        if number is not None:
            attachments.append(Attachment("prescription-qr.png", "image/png", qr_png(number)))
            text = f"{text}\n\nNuméro unique de prescription : {number}".strip()
        raw = build_message(from_addr=self.address(ins), to_addrs=[target.address], subject=document.title or
                            "Document", text=text or "Document transmis par le patient.", now=self._clock(),
                            attachments=attachments)
        return self._queue(ins, target.address, raw)

    def file_attachments(self, ins: str, message_id: str) -> list[str]:
        """File the message's CDA documents (its XDM's, and any plain CDA attachment) into this patient's
        record, all or nothing (pipelines.mail.core.trust): a delivery report (null reverse-path) files
        nothing (`mss.sender.untrusted`); a hostile or unreadable XDM files nothing (`xdm.rejected`); a
        document whose metadata patientId or recordTarget INS is not this patient's, or is empty, files
        nothing (`xdm.patient-mismatch`, DMP 904).  Each refusal is Refused before anything reaches intake."""
        record = self._message(ins, message_id)
        if record.direction == "notice":
            raise Refused(mail_finding("mss.sender.untrusted", "MAIL FROM").to_dict())
        mail = self._parsed(record)
        xdm = find_xdm(mail)
        report = read_xdm(xdm.data) if xdm is not None else None
        carried = [Carried(f"{d.entry.subset}#{d.entry.entry_id}"[:200], d.data, d.entry.patient_ins)
                   for d in (report.documents if report is not None else ())]
        carried += [Carried(a.filename[:200] or "attachment", a.data) for a in mail.attachments
                    if a.content_type in CDA_TYPES]
        refused = all_or_nothing((*(report.findings if report is not None else ()), *mailbox_findings(carried, ins)))
        if refused:
            mismatch = next((f for f in refused if f.rule == "xdm.patient-mismatch"), None)
            first = mismatch or refused[-1]
            raise Refused({**first.to_dict(), "findings": [f.to_dict() for f in refused]})
        source = Source(kind="mailbox", producer="patient")
        return [self._intake.accept(document.data, source).submission_id for document in carried]

    # -- helpers -----------------------------------------------------------------------------------------

    def _message(self, ins: str, message_id: str) -> MessageRecord:
        record = self._mailboxes.message(message_id)
        if record is None or record.mailbox != self.address(ins).lower():
            raise NotFound("no such message in this mailbox")
        return record

    def _parsed(self, record: MessageRecord) -> ParsedMail:
        raw = record.message_in(self._store.get(record.blob))
        mail = parse_mail(raw).mail
        if mail is None:
            raise Refused(_finding("mime.malformed"))
        return mail

    def _may_write(self, ins: str, target: str) -> None:
        wrote, closed = self._mailboxes.correspondents(self.address(ins).lower())
        finding = may_patient_reply(ThreadFacts(frozenset(wrote), frozenset(closed)), target, self._rules)
        if finding is not None:
            raise Refused(finding.to_dict())

    def _queue(self, ins: str, to: str, raw: bytes) -> str:
        smtp = SmtpEnvelope(mail_from=self.address(ins), recipients=(SmtpRecipient(to),), auth=f"patient:{ins}",
                            received_at=self._clock().isoformat())
        record = self._intake.accept(pack(smtp, raw), Source(kind="mailbox", producer="patient"),
                                     content_type=MAIL_CONTENT_TYPE, kind="mail")
        return record.submission_id


#: rule -> (French, English), for refusals decided here.
_MESSAGES = {
    "mss.send.not-a-professional-mailbox": (
        "Un document ne peut être envoyé qu'à une messagerie professionnelle (par exemple celle d'une pharmacie).",
        "A document can only be sent to a professional mailbox (for example a pharmacy's)."),
    "mss.masking.masked-ps": (
        "Document masqué aux professionnels (MASQUE_PS) : il ne peut pas être envoyé à un professionnel.",
        "Document masked from professionals (MASQUE_PS): it cannot be sent to a professional."),
    "mime.malformed": ("Le message d'origine est illisible.", "The original message is unreadable."),
}


def _finding(rule: str) -> dict[str, object]:
    fr, en = _MESSAGES[rule]
    return Finding(rule=rule, location="/", message_fr=fr, message_en=en, severity=Severity.ERROR).to_dict()


def _safe_name(document_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", document_id)[:80] or "document"
