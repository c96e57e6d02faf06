"""Rename hints do what they say even when the old name is still wanted: swaps, cycles, and a
rename next to a new column (or table) that takes the old name. Applied once, then stable."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import LWW, PrimaryKey, RenamedFrom, SyncModel, model_migration_plan, sync_models

from .test_data_steps import Tagged, TaggedV3


def table_rows(conn: sqlite3.Connection, table: str) -> list[dict]:
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY 1")
    names = [description[0] for description in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


class Pair(SyncModel, table="pairs"):
    id: Annotated[int, PrimaryKey()]
    a: str
    b: str


class Swapped(SyncModel, table="pairs"):
    id: Annotated[int, PrimaryKey()]
    a: Annotated[str, RenamedFrom("b")]
    b: Annotated[str, RenamedFrom("a")]


class SwappedRebuilt(SyncModel, table="pairs"):  # the swap plus a change that needs a rebuild
    id: Annotated[int, PrimaryKey()]
    a: Annotated[Optional[str], RenamedFrom("b")] = None
    b: Annotated[str, RenamedFrom("a")]


@pytest.mark.parametrize("model", [Swapped, SwappedRebuilt], ids=["in place", "with a rebuild"])
def test_swapping_two_column_names_moves_the_data_once(memory_conn, model):
    sync_models(memory_conn, [Pair])
    memory_conn.executemany("INSERT INTO pairs VALUES (?, ?, ?)", [(1, "A1", "B1"), (2, "A2", "B2")])
    memory_conn.execute("CREATE VIEW firsts AS SELECT id, a FROM pairs")
    memory_conn.commit()
    sync_models(memory_conn, [model])
    assert table_rows(memory_conn, "pairs") == [{"id": 1, "a": "B1", "b": "A1"}, {"id": 2, "a": "B2", "b": "A2"}]
    assert memory_conn.execute("SELECT * FROM firsts ORDER BY id").fetchall() == [(1, "A1"), (2, "A2")]  # follows its data
    assert model_migration_plan(memory_conn, [model]).is_empty  # the hints stay in the model: applied once
    sync_models(memory_conn, [model])
    assert table_rows(memory_conn, "pairs")[0] == {"id": 1, "a": "B1", "b": "A1"}


class Extended(SyncModel, table="pairs"):  # a later release: the swap's hints stay, and a column comes
    id: Annotated[int, PrimaryKey()]
    a: Annotated[str, RenamedFrom("b")]
    b: Annotated[str, RenamedFrom("a")]
    note: str = ""


@pytest.mark.parametrize("later", [Swapped, Extended], ids=["same models", "a later release"])
def test_a_database_created_with_swap_hints_never_swaps(tmp_path, later):
    """A fresh install of the swap release makes the table with the new names: its hints are
    moot there, and no later sync (after any schema change) may apply them to its data."""
    conn = sqlite3.connect(tmp_path / "fresh.db")
    sync_models(conn, [Swapped])
    conn.execute("INSERT INTO pairs VALUES (1, 'A', 'B')")
    conn.execute("CREATE INDEX pairs_by_a ON pairs (a)")  # the schema changes, so the next sync plans in full
    conn.commit()
    assert not any("rename" in operation.kind for operation in model_migration_plan(conn, [later]).operations)
    sync_models(conn, [later])
    assert table_rows(conn, "pairs")[0] | {"note": ""} == {"id": 1, "a": "A", "b": "B", "note": ""}
    conn.close()
    conn = sqlite3.connect(tmp_path / "fresh.db")  # the record is in the file, not in the process
    conn.execute("DROP INDEX pairs_by_a")
    assert not any("rename" in operation.kind for operation in model_migration_plan(conn, [later]).operations)


def test_a_fresh_install_with_lww_swap_hints_keeps_values_with_their_timestamps(memory_conn):
    class Notes(SyncModel, table="notes"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[str, LWW(), RenamedFrom("b")]
        b: Annotated[str, LWW(), RenamedFrom("a")]

    sync_models(memory_conn, [Notes])
    memory_conn.execute("INSERT INTO notes (id, a, b, a__hlc, b__hlc) VALUES ('n', 'va', 'vb', 'ta', 'tb')")
    memory_conn.execute("CREATE INDEX notes_by_a ON notes (a)")
    assert model_migration_plan(memory_conn, [Notes]).is_empty
    sync_models(memory_conn, [Notes])
    assert memory_conn.execute("SELECT a, a__hlc, b, b__hlc FROM notes").fetchall() == [("va", "ta", "vb", "tb")]


def test_a_swap_declared_again_after_a_release_without_its_hints_is_applied_again(memory_conn):
    sync_models(memory_conn, [Pair])
    memory_conn.execute("INSERT INTO pairs VALUES (1, 'A', 'B')")
    sync_models(memory_conn, [Swapped])
    assert table_rows(memory_conn, "pairs") == [{"id": 1, "a": "B", "b": "A"}]
    sync_models(memory_conn, [Pair])  # the hints are removed: the swap is forgotten
    assert table_rows(memory_conn, "pairs") == [{"id": 1, "a": "B", "b": "A"}]
    sync_models(memory_conn, [Swapped])  # and the same swap declared again moves the data back
    assert table_rows(memory_conn, "pairs") == [{"id": 1, "a": "A", "b": "B"}]
    assert model_migration_plan(memory_conn, [Swapped]).is_empty


def test_a_swap_stays_applied_when_its_table_is_renamed_later(memory_conn):
    class Moved(SyncModel, table="couples", renamed_from="pairs"):
        id: Annotated[int, PrimaryKey()]
        a: Annotated[str, RenamedFrom("b")]
        b: Annotated[str, RenamedFrom("a")]

    sync_models(memory_conn, [Pair])
    memory_conn.execute("INSERT INTO pairs VALUES (1, 'A', 'B')")
    sync_models(memory_conn, [Swapped])
    sync_models(memory_conn, [Moved])
    assert table_rows(memory_conn, "couples") == [{"id": 1, "a": "B", "b": "A"}]
    memory_conn.execute("CREATE INDEX couples_by_a ON couples (a)")
    assert not any("rename" in operation.kind for operation in model_migration_plan(memory_conn, [Moved]).operations)
    sync_models(memory_conn, [Moved])
    assert table_rows(memory_conn, "couples") == [{"id": 1, "a": "B", "b": "A"}]


def test_a_cycle_of_three_renames(memory_conn):
    class Three(SyncModel, table="three"):
        id: Annotated[int, PrimaryKey()]
        x: int
        y: int
        z: int

    class Rotated(SyncModel, table="three"):
        id: Annotated[int, PrimaryKey()]
        x: Annotated[int, RenamedFrom("z")]
        y: Annotated[int, RenamedFrom("x")]
        z: Annotated[int, RenamedFrom("y")]

    sync_models(memory_conn, [Three])
    memory_conn.execute("INSERT INTO three VALUES (1, 10, 20, 30)")
    sync_models(memory_conn, [Rotated])
    assert table_rows(memory_conn, "three") == [{"id": 1, "x": 30, "y": 10, "z": 20}]
    assert model_migration_plan(memory_conn, [Rotated]).is_empty


def test_renaming_a_column_while_a_new_column_takes_its_old_name(memory_conn):
    class Before(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class After(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        full_name: Annotated[str, RenamedFrom("name")]
        name: str = "?"  # a new column that reuses the old name

    sync_models(memory_conn, [Before])
    memory_conn.execute("INSERT INTO people VALUES (1, 'Ann Lee')")
    plan = sync_models(memory_conn, [After])
    assert not plan.destructive_operations
    assert table_rows(memory_conn, "people") == [{"id": 1, "name": "?", "full_name": "Ann Lee"}]
    assert model_migration_plan(memory_conn, [After]).is_empty


def test_renaming_a_table_while_a_new_table_takes_its_old_name(memory_conn):
    class Log(SyncModel, table="log"):
        id: Annotated[int, PrimaryKey()]
        line: str

    class Archive(SyncModel, table="archive", renamed_from="log"):
        id: Annotated[int, PrimaryKey()]
        line: str

    class NewLog(SyncModel, table="log"):
        id: Annotated[int, PrimaryKey()]
        event: str = ""

    sync_models(memory_conn, [Log])
    memory_conn.execute("INSERT INTO log VALUES (1, 'kept')")
    plan = sync_models(memory_conn, [Archive, NewLog])
    assert not plan.destructive_operations
    assert table_rows(memory_conn, "archive") == [{"id": 1, "line": "kept"}]
    assert table_rows(memory_conn, "log") == []
    assert model_migration_plan(memory_conn, [Archive, NewLog]).is_empty


def test_swapping_two_lww_columns_swaps_their_timestamps_too(memory_conn):
    class Synced(SyncModel, table="notes"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[str, LWW()]
        b: Annotated[str, LWW()]

    class SyncedSwapped(SyncModel, table="notes"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[str, LWW(), RenamedFrom("b")]
        b: Annotated[str, LWW(), RenamedFrom("a")]

    sync_models(memory_conn, [Synced])
    memory_conn.execute("INSERT INTO notes (id, a, b, a__hlc, b__hlc) VALUES ('n', 'va', 'vb', 'ta', 'tb')")
    sync_models(memory_conn, [SyncedSwapped])
    assert memory_conn.execute("SELECT a, a__hlc, b, b__hlc FROM notes").fetchall() == [("vb", "tb", "va", "ta")]
    assert model_migration_plan(memory_conn, [SyncedSwapped]).is_empty


def test_a_hint_whose_new_name_is_a_live_column_that_stays_changes_nothing(memory_conn):
    sync_models(memory_conn, [Pair])

    class Confused(SyncModel, table="pairs"):  # b <- a, but b is there and nothing moves it away
        id: Annotated[int, PrimaryKey()]
        a: str
        b: Annotated[str, RenamedFrom("a")]

    assert model_migration_plan(memory_conn, [Confused]).is_empty


def test_a_rename_onto_a_column_the_models_drop_is_refused_not_guessed(memory_conn):
    sync_models(memory_conn, [Pair])
    memory_conn.execute("INSERT INTO pairs VALUES (1, 'A', 'B')")

    class DropAThenRenameB(SyncModel, table="pairs"):  # a is gone, b is to be called a
        id: Annotated[int, PrimaryKey()]
        a: Annotated[str, RenamedFrom("b")]

    plan = model_migration_plan(memory_conn, [DropAThenRenameB])
    assert any("pairs.b cannot be renamed to a: a exists and stays" in problem for problem in plan.problems), plan
    assert memory_conn.execute("SELECT * FROM pairs").fetchall() == [(1, "A", "B")]


def test_a_hint_whose_old_name_is_wanted_again_is_read_as_already_applied(memory_conn):
    """Without history the two readings look alike: a rename applied earlier (the old name then
    reused for a new column), or a rename still to do. pydsqlite keeps both columns as they are."""
    sync_models(memory_conn, [Pair])

    class Reused(SyncModel, table="pairs"):
        id: Annotated[int, PrimaryKey()]
        a: Annotated[str, RenamedFrom("b")]
        b: str

    assert model_migration_plan(memory_conn, [Reused]).is_empty


class ClocksBefore(SyncModel, table="swapped_clocks"):
    id: Annotated[str, PrimaryKey()]
    x: Annotated[str, LWW()] = ""
    y: str = ""


class ClocksSwapped(SyncModel, table="swapped_clocks"):
    """x (LWW) and y (plain) swap names: the LWW register stays with the name x, on the other value."""

    id: Annotated[str, PrimaryKey()]
    x: Annotated[str, LWW(), RenamedFrom("y")] = ""
    y: Annotated[str, RenamedFrom("x")] = ""


def test_swapping_an_lww_column_with_a_plain_one_gives_each_value_its_own_clock(tmp_path):
    """x (LWW) and y (plain) swap names. The clock column x__hlc stayed on the name x, so each value
    carried the other column's clock and two replicas' unexchanged edits were both lost. Now the new x
    (the old y) takes the row version as its clock and the version takes the old x's clock, as any LWW
    toggle does: the later edit of the value that became LWW wins on both replicas, which agree.
    Swapping two LWW columns moves their clocks with them."""
    from pydsqlite import Database

    Before, Swapped = ClocksBefore, ClocksSwapped

    connections = [sqlite3.connect(tmp_path / name) for name in ("r1.db", "r2.db")]
    for conn in connections:
        sync_models(conn, [Before])
    r1, r2 = (Database(conn) for conn in connections)
    r1.insert(Before(id="k", x="x-old", y="y-old"))
    r2.apply_changes(r1.changes_since(), [Before])
    r1.update(Before, "k", x="x-edited-on-r1")
    r2.update(Before, "k", y="y-edited-on-r2")
    version, clock = connections[0].execute("SELECT _pydsqlite_version, x__hlc FROM swapped_clocks").fetchone()
    for conn in connections:
        plan = sync_models(conn, [Swapped])
        assert plan.rebuilt_tables == ("swapped_clocks",) and not plan.destructive_operations
    assert connections[0].execute("SELECT x__hlc, _pydsqlite_version FROM swapped_clocks").fetchone() == (version, max(version, clock))
    r1.apply_changes(r2.changes_since(models=[Swapped]), [Swapped])
    r2.apply_changes(r1.changes_since(models=[Swapped]), [Swapped])
    assert r1.get(Swapped, "k") == r2.get(Swapped, "k") and r1.get(Swapped, "k").x == "y-edited-on-r2"
    assert model_migration_plan(connections[0], [Swapped]).is_empty

    class BothLWW(SyncModel, table="swapped_clocks"):
        id: Annotated[str, PrimaryKey()]
        x: Annotated[str, LWW()] = ""
        y: Annotated[str, LWW()] = ""

    class BothSwapped(SyncModel, table="swapped_clocks"):
        id: Annotated[str, PrimaryKey()]
        x: Annotated[str, LWW(), RenamedFrom("y")] = ""
        y: Annotated[str, LWW(), RenamedFrom("x")] = ""

    conn = connections[0]
    sync_models(conn, [BothLWW])
    stamps = conn.execute("SELECT x, x__hlc, y, y__hlc FROM swapped_clocks").fetchone()
    sync_models(conn, [BothSwapped])
    assert conn.execute("SELECT y, y__hlc, x, x__hlc FROM swapped_clocks").fetchone() == stamps


@pytest.mark.parametrize(
    ("before", "after", "described"),
    [
        (ClocksBefore, ClocksSwapped, "turn LWW on for x; turn LWW off for y (renamed from x)"),
        (Tagged, TaggedV3, "add column label; turn LWW on for label; turn LWW off for title (renamed from label)"),
    ],
    ids=["swapped", "renamed, and the name reused"],
)
def test_a_plan_names_a_renamed_column_that_stops_being_lww_by_its_new_name(memory_conn, before, after, described):
    """The plan said "turn LWW on for x; turn LWW off for x", as if x ended where it began."""
    sync_models(memory_conn, [before])
    plan = model_migration_plan(memory_conn, [after])
    (rebuild,) = [operation for operation in plan.operations if operation.kind == "rebuild_table"]
    assert rebuild.description.endswith(described)


def test_the_renames_applied_to_each_table_are_told_apart_by_table():
    """Gathered once per plan by table (a scan of every recorded rename per table grew with the square
    of the tables): each table gets its own, names folded as recorded, none for a table without any."""
    from pydsqlite.migrate.metadata import ManagedObjects

    managed = ManagedObjects(renames=frozenset({("t1", "a", "b"), ("t1", "b", "c"), ("t2", "x", "y")}))
    assert managed.renames_done("T1") == {("a", "b"), ("b", "c")}
    assert managed.renames_done("t2") == {("x", "y")}
    assert managed.renames_done("t3") == frozenset()
