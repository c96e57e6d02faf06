"""Collations the connection registers (``conn.create_collation``) work for new tables, columns,
indexes and rebuilds; one the connection lacks is a MigrationError naming table, column and
collation, found by the preview, with the database left as it was."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    Collate,
    Database,
    MigrationError,
    PrimaryKey,
    RenamedFrom,
    SyncModel,
    Unique,
    model_migration_plan,
    schema_from_sql,
    sync_models,
    sync_schema,
)


def reverse_order(a: str, b: str) -> int:
    return (a[::-1] > b[::-1]) - (a[::-1] < b[::-1])


class Base(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    s: str = ""


class NewTable(SyncModel, table="words"):
    id: Annotated[int, PrimaryKey()]
    s: Annotated[str, Collate("rev")] = ""


class NewColumn(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    s: str = ""
    t: Annotated[str, Collate("rev")] = ""


class ChangedCollation(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    s: Annotated[str, Collate("rev")] = ""


class UniqueWithCollation(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    s: Annotated[str, Collate("rev"), Unique()] = ""


CHANGES = {
    "new table": ([Base, NewTable], "words.s", "words"),
    "new column": ([NewColumn], "items.t", "items"),
    "changed collation (rebuild)": ([ChangedCollation], "items.s", "items"),
    "unique column with collation (rebuild)": ([UniqueWithCollation], "items.s", "items"),
}


def start(path: Path, register: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    if register:
        conn.create_collation("rev", reverse_order)
    sync_models(conn, [Base])
    Database(conn).insert_many([Base(id=1, s="ab"), Base(id=2, s="ba")])
    return conn


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_registered_collation_serves_new_objects(change: str, tmp_path: Path) -> None:
    models, column, table = CHANGES[change]
    conn = start(tmp_path / "app.db", register=True)
    preview = model_migration_plan(conn, models)
    assert not preview.problems and not preview.is_empty
    sync_models(conn, models)
    name = column.split(".")[1]
    conn.execute(f"INSERT OR IGNORE INTO {table} (id, {name}) VALUES (10, 'zb'), (11, 'ya')")
    ordered = [value for (value,) in conn.execute(f"SELECT {name} FROM {table} WHERE id >= 10 ORDER BY {name}")]
    assert ordered == ["ya", "zb"]  # reversed strings: 'ay' < 'bz'
    assert model_migration_plan(conn, models).is_empty


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_collation_the_connection_lacks_is_refused_naming_it(change: str, tmp_path: Path) -> None:
    models, column, _ = CHANGES[change]
    conn = start(tmp_path / "app.db", register=False)
    before = list(conn.iterdump())
    preview = model_migration_plan(conn, models)
    assert any(f"{column}: collation 'rev' is not registered" in problem for problem in preview.problems)
    with pytest.raises(MigrationError, match=rf"{column}: collation 'rev' is not registered on this connection"):
        sync_models(conn, models)
    assert list(conn.iterdump()) == before


DESIRED_SQL = """
CREATE TABLE items (id INTEGER PRIMARY KEY, s TEXT);
CREATE TABLE words (id INTEGER PRIMARY KEY, w TEXT COLLATE "rev");
CREATE INDEX items_s_rev ON items (s COLLATE rev);
CREATE VIEW by_rev AS SELECT w FROM words ORDER BY w COLLATE rev;
"""


@pytest.mark.parametrize("register", [True, False])
def test_desired_sql_naming_a_connection_collation(register: bool, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "app.db")
    if register:
        conn.create_collation("rev", reverse_order)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, s TEXT)")
    conn.commit()
    before = list(conn.iterdump())
    desired = schema_from_sql(DESIRED_SQL)
    if register:
        sync_schema(conn, desired)
        conn.executemany("INSERT INTO words (w) VALUES (?)", [("zb",), ("ya",)])
        assert conn.execute("SELECT w FROM by_rev").fetchall() == [("ya",), ("zb",)]
    else:
        with pytest.raises(MigrationError, match="words.w: collation 'rev' is not registered") as raised:
            sync_schema(conn, desired)
        assert "items: collation 'rev' is not registered" in str(raised.value)  # the index on items
        assert list(conn.iterdump()) == before


class Tag(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    h: str = ""


class TagNocase(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    h: Annotated[str, Collate("NOCASE")] = ""


class TagRenamedNocase(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    handle: Annotated[str, Collate("NOCASE"), RenamedFrom("h")] = ""


@pytest.mark.parametrize(
    ("index", "model", "collides"),
    [
        ("CREATE UNIQUE INDEX hand ON tags (h)", TagNocase, True),
        ("CREATE UNIQUE INDEX hand ON tags (h DESC, id > 0)", TagNocase, True),
        ("CREATE UNIQUE INDEX hand ON tags (h) WHERE id < 10", TagNocase, True),
        ("CREATE UNIQUE INDEX hand ON tags (h) WHERE id > 1", TagNocase, False),  # the partial index leaves one out
        ("CREATE UNIQUE INDEX hand ON tags (h COLLATE BINARY)", TagNocase, False),  # its own collation stays
        ("CREATE UNIQUE INDEX hand ON tags (h)", TagRenamedNocase, True),
        ('CREATE UNIQUE INDEX hand ON "tags" ("h")', TagNocase, True),  # names however written (Django quotes them)
        ("CREATE UNIQUE INDEX hand ON tags ([h])", TagNocase, True),
        ("CREATE UNIQUE INDEX hand ON tags ((h))", TagNocase, True),
        ('CREATE UNIQUE INDEX hand ON tags ("h")', TagRenamedNocase, True),
    ],
)
def test_a_hand_made_unique_index_over_a_column_turning_nocase_is_checked_for_the_rows_it_would_merge(
    index: str, model: type[SyncModel], collides: bool, tmp_path: Path
) -> None:
    """The rebuild recreates a hand-made index as written, so it compares under the column's new
    collation: case-duplicates are refused by the preview and the sync, naming index and value."""
    path = tmp_path / "tags.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Tag])
    conn.executemany("INSERT INTO tags VALUES (?, ?)", [(1, "Ann"), (2, "ann"), (3, "bob")])
    conn.execute(index)
    conn.commit()
    before = path.read_bytes()
    plan = model_migration_plan(conn, [model])
    if not collides:
        assert plan.problems == ()
        sync_models(conn, [model])
        assert conn.execute("SELECT count(*) FROM tags").fetchone() == (3,)
        return
    assert len(plan.problems) == 1
    assert "2 rows: rows share a value that unique index hand requires to be unique (e.g. " in plan.problems[0]
    assert "'Ann'" in plan.problems[0]
    with pytest.raises(MigrationError, match="unique index hand requires to be unique"):
        sync_models(conn, [model])
    assert path.read_bytes() == before
    conn.execute("UPDATE tags SET h = 'ann2' WHERE id = 2")
    conn.commit()
    sync_models(conn, [model])
    assert conn.execute("SELECT count(*) FROM tags").fetchone() == (3,)


class Code(SyncModel, table="codes"):
    id: Annotated[int, PrimaryKey()]
    code: Optional[str] = None


class CodeFilled(SyncModel, table="codes"):
    id: Annotated[int, PrimaryKey()]
    code: str = ""


@pytest.mark.parametrize(
    "index",
    [
        "CREATE UNIQUE INDEX hand ON codes (code)",
        "CREATE UNIQUE INDEX hand ON codes (code || '')",  # an expression reading the column
        "CREATE UNIQUE INDEX hand ON codes (id > 0) WHERE code IS NOT NULL",  # a partial index whose WHERE reads it
    ],
)
def test_a_hand_made_unique_index_is_checked_against_the_values_a_rebuild_gives_its_columns(tmp_path: Path, index: str) -> None:
    """NULLs never collide, but the default that fills them under a new NOT NULL does: the rebuild
    would fail recreating the index, so the preview and the sync name it first."""
    path = tmp_path / "codes.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Code])
    conn.executemany("INSERT INTO codes VALUES (?, ?)", [(1, None), (2, None), (3, "x") if "id > 0" not in index else (3, None)])
    conn.execute(index)
    conn.commit()
    before = path.read_bytes()
    plan = model_migration_plan(conn, [CodeFilled])
    assert plan.problems and "rows share a value that unique index hand requires to be unique" in plan.problems[0]
    with pytest.raises(MigrationError, match="unique index hand"):
        sync_models(conn, [CodeFilled])
    assert path.read_bytes() == before
    conn.execute("DROP INDEX hand")
    conn.commit()
    sync_models(conn, [CodeFilled])
    assert conn.execute("SELECT count(*) FROM codes WHERE code = ''").fetchone()[0] >= 2


@pytest.mark.parametrize("dependant", ["an expression index", "a view", "a trigger"])
def test_a_function_of_the_application_that_a_rebuild_needs_is_checked_in_the_preview(tmp_path: Path, dependant: str) -> None:
    """A hand-made index, view or trigger may call a function the application registers on its
    connection. Rebuilding its table rebuilds an expression index over every row: a connection without
    the function cannot, so the preview names the function as a problem (the rehearsal stood in for
    it), and nothing changes. A view or trigger calls it only when used, as before the migration."""
    path = tmp_path / "app.db"
    sql = {
        "an expression index": "CREATE INDEX items_slug ON items (slug(name))",
        "a view": "CREATE VIEW slugs AS SELECT slug(name) AS s FROM items",
        "a trigger": "CREATE TRIGGER items_touch AFTER UPDATE ON items BEGIN SELECT slug(new.name); END",
    }[dependant]
    writer = sqlite3.connect(path)
    writer.create_function("slug", 1, lambda text: text.lower().replace(" ", "-"), deterministic=True)
    writer.executescript(f"CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, n INT); INSERT INTO items VALUES (1, 'A B', 1); {sql};")
    writer.close()

    class Item(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]
        name: Optional[str] = None
        n: int = 0  # INT NULL -> INTEGER NOT NULL: a rebuild

    conn = sqlite3.connect(path)
    before = path.read_bytes()
    expected = "calls SQL function slug(), which this connection does not register"
    if dependant == "an expression index":  # rebuilt over the rows; a view or trigger body runs only when used
        assert any(expected in problem for problem in model_migration_plan(conn, [Item]).problems)
        with pytest.raises(MigrationError, match=re.escape(expected)):
            sync_models(conn, [Item])
        assert path.read_bytes() == before
    conn.create_function("slug", 1, lambda text: text.lower().replace(" ", "-"), deterministic=True)
    assert model_migration_plan(conn, [Item]).problems == ()
    sync_models(conn, [Item])
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_function_check_sees_regexp_and_leaves_triggers_alone(tmp_path: Path) -> None:
    """``x REGEXP y`` calls the application's ``regexp()``: a partial index using it is rebuilt over the
    rows and needs it. A trigger recreated with the table only names its functions (as does another
    table's index that made the rehearsal stand in for one): not a problem."""
    path = tmp_path / "app.db"
    writer = sqlite3.connect(path)
    writer.create_function("norm", 1, str.lower, deterministic=True)
    writer.executescript(
        """
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, n INT);
        CREATE TABLE other (id INTEGER PRIMARY KEY, label TEXT);
        CREATE INDEX other_norm ON other (norm(label));
        CREATE TABLE log (v TEXT);
        CREATE TRIGGER items_log AFTER INSERT ON items BEGIN INSERT INTO log VALUES (norm(new.name)); END;
        INSERT INTO items VALUES (1, 'ab', 1);
        """
    )
    writer.close()

    class Item(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]
        name: Optional[str] = None
        n: int = 0

    conn = sqlite3.connect(path)
    assert model_migration_plan(conn, [Item]).problems == ()  # norm() only in a trigger (and another table's index)
    conn.create_function("regexp", 2, lambda pattern, text: re.search(pattern, text or "") is not None, deterministic=True)
    conn.execute("CREATE INDEX items_a ON items (name) WHERE name REGEXP '^a'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    problems = model_migration_plan(conn, [Item]).problems
    assert len(problems) == 1 and "calls SQL function regexp()" in problems[0]
