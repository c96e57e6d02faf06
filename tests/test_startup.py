"""Start-up fast path: an unchanged database is recognised without introspection."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import Index, PrimaryKey, SyncModel, model_migration_plan, sync_models

from .helpers import index_names


class Note(SyncModel, table="notes", indexes=[Index("title")]):
    id: Annotated[int, PrimaryKey()]
    title: str
    body: Optional[str] = None


def traced(conn: sqlite3.Connection, action) -> list[str]:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    return statements


def test_a_second_sync_skips_introspection_and_takes_no_lock(conn):
    sync_models(conn, [Note])
    statements = traced(conn, lambda: sync_models(conn, [Note]))
    assert statements and not any("pragma_table_xinfo" in s or "BEGIN" in s.upper() for s in statements)
    statements = traced(conn, lambda: model_migration_plan(conn, [Note]))
    assert not any("pragma_table_xinfo" in s for s in statements)


def test_a_schema_changed_by_hand_is_noticed(conn):
    sync_models(conn, [Note])
    conn.execute("DROP INDEX ix_notes_title")
    plan = model_migration_plan(conn, [Note])
    assert [op.kind for op in plan.operations] == ["create_index"]
    sync_models(conn, [Note])
    assert index_names(conn, "notes") == {"ix_notes_title"}


def test_a_schema_migrated_by_another_app_version_is_noticed(db_path):
    first = sqlite3.connect(db_path)
    sync_models(first, [Note])

    class NoteV2(SyncModel, table="notes", indexes=[Index("title")]):
        id: Annotated[int, PrimaryKey()]
        title: str
        body: Optional[str] = None
        pinned: bool = False

    other = sqlite3.connect(db_path)
    sync_models(other, [NoteV2])
    other.close()
    plan = model_migration_plan(first, [Note])
    assert [op.kind for op in plan.operations] == ["drop_column"]
    first.close()


def test_unrelated_hand_made_tables_cost_one_full_plan_then_the_fast_path_again(conn):
    sync_models(conn, [Note])
    conn.execute("CREATE TABLE scratch (x)")
    statements = traced(conn, lambda: sync_models(conn, [Note]))
    assert any("FROM main.sqlite_master ORDER BY rowid" in s for s in statements)  # the live schema read again
    statements = traced(conn, lambda: sync_models(conn, [Note]))
    assert not any("sqlite_master" in s for s in statements)


def test_a_cold_plan_reads_each_table_with_a_fixed_number_of_queries(conn):
    from typing import Any

    from pydsqlite.migrate.sync import preview_schema
    from pydsqlite.schema.compile import compile_models

    def models(count: int) -> list[type[SyncModel]]:  # tables of their own for each size: none read before
        made = []
        for number in range(count):
            namespace: dict[str, Any] = {"__annotations__": {"id": Annotated[int, PrimaryKey()], "a": str, "b": Optional[int]}, "b": None}
            table = f"cold_{count}_{number}"
            made.append(type(SyncModel)(f"Cold{number}", (SyncModel,), namespace, table=table, indexes=[Index("a"), Index("a", "b")]))
        return made

    counts = {}
    declared: list[type[SyncModel]] = []
    for size in (10, 40):
        declared += models(size)  # the tables of the first size stay declared (and were read before)
        sync_models(conn, declared)
        desired = compile_models(declared)
        statements = traced(conn, lambda desired=desired: preview_schema(conn, desired))  # fast path off: full introspection
        counts[size] = len([s for s in statements if not s.startswith("--")])  # "--" lines are SQLite's own sub-steps
    per_table = (counts[40] - counts[10]) / 30
    assert per_table == 5  # table_xinfo, index_list, index_xinfo for each of the 2 indexes, foreign_key_list
    assert counts[10] - 10 * per_table <= 10  # plus a few fixed reads
    again = traced(conn, lambda: preview_schema(conn, desired))  # every table as read before: no PRAGMA reads them again
    assert not any("pragma_table_xinfo" in s or "pragma_index_list" in s for s in again)


def test_a_no_op_on_a_connection_with_its_own_factories_leaves_them_and_answers_empty(conn):
    sync_models(conn, [Note])
    conn.row_factory = sqlite3.Row
    conn.text_factory = bytes
    plan = sync_models(conn, [Note])
    assert plan.is_empty and plan.checked
    assert conn.row_factory is sqlite3.Row and conn.text_factory is bytes
    assert conn.execute("SELECT 'x' AS v").fetchone()["v"] == b"x"


def test_a_no_op_while_another_connection_holds_an_exclusive_lock_waits_for_it(db_path):
    import threading
    import time

    first = sqlite3.connect(db_path)
    sync_models(first, [Note])
    first.close()
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # readers are refused until it ends
    release = threading.Timer(0.4, lambda: holder.execute("COMMIT"))
    release.start()
    conn = sqlite3.connect(db_path, timeout=0.05)
    try:
        started = time.monotonic()
        plan = sync_models(conn, [Note], busy_timeout=10)
        assert plan.is_empty and time.monotonic() - started >= 0.3  # waited for the lock, was not refused
        assert not conn.in_transaction
    finally:
        release.join()
        conn.close()
        holder.close()


def test_a_no_op_on_a_closed_connection_is_our_error(conn):
    from pydsqlite import PydsqliteError

    sync_models(conn, [Note])
    conn.close()
    with pytest.raises(PydsqliteError, match="closed"):
        sync_models(conn, [Note])


def test_a_changed_pydsqlite_source_file_plans_once_then_the_fast_path_again(conn, monkeypatch):
    """An upgrade (or an edited checkout) may plan differently: the first sync after it plans in full."""
    import os

    import pydsqlite.migrate.diff as diff_module
    from pydsqlite.schema import declaration

    sync_models(conn, [Note])
    source = diff_module.__file__
    status = os.stat(source)
    for cache in ("_environment_digest", "_last"):  # as in a new process
        monkeypatch.setattr(declaration, cache, [])
    monkeypatch.setattr(declaration, "_keys", {})
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    try:
        statements = traced(conn, lambda: sync_models(conn, [Note]))
        assert any("FROM main.sqlite_master ORDER BY rowid" in s for s in statements)  # planned
        statements = traced(conn, lambda: sync_models(conn, [Note]))
        assert not any("sqlite_master" in s for s in statements)
    finally:
        os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns))
