"""How pydsqlite drives a connection: statements, transactions, pragmas and errors, per driver.

``engine_for`` is the one place that looks at what kind of connection it was given.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..errors import UsageError
from .base import Cursor, Engine
from .sqlite import SqliteEngine

__all__ = ["Cursor", "Engine", "SqliteEngine", "engine_for", "is_connection"]


def is_connection(value: Any) -> bool:
    """Whether ``value`` is a connection (or engine) pydsqlite can drive."""
    return isinstance(value, (Engine, sqlite3.Connection))


def engine_for(connection: Any) -> Engine:
    """The engine that drives ``connection`` (an engine is returned as it is)."""
    if isinstance(connection, Engine):
        return connection
    if isinstance(connection, sqlite3.Connection):
        return SqliteEngine(connection)
    raise UsageError(f"pydsqlite cannot drive a {type(connection).__module__}.{type(connection).__name__}; pass a sqlite3.Connection")
