"""Virtual tables (full-text search, R*Tree) are created and dropped whole; the shadow tables
their modules keep are never planned on their own."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    DestructiveChangeError,
    PrimaryKey,
    SyncModel,
    model_migration_plan,
    schema_from_sql,
    sync_models,
    sync_schema,
)
from pydsqlite.migrate.sync import schema_migration_plan

DOCS = """
CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT);
CREATE VIRTUAL TABLE docs_fts USING fts5(title, body, content='docs', content_rowid='id');
CREATE TRIGGER docs_ai AFTER INSERT ON docs BEGIN
    INSERT INTO docs_fts (rowid, title, body) VALUES (new.id, new.title, new.body);
END;
CREATE TRIGGER docs_ad AFTER DELETE ON docs BEGIN
    INSERT INTO docs_fts (docs_fts, rowid, title, body) VALUES ('delete', old.id, old.title, old.body);
END;
CREATE VIRTUAL TABLE places USING rtree(id, min_x, max_x);
"""


def search(conn: sqlite3.Connection, word: str) -> list[int]:
    return [row[0] for row in conn.execute("SELECT rowid FROM docs_fts WHERE docs_fts MATCH ? ORDER BY rowid", (word,))]


def test_a_desired_schema_with_full_text_search_is_created_and_then_stable(memory_conn):
    plan = sync_schema(memory_conn, schema_from_sql(DOCS))
    kinds = [op.kind for op in plan.operations]
    assert kinds.count("create_virtual_table") == 2 and "create_table" in kinds
    assert not any("_data" in op.table or "_node" in op.table for op in plan.operations)  # no shadow table planned
    memory_conn.execute("INSERT INTO docs (title, body) VALUES ('hello', 'full text search')")
    assert search(memory_conn, "search") == [1]
    assert schema_migration_plan(memory_conn, schema_from_sql(DOCS)).is_empty


def test_leaving_a_virtual_table_out_drops_it_whole_as_a_destructive_step(memory_conn):
    sync_schema(memory_conn, schema_from_sql(DOCS))
    memory_conn.execute("INSERT INTO docs (title, body) VALUES ('hello', 'world')")
    memory_conn.execute("INSERT INTO places VALUES (1, 0, 10)")
    without_places = DOCS.replace("CREATE VIRTUAL TABLE places USING rtree(id, min_x, max_x);", "")
    plan = schema_migration_plan(memory_conn, schema_from_sql(without_places))
    assert [(op.kind, op.table, op.row_count) for op in plan.operations] == [("drop_virtual_table", "places", 1)]
    with pytest.raises(DestructiveChangeError, match="places: 1 row"):
        sync_schema(memory_conn, schema_from_sql(without_places))
    sync_schema(memory_conn, schema_from_sql(without_places), allow_destructive=True)
    names = {name for (name,) in memory_conn.execute("SELECT name FROM sqlite_master")}
    assert not {name for name in names if name.startswith("places")}
    assert memory_conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert search(memory_conn, "world") == [1]


def test_a_changed_virtual_table_is_dropped_and_created_again(memory_conn):
    sync_schema(memory_conn, schema_from_sql(DOCS))
    changed = DOCS.replace("fts5(title, body,", "fts5(title, body, tokenize='porter',")
    plan = schema_migration_plan(memory_conn, schema_from_sql(changed))
    assert [op.kind for op in plan.operations] == ["drop_virtual_table", "create_virtual_table"]
    sync_schema(memory_conn, schema_from_sql(changed), allow_destructive=True)
    assert schema_migration_plan(memory_conn, schema_from_sql(changed)).is_empty


class Doc(SyncModel, table="docs"):
    id: Annotated[int, PrimaryKey()]
    title: str
    body: Optional[str] = None


class DocV2(SyncModel, table="docs"):  # title becomes nullable: docs is rebuilt under its search triggers
    id: Annotated[int, PrimaryKey()]
    title: Optional[str] = None
    body: Optional[str] = None


def test_models_leave_a_hand_made_search_index_alone_and_keep_its_triggers_through_a_rebuild(memory_conn):
    memory_conn.executescript(DOCS)
    memory_conn.execute("INSERT INTO docs (title, body) VALUES ('first', 'alpha')")
    sync_models(memory_conn, [Doc])
    plan = model_migration_plan(memory_conn, [DocV2])
    assert plan.rebuilt_tables == ("docs",) and not plan.problems
    sync_models(memory_conn, [DocV2])
    memory_conn.execute("INSERT INTO docs (title, body) VALUES ('second', 'beta')")
    assert search(memory_conn, "alpha") == [1] and search(memory_conn, "beta") == [2]
    memory_conn.execute("DELETE FROM docs WHERE id = 1")
    assert search(memory_conn, "alpha") == []
    assert model_migration_plan(memory_conn, [DocV2]).is_empty
    assert memory_conn.execute("SELECT count(*) FROM places").fetchone() == (0,)  # never touched
