"""pipelines.notify.ports.NotificationStore in memory: notices and letter batches (settings: notify_settings).

Owns: MemoryNotifications, with storage.sql.notifications' rules.  A notice is kept once per notice id
(derived from event, channel, addressee and address) and numbered in store order (`seq`); `claim` takes
a queued, due notice whose lease is free and counts an attempt, so of concurrent workers one wins;
finishing or printing a notice blanks its code; withdrawn codes fail their queued notices.
Does not: decide who is told what (pipelines.notify.core.policy) or send anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hub.notices import Channel, EventKind, LetterBatch, Notice, NoticeState
from storage.memory.index import MemoryIndex
from storage.memory.notify_settings import NotifySettings

_WITHDRAWN = "code no longer valid (superseded, used or profile opened)"


class MemoryNotifications(NotifySettings):
    """NotificationStore on dicts, sharing the index's lock and outage switch."""

    def __init__(self, index: MemoryIndex) -> None:
        super().__init__(index.state)
        self.lease_rows: dict[str, datetime] = {}
        self.batch_rows: dict[str, LetterBatch] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryNotifications:
        return index.beside(cls, cls)

    def add(self, notices: Sequence[Notice]) -> list[Notice]:
        if not notices:
            return []
        with self.state.lock:
            self.state.check()
            for new in notices:
                if new.notice_id not in self.notice_rows:
                    self.notice_rows[new.notice_id] = replace(new, seq=len(self.notice_rows) + 1)
            wanted = {n.notice_id for n in notices}
            return [n for n in self.notice_rows.values() if n.notice_id in wanted]

    def notice(self, notice_id: str) -> Notice | None:
        with self.state.lock:
            self.state.check()
            return self.notice_rows.get(notice_id)

    def for_patient(self, ins: str, *, channel: Channel | None = None, after_seq: int | None = None,
                    limit: int = 200) -> list[Notice]:
        found = self._where(lambda n: n.ins == ins and (channel is None or n.channel == channel))
        if after_seq is not None:
            return [n for n in found if n.seq > after_seq][:limit]
        return found[::-1][:limit]

    def mark_read(self, ins: str, notice_id: str, *, at: datetime) -> Notice | None:
        with self.state.lock:
            self.state.check()
            found = self.notice_rows.get(notice_id)
            if found is None or found.ins != ins:
                return None
            if found.read_at is None:
                found = self.notice_rows[notice_id] = replace(found, read_at=at)
            return found

    def claim(self, notice_id: str, *, now: datetime, lease_s: float) -> Notice | None:
        with self.state.lock:
            self.state.check()
            found = self.notice_rows.get(notice_id)
            lease = self.lease_rows.get(notice_id)
            if (found is None or found.state is not NoticeState.QUEUED or found.due_at > now
                    or (lease is not None and lease >= now)):
                return None
            self.lease_rows[notice_id] = now + timedelta(seconds=lease_s)
            claimed = self.notice_rows[notice_id] = replace(found, attempts=found.attempts + 1)
            return claimed

    def release(self, notice_id: str, *, error: str) -> None:
        self._change([notice_id], last_error=error[:500])

    def digest_group(self, notice: Notice, *, due_before: datetime) -> list[Notice]:
        return self._where(lambda n: (n.ins, n.channel, n.address, n.kind) == (
            notice.ins, notice.channel, notice.address, notice.kind) and n.state is NoticeState.QUEUED
            and n.due_at <= due_before and n.notice_id != notice.notice_id)[:100]

    def finish(self, notice_ids: Sequence[str], state: NoticeState, *, at: datetime, batch_id: str = "",
               provider_ref: str = "", error: str = "") -> None:
        values: dict[str, Any] = {"state": state, "batch_id": batch_id, "provider_ref": provider_ref,
                                  "last_error": error[:500], "code": ""}
        if state in (NoticeState.SENT, NoticeState.DELIVERED):
            values["sent_at"] = at
        self._change(notice_ids, **values)

    def set_state(self, provider_ref: str, state: NoticeState, *, at: datetime) -> int:
        sent = self._where(lambda n: n.provider_ref == provider_ref
                           and n.state in (NoticeState.SENT, NoticeState.DELIVERED))
        return self._change([n.notice_id for n in sent], state=state)

    def last_sent(self, ins: str, channel: Channel, *, exclude_event: str = "") -> datetime | None:
        times = [n.sent_at for n in self._where(lambda n: n.ins == ins and n.channel == channel
                                                and n.event_id != exclude_event) if n.sent_at is not None]
        return max(times, default=None)

    def queued_letters(self, *, due_before: datetime) -> list[Notice]:
        return self._where(lambda n: n.channel is Channel.POSTAL and n.state is NoticeState.QUEUED
                           and n.due_at <= due_before)

    def record_batch(self, batch: LetterBatch, notice_ids: Sequence[str]) -> None:
        with self.state.lock:
            self.state.check()
            self.batch_rows.setdefault(batch.batch_id, batch)
            rows = self.notice_rows
            queued = [i for i in notice_ids if i in rows and rows[i].state is NoticeState.QUEUED]
            self._change(queued, state=NoticeState.SENT, sent_at=batch.created_at, batch_id=batch.batch_id, code="")

    def withdraw_codes(self, about_ins: str) -> int:
        waiting = self._where(lambda n: n.about_ins == about_ins and n.kind is EventKind.ACTIVATION_CODE
                              and n.state is NoticeState.QUEUED)
        return self._change([n.notice_id for n in waiting], state=NoticeState.FAILED, code="",
                            last_error=_WITHDRAWN)

    def batches(self, *, limit: int = 100) -> list[LetterBatch]:
        with self.state.lock:
            self.state.check()
            return sorted(self.batch_rows.values(), key=lambda b: b.created_at, reverse=True)[:limit]

    def batch(self, batch_id: str) -> LetterBatch | None:
        with self.state.lock:
            self.state.check()
            return self.batch_rows.get(batch_id)

    def _where(self, keep: Any) -> list[Notice]:
        with self.state.lock:
            self.state.check()
            return [n for n in self.notice_rows.values() if keep(n)]

    def _change(self, notice_ids: Sequence[str], **values: Any) -> int:
        """Update the notices named (a finished or released one loses its lease); how many."""
        with self.state.lock:
            self.state.check()
            changed = 0
            for notice_id in dict.fromkeys(notice_ids):
                found = self.notice_rows.get(notice_id)
                if found is not None:
                    self.notice_rows[notice_id] = replace(found, **values)
                    self.lease_rows.pop(notice_id, None)
                    changed += 1
            return changed
