"""The preview finds everything the sync would fail on, and says it in the user's terms."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    Collate,
    ForeignKey,
    Index,
    MigrationError,
    PrimaryKey,
    RenamedFrom,
    SchemaDefinitionError,
    SyncModel,
    Unique,
    model_migration_plan,
    schema_from_sql,
    sync_models,
)
from pydsqlite.migrate.sync import apply_schema, preview_schema


def test_field_names_that_differ_only_in_case_are_refused_at_declaration():
    model = type(SyncModel)("Cased", (SyncModel,), {"__annotations__": {"id": int, "Name": str, "name": str}}, table="cased")
    with pytest.raises(SchemaDefinitionError, match=r"Cased\.name: column names are case-insensitive.*'Name'"):
        sync_models(sqlite3.connect(":memory:"), [model])


class Users(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    email: str


def users(conn: sqlite3.Connection, emails: list[str]) -> sqlite3.Connection:
    sync_models(conn, [Users])
    conn.executemany("INSERT INTO users VALUES (?, ?)", list(enumerate(emails)))
    conn.commit()
    return conn


class UniqueNocase(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    email: Annotated[str, Unique(), Collate("NOCASE")]


class UniqueCaseSensitive(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    email: Annotated[str, Unique()]


@pytest.mark.parametrize(
    ("emails", "model", "blocked"),
    [
        (["a@x", "A@X"], UniqueNocase, True),  # a new NOCASE collation: case-duplicates collide
        (["a@x", "A@X"], UniqueCaseSensitive, False),
        (["a@x", "a@x"], UniqueCaseSensitive, True),
        (["a@x", "b@x"], UniqueNocase, False),
    ],
)
def test_new_unique_constraints_are_checked_under_the_collation_they_will_use(db_path, emails, model, blocked):
    conn = users(sqlite3.connect(db_path), emails)
    before = db_path.read_bytes()
    plan = model_migration_plan(conn, [model])
    assert bool(plan.problems) is blocked, plan
    if blocked:
        assert "users.email: 2 rows: rows share a value" in plan.problems[0]
        with pytest.raises(MigrationError, match=r"users\.email: 2 rows"):
            sync_models(conn, [model])
        assert db_path.read_bytes() == before
    else:
        sync_models(conn, [model])
    conn.close()


def test_a_unique_index_on_an_existing_nocase_column_compares_under_nocase(memory_conn):
    class Nocase(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        email: Annotated[str, Collate("NOCASE")]

    sync_models(memory_conn, [Nocase])
    memory_conn.executemany("INSERT INTO users VALUES (?, ?)", [(1, "a@x"), (2, "A@X")])
    plan = model_migration_plan(memory_conn, [UniqueNocase])
    assert [op.kind for op in plan.operations] == ["create_index"] and plan.problems


@pytest.mark.parametrize(
    ("index", "rows", "blocked"),
    [
        ("CREATE UNIQUE INDEX u ON t (lower(name))", [("Ann",), ("ann",)], True),
        ("CREATE UNIQUE INDEX u ON t (name COLLATE NOCASE DESC)", [("Ann",), ("ann",)], True),
        ("CREATE UNIQUE INDEX u ON t (name) WHERE active", [("ann", 0), ("ann", 0), ("bob", 1)], False),
        ("CREATE UNIQUE INDEX u ON t (name) WHERE active", [("ann", 1), ("ann", 1)], True),
        ("CREATE UNIQUE INDEX u ON t (name, active)", [("ann", None), ("ann", None)], False),  # NULLs never collide
    ],
)
def test_expression_collated_and_partial_unique_indexes_count_exactly_what_sqlite_would_refuse(memory_conn, index, rows, blocked):
    memory_conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, active INTEGER)")
    memory_conn.executemany("INSERT INTO t (name, active) VALUES (?, ?)", [(*row, 1)[:2] for row in rows])
    desired = schema_from_sql(f"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, active INTEGER); {index};")
    plan = preview_schema(memory_conn, desired)
    assert bool(plan.problems) is blocked, plan
    if not blocked:
        apply_schema(memory_conn, desired)


@pytest.mark.parametrize(("default", "blocked"), [("'same'", True), (None, False)])
def test_a_unique_index_on_a_new_column_counts_the_values_the_column_will_get(memory_conn, default, blocked):
    memory_conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    memory_conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    column = f"code TEXT DEFAULT {default}" if default else "code TEXT"
    desired = schema_from_sql(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {column}); CREATE UNIQUE INDEX t_code ON t (code);")
    plan = preview_schema(memory_conn, desired)
    assert bool(plan.problems) is blocked, plan
    if blocked:
        assert "t.code: 2 rows" in plan.problems[0] and "'same'" in plan.problems[0]


def test_renaming_a_column_that_has_a_foreign_key_is_not_a_new_key(memory_conn):
    class Parent(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]

    class Child(SyncModel, table="children"):
        id: Annotated[int, PrimaryKey()]
        parent: Annotated[Optional[int], ForeignKey("parents.id")] = None
        note: str = ""

    class ChildV2(SyncModel, table="children"):  # the key column is renamed, and the table rebuilt
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id"), RenamedFrom("parent")] = None
        note: Optional[str] = None

    sync_models(memory_conn, [Parent, Child])
    memory_conn.execute("INSERT INTO children VALUES (1, 99, 'orphan from before')")
    memory_conn.commit()
    memory_conn.execute("PRAGMA foreign_keys = ON")
    plan = sync_models(memory_conn, [Parent, ChildV2])
    assert plan.rebuilt_tables == ("children",)
    assert memory_conn.execute("SELECT * FROM children").fetchall() == [(1, 99, "orphan from before")]


def test_a_plan_lists_each_change_once_and_counts_in_words(memory_conn):
    class One(SyncModel, table="one"):
        id: Annotated[int, PrimaryKey()]

    assert "create table one (1 column)" in str(model_migration_plan(memory_conn, [One]))
    sync_models(memory_conn, [Users])

    class UsersV2(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        mail: Annotated[Optional[str], RenamedFrom("email")] = None

    text = str(model_migration_plan(memory_conn, [UsersV2]))
    assert text.count("rename column") == 1, text
    assert "rebuild table users: alter column mail" in text


def test_indexes_keyword_and_unique_marker_on_the_same_columns_are_one_index(memory_conn):
    class Twice(SyncModel, table="twice", indexes=[Index("email", unique=True, name="uq_twice_email")]):
        id: Annotated[int, PrimaryKey()]
        email: Annotated[str, Unique()]

    plan = sync_models(memory_conn, [Twice])
    assert plan.sql.count("CREATE UNIQUE INDEX") == 1


def test_a_rebuild_keeps_the_live_column_order_and_appends_new_columns(memory_conn):
    memory_conn.execute("CREATE TABLE t (b TEXT, id INTEGER PRIMARY KEY, a INTEGER)")
    memory_conn.execute("INSERT INTO t VALUES ('x', 1, 5)")

    class T(SyncModel, table="t"):  # another field order, a type change (rebuild) and a new column
        id: Annotated[int, PrimaryKey()]
        a: Optional[str] = None
        b: Optional[str] = None
        c: int = 0

    assert sync_models(memory_conn, [T]).rebuilt_tables == ("t",)
    assert [row[1] for row in memory_conn.execute("PRAGMA table_info(t)")] == ["b", "id", "a", "c"]
    memory_conn.execute("INSERT INTO t VALUES ('y', 2, '6', 7)")  # positional SQL of yours keeps working
    assert memory_conn.execute("SELECT * FROM t ORDER BY id").fetchall() == [("x", 1, "5", 0), ("y", 2, "6", 7)]
    assert model_migration_plan(memory_conn, [T]).is_empty


def test_defaults_computed_at_import_time_never_cause_a_migration(memory_conn):
    import datetime as dt
    import uuid

    from pydsqlite.migrate.sync import preview_schema
    from pydsqlite.schema.compile import compile_models

    def declare(moment: dt.datetime):
        return type(SyncModel)(
            "Stamped", (SyncModel,),
            {
                "__annotations__": {"id": int, "created": dt.datetime, "day": dt.date, "token": uuid.UUID, "n": int},
                "created": moment, "day": moment.date(), "token": uuid.uuid4(), "n": 1,
            },
            table="stamped",
        )

    first = declare(dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.timezone.utc))
    sync_models(memory_conn, [first])
    memory_conn.execute("INSERT INTO stamped (id) VALUES (1)")  # raw SQL still gets the defaults
    assert memory_conn.execute("SELECT created FROM stamped").fetchone() == ("2026-01-01T09:00:00.000000+00:00",)
    second = declare(dt.datetime(2026, 1, 2, 9, 30, tzinfo=dt.timezone.utc))  # the next start: other values
    assert sync_models(memory_conn, [second]).is_empty
    assert preview_schema(memory_conn, compile_models([second])).is_empty  # the full plan agrees (no fast path)

    changed = type(SyncModel)(  # a constant default that changes is still migrated
        "Stamped", (SyncModel,),
        {"__annotations__": {"id": int, "created": dt.datetime, "day": dt.date, "token": uuid.UUID, "n": int}, "n": 2},
        table="stamped",
    )

    assert [op.kind for op in model_migration_plan(memory_conn, [changed]).operations] == ["rebuild_table"]
