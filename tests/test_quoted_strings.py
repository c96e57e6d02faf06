"""Double-quoted tokens in live SQL compare as SQLite reads them: ``"x"`` that names no column of the
table is the string ``'x'`` (DQS), names fold their ASCII letters only, and a DEFAULT written as a
lone name holds that text. A live schema that behaves differently from the desired one is never
taken as matching it, and one that behaves the same is not rebuilt."""

from __future__ import annotations

import sqlite3
from typing import Annotated

import pytest

from pydsqlite import (
    Field,
    MigrationError,
    RenamedFrom,
    SyncModel,
    model_migration_plan,
    schema_from_sql,
    schema_migration_plan,
    sync_models,
    sync_schema,
)


def refuses(conn: sqlite3.Connection, sql: str, *params: object) -> bool:
    try:
        conn.execute(sql, params)
    except sqlite3.IntegrityError:
        return True
    return False


class Renamed(SyncModel, table="t"):
    id: Annotated[int, Field(primary_key=True)]
    name: Annotated[str, RenamedFrom("title"), Field(max_length=5)]


@pytest.mark.parametrize("fits", [True, False], ids=["rows fit", "a row too long"])
def test_a_check_reading_a_double_quoted_string_is_not_the_models_check_on_the_renamed_column(conn, db_path, fits):
    """``length("name")`` in a table without a column ``name`` measures the text 'name' (always 4):
    after the rename to ``name`` the model's ``length(name) <= 5`` must really be put in place."""
    conn.execute('CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, title TEXT NOT NULL CHECK (length("name") <= 5))')
    conn.execute("INSERT INTO t VALUES (1, ?)", ("short" if fits else "a very long title",))
    conn.commit()
    plan = model_migration_plan(conn, [Renamed])
    assert "alter column name (CHECK reads a double-quoted name otherwise: a column on one side, text on the other)" in str(plan)
    if not fits:
        assert plan.problems == ("t.name: 1 row: rows violate CHECK (length(`name`) <= 5) (e.g. the row with id 1, where name is 'a very long title')",)
        saved = db_path.read_bytes()
        with pytest.raises(MigrationError, match="rows violate CHECK"):
            sync_models(conn, [Renamed])
        assert db_path.read_bytes() == saved
        return
    sync_models(conn, [Renamed])
    assert conn.execute("SELECT * FROM t").fetchall() == [(1, "short")]
    assert refuses(conn, "INSERT INTO t VALUES (2, 'waytoolong')")
    assert not refuses(conn, "INSERT INTO t VALUES (3, 'ok')")
    assert model_migration_plan(conn, [Renamed]).is_empty


class Accented(SyncModel, table="t"):
    id: Annotated[int, Field(primary_key=True)]
    näme: Annotated[str, Field(max_length=10)]


@pytest.mark.parametrize(
    ("spelled", "same"),
    [('"NÄME"', False), ('"NäME"', True), ("NäME", True), ('"näme"', True)],
    ids=["non-ASCII letter in another case: a string", "ASCII letters in another case: the column", "bare", "as declared"],
)
def test_names_fold_only_their_ascii_letters_as_sqlite_folds_them(conn, spelled, same):
    conn.execute(f'CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, "näme" TEXT NOT NULL CHECK (length({spelled}) <= 10))')
    conn.execute("INSERT INTO t VALUES (1, 'fits')")
    conn.commit()
    plan = model_migration_plan(conn, [Accented])
    assert plan.is_empty is same
    sync_models(conn, [Accented])
    assert refuses(conn, "INSERT INTO t VALUES (2, ?)", "x" * 20)
    assert conn.execute("SELECT * FROM t").fetchall() == [(1, "fits")]


V1 = """CREATE TABLE t (id INTEGER PRIMARY KEY, code TEXT CHECK (code GLOB "[A-Z]*"), g TEXT AS (code || "Z"));
CREATE UNIQUE INDEX one_open ON t(code) WHERE code = "OPEN";
CREATE VIEW v AS SELECT id, "Hello" AS greeting FROM t;
CREATE TABLE log (note TEXT);
CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES ("Y"); END;"""

