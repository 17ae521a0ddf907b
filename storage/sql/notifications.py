"""Notices, preferences, push devices, legal representatives and letter batches, on the index's database.

Owns: the tables and transactions behind pipelines.notify.ports.NotificationStore.
Rule 1: a notice is inserted once per (event, channel, addressee, address): the notice id is derived
from them (pipelines.notify.core.policy.notice_id), and the insert is ON CONFLICT DO NOTHING.
Rule 2: a notice is sent by whoever holds its lease: `claim` is one conditional UPDATE ... RETURNING, so two
workers woken for the same notice never both send it.  A write that is one statement (claim, release,
finish, add) runs in autocommit: atomic on its own, without a BEGIN/COMMIT round trip.
Rule 3: a code (activation, confirmation) lives in a notice row only while the notice waits: the same
UPDATE that marks it printed (record_batch) or finished (finish: sent, delivered, bounced or failed; a
fallback took its own copy first) blanks `code`, so no code is kept in clear once it is out.
Does not: decide who is told what (pipelines.notify.core.policy) or send anything (connectors.outbound).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hub.notices import Channel, EventKind, LetterBatch, Notice, NoticeState, Preferences
from pipelines.notify.ports import Reachable, Settings
from storage.sql.contacts import ContactAddresses, contacts
from storage.sql.database import Database, aware, metadata, utc_now, when

notices = sa.Table(
    "notices", metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("notice_id", sa.String(40), nullable=False, unique=True),
    sa.Column("event_id", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ins", sa.String(15), nullable=False),
    sa.Column("about_ins", sa.String(15), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("read_at", sa.DateTime(timezone=True)),
    sa.Column("batch_id", sa.String(64), nullable=False, default=""),
    sa.Column("provider_ref", sa.String(256), nullable=False, default=""),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("fallback_of", sa.String(40), nullable=False, default=""),
    sa.Column("code", sa.String(64), nullable=False, default=""),
    sa.Column("code_expires", sa.DateTime(timezone=True)),
    sa.Index("ix_notices_ins", "ins", "seq"),
    sa.Index("ix_notices_queue", "state", "channel", "due_at"),
    sa.Index("ix_notices_provider", "provider_ref"),
)

preferences = sa.Table(
    "notification_preferences", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("choices", sa.Text, nullable=False),
)

devices = sa.Table(
    "push_devices", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("endpoint", sa.String(1000), primary_key=True),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
)

representatives = sa.Table(
    "legal_representatives", metadata,
    sa.Column("ins", sa.String(15), primary_key=True),
    sa.Column("representative_ins", sa.String(15), primary_key=True),
)

letter_batches = sa.Table(
    "letter_batches", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("letters", sa.Integer, nullable=False),
    sa.Column("bucket", sa.String(128), nullable=False),
    sa.Column("pdf_key", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
)

TABLES = [notices, preferences, devices, representatives, letter_batches, contacts]

# The statements of the send path, built once (their values bound at each use)
_QUEUED = str(NoticeState.QUEUED)
_NOTICE = notices.select().where(notices.c.notice_id == sa.bindparam("id"))
_CLAIM = notices.update().where(
    notices.c.notice_id == sa.bindparam("id"), notices.c.state == _QUEUED, notices.c.due_at <= sa.bindparam("now"),
    sa.or_(notices.c.lease_until.is_(None), notices.c.lease_until < sa.bindparam("now"))).values(
    lease_until=sa.bindparam("lease", type_=notices.c.lease_until.type),
    attempts=notices.c.attempts + 1).returning(*notices.c)
_DIGEST = notices.select().where(
    notices.c.ins == sa.bindparam("ins"), notices.c.channel == sa.bindparam("channel"),
    notices.c.address == sa.bindparam("address"), notices.c.state == _QUEUED,
    notices.c.due_at <= sa.bindparam("before"), notices.c.notice_id != sa.bindparam("id"),
    notices.c.kind == sa.bindparam("kind")).order_by(notices.c.seq).limit(100)
_FINISH = notices.update().where(notices.c.notice_id.in_(sa.bindparam("ids", expanding=True))).values(
    state=sa.bindparam("new_state", type_=sa.String), lease_until=None,
    batch_id=sa.bindparam("batch", type_=sa.String), provider_ref=sa.bindparam("ref", type_=sa.String),
    last_error=sa.bindparam("error", type_=sa.Text), code="")
_FINISH_SENT = _FINISH.values(sent_at=sa.bindparam("at", type_=notices.c.sent_at.type))


class SqlNotifications(ContactAddresses):
    """pipelines.notify.ports.NotificationStore on the index's database (the patients' own contact
    addresses: storage.sql.contacts; what one announcement reads: `reach`, one UNION ALL)."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._add = database.insert(notices).on_conflict_do_nothing(index_elements=["notice_id"]).returning(
            *notices.c)

    def _once(self) -> AbstractContextManager[Connection]:
        """The connection for one write that is atomic on its own (a conditional UPDATE, an idempotent
        INSERT): autocommit, no BEGIN/COMMIT around it; inside a unit of work, the unit's (Database.read)."""
        return self._db.read()

    # -- notices ----------------------------------------------------------------------------------

    def add(self, batch: Sequence[Notice]) -> list[Notice]:
        if not batch:
            return []
        with self._once() as conn:  # one INSERT of all the rows (insertmanyvalues), compiled once
            found = list(conn.execute(self._add, [_notice_row(n) for n in batch]))
            there = {r.notice_id for r in found}
            others = [n.notice_id for n in batch if n.notice_id not in there]  # a redelivered event's
            if others:
                found += conn.execute(notices.select().where(notices.c.notice_id.in_(others))).all()
        return [_notice_from_row(r) for r in sorted(found, key=lambda r: r.seq)]

    def notice(self, notice_id: str) -> Notice | None:
        with self._db.read() as conn:
            row = conn.execute(_NOTICE, {"id": notice_id}).first()
        return _notice_from_row(row) if row is not None else None

    def for_patient(self, ins: str, *, channel: Channel | None = None, after_seq: int | None = None,
                    limit: int = 200) -> list[Notice]:
        query = notices.select().where(notices.c.ins == ins)
        if channel is not None:
            query = query.where(notices.c.channel == str(channel))
        if after_seq is not None:
            query = query.where(notices.c.seq > after_seq).order_by(notices.c.seq)
        else:
            query = query.order_by(notices.c.seq.desc())
        with self._db.read() as conn:
            return [_notice_from_row(r) for r in conn.execute(query.limit(limit))]

    def mark_read(self, ins: str, notice_id: str, *, at: datetime) -> Notice | None:
        with self._db.begin() as conn:
            conn.execute(notices.update().where(notices.c.notice_id == notice_id, notices.c.ins == ins,
                                                notices.c.read_at.is_(None)).values(read_at=at))
            row = conn.execute(notices.select().where(notices.c.notice_id == notice_id,
                                                      notices.c.ins == ins)).first()
        return _notice_from_row(row) if row is not None else None

    def claim(self, notice_id: str, *, now: datetime, lease_s: float) -> Notice | None:
        with self._once() as conn:
            row = conn.execute(_CLAIM, {"id": notice_id, "now": now,
                                        "lease": now + timedelta(seconds=lease_s)}).first()
        return _notice_from_row(row) if row is not None else None

    def release(self, notice_id: str, *, error: str) -> None:
        with self._once() as conn:
            conn.execute(notices.update().where(notices.c.notice_id == notice_id)
                         .values(lease_until=None, last_error=error[:500]))

    def digest_group(self, notice: Notice, *, due_before: datetime) -> list[Notice]:
        with self._db.read() as conn:
            return [_notice_from_row(r) for r in conn.execute(_DIGEST, {
                "ins": notice.ins, "channel": str(notice.channel), "address": notice.address,
                "before": due_before, "id": notice.notice_id, "kind": str(notice.kind)})]

    def finish(self, notice_ids: Sequence[str], state: NoticeState, *, at: datetime, batch_id: str = "",
               provider_ref: str = "", error: str = "") -> None:
        sent = state in (NoticeState.SENT, NoticeState.DELIVERED)
        with self._once() as conn:
            conn.execute(_FINISH_SENT if sent else _FINISH, {
                "ids": list(notice_ids), "new_state": str(state), "batch": batch_id, "ref": provider_ref,
                "error": error[:500], "at": at})

    def set_state(self, provider_ref: str, state: NoticeState, *, at: datetime) -> int:
        with self._db.begin() as conn:
            return int(conn.execute(notices.update().where(
                notices.c.provider_ref == provider_ref,
                notices.c.state.in_([str(NoticeState.SENT), str(NoticeState.DELIVERED)])).values(
                state=str(state))).rowcount)

    def last_sent(self, ins: str, channel: Channel, *, exclude_event: str = "") -> datetime | None:
        query = sa.select(sa.func.max(notices.c.sent_at)).where(
            notices.c.ins == ins, notices.c.channel == str(channel), notices.c.sent_at.is_not(None),
            notices.c.event_id != exclude_event)
        with self._db.read() as conn:
            return aware(conn.execute(query).scalar())

    def queued_letters(self, *, due_before: datetime) -> list[Notice]:
        query = notices.select().where(notices.c.channel == str(Channel.POSTAL),
                                       notices.c.state == str(NoticeState.QUEUED),
                                       notices.c.due_at <= due_before).order_by(notices.c.seq)
        with self._db.read() as conn:
            return [_notice_from_row(r) for r in conn.execute(query)]

    def record_batch(self, batch: LetterBatch, notice_ids: Sequence[str]) -> None:
        row = {**batch.to_dict(), "created_at": batch.created_at}
        with self._db.begin() as conn:
            conn.execute(self._db.insert(letter_batches).values(row).on_conflict_do_nothing(
                index_elements=["batch_id"]))
            conn.execute(notices.update().where(notices.c.notice_id.in_(list(notice_ids)),
                                                notices.c.state == str(NoticeState.QUEUED)).values(
                state=str(NoticeState.SENT), sent_at=batch.created_at, batch_id=batch.batch_id, lease_until=None,
                code=""))

    def withdraw_codes(self, about_ins: str) -> int:
        """The codes about `about_ins` still waiting (queued activation-code notices) are dead: failed, code
        blanked; how many."""
        with self._db.begin() as conn:
            return int(conn.execute(notices.update().where(
                notices.c.about_ins == about_ins, notices.c.kind == str(EventKind.ACTIVATION_CODE),
                notices.c.state == str(NoticeState.QUEUED)).values(
                state=str(NoticeState.FAILED), code="", lease_until=None,
                last_error="code no longer valid (superseded, used or profile opened)")).rowcount or 0)

    def batches(self, *, limit: int = 100) -> list[LetterBatch]:
        query = letter_batches.select().order_by(letter_batches.c.created_at.desc()).limit(limit)
        with self._db.read() as conn:
            return [_batch_from_row(r) for r in conn.execute(query)]

    def batch(self, batch_id: str) -> LetterBatch | None:
        with self._db.read() as conn:
            row = conn.execute(letter_batches.select().where(letter_batches.c.batch_id == batch_id)).first()
        return _batch_from_row(row) if row is not None else None

    # -- per-patient settings ---------------------------------------------------------------------

    def reach(self, ins: str) -> Reachable:
        with self._db.read() as conn:
            rows = conn.execute(_REACH, {"ins": ins}).all()
        return _reachable(ins, rows)

    def preferences(self, ins: str) -> Preferences:
        with self._db.read() as conn:
            raw = conn.execute(sa.select(preferences.c.choices).where(preferences.c.ins == ins)).scalar()
        return Preferences(**json.loads(raw)) if raw else Preferences()

    def set_preferences(self, ins: str, choices: Preferences) -> None:
        row = {"ins": ins, "choices": json.dumps(choices.to_dict())}
        with self._db.begin() as conn:
            conn.execute(self._db.insert(preferences).values(row).on_conflict_do_update(
                index_elements=["ins"], set_={"choices": row["choices"]}))

    def devices(self, ins: str) -> list[str]:
        with self._db.read() as conn:
            return [r.endpoint for r in conn.execute(devices.select().where(devices.c.ins == ins)
                                                     .order_by(devices.c.added_at))]

    def add_device(self, ins: str, endpoint: str) -> None:
        with self._db.begin() as conn:
            conn.execute(self._db.insert(devices).values(ins=ins, endpoint=endpoint, added_at=utc_now())
                         .on_conflict_do_nothing(index_elements=["ins", "endpoint"]))

    def representatives(self, ins: str) -> list[str]:
        with self._db.read() as conn:
            return [r.representative_ins for r in conn.execute(
                representatives.select().where(representatives.c.ins == ins)
                .order_by(representatives.c.representative_ins))]

    def set_representatives(self, ins: str, reps: Sequence[str]) -> None:
        with self._db.begin() as conn:
            conn.execute(representatives.delete().where(representatives.c.ins == ins))
            if reps:
                conn.execute(representatives.insert(), [{"ins": ins, "representative_ins": r} for r in reps])


