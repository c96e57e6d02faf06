"""The standard library's ``sqlite3``, in each of its transaction modes.

Python's ``sqlite3`` has a legacy mode (``isolation_level`` decides which ``BEGIN`` it sends
before a data change; ``None`` sends none) and, from Python 3.12, ``autocommit=True`` (it
never opens transactions) and ``autocommit=False`` (PEP 249: a transaction is always open,
``commit()`` ends it and opens the next). This engine follows whichever the connection uses.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.request import pathname2url

from ..errors import SqliteOperationalError, UsageError
from .base import Cursor, Engine

logger = logging.getLogger(__name__)

LEGACY_TRANSACTION_CONTROL = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
"""``conn.autocommit`` in legacy mode (the only mode before Python 3.12, which lacks the attribute)."""
_PROGRESS_EVERY = 4000
"""Virtual machine steps between two looks at the clock in ``time_limit`` (well under a millisecond)."""


@contextmanager
def _text_as_str(connection: sqlite3.Connection) -> Iterator[None]:
    """TEXT read as ``str`` for the block, whatever ``text_factory`` the application set (``bytes``,
    a decoding function): the connection's own factory is back after it."""
    factory = connection.text_factory
    if factory is str:
        yield
        return
    connection.text_factory = str
    try:
        yield
    finally:
        connection.text_factory = factory


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open a database file read-only (never creating it), whatever characters its path holds."""
    return sqlite3.connect(f"file:{pathname2url(os.path.abspath(os.fspath(path)))}?mode=ro", uri=True)


class _TextAsStrCursor:
    """A cursor of pydsqlite's own statement on a connection whose ``text_factory`` is not ``str``:
    sqlite3 converts each row when it is fetched, so every fetch reads TEXT as ``str``."""

    __slots__ = ("_cursor", "_connection")

    def __init__(self, cursor: sqlite3.Cursor, connection: sqlite3.Connection) -> None:
        self._cursor = cursor
        self._connection = connection

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def description(self) -> Any:
        return self._cursor.description

    def fetchone(self) -> Any:
        with _text_as_str(self._connection):
            return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        with _text_as_str(self._connection):
            return self._cursor.fetchall()

    def fetchmany(self, size: int = 1) -> list[Any]:
        with _text_as_str(self._connection):
            return self._cursor.fetchmany(size)

    def __iter__(self) -> Iterator[Any]:
        while row := self.fetchone():
            yield row

    def close(self) -> None:
        self._cursor.close()


STORAGE_TYPES = frozenset({"INTEGER", "TEXT", "REAL", "BLOB"})
"""The column types pydsqlite declares: a converter registered under one of them would change every value it reads."""


def refuse_converted_values(engine: SqliteEngine) -> None:
    """``UsageError`` when the connection runs ``sqlite3`` converters on the columns pydsqlite declares
    (``detect_types=PARSE_DECLTYPES`` with a converter registered for ``INTEGER``, ``TEXT``, ``REAL`` or
    ``BLOB``): rows would be read as other values than SQLite stores, and a row read so could be
    written back under another key. Looked at only when such a converter is registered: a value read
    through a column declared with that type (``SELECT col FROM t WHERE 0 UNION ALL SELECT ?`` reads
    the bound value with the column's declared type) must come back as it was bound. A column of the
    database's is used where one has the type; otherwise a TEMP table made for the purpose."""
    registered = sorted(STORAGE_TYPES.intersection(sqlite3.converters))
    for type_name in registered:
        sample = _SAMPLES[type_name]
        try:
            read = _read_back_as(engine, type_name, sample)
        except sqlite3.OperationalError as error:  # query_only, a statement of the app's still reading...
            logger.debug("cannot look for a %s converter on this connection (%s)", type_name, error)
            continue
        except Exception:  # noqa: BLE001 - the converter itself failed on the value: it runs on this connection
            read = None
        if type(read) is not type(sample) or read != sample:
            raise UsageError(
                f"this connection converts the values it reads (detect_types with sqlite3 converters registered for "
                f"{', '.join(registered)}): pydsqlite reads and writes values as SQLite stores them, and a converted key "
                "would match no row. Open the connection without detect_types=sqlite3.PARSE_DECLTYPES, or register the "
                "converters under type names pydsqlite does not declare"
            )


def _read_back_as(engine: SqliteEngine, type_name: str, sample: Any) -> Any:
    """``sample`` read back through a column declared ``type_name``: one of the database's, else a TEMP
    table's (dropped again)."""
    found = engine.execute(
        # expressions, not columns: a value of a column declared "text" would go through a TEXT converter
        "SELECT m.name || '', p.name || '' FROM main.sqlite_master AS m, pragma_table_info(m.name) AS p "
        "WHERE m.type = 'table' AND m.sql NOT LIKE 'CREATE VIRTUAL%' AND upper(p.type) = ? LIMIT 1",
        (type_name,),
    ).fetchone()
    if found is not None:
        table, column = (_quoted(name) for name in found)
        return engine.execute(f"SELECT {column} FROM main.{table} WHERE 0 UNION ALL SELECT ?", (sample,)).fetchone()[0]
    probe = _quoted(f"_pydsqlite_declared_types_{uuid.uuid4().hex}")  # a name no table of the application's has
    engine.execute(f"CREATE TEMP TABLE {probe} (v {type_name})")
    try:
        return engine.execute(f"SELECT v FROM temp.{probe} WHERE 0 UNION ALL SELECT ?", (sample,)).fetchone()[0]
    finally:
        engine.execute(f"DROP TABLE temp.{probe}")


_SAMPLES: dict[str, Any] = {"INTEGER": 7, "TEXT": "x", "REAL": 1.5, "BLOB": b"\x01"}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteEngine(Engine):
    """A ``sqlite3.Connection``."""

    name = "sqlite3"
    Error = sqlite3.Error
    IntegrityError = sqlite3.IntegrityError
    OperationalError = sqlite3.OperationalError
    connection: sqlite3.Connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        connection = self.connection
        if connection.row_factory is None and connection.text_factory is str:
            return connection.execute(sql, params)
        cursor = self._plain_cursor()
        with _text_as_str(connection):
            cursor.execute(sql, params)
        return cursor if connection.text_factory is str else _TextAsStrCursor(cursor, connection)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        connection = self.connection
        if connection.row_factory is None and connection.text_factory is str:
            return connection.executemany(sql, rows)
        cursor = self._plain_cursor()
        with _text_as_str(connection):
            cursor.executemany(sql, rows)
        return cursor

    @property
    def closed(self) -> bool:
        try:
            self.connection.total_changes  # noqa: B018 - any use of a closed connection raises
        except sqlite3.ProgrammingError:
            return True
        return False

    def parameters_per_statement(self) -> int:
        """The engine's limit, or the connection's own where the application lowered it (``setlimit``)."""
        return min(self.max_parameters, self.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))

    def _plain_cursor(self) -> sqlite3.Cursor:
        """A cursor giving rows as tuples whatever ``row_factory`` the application set on its connection
        (a dict factory, ``sqlite3.Row``): pydsqlite reads rows by position."""
        cursor = self.connection.cursor()
        cursor.row_factory = None
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    def committed_scalar(self, query: str) -> Any:
        """The first value ``query`` reads from the committed state of the main database file, through a
        read-only connection of its own (not this connection's open transaction); None for a database
        that is not a file, or when the query finds nothing. The driver's error when that connection
        cannot read (this connection's refused commit still holds a lock that keeps readers out)."""
        path = next((file for _, name, file in self.execute("PRAGMA database_list") if name == "main"), "")
        if not path:
            return None
        reader = connect_read_only(path)
        try:
            row = reader.execute(query).fetchone()
        finally:
            reader.close()
        return None if row is None else row[0]

    @property
    def pep249_mode(self) -> bool:
        """Opened (or switched) with ``autocommit=False``: a transaction is always pending."""
        return getattr(self.connection, "autocommit", LEGACY_TRANSACTION_CONTROL) is False

    def begin_statement(self, *, immediate: bool = False) -> str:
        """As the connection asks for it: legacy mode's ``isolation_level`` ``"IMMEDIATE"`` or
        ``"EXCLUSIVE"`` takes that lock at once; ``immediate`` takes at least the write lock."""
        legacy = getattr(self.connection, "autocommit", LEGACY_TRANSACTION_CONTROL) == LEGACY_TRANSACTION_CONTROL
        level = (self.connection.isolation_level or "").upper() if legacy else ""
        if immediate and level != "EXCLUSIVE":
            return "BEGIN IMMEDIATE"
        return f"BEGIN {level}" if level else "BEGIN"

    def commit_pending(self) -> None:
        if self.pep249_mode:
            self.connection.commit()

    def rollback_open(self) -> None:
        """In PEP 249 mode the next transaction is opened, as that mode must: by the driver's
        ``rollback()`` (which with ``autocommit=True`` would do nothing), or, when SQLite has
        already rolled back on its own, by switching ``autocommit`` off again."""
        if not self.pep249_mode:
            super().rollback_open()
        elif self.in_transaction:
            self.connection.rollback()
        else:
            self.connection.autocommit = True  # type: ignore[attr-defined]
            self.connection.autocommit = False  # type: ignore[attr-defined]

    @contextmanager
    def outside_transaction(self) -> Iterator[None]:
        """In PEP 249 mode, commit the pending transaction (as ``conn.commit()`` would) and run the
        block with ``autocommit=True``; then switch back, which opens the next transaction as
        PEP 249 expects (also when the block fails). Inside a unit of work (``db.transaction()``)
        nothing is committed: the block runs inside it, as in every other mode, where nothing changes."""
        if not self.pep249_mode or self.unit_open:
            yield
            return
        try:
            self.connection.autocommit = True  # type: ignore[attr-defined]
        except sqlite3.Error as error:
            # CPython switches the mode even when SQLite refuses the commit: switch it back, so that the
            # transaction left pending is the connection's again (commit() and rollback() reach it)
            self.connection.autocommit = False  # type: ignore[attr-defined]
            code = getattr(error, "sqlite_errorcode", 0)
            refusal = SqliteOperationalError(
                f"the transaction pending on this PEP 249 connection could not be committed first ({error}); it is still "
                "pending, and nothing else was done: retry, or end it with conn.commit() or conn.rollback()",
                code=code & 0xFF if code else None,
            )
            refusal.sqlite_errorcode, refusal.sqlite_errorname = code, getattr(error, "sqlite_errorname", "")
            raise refusal from error
        try:
            yield
        finally:
            self.connection.autocommit = False  # type: ignore[attr-defined]

    @contextmanager
    def refusing_transaction_control(self) -> Iterator[list[str]]:
        """With an authorizer, which SQLite consults while preparing each statement (``conn.commit()``
        and ``conn.rollback()`` included). It replaces an authorizer of the caller's own, and is
        removed after the block."""
        refused: list[str] = []
        opened: set[str] = set()

        def authorize(action: int, operation: str | None, name: str | None, *_: object) -> int:
            if action == sqlite3.SQLITE_TRANSACTION and operation != "BEGIN":
                refused.append(str(operation))
                return sqlite3.SQLITE_DENY
            if action == sqlite3.SQLITE_SAVEPOINT and name is not None:
                if operation == "BEGIN":
                    opened.add(name.lower())
                elif name.lower() not in opened:
                    refused.append(f"{operation} {name}")
                    return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        self.connection.set_authorizer(authorize)
        try:
            yield refused
        finally:
            self.connection.set_authorizer(None)

    def create_function(self, name: str, arity: int, function: Callable[..., Any], *, deterministic: bool = False) -> None:
        self.connection.create_function(name, arity, function, deterministic=deterministic)

    @contextmanager
    def time_limit(self, deadline: float) -> Iterator[None]:
        """With a progress handler, which SQLite calls every few thousand steps of a statement. It
        replaces a progress handler of the caller's own, and is removed after the block."""

        def past_deadline() -> bool:
            return time.perf_counter() >= deadline

        self.connection.set_progress_handler(past_deadline, _PROGRESS_EVERY)
        try:
            yield
        finally:
            self.connection.set_progress_handler(None, 0)
