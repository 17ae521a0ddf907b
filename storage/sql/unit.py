"""A unit of work on one Database: every store's writes of one step in one transaction, its bus publishes
after the commit.

Owns: Unit (the ambient transaction of one thread or task, held in a contextvar, opened by Database.unit),
current_unit(), after_commit() and AfterCommit, a Publisher whose publishes wait for the commit of the unit
they are made in (at once outside a unit).
Rule 1: one unit at a time per thread (a unit of another database inside one is a programming error);
inside a unit, Database.begin/read/connection of that same Database hand out the unit's one
connection and commit nothing: the unit commits once, when its block ends.  A store on another Database
is not covered: it keeps its own transactions (on SQLite, never the same file: its writes would wait for
the unit's write lock, held by this very thread).
Rule 2: a block of the unit that raises breaks the unit, even if its caller swallows the error: a
broken unit rolls back (nothing half-written is ever committed).
Rule 3: after-commit callbacks run once, in order, after the commit (discarded on rollback); one that
raises propagates, the rest are not run.  The step's message is acked after them, so a redelivery
repeats the (idempotent) step and its publishes: nothing acknowledged is lost, nothing stored twice.
Does not: retry, or decide what belongs in one unit (the composition root wraps the steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from hub.events import Event
from hub.ports import Publisher

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_CURRENT: ContextVar[Unit | None] = ContextVar("storage_sql_unit", default=None)


class BrokenUnit(RuntimeError):
    """A block of the unit raised and its caller went on: the unit rolls back instead of committing."""


class Unit:
    """One connection and transaction of one Database, and what waits for its commit."""

    def __init__(self, owner: object, connect: Callable[[], Connection]) -> None:
        self.owner = owner  # the Database it is on
        self._connect = connect
        self._conn: Connection | None = None
        self._after: list[Callable[[], None]] = []
        self.broken = False

    @property
    def conn(self) -> Connection:
        """The unit's connection, checked out (and its transaction begun) on first use."""
        if self._conn is None:
            self._conn = self._connect()
            self._conn.begin()
        return self._conn

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)

    @contextmanager
    def block(self) -> Iterator[Connection]:
        """A store's transaction inside the unit: the unit's connection, no commit (Rule 1 and 2)."""
        try:
            yield self.conn
        except BaseException:
            self.broken = True
            raise

    def finish(self, *, commit: bool) -> list[Callable[[], None]]:
        """Commit (or roll back) and close; the callbacks to run once committed (none otherwise)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return self._after if commit else []
        try:
            if commit and not self.broken:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.close()
        if commit and self.broken:
            raise BrokenUnit("a store's transaction failed inside the unit: rolled back")
        return self._after if commit else []


@contextmanager
def opened(owner: object, connect: Callable[[], Connection]) -> Iterator[Unit]:
    """The unit of `owner` for the block: joins the one under way on it, else opens, commits, then runs
    the after-commit callbacks (Database.unit)."""
    current = _CURRENT.get()
    if current is not None:
        if current.owner is not owner:  # the outer unit's stores would commit on their own meanwhile
            raise RuntimeError("a unit of work is already under way on another database")
        yield current
        return
    unit = Unit(owner, connect)
    token = _CURRENT.set(unit)
    try:
        try:
            yield unit
        except BaseException:
            unit.finish(commit=False)
            raise
        callbacks = unit.finish(commit=True)
    finally:
        _CURRENT.reset(token)
    for callback in callbacks:
        callback()


def current_unit(owner: object | None = None) -> Unit | None:
    """The unit under way in this thread (of `owner`, when given), if any."""
    unit = _CURRENT.get()
    return unit if unit is not None and (owner is None or unit.owner is owner) else None


def after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once the unit under way commits; at once when there is none."""
    unit = _CURRENT.get()
    if unit is None:
        callback()
    else:
        unit.after_commit(callback)


class AfterCommit:
    """Publisher: inside a unit, the publish waits for its commit (Rule 3); outside, it goes at once."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        after_commit(lambda: self.inner.publish(event, delay_s=delay_s))
