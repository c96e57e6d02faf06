"""A desired-schema SQL file is data: only schema statements load, nothing in it reaches a real database or file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from pydsqlite import SchemaDefinitionError, schema_from_sql, sync_schema
from tests.test_cli import environment

LIVE_ROWS = [(1, "keep"), (2, "me")]

# Every kind of statement a schema file must not run, with the words the refusal quotes.
REFUSED = {
    "attach": ("ATTACH DATABASE '{live}' AS live;", "ATTACH DATABASE"),
    "attach then delete": ("ATTACH DATABASE '{live}' AS live; DELETE FROM live.items;", "ATTACH DATABASE"),
    "detach": ("DETACH DATABASE main;", "DETACH DATABASE"),
    "insert": ("INSERT INTO t VALUES (1);", "INSERT INTO t"),
    "replace": ("REPLACE INTO t VALUES (1);", "REPLACE INTO t"),
    "update": ("UPDATE t SET a = 1;", "UPDATE t SET"),
    "delete": ("DELETE FROM t;", "DELETE FROM t"),
    "with delete": ("WITH x AS (SELECT 1) DELETE FROM t;", "WITH x AS"),
    "select": ("SELECT 1;", "SELECT 1"),
    "vacuum": ("VACUUM;", "VACUUM"),
    "vacuum into": ("VACUUM INTO '{copy}';", "VACUUM INTO"),
    "pragma write": ("PRAGMA foreign_keys = ON;", "PRAGMA foreign_keys"),
    "pragma read": ("PRAGMA user_version;", "PRAGMA user_version"),
    "analyze": ("ANALYZE;", "ANALYZE"),
    "reindex": ("REINDEX;", "REINDEX"),
    "drop table": ("DROP TABLE t;", "DROP TABLE t"),
    "drop index": ("CREATE INDEX i ON t (a); DROP INDEX i;", "DROP INDEX i"),
    "alter": ("ALTER TABLE t ADD COLUMN b;", "ALTER TABLE t"),
    "explain": ("EXPLAIN CREATE TABLE u (a);", "EXPLAIN CREATE"),
    "temp table": ("CREATE TEMP TABLE u (a);", "CREATE TEMP TABLE"),
    "temporary view": ("CREATE TEMPORARY VIEW u AS SELECT 1;", "CREATE TEMPORARY VIEW"),
    "temp trigger": ("CREATE TEMP TRIGGER u AFTER INSERT ON t BEGIN SELECT 1; END;", "CREATE TEMP TRIGGER"),
}


@pytest.fixture
def live(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", LIVE_ROWS)
        conn.commit()
    return path


def dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_non_schema_statements_are_refused_naming_the_statement(name: str, live: Path, tmp_path: Path) -> None:
    statement, quoted = REFUSED[name]
    copy = tmp_path / "copy.db"
    ddl = "CREATE TABLE t (a);\n" + statement.format(live=live, copy=copy) + "\nCREATE TABLE u2 (b);"
    before = dump(live)
    with pytest.raises(SchemaDefinitionError) as raised:
        schema_from_sql(ddl)
    assert quoted in str(raised.value)
    assert dump(live) == before
    assert not copy.exists()


def test_refused_file_leaves_the_live_database_as_it_was(live: Path) -> None:
    before = dump(live)
    with closing(sqlite3.connect(live)) as conn:
        with pytest.raises(SchemaDefinitionError):
            sync_schema(conn, schema_from_sql(f"CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); ATTACH '{live}' AS live; DELETE FROM live.items;"))
    assert dump(live) == before


def test_extension_loading_is_refused_even_inside_a_create_statement() -> None:
    with pytest.raises(SchemaDefinitionError, match="not authorized"):
        schema_from_sql("CREATE TABLE t AS SELECT load_extension('/nonexistent/ext') AS a;")


def test_schema_statements_load_including_trigger_bodies_that_write() -> None:
    schema = schema_from_sql(
        """
        -- a comment before anything
        ;;
        BEGIN;
        CREATE TABLE t (id INTEGER PRIMARY KEY, "begin" INTEGER, "end" TEXT, note TEXT DEFAULT 'a; b');
        CREATE TABLE log (t_id INTEGER, what TEXT);
        CREATE UNIQUE INDEX t_end ON t ("end");
        CREATE INDEX t_begin ON t ("begin") WHERE "begin" > 0;
        CREATE VIEW v AS SELECT CASE WHEN "begin" > 0 THEN 'on; off' END AS state FROM t;
        CREATE TRIGGER t_logged AFTER UPDATE ON t BEGIN
            INSERT INTO log VALUES (new.id, CASE WHEN new."begin" > 0 THEN 'up' ELSE 'down' END);
            UPDATE log SET what = CASE what WHEN 'x' THEN 'y' END;
            DELETE FROM log WHERE t_id < 0;
        END; /* trailing comment; with a semicolon */
        CREATE VIRTUAL TABLE docs USING fts5(body);
        CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1);
        COMMIT;
        """
    )
    assert {table.name for table in schema.tables} >= {"t", "log"}
    assert {trigger.name for trigger in schema.triggers} == {"t_logged"}
    trigger_sql = schema.triggers[0].sql
    assert "DELETE FROM log WHERE t_id < 0" in trigger_sql
    assert "UPDATE log SET what = CASE what WHEN 'x' THEN 'y' END" in trigger_sql
    assert {view.name for view in schema.views} == {"v"}
    assert {table.name for table in schema.virtual_tables} == {"docs", "boxes"}


def test_a_syntax_error_names_the_statement() -> None:
    with pytest.raises(SchemaDefinitionError, match=r"incomplete input \(in: CREATE TABLE u \(a"):
        schema_from_sql("CREATE TABLE t (a); CREATE TABLE u (a")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pydsqlite", *args], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("where", ["plan --to", "diff current", "diff desired"])
def test_command_line_refuses_a_schema_file_that_writes(where: str, live: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.sql"
    evil.write_text(f"CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\nATTACH DATABASE '{live}' AS live;\nDELETE FROM live.items;\n")
    plain = tmp_path / "plain.sql"
    plain.write_text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);\n")
    args = {
        "plan --to": ["plan", str(live), "--to", str(evil)],
        "diff current": ["diff", str(evil), str(plain)],
        "diff desired": ["diff", str(plain), str(evil)],
    }[where]
    before = dump(live)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "ATTACH DATABASE" in result.stderr and "does not load" in result.stderr
    assert dump(live) == before
