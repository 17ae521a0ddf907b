"""Roster import: parse a roster CSV (pure core) and upsert it into the registry, all or nothing.

Owns: bytes -> parse -> upsert, and the outcome counts.  With a `lifecycle`
(pipelines.record.lifecycle.Lifecycle), an existing profile's status wins over the
roster's before the upsert, and every imported record then gets its profile
(a new `created` one its provisional code and letter event); the Vitale card
serials of the optional `vitale_serial` column go to the lifecycle only.
Does not: decide the rules of a valid line (pipelines.record.core.roster) or log identities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from hub.errors import RosterRejected
from hub.ports import Index
from hub.records import PatientRecord
from pipelines.record.core.roster import parse_roster


class RosterLifecycle(Protocol):
    """What the import asks of the lifecycle (pipelines.record.lifecycle.Lifecycle)."""

    def admit(self, patients: Sequence[PatientRecord]) -> list[PatientRecord]: ...

    def registered(self, patients: Sequence[PatientRecord],
                   vitale: Mapping[str, str] | None = None) -> dict[str, int]: ...


def import_roster(raw: bytes, index: Index, lifecycle: RosterLifecycle | None = None) -> dict[str, Any]:
    """Import every line or none; raise RosterRejected listing each problem by line and column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RosterRejected([f"the file is not UTF-8 (byte {exc.start})"]) from exc
    result = parse_roster(text)
    if not result.ok:
        raise RosterRejected([str(p) for p in result.problems[:100]])
    records = lifecycle.admit(result.patients) if lifecycle is not None else list(result.patients)
    count = index.upsert_patients(records)
    by_status: dict[str, int] = {}
    for patient in records:
        by_status[str(patient.status)] = by_status.get(str(patient.status), 0) + 1
    outcome: dict[str, Any] = {"imported": count, "by_status": by_status}
    if lifecycle is not None:
        outcome["profiles"] = lifecycle.registered(records, result.vitale)
    return outcome
