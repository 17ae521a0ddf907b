"""The insurer's batch of reimbursed acts (format MESHUB-REMB, version 1): parse it, and render a patient's
acts as a CNAM-HR "Données de remboursement" CDA (pure).

Owns: parse_batch() (all lines or none, like pipelines.record.core.roster), BatchLimits, BatchProblem, BatchResult,
history_document_id() and render_history() (the CDA itself is built by pipelines.insurer.core.cnam_hr).
Does not: read files, hold acts (storage.sql.reimbursements) or decide when they are filed
(pipelines.insurer.reimbursements).  Problems name the line, the field and the rule, never a value of the file
(no INS, no label, no code).

The format (also in docs/reimbursement-batch.md).  UTF-8 text (a BOM is allowed), one record per line, LF or
CRLF, fields separated by `|` (a field never contains `|`; leading and trailing spaces are trimmed):

    MESHUB-REMB|1|<batch id>|<issuer>                          header: format, version, batch id, issuer
    <act ref>|<INS>|<INS OID>|<date>|<kind>|<code>|<label>|<qty>|<paid>|<reimbursed>|<prescriber>|<executant>
    ...                                                          one line per act, exactly 12 fields
    END|<number of act lines>                                   trailer: a file cut short has none, or a
                                                                wrong count, and is refused

* batch id, issuer, act ref: 1-64 characters `A-Z a-z 0-9 . _ : -`, starting with a letter or digit.  The act
  reference is unique at the insurer: it is the deduplication key (a re-delivered or overlapping batch adds
  only the acts whose reference the hub has not seen); it may appear only once in a file.
* INS, INS OID: the 15-character matricule (13 + 2-digit key, 2A/2B allowed) and its OID
  (1.2.250.1.213.1.4.8 NIR, .9 NIA, .10 test, .11 demo); the key is checked.
* date: date of care (delivery date for a medication or a device), `YYYY-MM-DD`.
* kind and code: `CIP13` (medication: 13 digits, valid EAN-13 check digit), `NGAP` (key letters, e.g. `G`,
  `AMI`, `FTR`: a capital then up to 5 capitals or digits), `CCAM` (4 capitals + 3 digits), `LPP`
  (7 digits), `NABM` (biology: 1 to 4 digits).
* label: the act's label as the insurer knows it, 1-200 characters, no control character.
* qty: a whole number from 1 to 99999.  paid / reimbursed: euros, `123` or `123.4` or `123.45` (at most
  9999999.99); reimbursed may not exceed paid (the amount charged for the act).
* prescriber (optional, may be empty): IDNPS, `8` + the 11 RPPS digits.
* executant (optional, may be empty): IDNPS, or the 9-character FINESS number of the establishment.

No blank line, nothing after the trailer.  One problem anywhere refuses the whole file (nothing is held).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from hub.actors import valid_idnps
from hub.ins import check_ins
from hub.records import PatientRecord
from pipelines.cda.validation import DEFAULT_INS_OIDS
from pipelines.insurer.core.cnam_hr import build_history
from pipelines.insurer.core.history import ActKind, BatchHeader, ReimbursedAct

FORMAT = "MESHUB-REMB"
VERSION = "1"
TRAILER = "END"
ACT_FIELDS = ("act_ref", "ins", "ins_oid", "care_date", "kind", "code", "label", "quantity", "amount_paid",
              "amount_reimbursed", "prescriber", "executant")
#: II root of the history documents the hub renders (a fixed UUID: unique without registering an OID).
DEFAULT_DOCUMENT_ID_ROOT = "5F0C3C8E-5A41-5E0B-9D57-0B1E8C2D7A10"

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_QUANTITY = re.compile(r"[1-9]\d{0,4}")
_AMOUNT = re.compile(r"(\d{1,7})(?:\.(\d{1,2}))?")
_FINESS = re.compile(r"(?:\d{2}|2A|2B)\d{7}")
_CODES: dict[ActKind, re.Pattern[str]] = {
    ActKind.CIP13: re.compile(r"\d{13}"),
    ActKind.NGAP: re.compile(r"[A-Z][A-Z0-9]{0,5}"),
    ActKind.CCAM: re.compile(r"[A-Z]{4}\d{3}"),
    ActKind.LPP: re.compile(r"\d{7}"),
    ActKind.NABM: re.compile(r"\d{1,4}"),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: rule -> what is wrong, in English (never a value from the file).
MESSAGES: dict[str, str] = {
    "remb.too-large": "the file is over the size limit",
    "remb.encoding": "the file is not UTF-8 text",
    "remb.empty": "the file is empty: it needs a header line",
    "remb.header": "the first line must be MESHUB-REMB|1|<batch id>|<issuer>",
    "remb.header.version": "unsupported format version (this hub reads version 1)",
    "remb.header.batch_id": "the batch id must be 1-64 characters A-Z a-z 0-9 . _ : -",
    "remb.header.issuer": "the issuer must be 1-64 characters A-Z a-z 0-9 . _ : -",
    "remb.line.blank": "blank line",
    "remb.line.too-long": "line over the length limit",
    "remb.too-many-acts": "more acts than one batch may carry: split the batch",
    "remb.act.fields": "an act line has exactly 12 fields separated by |",
    "remb.act.act_ref": "the act reference must be 1-64 characters A-Z a-z 0-9 . _ : -",
    "remb.act.duplicate": "this act reference already appears on an earlier line of the file",
    "ins.oid": "the INS OID is not an accepted INS OID (1.2.250.1.213.1.4.8, .9, .10, .11)",
    "ins.format": "the INS must be 13 digits (2A/2B allowed at positions 6-7) and a 2-digit key",
    "ins.key": "the INS key (2 last digits) does not match its 13 first digits",
    "remb.act.care_date": "the date of care must be a real date written YYYY-MM-DD",
    "remb.act.kind": "the act kind must be CIP13, NGAP, CCAM, LPP or NABM",
    "remb.act.code": "the code does not have the shape its kind requires (see the format)",
    "remb.act.label": "the label must be 1-200 characters without control characters",
    "remb.act.quantity": "the quantity must be a whole number from 1 to 99999",
    "remb.act.amount_paid": "the amount paid must be euros written 123, 123.4 or 123.45",
    "remb.act.amount_reimbursed": "the amount reimbursed must be euros written 123, 123.4 or 123.45",
    "remb.act.reimbursed-over-paid": "the amount reimbursed is over the amount paid",
    "remb.act.prescriber": "the prescriber must be an IDNPS (8 then the 11 RPPS digits) or empty",
    "remb.act.executant": "the executant must be an IDNPS, a 9-character FINESS number, or empty",
    "remb.trailer": "the trailer must be END|<number of act lines>",
    "remb.trailer.missing": "no trailer line END|<count>: the file is truncated",
    "remb.trailer.count": "the trailer's count is not the number of act lines: the file is truncated or padded",
    "remb.after-trailer": "nothing may follow the trailer line",
}


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Caps checked while parsing (the caller checks the byte size before decoding, with max_bytes)."""

    max_bytes: int = 64 * 1024 * 1024
    max_acts: int = 200_000
    max_line_chars: int = 2048
    max_problems: int = 200


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """One thing wrong in a batch: where (line, field) and which rule; never the value."""

    line: int
    field: str
    rule: str

    @property
    def message(self) -> str:
        return MESSAGES.get(self.rule, self.rule)

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "rule": self.rule, "message": self.message}

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.message} ({self.rule})"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A parsed batch: header and acts only when there is no problem at all (all or nothing)."""

    header: BatchHeader | None
    acts: tuple[ReimbursedAct, ...]
    problems: tuple[BatchProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems and self.header is not None


# -- parsing -----------------------------------------------------------------------------------------------


def parse_batch(text: str, *, limits: BatchLimits = BatchLimits()) -> BatchResult:
    """Parse a whole batch; `acts` is empty unless every line is right (problems list each one)."""
    if len(text) > limits.max_bytes:
        return _refused(BatchProblem(0, "file", "remb.too-large"))
    lines = _lines(text)
    if not lines:
        return _refused(BatchProblem(1, "header", "remb.empty"))
    header, problems = _header(lines[0])
    reader = _BodyReader(limits)
    finished = all(reader.read(number, line) for number, line in enumerate(lines[1:], start=2))
    problems.extend(reader.finish(len(lines) + 1) if finished else reader.problems)
    problems = problems[:limits.max_problems]
    if problems or header is None:
        return BatchResult(None, (), tuple(problems))
    return BatchResult(header, tuple(reader.acts), ())


def _refused(problem: BatchProblem) -> BatchResult:
    return BatchResult(None, (), (problem,))


def _lines(text: str) -> list[str]:
    """Split on LF only (a label may hold other Unicode separators), dropping one CR before it."""
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _header(line: str) -> tuple[BatchHeader | None, list[BatchProblem]]:
    """The header line -> (its BatchHeader, []) or (None, its problems)."""
    fields = [f.strip() for f in line.split("|")]
    if len(fields) != 4 or fields[0] != FORMAT:
        return None, [BatchProblem(1, "header", "remb.header")]
    problems: list[BatchProblem] = []
    if fields[1] != VERSION:
        problems.append(BatchProblem(1, "version", "remb.header.version"))
    for name, value in (("batch_id", fields[2]), ("issuer", fields[3])):
        if not _TOKEN.fullmatch(value):
            problems.append(BatchProblem(1, name, f"remb.header.{name}"))
    header = BatchHeader(format=fields[0], version=fields[1], batch_id=fields[2], issuer=fields[3])
    return (None if problems else header), problems


class _BodyReader:
    """Reads the act lines and the trailer, line by line, collecting acts and problems."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self.acts: list[ReimbursedAct] = []
        self.problems: list[BatchProblem] = []
        self.act_lines = 0
        self.trailer: tuple[int, str] | None = None  # (line number, count field)
        self.seen: dict[str, int] = {}

    def read(self, number: int, line: str) -> bool:
        """Take one line; False when reading should stop (too many problems or acts)."""
        if self.trailer is not None:
            self.problems.append(BatchProblem(number, "line", "remb.after-trailer"))
        elif not line.strip():
            self.problems.append(BatchProblem(number, "line", "remb.line.blank"))
        elif len(line) > self.limits.max_line_chars:
            self.problems.append(BatchProblem(number, "line", "remb.line.too-long"))
            self.act_lines += 1
        elif line.split("|", 1)[0].strip() == TRAILER and line.count("|") <= 1:
            self.trailer = (number, line.partition("|")[2].strip())
        else:
            self.act_lines += 1
            self._act(number, line)
        if self.act_lines > self.limits.max_acts:
            self.problems.append(BatchProblem(number, "line", "remb.too-many-acts"))
            return False
        return len(self.problems) < self.limits.max_problems

    def _act(self, number: int, line: str) -> None:
        act, problems = parse_act(number, line)
        if act is not None:
            first = self.seen.setdefault(act.act_ref, number)
            if first != number:
                problems.append(BatchProblem(number, "act_ref", "remb.act.duplicate"))
        self.problems.extend(problems)
        if act is not None and not problems:
            self.acts.append(act)

    def finish(self, end_line: int) -> list[BatchProblem]:
        """The problems found, plus the trailer's (missing, malformed or a wrong count)."""
        if self.trailer is None:
            return [*self.problems, BatchProblem(end_line, "trailer", "remb.trailer.missing")]
        number, count = self.trailer
        if not count.isdigit():
            return [*self.problems, BatchProblem(number, "trailer", "remb.trailer")]
        if int(count) != self.act_lines:
            return [*self.problems, BatchProblem(number, "trailer", "remb.trailer.count")]
        return self.problems


def parse_act(number: int, line: str) -> tuple[ReimbursedAct | None, list[BatchProblem]]:
    """One act line -> (the act, []) or (None, its problems)."""
    fields = [f.strip() for f in line.split("|")]
    if len(fields) != len(ACT_FIELDS):
        return None, [BatchProblem(number, "line", "remb.act.fields")]
    cell = dict(zip(ACT_FIELDS, fields, strict=True))
    problems = [BatchProblem(number, name, rule) for name, check in _CHECKS
                if (rule := check(cell)) is not None]
    problems += [BatchProblem(number, "ins_oid" if f.rule == "ins.oid" else "ins", f.rule) for f in
                 check_ins(cell["ins"], cell["ins_oid"], location=f"line {number}", accepted_oids=DEFAULT_INS_OIDS)]
    if problems:
        return None, problems
    return _act(cell), []


def _act(cell: dict[str, str]) -> ReimbursedAct:
    return ReimbursedAct(
        act_ref=cell["act_ref"], ins=cell["ins"], ins_oid=cell["ins_oid"], care_date=cell["care_date"],
        kind=ActKind(cell["kind"]), code=cell["code"], label=cell["label"], quantity=int(cell["quantity"]),
        paid_cents=_cents(cell["amount_paid"]), reimbursed_cents=_cents(cell["amount_reimbursed"]),
        prescriber=cell["prescriber"], executant=cell["executant"])


# -- field checks: each returns the rule broken, or None ---------------------------------------------------


def _check_ref(cell: dict[str, str]) -> str | None:
    return None if _TOKEN.fullmatch(cell["act_ref"]) else "remb.act.act_ref"


def _check_date(cell: dict[str, str]) -> str | None:
    value = cell["care_date"]
    if not _DATE.fullmatch(value):
        return "remb.act.care_date"
    try:
        date.fromisoformat(value)
    except ValueError:
        return "remb.act.care_date"
    return None


def _check_code(cell: dict[str, str]) -> str | None:
    """The kind must be known and the code have its kind's shape (CIP13: EAN-13 check)."""
    if cell["kind"] not in ActKind.__members__:
        return "remb.act.kind"
    kind = ActKind(cell["kind"])
    code = cell["code"]
    if not _CODES[kind].fullmatch(code) or (kind is ActKind.CIP13 and not ean13_ok(code)):
        return "remb.act.code"
    return None


def _check_label(cell: dict[str, str]) -> str | None:
    label = cell["label"]
    return None if 0 < len(label) <= 200 and not _CONTROL.search(label) else "remb.act.label"


def _check_quantity(cell: dict[str, str]) -> str | None:
    return None if _QUANTITY.fullmatch(cell["quantity"]) else "remb.act.quantity"


def _check_amounts(cell: dict[str, str]) -> str | None:
    """Both amounts in euros with at most 2 decimals, and reimbursed <= paid."""
    for name in ("amount_paid", "amount_reimbursed"):
        if not _AMOUNT.fullmatch(cell[name]):
            return f"remb.act.{name}"
    if _cents(cell["amount_reimbursed"]) > _cents(cell["amount_paid"]):
        return "remb.act.reimbursed-over-paid"
    return None


def _check_prescriber(cell: dict[str, str]) -> str | None:
    value = cell["prescriber"]
    return None if not value or valid_idnps(value) else "remb.act.prescriber"


def _check_executant(cell: dict[str, str]) -> str | None:
    value = cell["executant"]
    return None if not value or valid_idnps(value) or _FINESS.fullmatch(value) else "remb.act.executant"


_CHECKS: tuple[tuple[str, Callable[[dict[str, str]], str | None]], ...] = (
    ("act_ref", _check_ref), ("care_date", _check_date), ("code", _check_code), ("label", _check_label),
    ("quantity", _check_quantity), ("amount", _check_amounts), ("prescriber", _check_prescriber),
    ("executant", _check_executant),
)


def ean13_ok(code: str) -> bool:
    """True when the 13th digit is the EAN-13 check digit of the first 12 (CIP13 codes are EAN-13)."""
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(code[:12]))
    return (10 - total % 10) % 10 == int(code[12])


