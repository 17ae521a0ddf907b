"""pipelines.record.core.profile.LifecycleStore in memory: one Profile per INS.

Owns: MemoryProfiles, with storage.sql.profiles' rules: a change of status updates the profile and the
registry status (MemoryIndex.set_patient_status) under one lock, and only if the expected status and
`where` fields still hold (of concurrent requests one wins, the others get None); a wrong attempt is
counted by compare-and-set; a purged profile is replaced by a new registration; minors turning adult
are the represented patients (MemoryNotifications beside the same index) born on or before a day.
Does not: decide anything (pipelines.record.core.lifecycle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from datetime import datetime
from typing import Any

from hub.records import PatientStatus
from pipelines.record.core.profile import Profile
from storage.memory.index import MemoryIndex
from storage.memory.notifications import MemoryNotifications

_WRITABLE = frozenset(f.name for f in fields(Profile)) - {"ins", "status"}


def _checked(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(values) - _WRITABLE
    if unknown:
        raise ValueError(f"not profile columns: {', '.join(sorted(unknown))}")
    return dict(values)


class MemoryProfiles:
    """LifecycleStore on a dict, sharing the index's lock, outage switch and registry."""

    def __init__(self, index: MemoryIndex) -> None:
        self.state = index.state
        self._index = index
        self.profile_rows: dict[str, Profile] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryProfiles:
        return index.beside(cls, cls)

    def profile(self, ins: str) -> Profile | None:
        with self.state.lock:
            self.state.check()
            return self.profile_rows.get(ins)

    def statuses(self, ins: Sequence[str]) -> dict[str, PatientStatus]:
        with self.state.lock:
            self.state.check()
            return {i: p.status for i in ins if (p := self.profile_rows.get(i)) is not None and p.purged_at is None}

    def due_auto_open(self, now: datetime, limit: int = 500) -> list[Profile]:
        due = self._where(lambda p: p.status is PatientStatus.CREATED and p.code_expires_at is not None
                          and p.code_expires_at <= now)
        return sorted(due, key=lambda p: (p.code_expires_at or now, p.ins))[:limit]

    def due_purge(self, now: datetime, limit: int = 500) -> list[Profile]:
        due = self._where(lambda p: p.status is PatientStatus.CLOSED and p.purge_after is not None
                          and p.purge_after <= now and p.purged_at is None)
        return sorted(due, key=lambda p: (p.purge_after or now, p.ins))[:limit]

    def minors_turning_adult(self, born_on_or_before: str, limit: int = 500,
                             after: str = "") -> list[tuple[str, str]]:
        with self.state.lock:
            self.state.check()
            represented = list(MemoryNotifications.beside(self._index).representative_rows)
            born = {p.ins: p.birth_date for p in self._index.patient_rows.values()}
        found = [(ins, born[ins]) for ins in represented
                 if ins > after and born.get(ins) and born[ins] <= born_on_or_before]
        return sorted(found)[:limit]

    def register(self, ins: str, *, code_sha256: str, vitale_sha256: str, created_at: datetime,
                 expires_at: datetime | None, status: PatientStatus = PatientStatus.CREATED,
                 values: Mapping[str, Any] | None = None) -> Profile | None:
        new = Profile(**{**_checked(values or {}), "ins": ins, "status": status, "created_at": created_at,
                         "code_expires_at": expires_at, "code_sha256": code_sha256, "vitale_sha256": vitale_sha256,
                         "code_generation": 1 if code_sha256 else 0})
        with self.state.lock:
            self.state.check()
            found = self.profile_rows.get(ins)
            if found is not None and found.purged_at is None:
                return None
            self.profile_rows[ins] = new
            self._index.set_patient_status(ins, status)
        return new

    def transition(self, ins: str, *, from_statuses: Sequence[PatientStatus], to_status: PatientStatus,
                   values: Mapping[str, Any], where: Mapping[str, Any] | None = None) -> Profile | None:
        changes, wanted = _checked(values), _checked(where or {})

        def holds(p: Profile) -> bool:
            return p.status in from_statuses and all(getattr(p, k) == v for k, v in wanted.items())

        with self.state.lock:
            changed = self._update(ins, holds, lambda p: replace(p, **changes, status=to_status))
            if changed is not None:
                self._index.set_patient_status(ins, to_status)
        return changed

    def record_failure(self, ins: str, *, now: datetime, seen: int,
                       locked_until: datetime | None) -> Profile | None:
        return self._update(ins, lambda p: p.failed_attempts == seen,
                            lambda p: replace(p, failed_attempts=seen + 1, locked_until=locked_until))

    def reissue(self, ins: str, *, code_sha256: str, expires_at: datetime,
                from_statuses: Sequence[PatientStatus], now: datetime) -> Profile | None:
        return self._update(ins, lambda p: p.status in from_statuses, lambda p: replace(
            p, code_sha256=code_sha256, code_expires_at=expires_at, code_generation=p.code_generation + 1))

    def mark_announced(self, ins: str, generation: int) -> None:
        self._update(ins, lambda p: p.announced_generation < generation,
                     lambda p: replace(p, announced_generation=generation))

    def set_vitale(self, ins: str, vitale_sha256: str) -> None:
        self._update(ins, lambda p: p.vitale_sha256 != vitale_sha256, lambda p: replace(p, vitale_sha256=vitale_sha256))

    def sync_status(self, ins: Sequence[str]) -> int:
        changed = 0
        with self.state.lock:
            self.state.check()
            for one in dict.fromkeys(ins):
                own, registered = self.profile_rows.get(one), self._index.patient(one)
                if (own is not None and own.purged_at is None and registered is not None
                        and registered.status is not own.status):
                    changed += self._index.set_patient_status(one, own.status)
        return changed

    def mark_purged(self, ins: str, now: datetime) -> Profile | None:
        return self._update(ins, lambda p: p.status is PatientStatus.CLOSED and p.purged_at is None,
                            lambda p: replace(p, purged_at=now))

    def _where(self, keep: Callable[[Profile], bool]) -> list[Profile]:
        with self.state.lock:
            self.state.check()
            return [p for p in self.profile_rows.values() if keep(p)]

    def _update(self, ins: str, holds: Callable[[Profile], bool],
                change: Callable[[Profile], Profile]) -> Profile | None:
        """Apply `change` to the profile if `holds` (a conditional UPDATE); the new profile, or None."""
        with self.state.lock:
            self.state.check()
            found = self.profile_rows.get(ins)
            if found is None or not holds(found):
                return None
            changed = self.profile_rows[ins] = change(found)
            return changed
