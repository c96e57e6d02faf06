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
