"""The audit trail as one viewer is shown it (pure): entries about a document they may not see, redacted.

Owns: shown(), the shape of one entry in the API's answer and in the export's audit.json.  An entry
whose target is a document hidden from the viewer (INVISIBLE_PATIENT not lifted, hidden from legal
representatives, deleted...) keeps only its place in time: {"seq", "at", "action", "redacted": true}
(no class, type, title, document id, actor or detail: who read a hidden document would reveal it too).
Every other entry is shown whole.  The stored chain is never touched: `meshub audit verify` still checks
every stored entry; only the view is redacted.
Does not: decide which documents a viewer may see (pipelines.record.core.access does, pipelines.record.access
asks it) or read the trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import Any

from hub.audit import AuditEntry


def redacted(entry: AuditEntry) -> dict[str, Any]:
    """What is left of an entry about a document the viewer may not see."""
    return {"seq": entry.seq, "at": entry.at.isoformat(), "action": str(entry.action), "redacted": True}


def shown(entries: Iterable[AuditEntry], hidden: Set[str]) -> list[dict[str, Any]]:
    """The entries as the viewer is shown them: whole, or redacted when their target is in `hidden`
    (the ids of the record's documents this viewer may not see)."""
    return [redacted(e) if e.target and e.target in hidden else e.to_dict() for e in entries]
