"""Data steps: user code run once per database inside the migration, between the phase that
adds and the phase that drops and tightens; every guarantee of a plain migration still holds."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import sqlite3
import sys
import threading
import time
import warnings
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pydsqlite import (
    LWW,
    Collate,
    Database,
    DataStep,
    DataStepError,
    DestructiveChangeError,
    Field,
    ForeignKey,
    Index,
    MigrationError,
    MigrationPlan,
    PrimaryKey,
    RenamedFrom,
    SyncModel,
    Unique,
    UsageError,
    migration_history,
    model_migration_plan,
    schema_from_sql,
    schema_migration_plan,
    sync_models,
    sync_schema,
)
from pydsqlite.engines import Engine, SqliteEngine
from pydsqlite.migrate.introspect import introspect
from pydsqlite.sql.render import quote_identifier

from .helpers import columns, require
from .test_sync_properties import edited_world, insert_rows, row_strategy, world_models, world_specs
from .test_tombstone_migrations import MIGRATIONS, _before, _states


class User(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    name: str
    email: Optional[str] = None


class UserV2(SyncModel, table="users"):
    """The email moves to its own table; every user gets a slug."""

    id: Annotated[int, PrimaryKey()]
    name: str
    slug: str


class Email(SyncModel, table="emails"):
    id: Annotated[int, PrimaryKey()] = None  # None: SQLite assigns it
    user_id: Annotated[int, ForeignKey("users.id", on_delete="cascade"), Index()]
    address: str


V2 = [UserV2, Email]
MOVED = ["users.email -> emails.address"]


def seeded(conn: sqlite3.Connection) -> sqlite3.Connection:
    sync_models(conn, [User])
    conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(1, "Ann", "ann@example.com"), (2, "Bob", None), (3, "Cy", "cy@example.com")])
    conn.commit()
    return conn


def split_emails(db) -> None:
    db.conn.execute("INSERT INTO emails (user_id, address) SELECT id, email FROM users WHERE email IS NOT NULL")
    db.conn.execute("UPDATE users SET slug = lower(name)")


def rows(conn: sqlite3.Connection, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


# --- the two phases ------------------------------------------------------------------------


def test_a_step_sees_new_tables_and_columns_and_the_old_ones_and_its_moves_need_no_allow_destructive(conn):
    seeded(conn)
    seen: dict[str, object] = {}

    def step(db) -> None:
        seen["users"] = set(columns(db.conn, "users"))
        seen["users.slug"] = columns(db.conn, "users")["slug"]
        seen["emails"] = set(columns(db.conn, "emails"))
        seen["in transaction"] = db.conn.in_transaction
        split_emails(db)

    plan = sync_models(conn, V2, data_steps={"001_split_emails": DataStep(step, moves=MOVED)})
    assert seen == {
        "users": {"id", "name", "email", "slug"},  # the dropped column is still readable
        "users.slug": ("TEXT", False, None),  # the new NOT NULL column exists, nullable, until after the step
        "emails": {"id", "user_id", "address"},
        "in transaction": True,
    }
    assert str(plan) == (
        "Migration plan (3 operations, 1 data step):\n"
        "  1. create table emails (3 columns, 1 index)\n"
        "  2. add column users.slug\n"
        "  data step 001_split_emails\n"
        "  3. rebuild table users: alter column slug (NOT NULL); drop column email"
    )
    assert [op.after_data_steps for op in plan.operations] == [False, False, True]
    assert plan.data_steps == ("001_split_emails",) and not plan.destructive_operations
    assert columns(conn, "users") == {"id": ("INTEGER", True, None), "name": ("TEXT", True, None), "slug": ("TEXT", True, None)}
    assert rows(conn, "SELECT * FROM users") == [(1, "Ann", "ann"), (2, "Bob", "bob"), (3, "Cy", "cy")]
    assert rows(conn, "SELECT user_id, address FROM emails") == [(1, "ann@example.com"), (3, "cy@example.com")]
    assert model_migration_plan(conn, V2).is_empty


def test_each_step_runs_once_per_database_in_name_order_and_is_recorded(db_path):
    ran: list[str] = []
    steps = {name: (lambda db, name=name: ran.append(name)) for name in ("b_second", "a_first", "c_third")}
    conn = sqlite3.connect(db_path)
    seeded(conn)
    plan = sync_models(conn, [User], data_steps=steps)
    assert ran == ["a_first", "b_second", "c_third"] and plan.data_steps == ("a_first", "b_second", "c_third")
    assert str(plan) == "Migration plan (0 operations, 3 data steps):\n  data step a_first\n  data step b_second\n  data step c_third"
    assert plan.sql == "-- data step a_first\n-- data step b_second\n-- data step c_third\n"
    assert sync_models(conn, [User], data_steps=steps).is_empty
    conn.close()
    again = sqlite3.connect(db_path)  # another connection, another process: the record is in the file
    assert sync_models(again, [User], data_steps=steps).is_empty and ran == ["a_first", "b_second", "c_third"]
    steps["d_later"] = lambda db: ran.append("d_later")  # a step added in a later release runs, alone
    assert model_migration_plan(again, [User], data_steps=steps).data_steps == ("d_later",)
    assert sync_models(again, [User], data_steps=steps).data_steps == ("d_later",)
    history = migration_history(again)
    assert [entry.data_steps for entry in history] == [(), ("a_first", "b_second", "c_third"), ("d_later",)]
    assert "data step d_later" in history[-1].description and "-- data step d_later" in history[-1].sql
    again.close()


def test_without_pending_steps_the_plan_is_the_plan_without_steps(conn):
    seeded(conn)
    sync_models(conn, [User], data_steps={"001_noop": lambda db: None})
    applied = {"001_noop": lambda db: None}
    with_steps = model_migration_plan(conn, V2, data_steps=applied)
    without = model_migration_plan(conn, V2)
    assert with_steps == without and str(with_steps) == str(without) and with_steps.sql == without.sql
    assert not any(op.after_data_steps for op in with_steps.operations)


def test_the_preview_lists_pending_steps_where_they_run_and_changes_nothing(conn, db_path):
    seeded(conn)
    before = db_path.read_bytes()
    ran: list[str] = []
    plan = model_migration_plan(conn, V2, data_steps={"001_split_emails": DataStep(lambda db: ran.append("x"), moves=MOVED)})
    assert str(plan) == (
        "Migration plan (3 operations, 1 data step):\n"
        "  1. create table emails (3 columns, 1 index)\n"
        "  2. add column users.slug\n"
        "  data step 001_split_emails\n"
        "  3. rebuild table users: alter column slug (NOT NULL); drop column email\n"
        "    ! values of users.email found in emails.address after data step 001_split_emails (as often as they were dropped) are not counted as lost\n"
        "    ! checked against the data after the data steps"
    )
    assert "ALTER TABLE `users` ADD COLUMN `slug` TEXT;\n-- data step 001_split_emails\nCREATE TABLE `_pydsqlite_new_users`" in plan.sql
    assert not plan.problems and not ran and db_path.read_bytes() == before and not conn.in_transaction


# --- contract checks run after the steps --------------------------------------------------


class Tag(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: Optional[str] = None
    parent: Optional[int] = None


class TagNotNull(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: str
    parent: Optional[int] = None


class TagUnique(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: Annotated[Optional[str], Unique()] = None
    parent: Optional[int] = None


class TagShort(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: Annotated[Optional[str], Field(max_length=3)] = None
    parent: Optional[int] = None


class TagLinked(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: Optional[str] = None
    parent: Annotated[Optional[int], ForeignKey("tags.id")] = None


class TagRekeyed(SyncModel, table="tags", primary_key=("label",)):
    id: int
    label: str
    parent: Optional[int] = None


TIGHTENINGS = {
    # model, the step that makes the data fit, the message when the data does not fit
    "NOT NULL": (TagNotNull, "UPDATE tags SET label = 'none' WHERE label IS NULL",
                 "tags.label: 1 row: rows hold NULL but the column becomes NOT NULL with no default (e.g. the row with id 3)"),
    "unique index": (TagUnique, "UPDATE tags SET label = label || id WHERE id = 2",
                     "tags.label: 2 rows: rows share a value that unique index uq_tags_label requires to be unique (e.g. 'red')"),
    "CHECK": (TagShort, "UPDATE tags SET label = substr(label, 1, 3)",
              "tags.label: 1 row: rows violate CHECK (length(`label`) <= 3) (e.g. the row with id 1, where label is 'crimson')"),
    "foreign key": (TagLinked, "UPDATE tags SET parent = NULL WHERE parent = 99",
                    "tags.parent: 1 row: rows reference no row of tags through the new foreign key to tags(id) (e.g. 99)"),
    "primary key": (TagRekeyed, "UPDATE tags SET label = coalesce(label, 'none') || id",
                    "tags.label: 3 rows: rows share a value that the primary key requires to be unique (e.g. 'red')"),
}


@pytest.mark.parametrize("fits", [True, False], ids=["step fixes the data", "step leaves it"])
@pytest.mark.parametrize("tightening", sorted(TIGHTENINGS))
def test_checks_of_what_the_steps_prepare_run_after_them_and_a_violation_rolls_everything_back(db_path, tightening, fits):
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Tag])
    conn.execute("CREATE TABLE step_log (entry TEXT)")  # made by hand: the step writes to it too
    conn.executemany("INSERT INTO tags VALUES (?, ?, ?)", [(1, "red", None), (2, "red", 1), (3, None, 99 if tightening == "foreign key" else None)])
    if tightening == "CHECK":
        conn.execute("UPDATE tags SET label = 'crimson' WHERE id = 1")
    if tightening == "primary key":
        conn.execute("UPDATE tags SET label = 'red' WHERE id = 3")
    conn.commit()
    model, fix, message = TIGHTENINGS[tightening]
    preview = model_migration_plan(conn, [model], data_steps={"fix": lambda db: None})
    assert not preview.problems  # what the step will leave is not known before it runs
    assert preview.operations[-1].findings == ("checked against the data after the data steps",)
    before = db_path.read_bytes()
    def step(db) -> None:
        db.conn.execute("INSERT INTO step_log VALUES ('ran')")
        if fits:
            db.conn.execute(fix)

    if fits:
        plan = sync_models(conn, [model], data_steps={"fix": step})
        assert plan.data_steps == ("fix",) and model_migration_plan(conn, [model]).is_empty
        assert rows(conn, "SELECT count(*) FROM tags") == [(3,)] and rows(conn, "SELECT * FROM step_log") == [("ran",)]
        return
    with pytest.raises(MigrationError) as raised:
        sync_models(conn, [model], data_steps={"fix": step})
    assert str(raised.value) == f"the migration cannot be applied after data step fix; nothing was changed:\n  - {message}"
    assert db_path.read_bytes() == before and not conn.in_transaction
    assert rows(conn, "SELECT * FROM step_log") == [] and migration_history(conn)[-1].data_steps == ()
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_declared_moves_count_only_values_found_where_they_were_moved(db_path):
    conn = seeded(sqlite3.connect(db_path))
    before = db_path.read_bytes()

    def forgets_cy(db) -> None:
        split_emails(db)
        db.conn.execute("DELETE FROM emails WHERE user_id = 3")

    steps = {"001_split_emails": DataStep(forgets_cy, moves=MOVED)}
    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, V2, data_steps=steps)
    assert str(raised.value) == (
        "the migration would lose data after data step 001_split_emails; pass allow_destructive=True to apply it. Destructive steps:\n"
        "  - DESTRUCTIVE rebuild table users: alter column slug (NOT NULL); drop column email [1 row]\n"
        "    ! users.email: 1 row: values would be deleted with the column: data step 001_split_emails moved them to "
        "emails.address, but these are not there as many times as here (e.g. 'cy@example.com')"
    )
    assert [op.row_count for op in raised.value.operations] == [1]
    assert db_path.read_bytes() == before
    plan = sync_models(conn, V2, data_steps=steps, allow_destructive=True)
    assert [op.row_count for op in plan.destructive_operations] == [1]
    assert rows(conn, "SELECT address FROM emails") == [("ann@example.com",)]
    conn.close()


def test_a_drop_no_step_declares_moved_is_refused_before_any_step_runs(conn, db_path):
    seeded(conn)
    before = db_path.read_bytes()
    ran: list[str] = []
    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, V2, data_steps={"001_split_emails": lambda db: ran.append("ran")})
    assert "DESTRUCTIVE rebuild table users: alter column slug (NOT NULL); drop column email" in str(raised.value)
    assert "after data step" not in str(raised.value)
    assert ran == [] and db_path.read_bytes() == before
    sync_models(conn, V2, data_steps={"001_split_emails": split_emails}, allow_destructive=True)
    assert rows(conn, "SELECT count(*) FROM emails") == [(2,)]


class Profile(SyncModel, table="profiles"):
    id: Annotated[int, PrimaryKey()]
    user_id: int
    bio: Optional[str] = None


class UserWithBio(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    name: str
    email: Optional[str] = None
    bio: Optional[str] = None


@pytest.mark.parametrize("merged", ["all", "all but one"])
def test_a_dropped_table_whose_columns_are_declared_moved_loses_only_rows_not_found_there(db_path, merged):
    conn = seeded(sqlite3.connect(db_path))
    sync_models(conn, [User, Profile])
    conn.executemany("INSERT INTO profiles VALUES (?, ?, ?)", [(10, 1, "likes tea"), (11, 3, "writes"), (12, 2, None)])
    conn.commit()
    before = db_path.read_bytes()

    def merge(db) -> None:
        db.conn.execute("UPDATE users SET bio = (SELECT bio FROM profiles WHERE user_id = users.id)")
        if merged != "all":
            db.conn.execute("UPDATE users SET bio = NULL WHERE id = 3")

    steps = {"merge_profiles": DataStep(merge, moves=["profiles.bio -> users.bio"])}
    preview = model_migration_plan(conn, [UserWithBio], data_steps=steps)
    assert [(op.description, op.destructive) for op in preview.operations] == [
        ("add column users.bio", False), ("drop table profiles", False)
    ]
    if merged == "all":
        plan = sync_models(conn, [UserWithBio], data_steps=steps)
        assert not plan.destructive_operations
        assert rows(conn, "SELECT id, bio FROM users") == [(1, "likes tea"), (2, None), (3, "writes")]
        return
    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, [UserWithBio], data_steps=steps)
    assert (
        "! profiles: 1 row: rows would be deleted with the table: data step merge_profiles moved their bio to users.bio, "
        "but these are not there as many times as here (e.g. 'writes')"
    ) in str(raised.value)
    assert db_path.read_bytes() == before
    conn.close()


# --- failing steps ---------------------------------------------------------------------------


def test_a_failing_step_rolls_back_the_whole_migration_and_is_named(db_path):
    conn = seeded(sqlite3.connect(db_path))
    before = db_path.read_bytes()
    ran: list[str] = []

    def first(db) -> None:
        split_emails(db)
        db.insert(Email(user_id=2, address="bob@example.com"))
        ran.append("first")

    def second(db) -> None:
        ran.append("second")
        db.insert(Email(user_id=1, address=None))  # type: ignore[arg-type]

    steps = {"1_first": DataStep(first, moves=MOVED), "2_second": second, "3_third": lambda db: ran.append("third")}
    with pytest.raises(DataStepError) as raised:
        sync_models(conn, V2, data_steps=steps)
    error = raised.value
    assert isinstance(error, MigrationError) and error.step == "2_second"
    assert str(error).startswith("data step '2_second' failed: ValidationError: 1 validation error for Email")
    assert str(error).endswith("; nothing was changed") and type(error.__cause__).__name__ == "ValidationError"
    assert ran == ["first", "second"] and db_path.read_bytes() == before
    assert set(columns(conn, "users")) == {"id", "name", "email"} and migration_history(conn)[-1].data_steps == ()
    assert model_migration_plan(conn, V2, data_steps=steps).data_steps == ("1_first", "2_second", "3_third")
    conn.close()


ENDINGS = {
    "conn.commit()": lambda conn: conn.commit(),
    "conn.rollback()": lambda conn: conn.rollback(),
    "COMMIT": lambda conn: conn.execute("COMMIT"),
    "END": lambda conn: conn.execute("END TRANSACTION"),
    "ROLLBACK": lambda conn: conn.execute("ROLLBACK"),
    "RELEASE the migration's savepoint": lambda conn: conn.execute("RELEASE pydsqlite_migration"),
    "ROLLBACK TO the migration's savepoint": lambda conn: conn.execute("ROLLBACK TO pydsqlite_migration"),
}


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "caught by the step"])
@pytest.mark.parametrize("inside_callers_transaction", [False, True], ids=["own transaction", "caller's transaction"])
@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_step_that_commits_or_rolls_back_is_refused_and_nothing_changes(db_path, ending, inside_callers_transaction, swallowed):
    conn = seeded(sqlite3.connect(db_path))
    before = db_path.read_bytes()
    if inside_callers_transaction:
        conn.execute("INSERT INTO users VALUES (4, 'Dee', 'dee@example.com')")  # the caller's pending work
    after_ending: list[str] = []

    def ends_the_transaction(db) -> None:
        split_emails(db)
        try:
            ENDINGS[ending](db.conn)
        except sqlite3.DatabaseError:
            if not swallowed:
                raise
        db.conn.execute("INSERT INTO emails (user_id, address) VALUES (2, 'bob@example.com')")
        after_ending.append("went on")

    steps = {"001_split_emails": DataStep(ends_the_transaction, moves=MOVED)}
    with pytest.raises(DataStepError) as raised:
        sync_models(conn, V2, data_steps=steps, allow_destructive=True)
    assert raised.value.step == "001_split_emails"
    assert "tried to end the migration's transaction" in str(raised.value) and str(raised.value).endswith("nothing was changed")
    assert after_ending == (["went on"] if swallowed else [])
    assert set(columns(conn, "users")) == {"id", "name", "email"}
    assert conn.in_transaction == inside_callers_transaction
    if inside_callers_transaction:
        assert rows(conn, "SELECT count(*) FROM users") == [(4,)]  # the caller's work is still pending, not committed
        conn.rollback()
    assert db_path.read_bytes() == before and migration_history(conn)[-1].data_steps == ()
    conn.execute("INSERT INTO users VALUES (5, 'Eve', NULL)")
    conn.commit()  # the guard is gone once the migration ends
    assert model_migration_plan(conn, V2, data_steps=steps).data_steps == ("001_split_emails",)
    conn.close()


def test_a_step_may_use_savepoints_and_transactions_of_its_own(conn):
    seeded(conn)

    def nested(db) -> None:
        with db.transaction():
            split_emails(db)
        db.conn.execute("SAVEPOINT mine")
        db.conn.execute("INSERT INTO emails (user_id, address) VALUES (2, 'wrong@example.com')")
        db.conn.execute("ROLLBACK TO mine")
        db.conn.execute("RELEASE mine")

    sync_models(conn, V2, data_steps={"001": DataStep(nested, moves=MOVED)})
    assert rows(conn, "SELECT user_id, address FROM emails") == [(1, "ann@example.com"), (3, "cy@example.com")]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_step_interrupted_by_a_base_exception_rolls_back_and_the_exception_goes_through(db_path, interruption):
    conn = seeded(sqlite3.connect(db_path))
    before = db_path.read_bytes()

    def interrupted(db) -> None:
        split_emails(db)
        raise interruption()

    with pytest.raises(interruption):
        sync_models(conn, V2, data_steps={"001_split_emails": DataStep(interrupted, moves=MOVED)})
    assert not conn.in_transaction and db_path.read_bytes() == before
    assert set(columns(conn, "users")) == {"id", "name", "email"} and migration_history(conn)[-1].data_steps == ()
    sync_models(conn, V2, data_steps={"001_split_emails": DataStep(split_emails, moves=MOVED)})  # the next run applies it
    assert rows(conn, "SELECT count(*) FROM emails") == [(2,)]
    conn.close()


def test_a_step_that_returns_an_awaitable_is_refused_and_nothing_changes(db_path):
    """A lambda or partial around an async function hides it until it runs: its coroutine would never run."""
    conn = seeded(sqlite3.connect(db_path))
    before = db_path.read_bytes()

    async def fill(db) -> None:
        split_emails(db)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        with pytest.raises(DataStepError) as raised:
            sync_models(conn, V2, data_steps={"001": DataStep(lambda db: fill(db), moves=MOVED)})
    assert raised.value.step == "001" and str(raised.value) == (
        "data step '001': it returned an awaitable, but a data step is a plain function: it runs inside the migration, "
        "on the connection's thread with pydsqlite.aio too, and gets a Database (not an AsyncDatabase); nothing was changed"
    )
    assert db_path.read_bytes() == before
    conn.close()


def test_a_step_name_is_its_identity_a_new_function_under_an_applied_name_does_not_run(conn):
    """Like a migration file's name: once recorded, the name is done, whatever function it maps to later."""
    seeded(conn)
    sync_models(conn, [User], data_steps={"001_fill": lambda db: db.conn.execute("UPDATE users SET name = upper(name)")})
    ran: list[str] = []
    changed = {"001_fill": lambda db: ran.append("changed")}
    assert model_migration_plan(conn, [User], data_steps=changed).is_empty
    assert sync_models(conn, [User], data_steps=changed).is_empty and ran == []
    renamed = {"001_fill": changed["001_fill"], "002_fill_again": lambda db: ran.append("renamed")}
    assert sync_models(conn, [User], data_steps=renamed).data_steps == ("002_fill_again",) and ran == ["renamed"]
    assert rows(conn, "SELECT name FROM users") == [("ANN",), ("BOB",), ("CY",)]