def _cents(amount: str) -> int:
    """'12.5' -> 1250 (the shape was checked first)."""
    match = _AMOUNT.fullmatch(amount)
    assert match is not None  # checked first
    return int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))


# -- rendering ---------------------------------------------------------------------------------------------


def history_document_id(act_refs: Sequence[str], *, root: str = DEFAULT_DOCUMENT_ID_ROOT) -> str:
    """The CDA id (root^extension) of the history document of these acts: the same set of act references
    always gives the same id, so filing it again is a duplicate the index refuses."""
    digest = hashlib.sha256("\n".join(sorted(set(act_refs))).encode()).hexdigest()[:40]
    return f"{root}^{digest}"


def render_history(ins: str, ins_oid: str, acts: Sequence[ReimbursedAct], *, patient: PatientRecord,
                   document_id_root: str = DEFAULT_DOCUMENT_ID_ROOT, produced_at: datetime) -> bytes:
    """The CNAM-HR "Données de remboursement" CDA of one patient's `acts` (UTF-8 bytes).

    The document id is history_document_id() of the act references; `produced_at` (timezone-aware) is its
    effectiveTime.  The recordTarget's identity traits come from `patient` (the registry's record)."""
    if not acts:
        raise ValueError("a history document needs at least one act")
    if patient.ins != ins or any(a.ins != ins for a in acts):
        raise ValueError("every act and the patient record must be of the same INS")
    if produced_at.tzinfo is None:
        raise ValueError("produced_at must be timezone-aware")
    document_id = history_document_id([a.act_ref for a in acts], root=document_id_root)
    return build_history(ins, ins_oid, acts, patient=patient, document_id=document_id, produced_at=produced_at)
