"""How pydsqlite drives a connection: statements, transactions, pragmas and errors, per driver.

``engine_for`` is the one place that looks at what kind of connection it was given. The
dqlite engine (and its client, ``dqlitedbapi``) is imported only for a connection of that client.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..errors import UsageError
from .base import Cursor, Engine
from .sqlite import SqliteEngine, refuse_converted_values

__all__ = ["Cursor", "Engine", "SqliteEngine", "engine_for", "is_connection"]

_DQLITE_MODULE = "dqlitedbapi"


def _is_dqlite(value: Any) -> bool:
    """A connection of the ``dqlitedbapi`` client, recognised without importing it."""
    return type(value).__name__ == "Connection" and type(value).__module__.split(".")[0] == _DQLITE_MODULE


def is_connection(value: Any) -> bool:
    """Whether ``value`` is a connection (or engine) pydsqlite can drive (an aiosqlite one from ``pydsqlite.aio``)."""
    return isinstance(value, (Engine, sqlite3.Connection)) or _is_dqlite(value) or _is_aiosqlite(value)


def _is_aiosqlite(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "aiosqlite"


def engine_for(connection: Any) -> Engine:
    """The engine that drives ``connection`` (an engine is returned as it is)."""
    if isinstance(connection, Engine):
        return connection
    if isinstance(connection, sqlite3.Connection):
        engine = SqliteEngine(connection)
        refuse_converted_values(engine)
        return engine
    if _is_dqlite(connection):
        from .dqlite import DqliteEngine

        return DqliteEngine(connection)
    if _is_aiosqlite(connection):
        raise UsageError("an aiosqlite connection is driven from async code: use pydsqlite.aio (AsyncDatabase, await aio.sync_models(conn, ...))")
    raise UsageError(
        f"pydsqlite cannot drive a {type(connection).__module__}.{type(connection).__name__}; "
        "pass a sqlite3.Connection or a dqlitedbapi connection"
    )