def test_problems_known_without_the_data_refuse_the_migration_before_any_step_runs(conn, db_path):
    seeded(conn)
    conn.execute("CREATE VIEW contacts AS SELECT name, email FROM users")  # made by hand, names the dropped column
    conn.commit()
    before = db_path.read_bytes()
    ran: list[str] = []
    steps = {"001_split_emails": DataStep(lambda db: ran.append("ran"), moves=MOVED)}
    problems = model_migration_plan(conn, V2, data_steps=steps).problems
    assert problems == ("view contacts: no such column: email after the migration; change or drop it first",)
    with pytest.raises(MigrationError) as raised:
        sync_models(conn, V2, data_steps=steps)
    assert str(raised.value) == "the migration cannot be applied; nothing was changed:\n  - " + problems[0]
    assert ran == [] and db_path.read_bytes() == before

    conn.execute("DROP VIEW contacts")

    class BlockedRename(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, RenamedFrom("email")]  # name exists and stays: refused, and said once
        joined: Optional[str] = None  # added before the steps

    assert model_migration_plan(conn, [BlockedRename], data_steps={"noop": lambda db: None}).problems == (
        "users.email cannot be renamed to name: name exists and stays; drop or rename name in one release and rename "
        "email in the next",
    )


def test_usage_errors_are_raised_before_anything_runs(conn, db_path):
    seeded(conn)
    before = db_path.read_bytes()
    ran: list[str] = []

    def step(db) -> None:
        ran.append("ran")

    async def fill_async(db) -> None:
        ran.append("ran")

    async_step = (
        "fill_async is an async function, but a data step is a plain function: it runs inside the migration, on the "
        "connection's thread with pydsqlite.aio too, and gets a Database (not an AsyncDatabase)"
    )
    cases = [
        ([("001", step)], "data_steps= takes a dict of name -> function or DataStep, not list"),
        ({"001": fill_async}, "data step '001': " + async_step),
        ({"": step}, "data_steps= names must be non-empty text, not ''"),
        ({"001": "UPDATE users SET slug = name"}, "data step '001' must be a function of the Database or a DataStep, not str"),
        ({"001": DataStep(step, moves=["users.emial -> emails.address"])},
         "data step '001' declares 'users.emial -> emails.address', but the database has no column users.emial while the steps run"),
        ({"001": DataStep(step, moves=["users.email -> emails.adress"])},
         "data step '001' declares 'users.email -> emails.adress', but the models have no column emails.adress"),
        ({"001": DataStep(step, moves=[*MOVED, "users.name -> emails.address"])},
         "data step '001' declares 'users.name -> emails.address', but this migration drops neither users.name nor table "
         "users: declare a move in the release whose models drop it"),
    ]
    for data_steps, message in cases:
        for entry_point in (model_migration_plan, sync_models):
            with pytest.raises(UsageError) as raised:
                entry_point(conn, V2, data_steps=data_steps)
            assert str(raised.value) == message
    for bad, message in [
        (lambda: DataStep("UPDATE users SET slug = name"), "DataStep takes a function of one argument (the Database), not str"),
        (lambda: DataStep(step, moves="users.email -> emails.address"),
         "DataStep moves= takes a list of 'table.column -> table.column', not the text 'users.email -> emails.address'"),
        (lambda: DataStep(step, moves=["users.email to emails.address"]),
         "DataStep moves= entry 'users.email to emails.address' must read 'table.column -> table.column' (optionally followed by '(distinct)')"),
        (lambda: DataStep(step, moves=["email -> emails.address"]),
         "DataStep moves= entry 'email -> emails.address' must read 'table.column -> table.column' (optionally followed by '(distinct)')"),
        (lambda: DataStep(fill_async), async_step),
    ]:
        with pytest.raises(UsageError) as raised:
            bad()
        assert str(raised.value) == message
    assert ran == [] and db_path.read_bytes() == before


