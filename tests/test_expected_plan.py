"""``expected_plan``: a migration a person approved is applied only as approved. Planned again under
the write lock, a plan that reads otherwise (another process wrote rows a step would lose, added a
column, ran the migration) raises ``PlanChangedError`` carrying the new plan, and nothing changes."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    PlanChangedError,
    PrimaryKey,
    SyncModel,
    model_migration_plan,
    schema_from_sql,
    schema_migration_plan,
    sync_models,
    sync_schema,
)


class PricedV1(SyncModel, table="expected_priced"):
    id: Annotated[int, PrimaryKey()]
    name: str
    price: Optional[float] = None


class PricedV2(SyncModel, table="expected_priced"):
    id: Annotated[int, PrimaryKey()]
    name: str


def _fresh(path, journal: str = "delete") -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    sync_models(conn, [PricedV1])
    return conn


def _write_elsewhere(path, statement: str) -> None:
    other = sqlite3.connect(path)
    other.execute(statement)
    other.commit()
    other.close()


@pytest.mark.parametrize("online", [False, True])
def test_the_approved_plan_is_applied_when_the_database_did_not_change(tmp_path, online):
    conn = _fresh(tmp_path / "a.db", "wal" if online else "delete")
    conn.execute("INSERT INTO expected_priced (id, name) VALUES (1, 'pen')")
    conn.commit()
    shown = model_migration_plan(conn, [PricedV2], online=online)
    applied = sync_models(conn, [PricedV2], allow_destructive=True, online=online, expected_plan=shown)
    assert str(applied) == str(shown) and "price" not in [row[1] for row in conn.execute("PRAGMA table_info(expected_priced)")]


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize(
    ("meanwhile", "now"),
    [
        ("INSERT INTO expected_priced VALUES (1, 'pen', 9.99)", "DESTRUCTIVE drop column expected_priced.price [1 row]"),
        ("ALTER TABLE expected_priced ADD COLUMN note TEXT", "drop column expected_priced.note"),
    ],
    ids=["rows a step would lose", "a column another process added"],
)
def test_a_plan_that_changed_since_the_preview_is_refused_with_the_new_plan(tmp_path, online, meanwhile, now):
    path = tmp_path / "a.db"
    conn = _fresh(path, "wal" if online else "delete")
    shown = model_migration_plan(conn, [PricedV2], online=online)
    _write_elsewhere(path, meanwhile)
    before = list(conn.iterdump())
    with pytest.raises(PlanChangedError, match="the migration planned now is not the one previewed") as raised:
        sync_models(conn, [PricedV2], allow_destructive=True, online=online, expected_plan=shown)
    assert now in str(raised.value.plan) and now in str(raised.value)
    assert list(conn.iterdump()) == before
    assert str(sync_models(conn, [PricedV2], allow_destructive=True, online=online, expected_plan=raised.value.plan)) == str(raised.value.plan)


def test_a_migration_another_process_already_applied_changes_nothing(tmp_path):
    path = tmp_path / "a.db"
    conn = _fresh(path)
    shown = model_migration_plan(conn, [PricedV2])
    other = sqlite3.connect(path)
    sync_models(other, [PricedV2], allow_destructive=True)
    other.close()
    assert sync_models(conn, [PricedV2], allow_destructive=True, expected_plan=shown).is_empty


def test_sync_schema_and_data_step_plans_are_held_to_the_approved_plan_too(tmp_path):
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT, old TEXT)")
    conn.commit()
    desired = schema_from_sql("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    shown = schema_migration_plan(conn, desired)
    _write_elsewhere(path, "INSERT INTO kv VALUES ('a', 'b', 'kept')")
    with pytest.raises(PlanChangedError):
        sync_schema(conn, desired, allow_destructive=True, expected_plan=shown)
    assert conn.execute("SELECT old FROM kv").fetchall() == [("kept",)]

    class PricedV3(SyncModel, table="expected_priced_steps"):
        id: Annotated[int, PrimaryKey()]
        label: str = ""

    class PricedV4(SyncModel, table="expected_priced_steps"):
        id: Annotated[int, PrimaryKey()]
        label: str = ""
        slug: str

    sync_models(conn, [PricedV3])
    conn.execute("INSERT INTO expected_priced_steps VALUES (1, 'A B')")
    conn.commit()
    steps = {"001_slugs": lambda db: db.conn.execute("UPDATE expected_priced_steps SET slug = lower(label)")}
    shown = model_migration_plan(conn, [PricedV4], data_steps=steps)
    applied = sync_models(conn, [PricedV4], data_steps=steps, expected_plan=shown)
    assert applied.data_steps == ("001_slugs",) and conn.execute("SELECT slug FROM expected_priced_steps").fetchall() == [("a b",)]


def test_the_error_travels_between_processes_with_its_plan(tmp_path):
    import pickle

    path = tmp_path / "a.db"
    conn = _fresh(path)
    shown = model_migration_plan(conn, [PricedV2])
    _write_elsewhere(path, "INSERT INTO expected_priced VALUES (1, 'pen', 9.99)")
    with pytest.raises(PlanChangedError) as raised:
        sync_models(conn, [PricedV2], allow_destructive=True, expected_plan=shown)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert str(copy) == str(raised.value) and copy.plan == raised.value.plan


class BytesNamed(SyncModel, table="expected_named"):
    id: Annotated[int, PrimaryKey()]
    name: bytes


class TextNamed(SyncModel, table="expected_named"):
    id: Annotated[int, PrimaryKey()]
    name: str


def test_a_plan_previewed_for_other_models_or_another_database_is_refused(tmp_path):
    """The readable plan says "create table expected_named (2 columns)" for both models: the SQL tells
    a BLOB column from a TEXT one, and the approved plan must match it too."""
    conn = sqlite3.connect(tmp_path / "a.db")
    shown = model_migration_plan(conn, [TextNamed])
    with pytest.raises(PlanChangedError):
        sync_models(conn, [BytesNamed], expected_plan=shown)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'expected_named'").fetchone() == (0,)
    other = sqlite3.connect(tmp_path / "b.db")
    other.execute("CREATE TABLE expected_named (id INTEGER PRIMARY KEY, name TEXT, old TEXT)")
    with pytest.raises(PlanChangedError):
        sync_models(conn, [TextNamed], expected_plan=model_migration_plan(other, [TextNamed]))
    assert str(sync_models(conn, [TextNamed], expected_plan=shown)) == str(shown)
