"""The per-patient half of the in-memory NotificationStore: preferences, push devices, legal
representatives and the patient's own contact addresses (with a pending change and its code).

Owns: NotifySettings (and `reach`, everything an announcement reads of a patient and their
representatives), which storage.memory.notifications.MemoryNotifications extends, with
storage.sql.notifications' rules: devices are kept once each in the order added, representatives are
replaced as a whole and listed sorted, a pending contact change is applied only by its code's digest
(once), and wrong codes are counted by compare-and-set.  Does not: check addresses or codes
(pipelines.notify.contacts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from hub.notices import Channel, Contact, Notice, Preferences
from pipelines.notify.ports import Reachable, Settings
from storage.memory.base import MemoryState

_NO_PENDING: dict[str, Any] = {"pending_email": "", "pending_phone": "", "pending_sha256": "",
                               "pending_expires": None, "pending_attempts": 0}


class NotifySettings:
    """Preferences, devices, representatives and contacts on dicts, under `state`'s lock."""

    def __init__(self, state: MemoryState) -> None:
        self.state = state
        self.preference_rows: dict[str, Preferences] = {}
        self.device_rows: dict[str, list[str]] = {}
        self.representative_rows: dict[str, list[str]] = {}
        self.contact_rows: dict[str, Contact] = {}
        self.notice_rows: dict[str, Notice] = {}  # MemoryNotifications' (`reach` reads them)

    def reach(self, ins: str) -> Reachable:
        with self.state.lock:
            self.state.check()
            reps = sorted(self.representative_rows.get(ins, []))
            return Reachable(own=self._settings(ins), representatives=tuple(self._settings(r) for r in reps))

    def _settings(self, ins: str) -> Settings:
        mine = self.contact_rows.get(ins)
        sent = [n.sent_at for n in self.notice_rows.values()
                if n.ins == ins and n.channel is Channel.EMAIL and n.sent_at is not None]
        return Settings(ins=ins, email=mine.email if mine else "", phone=mine.phone if mine else "",
                        preferences=self.preference_rows.get(ins, Preferences()),
                        devices=tuple(self.device_rows.get(ins, [])), last_email_at=max(sent, default=None))

    def preferences(self, ins: str) -> Preferences:
        with self.state.lock:
            self.state.check()
            return self.preference_rows.get(ins, Preferences())

    def set_preferences(self, ins: str, preferences: Preferences) -> None:
        with self.state.lock:
            self.state.check()
            self.preference_rows[ins] = preferences

    def devices(self, ins: str) -> list[str]:
        with self.state.lock:
            self.state.check()
            return list(self.device_rows.get(ins, []))

    def add_device(self, ins: str, endpoint: str) -> None:
        with self.state.lock:
            self.state.check()
            known = self.device_rows.setdefault(ins, [])
            if endpoint not in known:
                known.append(endpoint)

    def representatives(self, ins: str) -> list[str]:
        with self.state.lock:
            self.state.check()
            return sorted(self.representative_rows.get(ins, []))

    def set_representatives(self, ins: str, representatives: Sequence[str]) -> None:
        with self.state.lock:
            self.state.check()
            self.representative_rows[ins] = list(representatives)
            if not representatives:
                del self.representative_rows[ins]

    def contact(self, ins: str) -> Contact | None:
        with self.state.lock:
            self.state.check()
            return self.contact_rows.get(ins)

    def set_contact(self, ins: str, *, email: str, phone: str) -> Contact:
        return self._upsert(ins, {"email": email, "phone": phone, **_NO_PENDING})

    def set_pending_contact(self, ins: str, *, email: str, phone: str, code_sha256: str,
                            expires: datetime) -> Contact:
        return self._upsert(ins, {"pending_email": email, "pending_phone": phone, "pending_sha256": code_sha256,
                                  "pending_expires": expires, "pending_attempts": 0})

    def confirm_contact(self, ins: str, *, code_sha256: str) -> Contact | None:
        if not code_sha256:
            return None
        with self.state.lock:
            self.state.check()
            found = self.contact_rows.get(ins)
            if found is None or found.pending_sha256 != code_sha256:
                return None
            done = self.contact_rows[ins] = replace(found, email=found.pending_email, phone=found.pending_phone,
                                                 **_NO_PENDING)
            return done

    def count_contact_attempt(self, ins: str, *, seen: int, drop: bool) -> bool:
        with self.state.lock:
            self.state.check()
            found = self.contact_rows.get(ins)
            if found is None or found.pending_attempts != seen:
                return False
            values = dict(_NO_PENDING) if drop else {"pending_attempts": seen + 1}
            self.contact_rows[ins] = replace(found, **values)
            return True

    def _upsert(self, ins: str, values: dict[str, Any]) -> Contact:
        with self.state.lock:
            self.state.check()
            stored = self.contact_rows[ins] = replace(self.contact_rows.get(ins, Contact(ins=ins)), **values)
            return stored
