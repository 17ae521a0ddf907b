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
        self.flag_rows: dict[str, tuple[str, DocumentFlags]] = {}  # document id -> (ins, flags)
        self.setting_rows: dict[str, PatientControls] = {}
        self.blocked_rows: dict[str, set[str]] = {}
        self.first_rows: dict[tuple[str, str], datetime] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryRecordControls:
        return index.beside(cls, cls)

    def flags(self, document_ids: Sequence[str]) -> dict[str, DocumentFlags]:
        with self.state.lock:
            self.state.check()
            return {d: self.flag_rows[d][1] if d in self.flag_rows else NO_FLAGS for d in dict.fromkeys(document_ids)}

    def set_flag(self, document_id: str, ins: str, flag_name: str, value: bool, *, by: str, at: datetime) -> None:
        if flag_name not in FLAG_NAMES:
            raise ValueError(f"unknown document flag {flag_name!r} (one of {', '.join(FLAG_NAMES)})")
        with self.state.lock:
            self.state.check()
            owner, flags = self.flag_rows.get(document_id, (ins, NO_FLAGS))
            changed: dict[str, Any] = {flag_name: bool(value), "updated_at": at}
            self.flag_rows[document_id] = (owner, replace(flags, **changed))

    def delete(self, document_id: str, ins: str, *, by: str, at: datetime) -> bool:
        with self.state.lock:
            self.state.check()
            owner, flags = self.flag_rows.get(document_id, (ins, NO_FLAGS))
            if flags.deleted:
                return False
            self.flag_rows[document_id] = (owner, replace(flags, deleted=True, deleted_at=at, deleted_by=by,
                                                       updated_at=at))
            return True

    def controls(self, ins: str) -> PatientControls:
        with self.state.lock:
            self.state.check()
            settings = self.setting_rows.get(ins, PatientControls())
            return replace(settings, blocked=frozenset(self.blocked_rows.get(ins, set())))

    def set_emergency(self, ins: str, *, bris_de_glace: bool | None, regulation: bool | None) -> None:
        with self.state.lock:
            self.state.check()
            settings = self.setting_rows.get(ins, PatientControls())
            if bris_de_glace is not None:
                settings = replace(settings, bris_de_glace_allowed=bool(bris_de_glace))
            if regulation is not None:
                settings = replace(settings, regulation_allowed=bool(regulation))
            self.setting_rows[ins] = settings

    def block(self, ins: str, idnps: str) -> None:
        with self.state.lock:
            self.state.check()
            self.blocked_rows.setdefault(ins, set()).add(idnps)

    def unblock(self, ins: str, idnps: str) -> None:
        with self.state.lock:
            self.state.check()
            self.blocked_rows.get(ins, set()).discard(idnps)

    def note_access(self, ins: str, idnps: str, at: datetime) -> bool:
        with self.state.lock:
            self.state.check()
            if (ins, idnps) in self.first_rows:
                return False
            self.first_rows[(ins, idnps)] = at
            return True

    def first_access(self, ins: str, idnps: str) -> datetime | None:
        with self.state.lock:
            self.state.check()
            return self.first_rows.get((ins, idnps))
