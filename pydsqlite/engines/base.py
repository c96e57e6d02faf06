"""The seam between pydsqlite and a database driver.

Every module above this package talks to the database only through an ``Engine``: it sends
statements, opens units of work (a transaction of its own, or a savepoint inside one that
is open), reads and writes pragmas, registers SQL functions where the engine has them, and
recognises the driver's errors. One subclass per driver (``sqlite.py`` for the standard
library's ``sqlite3``); ``engine_for`` in ``__init__.py`` picks it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

from ..errors import EngineError, UsageError
from ..schema.objects import fold_name


class Cursor(Protocol):
    """The part of a DB-API cursor pydsqlite uses."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


_units_open: dict[int, tuple[int, threading.Thread, Any]] = {}
"""Units of work open per connection (by ``id``; an entry lives only while one is open), and the
thread that opened them: a migration started inside one joins it rather than committing the
block halfway, and another thread's call is refused rather than joining it."""
_claims = threading.Lock()
"""Guards ``_units_open``, so that two threads cannot both take a connection for their units."""
_unit_stacks: dict[int, tuple[Any, list[_OpenUnit]]] = {}
"""The units of work open on each connection (by ``id``, with the connection itself, so that no other
connection can take its ``id`` while one is open), whichever engine opened them: a block of a second
``Database`` over the same connection, opened inside the first one's block, is nested in it (it
neither commits nor ends it). A unit leaving removes itself wherever it is in the list: a generator
holding a block may be closed after a block opened later has ended, or while it is still open."""


_migrations_running: dict[int, Any] = {}
"""Connections (by ``id``, with the connection itself) a migration is applying its plan on: a plan
asked for on one meanwhile, from a data step or a progress callback, would be made against the
schema half-way through that migration, so it is refused (see ``migration_running_on``)."""


def migration_running_on(connection: object) -> bool:
    """Whether a migration is applying its plan on ``connection`` now (a dictionary lookup, and none
    while no migration runs anywhere: the no-op ``sync_models`` asks on every call)."""
    return bool(_migrations_running) and id(connection) in _migrations_running


_streams: dict[int, tuple[Any, dict[str, int]]] = {}
"""The tables each connection (by ``id``, with the connection itself) is streaming rows of
(``iter_select``), with how many streams read each (folded names): a migration that would change
one of them is refused before it changes anything (SQLite would refuse it halfway, and its rollback
would end the stream)."""


_BEFORE_COMMIT = "pydsqlite_before_commit"
"""The savepoint an outermost PEP 249 block opens before its own, so that a refused commit undoes
the block alone."""


class _OpenUnit:
    """A unit of work in its connection's list (see ``_unit_stacks``)."""

    __slots__ = ("ended",)

    def __init__(self) -> None:
        self.ended = False
        """Its transaction or savepoint went with a unit opened before it that ended first (a
        generator holding a block, closed after a block it opened inside had been left)."""


_ENDED_BY_AN_ENCLOSING_UNIT = (
    "a db.transaction() block is still open whose transaction was ended by a block that enclosed it and ended first (a "
    "generator holding a block, closed or finished before a block opened while it was suspended): what that block "
    "wrote was committed or rolled back with the enclosing one. Close generators holding a block where you leave them "
    "(contextlib.closing)"
)


def _leave(connection: Any, token: _OpenUnit) -> None:
    """Remove a unit that ends from its connection's list (see ``_unit_stacks``); units opened after it
    and still open have lost their savepoints with it: they are marked ended (they touch nothing when
    they end, and no unit opens inside one of them). A unit that had already ended touches nothing
    as it leaves, so the units opened after it keep theirs."""
    key = id(connection)
    units = _unit_stacks[key][1]
    position = units.index(token)
    if not token.ended:
        for later in units[position + 1 :]:
            later.ended = True
    del units[position]
    if not units:
        del _unit_stacks[key]


def _ended_unit_open(connection: Any) -> bool:
    """Whether a unit whose transaction an enclosing unit ended is still open on ``connection``."""
    entry = _unit_stacks.get(id(connection))
    return entry is not None and any(unit.ended for unit in entry[1])


