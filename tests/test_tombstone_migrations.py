"""Tombstones follow schema migrations the way live rows do.

Two replicas share a synced table; a row is deleted (through ``Database.delete`` or by the
application's own SQL, settled before or only after the migration), both replicas migrate
the table in one of every way a migration can change a synced table, and then:
- the replicas still exchange full changesets and converge, the deleted row staying deleted;
- the dead row's stored registers equal those of a live twin row that held the same values
  (so a late write to the dead key merges exactly as it would with the live row).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    LWW,
    Database,
    DestructiveChangeError,
    MigrationError,
    PrimaryKey,
    RenamedFrom,
    SyncModel,
    model_migration_plan,
    sync_models,
)


def _before() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        g: str = "g"
        h: int = 5

    return Item


def _add_lww() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        g: str = "g"
        h: int = 5
        c: Annotated[int, LWW()] = 7

    return Item


def _add_group() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        g: str = "g"
        h: int = 5
        note: str = "n"

    return Item


def _drop_lww() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        g: str = "g"
        h: int = 5

    return Item


def _drop_group() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        g: str = "g"

    return Item


def _rename_lww() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        label: Annotated[str, LWW(), RenamedFrom("b")] = "x"
        g: str = "g"
        h: int = 5

    return Item


def _rename_group() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        kind: Annotated[str, RenamedFrom("g")] = "g"
        h: int = 5

    return Item


def _lww_to_group() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: str = "x"
        g: str = "g"
        h: int = 5

    return Item


def _group_to_lww() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        g: Annotated[str, LWW()] = "g"
        h: int = 5

    return Item


def _retype_and_rebuild() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[float, LWW()] = 1.0
        b: Annotated[str, LWW()] = "x"
        g: str = "g"
        h: float = 5.0

    return Item


def _retype_to_text() -> type[SyncModel]:
    class Item(SyncModel, table="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[str, LWW()] = "1"
        b: Annotated[str, LWW()] = "x"
        g: str = "g"
        h: str = "5"

    return Item


def _rename_table() -> type[SyncModel]:
    class Item(SyncModel, table="things", renamed_from="items"):
        id: Annotated[str, PrimaryKey()]
        a: Annotated[int, LWW()] = 1
        b: Annotated[str, LWW()] = "x"
        g: str = "g"
        h: int = 5

    return Item


def _everything_at_once() -> type[SyncModel]:
    class Item(SyncModel, table="things", renamed_from="items"):
        id: Annotated[str, PrimaryKey()]
        label: Annotated[str, RenamedFrom("b")] = "x"
        g: Annotated[str, LWW()] = "g"
        c: Annotated[int, LWW()] = 7
        note: str = "n"

    return Item


MIGRATIONS: dict[str, Callable[[], type[SyncModel]]] = {
    "add an LWW column": _add_lww,
    "add a plain column": _add_group,
    "drop an LWW column": _drop_lww,
    "drop a plain column": _drop_group,
    "rename an LWW column": _rename_lww,
    "rename a plain column": _rename_group,
    "LWW column becomes plain": _lww_to_group,
    "plain column becomes LWW": _group_to_lww,
    "retype (rebuild)": _retype_and_rebuild,
    "retype to text (values cast)": _retype_to_text,
    "rename the table": _rename_table,
    "all at once": _everything_at_once,
}

DELETES = ["Database.delete", "SQL delete settled before", "SQL delete settled after"]


def _states(db: Database, model: type[SyncModel]) -> dict[tuple, tuple]:
    """Key → (LWW registers, plain values, deleted?) from the replica's full feed."""
    return {
        change.key: (dict(change.columns), dict(change.values), change.deleted is not None and not change.alive)
        for change in db.changes_since(models=[model]).changes
    }