# --- where the migration runs ------------------------------------------------------------


class Item(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    old_price: Optional[str] = None


class ItemV2(SyncModel, table="things", renamed_from="items"):
    id: Annotated[int, PrimaryKey()]
    cents: int
    label: Annotated[str, RenamedFrom("old_price")]


def test_renames_happen_before_the_steps_and_views_follow_them(conn):
    sync_models(conn, [Item])
    conn.executemany("INSERT INTO items VALUES (?, ?)", [(1, "1.50"), (2, "0.25")])
    conn.execute("CREATE VIEW priced AS SELECT id, old_price FROM items")
    conn.commit()

    def to_cents(db) -> None:
        db.conn.execute("UPDATE things SET cents = CAST(round(label * 100) AS INTEGER)")

    plan = sync_models(conn, [ItemV2], data_steps={"cents": to_cents})
    assert [op.description for op in plan.operations_before_data_steps] == [
        "rename table items to things", "rename column things.old_price to label", "add column things.cents"
    ]
    assert rows(conn, "SELECT id, cents, label FROM things") == [(1, 150, "1.50"), (2, 25, "0.25")]
    assert rows(conn, "SELECT * FROM priced") == [(1, "1.50"), (2, "0.25")]
    assert model_migration_plan(conn, [ItemV2]).is_empty


class Doc(SyncModel, table="docs"):
    id: Annotated[int, PrimaryKey()]
    title: Annotated[str, LWW()]
    body: Annotated[Optional[str], LWW()] = None
    summary: Optional[str] = None


class Page(SyncModel, table="pages", renamed_from="docs"):
    """Table renamed; body renamed and no longer LWW (its hidden companion goes); title and summary swap."""

    id: Annotated[int, PrimaryKey()]
    title: Annotated[Optional[str], RenamedFrom("summary"), LWW()] = None
    text: Annotated[Optional[str], RenamedFrom("body")] = None
    summary: Annotated[str, RenamedFrom("title")]
    words: int


def test_renames_swaps_and_hidden_columns_before_the_steps_are_applied_once(tmp_path):
    base = tmp_path / "base.db"
    conn = sqlite3.connect(base)
    sync_models(conn, [Doc])
    conn.execute("INSERT INTO docs (id, title, body, summary) VALUES (1, 'Title', 'two words', 'Short')")
    conn.commit()
    conn.close()
    states = []
    for name, steps in (("plain", None), ("phased", {"words": lambda db: db.conn.execute("UPDATE pages SET words = 2")})):
        path = tmp_path / f"{name}.db"
        path.write_bytes(base.read_bytes())
        conn = sqlite3.connect(path)
        if steps is None:
            conn.execute("ALTER TABLE docs ADD COLUMN words INTEGER NOT NULL DEFAULT 2")  # what the step would write
            conn.commit()
        plan = sync_models(conn, [Page], data_steps=steps)  # never destructive: the hidden column is pydsqlite's
        assert not plan.destructive_operations and model_migration_plan(conn, [Page]).is_empty
        states.append(rows(conn, "SELECT id, title, text, summary, words FROM pages"))
        conn.close()
    assert states == [[(1, "Short", "two words", "Title", 2)]] * 2


class Tagged(SyncModel, table="tagged"):
    id: Annotated[int, PrimaryKey()]
    label: Annotated[str, LWW()]


class TaggedV2(SyncModel, table="tagged"):
    """The LWW column is renamed, and a new LWW column takes its old name (and its clock's name)."""

    id: Annotated[int, PrimaryKey()]
    title: Annotated[str, RenamedFrom("label"), LWW()]
    label: Annotated[Optional[str], LWW()] = None


def test_a_new_lww_column_under_a_renamed_ones_name_gets_its_clock_in_the_expand_phase(tmp_path):
    """The expand phase renames label (and label__hlc) away and adds a new label with a new clock:
    that clock is pydsqlite's, so the phase after the steps has nothing left to do (it planned a
    destructive rebuild dropping it, which a migration without steps never does)."""
    base = tmp_path / "base.db"
    conn = sqlite3.connect(base)
    sync_models(conn, [Tagged])
    Database(conn).insert(Tagged(id=1, label="first"))
    stamp = conn.execute("SELECT label__hlc FROM tagged").fetchone()[0]
    conn.close()

    def in_place(plan: MigrationPlan) -> None:  # no allow_destructive: nothing is lost
        assert not plan.destructive_operations and not plan.rebuilt_tables, plan

    states = _with_and_without_a_step(tmp_path, base, [TaggedV2], "SELECT id, title, title__hlc, label, label__hlc FROM tagged", in_place)
    assert states[0] == states[1] == [(1, "first", stamp, None, "000000000000000:000000000:" + "0" * 36)]


def _with_and_without_a_step(tmp_path: Path, base: Path, models: list, query: str, check=lambda plan: None) -> list[list[tuple]]:
    """The rows ``query`` reads after migrating a copy of ``base`` to ``models`` without data steps,
    and another copy with a step that does nothing (each plan passed to ``check``)."""
    states = []
    for name, steps in (("plain", None), ("phased", {"noop": lambda db: None})):
        path = tmp_path / f"{name}.db"
        path.write_bytes(base.read_bytes())
        conn = sqlite3.connect(path)
        check(sync_models(conn, models, data_steps=steps))
        assert model_migration_plan(conn, models).is_empty
        states.append(rows(conn, query))
        conn.close()
    return states


class TaggedV3(SyncModel, table="tagged"):
    """The LWW column is renamed to a plain one, and a new LWW column takes its old name."""

    id: Annotated[int, PrimaryKey()]
    title: Annotated[str, RenamedFrom("label")]
    label: Annotated[Optional[str], LWW()] = None


@pytest.mark.parametrize("after", [TaggedV2, TaggedV3], ids=["renamed LWW column stays LWW", "renamed LWW column turns plain"])
def test_a_new_lww_column_under_a_renamed_ones_name_starts_at_the_baseline_as_without_steps(tmp_path, after):
    """The new label's clock is its own, starting at the baseline, with or without data steps: not the
    old label's stamps (which the expand phase leaves under the old clock's name when the renamed
    column stops being LWW), nor the row's version (the time of a column that already held values).
    A stamp above the baseline would let the new column's NULL beat another replica's write of it."""
    base = tmp_path / "base.db"
    conn = sqlite3.connect(base)
    sync_models(conn, [Tagged])
    db = Database(conn)
    db.insert(Tagged(id=1, label="first"))
    db.update(Tagged, 1, label="edited")  # the clock now differs from the row's version
    conn.close()
    states = _with_and_without_a_step(tmp_path, base, [after], "SELECT id, title, label, label__hlc, _pydsqlite_version FROM tagged")
    assert states[0] == states[1]  # the row version too (it takes the time of a column turning plain)
    assert [row[:4] for row in states[0]] == [(1, "edited", None, "000000000000000:000000000:" + "0" * 36)]


def test_a_later_edit_of_an_lww_column_renamed_to_a_plain_one_wins_between_replicas_migrated_with_and_without_steps(tmp_path):
    """Replica A migrates with a data step, B without: A's later edit of the old label still beats B's
    earlier one on both (A's new label took the old clock, so its NULL carried A's later time and the
    edit, left under the older row version, lost). Both replicas read one clock that moves a millisecond
    per reading, so A's edit is later than B's even when the two fall in the same real millisecond."""
    moments = itertools.count(time.time_ns() // 1_000_000)
    replicas = []
    for side in ("a", "b"):
        conn = sqlite3.connect(tmp_path / f"{side}.db")
        sync_models(conn, [Tagged])
        replicas.append((conn, Database(conn, wall_clock=lambda: next(moments))))
    (conn_a, a), (conn_b, b) = replicas
    a.insert(Tagged(id=1, label="first"))
    b.apply_changes(a.changes_since(models=[Tagged]), models=[Tagged])
    b.update(Tagged, 1, label="earlier, on b")
    a.update(Tagged, 1, label="later, on a")
    sync_models(conn_a, [TaggedV3], data_steps={"noop": lambda db: None})
    sync_models(conn_b, [TaggedV3])
    b.apply_changes(a.changes_since(models=[TaggedV3]), models=[TaggedV3])
    a.apply_changes(b.changes_since(models=[TaggedV3]), models=[TaggedV3])
    assert [row.title for row in a.select(TaggedV3)] == [row.title for row in b.select(TaggedV3)] == ["later, on a"]


def test_a_parent_rebuilt_after_the_steps_keeps_its_children_with_foreign_keys_on(db_path):
    conn = seeded(sqlite3.connect(db_path))
    conn.execute("PRAGMA foreign_keys = ON")
    plan = sync_models(conn, V2, data_steps={"001_split_emails": DataStep(split_emails, moves=MOVED)})
    assert plan.rebuilt_tables == ("users",)  # emails references users, ON DELETE CASCADE
    assert rows(conn, "SELECT user_id, address FROM emails") == [(1, "ann@example.com"), (3, "cy@example.com")]
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)

    class Note(SyncModel, table="notes"):
        id: Annotated[int, PrimaryKey()]
        user_id: Annotated[int, ForeignKey("users.id")]

    before = db_path.read_bytes()
    with pytest.raises(MigrationError) as raised:  # a step that leaves orphans is rolled back by the final check
        sync_models(conn, [*V2, Note], data_steps={"orphans": lambda db: db.conn.execute("INSERT INTO notes VALUES (1, 99)")})
    assert (
        "would leave 1 row(s) violating foreign keys (notes -> users: 1; e.g. in notes, the row with id 1, where user_id = 99, "
        "which no row of users holds); nothing was changed"
    ) in str(raised.value)
    assert db_path.read_bytes() == before
    conn.close()


def test_inside_the_callers_transaction_the_steps_are_part_of_it(conn):
    seeded(conn)
    conn.execute("INSERT INTO users VALUES (4, 'Dee', 'dee@example.com')")  # the caller's pending work
    assert conn.in_transaction
    with pytest.raises(DataStepError):
        sync_models(conn, V2, data_steps={"boom": DataStep(lambda db: 1 / 0, moves=MOVED)})
    assert conn.in_transaction and rows(conn, "SELECT count(*) FROM users") == [(4,)]
    sync_models(conn, V2, data_steps={"001_split_emails": DataStep(split_emails, moves=MOVED)})
    assert conn.in_transaction  # the caller commits
    conn.commit()
    assert rows(conn, "SELECT address FROM emails ORDER BY user_id") == [("ann@example.com",), ("cy@example.com",), ("dee@example.com",)]


@pytest.mark.parametrize("mode", ["legacy", "isolation_level None", "autocommit True", "autocommit False"])
def test_every_connection_mode_runs_the_steps_in_the_migrations_transaction(db_path, mode):
    if mode.startswith("autocommit") and sys.version_info < (3, 12):
        pytest.skip("sqlite3 autocommit= needs Python 3.12 or later")
    seeded(sqlite3.connect(db_path)).close()
    options = {"legacy": {}, "isolation_level None": {"isolation_level": None},
               "autocommit True": {"autocommit": True}, "autocommit False": {"autocommit": False}}[mode]
    conn = sqlite3.connect(db_path, **options)
    with pytest.raises(DataStepError):
        sync_models(conn, V2, data_steps={"001_split_emails": DataStep(lambda db: (split_emails(db), 1 / 0), moves=MOVED)})
    assert set(columns(conn, "users")) == {"id", "name", "email"}
    sync_models(conn, V2, data_steps={"001_split_emails": DataStep(split_emails, moves=MOVED)})
    assert conn.in_transaction == (mode == "autocommit False")
    other = sqlite3.connect(db_path)
    assert rows(other, "SELECT count(*) FROM emails") == [(2,)]
    other.close()
    conn.close()


def test_two_processes_syncing_at_once_run_a_step_once(db_path):
    seeded(sqlite3.connect(db_path)).close()
    calls: list[str] = []
    second_waits_for_the_lock = threading.Event()
    results: dict[str, object] = {}

    def step(db) -> None:
        calls.append("step")
        assert second_waits_for_the_lock.wait(30)  # the other sync has seen the step pending and waits

    steps = {"001_split_emails": DataStep(lambda db: (split_emails(db), step(db)), moves=MOVED)}

    def sync(name: str) -> None:
        conn = sqlite3.connect(db_path)
        if name == "second":
            conn.set_trace_callback(lambda sql: second_waits_for_the_lock.set() if sql.startswith("BEGIN IMMEDIATE") else None)
        try:
            results[name] = sync_models(conn, V2, data_steps=steps)
        except Exception as error:  # reported by the assertion below
            results[name] = error
        finally:
            conn.close()

    one = threading.Thread(target=sync, args=("first",))
    one.start()
    while not calls and one.is_alive():
        one.join(0.01)
    two = threading.Thread(target=sync, args=("second",))
    two.start()
    one.join()
    two.join()
    assert calls == ["step"], results
    assert results["first"].data_steps == ("001_split_emails",) and results["second"].is_empty, results
    check = sqlite3.connect(db_path)
    assert rows(check, "SELECT count(*) FROM emails") == [(2,)]
    check.close()


def test_steps_get_a_database_of_the_transaction_and_the_progress_callback_sees_the_rebuild(conn):
    seeded(conn)
    seen: list[tuple] = []

    def with_models(db) -> None:
        for user_id, email in db.conn.execute("SELECT id, email FROM users WHERE email IS NOT NULL").fetchall():
            db.insert(Email(user_id=user_id, address=email))
        db.conn.execute("UPDATE users SET slug = 'u' || id")
        assert db.conn is conn and db.count(Email) == 2

    sync_models(conn, V2, data_steps={"001": DataStep(with_models, moves=MOVED)}, progress=lambda *args: seen.append(args))
    assert seen[0] == ("users", 0, 3) and seen[-1] == ("users", 3, 3)
    assert rows(conn, "SELECT slug FROM users") == [("u1",), ("u2",), ("u3",)]


def test_sync_schema_and_its_preview_take_data_steps(conn, db_path):
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO kv VALUES (?, ?)", [("a", "1"), ("b", "2")])
    conn.commit()
    desired = schema_from_sql("CREATE TABLE kv (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    steps = {"to_numbers": DataStep(lambda db: db.conn.execute("UPDATE kv SET n = CAST(v AS INTEGER)"), moves=["kv.v -> kv.n"])}
    preview = schema_migration_plan(conn, desired, data_steps=steps)
    assert preview.data_steps == ("to_numbers",) and not preview.destructive_operations
    plan = sync_schema(conn, desired, data_steps=steps)
    assert str(plan) == (
        "Migration plan (2 operations, 1 data step):\n  1. add column kv.n\n  data step to_numbers\n"
        "  2. rebuild table kv: alter column n (NOT NULL); drop column v"
    )
    assert rows(conn, "SELECT * FROM kv") == [("a", 1), ("b", 2)]
    assert schema_migration_plan(conn, desired, data_steps=steps).is_empty


def test_a_new_database_records_its_steps_without_running_them(conn):
    ran: list[str] = []
    steps = {"001_split_emails": DataStep(lambda db: ran.append("ran"), moves=MOVED)}  # would read users.email
    preview = model_migration_plan(conn, V2, data_steps=steps)
    plan = sync_models(conn, V2, data_steps=steps)
    assert str(plan) == str(preview) == (
        "Migration plan (2 operations, 1 data step):\n"
        "  1. create table users (3 columns)\n"
        "  2. create table emails (3 columns, 1 index)\n"
        "  data step 001_split_emails (not run: a new database has no data to move)"
    )
    assert plan.operations == model_migration_plan(sqlite3.connect(":memory:"), V2).operations  # the plain plan
    assert ran == [] and migration_history(conn)[-1].data_steps == ("001_split_emails",)
    assert sync_models(conn, V2, data_steps=steps).is_empty


def test_a_database_with_tables_of_its_own_runs_the_steps(conn):
    """Tables made outside pydsqlite hold data too: a step may move it into the models' tables."""
    conn.execute("CREATE TABLE legacy_users (name TEXT)")
    conn.executemany("INSERT INTO legacy_users VALUES (?)", [("Ann",), ("Bob",)])
    conn.commit()

    def import_legacy(db) -> None:
        db.conn.execute("INSERT INTO users (id, name, slug) SELECT rowid, name, lower(name) FROM legacy_users")

    plan = sync_models(conn, V2, data_steps={"import": import_legacy})
    assert not plan.data_steps_skipped and rows(conn, "SELECT * FROM users") == [(1, "Ann", "ann"), (2, "Bob", "bob")]


def test_a_step_file_path_works_like_a_connection(tmp_path: Path):
    path = tmp_path / "by-path.db"
    seeded(sqlite3.connect(path)).close()
    sync_models(path, V2, data_steps={"001": DataStep(split_emails, moves=MOVED)})
    assert migration_history(path)[-1].data_steps == ("001",)


# --- a step that does nothing changes nothing about the migration ---------------------------


def _state(conn: sqlite3.Connection) -> tuple:
    """Everything a migration decides: the schema (new columns may come in another order), what
    pydsqlite manages, every row."""
    schema = introspect(SqliteEngine(conn))
    tables = {
        table.name: (
            replace(table, columns=tuple(sorted(table.columns, key=lambda c: c.name)), indexes=tuple(sorted(table.indexes, key=lambda i: i.name))),
            sorted(map(repr, conn.execute(
                f"SELECT {', '.join(sorted(quote_identifier(c.name) for c in table.columns))} FROM {quote_identifier(table.name)}"
            ))),
        )
        for table in schema.tables
    }
    managed = sorted(conn.execute("SELECT * FROM _pydsqlite_objects").fetchall())
    return tables, sorted(t.sql for t in schema.triggers), sorted(v.sql for v in schema.views), managed


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_with_a_step_that_does_nothing_every_migration_ends_as_it_would_without_steps(data, tmp_path_factory):
    """Random tables, rows and edits (tests/test_sync_properties.py): split into the phase that adds
    and the phase after the step, a migration applies or refuses exactly as the plain one does,
    to the same schema, bookkeeping and rows; the phase before the step only adds."""
    folder = tmp_path_factory.mktemp("steps")
    world = data.draw(world_specs())
    conn = sqlite3.connect(folder / "base.db")
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    sync_models(conn, world_models(world))
    insert_rows(conn, world.parent.name, world.parent.columns, data.draw(st.lists(row_strategy(world.parent.columns), max_size=4)), {})
    conn.commit()
    conn.close()
    models = world_models(data.draw(edited_world(world)))
    foreign_keys = data.draw(st.booleans())
    outcomes = []
    for name, steps in (("plain", None), ("phased", {"noop": lambda db: None})):
        path = folder / f"{name}.db"
        path.write_bytes((folder / "base.db").read_bytes())
        conn = sqlite3.connect(path)
        conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        try:
            plan = sync_models(conn, models, allow_destructive=True, data_steps=steps)
        except MigrationError as error:
            assert path.read_bytes() == (folder / "base.db").read_bytes(), error
            outcomes.append((type(error), None))
        else:
            if steps:
                before = plan.operations_before_data_steps
                assert plan.data_steps == ("noop",) and not any(op.destructive for op in before)
                assert {op.kind for op in before} <= {"create_table", "rename_table", "rename_column", "add_column", "enable_lww", "drop_index"}
            assert model_migration_plan(conn, models).is_empty
            outcomes.append(("applied", _state(conn)))
        finally:
            conn.close()
    event(f"{outcomes[0][0]}")
    assert outcomes[0] == outcomes[1]


def test_the_async_entry_points_take_data_steps_with_the_same_guarantees(db_path):
    aiosqlite = require("aiosqlite")
    aio = importlib.import_module("pydsqlite.aio")
    seeded(sqlite3.connect(db_path)).close()
    before = db_path.read_bytes()
    good = {"001_split_emails": DataStep(split_emails, moves=MOVED)}
    committing = {"001_split_emails": DataStep(lambda db: (split_emails(db), db.conn.commit()), moves=MOVED)}

    async def scenario() -> tuple:
        async with aiosqlite.connect(db_path) as conn:
            preview = await aio.model_migration_plan(conn, V2, data_steps=good)
            with pytest.raises(DataStepError) as refused:
                await aio.sync_models(conn, V2, data_steps=committing)
            unchanged = db_path.read_bytes() == before
            applied = await aio.sync_models(conn, V2, data_steps=good)
            history = await aio.migration_history(conn)
            again = await aio.model_migration_plan(conn, V2, data_steps=good)
            return preview, refused.value, unchanged, applied, history, again

    preview, refused, unchanged, applied, history, again = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert preview.data_steps == applied.data_steps == ("001_split_emails",)
    assert refused.step == "001_split_emails" and "tried to end the migration's transaction (COMMIT)" in str(refused)
    assert unchanged and history[-1].data_steps == ("001_split_emails",) and again.is_empty
    check = sqlite3.connect(db_path)
    assert rows(check, "SELECT user_id, address FROM emails") == [(1, "ann@example.com"), (3, "cy@example.com")]
    check.close()


def test_on_an_engine_that_cannot_refuse_a_commit_the_step_that_committed_is_named(db_path):
    """Engines that cannot see statements before they run (the base ``Engine``) still stop the
    migration when a step ended its transaction, and say that what was committed stays."""

    class Blind(SqliteEngine):
        refusing_transaction_control = Engine.refusing_transaction_control

    conn = seeded(sqlite3.connect(db_path))
    with pytest.raises(DataStepError) as raised:
        sync_models(Blind(conn), V2, data_steps={"bad": DataStep(lambda db: db.conn.commit(), moves=MOVED)})
    assert raised.value.step == "bad" and "ended the migration's transaction" in str(raised.value)
    assert "what was committed stays" in str(raised.value)
    assert migration_history(conn)[-1].data_steps == () and "emails" in {t for (t,) in rows(conn, "SELECT name FROM sqlite_master")}
    conn.close()


@pytest.mark.parametrize("after", ["drop a plain column", "rename an LWW column", "retype (rebuild)"])
def test_rows_a_step_deletes_from_a_synced_table_leave_tombstones_that_fit_the_new_shape(tmp_path, after):
    """A step's SQL delete on a replicated table is captured inside the migration; the contract
    phase then changes the table, and the replicas still agree on every row and every dead one."""
    Before = _before()
    connections = [sqlite3.connect(tmp_path / f"{side}.db") for side in ("a", "b")]
    for replica in connections:
        sync_models(replica, [Before])
    a, b = (Database(replica) for replica in connections)
    a.insert(Before(id="dead", a=2, b="y", g="gg", h=9))
    a.insert(Before(id="kept", a=3, b="z", g="gg", h=9))
    b.apply_changes(a.changes_since())

    After = MIGRATIONS[after]()
    purge = {"001_purge": lambda db: db.conn.execute("DELETE FROM items WHERE id = 'dead'")}
    sync_models(connections[0], [After], data_steps=purge, allow_destructive=True)
    sync_models(connections[1], [After], allow_destructive=True)

    assert b.apply_changes(a.changes_since()) >= 1 and a.apply_changes(b.changes_since()) == 0
    assert [item.id for item in b.select(After)] == ["kept"]
    assert _states(a, After) == _states(b, After) and _states(a, After)[("dead",)][2]


@pytest.mark.parametrize("journal", ["wal", "delete", "memory database"])
def test_data_steps_do_not_run_in_an_online_migration(tmp_path, journal):
    """An online migration commits in many short steps, so a step could not run inside its
    transaction: pending steps are refused, previewed or applied, before anything changes; also
    where the schema needs nothing and no WAL is needed (the step ran there)."""

    class Note(SyncModel, table="online_notes"):
        text: str = ""

    conn = sqlite3.connect(":memory:" if journal == "memory database" else tmp_path / "app.db")
    if journal == "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    sync_models(conn, [Note])
    before = list(conn.iterdump())
    steps = {"001_fill": lambda db: None}
    with pytest.raises(UsageError, match="001_fill.*offline"):
        sync_models(conn, [Note], data_steps=steps, online=True)
    with pytest.raises(UsageError, match="001_fill.*offline"):
        model_migration_plan(conn, [Note], data_steps=steps, online=True)
    assert list(conn.iterdump()) == before
    sync_models(conn, [Note], data_steps=steps)
    assert sync_models(conn, [Note], data_steps=steps, online=True).is_empty
    conn.close()


# --- what a declared move counts: each value as often as it was dropped ---------------------------


class Member(SyncModel, table="move_members"):
    id: Annotated[int, PrimaryKey()]
    name: str


class MemberPrefs(SyncModel, table="move_prefs"):
    member_id: Annotated[int, PrimaryKey()]
    theme: Optional[str] = None
    lang: Optional[str] = None


class MemberWithPrefs(SyncModel, table="move_members"):
    id: Annotated[int, PrimaryKey()]
    name: str
    theme: Optional[str] = None
    lang: Optional[str] = None


class Theme(SyncModel, table="move_themes"):
    name: Annotated[str, PrimaryKey()]


def _seed_prefs(conn: sqlite3.Connection, prefs: list[tuple[Optional[str], Optional[str]]]) -> None:
    sync_models(conn, [Member, MemberPrefs])
    conn.executemany("INSERT INTO move_members VALUES (?, ?)", [(number, f"m{number}") for number in range(1, len(prefs) + 1)])
    conn.executemany("INSERT INTO move_prefs VALUES (?, ?, ?)", [(number, *pair) for number, pair in enumerate(prefs, 1)])
    conn.commit()


def _copy_prefs(members: set[int]):
    def step(db) -> None:
        for member in members:
            db.conn.execute(
                "UPDATE move_members SET theme = (SELECT theme FROM move_prefs WHERE member_id = ?), "
                "lang = (SELECT lang FROM move_prefs WHERE member_id = ?) WHERE id = ?",
                (member, member, member),
            )
    return step


def _rows_left_behind(prefs: list[tuple[Optional[str], Optional[str]]], copied: set[int]) -> int:
    """The rows whose theme or lang the target lacks, counted value by value as the docs say (each
    value must be there as many times as it was dropped; its first occurrences count as moved),
    each row once: computed here in Python."""
    from collections import Counter

    lost_rows = set()
    for column in (0, 1):
        held = Counter(prefs[number - 1][column] for number in copied if prefs[number - 1][column] is not None)
        seen: Counter = Counter()
        for number, pair in enumerate(prefs, 1):
            value = pair[column]
            if value is not None:
                seen[value] += 1
                if seen[value] > held[value]:
                    lost_rows.add(number)
    return len(lost_rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefs=st.lists(st.tuples(st.sampled_from(["dark", "light", None]), st.sampled_from(["en", "de", None])), min_size=1, max_size=12),
    data=st.data(),
)
def test_a_merge_that_moves_only_some_rows_of_repeated_values_is_caught_row_by_row(tmp_path_factory, prefs, data):
    """A merge that copies some members' preferences only: the dropped table still holds values
    found elsewhere in the target column (other members chose 'dark' too), which must not hide
    the rows it left behind. Lost rows = the plan's count; none lost = no permission needed."""
    copied = data.draw(st.sets(st.integers(1, len(prefs))))
    path = tmp_path_factory.mktemp("moves") / "app.db"
    conn = sqlite3.connect(path)
    _seed_prefs(conn, prefs)
    before = path.read_bytes()
    steps = {"001 merge": DataStep(_copy_prefs(copied), moves=["move_prefs.theme -> move_members.theme", "move_prefs.lang -> move_members.lang"])}
    lost = _rows_left_behind(prefs, copied)
    if not lost:
        plan = sync_models(conn, [MemberWithPrefs], data_steps=steps)
        assert not plan.destructive_operations
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'move_prefs'").fetchone() == (0,)
    else:
        with pytest.raises(DestructiveChangeError) as raised:
            sync_models(conn, [MemberWithPrefs], data_steps=steps)
        assert f"drop table move_prefs [{lost} row{'s' if lost != 1 else ''}]" in str(raised.value)
        assert path.read_bytes() == before
    conn.close()


class Customer(SyncModel, table="move_customers"):
    id: Annotated[int, PrimaryKey()]
    city: Optional[str] = None


class CustomerV2(SyncModel, table="move_customers"):
    id: Annotated[int, PrimaryKey()]
    city_name: Annotated[Optional[str], ForeignKey("move_cities.name")] = None


class City(SyncModel, table="move_cities"):
    name: Annotated[str, PrimaryKey()]


def _normalize_cities(db) -> None:
    db.conn.execute("INSERT INTO move_cities SELECT DISTINCT city FROM move_customers WHERE city IS NOT NULL")
    db.conn.execute("UPDATE move_customers SET city_name = city")


@pytest.mark.parametrize("declared", ["move_customers.city -> move_cities.name (distinct)", " move_customers.city->move_cities.name (DISTINCT) "])
def test_values_moved_into_a_lookup_table_count_once_each_when_declared_distinct(conn, declared):
    sync_models(conn, [Customer])
    conn.executemany("INSERT INTO move_customers VALUES (?, ?)", [(1, "Oslo"), (2, "Oslo"), (3, "Rome"), (4, None)])
    conn.commit()
    steps = {"001 cities": DataStep(_normalize_cities, moves=[declared])}
    preview = model_migration_plan(conn, [CustomerV2, City], data_steps=steps)
    assert "(each distinct value once) are not counted as lost" in str(preview)
    plan = sync_models(conn, [CustomerV2, City], data_steps=steps)
    assert not plan.destructive_operations
    assert rows(conn, "SELECT id, city_name FROM move_customers ORDER BY id") == [(1, "Oslo"), (2, "Oslo"), (3, "Rome"), (4, None)]


def test_a_lookup_table_declared_as_a_plain_move_counts_the_repeats_as_lost(conn, db_path):
    """Without (distinct), the second 'Oslo' needs a second 'Oslo' in the target: the refusal says
    how many and the file is unchanged (the remedy: declare the move distinct)."""
    sync_models(conn, [Customer])
    conn.executemany("INSERT INTO move_customers VALUES (?, ?)", [(1, "Oslo"), (2, "Oslo"), (3, "Rome"), (4, "Oslo")])
    conn.commit()
    before = db_path.read_bytes()

    class CityOnly(SyncModel, table="move_customers"):
        id: Annotated[int, PrimaryKey()]

    steps = {"001 cities": DataStep(_normalize_cities_only, moves=["move_customers.city -> move_cities.name"])}
    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, [CityOnly, City], data_steps=steps)
    assert "drop column move_customers.city [2 rows]" in str(raised.value)
    assert "but these are not there as many times as here (e.g. 'Oslo')" in str(raised.value)
    assert db_path.read_bytes() == before


def _normalize_cities_only(db) -> None:
    db.conn.execute("INSERT INTO move_cities SELECT DISTINCT city FROM move_customers WHERE city IS NOT NULL")


class Tagging(SyncModel, table="move_taggings", without_rowid=True):
    post: Annotated[int, PrimaryKey()]
    tag: Annotated[str, PrimaryKey()]
    note: Optional[str] = None


class TaggingV2(SyncModel, table="move_taggings", without_rowid=True):
    post: Annotated[int, PrimaryKey()]
    tag: Annotated[str, PrimaryKey()]


class Note(SyncModel, table="move_notes"):
    id: Annotated[int, PrimaryKey()] = None
    text: str


class Archive(SyncModel, table="move_archive"):
    id: Annotated[int, PrimaryKey()] = None
    text: str


@pytest.mark.parametrize("archived", [0, 1, 2])
def test_a_column_moved_to_two_places_of_a_table_without_rowids_counts_the_place_holding_more(conn, archived):
    """Each target alone may hold the values (a copy kept in two places): a value is lost only when
    neither holds it as often as the dropped column did."""
    sync_models(conn, [Tagging])
    conn.executemany("INSERT INTO move_taggings VALUES (?, ?, ?)", [(1, "a", "same"), (2, "a", "same"), (3, "b", None)])
    conn.commit()

    def copy(db) -> None:
        db.conn.execute("INSERT INTO move_notes (text) SELECT note FROM move_taggings WHERE note IS NOT NULL LIMIT 1")
        db.conn.execute(f"INSERT INTO move_archive (text) SELECT note FROM move_taggings WHERE note IS NOT NULL LIMIT {archived}")

    steps = {"001 notes": DataStep(copy, moves=["move_taggings.note -> move_notes.text", "move_taggings.note -> move_archive.text"])}
    if archived == 2:
        assert not sync_models(conn, [TaggingV2, Note, Archive], data_steps=steps).destructive_operations
        return
    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, [TaggingV2, Note, Archive], data_steps=steps)
    assert "drop column move_taggings.note [1 row]" in str(raised.value)


