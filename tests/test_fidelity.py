"""A rebuild keeps everything a table's SQL says that changes behaviour, the diff sees a change
to any of it, and a model that does not say it plans its removal visibly, never silently."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import PrimaryKey, SyncModel, model_migration_plan, schema_from_sql, sync_models
from pydsqlite.migrate.sync import apply_schema, preview_schema


def behaves(conn: sqlite3.Connection, statements: list[str]) -> list:
    """Run statements in order; each gives its rows, or the error class and message."""
    results = []
    for statement in statements:
        try:
            results.append(conn.execute(statement).fetchall())
        except sqlite3.Error as error:
            results.append((type(error).__name__, str(error)))
    conn.rollback()
    return results


# (table body with the feature, the column whose type the transform changes, statements whose results show the feature)
FEATURES = {
    "UNIQUE ON CONFLICT IGNORE": (
        "id INTEGER PRIMARY KEY, email TEXT UNIQUE ON CONFLICT IGNORE, n INTEGER",
        ["INSERT INTO t (email) VALUES ('a')", "INSERT INTO t (email) VALUES ('a')", "SELECT count(*) FROM t"],
    ),
    "table UNIQUE with COLLATE and DESC": (
        "id INTEGER PRIMARY KEY, email TEXT, n INTEGER, UNIQUE (email COLLATE NOCASE DESC)",
        ["INSERT INTO t (email) VALUES ('a')", "INSERT INTO t (email) VALUES ('A')", "SELECT count(*) FROM t"],
    ),
    "CHECK with a comment": (
        "id INTEGER PRIMARY KEY, email TEXT, n INTEGER CHECK (n > 0 -- positive only\n)",
        ["INSERT INTO t (n) VALUES (-1)", "INSERT INTO t (n) VALUES (1)", "SELECT count(*) FROM t"],
    ),
    "named CHECK": (
        "id INTEGER PRIMARY KEY, email TEXT, n INTEGER, CONSTRAINT n_positive CHECK (n > 0)",
        ["INSERT INTO t (n) VALUES (-1)"],
    ),
    "named column CHECK": (
        "id INTEGER PRIMARY KEY, email TEXT, n INTEGER CONSTRAINT n_small CHECK (n < 10)",
        ["INSERT INTO t (n) VALUES (11)"],
    ),
    "NOT NULL ON CONFLICT REPLACE": (
        "id INTEGER PRIMARY KEY, email TEXT NOT NULL ON CONFLICT REPLACE DEFAULT 'none', n INTEGER",
        ["INSERT INTO t (email) VALUES (NULL)", "SELECT email FROM t"],
    ),
    "PRIMARY KEY ON CONFLICT REPLACE": (
        "id INTEGER, email TEXT, n INTEGER, PRIMARY KEY (id) ON CONFLICT REPLACE",
        ["INSERT INTO t VALUES (1, 'a', 1)", "INSERT INTO t VALUES (1, 'b', 2)", "SELECT id, email FROM t"],
    ),
    "inline PRIMARY KEY AUTOINCREMENT ON CONFLICT IGNORE": (
        "id INTEGER PRIMARY KEY ON CONFLICT IGNORE AUTOINCREMENT, email TEXT, n INTEGER",
        ["INSERT INTO t VALUES (1, 'a', 1)", "INSERT INTO t VALUES (1, 'b', 2)", "SELECT id, email FROM t"],
    ),
    "deferred foreign key": (
        "id INTEGER PRIMARY KEY, email TEXT, n INTEGER REFERENCES t (id) DEFERRABLE INITIALLY DEFERRED",
        ["PRAGMA foreign_keys = ON", "BEGIN", "INSERT INTO t VALUES (1, 'a', 2)", "INSERT INTO t VALUES (2, 'b', NULL)",
         "COMMIT", "SELECT count(*) FROM t", "PRAGMA foreign_keys = OFF"],
    ),
    "named table constraints": (
        "id INTEGER, email TEXT, n INTEGER, CONSTRAINT pk_t PRIMARY KEY (id), CONSTRAINT uq_email UNIQUE (email), "
        "CONSTRAINT fk_n FOREIGN KEY (n) REFERENCES t (id)",
        ["SELECT sql LIKE '%CONSTRAINT%pk_t%' AND sql LIKE '%CONSTRAINT%uq_email%' AND sql LIKE '%CONSTRAINT%fk_n%' FROM sqlite_master WHERE name = 't'"],
    ),
}


def transformed(body: str) -> str:
    """The same table with one column's type changed (n INTEGER -> REAL): a rebuild."""
    return body.replace("n INTEGER", "n REAL", 1)


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_a_rebuild_keeps_what_the_table_says(memory_conn, feature):
    body, statements = FEATURES[feature]
    memory_conn.isolation_level = None
    reference = sqlite3.connect(":memory:", isolation_level=None)
    reference.execute(f"CREATE TABLE t ({transformed(body)})")
    memory_conn.execute(f"CREATE TABLE t ({body})")
    desired = schema_from_sql(f"CREATE TABLE t ({transformed(body)});")
    plan = apply_schema(memory_conn, desired)
    assert plan.rebuilt_tables == ("t",), plan
    assert behaves(memory_conn, statements) == behaves(reference, statements)
    assert preview_schema(memory_conn, desired).is_empty


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_a_change_to_only_that_clause_is_seen(memory_conn, feature):
    body, _ = FEATURES[feature]
    plain = sqlite3.connect(":memory:")
    plain.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, n INTEGER)")
    desired = schema_from_sql(f"CREATE TABLE t ({body});")
    plan = preview_schema(plain, desired)
    assert plan.rebuilt_tables == ("t",), (feature, plan)