def _reach_query() -> sa.CompoundSelect[Any]:
    """One statement for `reach` (built once, the patient's INS bound as `ins`): rows (what, ins, a, b, at)
    of the patient and their representatives:
    d = a device (a endpoint, at added), c = the own contact (a e-mail, b phone), p = preferences (a JSON),
    r = a representative (a their INS), l = the last e-mail sent (at)."""
    ins = sa.bindparam("ins", type_=sa.String)

    def person(column: Any) -> Any:
        reps = sa.select(representatives.c.representative_ins).where(representatives.c.ins == ins)
        return sa.or_(column == ins, column.in_(reps))

    def what(tag: str) -> Any:
        return sa.literal_column(f"'{tag}'", sa.String).label("what")

    text, at = sa.cast(sa.null(), sa.Text), sa.cast(sa.null(), sa.DateTime(timezone=True))
    return sa.union_all(  # the first select gives every column its type (`at` a timestamp)
        sa.select(what("d"), devices.c.ins, devices.c.endpoint.label("a"), text.label("b"),
                  devices.c.added_at.label("at")).where(person(devices.c.ins)),
        sa.select(what("c"), contacts.c.ins, contacts.c.email, contacts.c.phone, at).where(person(contacts.c.ins)),
        sa.select(what("p"), preferences.c.ins, preferences.c.choices, text, at).where(person(preferences.c.ins)),
        sa.select(what("r"), representatives.c.ins, representatives.c.representative_ins, text, at).where(
            representatives.c.ins == ins),
        sa.select(what("l"), notices.c.ins, text, text, sa.func.max(notices.c.sent_at)).where(
            person(notices.c.ins), notices.c.channel == str(Channel.EMAIL), notices.c.sent_at.is_not(None))
        .group_by(notices.c.ins))