@pytest.mark.parametrize(
    ("source_type", "target_type", "dropped", "moved", "lost"),
    [
        ("TEXT", "TEXT COLLATE NOCASE", ["a", "A"], ["a"], 1),  # one 'a' in a NOCASE target is not also the 'A'
        ("TEXT", "TEXT COLLATE NOCASE", ["a", "A", "a"], ["a", "A"], 1),  # counted apart, not as one NOCASE value
        ("TEXT COLLATE NOCASE", "TEXT", ["A", "a"], ["A", "a"], 0),  # both moved exactly: nothing lost
        ("", "INTEGER", [1, "1"], [1], 1),  # 1 and '1' become one 1 in an INTEGER column: one of them is lost
        ("", "TEXT", [1, 2.5], ["1", "2.5"], 0),  # numbers moved into a TEXT column are there as the column stores them
        ("INTEGER", "TEXT", [7, 7, 8], [7, 8], 1),
        ("TEXT", "INTEGER", ["01", "2"], [1, 2], 0),  # as the INTEGER column stores them ('01' is 1 there)
        ("REAL", "TEXT", [0.30000000000000004, 0.5], [0.30000000000000004, 0.5], 1),  # '0.3' in a TEXT column is not it
        ("TEXT COLLATE NOCASE", "TEXT (distinct)", ["Oslo", "OSLO", "Oslo"], ["Oslo"], 1),  # a lookup holds 'Oslo', not 'OSLO'
        ("", "TEXT (distinct)", [1, 1], ["1"], 0),
    ],
)
def test_a_moved_value_is_compared_as_its_target_stores_it_byte_for_byte(conn, source_type, target_type, dropped, moved, lost):
    conn.execute(f"CREATE TABLE move_src (id INTEGER PRIMARY KEY, v {source_type})")
    distinct = target_type.endswith(" (distinct)")
    target_type = target_type.removesuffix(" (distinct)")
    conn.execute(f"CREATE TABLE move_dst (id INTEGER PRIMARY KEY, v {target_type})")
    conn.executemany("INSERT INTO move_src (v) VALUES (?)", [(value,) for value in dropped])
    conn.commit()
    schema = schema_from_sql(f"CREATE TABLE move_src (id INTEGER PRIMARY KEY); CREATE TABLE move_dst (id INTEGER PRIMARY KEY, v {target_type});")

    def copy(db) -> None:
        db.conn.executemany("INSERT INTO move_dst (v) VALUES (?)", [(value,) for value in moved])

    steps = {"001 copy": DataStep(copy, moves=["move_src.v -> move_dst.v" + (" (distinct)" if distinct else "")])}
    if not lost:
        assert not sync_schema(conn, schema, data_steps=steps).destructive_operations
        return
    with pytest.raises(DestructiveChangeError) as raised:
        sync_schema(conn, schema, data_steps=steps)
    assert f"drop column move_src.v [{lost} row{'s' if lost != 1 else ''}]" in str(raised.value)


