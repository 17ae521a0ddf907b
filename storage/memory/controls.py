"""hub.access.RecordControls in memory: document flags, emergency settings, blocks and first accesses.

Owns: MemoryRecordControls, with storage.sql.controls' rules: an unknown flag name is ValueError, a
delete keeps the first deletion (True once), note_access is True for a professional's very first access
only (even when concurrent), block and unblock are idempotent, settings default to both allowed.
Does not: decide who may do what (pipelines.record.core.access).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from hub.access import FLAG_NAMES, NO_FLAGS, DocumentFlags, PatientControls
from storage.memory.index import MemoryIndex


class MemoryRecordControls:
    """RecordControls on dicts, sharing the index's lock and outage switch."""

    def __init__(self, index: MemoryIndex) -> None:
        self.state = index.state
        self._flags: dict[str, tuple[str, DocumentFlags]] = {}  # document id -> (ins, flags)
        self._settings: dict[str, PatientControls] = {}
        self._blocked: dict[str, set[str]] = {}
        self._first: dict[tuple[str, str], datetime] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryRecordControls:
        return index.beside(cls, cls)

    def flags(self, document_ids: Sequence[str]) -> dict[str, DocumentFlags]:
        with self.state.lock:
            self.state.check()
            return {d: self._flags[d][1] if d in self._flags else NO_FLAGS for d in dict.fromkeys(document_ids)}

    def set_flag(self, document_id: str, ins: str, flag_name: str, value: bool, *, by: str, at: datetime) -> None:
        if flag_name not in FLAG_NAMES:
            raise ValueError(f"unknown document flag {flag_name!r} (one of {', '.join(FLAG_NAMES)})")
        with self.state.lock:
            self.state.check()
            owner, flags = self._flags.get(document_id, (ins, NO_FLAGS))
            changed: dict[str, Any] = {flag_name: bool(value), "updated_at": at}
            self._flags[document_id] = (owner, replace(flags, **changed))

    def delete(self, document_id: str, ins: str, *, by: str, at: datetime) -> bool:
        with self.state.lock:
            self.state.check()
            owner, flags = self._flags.get(document_id, (ins, NO_FLAGS))
            if flags.deleted:
                return False
            self._flags[document_id] = (owner, replace(flags, deleted=True, deleted_at=at, deleted_by=by,
                                                       updated_at=at))
            return True

    def controls(self, ins: str) -> PatientControls:
        with self.state.lock:
            self.state.check()
            settings = self._settings.get(ins, PatientControls())
            return replace(settings, blocked=frozenset(self._blocked.get(ins, set())))

    def set_emergency(self, ins: str, *, bris_de_glace: bool | None, regulation: bool | None) -> None:
        with self.state.lock:
            self.state.check()
            settings = self._settings.get(ins, PatientControls())
            if bris_de_glace is not None:
                settings = replace(settings, bris_de_glace_allowed=bool(bris_de_glace))
            if regulation is not None:
                settings = replace(settings, regulation_allowed=bool(regulation))
            self._settings[ins] = settings

    def block(self, ins: str, idnps: str) -> None:
        with self.state.lock:
            self.state.check()
            self._blocked.setdefault(ins, set()).add(idnps)

    def unblock(self, ins: str, idnps: str) -> None:
        with self.state.lock:
            self.state.check()
            self._blocked.get(ins, set()).discard(idnps)

    def note_access(self, ins: str, idnps: str, at: datetime) -> bool:
        with self.state.lock:
            self.state.check()
            if (ins, idnps) in self._first:
                return False
            self._first[(ins, idnps)] = at
            return True

    def first_access(self, ins: str, idnps: str) -> datetime | None:
        with self.state.lock:
            self.state.check()
            return self._first.get((ins, idnps))

    def forget(self, ins: str) -> int:
        """Drop every row about `ins` (the purge); how many."""
        with self.state.lock:
            documents = [d for d, (owner, _) in self._flags.items() if owner == ins]
            for d in documents:
                del self._flags[d]
            accesses = [k for k in self._first if k[0] == ins]
            for k in accesses:
                del self._first[k]
            settings = 1 if self._settings.pop(ins, None) is not None else 0
            return len(documents) + len(accesses) + settings + len(self._blocked.pop(ins, set()))
