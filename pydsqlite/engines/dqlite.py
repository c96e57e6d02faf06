"""dqlite, Canonical's Raft-replicated SQLite, through its DB-API client ``dqlitedbapi``.

The client (PyPI ``dqlite-dbapi``, Python 3.13+) is imported only when a connection of its own
is handed to pydsqlite (``engine_for``) or ``connect_dqlite`` is called. What differs from the
standard library's ``sqlite3``, each found by trying it against dqlite 1.11 (Debian's
libdqlite0) and the client 0.8:

- Nothing is transactional unless ``BEGIN`` is sent: every statement outside one commits on
  its own through a Raft round, and the client's ``commit()`` / ``rollback()`` do nothing
  outside an explicit transaction. The engine always sends ``BEGIN IMMEDIATE`` (the client
  rewrites a bare ``BEGIN`` by its session mode, which may be ``deferred``). The client's
  ``in_transaction`` flag is its own guess (it stays set after the outermost savepoint is
  released), so when it says yes the engine asks the server.
- A pragma write (``PRAGMA foreign_keys = OFF``) is sent as a query, and the server answers
  "not an error" although it applied it: that answer counts as success and ``set_pragma``
  reads the value back. A new connection (also after a failover) has foreign keys ON.
- One statement binds at most 255 parameters. The client sends more in a wider format that
  this server reads as a one-byte count: 256 parameters are bound as NULLs without any error
  and other counts fail with "not an error". The engine refuses a statement over the limit
  before sending it; everything pydsqlite builds stays within ``max_parameters``.
- An ``INSERT``/``UPDATE``/``DELETE … RETURNING`` outside a transaction makes the leader abort
  (assertion ``wal->n_tx == 0`` in its VFS): the engine runs such a statement in a
  transaction of its own.
- A transaction whose dirty pages no longer fit SQLite's page cache fails with "disk I/O
  error" whenever the write-ahead log holds no committed frame (dqlite truncates it at every
  checkpoint, each 1000 frames): SQLite spills pages to the log and reads them back, and
  this version of dqlite's VFS answers any read of a log without committed frames with a
  short read (fixed upstream in dqlite 1.13). Every connection pydsqlite drives gets
  ``PRAGMA cache_spill = OFF``: the pages stay in memory until the commit, where dqlite
  holds them anyway.
- No SQL functions written in Python (``supports_functions`` is False).
- Errors: the driver's become ``DqliteError`` subclasses (``PydsqliteError``s); a connection
  lost mid-call (the leader went away) becomes ``ConnectionLostError`` saying what happened
  to the open transaction.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..errors import ConnectionLostError, EngineError, UsageError
from .base import Cursor, Engine

logger = logging.getLogger(__name__)

MAX_PARAMETERS = 255
"""Bound parameters one statement may carry on dqlite 1.11 (its wire format counts them in one byte)."""

_NOT_AN_ERROR = "not an error"
_NESTED_BEGIN = "within a transaction"
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_KEYWORD = re.compile(r"\s*(\w+)")
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"})
_COMMITS = frozenset({"COMMIT", "END"})
_WRITES_NOTHING = frozenset({"SELECT", "BEGIN", "SAVEPOINT"})
"""Statements that write nothing: lost outside a transaction, nothing was applied (``BEGIN`` opens it)."""
_COMMIT_CUT_BY_LEADER_CHANGE = "no more rows available"
"""What dqlite 1.11 answers a COMMIT that a leadership transfer cut (the connection then answers "not leader")."""
_UNBINDABLE = re.compile(r"out of range for int64|cannot be encoded as UTF-8")
"""The client's refusals to encode an integer beyond 64 bits or text with a lone surrogate."""
_BOOLEAN_WORDS = {"on": 1, "yes": 1, "true": 1, "off": 0, "no": 0, "false": 0}

_prepared: weakref.WeakSet[Any] = weakref.WeakSet()
"""Connections that already have ``cache_spill`` off (a pragma lasts as long as its connection)."""


class DqliteError(EngineError):
    """An error the dqlite server or its client reported (message without the client's address suffix)."""


class DqliteIntegrityError(DqliteError):
    """dqlite refused a write under a constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY)."""


class DqliteOperationalError(DqliteError):
    """Any other error dqlite reported: a missing table or column, a busy database, a refused statement."""


class _NoRows:
    """The cursor of a pragma write the server acknowledged with "not an error"."""

    rowcount = -1
    lastrowid = None
    description = None

    def fetchone(self) -> Any:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def fetchmany(self, size: int = 1) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


