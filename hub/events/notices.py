"""Events of the notifications: a notice is due (pure).

Owns: NoticeDue, the wake-up that makes a notify worker look at one stored notice.  It carries the
notice's id only: the notice row is the state (who, which channel, when, how many attempts).
Does not: decide who is told or when (pipelines.notify.core.policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from hub.events.base import Retried, registered


@registered
@dataclass(frozen=True, slots=True)
class NoticeDue(Retried):
    """Look at notice `notice_id` (created at `created_at`, on `channel`): send it if it is due and queued.
    Producer: pipelines.notify.service.Notifier (and NoticeSender: later, fallback).  Handler: NoticeSender."""

    notice_id: str
    created_at: datetime
    channel: str
    kind: ClassVar[str] = "notice.due"

    @property
    def event_id(self) -> str:
        return self.notice_id

    def data(self) -> dict[str, Any]:
        return {"notice": self.notice_id, "at": self.created_at.isoformat(), "channel": self.channel}

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, attempt: int) -> Self:
        return cls(notice_id=str(data["notice"]), created_at=datetime.fromisoformat(data["at"]),
                   channel=str(data["channel"]), tries=attempt)
