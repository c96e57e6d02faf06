"""Small readers of the live schema used by the assertions of several test modules."""

from __future__ import annotations

import importlib
import os
import sqlite3
from types import ModuleType

import pytest


def table_sql(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row[0] if row else None


def columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[str, bool, str | None]]:
    """name → (declared type, not null, default) of a live table."""
    return {
        row[1]: (row[2], bool(row[3]), row[4])
        for row in conn.execute("SELECT * FROM pragma_table_xinfo(?)", (table,)).fetchall()
    }


def index_names(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute("SELECT * FROM pragma_index_list(?)", (table,)).fetchall() if row[3] == "c"}


def require(module: str) -> ModuleType:
    """An optional test dependency: skipped on a developer's machine without it, but a failure
    in CI (``CI`` set), where the README's test command installs every extra the tests use."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test,fastapi,aio]')")
