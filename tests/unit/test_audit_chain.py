"""The audit chain's format and verifier (pure): every kind of tampering is found and named by seq."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from hub.actors import Actor, ActorKind
from hub.audit import AuditAction, AuditEntry, NewAuditEntry, Verification
from pipelines.record.core.audit_chain import GENESIS, body_digest, canonical_body, chain, link, verify
from tests.builders import TEST_INS

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DOCTOR = Actor(ActorKind.PROFESSIONAL, "810000000001", profession="G15_10")


def news(n: int) -> list[NewAuditEntry]:
    return [NewAuditEntry.by(DOCTOR, AuditAction.READ, at=NOW + timedelta(seconds=i), ins=TEST_INS,
                             target=f"doc-{i}", detail={"mode": "normal"}) for i in range(n)]


def trail(n: int = 5) -> list[AuditEntry]:
    return chain(0, GENESIS, news(n))


def head_of(entries: list[AuditEntry]) -> tuple[int, str]:
    return (entries[-1].seq, entries[-1].entry_hash) if entries else (0, GENESIS)


def broken(entries: list[AuditEntry], head: tuple[int, str]) -> tuple[int | None, str]:
    result = verify(entries, head)
    assert not result.ok
    return result.broken_seq, result.reason


def test_an_intact_trail_and_an_empty_one_verify() -> None:
    entries = trail()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS and all(b.prev_hash == a.entry_hash for a, b in pairwise(entries))
    assert verify(entries, head_of(entries)) == Verification(ok=True, checked=5)
    assert verify([], (0, GENESIS)).ok
    assert "5 entries verified" in str(verify(entries, head_of(entries)))


def test_chaining_continues_from_a_head() -> None:
    first = trail(3)
    more = chain(*head_of(first), news(2))
    assert [e.seq for e in more] == [4, 5] and more[0].prev_hash == first[-1].entry_hash
    assert verify(first + more, head_of(more)).ok


def test_the_byte_format_is_stable() -> None:
    entry = NewAuditEntry(at=datetime(2026, 1, 2, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))), ins=TEST_INS,
                          actor_kind="patient", actor_id=TEST_INS, action=AuditAction.EMERGENCY,
                          detail={"reason": "inconscient, réanimation"})
    assert canonical_body(entry) == (
        '{"action":"emergency","actor_id":"279035121518989","actor_kind":"patient",'
        '"at":"2026-01-02T02:05:06.000000Z","detail":{"reason":"inconscient, réanimation"},'
        '"ins":"279035121518989","key":"","outcome":"ok","target":""}').encode()
    assert len(body_digest(entry)) == 64 and link(GENESIS, 1, "a" * 64) != link(GENESIS, 2, "a" * 64)


def test_new_entries_are_validated() -> None:
    with pytest.raises(ValueError, match="timezone"):
        NewAuditEntry(at=datetime(2026, 1, 1), ins=TEST_INS, actor_kind="patient", actor_id="x",
                      action=AuditAction.READ)
    with pytest.raises(ValueError, match="outcome"):
        NewAuditEntry(at=NOW, ins=TEST_INS, actor_kind="patient", actor_id="x", action=AuditAction.READ,
                      outcome="maybe")


@pytest.mark.parametrize("change", [
    {"actor_id": "810000000999"}, {"detail": {"mode": "bris_de_glace"}}, {"target": "doc-x"},
    {"ins": "199999999999999"}, {"at": NOW + timedelta(days=1)}, {"action": "list"}, {"outcome": "refused"},
    {"key": "k"},
])
def test_a_changed_body_field_is_named_by_its_seq(change: dict[str, object]) -> None:
    entries = trail()
    entries[2] = replace(entries[2], **change)  # type: ignore[arg-type]
    assert broken(entries, head_of(entries)) == (3, "its content was altered (body digest mismatch)")


def test_a_changed_hash_is_named_by_its_seq() -> None:
    entries = trail()
    entries[1] = replace(entries[1], entry_hash="f" * 64)
    assert broken(entries, head_of(entries)) == (2, "its entry_hash was altered")
    entries = trail()
    entries[3] = replace(entries[3], prev_hash="f" * 64)
    assert broken(entries, head_of(entries))[0] == 4


def test_a_rewritten_entry_with_recomputed_hashes_breaks_the_next_link() -> None:
    entries = trail()
    forged = replace(entries[2], actor_id="810000000999")
    digest = body_digest(forged)
    entries[2] = replace(forged, body_sha256=digest, entry_hash=link(forged.prev_hash, 3, digest))
    seq, reason = broken(entries, head_of(trail()))
    assert seq == 4 and "prev_hash" in reason


def test_a_removed_middle_entry_is_named() -> None:
    entries = trail()
    head = head_of(entries)
    del entries[2]
    assert broken(entries, head) == (3, "entry 3 is missing or out of order (found entry 4 instead)")


def test_reordered_entries_are_detected() -> None:
    entries = trail()
    entries[1], entries[2] = entries[2], entries[1]
    assert broken(entries, head_of(trail()))[0] == 2
    renumbered = trail()
    a, b = renumbered[1], renumbered[2]
    renumbered[1], renumbered[2] = replace(b, seq=2), replace(a, seq=3)  # contents swapped, seqs kept
    assert broken(renumbered, head_of(trail()))[0] == 2


def test_a_truncated_tail_is_detected_against_the_head() -> None:
    entries = trail()
    head = head_of(entries)
    assert broken(entries[:3], head) == (4, "entries 4 to 5 are missing (the head says 5)")
    assert broken([], head)[0] == 1


def test_entries_beyond_the_head_or_a_changed_head_are_detected() -> None:
    entries = trail()
    assert broken(entries, head_of(entries[:4]))[0] == 5
    assert broken(entries, (5, "e" * 64)) == (5, "its hash is not the one recorded in the head")


def test_redacted_entries_still_verify_but_cannot_hide_a_body() -> None:
    entries = trail()
    purged = [replace(e, ins="", actor_id="", target="", detail={}, key="", redacted=True) if e.seq in (2, 3)
              else e for e in entries]
    assert verify(purged, head_of(entries)).ok
    sneaky = list(entries)
    sneaky[1] = replace(entries[1], actor_id="810000000999", redacted=True)
    assert broken(sneaky, head_of(entries)) == (2, "it is marked redacted but still carries a body")
    purged[2] = replace(purged[2], body_sha256="0" * 64)
    assert broken(purged, head_of(entries))[0] == 3


def test_verification_streams_its_entries() -> None:
    def once() -> Iterator[AuditEntry]:
        yield from trail(50)
    assert verify(once(), head_of(trail(50))).checked == 50


def test_a_broken_verification_names_the_entry() -> None:
    text = str(Verification(ok=False, checked=2, broken_seq=3, reason="its entry_hash was altered"))
    assert text.startswith("audit trail broken at entry 3: its entry_hash was altered")


def test_to_dict_is_json_ready() -> None:
    data = trail(1)[0].to_dict()
    assert data["at"] == "2026-12-02T12:00:00+00:00" and data["action"] == "read" and data["seq"] == 1
    assert data["detail"] == {"mode": "normal"} and data["redacted"] is False