CHANGED = {
    "check": ('"[A-Z]*"', '"[a-z]*"'),
    "generated column": ('"Z"', '"z"'),
    "partial index": ('"OPEN"', '"open"'),
    "view": ('"Hello"', '"hello"'),
    "trigger": ('"Y"', '"y"'),
}


def behaviour(conn: sqlite3.Connection) -> list[object]:
    seen: list[object] = []
    for code in ("abc", "ABC", "OPEN", "OPEN", "open", "open"):
        try:
            conn.execute("INSERT INTO t (code) VALUES (?)", (code,))
            seen.append("ok")
        except sqlite3.IntegrityError as error:
            seen.append(str(error))
    seen.append(conn.execute("SELECT g FROM t ORDER BY id").fetchall())
    seen.append(conn.execute("SELECT greeting FROM v ORDER BY id").fetchall())
    seen.append(conn.execute("SELECT note FROM log").fetchall())
    return seen


@pytest.mark.parametrize("where", list(CHANGED))
def test_a_double_quoted_string_changed_only_in_case_is_migrated_to_behave_as_a_fresh_database(where):
    old, new = CHANGED[where]
    v2 = V1.replace(old, new)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sync_schema(conn, schema_from_sql(V1))
    assert not schema_migration_plan(conn, schema_from_sql(v2)).is_empty
    sync_schema(conn, schema_from_sql(v2))
    fresh = sqlite3.connect(":memory:", isolation_level=None)
    sync_schema(fresh, schema_from_sql(v2))
    assert behaviour(conn) == behaviour(fresh)
    assert schema_migration_plan(conn, schema_from_sql(v2)).is_empty


@pytest.mark.parametrize("written", ['"open"', "open", "`open`", "[open]", "'open'"])
def test_a_default_written_as_a_lone_name_holds_its_text_through_migrations(written):
    """SQLite takes ``DEFAULT "open"`` (or a bare or otherwise quoted name) for the text 'open'; in
    parentheses, as a rebuilt table would write it, it would be a column and refused."""
    sql = f"CREATE TABLE t (id INTEGER PRIMARY KEY, state TEXT NOT NULL DEFAULT {written}, note TEXT)"
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(sql)
    conn.execute("INSERT INTO t (id) VALUES (1)")
    assert schema_migration_plan(conn, schema_from_sql(sql)).is_empty
    rebuilt = sql.replace("note TEXT", "note TEXT NOT NULL DEFAULT 'none'")
    sync_schema(conn, schema_from_sql(rebuilt))
    conn.execute("INSERT INTO t (id) VALUES (2)")
    assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == [(1, "open", "none"), (2, "open", "none")]
    assert schema_migration_plan(conn, schema_from_sql(rebuilt)).is_empty
    fresh = sqlite3.connect(":memory:", isolation_level=None)
    sync_schema(fresh, schema_from_sql(sql))
    fresh.execute("INSERT INTO t (id) VALUES (1)")
    assert fresh.execute("SELECT state FROM t").fetchall() == [("open",)]


@pytest.mark.parametrize(
    ("options", "wanted_term"),
    [("", "`rowid`"), (" WITHOUT ROWID", "'rowid'")],
    ids=["a rowid table: the rowid", "WITHOUT ROWID: the text 'rowid'"],
)
def test_rowid_in_double_quotes_names_the_rowid_only_where_the_table_has_one(options, wanted_term):
    """``"rowid"`` names the rowid of a table that has one, and is the text 'rowid' in a WITHOUT
    ROWID table: each compares equal to that spelling, so adopting the table plans nothing."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(f'CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, n INTEGER CHECK ("rowid" > 0)){options}')
    wanted = schema_from_sql(f"CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, n INTEGER CHECK ({wanted_term} > 0)){options}")
    assert schema_migration_plan(conn, wanted).is_empty


def test_a_check_whose_name_alone_changes_reads_as_renamed():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER CONSTRAINT positive CHECK (n > 0))")
    plan = schema_migration_plan(conn, schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER CONSTRAINT above_zero CHECK (n > 0))"))
    assert "alter column n (CHECK renamed)" in str(plan)
