"""Changing which columns of a synced table are LWW keeps the order of edits not yet exchanged.

The row version is when a row's group (non-LWW) columns were last written. A column turning
LWW takes it as its register's time, and the version takes the register's time of a column
turning group, on live rows (in place or rebuilt) and on deleted rows' stored states alike.
"""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import LWW, Database, PrimaryKey, SyncModel, sync_models


def _models(notes_lww: bool, rebuilt: bool) -> list[type[SyncModel]]:
    """The table with ``notes`` LWW or not; ``rebuilt``: ``other`` also turns nullable (a rebuild)."""
    notes: object = Annotated[str, LWW()] if notes_lww else str
    other: object = Optional[str] if rebuilt else str
    namespace = {
        "__annotations__": {"id": Annotated[str, PrimaryKey()], "title": Annotated[str, LWW()], "notes": notes, "other": other},
        "title": "",
        "notes": "",
        "other": "",
    }
    return [type(SyncModel)("Note", (SyncModel,), namespace, table="toggled_notes")]


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _replicas(tmp_path, models):
    made = []
    for name in ("a", "b"):
        clock = Clock(1_700_000_000_000)
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        sync_models(conn, models)
        made.append((Database(conn, wall_clock=clock), clock))
    return made


def _exchange(a: Database, b: Database, models) -> None:
    b.apply_changes(a.changes_since(models=models), models)
    a.apply_changes(b.changes_since(models=models), models)


@pytest.mark.parametrize("rebuilt", [False, True], ids=["in place", "rebuilt"])
def test_a_group_column_turning_lww_keeps_the_later_edit(tmp_path, rebuilt):
    before, after = _models(False, False), _models(True, rebuilt)
    (a, a_clock), (b, b_clock) = _replicas(tmp_path, before)
    Note = before[0]
    a.insert(Note(id="r", notes="start"))
    a.insert(Note(id="gone", notes="kept in the tombstone"))
    _exchange(a, b, before)
    a_clock.now += 1_000
    a.update(Note, "r", notes="zebra (A, earlier)")
    b_clock.now += 2_000
    b.update(Note, "r", notes="apple (B, later)")
    a.delete(Note, "gone")
    for db in (a, b):
        plan = sync_models(db.conn, after)
        assert plan.rebuilt_tables == (("toggled_notes",) if rebuilt else ())
    _exchange(a, b, after)
    _exchange(a, b, after)
    assert a.get(after[0], "r").notes == b.get(after[0], "r").notes == "apple (B, later)"
    dead = [change for change in a.changes_since(models=after).changes if change.key == ("gone",)]
    assert dead and dead[0].columns["notes"][0] == dead[0].version  # not the baseline


@pytest.mark.parametrize("rebuilt", [False, True], ids=["in place", "rebuilt"])
def test_an_lww_column_turning_group_brings_its_time_to_the_row_version(tmp_path, rebuilt):
    before, after = _models(True, False), _models(False, rebuilt)
    (a, a_clock), (b, b_clock) = _replicas(tmp_path, before)
    Note = before[0]
    a.insert(Note(id="r", notes="start"))
    a.insert(Note(id="gone", notes="x"))
    _exchange(a, b, before)
    b_clock.now += 1_000
    b.update(Note, "r", other="B earlier edit of other")
    a_clock.now += 2_000
    a.update(Note, "r", notes="A later notes edit")
    a.update(Note, "gone", notes="y")
    a.delete(Note, "gone")
    [dead_before] = [change for change in a.changes_since(models=before).changes if change.key == ("gone",)]
    assert dead_before.columns["notes"][0] > dead_before.version
    for db in (a, b):
        sync_models(db.conn, after)
    _exchange(a, b, after)
    _exchange(a, b, after)
    # group semantics from now on: the later write of the group wins it whole
    assert a.get(after[0], "r") == b.get(after[0], "r")
    assert a.get(after[0], "r").notes == "A later notes edit"
    [dead] = [change for change in a.changes_since(models=after).changes if change.key == ("gone",)]
    assert dead.version == dead_before.columns["notes"][0] and dead.values["notes"] == "y"


def _without_notes(rebuilt: bool) -> list[type[SyncModel]]:
    """The table once ``notes`` is dropped (``rebuilt``: ``other`` also turns nullable, a rebuild)."""
    other: object = Optional[str] if rebuilt else str
    namespace = {"__annotations__": {"id": Annotated[str, PrimaryKey()], "title": Annotated[str, LWW()], "other": other},
                 "title": "", "other": ""}
    return [type(SyncModel)("Note", (SyncModel,), namespace, table="toggled_notes")]


