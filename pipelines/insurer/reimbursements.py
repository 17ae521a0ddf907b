"""The insurer's reimbursement history: take batches and CNAM-HR documents in, hold them, file them once the
patient's profile has been active for 48 hours.

Owns: InsurerBatches: accept_batch (parse all or nothing, then hold the acts durably), accept_document (a
CNAM-HR CDA: hardened parse, REMB with an INS, bytes stored then held) and release(now) (for each patient
whose history may be filed, one history document per chunk of pending acts plus the held documents, each
through Intake under the insurer's credential, then marked filed).
Rule 1: filing is idempotent.  A history document's id comes from its set of act references and its
submission id from that document id, and the chunks are cut in the order the acts were received; a crash
between Intake.accept and mark_filed makes the next release submit the same document under the same id,
which the hub files once (the known submission is returned, or the index reports a duplicate).
Rule 2: nothing is filed before `released_after(ins)` (activation + 48 h, from the patient lifecycle) has
passed; None (not activated, opposed, closed) keeps everything held.
Does not: know when a patient was activated (the lifecycle does), validate and index what it submits (the CDA
pipeline does, as for any producer), or log INS, names, labels or file names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from hub.envelope import Source
from hub.errors import IntegrityError, NotFound, Refused
from hub.findings import Severity
from hub.ins import check_ins
from hub.intake import Intake, derived_submission_id
from hub.ports import BlobStore, Index
from pipelines.cda.header import ROOT_TAG, CdaHeader, read_header
from pipelines.cda.validation import ValidationRules, parse_untrusted, validate
from pipelines.insurer.core.history import HeldAct, HeldDocument, ReimbursementHolds
from pipelines.insurer.core.reimbursements import (
    DEFAULT_DOCUMENT_ID_ROOT,
    BatchLimits,
    BatchProblem,
    history_document_id,
    parse_batch,
    render_history,
)

log = logging.getLogger(__name__)
SOURCE_KIND = "insurer"
REMB_TYPE_CODE = "REMB"
MAX_PROBLEMS_SHOWN = 100
DEFAULT_LIMITS = BatchLimits()


class InsurerBatches:
    """The insurer's feed: batches and CNAM-HR documents in, history documents out through intake."""

    def __init__(self, *, intake: Intake, index: Index, store: BlobStore, holds: ReimbursementHolds,
                 released_after: Callable[[str], datetime | None], rules: ValidationRules, producer: str,
                 document_id_root: str = DEFAULT_DOCUMENT_ID_ROOT, max_acts_per_document: int = 500,
                 limits: BatchLimits = DEFAULT_LIMITS, page_size: int = 500,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._intake = intake
        self._index = index
        self._store = store
        self._holds = holds
        self._released_after = released_after
        self._rules = rules
        self._source = Source(kind=SOURCE_KIND, producer=producer)
        self._root = document_id_root
        self._chunk = max_acts_per_document
        self._limits = limits
        self._page = page_size
        self._clock = clock

    # -- in ----------------------------------------------------------------------------------------------

    def accept_batch(self, raw: bytes) -> dict[str, Any]:
        """Hold every act of a valid batch (those already known are skipped); Refused, holding nothing, when
        any line is wrong.  Counts: acts in the file, new, already known."""
        if len(raw) > self._limits.max_bytes:
            raise _batch_refused([BatchProblem(0, "file", "remb.too-large")])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _batch_refused([BatchProblem(0, "file", "remb.encoding")]) from exc
        result = parse_batch(text, limits=self._limits)
        if not result.ok or result.header is None:
            raise _batch_refused(list(result.problems))
        release = {ins: self._released_after(ins) for ins in {a.ins for a in result.acts}}
        new = self._holds.hold_acts(result.header.batch_id, result.acts, received_at=self._clock(),
                                    release_after=release)
        log.info("insurer batch held: %d act(s), %d new", len(result.acts), new)
        return {"batch_id": result.header.batch_id, "issuer": result.header.issuer, "acts": len(result.acts),
                "new": new, "known": len(result.acts) - new}

    def accept_document(self, raw: bytes) -> dict[str, Any]:
        """Hold a CNAM-HR CDA sent as such: it must pass the hub's validation, be typed REMB and name its
        patient by INS.  The bytes are stored first, then held; a re-delivery finds its row (new: False)."""
        header = self._checked_document(raw)
        assert header.patient_ins is not None and header.document_id
        ref = self._store.put(raw, kind="cda", content_type="text/xml")
        new = self._holds.hold_document(HeldDocument(document_key=header.document_id, ins=header.patient_ins,
                                                     blob=ref, received_at=self._clock(),
                                                     release_after=self._released_after(header.patient_ins)))
        log.info("insurer document held (new: %s)", new)
        return {"document_id": header.document_id, "new": new}

    def _checked_document(self, raw: bytes) -> CdaHeader:
        """The header of an acceptable insurer document, or Refused with the first reason it is not."""
        if len(raw) > self._rules.max_bytes:
            raise Refused(_finding("xml.too-large", "/", "the document is over the size limit",
                                   "le document dépasse la taille maximale"))
        root, problem = parse_untrusted(raw)
        if root is None:
            raise Refused(problem.to_dict() if problem is not None else _unreadable())
        if root.tag != ROOT_TAG:
            raise Refused(_finding("cda.root", "/", "the root element is not an HL7 CDA ClinicalDocument",
                                   "l'élément racine n'est pas un ClinicalDocument CDA HL7"))
        header = read_header(root)
        _require_remb_with_ins(header, self._rules)
        report = validate(raw, self._rules)
        if not report.ok:
            raise Refused(next(f for f in report.findings if f.severity is Severity.ERROR).to_dict())
        return header

    # -- out ---------------------------------------------------------------------------------------------

    def release(self, now: datetime, *, full: bool = False) -> dict[str, int]:
        """File the held history of every patient whose `released_after` has passed at `now`.  Counts:
        patients released, still waiting, history documents and insurer documents submitted, acts filed.
        By default only the items scheduled by then are looked at (each carries the time its profile's
        opening gave it: an indexed query, whatever the number of profiles still waiting); `full` pages
        through every pending patient and asks `released_after` (the hourly safety net, for an opening
        whose schedule was not recorded).
        A TransientError (store, index or bus down) ends the run; the next run goes on from what is pending."""
        counts = {"released": 0, "waiting": 0, "histories": 0, "documents": 0, "acts": 0}
        after, due = "", None if full else now
        while page := self._holds.pending_patients(self._page, after=after, due_before=due):
            for ins in page:
                self._release_patient(ins, now, counts)
            after = page[-1]
        if counts["released"]:
            log.info("insurer history released: %s", counts)
        return counts

    def _release_patient(self, ins: str, now: datetime, counts: dict[str, int]) -> None:
        """File one patient's pending acts (as history documents) and documents, if released at `now`."""
        from_when = self._released_after(ins)
        patient = self._index.patient(ins) if from_when is not None and from_when <= now else None
        if patient is None:
            counts["waiting"] += 1
            return
        counts["released"] += 1
        acts = self._holds.pending_acts(ins)
        for chunk in _chunks(acts, self._chunk):
            raw = render_history(ins, chunk[0].act.ins_oid, [h.act for h in chunk], patient=patient,
                                 document_id_root=self._root, produced_at=max(h.received_at for h in chunk))
            self._file_history(raw, chunk)
            counts["histories"] += 1
            counts["acts"] += len(chunk)
        for document in self._holds.pending_documents(ins):
            counts["documents"] += self._file_document(document)

    def _file_history(self, raw: bytes, chunk: Sequence[HeldAct]) -> None:
        """Submit one rendered history under its derived submission id, then mark its acts filed."""
        refs = [h.act.act_ref for h in chunk]
        at = max(h.received_at for h in chunk)
        identity = f"insurer-history:{history_document_id(refs, root=self._root)}"
        record = self._intake.accept(raw, self._source, content_type="text/xml",
                                     submission_id=derived_submission_id(identity, at))
        self._holds.mark_filed(record.submission_id, act_refs=refs)

    def _file_document(self, document: HeldDocument) -> int:
        """Submit one held insurer document under its derived submission id, then mark it filed; 1 if done."""
        try:
            raw = self._store.get(document.blob)
        except (IntegrityError, NotFound) as exc:  # stays held; an operator must look (logged without data)
            log.error("insurer document bytes unusable: %s", type(exc).__name__)
            return 0
        identity = f"insurer-document:{document.document_key}"
        record = self._intake.accept(raw, self._source, content_type="text/xml",
                                     submission_id=derived_submission_id(identity, document.received_at))
        self._holds.mark_filed(record.submission_id, document_keys=[document.document_key])
        return 1


def _chunks(acts: Sequence[HeldAct], size: int) -> list[Sequence[HeldAct]]:
    """Cut in received order, so that acts arriving later never move the earlier chunks' boundaries."""
    ordered = sorted(acts, key=lambda h: (h.received_at, h.act.act_ref))
    return [ordered[i:i + size] for i in range(0, len(ordered), max(1, size))]


def _require_remb_with_ins(header: CdaHeader, rules: ValidationRules) -> None:
    """Refused unless the document is typed REMB, names its patient by a valid INS and has an id."""
    if header.type_code != REMB_TYPE_CODE:
        raise Refused(_finding("remb.document.type", "/ClinicalDocument/code",
                               "an insurer document must be a CNAM-HR document typed REMB",
                               "un document de l'assurance maladie doit être un CNAM-HR de type REMB"))
    if not header.patient_ins or not header.patient_ins_oid:
        raise Refused(_finding("ins.missing", "/ClinicalDocument/recordTarget/patientRole",
                               "no INS in recordTarget/patientRole/id", "aucun INS dans recordTarget/patientRole/id"))
    findings = check_ins(header.patient_ins, header.patient_ins_oid,
                         location="/ClinicalDocument/recordTarget/patientRole/id", accepted_oids=rules.ins_oids)
    if findings:
        raise Refused(findings[0].to_dict())
    if not header.document_id:
        raise Refused(_finding("cda.header.id", "/ClinicalDocument/id", "the document has no id (id@root)",
                               "le document n'a pas d'identifiant (id@root)"))


def _batch_refused(problems: list[BatchProblem]) -> Refused:
    """One Refused for the whole batch, listing its problems (line, field, rule; no values)."""
    first = problems[0] if problems else BatchProblem(0, "file", "remb.empty")
    return Refused({
        "rule": "remb.batch", "location": f"line {first.line}",
        "message_en": f"the batch was refused, nothing was held: {len(problems)} problem(s); fix them and send "
                      "the whole batch again",
        "message_fr": f"lot refusé, rien n'a été conservé : {len(problems)} problème(s) ; corrigez-les et "
                      "renvoyez le lot entier",
        "problems": [p.to_dict() for p in problems[:MAX_PROBLEMS_SHOWN]], "count": len(problems)})


def _finding(rule: str, location: str, en: str, fr: str) -> dict[str, object]:
    return {"rule": rule, "location": location, "message_en": en, "message_fr": fr}


def _unreadable() -> dict[str, object]:
    return _finding("xml.well-formed", "/", "the document is not readable XML", "le document n'est pas du XML lisible")
