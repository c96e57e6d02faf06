"""Desired state written as SQL: load the DDL into an in-memory database and introspect it."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from .errors import SchemaDefinitionError
from .introspect import introspect
from .schema import Schema


def schema_from_sql(ddl: str) -> Schema:
    """The ``Schema`` that the DDL script ``ddl`` creates (tables, indexes, triggers, views)."""
    with closing(sqlite3.connect(":memory:")) as scratch:
        try:
            scratch.executescript(ddl)
        except sqlite3.Error as error:
            raise SchemaDefinitionError("SQL", None, f"the desired schema does not load: {error}") from error
        return introspect(scratch)