@pytest.mark.parametrize("rebuilt", [False, True], ids=["in place", "rebuilt"])
def test_dropping_the_lww_column_whose_edit_kept_a_row_alive_keeps_the_row(tmp_path, rebuilt):
    """A deletes a row while B edits its LWW column later: the edit beats the delete. Dropping that
    column must not drop the row: the version keeps the edit's time, so the row stays on both
    replicas, also when a full feed is sent again."""
    before, after = _models(True, False), _without_notes(rebuilt)
    (a, a_clock), (b, b_clock) = _replicas(tmp_path, before)
    Note = before[0]
    a.insert(Note(id="p", title="hello", notes="n"))
    _exchange(a, b, before)
    a_clock.now += 1_000
    a.delete(Note, "p")
    b_clock.now += 2_000
    b.update(Note, "p", notes="edited after the delete")
    _exchange(a, b, before)
    assert a.count(Note) == b.count(Note) == 1
    for db in (a, b):
        sync_models(db.conn, after, allow_destructive=True)
    b.apply_changes(a.changes_since(None, after), after)
    a.apply_changes(b.changes_since(None, after), after)
    for db in (a, b):
        assert [(row.id, row.title) for row in db.select(after[0])] == [("p", "hello")]
        assert [change.alive for change in db.changes_since(None, after).changes] == [True]


def test_a_table_that_stops_syncing_forgets_its_deletes_so_syncing_again_keeps_its_rows(tmp_path):
    """A row an edit kept alive past a delete, in a table that then stops syncing (its only LWW
    column turns plain) and later syncs again: its old tombstone must not outlive the sync state it
    belonged to, or the row, stamped anew at the baseline, would count as deleted everywhere."""
    synced = _models(True, False)
    namespace = {"__annotations__": {"id": Annotated[str, PrimaryKey()], "title": str, "notes": str, "other": str},
                 "title": "", "notes": "", "other": ""}
    plain = [type(SyncModel)("Note", (SyncModel,), namespace, table="toggled_notes")]
    (a, a_clock), (b, b_clock) = _replicas(tmp_path, synced)
    Note = synced[0]
    a.insert(Note(id="k", title="t", notes="n"))
    _exchange(a, b, synced)
    a_clock.now += 1_000
    a.delete(Note, "k")
    b_clock.now += 2_000
    b.update(Note, "k", title="edited after the delete")
    _exchange(a, b, synced)
    for models in (plain, synced):
        for db in (a, b):
            sync_models(db.conn, models)
    _exchange(a, b, synced)
    for db in (a, b):
        assert [row.title for row in db.select(Note)] == ["edited after the delete"]
        assert [change.alive for change in db.changes_since(None, synced).changes] == [True]


@pytest.mark.parametrize("change", ["drop notes", "notes turns plain"])
def test_replicas_that_migrate_with_unexchanged_edits_meet_again_by_their_incremental_feeds(tmp_path, change):
    """B edited a plain column, A later edited the LWW column ``notes``; only A's edit reached B before
    both migrated. Folding ``notes``'s time into the version gives both replicas one version with
    different plain values; the migration renumbers the rows it folded, so resuming the feeds from
    their cursors sends them again and the replicas end alike."""
    before = _models(True, False)
    after = _without_notes(False) if change == "drop notes" else _models(False, False)
    (a, a_clock), (b, b_clock) = _replicas(tmp_path, before)
    Note = before[0]
    a.insert(Note(id="r", title="t", notes="n", other="o"))
    b.apply_changes(a.changes_since(models=before), before)
    a.apply_changes(b.changes_since(models=before), before)
    from_a, from_b = a.changes_since(models=before).cursor, b.changes_since(models=before).cursor
    b_clock.now += 1_000
    b.update(Note, "r", other="a")
    a_clock.now += 2_000
    a.update(Note, "r", notes="n2")
    sent = a.changes_since(from_a, before)
    b.apply_changes(sent, before)
    from_a = sent.cursor
    for db in (a, b):
        sync_models(db.conn, after, allow_destructive=True)
    for _ in range(2):
        sent = b.changes_since(from_b, after)
        a.apply_changes(sent, after)
        from_b = sent.cursor
        sent = a.changes_since(from_a, after)
        b.apply_changes(sent, after)
        from_a = sent.cursor
    columns = [name for (name,) in a.conn.execute("SELECT name FROM pragma_table_info('toggled_notes')") if name != "_pydsqlite_seq"]
    stored = f"SELECT {', '.join(columns)} FROM toggled_notes"  # all but the sequence number, which is each replica's own
    assert a.conn.execute(stored).fetchall() == b.conn.execute(stored).fetchall()