class DqliteEngine(Engine):
    """A ``dqlitedbapi`` connection to a dqlite cluster."""

    name = "dqlite"
    Error = DqliteError
    IntegrityError = DqliteIntegrityError
    OperationalError = DqliteOperationalError
    max_parameters = MAX_PARAMETERS
    supports_functions = False
    batch_rows = True

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        import dqlitedbapi  # pyright: ignore[reportMissingImports]  (optional: the dqlite extra)

        self._driver = dqlitedbapi

    # --- statements ----------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._check_parameters(sql, len(params))
        self._prepare()
        if _RETURNING.search(sql) and _keyword(sql) in _WRITES and not self.in_transaction:
            with self.unit(immediate=True):
                return self._send(sql, params)
        return self._send(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        rows = list(rows)
        if rows:
            self._check_parameters(sql, len(rows[0]))
        self._prepare()
        return self._call(sql, lambda: self.connection.executemany(sql, rows))

    def _send(self, sql: str, params: Sequence[Any]) -> Cursor:
        return self._call(sql, lambda: self.connection.execute(sql, params))

    def _call(self, sql: str, run: Callable[[], Cursor]) -> Cursor:
        was_in_transaction = self.connection.in_transaction
        try:
            return run()
        except self._driver.Error as error:
            if _keyword(sql) == "PRAGMA" and _server_message(error) == _NOT_AN_ERROR:
                return _NoRows()
            if isinstance(error, self._driver.DataError) and _UNBINDABLE.search(str(error)):
                # what sqlite3 refuses to bind with these errors too: the rows API then names the value
                raise OverflowError(f"dqlite cannot bind a parameter: {error}") from error
            raise self._translate(error, sql, was_in_transaction) from error

    def _check_parameters(self, sql: str, count: int) -> None:
        if count > MAX_PARAMETERS:
            raise UsageError(
                f"dqlite binds at most {MAX_PARAMETERS} parameters per statement and this one has {count} "
                f"(more would be bound as NULLs or refused): {_shorten(sql)}"
            )

    def _prepare(self) -> None:
        """Once per connection: ``cache_spill`` off (see the module's notes)."""
        if self.connection in _prepared:
            return
        _prepared.add(self.connection)
        try:
            self.set_pragma("cache_spill", "OFF")
        except BaseException:
            _prepared.discard(self.connection)
            raise

    # --- transactions --------------------------------------------------------------------------

    @property
    def connection_lost(self) -> bool:
        return bool(getattr(self.connection, "invalidated", False))

    @property
    def closed(self) -> bool:
        return bool(self.connection.closed)

    @property
    def in_transaction(self) -> bool:
        connection = self.connection
        if connection.closed or not connection.in_transaction:
            return False
        if self._depth:
            return True
        return self._transaction_open()

    def begin_statement(self, *, immediate: bool = False) -> str:
        """Always ``BEGIN IMMEDIATE``: the client turns a bare ``BEGIN`` into whatever its session mode
        says (``deferred`` too), and a deferred transaction that reads first loses its write to another
        connection's write in between ("database is locked")."""
        return "BEGIN IMMEDIATE"

    def _transaction_open(self) -> bool:
        """Ask the server: a ``BEGIN`` it refuses means a transaction is open; one it takes is undone."""
        try:
            self.connection.execute("BEGIN DEFERRED")
        except self._driver.Error as error:
            if _NESTED_BEGIN in _server_message(error):
                return True
            raise self._translate(error, "BEGIN DEFERRED", True) from error
        self._send("ROLLBACK", ())
        return False

    # --- pragmas -------------------------------------------------------------------------------

    def set_pragma(self, name: str, value: int | str) -> None:
        """Send the pragma write (the server's "not an error" counts as success), then read it back."""
        self.execute(f"PRAGMA {name} = {value}")
        actual = self.pragma(name)
        if _pragma_value(actual) != _pragma_value(value):
            raise DqliteOperationalError(f"PRAGMA {name} = {value} did not take effect on the dqlite connection: it reads {actual!r}")

    # --- functions -----------------------------------------------------------------------------

    def create_function(self, name: str, arity: int, function: Callable[..., Any], *, deterministic: bool = False) -> None:
        raise UsageError(f"dqlite cannot run SQL functions written in Python ({name}); pydsqlite takes routes without them there")

    # --- errors --------------------------------------------------------------------------------

    def _translate(self, error: Exception, sql: str, was_in_transaction: bool) -> EngineError:
        """The driver's error as ours. A lost connection says what became of the open transaction."""
        message = _server_message(error)
        code = getattr(error, "code", None)
        keyword = _keyword(sql)
        if keyword in _COMMITS and message == _COMMIT_CUT_BY_LEADER_CHANGE:
            return ConnectionLostError(
                f"the dqlite leader changed while COMMIT was being applied ({message}): it may have been applied on the "
                "new leader or not at all. Open a new connection (pydsqlite.connect_dqlite finds the new leader) and "
                "check before repeating a write that is not idempotent",
                outcome_known=False,
            )
        if isinstance(error, self._driver.AmbiguousCommitError) or getattr(self.connection, "invalidated", False):
            commits = keyword in _COMMITS or (keyword == "RELEASE" and not self._depth)  # a unit's RELEASE ends no transaction
            if isinstance(error, self._driver.AmbiguousCommitError) or commits or (not was_in_transaction and keyword not in _WRITES_NOTHING):
                return ConnectionLostError(
                    f"the connection to the dqlite cluster was lost while {keyword or 'a statement'} was being applied "
                    f"({message}): it was applied whole or not at all. Open a new connection and check before "
                    "repeating a write that is not idempotent",
                    outcome_known=False,
                )
            if not was_in_transaction:
                return ConnectionLostError(
                    f"the connection to the dqlite cluster was lost before {keyword} ({message}): no transaction was open "
                    "and it writes nothing, so nothing was applied. Open a new connection (pydsqlite.connect_dqlite "
                    "finds the new leader); a retry is safe"
                )
            return ConnectionLostError(
                f"the connection to the dqlite cluster was lost ({message}): the cluster rolled back the open "
                "transaction, so nothing of it was applied. Open a new connection (pydsqlite.connect_dqlite "
                "finds the new leader); a retry is safe"
            )
        if isinstance(error, self._driver.IntegrityError):
            return DqliteIntegrityError(message, code)
        return DqliteOperationalError(message, code)


def _server_message(error: Exception) -> str:
    """The server's own text, without the " to ADDRESS" the client appends to it."""
    return getattr(error, "raw_message", None) or str(error)


def _keyword(sql: str) -> str:
    match = _KEYWORD.match(sql)
    return match.group(1).upper() if match else ""


def _pragma_value(value: object) -> object:
    """A pragma value as SQLite reads it back: ON/OFF words as 1/0, numbers as integers, words folded."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[text]
        try:
            return int(text)
        except ValueError:
            return text
    return value


def _shorten(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 120 else text[:117] + "..."


def connect_dqlite(addresses: str | Sequence[str], database: str, *, wait: float = 30.0, **options: Any) -> Any:
    """A ``dqlitedbapi`` connection to the cluster, through the first of ``addresses`` that answers.

    The client takes one seed address and fails when that node is down; this tries each
    (``"host:port"``, a list or a comma-separated string) until one opens a session, so a
    dead node does not stop an application from starting. While none answers it tries again
    for up to ``wait`` seconds: dqlite's election timeout is 3 s, randomised up to 6 s, so a
    failover takes one or two rounds of that (more after a split vote or on a loaded machine).
    ``options`` go to ``dqlitedbapi.connect`` (``timeout=``, …). Raises ``ConnectionLostError``
    naming every address and its error when none answered in time.

    Examples:
        >>> from pydsqlite import UsageError, connect_dqlite
        >>> try:
        ...     connect_dqlite([], "app")
        ... except UsageError as error:
        ...     print(error)
        connect_dqlite() needs at least one node address ('host:port')
    """
    seeds = [part.strip() for part in addresses.split(",")] if isinstance(addresses, str) else list(addresses)
    seeds = [seed for seed in seeds if seed]
    if not seeds:
        raise UsageError("connect_dqlite() needs at least one node address ('host:port')")
    try:
        import dqlitedbapi  # pyright: ignore[reportMissingImports]  (optional: the dqlite extra)
    except ImportError as error:
        raise ImportError("connect_dqlite() needs the dqlite client: pip install 'pydsqlite[dqlite]' (Python 3.13+)") from error
    deadline = time.monotonic() + wait
    while True:
        failures = []
        for seed in seeds:
            try:
                connection = dqlitedbapi.connect(seed, database=database, **options)
            except dqlitedbapi.ProgrammingError as error:  # a malformed address or option: waiting will not help
                raise UsageError(f"connect_dqlite() cannot use {seed!r} with these options: {_server_message(error)}") from error
            try:
                connection.connect()
            except dqlitedbapi.Error as error:
                failures.append(f"{seed}: {_server_message(error)}")
                connection.close()
                logger.info("dqlite node %s did not answer (%s)", seed, error)
                continue
            return connection
        if time.monotonic() >= deadline:
            raise ConnectionLostError("no dqlite node answered: " + "; ".join(failures), outcome_known=True)
        time.sleep(0.25)