@pytest.mark.parametrize("how", DELETES)
@pytest.mark.parametrize("migration", list(MIGRATIONS))
def test_a_deleted_rows_registers_follow_the_migration_like_a_live_rows(tmp_path, migration, how):
    Before = _before()
    connections = [sqlite3.connect(tmp_path / f"{side}.db") for side in ("a", "b")]
    for conn in connections:
        sync_models(conn, [Before])
    a, b = (Database(conn) for conn in connections)
    a.insert(Before(id="dead", a=2, b="y", g="gg", h=9))
    a.insert(Before(id="twin", a=2, b="y", g="gg", h=9))
    a.update(Before, "twin", a=2)  # twin and dead differ in no register but the one stamped here
    a.update(Before, "dead", a=2)
    b.apply_changes(a.changes_since())
    if how == "Database.delete":
        a.delete(Before, "dead")
    else:
        connections[0].execute("DELETE FROM items WHERE id = 'dead'")
        connections[0].commit()
        if how == "SQL delete settled before":
            a.changes_since()  # any replica operation settles what the capture trigger recorded

    After = MIGRATIONS[migration]()
    for conn in connections:
        sync_models(conn, [After], allow_destructive=True)
    a.insert(After(id="new"))

    assert b.apply_changes(a.changes_since()) >= 1
    assert a.apply_changes(b.changes_since()) == 0
    assert sorted(item.id for item in b.select(After)) == ["new", "twin"]
    assert _states(a, After) == _states(b, After)

    columns, values, dead = _states(a, After)[("dead",)]
    twin_columns, twin_values, twin_dead = _states(a, After)[("twin",)]
    assert dead and not twin_dead
    assert {name: (value, type(value)) for name, value in values.items()} == {name: (value, type(value)) for name, value in twin_values.items()}
    assert {name: (value, type(value)) for name, (_, value) in columns.items()} == {
        name: (value, type(value)) for name, (_, value) in twin_columns.items()
    }
    fresh = Database(sqlite3.connect(tmp_path / "fresh.db"))  # a new replica takes the whole feed, states included
    sync_models(fresh.conn, [After])
    fresh.apply_changes(a.changes_since(models=[After]), models=[After])
    assert _states(fresh, After) == _states(a, After)
    unstamped = {name for name, (stamp, _) in twin_columns.items() if stamp.startswith("0000")}
    assert unstamped == {name for name, (stamp, _) in columns.items() if stamp.startswith("0000")}


def test_a_late_write_to_a_deleted_row_after_a_migration_merges_with_its_reshaped_registers(tmp_path):
    """Replica B wrote to the row before it heard of the delete; both then migrated (a rename):
    B's later write wins over the delete and the row comes back with the renamed column's value."""
    Before = _before()
    connections = [sqlite3.connect(tmp_path / f"{side}.db") for side in ("a", "b")]
    for conn in connections:
        sync_models(conn, [Before])
    a, b = (Database(conn) for conn in connections)
    a.insert(Before(id="k", a=2, b="kept", g="gg"))
    b.apply_changes(a.changes_since())
    a.delete(Before, "k")

    After = _rename_lww()
    for conn in connections:
        sync_models(conn, [After])
    b.update(After, "k", a=3)  # after the delete in time: the row is alive again everywhere
    a.apply_changes(b.changes_since())
    b.apply_changes(a.changes_since())

    for db in (a, b):
        row = db.get(After, "k")
        assert row is not None and (row.a, row.label, row.g) == (3, "kept", "gg")


