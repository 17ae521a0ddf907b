"""The recovery sweep: a submission still pending long after it was accepted is published again.

Owns: RecoverySweep.tick(): every pending submission older than `age` is republished as the event its
record kind says (hub.intake.resubmitted: a queued mail as MailQueued, a document as DocumentSubmitted),
so a message lost between the index and the bus is processed anyway (processing is idempotent).
Does not: decide anything about the submissions, nor schedule itself (the composition root's loop does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from hub.intake import resubmitted
from hub.ports import Publisher
from hub.records import SubmissionRecord

log = logging.getLogger(__name__)
SWEEP_AGE = timedelta(minutes=15)


class PendingSubmissions(Protocol):
    def stale_pending(self, older_than: datetime, limit: int = 100) -> list[SubmissionRecord]: ...


class RecoverySweep:
    """Republishes stale pending submissions (those in `bucket`) on `publisher`."""

    def __init__(self, index: PendingSubmissions, publisher: Publisher, *, bucket: str,
                 age: timedelta = SWEEP_AGE, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._index = index
        self._publisher = publisher
        self._bucket = bucket
        self._age = age
        self._clock = clock

    def tick(self) -> int:
        return self.once(self._clock() - self._age)

    def once(self, older_than: datetime) -> int:
        """Republish pending submissions older than `older_than`; how many were."""
        stale = self._index.stale_pending(older_than)
        for record in stale:
            self._publisher.publish(resubmitted(record, bucket=self._bucket))
        if stale:
            log.warning("recovery sweep republished %d stale submission(s)", len(stale))
        return len(stale)
