"""The patients' own contact addresses (notification_contacts), on the index's database.

Owns: the `notification_contacts` table and ContactAddresses, the part of the notification store
(storage.sql.notifications.SqlNotifications) behind pipelines.notify.ports' contact methods: the address a
patient gave, and a change waiting for its confirmation code (only the code's keyed digest is kept).
Rule: a confirmation is one conditional UPDATE on the pending digest, and a wrong attempt is counted by a
compare-and-set on `pending_attempts`, so concurrent attempts are each counted and one code confirms once.
Does not: check codes or decide when they expire (pipelines.notify.core.contacts) or send them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.notices import Contact
from storage.sql.database import SqlStore, aware, metadata, utc_now

contacts = sa.Table(
    "notification_contacts", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("email", sa.Text, nullable=False, default=""),
    sa.Column("phone", sa.String(32), nullable=False, default=""),
    sa.Column("pending_email", sa.Text, nullable=False, default=""),
    sa.Column("pending_phone", sa.String(32), nullable=False, default=""),
    sa.Column("pending_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("pending_expires", sa.DateTime(timezone=True)),
    sa.Column("pending_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

_NO_PENDING: dict[str, Any] = {"pending_email": "", "pending_phone": "", "pending_sha256": "",
                               "pending_expires": None, "pending_attempts": 0}


class ContactAddresses(SqlStore):
    """The contact methods of the notification store (a base of SqlNotifications)."""

    def contact(self, ins: str) -> Contact | None:
        with self._db.read() as conn:
            row = conn.execute(contacts.select().where(contacts.c.ins == ins)).first()
        return _contact_from_row(row) if row is not None else None

    def set_contact(self, ins: str, *, email: str, phone: str) -> Contact:
        return self._upsert_contact(ins, {"email": email, "phone": phone, **_NO_PENDING})

    def set_pending_contact(self, ins: str, *, email: str, phone: str, code_sha256: str,
                            expires: datetime) -> Contact:
        return self._upsert_contact(ins, {"pending_email": email, "pending_phone": phone,
                                          "pending_sha256": code_sha256, "pending_expires": expires,
                                          "pending_attempts": 0})

    def confirm_contact(self, ins: str, *, code_sha256: str) -> Contact | None:
        if not code_sha256:
            return None
        update = contacts.update().where(contacts.c.ins == ins, contacts.c.pending_sha256 == code_sha256).values(
            email=contacts.c.pending_email, phone=contacts.c.pending_phone, updated_at=utc_now(),
            **_NO_PENDING).returning(*contacts.c)
        with self._db.begin() as conn:
            row = conn.execute(update).first()
        return _contact_from_row(row) if row is not None else None

    def count_contact_attempt(self, ins: str, *, seen: int, drop: bool) -> bool:
        values = dict(_NO_PENDING) if drop else {"pending_attempts": seen + 1}
        update = contacts.update().where(contacts.c.ins == ins, contacts.c.pending_attempts == seen).values(
            updated_at=utc_now(), **values)
        with self._db.begin() as conn:
            return bool(conn.execute(update).rowcount)

    def _upsert_contact(self, ins: str, values: dict[str, Any]) -> Contact:
        row = {"ins": ins, "email": "", "phone": "", **_NO_PENDING, **values, "updated_at": utc_now()}
        insert = self._db.insert(contacts).values(row)
        statement = insert.on_conflict_do_update(
            index_elements=["ins"], set_={k: insert.excluded[k] for k in {*values, "updated_at"}}
        ).returning(*contacts.c)
        with self._db.begin() as conn:
            stored = conn.execute(statement).first()
        assert stored is not None
        return _contact_from_row(stored)


def _contact_from_row(r: Any) -> Contact:
    return Contact(ins=r.ins, email=r.email, phone=r.phone, pending_email=r.pending_email,
                   pending_phone=r.pending_phone, pending_sha256=r.pending_sha256,
                   pending_expires=aware(r.pending_expires), pending_attempts=r.pending_attempts)