def test_two_dropped_columns_moved_into_one_column_need_a_copy_each(conn, db_path):
    """A home and a work city both 'Paris' need 'Paris' twice in the addresses: a step that moved
    one of them loses the other (the docs' own email/phone split has this shape)."""

    class Person(SyncModel, table="move_people"):
        id: Annotated[int, PrimaryKey()]
        home_city: Optional[str] = None
        work_city: Optional[str] = None

    class PersonV2(SyncModel, table="move_people"):
        id: Annotated[int, PrimaryKey()]

    class Place(SyncModel, table="move_places"):
        id: Annotated[int, PrimaryKey()] = None
        person_id: int
        city: str

    sync_models(conn, [Person])
    conn.executemany("INSERT INTO move_people VALUES (?, ?, ?)", [(1, "Paris", "Paris"), (2, "Rome", None)])
    conn.commit()
    before = db_path.read_bytes()
    moves = ["move_people.home_city -> move_places.city", "move_people.work_city -> move_places.city"]

    def homes_only(db) -> None:
        db.conn.execute("INSERT INTO move_places (person_id, city) SELECT id, home_city FROM move_people")

    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, [PersonV2, Place], data_steps={"001 places": DataStep(homes_only, moves=moves)})
    assert "drop column move_people.work_city [1 row]" in str(raised.value)
    assert "drop column move_people.home_city [" not in str(raised.value)
    assert db_path.read_bytes() == before

    def both(db) -> None:
        homes_only(db)
        db.conn.execute("INSERT INTO move_places (person_id, city) SELECT id, work_city FROM move_people WHERE work_city IS NOT NULL")

    assert not sync_models(conn, [PersonV2, Place], data_steps={"001 places": DataStep(both, moves=moves)}).destructive_operations
    assert rows(conn, "SELECT count(*) FROM move_places") == [(3,)]