def test_a_deleted_rows_null_takes_the_default_a_rebuild_gives_the_live_rows(tmp_path):
    """A column that becomes NOT NULL with a default fills the NULLs of live rows: the stored
    state of a deleted row gets the same value, or a new replica refuses it for ever."""

    class Before(SyncModel, table="notes"):
        id: Annotated[str, PrimaryKey()]
        stars: Annotated[Optional[int], LWW()] = None
        tag: Optional[str] = None

    class After(SyncModel, table="notes"):
        id: Annotated[str, PrimaryKey()]
        stars: Annotated[int, LWW()] = 0
        tag: str = "none"

    db = Database(sqlite3.connect(tmp_path / "a.db"))
    sync_models(db.conn, [Before])
    db.insert_many([Before(id="dead"), Before(id="twin")])
    db.delete(Before, "dead")
    sync_models(db.conn, [After])
    states = _states(db, After)
    assert states[("dead",)][1] == states[("twin",)][1] == {"tag": "none"}
    assert states[("dead",)][0]["stars"][1] == states[("twin",)][0]["stars"][1] == 0
    fresh = Database(sqlite3.connect(tmp_path / "fresh.db"))
    sync_models(fresh.conn, [After])
    assert fresh.apply_changes(db.changes_since(models=[After]), models=[After]) == 2
    assert [item.id for item in fresh.select(After)] == ["twin"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def _keyed(key_type: type) -> type[SyncModel]:
    namespace = {"__annotations__": {"id": Annotated[key_type, PrimaryKey()], "name": Annotated[str, LWW()]}, "name": ""}
    return type(SyncModel)("Keyed", (SyncModel,), namespace, table="keyed_items")


def test_tombstone_keys_follow_a_key_columns_type_change(tmp_path):
    """An INTEGER key turning TEXT: the rebuild casts the live keys, and the tombstones' keys too, so a
    row deleted after another replica's edit stays deleted there, and every changeset still fits."""
    before, after = _keyed(int), _keyed(str)
    replicas = []
    for name in ("a", "c"):
        clock = _Clock()
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        sync_models(conn, [before])
        replicas.append((Database(conn, wall_clock=clock), clock))
    (a, a_clock), (c, c_clock) = replicas
    a.insert(before(id=1, name="x"))
    c.apply_changes(a.changes_since(models=[before]), [before])
    c_clock.now += 1_000
    c.update(before, 1, name="edited before the delete")
    a_clock.now += 2_000
    a.delete(before, 1)
    for db in (a, c):
        sync_models(db.conn, [after], allow_destructive=True)
    assert a.conn.execute("SELECT key FROM _pydsqlite_tombstones").fetchall() == [('["1"]',)]
    a.apply_changes(c.changes_since(models=[after]), [after])
    c.apply_changes(a.changes_since(models=[after]), [after])
    assert a.get(after, "1") is None and c.get(after, "1") is None


def _file_bytes(conn: sqlite3.Connection, path) -> bytes:
    conn.commit()
    return path.read_bytes()


@pytest.mark.parametrize("how", ["Database.delete", "SQL delete not yet settled"])
def test_a_deleted_key_the_conversion_would_change_is_forgotten_not_landed_on_a_live_row(tmp_path, how):
    """A TEXT key turning INTEGER: live keys '1' and '2' convert exactly, the deleted '01' would become 1,
    the live row's key, and delete it on every replica taking the feed. The plan counts that delete as
    destructive; applied, it is forgotten and a new replica receives both live rows."""
    before, after = _keyed(str), _keyed(int)
    path = tmp_path / "a.db"
    db = Database(sqlite3.connect(path))
    sync_models(db.conn, [before])
    db.insert_many([before(id="1", name="keep me"), before(id="2", name="two"), before(id="01", name="gone"), before(id="3", name="x")])
    if how == "Database.delete":
        db.delete(before, "01")
        db.delete(before, "3")  # converts exactly: its delete follows the key
    else:
        db.conn.execute("DELETE FROM keyed_items WHERE id IN ('01', '3')")
        db.conn.commit()
    plan = model_migration_plan(db.conn, [after])
    (operation,) = plan.operations
    assert operation.destructive and operation.row_count == 1
    (finding,) = operation.findings
    assert finding.startswith("keyed_items.id: 1 row: deleted rows' keys would change when converted to INTEGER (e.g. the key ('01',))")
    before_bytes = _file_bytes(db.conn, path)
    with pytest.raises(DestructiveChangeError, match=r"deleted rows' keys would change"):
        sync_models(db.conn, [after])
    assert path.read_bytes() == before_bytes
    sync_models(db.conn, [after], allow_destructive=True)
    assert db.conn.execute("SELECT key FROM _pydsqlite_tombstones ORDER BY key").fetchall() == [("[3]",)]
    fresh = Database(sqlite3.connect(tmp_path / "fresh.db"))
    sync_models(fresh.conn, [after])
    fresh.apply_changes(db.changes_since(models=[after]), [after])
    assert [(item.id, item.name) for item in fresh.select(after, order_by="id")] == [(1, "keep me"), (2, "two")]
    assert _states(fresh, after) == _states(db, after)


def test_values_a_deleted_row_keeps_count_when_a_conversion_would_change_them(tmp_path):
    """An LWW column turning from text to integer: every live value converts exactly, the deleted
    row's kept 'hello world' would become 0 (and come back so if a later write revives the row)."""

    class Before(SyncModel, table="kept_notes"):
        id: Annotated[str, PrimaryKey()]
        v: Annotated[str, LWW()] = ""

    class After(SyncModel, table="kept_notes"):
        id: Annotated[str, PrimaryKey()]
        v: Annotated[int, LWW()] = 0

    path = tmp_path / "a.db"
    db = Database(sqlite3.connect(path))
    sync_models(db.conn, [Before])
    db.insert_many([Before(id="live", v="12"), Before(id="dead", v="hello world"), Before(id="dead too", v="7")])
    db.delete(Before, "dead")
    db.delete(Before, "dead too")
    (operation,) = model_migration_plan(db.conn, [After]).operations
    assert operation.destructive and operation.findings == (
        "kept_notes.v: 1 row: values deleted rows keep (a later write revives them) would change when converted to INTEGER (e.g. 'hello world')",
    )
    before_bytes = _file_bytes(db.conn, path)
    with pytest.raises(DestructiveChangeError, match="values deleted rows keep"):
        sync_models(db.conn, [After])
    assert path.read_bytes() == before_bytes
    sync_models(db.conn, [After], allow_destructive=True)
    assert {key: columns["v"][1] for key, (columns, _, _) in _states(db, After).items()} == {("live",): 12, ("dead",): 0, ("dead too",): 7}


def _accounts_before() -> type[SyncModel]:
    class Account(SyncModel, table="accounts"):
        id: Annotated[str, PrimaryKey()]
        code: Annotated[str, LWW()] = ""
        region: str = "eu"

    return Account


def _key_moves_to_code() -> type[SyncModel]:
    class Account(SyncModel, table="accounts"):
        code: Annotated[str, PrimaryKey()]
        id: Annotated[str, LWW()] = ""
        region: str = "eu"

    return Account


def _key_gains_region() -> type[SyncModel]:
    class Account(SyncModel, table="accounts"):
        id: Annotated[str, PrimaryKey()]
        region: Annotated[str, PrimaryKey()] = "eu"
        code: Annotated[str, LWW()] = ""

    return Account


@pytest.mark.parametrize("after_model", [_key_moves_to_code, _key_gains_region], ids=["key moves to another column", "key gains a column"])
def test_deletes_are_forgotten_with_a_destructive_plan_when_the_primary_key_moves(tmp_path, after_model):
    """Stored deletes keep keys of the old primary key; under another key they would name other rows
    (id 'A1' read as code 'A1') or fit no changeset. The plan says they are forgotten; applied, a new
    replica takes the whole feed and holds the same live rows."""
    before, after = _accounts_before(), after_model()
    path = tmp_path / "a.db"
    db = Database(sqlite3.connect(path))
    sync_models(db.conn, [before])
    db.insert_many([before(id="A1", code="X9"), before(id="B2", code="A1")])
    db.delete(before, "A1")
    plan = model_migration_plan(db.conn, [after])
    (operation,) = [operation for operation in plan.operations if operation.kind == "rebuild_table"]
    assert [operation.table for operation in plan.destructive_operations] == ["accounts"]
    assert operation.destructive and operation.row_count == 1
    assert "deleted rows' deletes would be forgotten: the primary key moves from (id) to (" in operation.findings[0]
    before_bytes = _file_bytes(db.conn, path)
    with pytest.raises(DestructiveChangeError, match="deletes would be forgotten"):
        sync_models(db.conn, [after])
    assert path.read_bytes() == before_bytes
    sync_models(db.conn, [after], allow_destructive=True)
    assert db.conn.execute("SELECT count(*) FROM _pydsqlite_tombstones").fetchone() == (0,)
    fresh = Database(sqlite3.connect(tmp_path / "fresh.db"))
    sync_models(fresh.conn, [after])
    assert fresh.apply_changes(db.changes_since(models=[after]), [after]) == 1
    assert [row.model_dump() for row in fresh.select(after)] == [row.model_dump() for row in db.select(after)]
    assert len(db.select(after)) == 1


def test_a_deleted_rows_null_under_a_column_turning_not_null_without_default_is_refused(tmp_path):
    """The live rows have values, the deleted row kept NULL: with no default to take, a write reviving
    it would be refused on every replica, so the migration is refused, naming the column and the remedy."""

    class Before(SyncModel, table="null_notes"):
        id: Annotated[str, PrimaryKey()]
        stars: Annotated[Optional[int], LWW()] = None

    class After(SyncModel, table="null_notes"):
        id: Annotated[str, PrimaryKey()]
        stars: Annotated[int, LWW()]

    path = tmp_path / "a.db"
    db = Database(sqlite3.connect(path))
    sync_models(db.conn, [Before])
    db.insert_many([Before(id="live", stars=3), Before(id="dead")])
    db.delete(Before, "dead")
    plan = model_migration_plan(db.conn, [After])
    assert plan.problems == (
        "null_notes.stars: 1 row: values deleted rows keep are NULL but the column becomes NOT NULL with no default "
        "(declare one: their NULLs then take it)",
    )
    before_bytes = _file_bytes(db.conn, path)
    with pytest.raises(MigrationError, match="values deleted rows keep are NULL"):
        sync_models(db.conn, [After], allow_destructive=True)
    assert path.read_bytes() == before_bytes


@pytest.mark.parametrize("with_data_step", [False, True])
def test_a_delete_whose_key_converts_onto_a_live_rows_changed_key_is_forgotten(tmp_path, with_data_step):
    """A TEXT key turning INTEGER: the live '01' becomes 1 (lossy, allowed), and the deleted '1', which
    converts exactly, would land on it and delete it on every replica taking the feed. The plan says the
    delete is forgotten; applied, the live row stays and a new replica receives it."""
    before, after = _keyed(str), _keyed(int)
    db = Database(sqlite3.connect(tmp_path / "a.db"))
    sync_models(db.conn, [before])
    db.insert_many([before(id="1", name="deleted"), before(id="01", name="zero-one"), before(id="7", name="seven")])
    db.delete(before, "1")
    steps = {"001_touch": lambda step_db: step_db.conn.execute("UPDATE keyed_items SET name = name")} if with_data_step else None
    if not with_data_step:  # with data steps, the rebuild is checked against the data the steps leave
        (operation,) = [op for op in model_migration_plan(db.conn, [after]).operations if op.kind == "rebuild_table"]
        assert operation.destructive and operation.row_count == 3  # the live '01' and '7' (new rowids), the deleted '1'
        assert any("deletes would be forgotten: their keys convert exactly, but onto the key a live row's changed key" in f for f in operation.findings)
    with pytest.raises(DestructiveChangeError, match="deletes would be forgotten: their keys convert exactly"):
        sync_models(db.conn, [after], data_steps=steps)
    sync_models(db.conn, [after], allow_destructive=True, data_steps=steps)
    assert [(row.id, row.name) for row in db.select(after, order_by="id")] == [(1, "zero-one"), (7, "seven")]
    assert db.conn.execute("SELECT count(*) FROM _pydsqlite_tombstones").fetchone() == (0,)
    fresh = Database(sqlite3.connect(tmp_path / "fresh.db"))
    sync_models(fresh.conn, [after])
    fresh.apply_changes(db.changes_since(models=[after]), [after])
    db.apply_changes(fresh.changes_since(models=[after]), [after])
    assert _states(fresh, after) == _states(db, after) and [row.id for row in fresh.select(after, order_by="id")] == [1, 7]