_REACH = _reach_query()


def _reachable(ins: str, rows: Sequence[Any]) -> Reachable:
    """The rows of `_reach_query` as the patient's settings and their representatives' (sorted by INS)."""
    found: dict[str, dict[str, Any]] = {}
    added: dict[str, list[tuple[datetime, str]]] = {}
    for row in rows:
        one = found.setdefault(row.ins, {})
        if row.what == "d":
            added.setdefault(row.ins, []).append((when(row.at), row.a))
        elif row.what == "c":
            one.update(email=row.a, phone=row.b)
        elif row.what == "p":
            one["preferences"] = Preferences(**json.loads(row.a))
        elif row.what == "l":
            one["last_email_at"] = aware(row.at)
    reps = sorted(row.a for row in rows if row.what == "r")

    def settings(person: str) -> Settings:
        devices_added = tuple(endpoint for _, endpoint in sorted(added.get(person, []), key=lambda d: d[0]))
        return Settings(ins=person, devices=devices_added, **found.get(person, {}))
    return Reachable(own=settings(ins), representatives=tuple(settings(r) for r in reps))


def _batch_from_row(r: Any) -> LetterBatch:
    return LetterBatch(batch_id=r.batch_id, period=r.period, created_at=when(r.created_at), letters=r.letters,
                       bucket=r.bucket, pdf_key=r.pdf_key, sha256=r.sha256, size=r.size)