def test_a_move_into_a_column_the_migration_converts_compares_what_the_column_will_hold(conn, db_path):
    """The step writes '00123' into a column that is still INTEGER (stored 123) and that the
    migration then turns TEXT ('123'): the moved value is compared as the converted column holds it."""
    conn.execute("CREATE TABLE move_users (id INTEGER PRIMARY KEY, zip TEXT)")
    conn.execute("CREATE TABLE move_zips (id INTEGER PRIMARY KEY, code INTEGER)")
    conn.executemany("INSERT INTO move_users (zip) VALUES (?)", [("00123",), ("456",)])
    conn.commit()
    before = db_path.read_bytes()
    schema = schema_from_sql("CREATE TABLE move_users (id INTEGER PRIMARY KEY); CREATE TABLE move_zips (id INTEGER PRIMARY KEY, code TEXT);")

    def copy(db) -> None:
        db.conn.execute("INSERT INTO move_zips (code) SELECT zip FROM move_users")

    with pytest.raises(DestructiveChangeError) as raised:
        sync_schema(conn, schema, data_steps={"001 zips": DataStep(copy, moves=["move_users.zip -> move_zips.code"])})
    assert "drop column move_users.zip [1 row]" in str(raised.value) and "(e.g. '00123')" in str(raised.value)
    assert db_path.read_bytes() == before


