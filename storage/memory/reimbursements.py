"""pipelines.insurer.core.history.ReimbursementHolds in memory: acts and insurer documents held until filed.

Owns: MemoryReimbursements, with storage.sql.reimbursements' rules: an act is held once per reference and
a document once per CDA id (the first copy is kept; a re-delivery adds nothing), pending lists come in
(received_at, key) order, pending patients in INS order, and mark_filed keeps the first submission.
Does not: decide when a history may be filed (pipelines.insurer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from pipelines.insurer.core.history import HeldAct, HeldDocument, ReimbursedAct
from storage.memory.index import MemoryIndex


@dataclass
class _Act:
    held: HeldAct
    release_after: datetime | None


class MemoryReimbursements:
    """ReimbursementHolds on dicts, sharing the index's lock and outage switch."""

    def __init__(self, index: MemoryIndex) -> None:
        self.state = index.state
        self.act_rows: dict[str, _Act] = {}
        self.document_rows: dict[str, HeldDocument] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryReimbursements:
        return index.beside(cls, cls)

    def hold_acts(self, batch_id: str, acts: Sequence[ReimbursedAct], *, received_at: datetime,
                  release_after: Mapping[str, datetime | None] | None = None) -> int:
        release = release_after or {}
        added = 0
        with self.state.lock:
            self.state.check()
            for act in acts:
                if act.act_ref not in self.act_rows:
                    self.act_rows[act.act_ref] = _Act(HeldAct(act, batch_id, received_at), release.get(act.ins))
                    added += 1
        return added

    def hold_document(self, document: HeldDocument) -> bool:
        with self.state.lock:
            self.state.check()
            if document.document_key in self.document_rows:
                return False
            self.document_rows[document.document_key] = replace(document, filed_submission=None)
            return True

    def schedule(self, ins: str, release_after: datetime) -> int:
        changed = 0
        with self.state.lock:
            self.state.check()
            for act in self.act_rows.values():
                if act.held.act.ins == ins and act.held.filed_submission is None:
                    act.release_after = release_after
                    changed += 1
            for key, doc in self.document_rows.items():
                if doc.ins == ins and doc.filed_submission is None:
                    self.document_rows[key] = replace(doc, release_after=release_after)
                    changed += 1
        return changed

    def pending_patients(self, limit: int = 500, *, after: str = "", due_before: datetime | None = None) -> list[str]:
        def due(at: datetime | None) -> bool:
            return due_before is None or (at is not None and at <= due_before)

        with self.state.lock:
            self.state.check()
            found = {a.held.act.ins for a in self.act_rows.values()
                     if a.held.filed_submission is None and due(a.release_after)}
            found |= {d.ins for d in self.document_rows.values() if d.filed_submission is None and due(d.release_after)}
        return sorted(i for i in found if i > after)[:limit]

    def pending_acts(self, ins: str) -> list[HeldAct]:
        with self.state.lock:
            self.state.check()
            held = [a.held for a in self.act_rows.values() if a.held.act.ins == ins and a.held.filed_submission is None]
        return sorted(held, key=lambda h: (h.received_at, h.act.act_ref))

    def pending_documents(self, ins: str) -> list[HeldDocument]:
        with self.state.lock:
            self.state.check()
            held = [d for d in self.document_rows.values() if d.ins == ins and d.filed_submission is None]
        return sorted(held, key=lambda d: (d.received_at, d.document_key))

    def mark_filed(self, submission_id: str, *, act_refs: Sequence[str] = (),
                   document_keys: Sequence[str] = ()) -> int:
        changed = 0
        with self.state.lock:
            self.state.check()
            for ref in dict.fromkeys(act_refs):
                act = self.act_rows.get(ref)
                if act is not None and act.held.filed_submission is None:
                    act.held = replace(act.held, filed_submission=submission_id)
                    changed += 1
            for key in dict.fromkeys(document_keys):
                doc = self.document_rows.get(key)
                if doc is not None and doc.filed_submission is None:
                    self.document_rows[key] = replace(doc, filed_submission=submission_id)
                    changed += 1
        return changed

    def held_act(self, act_ref: str) -> HeldAct | None:
        with self.state.lock:
            self.state.check()
            act = self.act_rows.get(act_ref)
        return act.held if act is not None else None

    def held_document(self, document_key: str) -> HeldDocument | None:
        with self.state.lock:
            self.state.check()
            return self.document_rows.get(document_key)