def transaction_ended_by(error: BaseException | None) -> bool:
    """Whether SQLite answered ``error`` (or the driver error it was raised from) by rolling back the
    whole transaction a unit was part of (a trigger's ``RAISE(ROLLBACK)``, ``ON CONFLICT ROLLBACK``):
    the writes pending before it are gone too."""
    return error is not None and bool(
        getattr(error, "pydsqlite_transaction_ended", False) or getattr(error.__cause__, "pydsqlite_transaction_ended", False)
    )


def _no_savepoint(error: Exception) -> bool:
    """Whether ``error`` is SQLite's "no such savepoint": the transaction holding it has ended."""
    return "no such savepoint" in str(error).lower()


_ROLLED_BACK = (
    "what was written after that point in a transaction has been rolled back (a statement you ran outside any "
    "transaction committed itself)"
)


class _EndedInside(UsageError):
    """A ``UsageError`` saying a block's transaction was ended inside it: an outer unit seeing it
    passes it on instead of reporting the same thing again."""


def _ended_inside(after: str) -> UsageError:
    """The refusal of a ``db.transaction()`` block whose transaction was ended inside it; ``after``
    says what became of the writes made after that point."""
    return _EndedInside(
        "the transaction of a db.transaction() block was ended inside the block (conn.commit(), conn.rollback(), a "
        "COMMIT, ROLLBACK or RELEASE statement, or an error SQLite answered by rolling back): what the block wrote before that point was committed or rolled back "
        f"by it, not by the block, and {after}. Leave ending the transaction to the block"
    )


