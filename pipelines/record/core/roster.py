"""Read an insurer roster CSV into patient records (pure).

Owns: header check, per-line validation (INS structure and key, status, birth
date; each cell at most MAX_CELL characters, no control character, no leading
= + - @ that a spreadsheet would run as a formula, except a phone's +<digit>
(a quoted line break stays allowed: an address may have several lines);
each INS once in the file) and the all-or-nothing rule: one bad line rejects
the whole file, with every problem listed by line and column, so a roster is
never half-imported.  A file the CSV reader cannot read (an unclosed quote at
the end, a cell over the reader's own limit) is one problem, not a crash.
An optional `vitale_serial` column carries the serial number of the person's Vitale card (one of the
activation factors): it is validated and normalised (pipelines.record.core.lifecycle.normalise_vitale) and
returned beside the records (`RosterResult.vitale`), never inside a PatientRecord, so it is neither kept
in the registry nor shown.  Birth dates are kept as YYYY-MM-DD.
Does not: write anything (storage.sql.index upserts what this returns).  Error
texts name the line and the rule, never the identity values themselves (nor the serial).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from hub.ins import check_ins
from hub.records import PatientRecord, PatientStatus
from pipelines.record.core.factors import normalise_vitale

REQUIRED_COLUMNS = ("ins", "oid", "birth_name", "given_names", "birth_date", "sex", "birth_place",
                    "email", "phone", "postal_address", "status")
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10",
                      "1.2.250.1.213.1.4.11"})
VITALE_COLUMN = "vitale_serial"  # optional
MAX_CELL = 1000  # characters in any cell (the longest field, an address, is far shorter)
#: a cell starting with one of these is run as a formula by spreadsheets (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@")


@dataclass(frozen=True, slots=True)
class RosterProblem:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


@dataclass(frozen=True, slots=True)
class RosterResult:
    """The valid records, every problem, and the normalised Vitale serial of each INS that had one."""

    patients: tuple[PatientRecord, ...]
    problems: tuple[RosterProblem, ...]
    vitale: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_roster(text: str) -> RosterResult:
    """Parse the whole roster; `problems` is empty only if every line is valid."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        return RosterResult((), (RosterProblem(1, ",".join(missing), "missing column(s) in the header"),))
    patients: list[PatientRecord] = []
    problems: list[RosterProblem] = []
    vitale: dict[str, str] = {}
    first_line: dict[str, int] = {}
    try:
        for line_no, row in enumerate(reader, start=2):
            row_problems = _check_row(row, line_no) + _repeated(row, line_no, first_line)
            problems.extend(row_problems)
            if not row_problems:
                record = _record(row)
                patients.append(record)
                serial = normalise_vitale(row.get(VITALE_COLUMN) or "")
                if serial:
                    vitale[record.ins] = serial
    except csv.Error:  # the reader's own limits (a cell over 128 KiB, a quote never closed...)
        problems.append(RosterProblem(reader.line_num + 1, "*", "not readable as CSV (a quote not closed, or a cell "
                                      f"far over {MAX_CELL} characters)"))
    return RosterResult(tuple(patients), tuple(problems), vitale)


def _repeated(row: dict[str, str | None], line: int, first_line: dict[str, int]) -> list[RosterProblem]:
    """The INS was already on an earlier line of this file (which of the two would win is not said)."""
    ins = (row.get("ins") or "").strip()
    if not ins:
        return []
    first = first_line.setdefault(ins, line)
    return [RosterProblem(line, "ins", f"the same INS as line {first}: one line per patient")] if first != line \
        else []


def _cell_problems(row: dict[str, str | None], line: int) -> list[RosterProblem]:
    """Every cell: bounded, no control character, no formula start (a phone may start with +<digit>)."""
    found = []
    for column, value in row.items():
        text = (value or "").strip() if isinstance(value, str) else ""
        phone = column == "phone" and text[:1] == "+" and text[1:2].isdigit()
        if len(text) > MAX_CELL:
            found.append(RosterProblem(line, str(column), f"longer than {MAX_CELL} characters"))
        elif any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in text):
            found.append(RosterProblem(line, str(column), "contains a control character (NUL, ESC...)"))
        elif text.startswith(FORMULA_STARTS) and not phone:
            found.append(RosterProblem(line, str(column), "starts with = + - or @, which a spreadsheet runs as "
                                       "a formula"))
    return found


def _check_row(row: dict[str, str | None], line: int) -> list[RosterProblem]:
    cell = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
    found = _cell_problems(row, line)
    found += [RosterProblem(line, "ins", f.message_en)
             for f in check_ins(cell["ins"], cell["oid"], location=f"line {line}", accepted_oids=INS_OIDS)]
    if cell["status"] not in {s.value for s in PatientStatus}:
        found.append(RosterProblem(line, "status", "must be one of created, opened, active, opposed, closed"))
    try:
        date.fromisoformat(cell["birth_date"])
    except ValueError:
        found.append(RosterProblem(line, "birth_date", "must be a date written YYYY-MM-DD"))
    if cell["sex"] not in ("M", "F", "U", "1", "2"):
        found.append(RosterProblem(line, "sex", "must be M, F or U (or 1 / 2)"))
    serial = (row.get(VITALE_COLUMN) or "").strip()
    if serial and normalise_vitale(serial) is None:
        found.append(RosterProblem(line, VITALE_COLUMN, "must be the card's serial number: 8 to 20 letters or "
                                   "digits (spaces and dashes allowed), or empty"))
    return found


def _record(row: dict[str, str | None]) -> PatientRecord:
    cell = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
    cell["birth_date"] = date.fromisoformat(cell["birth_date"]).isoformat()
    return PatientRecord(**{k: v for k, v in cell.items() if k != "status"}, status=PatientStatus(cell["status"]))
