"""Flags and access settings of patient records, on the index's database (SQLite or PostgreSQL).

Owns: the tables and statements behind hub.access.RecordControls:
  document_controls         the patient's mask / hide flags, the author's lifting of INVISIBLE_PATIENT,
                            deletion (who, when), per document
  patient_access_settings   bris de glace / regulation allowed (a missing row = both allowed)
  blocked_professionals     professionals (IDNPS) the patient blocked
  professional_access       the first time each professional opened each record
Rule 1: note_access is one INSERT ... ON CONFLICT DO NOTHING RETURNING, so of two concurrent first
accesses exactly one is told True (and the patient is told once).
Rule 2: delete keeps the first deletion's time and author (a second delete changes nothing).
Does not: decide who may do what (pipelines.record.core.access) or keep the documents (storage.sql.index).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hub.access import FLAG_NAMES, NO_FLAGS, DocumentFlags, PatientControls
from storage.sql.database import SqlStore, aware, metadata

document_controls = sa.Table(
    "document_controls", metadata,
    sa.Column("document_id", sa.String(256), primary_key=True),
    sa.Column("ins", sa.String(15), nullable=False, index=True),
    sa.Column("masked_by_patient", sa.Boolean, nullable=False, default=False),
    sa.Column("hidden_from_representatives", sa.Boolean, nullable=False, default=False),
    sa.Column("invisible_lifted", sa.Boolean, nullable=False, default=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("deleted_by", sa.String(64), nullable=False, default=""),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False, default=""),
)

access_settings = sa.Table(
    "patient_access_settings", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("bris_de_glace_allowed", sa.Boolean, nullable=False, default=True),
    sa.Column("regulation_allowed", sa.Boolean, nullable=False, default=True),
)

blocked_professionals = sa.Table(
    "blocked_professionals", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("idnps", sa.String(32), primary_key=True),
)

professional_access = sa.Table(
    "professional_access", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("idnps", sa.String(32), primary_key=True),
    sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
)

TABLES = [document_controls, access_settings, blocked_professionals, professional_access]
_CHUNK = 500  # ids per IN (...) query


class SqlRecordControls(SqlStore):
    """hub.access.RecordControls on the index's database."""

    # -- document flags ---------------------------------------------------------------------------

    def flags(self, document_ids: Sequence[str]) -> dict[str, DocumentFlags]:
        """The flags of every document asked; NO_FLAGS for one nothing was ever set on."""
        wanted = list(dict.fromkeys(document_ids))
        found: dict[str, DocumentFlags] = {}
        with self._db.read() as conn:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                rows = conn.execute(document_controls.select().where(document_controls.c.document_id.in_(chunk)))
                found.update((r.document_id, _flags_from_row(r)) for r in rows)
        return {d: found.get(d, NO_FLAGS) for d in wanted}

    def set_flag(self, document_id: str, ins: str, flag_name: str, value: bool, *, by: str, at: datetime) -> None:
        """Set one of hub.access.FLAG_NAMES on a document (ValueError on any other name)."""
        if flag_name not in FLAG_NAMES:
            raise ValueError(f"unknown document flag {flag_name!r} (one of {', '.join(FLAG_NAMES)})")
        changed = {flag_name: bool(value), "updated_at": at, "updated_by": by}
        row = {"document_id": document_id, "ins": ins, **dict.fromkeys(FLAG_NAMES, False), **changed}
        with self._db.begin() as conn:
            conn.execute(self._db.insert(document_controls).values(row).on_conflict_do_update(
                index_elements=["document_id"], set_=changed))

    def delete(self, document_id: str, ins: str, *, by: str, at: datetime) -> bool:
        """Mark a document deleted; True the first time, False when it already was (nothing changes)."""
        row = {"document_id": document_id, "ins": ins, **dict.fromkeys(FLAG_NAMES, False), "deleted_at": at,
               "deleted_by": by, "updated_at": at, "updated_by": by}
        table = document_controls
        with self._db.begin() as conn:
            inserted = conn.execute(self._db.insert(table).values(row).on_conflict_do_nothing(
                index_elements=["document_id"]).returning(table.c.document_id)).first()
            if inserted is not None:
                return True
            return bool(conn.execute(table.update().where(table.c.document_id == document_id,
                                                          table.c.deleted_at.is_(None)).values(
                deleted_at=at, deleted_by=by, updated_at=at, updated_by=by)).rowcount)

    # -- the patient's settings -------------------------------------------------------------------

    def controls(self, ins: str) -> PatientControls:
        """Blocked professionals and emergency settings of `ins` (both emergencies allowed by default)."""
        with self._db.read() as conn:
            settings = conn.execute(access_settings.select().where(access_settings.c.ins == ins)).first()
            blocked = conn.execute(sa.select(blocked_professionals.c.idnps).where(
                blocked_professionals.c.ins == ins)).scalars().all()
        return PatientControls(
            blocked=frozenset(blocked),
            bris_de_glace_allowed=bool(settings.bris_de_glace_allowed) if settings is not None else True,
            regulation_allowed=bool(settings.regulation_allowed) if settings is not None else True)

    def set_emergency(self, ins: str, *, bris_de_glace: bool | None, regulation: bool | None) -> None:
        """Allow or forbid each emergency mode; None leaves that setting as it is."""
        changed = {k: bool(v) for k, v in (("bris_de_glace_allowed", bris_de_glace),
                                            ("regulation_allowed", regulation)) if v is not None}
        if not changed:
            return
        row = {"ins": ins, "bris_de_glace_allowed": True, "regulation_allowed": True, **changed}
        with self._db.begin() as conn:
            conn.execute(self._db.insert(access_settings).values(row).on_conflict_do_update(
                index_elements=["ins"], set_=changed))

    def block(self, ins: str, idnps: str) -> None:
        """Block a professional from the whole record (idempotent)."""
        with self._db.begin() as conn:
            conn.execute(self._db.insert(blocked_professionals).values(ins=ins, idnps=idnps)
                         .on_conflict_do_nothing(index_elements=["ins", "idnps"]))

    def unblock(self, ins: str, idnps: str) -> None:
        """Lift a block (idempotent)."""
        with self._db.begin() as conn:
            conn.execute(blocked_professionals.delete().where(blocked_professionals.c.ins == ins,
                                                              blocked_professionals.c.idnps == idnps))

    def note_access(self, ins: str, idnps: str, at: datetime) -> bool:
        """Record a professional's access to the record; True only for their very first (Rule 1)."""
        table = professional_access
        with self._db.begin() as conn:
            first = conn.execute(self._db.insert(table).values(ins=ins, idnps=idnps, first_at=at)
                                 .on_conflict_do_nothing(index_elements=["ins", "idnps"])
                                 .returning(table.c.first_at)).first()
        return first is not None

    def first_access(self, ins: str, idnps: str) -> datetime | None:
        """When this professional first opened the record (None: never)."""
        with self._db.read() as conn:
            value = conn.execute(sa.select(professional_access.c.first_at).where(
                professional_access.c.ins == ins, professional_access.c.idnps == idnps)).scalar()
        return aware(value)


def _flags_from_row(r: Any) -> DocumentFlags:
    return DocumentFlags(
        masked_by_patient=bool(r.masked_by_patient), hidden_from_representatives=bool(r.hidden_from_representatives),
        invisible_lifted=bool(r.invisible_lifted), deleted=r.deleted_at is not None,
        deleted_at=aware(r.deleted_at), deleted_by=r.deleted_by, updated_at=aware(r.updated_at))