def _notice_row(n: Notice) -> dict[str, Any]:
    return {"notice_id": n.notice_id, "event_id": n.event_id, "kind": str(n.kind), "ins": n.ins,
            "about_ins": n.about_ins, "channel": str(n.channel), "address": n.address, "state": str(n.state),
            "created_at": n.created_at, "due_at": n.due_at, "attempts": n.attempts, "sent_at": n.sent_at,
            "read_at": n.read_at, "batch_id": n.batch_id, "provider_ref": n.provider_ref,
            "last_error": n.last_error, "fallback_of": n.fallback_of, "code": n.code,
            "code_expires": n.code_expires}


def _notice_from_row(r: Any) -> Notice:
    return Notice(notice_id=r.notice_id, event_id=r.event_id, kind=EventKind(r.kind), ins=r.ins,
                  about_ins=r.about_ins, channel=Channel(r.channel), address=r.address,
                  state=NoticeState(r.state), created_at=when(r.created_at), due_at=when(r.due_at),
                  attempts=r.attempts, sent_at=aware(r.sent_at), read_at=aware(r.read_at), batch_id=r.batch_id,
                  provider_ref=r.provider_ref, last_error=r.last_error, fallback_of=r.fallback_of, code=r.code,
                  code_expires=aware(r.code_expires), seq=r.seq)
