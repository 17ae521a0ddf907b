"""`opened` counts as an open record exactly like `active` for intake and professional access (issue 12)."""

from __future__ import annotations

import pytest

from hub.access import PatientControls
from hub.actors import AccessMode, Actor, ActorKind
from hub.records import OPEN_STATUSES, PatientStatus
from pipelines.mail.core.mss import PATIENT_STATUS_REASONS
from pipelines.record.core import access

PRO = Actor(ActorKind.PROFESSIONAL, "810000000001", profession="10")


@pytest.mark.parametrize("status", list(PatientStatus))
def test_professional_access_and_mail_intake_treat_opened_like_active(status: PatientStatus) -> None:
    decision = access.open_record(PRO, AccessMode.NORMAL, status=str(status), controls=PatientControls())
    assert decision.allowed is (status in OPEN_STATUSES)
    assert (PATIENT_STATUS_REASONS[str(status)] is None) is (status is not PatientStatus.OPPOSED
                                                             and status is not PatientStatus.CLOSED)
    assert {PatientStatus.ACTIVE, PatientStatus.OPENED} == OPEN_STATUSES