def test_a_model_that_does_not_say_it_plans_its_removal_visibly(memory_conn):
    memory_conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT UNIQUE ON CONFLICT IGNORE)")

    class People(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        email: Optional[str] = None

    plan = model_migration_plan(memory_conn, [People])
    assert plan.rebuilt_tables == ("people",) and "unique" in str(plan)
    sync_models(memory_conn, [People])
    assert model_migration_plan(memory_conn, [People]).is_empty


def test_names_starting_with_a_no_break_space_or_another_scripts_digit_keep_their_clauses(memory_conn):
    """SQLite's tokenizer takes any non-ASCII character as part of a name: such a column keeps its
    CHECK and its collation through a rebuild (they were read as another column's)."""
    body = "id INTEGER PRIMARY KEY, n INTEGER, \u00a0x TEXT CHECK (length(\u00a0x) < 5), \u0663y TEXT COLLATE NOCASE"
    statements = ["INSERT INTO t (\"\u00a0x\") VALUES ('too long')", "INSERT INTO t (\"\u0663y\") VALUES ('a')",
                  "SELECT count(*) FROM t WHERE \"\u0663y\" = 'A'"]
    memory_conn.isolation_level = None
    reference = sqlite3.connect(":memory:", isolation_level=None)
    reference.execute(f"CREATE TABLE t ({transformed(body)})")
    memory_conn.execute(f"CREATE TABLE t ({body})")
    desired = schema_from_sql(f"CREATE TABLE t ({transformed(body)});")
    assert apply_schema(memory_conn, desired).rebuilt_tables == ("t",)
    assert behaves(memory_conn, statements) == behaves(reference, statements)
    assert behaves(memory_conn, statements)[0][0] == "IntegrityError"
    assert preview_schema(memory_conn, desired).is_empty


@pytest.mark.parametrize("online", [False, True])
def test_a_hand_made_default_a_datetime_field_does_not_compare_survives_a_rebuild(tmp_path, online):
    """``created TEXT DEFAULT CURRENT_TIMESTAMP`` that plain-SQL writers rely on, adopted by a model whose
    datetime default value is never compared (such values are often computed at import): kept whether or
    not another column forces a rebuild, offline and online, as it is kept when nothing is rebuilt. A
    model with no SQL default for it (None, a default_factory) plans the DEFAULT away, visibly."""
    import datetime as dt

    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE stamped_events (id INTEGER PRIMARY KEY, created TEXT DEFAULT CURRENT_TIMESTAMP, n INTEGER DEFAULT 3)")
    conn.execute("INSERT INTO stamped_events (id) VALUES (1)")
    conn.commit()

    class Event(SyncModel, table="stamped_events"):
        id: Annotated[int, PrimaryKey()]
        created: Optional[dt.datetime] = dt.datetime(2020, 1, 1)
        n: Optional[int] = None

    plan = sync_models(conn, [Event], online=online)
    assert plan.rebuilt_tables == ("stamped_events",) and "created" not in str(plan), plan
    conn.execute("INSERT INTO stamped_events (id) VALUES (2)")
    assert conn.execute("SELECT created IS NOT NULL, created != '2020-01-01T00:00:00.000000', n FROM stamped_events WHERE id = 2").fetchone() == (1, 1, None)
    assert model_migration_plan(conn, [Event]).is_empty
    conn.commit()

    class EventWithoutDefault(SyncModel, table="stamped_events"):
        id: Annotated[int, PrimaryKey()]
        created: Optional[dt.datetime] = None
        n: Optional[int] = None

    plan = model_migration_plan(conn, [EventWithoutDefault])
    assert "alter column created (default CURRENT_TIMESTAMP -> None)" in str(plan), plan
    sync_models(conn, [EventWithoutDefault], online=online)
    conn.execute("INSERT INTO stamped_events (id) VALUES (3)")
    assert conn.execute("SELECT created FROM stamped_events WHERE id = 3").fetchone() == (None,)


def test_a_datetime_default_that_fills_nulls_is_named_in_the_plan(memory_conn):
    import datetime as dt

    memory_conn.execute("CREATE TABLE filled_moments (id INTEGER PRIMARY KEY, at TEXT)")
    memory_conn.execute("INSERT INTO filled_moments (id) VALUES (1)")

    class Moment(SyncModel, table="filled_moments"):
        id: Annotated[int, PrimaryKey()]
        at: dt.datetime = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)

    plan = model_migration_plan(memory_conn, [Moment])
    assert "alter column at (NOT NULL, NULLs take '2020-01-01T00:00:00.000000+00:00')" in str(plan), plan
    sync_models(memory_conn, [Moment])
    assert memory_conn.execute("SELECT at FROM filled_moments").fetchall() == [("2020-01-01T00:00:00.000000+00:00",)]
