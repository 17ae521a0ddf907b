"""The lifecycle's scheduled sweep: automatic opening, minors coming of age, purge at the end of the archive.

Owns: what the sweep does at `now`: automatic opening makes a created profile `opened` (never `active`:
only its holder's activation does that); a minor who came of age loses their representatives and gets
their own code (announced before the representation ends, so the letter is theirs); a closed profile
past its archive is purged.  Each step pages through what is due and changes each profile in its own
transaction, so a crash loses nothing and a second run does nothing twice (a purge hook must be
idempotent: it is called again if the crash falls between the purge and its mark).  Logs carry counts,
never an INS.
Does not: schedule itself (the composition root calls sweep()) or purge content (the purge hook).
"""

from __future__ import annotations

import logging
from datetime import datetime

from hub.records import PatientStatus
from pipelines.record.core.lifecycle import (
    Request,
    adult_since,
    auto_open_due,
    majority_cutoff,
    next_status,
    opening_values,
    paris_date,
    purge_due,
)
from pipelines.record.lifecycle.steps import BATCH, SYSTEM_REF, Steps

log = logging.getLogger(__name__)


class Sweep:
    """Everything due at a moment, profile by profile."""

    def __init__(self, steps: Steps) -> None:
        self._s = steps

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Everything due at `now` (default: the clock): automatic openings, minors who came of age
        (representation ended, the young adult invited with a new code), purges.  Counts only."""
        moment = now or self._s.p.clock()
        counts = {"opened": self._open_due(moment), **self._adults(moment), "purged": self._purge_due(moment)}
        log.info("lifecycle sweep: %s", counts)
        return counts

    def _open_due(self, now: datetime) -> int:
        s, opened = self._s, 0
        while True:
            due = s.p.profiles.due_auto_open(now, BATCH)
            before = opened
            for profile in due:
                done = s.p.profiles.transition(
                    profile.ins, from_statuses=(PatientStatus.CREATED,), to_status=PatientStatus.OPENED,
                    values=opening_values(now), where={"code_generation": profile.code_generation},
                ) if auto_open_due(profile, now) else None
                if done is not None:
                    s.withdraw(profile.ins)
                    s.audit(profile.ins, "lifecycle.opened-automatically", SYSTEM_REF)
                    s.opened(done)
                    opened += 1
            if len(due) < BATCH or opened == before:
                return opened

    def _adults(self, now: datetime) -> dict[str, int]:
        today, rules = paris_date(now), self._s.p.rules
        cutoff, after = majority_cutoff(today, rules), ""
        counts = {"came_of_age": 0, "invited": 0}
        while True:
            page = self._s.p.profiles.minors_turning_adult(cutoff, BATCH, after)
            for ins, born in page:
                if adult_since(born, today, rules) is not None:
                    counts["invited"] += self._invite(ins, now)
                    self._end_representation(ins)
                    counts["came_of_age"] += 1
            if len(page) < BATCH:
                return counts
            after = page[-1][0]

    def _invite(self, ins: str, now: datetime) -> int:
        """A young adult's own code (announced before the representation ends, so the letter is theirs)."""
        profile = self._s.p.profiles.profile(ins)
        if profile is None or isinstance(next_status(profile.status, Request.INVITE), dict):
            return 0
        if self._s.new_code(profile, now, Request.INVITE) is None:
            return 0
        self._s.audit(ins, "lifecycle.adult-invited", SYSTEM_REF)
        return 1

    def _end_representation(self, ins: str) -> None:
        former = self._s.p.representatives(ins)
        self._s.p.end_representation(ins)
        self._s.audit(ins, "lifecycle.representation-ended", SYSTEM_REF)
        for representative in former:
            self._s.audit(representative, "lifecycle.representation-ended", SYSTEM_REF)

    def _purge_due(self, now: datetime) -> int:
        s = self._s
        if s.p.purge is None:
            return 0
        purged = 0
        while True:
            due = s.p.profiles.due_purge(now, BATCH)
            for profile in due:
                if purge_due(profile, now):
                    s.p.purge(profile.ins)
                    if s.p.profiles.mark_purged(profile.ins, now) is not None:
                        s.audit(profile.ins, "lifecycle.purged", SYSTEM_REF)
                        purged += 1
            if len(due) < BATCH:
                return purged
