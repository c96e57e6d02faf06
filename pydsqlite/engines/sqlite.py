"""How pydsqlite starts and ends transactions on a ``sqlite3.Connection`` in each of its modes.

Python's ``sqlite3`` has a legacy mode (``isolation_level`` decides which ``BEGIN`` it sends
before a data change; ``None`` sends none) and, from Python 3.12, ``autocommit=True`` (it
never opens transactions) and ``autocommit=False`` (PEP 249: a transaction is always open,
``commit()`` ends it and opens the next). Every other pydsqlite module asks here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

LEGACY_TRANSACTION_CONTROL = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
"""``conn.autocommit`` in legacy mode (the only mode before Python 3.12, which lacks the attribute)."""


def pep249_mode(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` was opened (or switched) with ``autocommit=False``: a transaction is always pending."""
    return getattr(conn, "autocommit", LEGACY_TRANSACTION_CONTROL) is False


def begin_statement(conn: sqlite3.Connection) -> str:
    """The ``BEGIN`` that opens a transaction of pydsqlite's own, as the connection asks for it:
    legacy mode's ``isolation_level`` ``"IMMEDIATE"`` or ``"EXCLUSIVE"`` takes that lock at once."""
    legacy = getattr(conn, "autocommit", LEGACY_TRANSACTION_CONTROL) == LEGACY_TRANSACTION_CONTROL
    level = conn.isolation_level if legacy else None
    return f"BEGIN {level}" if level else "BEGIN"


@contextmanager
def without_pending_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """In PEP 249 mode, commit the pending transaction (as ``conn.commit()`` would) and run the block
    with ``autocommit=True``, so it can send its own ``BEGIN``/``COMMIT`` and switch pragmas that
    only work outside a transaction; then switch back, which opens the next transaction as
    PEP 249 expects (also when the block fails). In every other mode, nothing changes."""
    if not pep249_mode(conn):
        yield
        return
    conn.autocommit = True
    try:
        yield
    finally:
        conn.autocommit = False
