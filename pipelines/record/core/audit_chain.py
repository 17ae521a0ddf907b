"""Checking the audit trail's hash chain (pure, streaming): is every entry there, unchanged, in order?

Owns: `verify`, which walks the entries once in seq order (constant memory) and names the first broken
entry: a body changed after it was written (its digest no longer matches), a hash changed, an entry
removed or moved (a seq gap, or a prev_hash that is not the previous entry's hash), or the last entries
removed (the head, kept apart, says more than the rows).
A redacted (purged) entry is checked on its stored body_sha256 alone, and must carry no body any more
(so marking an entry redacted cannot hide a changed body: the data itself has to be gone).
The byte format (canonical body, body_digest, link, chain, GENESIS) is defined in hub.audit, because the
store applies it inside its lock; it is re-exported here for the verifier's readers.
Does not: read the store (pipelines.record.audit.verify_trail pages through it).
"""

from __future__ import annotations

from collections.abc import Iterable

from hub.audit import GENESIS, AuditEntry, Verification, body_digest, canonical_body, chain, link

__all__ = ["GENESIS", "body_digest", "canonical_body", "chain", "entry_fault", "link", "verify"]


def _body_fault(entry: AuditEntry) -> str:
    """Why this entry's body does not match its digest ("" when it does)."""
    if entry.redacted:
        if entry.ins or entry.actor_id or entry.target or entry.key or entry.detail:
            return "it is marked redacted but still carries a body"
        return ""
    if body_digest(entry) != entry.body_sha256:
        return "its content was altered (body digest mismatch)"
    return ""


def entry_fault(entry: AuditEntry, expected_seq: int, prev_hash: str) -> str:
    """Why `entry` cannot follow an entry whose hash is `prev_hash` at position `expected_seq` ("" if it can)."""
    if entry.seq > expected_seq:
        return f"entry {expected_seq} is missing or out of order (found entry {entry.seq} instead)"
    if entry.seq < expected_seq:
        return f"entry {entry.seq} is out of order or repeated (expected entry {expected_seq})"
    if entry.prev_hash != prev_hash:
        return "its prev_hash is not the hash of the entry before (this entry or the one before was altered)"
    body = _body_fault(entry)
    if body:
        return body
    if link(entry.prev_hash, entry.seq, entry.body_sha256) != entry.entry_hash:
        return "its entry_hash was altered"
    return ""


def _head_fault(last_seq: int, last_hash: str, head: tuple[int, str]) -> tuple[int, str] | None:
    """(broken seq, reason) when the rows do not end where the head says, else None."""
    head_seq, head_hash = head
    if head_seq > last_seq:
        return last_seq + 1, f"entries {last_seq + 1} to {head_seq} are missing (the head says {head_seq})"
    if head_seq < last_seq:
        return head_seq + 1, f"entries after {head_seq} are not covered by the head (appended outside the trail)"
    if head_hash != last_hash:
        return last_seq, "its hash is not the one recorded in the head"
    return None


def verify(entries: Iterable[AuditEntry], head: tuple[int, str]) -> Verification:
    """Check `entries` (the whole trail, in seq order, from seq 1) against the trail's `head`."""
    expected, prev_hash, checked = 1, GENESIS, 0
    for entry in entries:
        fault = entry_fault(entry, expected, prev_hash)
        if fault:
            return Verification(ok=False, checked=checked, broken_seq=min(entry.seq, expected), reason=fault)
        expected, prev_hash, checked = expected + 1, entry.entry_hash, checked + 1
    end = _head_fault(expected - 1, prev_hash, head)
    if end is not None:
        return Verification(ok=False, checked=checked, broken_seq=end[0], reason=end[1])
    return Verification(ok=True, checked=checked)
