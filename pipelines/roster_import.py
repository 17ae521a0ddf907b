"""Roster import: parse a roster CSV (pure core) and upsert it into the registry, all or nothing.

Owns: bytes -> parse -> upsert, and the outcome counts.  Does not: decide the
rules of a valid line (pipelines.core.roster) or log identities.
"""

from __future__ import annotations

from typing import Any

from hub.errors import RosterRejected
from hub.ports import Index
from pipelines.core.roster import parse_roster


def import_roster(raw: bytes, index: Index) -> dict[str, Any]:
    """Import every line or none; raise RosterRejected listing each problem by line and column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RosterRejected([f"the file is not UTF-8 (byte {exc.start})"]) from exc
    result = parse_roster(text)
    if not result.ok:
        raise RosterRejected([str(p) for p in result.problems[:100]])
    count = index.upsert_patients(list(result.patients))
    by_status: dict[str, int] = {}
    for patient in result.patients:
        by_status[str(patient.status)] = by_status.get(str(patient.status), 0) + 1
    return {"imported": count, "by_status": by_status}
