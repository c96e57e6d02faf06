"""Never lose data: failures roll back, concurrent and killed migrations, hostile names, bad files."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    Collate,
    DestructiveChangeError,
    Field,
    ForeignKey,
    Index,
    MigrationError,
    PrimaryKey,
    PydsqliteError,
    RenamedFrom,
    SyncModel,
    Unique,
    migration_history,
    model_migration_plan,
    schema_migration_plan,
    sync_models,
    sync_schema,
)
from pydsqlite.migrate.metadata import schema_fingerprint
from pydsqlite.migrate.sync import apply_schema, preview_schema
from pydsqlite.schema.compile import compile_models
from pydsqlite.sql.source import schema_from_sql

from .helpers import columns, index_names, table_sql

WORKER = Path(__file__).with_name("sync_worker.py")


def rows(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


class Events(SyncModel, table="events"):
    id: Annotated[int, PrimaryKey()]
    kind: str
    payload: Optional[str] = None


# --- atomicity ---------------------------------------------------------------------------


def test_a_failing_statement_in_the_third_operation_changes_nothing(conn, db_path):
    sync_models(conn, [Events])
    conn.executemany("INSERT INTO events VALUES (?, ?, ?)", [(1, "a", "x"), (2, "b", None)])
    conn.commit()

    class EventsV2(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: Annotated[str, Index()]
        payload: Optional[str] = None
        note: Optional[str] = None

    class Other(SyncModel, table="other"):
        id: int

    class Third(SyncModel, table="third"):
        id: int

    plan = model_migration_plan(conn, [EventsV2, Other, Third])
    assert len(plan.operations) >= 3
    third = plan.operations[2]
    target = third.table

    def deny_third(action, arg1, arg2, db, trigger):
        # A real SQLite refusal (not a mock) for the third step's object only.
        if action in (sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_ALTER_TABLE) and target in (arg1, arg2):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    before = db_path.read_bytes()
    conn.set_authorizer(deny_third)
    with pytest.raises(MigrationError, match=r"step 3 .*failed.*nothing was changed"):
        sync_models(conn, [EventsV2, Other, Third])
    conn.set_authorizer(None)
    assert db_path.read_bytes() == before
    assert table_sql(conn, "other") is None and "note" not in columns(conn, "events")
    assert len(migration_history(conn)) == 1
    sync_models(conn, [EventsV2, Other, Third])
    assert rows(conn, "SELECT * FROM events ORDER BY id") == [(1, "a", "x", None), (2, "b", None, None)]


class EventsWithNote(SyncModel, table="events"):
    id: Annotated[int, PrimaryKey()]
    kind: str
    payload: Optional[str] = None
    note: Optional[str] = None


def test_a_failure_inside_the_callers_transaction_undoes_the_migration_and_keeps_the_callers_work(conn):
    sync_models(conn, [Events])
    conn.execute("INSERT INTO events VALUES (1, 'a', 'x')")
    conn.commit()
    conn.execute("INSERT INTO events VALUES (2, 'mine', NULL)")  # the caller's own, uncommitted work
    assert conn.in_transaction

    class Other(SyncModel, table="other"):
        id: int

    class IndexedNote(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: str
        payload: Optional[str] = None
        note: Annotated[Optional[str], Index()] = None

    def deny_the_index(action, arg1, arg2, db, trigger):
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_CREATE_INDEX and arg2 == "events" else sqlite3.SQLITE_OK

    conn.set_authorizer(deny_the_index)
    with pytest.raises(MigrationError, match=r"create index .*failed"):
        sync_models(conn, [IndexedNote, Other])  # creates a table, adds the column in place, then fails
    conn.set_authorizer(None)
    assert conn.in_transaction
    assert "note" not in columns(conn, "events")
    conn.commit()
    assert rows(conn, "SELECT id, kind FROM events ORDER BY id") == [(1, "a"), (2, "mine")]
    assert "note" not in columns(conn, "events") and table_sql(conn, "other") is None


def test_a_commit_that_fails_leaves_no_migration_pending(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Events])
    conn.execute("INSERT INTO events VALUES (1, 'a', 'x')")
    conn.commit()
    before = db_path.read_bytes()
    reader = sqlite3.connect(db_path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchall()  # a shared lock: COMMIT cannot get its exclusive one
    with pytest.raises(MigrationError, match="could not commit"):
        sync_models(conn, [EventsWithNote], busy_timeout=0.05)
    assert not conn.in_transaction
    reader.rollback()
    reader.close()
    conn.commit()  # had the migration stayed pending, this would apply it
    assert db_path.read_bytes() == before
    assert "note" not in columns(conn, "events")
    conn.close()


def test_audit_trail_records_each_applied_plan(conn):
    assert migration_history(conn) == []
    first = sync_models(conn, [Events])

    class EventsV2(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: str
        payload: Optional[str] = None
        note: str = ""

    second = sync_models(conn, [EventsV2])
    assert sync_models(conn, [EventsV2]).is_empty
    history = migration_history(conn)
    assert [entry.sql for entry in history] == [first.sql, second.sql]
    assert [entry.description for entry in history] == [str(first), str(second)]
    assert history[0].fingerprint == schema_fingerprint(compile_models([Events]))
    assert history[1].fingerprint == schema_fingerprint(compile_models([EventsV2]))
    assert history[0].applied_at <= history[1].applied_at and history[0].applied_at.endswith("+00:00")


# --- foreign keys, views, triggers, table options -------------------------------------------


def test_rebuild_keeps_autoincrement_sequence_rowids_collate_and_without_rowid(conn):
    class Counter(SyncModel, table="counters"):
        id: int = Field(primary_key=True, autoincrement=True)
        name: Annotated[str, Collate("NOCASE")]

    class Keyed(SyncModel, table="keyed", without_rowid=True):
        key: Annotated[str, PrimaryKey()]
        value: int

    class Plain(SyncModel, table="plain"):
        name: str

    sync_models(conn, [Counter, Keyed, Plain])
    assert "AUTOINCREMENT" in table_sql(conn, "counters")
    conn.executemany("INSERT INTO counters (name) VALUES (?)", [("a",), ("b",), ("c",)])
    conn.execute("DELETE FROM counters WHERE id = 3")
    conn.executemany("INSERT INTO keyed VALUES (?, ?)", [("x", 1), ("y", 2)])
    conn.executemany("INSERT INTO plain (rowid, name) VALUES (?, ?)", [(10, "ten"), (20, "twenty")])
    conn.commit()

    class Counter2(SyncModel, table="counters"):
        id: int = Field(primary_key=True, autoincrement=True)
        name: Annotated[str, Collate("NOCASE")]
        extra: int = 0

    class Keyed2(SyncModel, table="keyed", without_rowid=True):
        key: Annotated[str, PrimaryKey()]
        value: str

    class Plain2(SyncModel, table="plain"):
        name: str
        size: int = 1

    plan = sync_models(conn, [Counter2, Keyed2, Plain2])
    assert set(plan.rebuilt_tables) == {"keyed"}
    conn.execute("INSERT INTO counters (name) VALUES ('d')")
    assert rows(conn, "SELECT id FROM counters WHERE name = 'D'") == [(4,)]
    assert "WITHOUT ROWID" in table_sql(conn, "keyed")
    assert rows(conn, "SELECT key, value FROM keyed ORDER BY key") == [("x", "1"), ("y", "2")]

    class Counter3(SyncModel, table="counters"):
        id: int = Field(primary_key=True, autoincrement=True)
        name: Annotated[str, Collate("NOCASE")]
        extra: str = ""

    class Plain3(SyncModel, table="plain"):
        name: Optional[str] = None
        size: int = 1

    plan = sync_models(conn, [Counter3, Keyed2, Plain3])
    assert set(plan.rebuilt_tables) == {"counters", "plain"}
    assert rows(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'counters'") == [(4,)]
    conn.execute("DELETE FROM counters WHERE id = 4")
    conn.execute("INSERT INTO counters (name) VALUES ('e')")
    assert rows(conn, "SELECT max(id) FROM counters") == [(5,)]
    assert rows(conn, "SELECT count(*) FROM counters WHERE name = 'A'") == [(1,)]
    assert rows(conn, "SELECT rowid, name FROM plain ORDER BY rowid") == [(10, "ten"), (20, "twenty")]
    assert model_migration_plan(conn, [Counter3, Keyed2, Plain3]).is_empty


# How each scenario leaves the AUTOINCREMENT counter above max(id) before the rebuild.
SEQUENCE_SCENARIOS = {
    "high ids deleted": "DELETE FROM {table} WHERE id > 3",
    "every row deleted": "DELETE FROM {table}",
    "no row deleted": None,
}


@pytest.mark.parametrize("scenario", SEQUENCE_SCENARIOS)
@pytest.mark.parametrize("rename", ["none", "table", "column", "table and column"])
def test_a_rebuild_keeps_the_autoincrement_counter_above_deleted_ids(conn, scenario, rename):
    """AUTOINCREMENT promises never to reuse an id, even one deleted: after a rebuild (alone or
    together with renames) the next insert gets the old counter + 1, not max(id) + 1."""

    class Ticket(SyncModel, table="tickets"):
        id: int = Field(primary_key=True, autoincrement=True)
        title: str
        size: int = 0

    new_table = "issues" if "table" in rename else "tickets"
    title = "subject" if "column" in rename else "title"
    Renamed = type(SyncModel)(
        "Renamed",
        (SyncModel,),
        {
            "__annotations__": {"id": int, title: str, "size": str},
            "id": Field(primary_key=True, autoincrement=True),
            title: Field(renamed_from="title") if title != "title" else Field(),
            "size": "0",
        },
        table=new_table,
        **({"renamed_from": "tickets"} if new_table != "tickets" else {}),
    )
    sync_models(conn, [Ticket])
    conn.executemany("INSERT INTO tickets (title) VALUES (?)", [(f"t{n}",) for n in range(1, 6)])
    if SEQUENCE_SCENARIOS[scenario]:
        conn.execute(SEQUENCE_SCENARIOS[scenario].format(table="tickets"))
    conn.commit()
    kept = rows(conn, "SELECT id, title FROM tickets ORDER BY id")
    assert rows(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'tickets'") == [(5,)]

    plan = sync_models(conn, [Renamed])
    assert plan.rebuilt_tables == (new_table,)
    assert rows(conn, "SELECT name, seq FROM sqlite_sequence") == [(new_table, 5)]
    assert rows(conn, f"SELECT id, {title} FROM {new_table} ORDER BY id") == kept
    conn.execute(f"INSERT INTO {new_table} ({title}) VALUES ('next')")
    assert rows(conn, f"SELECT id FROM {new_table} WHERE {title} = 'next'") == [(6,)]
    assert model_migration_plan(conn, [Renamed]).is_empty


@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_the_autoincrement_counter_of_a_table_made_in_another_letter_case_survives_its_rebuild(tmp_path, online):
    """A hand-made ``JOBS`` adopted by a model spelling ``jobs``: SQLite's names ignore ASCII case, so
    the rebuild must find the table's ``sqlite_sequence`` row too, or deleted ids come back."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        PRAGMA journal_mode = WAL;
        CREATE TABLE JOBS (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, n INT);
        INSERT INTO JOBS (name, n) VALUES ('a', 1), ('b', 2), ('c', 3), ('d', 4);
        DELETE FROM JOBS WHERE id >= 3;
        """
    )

    class Job(SyncModel, table="jobs"):
        id: int = Field(default=None, primary_key=True, autoincrement=True)
        name: Optional[str] = None
        n: int = 0

    plan = sync_models(conn, [Job], online=online)
    assert [name.lower() for name in plan.rebuilt_tables] == ["jobs"]
    assert rows(conn, "SELECT lower(name), seq FROM sqlite_sequence") == [("jobs", 4)]
    conn.execute("INSERT INTO jobs (name) VALUES ('next')")
    assert rows(conn, "SELECT id FROM jobs WHERE name = 'next'") == [(5,)]
    conn.close()


@pytest.mark.parametrize("taken", [("oid",), ("rowid",), ("_rowid_", "oid")], ids=lambda names: "+".join(names))
@pytest.mark.parametrize("online", [False, True], ids=["offline", "online"])
def test_a_column_named_like_the_rowid_does_not_cost_the_rows_their_rowids(tmp_path, taken, online):
    """A hand-made column may take one or two of SQLite's rowid names (``oid`` most often); the rowid
    is still there under the other, and a rebuild must carry it, or an FTS index with ``content=``
    the table (which finds rows by rowid) returns other rows."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    extra = ", ".join(f"{name} TEXT" for name in taken)
    rowid = next(name for name in ("rowid", "_rowid_", "oid") if name not in taken)
    conn.executescript(
        f"""
        PRAGMA journal_mode = WAL;
        CREATE TABLE orders (code TEXT NOT NULL PRIMARY KEY, {extra}, body TEXT);
        INSERT INTO orders ({rowid}, code, body) VALUES (10, 'a', 'apple pie'), (20, 'b', 'banana split'), (30, 'c', 'cherry tart');
        CREATE VIRTUAL TABLE orders_fts USING fts5(body, content='orders', content_rowid='{rowid}');
        INSERT INTO orders_fts (orders_fts) VALUES ('rebuild');
        """
    )

    class Order(SyncModel, table="orders", indexes=[Index("body")]):
        code: Annotated[str, PrimaryKey()]
        body: str = ""

    plan = sync_models(conn, [Order], online=online, allow_destructive=True)
    assert plan.rebuilt_tables == ("orders",)
    assert rows(conn, f"SELECT {rowid}, code FROM orders ORDER BY code") == [(10, "a"), (20, "b"), (30, "c")]
    search = f"SELECT o.code FROM orders_fts AS f JOIN orders AS o ON o.{rowid} = f.rowid WHERE orders_fts MATCH 'banana'"
    assert rows(conn, search) == [("b",)]
    conn.close()


