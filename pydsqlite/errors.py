"""The exception hierarchy: every error pydsqlite raises derives from PydsqliteError."""

from __future__ import annotations


class PydsqliteError(Exception):
    """Base class of every error raised by pydsqlite."""


class SchemaDefinitionError(PydsqliteError, TypeError):
    """A model declares something pydsqlite cannot store; raised before any database is touched."""

    def __init__(self, model: str, field: str | None, message: str) -> None:
        self.model = model
        self.field = field
        where = f"{model}.{field}" if field else model
        super().__init__(f"{where}: {message}")


class MigrationError(PydsqliteError):
    """A migration cannot be applied; the database is left exactly as it was."""


class DestructiveChangeError(MigrationError):
    """The plan would lose data and the caller did not pass ``allow_destructive=True``.

    ``operations`` holds the refused plan operations (each with its row count).
    """

    def __init__(self, message: str, operations: tuple[object, ...] = ()) -> None:
        self.operations = operations
        super().__init__(message)


class RowValidationError(PydsqliteError):
    """A row read from the database does not validate against its model.

    Names the table, the row's primary key, the offending column(s) and carries the
    Pydantic error as ``validation_error``.
    """

    def __init__(self, table: str, key: object, columns: list[str], validation_error: Exception) -> None:
        self.table = table
        self.key = key
        self.columns = columns
        self.validation_error = validation_error
        super().__init__(
            f"row {key!r} of table {table!r} does not validate (column {', '.join(columns) or '?'}): {validation_error}"
        )


class ConstraintError(PydsqliteError):
    """SQLite refused a write (UNIQUE, NOT NULL, CHECK, FOREIGN KEY); the write was rolled back."""

    def __init__(self, table: str, constraint: str, message: str) -> None:
        self.table = table
        self.constraint = constraint
        super().__init__(message)


class RowNotFoundError(PydsqliteError, LookupError):
    """An update or delete named a primary key that has no row."""


class UsageError(PydsqliteError, TypeError):
    """A call got arguments pydsqlite cannot use (a model class where a list belongs, a model
    without a primary key, an unknown field, a key of the wrong arity, a key change on a
    synced table); raised before anything is written."""


class SchemaMismatchError(PydsqliteError):
    """The database lacks a table or column the call names: the model is ahead of the
    database (``sync_models`` has not run, or refused), or a condition or ``order_by``
    misspells a column. ``table`` and ``column`` (None for a missing table) say which."""

    def __init__(self, table: str, column: str | None, message: str) -> None:
        self.table = table
        self.column = column
        super().__init__(message)


class UnstorableValueError(PydsqliteError, ValueError):
    """A value SQLite cannot store exactly (an integer beyond 64 bits, text with a lone
    surrogate, NaN, a date-time whose offset JSON cannot carry); nothing was written.

    ``table``, ``field`` (None for a query parameter) and ``value`` say which.
    """

    def __init__(self, table: str, field: str | None, value: object, reason: str) -> None:
        self.table = table
        self.field = field
        self.value = value
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"{table}.{field}" if field else f"a query parameter of table {table!r}"
        super().__init__(f"{where}: {reason} (value {shown}); nothing was written")


class SyncError(PydsqliteError):
    """A changeset cannot be applied (unknown table or column, other schema, invalid value, a foreign key
    it cannot settle); nothing was applied."""


class EngineError(PydsqliteError):
    """The database engine refused a statement and no more precise error of ours describes it
    (a dqlite error that is not a constraint, a missing table or column, …). ``code`` is the
    engine's result code when it gave one; the message is the engine's."""

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class ConnectionLostError(EngineError):
    """The connection to the database was lost in the middle of a call (on dqlite: the leader
    went away). The database rolled back the transaction that was open, so nothing of it was
    applied, unless the connection was lost during its COMMIT: then ``outcome_known`` is False
    and it was applied whole or not at all. Open a new connection to continue."""

    def __init__(self, message: str, *, outcome_known: bool = True) -> None:
        self.outcome_known = outcome_known
        super().__init__(message)