# --- plans asked for while the migration runs --------------------------------------------------


def _everything(conn: sqlite3.Connection) -> list[tuple]:
    """The schema and every row of the tables the migrations here touch."""
    schema = rows(conn, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    return schema + [row for (table,) in rows(conn, "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('users', 'emails')") for row in rows(conn, f"SELECT * FROM {table}")]


ASKED_MID_MIGRATION = {
    "model_migration_plan": lambda conn: model_migration_plan(conn, V2),
    "schema_migration_plan": lambda conn: schema_migration_plan(conn, schema_from_sql("CREATE TABLE users (id INTEGER PRIMARY KEY)")),
    "sync_models": lambda conn: sync_models(conn, V2, allow_destructive=True),
    "sync_models through the step's engine": lambda conn: sync_models(SqliteEngine(conn), V2, allow_destructive=True),
}


@pytest.mark.parametrize("asked", ASKED_MID_MIGRATION)
def test_a_plan_asked_for_from_a_step_on_the_migrating_connection_is_refused_and_nothing_changes(conn, asked):
    """The schema is half-way through the migration while a step runs (the plan showed the drop of a
    clock the expand phase had just renamed): a plan or a migration asked for on its connection is
    refused, the step fails, and the database is as it was; afterwards both work again."""
    seeded(conn)
    before = _everything(conn)

    def step(db) -> None:
        split_emails(db)
        ASKED_MID_MIGRATION[asked](db.conn)

    with pytest.raises(DataStepError, match="001_split_emails") as raised:
        sync_models(conn, V2, data_steps={"001_split_emails": DataStep(step, moves=MOVED)})
    assert isinstance(raised.value.__cause__, UsageError)
    assert "connection whose migration is still running" in str(raised.value) and "half-way through that migration" in str(raised.value)
    assert _everything(conn) == before
    assert not model_migration_plan(conn, V2, data_steps={"001_split_emails": DataStep(split_emails, moves=MOVED)}).is_empty
    sync_models(conn, V2, data_steps={"001_split_emails": DataStep(split_emails, moves=MOVED)})
    assert rows(conn, "SELECT user_id, address FROM emails ORDER BY user_id") == [(1, "ann@example.com"), (3, "cy@example.com")]
    assert model_migration_plan(conn, V2).is_empty


class UserNoCase(SyncModel, table="users"):
    """The name compares without case: a rebuild, whose copy reports progress."""

    id: Annotated[int, PrimaryKey()]
    name: Annotated[str, Collate("NOCASE")]
    email: Optional[str] = None


def test_a_plan_asked_for_from_a_progress_callback_is_refused_and_the_migration_rolled_back(conn):
    seeded(conn)
    before = _everything(conn)

    def progress(table: str, copied: int, total: int) -> None:
        model_migration_plan(conn, [UserNoCase])

    with pytest.raises(UsageError, match="half-way through that migration"):
        sync_models(conn, [UserNoCase], progress=progress)
    assert _everything(conn) == before
    assert sync_models(conn, [UserNoCase], progress=lambda *_: None).rebuilt_tables == ("users",)
    assert model_migration_plan(conn, [UserNoCase]).is_empty


def test_another_connection_to_the_file_may_plan_while_a_step_runs(db_path):
    """Only the migrating connection is refused: another one (WAL: it reads while the migration
    writes) sees the committed schema, not the migration's, and plans from there."""
    conn = seeded(sqlite3.connect(db_path))
    conn.execute("PRAGMA journal_mode = WAL")
    expected = [op.description for op in model_migration_plan(conn, V2).operations]
    seen = []

    def step(db) -> None:
        split_emails(db)
        with closing(sqlite3.connect(db_path)) as other:
            seen.append([op.description for op in model_migration_plan(other, V2).operations])

    sync_models(conn, V2, data_steps={"001_split_emails": DataStep(step, moves=MOVED)})
    assert seen == [expected] and expected
    assert model_migration_plan(conn, V2).is_empty
