"""Read an insurer roster CSV into patient records (pure).

Owns: header check, per-line validation (INS structure and key, status, birth
date) and the all-or-nothing rule: one bad line rejects the whole file, with
every problem listed by line and column, so a roster is never half-imported.
Does not: write anything (storage.index upserts what this returns).  Error
texts name the line and the rule, never the identity values themselves.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date

from hub.records import PatientRecord, PatientStatus
from pipelines.core.ins import check_ins

REQUIRED_COLUMNS = ("ins", "oid", "birth_name", "given_names", "birth_date", "sex", "birth_place",
                    "email", "phone", "postal_address", "status")
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10",
                      "1.2.250.1.213.1.4.11"})


@dataclass(frozen=True, slots=True)
class RosterProblem:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


@dataclass(frozen=True, slots=True)
class RosterResult:
    patients: tuple[PatientRecord, ...]
    problems: tuple[RosterProblem, ...]

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
    for line_no, row in enumerate(reader, start=2):
        row_problems = _check_row(row, line_no)
        problems.extend(row_problems)
        if not row_problems:
            patients.append(_record(row))
    return RosterResult(tuple(patients), tuple(problems))


def _check_row(row: dict[str, str | None], line: int) -> list[RosterProblem]:
    cell = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
    found = [RosterProblem(line, "ins", f.message_en)
             for f in check_ins(cell["ins"], cell["oid"], location=f"line {line}", accepted_oids=INS_OIDS)]
    if cell["status"] not in {s.value for s in PatientStatus}:
        found.append(RosterProblem(line, "status", "must be one of created, active, opposed, closed"))
    try:
        date.fromisoformat(cell["birth_date"])
    except ValueError:
        found.append(RosterProblem(line, "birth_date", "must be a date written YYYY-MM-DD"))
    if cell["sex"] not in ("M", "F", "U", "1", "2"):
        found.append(RosterProblem(line, "sex", "must be M, F or U (or 1 / 2)"))
    return found


def _record(row: dict[str, str | None]) -> PatientRecord:
    cell = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
    return PatientRecord(**{k: v for k, v in cell.items() if k != "status"}, status=PatientStatus(cell["status"]))
