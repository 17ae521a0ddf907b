"""The read table (record.core.read_rules) and the trail as a viewer is shown it (record.core.trail_view)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.actors import ActorKind
from hub.audit import GENESIS, AuditAction, NewAuditEntry, chain
from hub.reading import Reading
from pipelines.record.core.read_rules import CONTENT, READS, may_read
from pipelines.record.core.trail_view import shown

OPEN_STATES = ("created", "opened", "active")


@pytest.mark.parametrize("reading", list(Reading))
def test_the_insurer_reads_only_the_profiles_state(reading: Reading) -> None:
    for status in (*OPEN_STATES, "opposed", "closed", None):
        rule = may_read(ActorKind.INSURER, reading, status)
        assert rule.allowed is (reading is Reading.PROFILE and status is not None)
        if reading is not Reading.PROFILE:
            assert (rule.decision.rule, rule.not_found) == ("read.role", False)  # 403 before any 404


@pytest.mark.parametrize("kind", list(READS))
def test_a_closed_profiles_content_is_404_for_everyone_admin_included(kind: ActorKind) -> None:
    for reading in READS[kind]:
        rule = may_read(kind, reading, "closed")
        assert rule.not_found is (reading in CONTENT), (kind, reading)


def test_the_admin_keeps_state_trail_and_deliveries_of_a_closed_profile_and_every_read_is_traced() -> None:
    for reading in Reading:
        rule = may_read(ActorKind.ADMIN, reading, "closed")
        assert rule.traced and rule.allowed is (reading in (Reading.PROFILE, Reading.AUDIT, Reading.DELIVERIES))
        assert may_read(ActorKind.ADMIN, reading, "active").allowed


def test_a_professional_reads_documents_only_and_an_opposed_profile_has_none() -> None:
    assert [r for r in Reading if may_read(ActorKind.PROFESSIONAL, r, "active").allowed] == [Reading.DOCUMENTS]
    assert may_read(ActorKind.PATIENT, Reading.DOCUMENTS, "opposed").not_found
    assert may_read(ActorKind.ADMIN, Reading.DOCUMENTS, "opposed").allowed


def test_redacted_entries_keep_only_their_place_in_time() -> None:
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    news = [NewAuditEntry(at=at, ins="1", actor_kind="system", actor_id="lab", action=AuditAction.WRITE,
                          target=target, detail={"type": "11502-2", "class": "11502-2"}) for target in ("a", "b")]
    news.append(NewAuditEntry(at=at, ins="1", actor_kind="patient", actor_id="1", action=AuditAction.LIST))
    entries = chain(0, GENESIS, news)
    view = shown(entries, frozenset({"b"}))
    assert view[0] == entries[0].to_dict() and view[2] == entries[2].to_dict()
    assert view[1] == {"seq": 2, "at": at.isoformat(), "action": "write", "redacted": True}
