"""aiosqlite: the sqlite3 engine driven from asyncio, one job at a time on the connection's own thread.

An ``aiosqlite.Connection`` owns a ``sqlite3`` connection and one thread that runs every call on
it, in order. pydsqlite's code stays synchronous and runs there whole: each awaited call becomes
one job on that thread (the same ``Database`` method or pipeline function the sync API runs, with
this engine's statements sent straight to the ``sqlite3`` connection), so a job is never split,
and the async API has no logic of its own.

A connection has one transaction, and tasks share it. So every call holds a lock for its job:
the connection's own, or, for calls made inside an open ``transaction()`` (by its task or by
tasks started in it), that transaction's lock. A transaction holds its parent's lock until it
ends, so other tasks wait and never run inside it; reads outside transactions run between units.

Cancellation: a cancelled task first waits until its job has ended, so nobody else touches the
connection halfway; a cancelled job's ``COMMIT`` (or the ``RELEASE`` of its savepoint) becomes a
rollback, so the cancelled work is undone whole. A cancellation that arrives after the commit
was sent (or, inside an enclosing transaction, after its savepoint was released) cannot undo
it: the ``CancelledError`` then carries a note saying so. Running
statements are not interrupted (SQLite's interrupt would hit other tasks' statements too); the
cancelled job ends at its commit.

aiosqlite has no public way to run a function on its thread: this module (and only this one)
uses ``Connection._execute`` and ``Connection._conn``, present from aiosqlite 0.20 on.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from ..errors import UsageError
from .base import Cursor
from .sqlite import SqliteEngine, refuse_converted_values

T = TypeVar("T")

_STATEMENT_IN_PROGRESS = "SQL statements in progress"

LATE_CANCELLATION = "pydsqlite: the call had completed when the cancellation reached it; what it wrote stands"
LATE_CANCELLATION_IN_TRANSACTION = (
    "pydsqlite: the call had completed when the cancellation reached it; what it wrote is part of the enclosing "
    "transaction, which its block commits or rolls back"
)


class _Abandoned(BaseException):
    """Raised on the connection's thread in place of the commit a cancelled task no longer wants.
    Nobody catches it: the task that queued the job has already got its ``CancelledError``."""


class _Job:
    """One call run on the connection's thread, and what became of it."""

    __slots__ = ("function", "args", "kwargs", "check_statements", "in_ended", "started", "cancelled", "completed", "context")

    def __init__(
        self, function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], *, check_statements: bool, in_ended: bool
    ) -> None:
        self.context = contextvars.copy_context()
        """The calling task's context variables, which validators and default factories may read."""
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.check_statements = check_statements
        self.in_ended = in_ended
        """The calling task is inside a block whose transaction an enclosing block ended (``_ended_around``)."""
        self.started = False
        self.cancelled = False
        self.completed = False


class _StatementInProgress(Exception):
    """Raised on the connection's thread before a job starts: a statement of the app's is still open."""


class _Scope:
    """Where units of work wait their turn: the connection, or an open transaction (for calls made inside it)."""

    __slots__ = ("lock", "parent", "open", "outcome", "task")

    def __init__(self, parent: _Scope | None) -> None:
        self.lock = asyncio.Lock()
        self.parent = parent
        self.open = True
        self.outcome: str | None = None
        """How the transaction ended: "was rolled back" or "committed" (None while it has not)."""
        self.task = asyncio.current_task() if parent is not None else None
        """The task whose code entered the block (its own context holds this scope)."""


