"""The exception hierarchy: every error pydsqlite raises derives from PydsqliteError."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .migrate.migration import MigrationPlan


class PydsqliteError(Exception):
    """Base class of every error raised by pydsqlite: catch it to handle them all.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import PydsqliteError, sync_models
        >>> try:
        ...     sync_models(sqlite3.connect(":memory:"), "users")
        ... except PydsqliteError as error:
        ...     print(type(error).__name__)
        UsageError
    """


class SchemaDefinitionError(PydsqliteError, TypeError):
    """A model declares something pydsqlite cannot store; raised before any database is touched.

    ``model`` and ``field`` (None for the whole model) say where.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import SchemaDefinitionError, SyncModel, sync_models
        >>> class Reading(SyncModel, table="readings"):
        ...     value: complex
        >>> try:
        ...     sync_models(sqlite3.connect(":memory:"), [Reading])
        ... except SchemaDefinitionError as error:
        ...     print(error.model, error.field)
        Reading value
    """

    def __init__(self, model: str, field: str | None, message: str) -> None:
        self.model = model
        self.field = field
        where = f"{model}.{field}" if field else model
        super().__init__(f"{where}: {message}")


class MigrationError(PydsqliteError):
    """A migration cannot be applied; the database is left exactly as it was.

    The message lists every reason, each naming table, column, row count and a sample.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import MigrationError, SyncModel, Unique, sync_models
        >>> class Account(SyncModel, table="accounts"):
        ...     email: str
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Account])
        >>> _ = conn.executemany("INSERT INTO accounts VALUES (?)", [("a@example.com",), ("a@example.com",)])
        >>> class Account(SyncModel, table="accounts"):
        ...     email: Annotated[str, Unique()]
        >>> try:
        ...     sync_models(conn, [Account])
        ... except MigrationError as error:
        ...     print(error)
        the migration cannot be applied; nothing was changed:
          - accounts.email: 2 rows: rows share a value that unique index uq_accounts_email requires to be unique (e.g. 'a@example.com')
    """


class DestructiveChangeError(MigrationError):
    """The plan would lose data and the caller did not pass ``allow_destructive=True``.

    ``operations`` holds the refused plan operations (each with its row count); nothing
    was changed.

    Examples:
        >>> import sqlite3
        >>> from typing import Optional
        >>> from pydsqlite import DestructiveChangeError, SyncModel, sync_models
        >>> class Person(SyncModel, table="people"):
        ...     name: str
        ...     nickname: Optional[str] = None
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Person])
        >>> _ = conn.execute("INSERT INTO people VALUES ('Ann', 'Annie')")
        >>> class Person(SyncModel, table="people"):
        ...     name: str
        >>> try:
        ...     sync_models(conn, [Person])
        ... except DestructiveChangeError as error:
        ...     print([(operation.description, operation.row_count) for operation in error.operations])
        [('drop column people.nickname', 1)]
        >>> print(sync_models(conn, [Person], allow_destructive=True))
        Migration plan (1 operation):
          1. DESTRUCTIVE drop column people.nickname [1 row]
            ! people.nickname: 1 row: values would be deleted with the column
    """

    def __init__(self, message: str, operations: tuple[object, ...] = ()) -> None:
        self.operations = operations
        super().__init__(message)


class PlanChangedError(MigrationError):
    """``sync_models(..., expected_plan=plan)`` found another plan to apply than the one previewed
    (the database changed in between: rows that a step would lose, a column another process
    added); nothing was changed. ``plan`` holds the plan the database needs now: show it and ask again.

    Examples:
        >>> import sqlite3
        >>> from typing import Optional
        >>> from pydsqlite import PlanChangedError, SyncModel, model_migration_plan, sync_models
        >>> class Item(SyncModel, table="items"):
        ...     name: str
        ...     price: Optional[float] = None
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Item])
        >>> class Item(SyncModel, table="items"):
        ...     name: str
        >>> shown = model_migration_plan(conn, [Item])  # approved: it loses no value
        >>> _ = conn.execute("INSERT INTO items VALUES ('lamp', 9.99)")  # meanwhile, another writer
        >>> try:
        ...     sync_models(conn, [Item], allow_destructive=True, expected_plan=shown)
        ... except PlanChangedError as error:
        ...     print(error.plan)
        Migration plan (1 operation):
          1. DESTRUCTIVE drop column items.price [1 row]
            ! items.price: 1 row: values would be deleted with the column
    """

    def __init__(self, message: str, plan: MigrationPlan) -> None:
        self.plan = plan
        super().__init__(message)

    def __reduce__(self) -> tuple[type[PlanChangedError], tuple[str, MigrationPlan]]:
        return (type(self), (str(self), self.plan))  # to a worker process and back, with its plan


class DataStepError(MigrationError):
    """A data step failed: it raised, or it ended the migration's transaction itself.

    ``step`` names it; the exception it raised is the ``__cause__``. A step that raised is
    rolled back with the whole migration, so schema and data are as they were.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import DataStepError, SyncModel, sync_models
        >>> class Order(SyncModel, table="orders"):
        ...     total: float
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Order])
        >>> class Order(SyncModel, table="orders"):
        ...     total: float
        ...     total_eur: float
        >>> def broken(db):
        ...     db.conn.execute("UPDATE orders SET total_eur = total")
        ...     raise ValueError("exchange rate missing")
        >>> try:
        ...     sync_models(conn, [Order], data_steps={"002_convert": broken})
        ... except DataStepError as error:
        ...     print(error.step, repr(error.__cause__))
        002_convert ValueError('exchange rate missing')
        >>> [row[1] for row in conn.execute("PRAGMA table_info(orders)")]  # rolled back
        ['total']
    """

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(message)


class RowValidationError(PydsqliteError):
    """A row read from the database does not validate against its model.

    Names the table, the row's primary key, the offending column(s) and carries the
    Pydantic error as ``validation_error``.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import Database, PrimaryKey, RowValidationError, SyncModel, sync_models
        >>> class Sensor(SyncModel, table="sensors"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     celsius: float
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Sensor])
        >>> _ = conn.execute("INSERT INTO sensors VALUES (1, 'warm')")  # written behind the model's back
        >>> try:
        ...     Database(conn).get(Sensor, 1)
        ... except RowValidationError as error:
        ...     print(error.table, error.key, error.columns)
        sensors 1 ['celsius']
    """

    def __init__(self, table: str, key: object, columns: list[str], validation_error: Exception, *, detail: str | None = None) -> None:
        self.table = table
        self.key = key
        self.columns = columns
        self.validation_error = validation_error
        row = f"row {key!r} of table {table!r}" if key is not None else f"a row of table {table!r} (which has no primary key)"
        what = f"column {', '.join(columns)}" if columns else "a model validator"
        super().__init__(f"{row} does not validate ({what}): {detail if detail is not None else validation_error}")


class ConstraintError(PydsqliteError):
    """SQLite refused a write (UNIQUE, NOT NULL, CHECK, FOREIGN KEY); the write was rolled back.

    ``table`` and ``constraint`` say which.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import ConstraintError, Database, SyncModel, Unique, sync_models
        >>> class Member(SyncModel, table="members"):
        ...     email: Annotated[str, Unique()]
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Member])
        >>> db = Database(conn)
        >>> _ = db.insert(Member(email="ann@example.com"))
        >>> try:
        ...     db.insert(Member(email="ann@example.com"))
        ... except ConstraintError as error:
        ...     print(error.table, "|", error.constraint)
        members | UNIQUE members.email
    """

    def __init__(self, table: str, constraint: str, message: str) -> None:
        self.table = table
        self.constraint = constraint
        super().__init__(message)


class RowNotFoundError(PydsqliteError, LookupError):
    """An update named a primary key that has no row; nothing was written.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import Database, PrimaryKey, RowNotFoundError, SyncModel, sync_models
        >>> class Task(SyncModel, table="tasks"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     done: bool = False
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Task])
        >>> try:
        ...     Database(conn).update(Task, 7, done=True)
        ... except RowNotFoundError as error:
        ...     print(error)
        no row with key 7 in table 'tasks'
    """


class UsageError(PydsqliteError, TypeError):
    """A call got arguments pydsqlite cannot use (a model class where a list belongs, a model
    without a primary key, an unknown field, a key of the wrong arity, a key change on a
    synced table), or came where it cannot run (from a second thread while another has a
    transaction open on the connection, inside a ``db.transaction()`` block whose transaction
    was ended inside it); raised before anything is written.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import SyncModel, UsageError, sync_models
        >>> class Label(SyncModel, table="labels"):
        ...     text: str
        >>> try:
        ...     sync_models(sqlite3.connect(":memory:"), Label)
        ... except UsageError as error:
        ...     print(error)
        models must be a list of table model classes, not the class Label; pass a list: [Label]
    """


class SchemaMismatchError(PydsqliteError):
    """The database lacks a table or column the call names: the model is ahead of the
    database (``sync_models`` has not run, or refused), or a condition or ``order_by``
    misspells a column. ``table`` and ``column`` (None for a missing table) say which.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import Database, SchemaMismatchError, SyncModel
        >>> class Invoice(SyncModel, table="invoices"):
        ...     amount: float
        >>> try:
        ...     Database(sqlite3.connect(":memory:")).select(Invoice)  # sync_models never ran
        ... except SchemaMismatchError as error:
        ...     print(error.table, error.column)
        invoices None
    """

    def __init__(self, table: str, column: str | None, message: str) -> None:
        self.table = table
        self.column = column
        super().__init__(message)


class UnstorableValueError(PydsqliteError, ValueError):
    """A value SQLite cannot store exactly (an integer beyond 64 bits, text with a lone
    surrogate, NaN, a time zone without a fixed offset on a time, a value a JSON column would
    give back changed, such as NaN or a date-time whose offset JSON cannot carry); nothing was
    written.

    ``model``, ``table``, ``field`` (None for a query parameter) and ``value`` say which.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import Database, SyncModel, UnstorableValueError, sync_models
        >>> class Counter(SyncModel, table="counters"):
        ...     value: int
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Counter])
        >>> try:
        ...     Database(conn).insert(Counter(value=2**64))
        ... except UnstorableValueError as error:
        ...     print(error.table, error.field, error.value == 2**64)
        counters value True
    """

    def __init__(self, table: str, field: str | None, value: object, reason: str, *, model: str | None = None) -> None:
        self.model = model
        self.table = table
        self.field = field
        self.value = value
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"{table}.{field}" if field else f"a query parameter of table {table!r}"
        held = f" in {model}.{field}" if model and field else ""
        super().__init__(f"{where}: {reason} (value {shown}{held}); nothing was written")


class SyncError(PydsqliteError):
    """A changeset cannot be applied (unknown table or column, other schema, invalid value, a foreign key
    it cannot settle); nothing was applied.

    When one row is to blame (a merged row the model refuses, a key validation would change),
    ``table`` and ``key`` name it, so an application can settle it (see "When a merged row does
    not validate" in the sync guide); otherwise they are None.

    Examples:
        >>> from pydsqlite import ChangeSet, SyncError
        >>> try:
        ...     ChangeSet.from_json('{"format": 1, "cursor": -1, "changes": []}')
        ... except SyncError as error:
        ...     print(error, error.table, error.key)
        malformed changeset JSON: cursor -1 is not a non-negative integer None None
    """

    def __init__(self, message: str, *, table: str | None = None, key: tuple[object, ...] | None = None) -> None:
        self.table = table
        self.key = key
        super().__init__(message)


class EngineError(PydsqliteError):
    """The database engine refused a statement and no more precise error of ours describes it
    (a dqlite error that is not a constraint, a missing table or column, …). ``code`` is the
    engine's result code when it gave one; the message is the engine's.

    Examples:
        >>> from pydsqlite import EngineError, PydsqliteError
        >>> error = EngineError("disk I/O error", code=10)
        >>> isinstance(error, PydsqliteError), error.code
        (True, 10)
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class SqliteOperationalError(EngineError, sqlite3.OperationalError):
    """What the ``sqlite3`` driver refused (``database is locked`` once the busy timeout ran out, a disk
    error) where no more precise error of ours describes it: an ``EngineError`` that is also the
    driver's ``sqlite3.OperationalError`` (with its ``sqlite_errorcode`` and ``sqlite_errorname``), so
    code written against the driver keeps working. ``code`` is SQLite's primary result code (5: busy).

    Examples:
        >>> import sqlite3
        >>> from pydsqlite.errors import SqliteOperationalError
        >>> error = SqliteOperationalError("database is locked", code=5)
        >>> isinstance(error, sqlite3.OperationalError), error.code
        (True, 5)
    """


class ConnectionLostError(EngineError):
    """The connection to the database was lost in the middle of a call (on dqlite: the leader
    went away). The database rolled back the transaction that was open, so nothing of it was
    applied, unless the connection was lost during its COMMIT: then ``outcome_known`` is False
    and it was applied whole or not at all. Open a new connection to continue.

    Examples:
        >>> from pydsqlite import ConnectionLostError
        >>> error = ConnectionLostError("the leader went away during COMMIT", outcome_known=False)
        >>> "retry" if error.outcome_known else "check whether it was applied, then retry"
        'check whether it was applied, then retry'
    """

    def __init__(self, message: str, *, outcome_known: bool = True) -> None:
        self.outcome_known = outcome_known
        super().__init__(message)
