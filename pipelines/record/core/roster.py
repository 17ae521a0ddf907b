"""Read an insurer roster CSV into patient records (pure).

Owns: header check, per-line validation (INS structure and key, status, birth
date) and the all-or-nothing rule: one bad line rejects the whole file, with
every problem listed by line and column, so a roster is never half-imported.
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
    for line_no, row in enumerate(reader, start=2):
        row_problems = _check_row(row, line_no)
        problems.extend(row_problems)
        if not row_problems:
            record = _record(row)
            patients.append(record)
            serial = normalise_vitale(row.get(VITALE_COLUMN) or "")
            if serial:
                vitale[record.ins] = serial
    return RosterResult(tuple(patients), tuple(problems), vitale)


def _check_row(row: dict[str, str | None], line: int) -> list[RosterProblem]:
    cell = {k: (row.get(k) or "").strip() for k in REQUIRED_COLUMNS}
    found = [RosterProblem(line, "ins", f.message_en)
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