class AiosqliteEngine(SqliteEngine):
    """An open ``aiosqlite.Connection``: its ``sqlite3`` connection, used only on the connection's thread."""

    name = "aiosqlite"

    def __init__(self, connection: Any) -> None:
        try:
            raw = connection._conn
        except ValueError:
            raise UsageError("the aiosqlite connection is not open: await aiosqlite.connect(...) before using it") from None
        super().__init__(raw)
        self._aiosqlite = weakref.ref(connection)
        self._job: _Job | None = None
        self._converters_checked = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._root = _Scope(None)
        self._scope: ContextVar[_Scope] = ContextVar("pydsqlite_unit_of_work", default=self._root)

    def _follow_loop(self) -> None:
        """Give the units of work locks of the running event loop (an asyncio lock serves one loop): the
        same database used from one loop, then another (``asyncio.run`` twice, a test client per test)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None and self._root.lock.locked():
            raise UsageError(
                "this connection is in use by a unit of work of another event loop, which has not ended (a loop "
                "closed while a call or a db.transaction() block was still running); use one database from one event "
                "loop at a time"
            )
        self._loop = loop
        self._root = _Scope(None)
        self._scope = ContextVar("pydsqlite_unit_of_work", default=self._root)

    # --- statements (on the connection's thread) -------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        job = self._job
        if job is not None and job.cancelled and (sql == "COMMIT" or sql.startswith("RELEASE ")):
            self._abandon(sql)
        return super().execute(sql, params)

    def _inside_ended_unit(self) -> bool:
        """Tasks share the connection, so a unit whose transaction an enclosing block ended (a task started
        inside that block, still inside a block of its own) is inside the calls of the task that opened
        it alone: whether a call is inside it is read from the calling task's blocks, not from the
        connection."""
        job = self._job
        return job.in_ended if job is not None else super()._inside_ended_unit()

    def commit_pending(self) -> None:
        """A block cancelled before its commit does not commit: ``Engine._commit_block`` then rolls back
        the block alone (what was pending before it, perhaps another task's, stays pending)."""
        job = self._job
        if job is not None and job.cancelled and self.pep249_mode:
            raise _Abandoned
        super().commit_pending()

    def _abandon(self, sql: str) -> None:
        """Roll back what ``sql`` (``COMMIT`` or ``RELEASE name``) would have kept, and stop the job."""
        if sql == "COMMIT":
            self.connection.execute("ROLLBACK")
        else:
            savepoint = sql.removeprefix("RELEASE ")
            self.connection.execute(f"ROLLBACK TO {savepoint}")
            self.connection.execute(f"RELEASE {savepoint}")
        raise _Abandoned

    def _perform(self, job: _Job) -> Any:
        if job.check_statements and not self._statements_ended():
            raise _StatementInProgress
        if not self._converters_checked:  # on the connection's thread, before its first job
            refuse_converted_values(self)
            self._converters_checked = True
        job.started = True
        self._job = job
        try:
            result = job.context.run(job.function, *job.args, **job.kwargs)
        finally:
            self._job = None
        job.completed = True
        return result

    def _statements_ended(self) -> bool:
        """Whether no write statement of the app's is still in progress on the connection: SQLite then
        refuses to open a savepoint (and to commit). Checked before a job starts, so that nothing of
        it has run when it has to wait; an empty savepoint, inside the app's transaction or not."""
        try:
            self.connection.execute("SAVEPOINT pydsqlite_probe")
        except sqlite3.OperationalError as error:
            if _STATEMENT_IN_PROGRESS not in str(error):
                raise
            return False
        self.connection.execute("RELEASE pydsqlite_probe")
        return True

    # --- jobs (from the event loop) ----------------------------------------------------------------

    async def run(
        self, function: Callable[..., T], /, *args: Any, settle: bool = False, outermost: bool = False, fresh: bool = False,
        **kwargs: Any,
    ) -> T:
        """``function(*args, **kwargs)`` run on the connection's thread, outside any lock (see ``call``).

        If the awaiting task is cancelled, this waits until the job has ended and then raises the
        cancellation; the job's commit becomes a rollback unless ``settle`` (clean-up that must
        complete as written, such as a rollback). When the job got past its commit all the same, a
        note on the error says that its work stands; inside a transaction (not ``outermost``), past
        the release of its savepoint, another note says that its work is part of the transaction,
        whose block decides. A ``fresh`` job (a whole unit, or the opening of one)
        first checks that no write statement of the app's is still in progress on the connection
        (SQLite would refuse its savepoint or commit); if one is, a job that frees it runs first."""
        connection = self._connection()
        freed = False
        while True:
            job = _Job(function, args, kwargs, check_statements=fresh, in_ended=_ended_around(self._current()) is not None)
            try:
                return await connection._execute(self._perform, job)  # type: ignore[no-any-return]
            except asyncio.CancelledError as cancelled:
                job.cancelled = not settle
                await _drain(connection)
                if job.completed and not settle:
                    cancelled.add_note(LATE_CANCELLATION if outermost else LATE_CANCELLATION_IN_TRANSACTION)
                raise
            except ValueError:
                if job.started:
                    raise
                raise UsageError("the aiosqlite connection is closed") from None
            except _StatementInProgress:
                if freed:
                    raise UsageError(
                        "a statement run on this connection outside pydsqlite has not ended (a cursor of conn.execute(...) "
                        "whose rows were not all read): SQLite would refuse to commit; fetch its rows or close it. "
                        "Nothing was done"
                    ) from None
                # aiosqlite's thread keeps the last job's result until a job ends well, so the app's cursor of
                # `await conn.execute("PRAGMA journal_mode = wal")` keeps its statement open: a job that ends frees it
                freed = True
                await connection._execute(_nothing)

    async def call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` as one unit of work: after the unit in progress, or inside
        the caller's open transaction."""
        scope = await self._hold()
        try:
            return await self.run(function, *args, outermost=scope is self._root, fresh=True, **kwargs)
        finally:
            scope.lock.release()

    @asynccontextmanager
    async def transaction(self, unit: Callable[[], AbstractContextManager[Any]]) -> AsyncIterator[None]:
        """Hold the connection (or the enclosing transaction) for the block, inside the sync unit
        ``unit()`` (entered and left on the connection's thread): its commit on success, its
        rollback on any exception, cancellation included."""
        parent = await self._hold()
        try:
            entered = unit()
            opened = False

            def open_unit() -> None:
                nonlocal opened
                entered.__enter__()
                opened = True

            try:
                await self.run(open_unit, settle=True, fresh=True)
            except asyncio.CancelledError as cancelled:
                if opened:
                    await self.run(entered.__exit__, type(cancelled), cancelled, cancelled.__traceback__, settle=True)
                raise
            scope = _Scope(parent)
            token = self._scope.set(scope)
            try:
                yield
            except BaseException as error:
                scope.open, scope.outcome = False, "was rolled back"
                await self.run(entered.__exit__, type(error), error, error.__traceback__, settle=True)
                raise
            else:
                scope.open = False
                try:
                    await self.run(entered.__exit__, None, None, None, outermost=parent is self._root)
                except BaseException as error:
                    late = any(note in (LATE_CANCELLATION, LATE_CANCELLATION_IN_TRANSACTION) for note in getattr(error, "__notes__", ()))
                    scope.outcome = "committed" if late else "was rolled back"
                    raise
                scope.outcome = "committed"
            finally:
                scope.open = False
                try:
                    self._scope.reset(token)
                except ValueError:  # left in another context (an async generator finalized later): see _hold
                    pass
        finally:
            parent.lock.release()

    async def close(self) -> None:
        """Close the aiosqlite connection once the unit of work in progress has ended."""
        self._follow_loop()
        if self._current() is not self._root:
            raise UsageError("close() inside a transaction of the same connection: leave the transaction first")
        async with self._root.lock:
            connection = self._aiosqlite()
            if connection is not None:
                await connection.close()

    def _current(self) -> _Scope:
        """The innermost open transaction the calling task is inside, or the connection."""
        scope = self._scope.get()
        while not scope.open:
            assert scope.parent is not None  # the connection's scope never closes
            scope = scope.parent
        return scope

    async def _hold(self) -> _Scope:
        """Wait for and take the lock of the calling task's scope: its open transaction, or the nearest
        open one around it once that ended. A task started inside a transaction that was rolled back
        (``asyncio.gather`` siblings still waiting when one of them failed) is refused: run on its own,
        its call would write what the block rolled back."""
        self._follow_loop()
        while True:
            scope = self._current()
            await scope.lock.acquire()
            if not scope.open:
                scope.lock.release()
                continue
            ended = self._scope.get()
            while ended is not scope and ended.outcome != "was rolled back":  # decided: its block let go of the lock
                assert ended.parent is not None
                ended = ended.parent
            if ended is scope:
                gone = _ended_around(scope)
                if gone is not None and gone.task is not asyncio.current_task():
                    scope.lock.release()
                    raise UsageError(
                        f"this call comes from a task started inside db.transaction(), and that transaction {gone.outcome} "
                        "while the task was still inside a db.transaction() block of its own, which went with it; nothing "
                        "was done (await every task of a transaction inside its block: asyncio.TaskGroup cancels the "
                        "others when one fails)"
                    )
                return scope
            if ended.task is asyncio.current_task():
                # this task's own code entered that block (an async generator left without aclosing, closed
                # later from another context, which could not take the block off this task's context): the
                # block is over, the task is no longer inside it
                self._scope.set(scope)
                return scope
            scope.lock.release()
            raise UsageError(
                "this call comes from a task started inside db.transaction(), and that transaction was rolled back "
                "before the call ran; nothing was done (await every task of a transaction inside its block: "
                "asyncio.TaskGroup cancels the others when one fails; start a long-lived task with "
                "asyncio.create_task(..., context=contextvars.Context()) so that it belongs to no block)"
            )

    def _connection(self) -> Any:
        connection = self._aiosqlite()
        if connection is None:
            raise UsageError("the aiosqlite connection is closed")
        return connection


def _ended_around(scope: _Scope) -> _Scope | None:
    """The nearest transaction around the open ``scope`` that has ended, if any: a block entered by
    a task started inside it, whose transaction went when that one ended."""
    around = scope.parent
    while around is not None and around.open:
        around = around.parent
    return around


def _nothing() -> None:
    """A job that only marks its place in the connection's queue."""


async def _drain(connection: Any) -> None:
    """Wait until every job queued on ``connection`` so far has ended (its thread runs them in order),
    through any further cancellations."""
    while True:
        try:
            await connection._execute(_nothing)
            return
        except asyncio.CancelledError:
            continue
        except ValueError:  # closed meanwhile: the thread still ends the jobs queued before the close
            return


_ENGINES: weakref.WeakKeyDictionary[Any, AiosqliteEngine] = weakref.WeakKeyDictionary()


def engine_of(connection: Any) -> AiosqliteEngine:
    """The one engine of an open aiosqlite connection (its units of work must share one lock)."""
    engine = _ENGINES.get(connection)
    if engine is None:
        engine = _ENGINES[connection] = AiosqliteEngine(connection)
    return engine