def test_rebuild_recomputes_generated_columns_and_keeps_checks_from_sql(conn):
    conn.executescript(
        """
        CREATE TABLE shapes (
            id INTEGER PRIMARY KEY,
            w REAL NOT NULL CHECK (w > 0),
            h REAL NOT NULL,
            area REAL GENERATED ALWAYS AS (w * h) STORED,
            label TEXT COLLATE NOCASE,
            CHECK (h < 1000)
        );
        INSERT INTO shapes (id, w, h, label) VALUES (1, 2, 3, 'a'), (2, 4, 5, 'B');
        """
    )
    desired = schema_from_sql(
        """
        CREATE TABLE shapes (
            id INTEGER PRIMARY KEY,
            w REAL NOT NULL CHECK (w > 0),
            h REAL NOT NULL,
            area REAL GENERATED ALWAYS AS (w * h + 1) VIRTUAL,
            label TEXT COLLATE NOCASE,
            note TEXT,
            CHECK (h < 1000)
        );
        """
    )
    plan = apply_schema(conn, desired)
    assert plan.rebuilt_tables == ("shapes",)
    assert rows(conn, "SELECT id, area, label FROM shapes ORDER BY id") == [(1, 7.0, "a"), (2, 21.0, "B")]
    assert rows(conn, "SELECT id FROM shapes WHERE label = 'b'") == [(2,)]
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("INSERT INTO shapes (id, w, h) VALUES (3, 1, 5000)")
    assert preview_schema(conn, desired).is_empty


