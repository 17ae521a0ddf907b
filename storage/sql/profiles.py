"""Patient profiles on the index's database (SQLite or PostgreSQL, same code): the record feature's LifecycleStore.

Owns: the `profiles` table (one row per INS: the Profile fields, the keyed digests of the pending code
and of the Vitale serial) and its transactions.
Rule 1: a change of status is ONE transaction that updates the profile with a conditional UPDATE (the
expected current status, plus the caller's `where` columns) and then `patients.status` (storage.sql.index),
so the registry never disagrees with the profile and, of two concurrent requests, exactly one wins
(PostgreSQL re-checks the WHERE on the row it waited for; SQLite serialises writers).
Rule 2: a wrong attempt is counted by a compare-and-set on `failed_attempts`, so concurrent wrong attempts
are each counted (the caller reads again and decides again when it loses).
Rule 3: minors turning adult are found from `legal_representatives` (storage.sql.notifications: few rows,
only minors have some) joined to `patients` by primary key, so the daily sweep never scans the registry.
Does not: decide anything (pipelines.record.core.lifecycle) or keep a code in clear (only HMAC digests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.records import PatientStatus
from pipelines.record.core.profile import Activation, Profile
from storage.sql.database import SqlStore, aware, metadata, utc_now
from storage.sql.index_tables import patients
from storage.sql.notifications import representatives

CHUNK = 500  # INS per IN (...) list

profiles = sa.Table(
    "profiles", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("code_expires_at", sa.DateTime(timezone=True)),
    sa.Column("activated_at", sa.DateTime(timezone=True)),
    sa.Column("activation", sa.String(16), nullable=False, default=""),
    sa.Column("opposed_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("purge_after", sa.DateTime(timezone=True)),
    sa.Column("purged_at", sa.DateTime(timezone=True)),
    sa.Column("failed_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.DateTime(timezone=True)),
    sa.Column("receipt_key", sa.String(256), nullable=False, default=""),
    sa.Column("receipt_bucket", sa.String(128), nullable=False, default=""),
    sa.Column("receipt_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("receipt_size", sa.BigInteger, nullable=False, default=0),
    sa.Column("code_generation", sa.Integer, nullable=False, default=0),
    sa.Column("announced_generation", sa.Integer, nullable=False, default=0),
    sa.Column("code_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("vitale_sha256", sa.String(64), nullable=False, default=""),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_profiles_code_expiry", "status", "code_expires_at"),
    sa.Index("ix_profiles_purge", "status", "purge_after"),
)

TABLES = [profiles]
_WRITABLE = frozenset(c.name for c in profiles.columns) - {"ins", "status", "updated_at"}
_DEFAULTS: dict[str, Any] = {
    "activated_at": None, "activation": "", "opposed_at": None, "closed_at": None, "purge_after": None,
    "purged_at": None, "failed_attempts": 0, "locked_until": None, "receipt_key": "", "receipt_bucket": "",
    "receipt_sha256": "", "receipt_size": 0, "announced_generation": 0}
_TIMES = ("created_at", "code_expires_at", "activated_at", "opposed_at", "closed_at", "purge_after",
          "purged_at", "locked_until")


def _row(values: Mapping[str, Any]) -> dict[str, Any]:
    """Profile fields -> column values (enums as their text); unknown names are a programming error."""
    unknown = set(values) - _WRITABLE
    if unknown:
        raise ValueError(f"not profile columns: {', '.join(sorted(unknown))}")
    return {k: (str(v) if isinstance(v, (PatientStatus, Activation)) else v) for k, v in values.items()}


def _profile(row: Any) -> Profile:
    data = dict(row._mapping)
    data.pop("updated_at", None)
    for name in _TIMES:
        data[name] = aware(data[name])
    data["status"] = PatientStatus(data["status"])
    data["activation"] = Activation(data["activation"])
    return Profile(**data)


class SqlProfiles(SqlStore):
    """pipelines.record.core.profile.LifecycleStore on the index's database."""

    # -- reads ---------------------------------------------------------------------------------------

    def profile(self, ins: str) -> Profile | None:
        with self._db.read() as conn:
            row = conn.execute(profiles.select().where(profiles.c.ins == ins)).first()
        return _profile(row) if row is not None else None

    def statuses(self, ins: Sequence[str]) -> dict[str, PatientStatus]:
        found: dict[str, PatientStatus] = {}
        with self._db.read() as conn:
            for chunk in _chunks(ins):
                found.update((r.ins, PatientStatus(r.status)) for r in conn.execute(
                    sa.select(profiles.c.ins, profiles.c.status).where(
                        profiles.c.ins.in_(chunk), profiles.c.purged_at.is_(None))))
        return found

    def due_auto_open(self, now: datetime, limit: int = 500) -> list[Profile]:
        query = profiles.select().where(
            profiles.c.status == str(PatientStatus.CREATED), profiles.c.code_expires_at <= now,
        ).order_by(profiles.c.code_expires_at, profiles.c.ins).limit(limit)
        return self._many(query)

    def due_purge(self, now: datetime, limit: int = 500) -> list[Profile]:
        query = profiles.select().where(
            profiles.c.status == str(PatientStatus.CLOSED), profiles.c.purge_after <= now,
            profiles.c.purged_at.is_(None)).order_by(profiles.c.purge_after, profiles.c.ins).limit(limit)
        return self._many(query)

    def minors_turning_adult(self, born_on_or_before: str, limit: int = 500,
                             after: str = "") -> list[tuple[str, str]]:
        represented = (sa.select(representatives.c.ins).where(representatives.c.ins > after).distinct()
                       .subquery("represented"))
        query = (sa.select(patients.c.ins, patients.c.birth_date)
                 .select_from(represented.join(patients, patients.c.ins == represented.c.ins))
                 .where(patients.c.birth_date != "", patients.c.birth_date <= born_on_or_before)
                 .order_by(patients.c.ins).limit(limit))
        with self._db.read() as conn:
            return [(r.ins, r.birth_date) for r in conn.execute(query)]

    def _many(self, query: sa.Select[Any]) -> list[Profile]:
        with self._db.read() as conn:
            return [_profile(r) for r in conn.execute(query)]

    # -- writes --------------------------------------------------------------------------------------

    def register(self, ins: str, *, code_sha256: str, vitale_sha256: str, created_at: datetime,
                 expires_at: datetime | None, status: PatientStatus = PatientStatus.CREATED,
                 values: Mapping[str, Any] | None = None) -> Profile | None:
        """Insert unless a profile exists; a purged profile (the roster brought the INS back) is replaced.
        Sets patients.status to `status` in the same transaction."""
        row = {**_DEFAULTS, **_row(values or {}), "ins": ins, "status": str(status), "created_at": created_at,
               "code_expires_at": expires_at, "code_sha256": code_sha256, "vitale_sha256": vitale_sha256,
               "code_generation": 1 if code_sha256 else 0, "updated_at": created_at}
        insert = self._db.insert(profiles).values(row)
        statement = insert.on_conflict_do_update(
            index_elements=["ins"], set_={k: insert.excluded[k] for k in row if k != "ins"},
            where=profiles.c.purged_at.is_not(None)).returning(*profiles.c)
        with self._db.begin() as conn:
            inserted = conn.execute(statement).first()
            if inserted is None:
                return None
            self._set_patient_status(conn, ins, status, created_at)
        return _profile(inserted)

    def transition(self, ins: str, *, from_statuses: Sequence[PatientStatus], to_status: PatientStatus,
                   values: Mapping[str, Any], where: Mapping[str, Any] | None = None) -> Profile | None:
        now = utc_now()
        conditions = [profiles.c.ins == ins, profiles.c.status.in_([str(s) for s in from_statuses])]
        conditions += [profiles.c[name] == value for name, value in _row(where or {}).items()]
        update = profiles.update().where(*conditions).values(
            **_row(values), status=str(to_status), updated_at=now).returning(*profiles.c)
        with self._db.begin() as conn:
            changed = conn.execute(update).first()
            if changed is None:
                return None
            self._set_patient_status(conn, ins, to_status, now)
        return _profile(changed)

    def record_failure(self, ins: str, *, now: datetime, seen: int,
                       locked_until: datetime | None) -> Profile | None:
        update = profiles.update().where(profiles.c.ins == ins, profiles.c.failed_attempts == seen).values(
            failed_attempts=seen + 1, locked_until=locked_until, updated_at=now).returning(*profiles.c)
        return self._one(update)

    def reissue(self, ins: str, *, code_sha256: str, expires_at: datetime,
                from_statuses: Sequence[PatientStatus], now: datetime) -> Profile | None:
        update = profiles.update().where(
            profiles.c.ins == ins, profiles.c.status.in_([str(s) for s in from_statuses])).values(
            code_sha256=code_sha256, code_expires_at=expires_at, code_generation=profiles.c.code_generation + 1,
            updated_at=now).returning(*profiles.c)
        return self._one(update)

    def mark_announced(self, ins: str, generation: int) -> None:
        with self._db.begin() as conn:
            conn.execute(profiles.update().where(
                profiles.c.ins == ins, profiles.c.announced_generation < generation).values(
                announced_generation=generation))

    def set_vitale(self, ins: str, vitale_sha256: str) -> None:
        with self._db.begin() as conn:
            conn.execute(profiles.update().where(profiles.c.ins == ins, profiles.c.vitale_sha256 != vitale_sha256)
                         .values(vitale_sha256=vitale_sha256, updated_at=utc_now()))

    def sync_status(self, ins: Sequence[str]) -> int:
        own = sa.select(profiles.c.status).where(profiles.c.ins == patients.c.ins).scalar_subquery()
        differs = sa.exists().where(profiles.c.ins == patients.c.ins, profiles.c.status != patients.c.status,
                                    profiles.c.purged_at.is_(None))
        changed = 0
        with self._db.begin() as conn:
            for chunk in _chunks(ins):
                changed += int(conn.execute(patients.update().where(patients.c.ins.in_(chunk), differs).values(
                    status=own, updated_at=utc_now())).rowcount or 0)
        return changed

    def mark_purged(self, ins: str, now: datetime) -> Profile | None:
        update = profiles.update().where(
            profiles.c.ins == ins, profiles.c.status == str(PatientStatus.CLOSED),
            profiles.c.purged_at.is_(None)).values(purged_at=now, updated_at=now).returning(*profiles.c)
        return self._one(update)

    def _one(self, statement: sa.Update) -> Profile | None:
        with self._db.begin() as conn:
            row = conn.execute(statement).first()
        return _profile(row) if row is not None else None

    @staticmethod
    def _set_patient_status(conn: Connection, ins: str, status: PatientStatus, now: datetime) -> None:
        conn.execute(patients.update().where(patients.c.ins == ins).values(status=str(status), updated_at=now))


def _chunks(values: Sequence[str]) -> list[list[str]]:
    return [list(values[i:i + CHUNK]) for i in range(0, len(values), CHUNK)]
