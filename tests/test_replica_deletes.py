"""Deletes of synced rows travel whatever made them (Database.delete, ON DELETE actions, the
application's own SQL), carrying the exact registers the row held; merges record none as local."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import LWW, ChangeSet, Database, ForeignKey, PrimaryKey, SyncError, SyncModel, model_migration_plan, sync_models
from pydsqlite.replica.capture import CAPTURED
from pydsqlite.replica.hlc import successor


class Folder(SyncModel, table="cap_folders"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""


class Doc(SyncModel, table="cap_docs"):
    id: Annotated[str, PrimaryKey()]
    folder: Annotated[Optional[str], ForeignKey(Folder, on_delete="CASCADE")] = None
    body: Annotated[bytes, LWW()] = b""
    score: float = 0.0
    size: int = 0


class Pin(SyncModel, table="cap_pins"):
    id: Annotated[str, PrimaryKey()]
    folder: Annotated[Optional[str], ForeignKey(Folder, on_delete="SET NULL"), LWW()] = None
    note: str = ""


class Shelf(SyncModel, table="cap_shelves"):
    """Not synced (no LWW column): deleting a shelf cascades into synced rows."""

    id: Annotated[str, PrimaryKey()]


class Book(SyncModel, table="cap_books"):
    id: Annotated[str, PrimaryKey()]
    shelf: Annotated[str, ForeignKey(Shelf, on_delete="CASCADE")]
    title: Annotated[str, LWW()] = ""


MODELS = [Folder, Doc, Pin, Shelf, Book]


class FakeClock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def replica(foreign_keys: bool = True, path: str = ":memory:") -> Database:
    conn = sqlite3.connect(path)
    sync_models(conn, MODELS)
    conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return Database(conn, wall_clock=FakeClock(1_700_000_000_000))


def send(source: Database, target: Database) -> int:
    return target.apply_changes(ChangeSet.from_json(source.changes_since().to_json()))


def tombstones(db: Database) -> dict[tuple[str, str], str]:
    return {(table, key): deleted for table, key, deleted in db.conn.execute("SELECT table_name, key, deleted FROM _pydsqlite_tombstones")}


def states(db: Database) -> dict[tuple[str, tuple], object]:
    return {(change.table, change.key): change for change in db.changes_since().changes}


def raw(db: Database, sql: str, params: tuple = ()) -> None:
    db.conn.execute(sql, params)
    db.conn.commit()


EXACT_VALUES = [
    (b"\x00\xff'\"", 0.1 + 0.2, 2**63 - 1),
    (b"", 5e-324, -(2**63)),
    ("é€😀".encode(), 1.7976931348623157e308, 0),
    (b"x" * 300, 2.2250738585072014e-309, 1),
]


@pytest.mark.parametrize("how", ["Database.delete", "raw DELETE", "raw DELETE of all rows", "cascade from its folder"])
@pytest.mark.parametrize(("body", "score", "size"), EXACT_VALUES)
def test_every_delete_travels_as_a_tombstone_with_the_exact_registers(how, body, score, size):
    a, b = replica(), replica()
    a.insert(Folder(id="f", title="folder"))
    a.insert(Doc(id="d", folder="f", body=body, score=score, size=size))
    before = states(a)[("cap_docs", ("d",))]
    send(a, b)
    if how == "Database.delete":
        assert a.delete(Doc, "d") is True
    elif how == "raw DELETE":
        raw(a, "DELETE FROM cap_docs WHERE id = 'd'")
    elif how == "raw DELETE of all rows":
        raw(a, "DELETE FROM cap_docs")
    else:
        a.delete(Folder, "f")
    tombstone = states(a)[("cap_docs", ("d",))]  # the feed settles what the trigger captured first
    assert not tombstone.alive and tombstone.deleted > max(before.timestamps())
    assert (tombstone.columns, tombstone.version, tombstone.values) == (before.columns, before.version, before.values)
    assert type(tombstone.values["score"]) is float and str(tombstone.values["score"]) == str(score)
    assert ChangeSet.from_json(a.changes_since().to_json()) == a.changes_since()
    send(a, b)
    assert b.get(Doc, "d") is None and tombstones(b) == tombstones(a)
    assert a.conn.execute(f"SELECT count(*) FROM {CAPTURED}").fetchone() == (0,)


def test_a_set_null_action_travels_as_a_write_and_a_cascade_from_an_unsynced_table_as_deletes():
    a, b = replica(), replica(foreign_keys=False)
    a.insert(Folder(id="f"))
    a.insert(Pin(id="p", folder="f", note="kept"))
    a.insert(Shelf(id="s"))
    a.insert_many([Book(id="b1", shelf="s"), Book(id="b2", shelf="s")])
    send(a, b)
    raw(b, "INSERT INTO cap_shelves (id) VALUES ('s')")  # the unsynced table exists on both, filled by hand
    cursor = a.changes_since().cursor
    stamped = a.conn.execute("SELECT folder__hlc, _pydsqlite_version FROM cap_pins").fetchone()
    a.delete(Folder, "f")
    folder, folder_stamp, version = a.conn.execute("SELECT folder, folder__hlc, _pydsqlite_version FROM cap_pins").fetchone()
    assert folder is None and folder_stamp > stamped[0] and version == stamped[1]  # only the changed register
    a.delete(Shelf, "s")
    assert a.count(Book) == 0
    changed = {(change.table, change.key) for change in a.changes_since(cursor).changes}
    assert changed == {("cap_folders", ("f",)), ("cap_pins", ("p",)), ("cap_books", ("b1",)), ("cap_books", ("b2",))}
    send(a, b)
    assert b.get(Pin, "p") == Pin(id="p", folder=None, note="kept")
    assert b.count(Book) == 0 and b.get(Folder, "f") is None


def test_deletes_made_outside_pydsqlite_keep_their_place_among_local_events():
    db = replica()
    db.insert_many([Folder(id="x"), Folder(id="y")])
    raw(db, "DELETE FROM cap_folders WHERE id = 'x'")
    db.update(Folder, "y", title="after the delete")
    dead = db.conn.execute("SELECT deleted, seq FROM _pydsqlite_tombstones").fetchone()
    alive = db.conn.execute("SELECT title__hlc, _pydsqlite_seq FROM cap_folders WHERE id = 'y'").fetchone()
    assert dead[0] < alive[0] and dead[1] < alive[1]


def test_a_row_deleted_and_inserted_again_outside_pydsqlite_is_a_delete_then_a_new_row():
    a, b = replica(), replica()
    a.insert(Folder(id="f", title="old"))
    send(a, b)
    raw(a, "DELETE FROM cap_folders WHERE id = 'f'")
    raw(a, "INSERT INTO cap_folders (id, title) VALUES ('f', 'new')")
    state = states(a)[("cap_folders", ("f",))]
    assert state.alive and state.deleted is not None and min(state.timestamps()[:-1]) > state.deleted
    send(a, b)
    assert b.get(Folder, "f") == a.get(Folder, "f") == Folder(id="f", title="new")


@pytest.mark.parametrize("enforcing", [True, False])
def test_a_merged_delete_is_not_a_local_delete_but_what_it_cascades_to_is(enforcing):
    a, b, c = replica(), replica(foreign_keys=enforcing), replica(foreign_keys=False)
    a.conn.execute("PRAGMA foreign_keys = OFF")  # a deletes the folder without touching its docs
    a.insert(Folder(id="f"))
    a.insert(Doc(id="d", folder="f"))
    send(a, b)
    doc_stamps = b.conn.execute("SELECT body__hlc, _pydsqlite_version FROM cap_docs").fetchone()
    a.delete(Folder, "f")
    send(a, b)
    assert tombstones(b)[("cap_folders", '["f"]')] == tombstones(a)[("cap_folders", '["f"]')]
    doc = ("cap_docs", '["d"]')
    if enforcing:  # the cascade ran here: a settlement stamped just after the doc's state, that travels on
        assert b.get(Doc, "d") is None and tombstones(b)[doc] == successor(max(doc_stamps))
        send(b, c)
        assert c.get(Doc, "d") is None and tombstones(c) == tombstones(b)
    else:
        assert b.get(Doc, "d") is not None and doc not in tombstones(b)
    assert b.conn.execute(f"SELECT count(*) FROM {CAPTURED}").fetchone() == (0,)


def _as_an_older_pydsqlite_left_it(db: Database) -> None:
    """Synced tables without capture triggers, as a database synced before they existed."""
    for (name,) in db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.conn.execute(f"DROP TRIGGER `{name}`")
    db.conn.execute("DELETE FROM _pydsqlite_objects WHERE kind = 'trigger'")
    db.conn.execute(f"DROP TABLE {CAPTURED}")
    db.conn.execute("DELETE FROM _pydsqlite_state")
    db.conn.commit()


def test_an_older_synced_database_adopts_the_triggers_and_refuses_untracked_deletes_until_then(db_path):
    db = replica(path=str(db_path))
    db.insert_many([Folder(id="f"), Folder(id="g")])
    _as_an_older_pydsqlite_left_it(db)
    with pytest.raises(SyncError, match="run sync_models"):
        db.delete(Folder, "f")
    assert db.get(Folder, "f") is not None
    db.update(Folder, "g", title="writes still work")
    plan = model_migration_plan(db.conn, MODELS)
    assert {operation.kind for operation in plan.operations} == {"create_trigger"}
    assert sorted(operation.description for operation in plan.operations)[0] == "create trigger _pydsqlite_delete_cap_books"
    sync_models(db.conn, MODELS)
    assert model_migration_plan(db.conn, MODELS).is_empty
    assert db.delete(Folder, "f") is True
    assert ("cap_folders", '["f"]') in tombstones(db)


def test_the_triggers_follow_the_table_through_new_columns_rebuilds_renames_and_lww_off():
    conn = sqlite3.connect(":memory:")

    class V1(SyncModel, table="evolving"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""

    class V2(SyncModel, table="evolving"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""
        size: int = 0  # a new column: the trigger records it too

    class V3(SyncModel, table="evolving"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""
        size: str = "0"  # a type change: the table is rebuilt

    class V4(SyncModel, table="evolved", renamed_from="evolving"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""
        size: str = "0"

    class V5(SyncModel, table="evolved"):
        id: Annotated[str, PrimaryKey()]
        title: str = ""
        size: str = "0"

    def triggers() -> list[str]:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")]

    for model, size in ((V1, None), (V2, 7), (V3, "7"), (V4, "7")):
        sync_models(conn, [model])
        db = Database(conn)
        db.insert(model(id="r", title="t", **({} if size is None else {"size": size})))
        raw(db, f"DELETE FROM `{'evolved' if model is V4 else 'evolving'}`")
        (change,) = [c for c in db.changes_since(models=[model]).changes if c.key == ("r",)]
        assert not change.alive and change.values == ({} if size is None else {"size": size})
        conn.execute("DELETE FROM _pydsqlite_tombstones")
        conn.commit()
        assert triggers() == [f"_pydsqlite_delete_{'evolved' if model is V4 else 'evolving'}"]
    sync_models(conn, [V5])
    assert triggers() == []


@pytest.mark.parametrize("recursive_triggers", [False, True])
def test_a_row_replaced_by_sql_syncs_only_with_recursive_triggers_on(recursive_triggers):
    """SQLite fires delete triggers for the rows a REPLACE removes only with recursive_triggers on: then
    the replaced row is a delete followed by a new row and travels; without it the new row carries the
    baseline timestamp and loses to the other replica's copy (the guide says so)."""
    a, b = replica(), replica()
    a.insert(Folder(id="f", title="v1"))
    send(a, b)
    a.conn.execute(f"PRAGMA recursive_triggers = {'ON' if recursive_triggers else 'OFF'}")
    a.conn.execute("REPLACE INTO cap_folders (id, title) VALUES ('f', 'replaced by SQL')")
    a.conn.commit()
    send(a, b)
    send(b, a)
    assert a.get(Folder, "f") == b.get(Folder, "f")
    assert b.get(Folder, "f").title == ("replaced by SQL" if recursive_triggers else "v1")