def test_new_check_violated_by_existing_rows_is_refused_with_a_sample(conn, db_path):
    class Scores(SyncModel, table="scores"):
        id: Annotated[int, PrimaryKey()]
        points: int

    class Bounded(SyncModel, table="scores"):
        id: Annotated[int, PrimaryKey()]
        points: int = Field(ge=0, le=100)

    sync_models(conn, [Scores])
    conn.executemany("INSERT INTO scores VALUES (?, ?)", [(1, 50), (2, 150), (3, -1)])
    conn.commit()
    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match=r"scores\.points: 1 row: rows violate CHECK \(`points` >= 0\) \(e\.g\. the row with id 3, where points is -1\)"):
        sync_models(conn, [Bounded])
    assert db_path.read_bytes() == before


def test_views_and_triggers_on_other_tables_that_name_a_rebuilt_table_survive(conn):
    sync_models(conn, [Events])
    conn.executescript(
        """
        INSERT INTO events VALUES (1, 'a', 'x'), (2, 'b', NULL);
        CREATE TABLE log (msg TEXT);
        CREATE VIEW event_kinds AS SELECT kind FROM events;
        CREATE TRIGGER log_to_events AFTER INSERT ON log BEGIN INSERT INTO events (kind) VALUES (new.msg); END;
        """
    )

    class EventsV2(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: str
        payload: str = "none"

    sync_models(conn, [EventsV2])
    conn.execute("INSERT INTO log VALUES ('c')")
    assert rows(conn, "SELECT kind FROM event_kinds ORDER BY kind") == [("a",), ("b",), ("c",)]
    assert rows(conn, "SELECT payload FROM events ORDER BY id") == [("x",), ("none",), ("none",)]


def test_set_null_children_are_untouched_by_a_parent_rebuild(conn):
    class Parent(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class Child(SyncModel, table="kids"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id", on_delete="set null")] = None

    class Parent2(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        name: str = Field(max_length=20)

    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Parent, Child])
    conn.executemany("INSERT INTO parents VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.executemany("INSERT INTO kids VALUES (?, ?)", [(i, 1 + i % 2) for i in range(20)])
    conn.commit()
    sync_models(conn, [Parent2, Child])
    assert rows(conn, "SELECT count(*) FROM kids WHERE parent_id IS NOT NULL") == [(20,)]


# --- concurrency and crashes ----------------------------------------------------------------


def test_concurrent_processes_apply_the_migration_exactly_once(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Events])
    conn.executemany("INSERT INTO events VALUES (?, ?, ?)", [(i, "k", str(i)) for i in range(2000)])
    conn.commit()
    blocker = sqlite3.connect(db_path)
    blocker.execute("BEGIN IMMEDIATE")  # every worker must wait for this writer
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(db_path), "concurrent"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    time.sleep(0.5)
    blocker.rollback()
    blocker.close()
    results = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 6, [err for _, err in results]
    applied = sorted(int(out.split()[-1]) for out, _ in results)
    assert applied[:-1] == [0] * 5 and applied[-1] > 0
    assert len(migration_history(conn)) == 2
    assert rows(conn, "SELECT count(*), sum(weight) FROM events") == [(2000, 2000.0)]
    conn.close()


def test_a_preview_reads_one_snapshot_while_another_connection_changes_the_schema(db_path):
    """A preview introspects and then counts rows; a schema change committed in between by
    another connection must not reach the counting queries (they would name a missing column)."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode = WAL")
    sync_models(conn, [Events])
    conn.executemany("INSERT INTO events VALUES (?, ?, NULL)", [(1, "a"), (2, "b")])
    conn.commit()

    class UniqueKinds(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: Annotated[str, Unique()]
        payload: Optional[str] = None

    other = sqlite3.connect(db_path)
    renamed: list[str] = []

    def rename_once_the_data_checks_start(statement: str) -> None:
        if "GROUP BY" in statement and not renamed:
            renamed.append(statement)
            other.execute("ALTER TABLE events RENAME COLUMN kind TO category")
            other.commit()

    conn.set_trace_callback(rename_once_the_data_checks_start)
    plan = model_migration_plan(conn, [UniqueKinds])
    conn.set_trace_callback(None)
    assert renamed and "category" in columns(conn, "events")  # the rename did happen meanwhile
    assert [op.kind for op in plan.operations] == ["create_index"] and not plan.problems
    other.close()
    conn.close()


def test_a_held_write_lock_times_out_with_a_clear_error(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Events])
    blocker = sqlite3.connect(db_path)
    blocker.execute("BEGIN IMMEDIATE")

    class EventsV2(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: str

    started = time.monotonic()
    with pytest.raises(MigrationError, match="database is locked"):
        sync_models(conn, [EventsV2], allow_destructive=True, busy_timeout=0.3)
    assert time.monotonic() - started >= 0.25
    assert rows(conn, "PRAGMA busy_timeout") == [(5000,)]
    blocker.rollback()
    blocker.close()
    conn.close()


BIG_ROWS = 200_000


def make_big_database(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")

    class Big(SyncModel, table="big"):
        id: Annotated[int, PrimaryKey()]
        label: str
        amount: int

    sync_models(conn, [Big])
    conn.executemany("INSERT INTO big VALUES (?, ?, ?)", ((i, f"row {i}", i * 7) for i in range(BIG_ROWS)))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sigkill_during_a_long_rebuild_never_corrupts_or_loses_rows(tmp_path, journal_mode):
    template = tmp_path / "template.db"
    make_big_database(template, journal_mode)
    timing = tmp_path / "timing.db"
    timing.write_bytes(template.read_bytes())
    started = time.monotonic()
    subprocess.run([sys.executable, str(WORKER), str(timing), "rebuild"], check=True, capture_output=True)
    duration = time.monotonic() - started
    rng = random.Random(journal_mode)
    outcomes = {"old": 0, "new": 0}
    for attempt in range(10):
        path = tmp_path / f"kill{attempt}.db"
        path.write_bytes(template.read_bytes())
        for suffix in ("-wal", "-shm"):
            source = Path(str(template) + suffix)
            if source.exists():
                Path(str(path) + suffix).write_bytes(source.read_bytes())
        worker = subprocess.Popen([sys.executable, str(WORKER), str(path), "rebuild"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert worker.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0, duration))  # kill points spread over the whole migration
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
        conn = sqlite3.connect(path)
        assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
        names = [row[1] for row in rows(conn, "SELECT * FROM pragma_table_info('big')")]
        assert names in (["id", "label", "amount"], ["id", "label", "amount", "flag"])
        assert not rows(conn, "SELECT name FROM sqlite_master WHERE name LIKE '\\_pydsqlite\\_new%' ESCAPE '\\'")
        assert rows(conn, "SELECT count(*), min(id), max(id) FROM big") == [(BIG_ROWS, 0, BIG_ROWS - 1)]
        assert rows(conn, "SELECT amount FROM big WHERE id = 12345") in ([(12345 * 7,)], [(str(12345 * 7),)])
        outcomes["new" if "flag" in names else "old"] += 1
        conn.close()
    assert outcomes["old"] > 0, outcomes  # some kills did land inside the migration


# --- hostile and odd input ------------------------------------------------------------------

ODD = ['my table', 'quo"te', "it's", "[bracket]", "select", "MixedCase", "ünïcödé 表", "semi;colon", "dash-ed", "`tick`"]


def test_odd_identifiers_round_trip_through_sync_and_rebuild(conn):
    annotations = {name: Optional[str] for name in ODD[1:]}
    annotations["id"] = Annotated[int, PrimaryKey()]
    namespace = {"__annotations__": annotations, **{name: None for name in ODD[1:]}}
    first = type(SyncModel)("Odd", (SyncModel,), namespace, table=ODD[0], indexes=[Index(ODD[1], ODD[2], name="ix [odd] \"name\""), Index(ODD[3], unique=True)])
    sync_models(conn, [first])
    assert model_migration_plan(conn, [first]).is_empty
    conn.execute(f'INSERT INTO "my table" (id, "{ODD[4]}") VALUES (1, \'v\')')
    annotations2 = dict(annotations)
    annotations2[ODD[4]] = str  # NOT NULL with a default forces a rebuild
    namespace2 = {"__annotations__": annotations2, **{name: None for name in ODD[1:]}, ODD[4]: "d"}
    namespace2["renamed ünï"] = None
    annotations2["renamed ünï"] = Annotated[Optional[str], RenamedFrom(ODD[5])]
    del annotations2[ODD[5]], namespace2[ODD[5]]
    second = type(SyncModel)("Odd", (SyncModel,), namespace2, table=ODD[0], indexes=[Index(ODD[1], ODD[2], name="ix [odd] \"name\""), Index(ODD[3], unique=True)])
    plan = sync_models(conn, [second])
    assert plan.rebuilt_tables == (ODD[0],)
    assert model_migration_plan(conn, [second]).is_empty
    assert rows(conn, f'SELECT "{ODD[4]}" FROM "my table"') == [("v",)]
    assert 'ix [odd] "name"' in index_names(conn, ODD[0])


def test_defaults_and_names_are_never_formatted_into_sql_unquoted(conn):
    evil = "'); DROP TABLE victims; --"

    class Victim(SyncModel, table="victims"):
        id: int

    class Evil(SyncModel, table="evil"):
        id: int
        note: str = evil
        other: Annotated[str, Field(max_length=3)] = "a'b"

    sync_models(conn, [Victim, Evil])
    conn.execute("INSERT INTO evil (id) VALUES (1)")
    assert rows(conn, "SELECT note, other FROM evil") == [(evil, "a'b")]
    assert table_sql(conn, "victims") is not None
    assert model_migration_plan(conn, [Victim, Evil]).is_empty


def test_not_a_database_readonly_and_missing_directory_give_clear_errors(tmp_path, db_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(MigrationError, match="not a database"):
        sync_models(garbage, [Events])
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Events])
    conn.close()

    class EventsV2(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: str
        payload: Optional[str] = None
        extra: Optional[int] = None

    readonly = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    assert not model_migration_plan(readonly, [EventsV2]).is_empty
    with pytest.raises(MigrationError, match="readonly"):
        sync_models(readonly, [EventsV2])
    readonly.close()
    with pytest.raises(MigrationError, match="cannot open database|unable to open"):
        sync_models(tmp_path / "missing" / "dir" / "x.db", [Events])
    with pytest.raises(PydsqliteError):
        model_migration_plan(garbage, [Events])


def test_foreign_key_violations_that_predate_the_migration_do_not_block_it(conn):
    class Parent(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]

    class Child(SyncModel, table="kids"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id")] = None

    class Child2(SyncModel, table="kids"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id", on_delete="cascade")] = None
        note: str = ""

    sync_models(conn, [Parent, Child])
    conn.execute("INSERT INTO kids VALUES (1, 42)")  # foreign keys are off: an orphan slips in
    conn.commit()
    conn.execute("PRAGMA foreign_keys = ON")
    assert sync_models(conn, [Parent, Child2]).rebuilt_tables == ("kids",)
    assert rows(conn, "SELECT id, parent_id, note FROM kids") == [(1, 42, "")]


def test_previews_never_create_a_missing_file(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(MigrationError, match="cannot open database|unable to open"):
        model_migration_plan(missing, [Events])
    with pytest.raises(MigrationError):
        migration_history(missing)
    assert not missing.exists()
    sync_models(missing, [Events])
    assert missing.exists() and model_migration_plan(missing, [Events]).is_empty


def test_by_default_a_migration_waits_for_another_writer_longer_than_the_connection_would(db_path):
    import threading

    conn = sqlite3.connect(db_path, timeout=0.1)
    sync_models(conn, [Events])
    blocker = sqlite3.connect(db_path, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, blocker.rollback)

    class EventsV2(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        kind: str
        payload: Optional[str] = None
        extra: Optional[str] = None

    started = time.monotonic()  # before the timer starts: the lock is held for 1 s after this, however late this thread runs
    release.start()
    assert not sync_models(conn, [EventsV2]).is_empty
    assert time.monotonic() - started >= 0.9
    assert rows(conn, "PRAGMA busy_timeout") == [(100,)]
    release.join()
    blocker.close()
    conn.close()


def test_a_read_only_database_that_already_matches_syncs_without_writing(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Events])
    conn.execute("CREATE TABLE unrelated (x)")  # changes schema_version: the fast path cannot answer
    conn.commit()
    conn.close()
    readonly = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    assert sync_models(readonly, [Events]).is_empty
    readonly.close()


def test_paths_with_spaces_and_uri_characters_work_for_every_entry_point(tmp_path):
    from pydsqlite import schema_from_database

    path = tmp_path / "my dir?#1" / "app %20.db"
    path.parent.mkdir()
    sync_models(path, [Events])
    assert model_migration_plan(path, [Events]).is_empty
    assert len(migration_history(path)) == 1
    assert [t.name for t in schema_from_database(path).tables] == ["events"]


@pytest.mark.parametrize("shadowed", ["an existing table", "a table the models add"])
@pytest.mark.parametrize("kind", ["TABLE", "VIEW"])
def test_a_temp_table_named_like_a_table_of_the_migration_is_refused(db_path, shadowed, kind):
    """SQLite resolves unqualified names in TEMP first: the migration would alter the connection's
    scratch table and record the change as made in the file."""

    class Item(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class ItemV2(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]
        name: str
        size: int = 0

    class Extra(SyncModel, table="extras"):
        id: Annotated[int, PrimaryKey()]

    conn = sqlite3.connect(db_path)
    sync_models(conn, [Item])
    conn.execute("INSERT INTO items VALUES (1, 'kept')")
    conn.commit()
    name = "items" if shadowed == "an existing table" else "extras"
    body = "(id INTEGER PRIMARY KEY, name TEXT)" if kind == "TABLE" else "AS SELECT 1 AS id"
    conn.execute(f"CREATE TEMP {kind} {name.upper()} {body}")  # another spelling: names ignore ASCII case
    before = db_path.read_bytes()
    for attempt in (model_migration_plan, sync_models):
        with pytest.raises(MigrationError, match=rf"TEMP {kind.lower()} '{name.upper()}' on this connection is named like a table"):
            attempt(conn, [ItemV2, Extra])
    assert db_path.read_bytes() == before
    conn.execute(f"DROP {kind} temp.{name}")
    sync_models(conn, [ItemV2, Extra])
    assert conn.execute("SELECT * FROM main.items").fetchall() == [(1, "kept", 0)]


class Keyed(SyncModel, table="keyed"):
    id: Annotated[int, PrimaryKey()]
    v: int


@pytest.mark.parametrize(
    "create",
    [
        "CREATE TABLE keyed (id INTEGER PRIMARY KEY DESC, v INTEGER NOT NULL)",  # SQLite's quirk: not the rowid
        "CREATE TABLE keyed (id INTEGER NOT NULL UNIQUE, v INTEGER NOT NULL)",  # the column becomes the key
        "CREATE TABLE keyed (id INTEGER NOT NULL PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID",
    ],
    ids=["INTEGER PRIMARY KEY DESC", "a unique column", "WITHOUT ROWID"],
)
def test_a_column_becoming_the_rowid_key_is_checked_for_values_that_cannot_be_keys(db_path, create):
    """An INTEGER PRIMARY KEY is the rowid: it takes integers alone (NULL makes SQLite pick a new
    key). Values that cannot be keys are named in the preview and refused, never a bare
    "datatype mismatch" mid-copy or a NULL key silently given a number."""
    conn = sqlite3.connect(db_path)
    conn.execute(create)
    conn.executemany("INSERT INTO keyed VALUES (?, ?)", [(1, 10), ("abc", 20), (2.5, 30)])
    conn.commit()
    before = db_path.read_bytes()
    plan = model_migration_plan(conn, [Keyed])
    (problem,) = plan.problems
    assert problem.startswith("keyed.id: 2 rows: values are not integers, so they cannot become the rowid key (INTEGER PRIMARY KEY) (e.g. ")
    with pytest.raises(MigrationError, match="keyed.id: 2 rows: values are not integers"):
        sync_models(conn, [Keyed], allow_destructive=True)
    assert db_path.read_bytes() == before
    conn.execute("DELETE FROM keyed WHERE typeof(id) != 'integer'")
    conn.commit()
    sync_models(conn, [Keyed])
    assert conn.execute("SELECT id, v FROM keyed").fetchall() == [(1, 10)]
    conn.execute("INSERT INTO keyed (v) VALUES (40)")  # the key is the rowid now: SQLite numbers it
    assert conn.execute("SELECT id FROM keyed WHERE v = 40").fetchone() == (2,)
    assert model_migration_plan(conn, [Keyed]).is_empty


def test_integer_primary_key_desc_holding_null_keys_is_not_adopted_as_the_rowid(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE keyed (id INTEGER PRIMARY KEY DESC, v INTEGER NOT NULL)")
    conn.executemany("INSERT INTO keyed VALUES (?, ?)", [(None, 1), (None, 2), (7, 3)])
    conn.commit()
    plan = model_migration_plan(conn, [Keyed])
    assert "INTEGER PRIMARY KEY DESC becomes the rowid" in str(plan)
    assert any("keyed.id: 2 rows: rows hold NULL" in problem for problem in plan.problems)
    with pytest.raises(MigrationError, match="keyed.id: 2 rows: rows hold NULL"):
        sync_models(conn, [Keyed])


@pytest.mark.parametrize("kind", ["VIRTUAL", "STORED"])
def test_a_generated_column_turning_plain_keeps_the_values_readers_saw(conn, kind):
    conn.executescript(
        f"""
        CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) {kind});
        INSERT INTO t (id, a) VALUES (1, 5), (2, 7), (3, NULL);
        """
    )
    plain = schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER);")
    plan = schema_migration_plan(conn, plain)
    # the rule goes: later writes to a leave b as it is, so the step needs allow_destructive
    assert plan.rebuilt_tables == ("t",) and [operation.row_count for operation in plan.destructive_operations] == [3]
    assert "alter column b (no longer generated)" in str(plan)
    assert f"t.b: 3 rows: values would stop following GENERATED ALWAYS AS (a * 2) {kind}" in str(plan)
    before = rows(conn, "SELECT sql FROM sqlite_master")
    with pytest.raises(DestructiveChangeError):
        sync_schema(conn, plain)
    assert rows(conn, "SELECT sql FROM sqlite_master") == before
    sync_schema(conn, plain, allow_destructive=True)
    assert rows(conn, "SELECT id, a, b FROM t ORDER BY id") == [(1, 5, 10), (2, 7, 14), (3, None, None)]
    conn.execute("UPDATE t SET a = 1 WHERE id = 1")  # b is plain data now
    assert rows(conn, "SELECT b FROM t WHERE id = 1") == [(10,)]


def test_a_model_declaring_a_live_generated_column_as_a_field_names_the_rule_it_would_drop(conn):
    """A model cannot declare a generated column: adopting a table that has one with the column as a plain
    field would make it plain data, which later writes to what it was computed from leave stale."""
    conn.executescript(
        """
        CREATE TABLE products (id INTEGER PRIMARY KEY, price REAL NOT NULL, qty INTEGER NOT NULL,
                               total REAL GENERATED ALWAYS AS (price * qty) STORED);
        INSERT INTO products (id, price, qty) VALUES (1, 2.5, 4), (2, 1.0, 3);
        """
    )

    class Product(SyncModel, table="products"):
        id: Annotated[int, PrimaryKey()]
        price: float
        qty: int
        total: Optional[float] = None

    plan = model_migration_plan(conn, [Product])
    assert "rebuild table products: alter column total (no longer generated)" in str(plan)
    assert "products.total: 2 rows: values would stop following GENERATED ALWAYS AS (price * qty) STORED" in str(plan)
    with pytest.raises(DestructiveChangeError):
        sync_models(conn, [Product])
    assert "GENERATED ALWAYS AS (price * qty) STORED" in rows(conn, "SELECT sql FROM sqlite_master WHERE name = 'products'")[0][0]
    assert rows(conn, "SELECT total FROM products ORDER BY id") == [(10.0,), (3.0,)]


def test_a_plan_names_each_check_and_unique_constraint_a_rebuild_drops_or_adds(conn):
    """Adopting a table whose hand-written constraints the model does not declare drops them: the plan
    says which, as SQL, not just that something changed."""
    conn.executescript(
        """
        CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('new', 'paid')),
                             qty INTEGER NOT NULL, ref TEXT UNIQUE ON CONFLICT REPLACE,
                             CONSTRAINT qty_small CHECK (qty < 1000));
        INSERT INTO orders VALUES (1, 'new', 3, 'a');
        """
    )

    class Order(SyncModel, table="orders"):
        id: Annotated[int, PrimaryKey()]
        status: str
        qty: Annotated[int, Field(gt=0)]
        ref: Optional[str] = None

    described = model_migration_plan(conn, [Order]).operations[0].description
    assert "alter column status (drops CHECK (status IN ('new', 'paid')))" in described
    assert "alter column qty (adds CHECK (`qty` > 0))" in described
    assert "table check and unique constraints changed (drops CONSTRAINT qty_small CHECK (qty < 1000), UNIQUE (ref) ON CONFLICT REPLACE)" in described


def test_a_rebuild_says_which_names_it_respells_as_the_models_spell_them(conn):
    """Names differing only in case are the same to SQL, but a rebuild recreates the table in the models'
    spelling, which ``cursor.description`` and code comparing names see: the plan lists them."""
    conn.execute('CREATE TABLE "Users" ("ID" INTEGER PRIMARY KEY, "Name" TEXT, "EMail" TEXT)')
    conn.execute("INSERT INTO Users VALUES (1, NULL, 'a@x')")

    class User(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        name: str = ""
        email: Optional[str] = None

    plan = model_migration_plan(conn, [User])
    assert plan.operations[0].description.endswith("; names as the models spell them: Users -> users, ID -> id, Name -> name, EMail -> email")
    sync_models(conn, [User])
    cursor = conn.execute("SELECT * FROM users")
    assert [column[0] for column in cursor.description] == ["id", "name", "email"] and cursor.fetchall() == [(1, "", "a@x")]


def test_a_stored_column_turning_generated_is_destructive_counting_the_values_it_replaces(conn):
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER); INSERT INTO t VALUES (1, 5, 99), (2, 7, NULL);")
    generated = schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL);")
    plan = schema_migration_plan(conn, generated)
    assert [operation.row_count for operation in plan.destructive_operations] == [1]
    assert "t.b: 1 row: stored values would be replaced by the generated column's expression (e.g. 99)" in str(plan)
    with pytest.raises(DestructiveChangeError):
        sync_schema(conn, generated)
    assert rows(conn, "SELECT * FROM t ORDER BY id") == [(1, 5, 99), (2, 7, None)]
    sync_schema(conn, generated, allow_destructive=True)
    assert rows(conn, "SELECT id, b FROM t ORDER BY id") == [(1, 10), (2, 14)]


def test_a_stored_column_turning_generated_whose_values_already_equal_the_expression_is_not_destructive(conn):
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER); INSERT INTO t VALUES (1, 5, 10), (2, 7, 14), (3, 1, NULL);")
    generated = schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL);")
    plan = schema_migration_plan(conn, generated)
    assert plan.rebuilt_tables == ("t",) and not plan.destructive_operations
    sync_schema(conn, generated)
    assert rows(conn, "SELECT id, b FROM t ORDER BY id") == [(1, 10), (2, 14), (3, 2)]