class Engine(ABC):
    """One connection as pydsqlite drives it.

    ``Error``, ``IntegrityError`` and ``OperationalError`` are the driver's own exception
    classes (code above catches them through the engine, never by importing a driver);
    ``max_parameters`` is how many ``?`` one statement may bind; ``supports_functions`` says
    whether SQL functions written in Python can be registered; ``batch_rows`` says that each
    statement costs a network round, so many rows are written as one multi-row statement.
    """

    name: ClassVar[str]
    Error: ClassVar[type[Exception]]
    IntegrityError: ClassVar[type[Exception]]
    OperationalError: ClassVar[type[Exception]]
    max_parameters: ClassVar[int] = 32766
    supports_functions: ClassVar[bool] = True
    batch_rows: ClassVar[bool] = False

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    # --- statements ----------------------------------------------------------------------------

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement with bound parameters."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        """Run one statement once per row of parameters."""

    def insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> tuple[Cursor, int | None]:
        """``{head} VALUES (?, …){tail}`` for each of ``rows`` (all of one width): one statement per
        row with ``executemany``, or, where ``batch_rows``, as few multi-row statements as
        ``max_parameters`` allows. One row is a plain ``execute`` (its cursor has ``lastrowid``). Rows
        of no value (a table whose only column is a key SQLite assigns) are each ``DEFAULT VALUES``.
        Returns the last cursor and how many rows the statements changed (rows a trigger's
        ``RAISE(IGNORE)`` or an ``ON CONFLICT IGNORE`` skipped are not counted), or None where the
        driver does not say."""
        if not rows[0]:
            statements: Iterator[Cursor] = (self.execute(f"{head} DEFAULT VALUES{tail}") for _ in rows)
        else:
            group = "(" + ", ".join("?" * len(rows[0])) + ")"
            if len(rows) == 1:
                statements = iter([self.execute(f"{head} VALUES {group}{tail}", rows[0])])
            elif not self.batch_rows:
                statements = iter([self.executemany(f"{head} VALUES {group}{tail}", rows)])
            else:
                statements = self._multi_row_inserts(head, rows, tail, group)
        last = next(statements)
        changed = last.rowcount if last.rowcount >= 0 else None
        for last in statements:
            changed = None if changed is None or last.rowcount < 0 else changed + last.rowcount
        return last, changed

    def _multi_row_inserts(self, head: str, rows: Sequence[Sequence[Any]], tail: str, group: str) -> Iterator[Cursor]:
        """The multi-row INSERT statements of ``insert_rows`` on an engine that batches rows, run one by one."""
        per_statement = max(1, self.max_parameters // len(rows[0]))
        full = f"{head} VALUES {', '.join([group] * per_statement)}{tail}"
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            sql = full if len(part) == per_statement else f"{head} VALUES {', '.join([group] * len(part))}{tail}"
            yield self.execute(sql, [value for row in part for value in row])

    def parameters_per_statement(self) -> int:
        """How many ``?`` one statement may bind on this connection: ``max_parameters``, or less where the
        connection says so."""
        return self.max_parameters

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # --- transactions --------------------------------------------------------------------------

    @property
    def _depth(self) -> int:
        """How many units are open on the connection and still hold their transaction or savepoint (see
        ``_unit_stacks``): one that an enclosing unit ended holds nothing a new unit could nest in."""
        entry = _unit_stacks.get(id(self.connection))
        return sum(not unit.ended for unit in entry[1]) if entry is not None else 0

    @contextmanager
    def streaming(self, table: str) -> Iterator[None]:
        """Mark ``table`` as read by a stream of this connection while the block runs (see ``_streams``)."""
        key, name = id(self.connection), fold_name(table)
        tables = _streams.setdefault(key, (self.connection, {}))[1]
        tables[name] = tables.get(name, 0) + 1
        try:
            yield
        finally:
            tables[name] -= 1
            if not tables[name]:
                del tables[name]
                if not tables:
                    del _streams[key]

    @property
    def tables_streamed(self) -> frozenset[str]:
        """Folded names of the tables a stream of this connection is reading now."""
        entry = _streams.get(id(self.connection))
        return frozenset(entry[1]) if entry is not None else frozenset()

    def _inside_ended_unit(self) -> bool:
        """Whether a unit opened now would be opened inside one whose transaction an enclosing unit
        ended: on one thread, while such a unit is open, any new unit is inside it."""
        return _ended_unit_open(self.connection)

    @property
    def connection_lost(self) -> bool:
        """Whether the connection died under pydsqlite (a dqlite leader went away): the database
        rolled back what was open and nothing can be sent on it any more, not even a cleanup."""
        return False

    @property
    def closed(self) -> bool:
        """Whether the application closed the connection (read when a statement failed, to say so)."""
        return False

    @property
    @abstractmethod
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection (pydsqlite's or the caller's)."""

    def committed_scalar(self, query: str) -> Any:
        """The first value ``query`` reads from the committed state, apart from this connection's open
        transaction; None where the engine cannot read it so (the default)."""
        return None

    @property
    def pep249_mode(self) -> bool:
        """Whether the connection keeps a transaction open on its own (sqlite3's ``autocommit=False``)."""
        return False

    def begin_statement(self, *, immediate: bool = False) -> str:
        """The ``BEGIN`` that opens a transaction of pydsqlite's own."""
        return "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def commit_pending(self) -> None:  # noqa: B027 - most engines keep no transaction open on their own
        """End a transaction the connection keeps open on its own (PEP 249 mode); most have none."""

    @contextmanager
    def outside_transaction(self) -> Iterator[None]:
        """Run the block where no transaction is pending, so it can send its own ``BEGIN`` and
        switch pragmas that only work outside a transaction (see ``sqlite.py``)."""
        yield

    @contextmanager
    def unit(self, *, immediate: bool = False, block: bool = False) -> Iterator[None]:
        """All of the block's writes or none: a transaction of its own when none is open, else a
        savepoint (so nested units and the caller's transaction compose). A COMMIT the database
        refuses rolls back, so nothing is left half open.

        ``block``: the unit runs the caller's code (``Database.transaction()``). A transaction of
        its own then holds a savepoint too, so that a transaction ended inside the block
        (``conn.commit()``) is noticed when the block ends, and at the outermost level inside a
        transaction the connection keeps open itself (PEP 249), success commits it. A unit opened
        from another thread while one is open on the connection raises ``UsageError``: it would
        join that thread's transaction and share its fate."""
        self._claim()
        try:
            depth = self._depth
            in_transaction = self.in_transaction
            if self._inside_ended_unit():
                raise _EndedInside(f"this call was refused, nothing of it was written: {_ENDED_BY_AN_ENCLOSING_UNIT}")
            if depth and not in_transaction:
                raise _ended_inside("this call was refused: nothing of it was written")
            own = depth == 0 and not in_transaction
            savepoint = None if own and not block else f"pydsqlite_sp{depth}"
            commits = block and not own and depth == 0 and self.pep249_mode
            if own:
                self.execute(self.begin_statement(immediate=immediate))
            try:
                if commits:  # marks what was pending before the block, kept if the commit is refused
                    self.execute(f"SAVEPOINT {_BEFORE_COMMIT}")
                if savepoint is not None:
                    self.execute(f"SAVEPOINT {savepoint}")
            except BaseException:
                if own and self.in_transaction:
                    self.execute("ROLLBACK")
                elif commits:
                    self._forget_savepoint(_BEFORE_COMMIT)
                raise
            token = _OpenUnit()
            _unit_stacks.setdefault(id(self.connection), (self.connection, []))[1].append(token)
            try:
                yield
            except BaseException as error:
                if token.ended:  # its transaction went with an enclosing unit that ended first: nothing to undo
                    raise
                try:
                    self._undo(own, savepoint, error)
                finally:
                    if commits:
                        self._forget_savepoint(_BEFORE_COMMIT)
                raise
            else:
                if token.ended:
                    raise _EndedInside(_ENDED_BY_AN_ENCLOSING_UNIT)
                try:
                    if savepoint is not None:
                        self._release(savepoint)
                    if commits:
                        self._commit_block()
                    if own:
                        self.execute("COMMIT")
                except _EndedInside:
                    raise
                except BaseException as error:
                    self._undo_refused_end(own, _BEFORE_COMMIT if commits else savepoint, error)
                    raise
            finally:
                _leave(self.connection, token)
        finally:
            self._unclaim()

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """A read transaction, so that several reads see one state; it writes nothing and is rolled
        back at the end. The connection is claimed as for a unit: a write from another thread sharing
        it is refused instead of joining the snapshot and being rolled back with it."""
        self._claim()
        try:
            if self.in_transaction:
                yield
            else:
                self.execute("BEGIN")
                try:
                    yield
                finally:
                    if self.in_transaction:
                        self.execute("ROLLBACK")
        finally:
            self._unclaim()

    def _claim(self) -> None:
        """Count a unit opening on this connection; refuse one from a thread other than the one
        whose unit is open."""
        thread = threading.current_thread()
        key = id(self.connection)
        with _claims:
            count, owner, _ = _units_open.get(key, (0, thread, None))
            if owner is not thread:
                raise UsageError(
                    f"a pydsqlite call from thread {thread.name!r} while thread {owner.name!r} has a transaction open on the same "
                    "connection (a db.transaction() block or a write): it would join that transaction and be committed "
                    "or rolled back with it; nothing was written. A connection (and the Database over it) serves one "
                    "thread at a time: give each thread its own connection, or use pydsqlite.aio.AsyncDatabase"
                )
            _units_open[key] = (count + 1, thread, self.connection)

    def _unclaim(self) -> None:
        key = id(self.connection)
        with _claims:
            count, owner, connection = _units_open.pop(key)
            if count > 1:
                _units_open[key] = (count - 1, owner, connection)

    def _undo(self, own: bool, savepoint: str | None, error: BaseException) -> None:
        """Roll the failed unit back. If its savepoint is gone, the transaction was ended inside the
        block: what was written after that point is rolled back and ``UsageError`` says so (unless
        ``error`` already is that refusal, raised by a unit opened after that point)."""
        if self.connection_lost:
            return
        gone = savepoint is not None and not self.in_transaction
        try:
            if savepoint is not None and self.in_transaction:
                try:
                    self.execute(f"ROLLBACK TO {savepoint}")
                    self.execute(f"RELEASE {savepoint}")
                except Exception as failure:
                    if not _no_savepoint(failure):
                        raise
                    gone = True
        finally:
            if own or gone:
                self.rollback_open()
        # A database error may itself have ended the transaction (SQLite rolls back on some): it is the news.
        if gone and not isinstance(error, (_EndedInside, self.Error, EngineError)) and not transaction_ended_by(error):
            raise _ended_inside(_ROLLED_BACK) from error
        if gone and not own and isinstance(error, self.Error):
            error.pydsqlite_transaction_ended = True  # type: ignore[attr-defined]  # read by the error of the write

    def _release(self, savepoint: str) -> None:
        """``RELEASE`` the unit's savepoint; one that is gone means the transaction was ended inside
        the block: what was written after that point is rolled back and ``UsageError`` raised."""
        try:
            self.execute(f"RELEASE {savepoint}")
        except Exception as failure:
            if not _no_savepoint(failure):
                raise
            self.rollback_open()
            raise _ended_inside(_ROLLED_BACK) from None

    def _undo_refused_end(self, own: bool, savepoint: str | None, error: BaseException) -> None:
        """Roll back a unit whose end SQLite refused (its ``RELEASE`` while a statement of the caller's
        is still running, its ``COMMIT`` under another connection's lock): its own transaction, else
        back to ``savepoint``, keeping what was pending before it. Where even that is refused, the
        whole transaction is rolled back and ``error`` says so (``transaction_ended_by``)."""
        if self.connection_lost or not self.in_transaction:
            return
        if own:
            self.execute("ROLLBACK")
            return
        if savepoint is None:
            return
        try:
            self.execute(f"ROLLBACK TO {savepoint}")
            self.execute(f"RELEASE {savepoint}")
        except Exception as failure:
            if _no_savepoint(failure):
                return
            self.rollback_open()
            if isinstance(error, self.Error):
                error.pydsqlite_transaction_ended = True  # type: ignore[attr-defined]

    def _commit_block(self) -> None:
        """Commit what is pending at the end of an outermost block in PEP 249 mode. A commit SQLite
        refuses (another connection's lock, a deferred foreign key) leaves the transaction open:
        the block's writes are rolled back to the savepoint taken before it, so a retried block
        does not write them twice, and what was pending before the block stays pending."""
        try:
            self.commit_pending()
        except BaseException:
            if not self.connection_lost and self.in_transaction:
                try:
                    self.execute(f"ROLLBACK TO {_BEFORE_COMMIT}")
                except Exception as failure:
                    if not _no_savepoint(failure):
                        raise
                else:
                    self._forget_savepoint(_BEFORE_COMMIT)
            raise

    def _forget_savepoint(self, name: str) -> None:
        """``RELEASE`` a savepoint that may already be gone with its transaction."""
        if self.connection_lost or not self.in_transaction:
            return
        try:
            self.execute(f"RELEASE {name}")
        except Exception as failure:
            if not _no_savepoint(failure):
                raise

    def rollback_open(self) -> None:
        """Roll back the transaction open on the connection, if any."""
        if self.in_transaction:
            self.execute("ROLLBACK")

    @contextmanager
    def migration_running(self) -> Iterator[None]:
        """Mark this connection as one a migration is applying its plan on while the block runs."""
        _migrations_running[id(self.connection)] = self.connection
        try:
            yield
        finally:
            _migrations_running.pop(id(self.connection), None)

    @property
    def unit_open(self) -> bool:
        """Whether a unit of work (``Database.transaction()``, a write) is open on this connection,
        through this engine or another one."""
        return id(self.connection) in _units_open

    @contextmanager
    def refusing_transaction_control(self) -> Iterator[list[str]]:
        """While the block runs, refuse the statements that would end the open transaction or a
        savepoint opened before the block (``COMMIT``, ``ROLLBACK``, ``RELEASE``); yields the list
        of those refused, so the caller can say why the block failed. Engines that cannot see
        statements before they run refuse nothing."""
        yield []

    @contextmanager
    def time_limit(self, deadline: float) -> Iterator[None]:
        """While the block runs, a statement still running at ``deadline`` (a ``time.perf_counter()``
        value) is interrupted, which ``is_interrupted`` recognises. Engines that cannot interrupt
        a statement let it finish."""
        yield

    # --- pragmas -------------------------------------------------------------------------------

    def pragma(self, name: str) -> Any:
        """The value of ``PRAGMA name``."""
        return self.scalar(f"PRAGMA {name}")

    def set_pragma(self, name: str, value: int | str) -> None:
        """Set ``PRAGMA name`` (engines whose drivers mangle pragma writes override this)."""
        self.execute(f"PRAGMA {name} = {value}")

    # --- functions -----------------------------------------------------------------------------

    @abstractmethod
    def create_function(self, name: str, arity: int, function: Callable[..., Any], *, deterministic: bool = False) -> None:
        """Register a SQL function written in Python (only where ``supports_functions``)."""

    # --- errors --------------------------------------------------------------------------------

    def is_busy(self, error: BaseException) -> bool:
        """Whether ``error`` means another connection holds the lock."""
        text = str(error).lower()
        return "locked" in text or "busy" in text

    def is_interrupted(self, error: BaseException) -> bool:
        """Whether ``error`` is a statement stopped by ``time_limit``."""
        return "interrupt" in str(error).lower()

    def is_read_only(self, error: BaseException) -> bool:
        """Whether ``error`` means the database cannot be written."""
        return "readonly" in str(error).lower() or "read-only" in str(error).lower()
