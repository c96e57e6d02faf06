"""Replica calls fail with the library's own errors, naming where the problem is, and change nothing:
values SQLite cannot bind, arguments of the wrong type, a model ahead of its table."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import namedtuple
from typing import Annotated

import pytest
from pydantic import StringConstraints

from pydsqlite import LWW, ChangeSet, Collate, Database, PrimaryKey, SchemaMismatchError, SyncError, SyncModel, UsageError, sync_models
from pydsqlite.replica.changeset import RowChange


class Num(SyncModel, table="nums"):
    id: Annotated[int, PrimaryKey()]
    n: Annotated[int, LWW()] = 0
    count: int = 0


class Word(SyncModel, table="words"):
    id: Annotated[str, PrimaryKey()]
    w: Annotated[str, LWW()] = ""
    note: str = ""


def _replica(path) -> tuple[sqlite3.Connection, Database]:
    conn = sqlite3.connect(path)
    sync_models(conn, [Num, Word])
    return conn, Database(conn)


def _dump(conn: sqlite3.Connection) -> list[str]:
    return list(conn.iterdump())


def _with(change: RowChange, **fields) -> RowChange:
    values = {**change.__dict__, **fields}
    return RowChange(**values)


@pytest.mark.parametrize(
    ("table", "where", "bad"),
    [
        ("nums", "key", 2**63),
        ("nums", "key", -(2**63) - 1),
        ("nums", "lww", 2**64),
        ("nums", "group", 10**30),
        ("words", "key", "\udc80"),
        ("words", "lww", "ok\ud800"),
        ("words", "group", "\udfff tail"),
    ],
)
def test_a_value_sqlite_cannot_bind_is_refused_naming_the_change_and_nothing_is_written(tmp_path, table, where, bad):
    _, source = _replica(tmp_path / "source.db")
    source.insert(Num(id=1, n=1, count=1))
    source.insert(Word(id="a", w="a", note="a"))
    conn, target = _replica(tmp_path / "target.db")
    target.insert(Word(id="kept", w="x"))
    before = _dump(conn)

    changes = list(source.changes_since(models=[Num, Word]).changes)
    position = next(n for n, change in enumerate(changes) if change.table == table)
    change = changes[position]
    if where == "key":
        changes[position] = _with(change, key=(bad,))
    elif where == "lww":
        name = next(iter(change.columns))
        changes[position] = _with(change, columns={name: (change.columns[name][0], bad)})
    else:
        changes[position] = _with(change, values={**change.values, ("count" if table == "nums" else "note"): bad})

    with pytest.raises(SyncError) as raised:
        target.apply_changes(ChangeSet(tuple(changes), 5, "peer"), models=[Num, Word])
    message = str(raised.value)
    assert f"change #{position}" in message and repr(table) in message and repr(bad) in message
    assert _dump(conn) == before


@pytest.mark.parametrize("wrong", [{"changes": []}, "{}", b"{}", [], None])
def test_apply_changes_takes_only_a_changeset(tmp_path, wrong):
    conn, db = _replica(tmp_path / "r.db")
    before = _dump(conn)
    with pytest.raises(UsageError, match="apply_changes takes a ChangeSet"):
        db.apply_changes(wrong)
    assert _dump(conn) == before


@pytest.mark.parametrize("lww", [True, False])
def test_a_model_ahead_of_its_table_is_named_by_the_feed_and_the_merge(tmp_path, lww):
    """A new field declared but sync_models not yet run: the local database is behind, which is what
    the error says (not a raw "no such column", nor a hint that the other replica is behind)."""
    conn, db = _replica(tmp_path / "r.db")
    db.insert(Word(id="a", w="a"))
    feed = db.changes_since(models=[Num, Word])
    before = _dump(conn)

    if lww:

        class Ahead(SyncModel, table="words"):
            id: Annotated[str, PrimaryKey()]
            w: Annotated[str, LWW()] = ""
            note: str = ""
            extra: Annotated[str, LWW()] = ""
    else:

        class Ahead(SyncModel, table="words"):  # type: ignore[no-redef]
            id: Annotated[str, PrimaryKey()]
            w: Annotated[str, LWW()] = ""
            note: str = ""
            extra: str = ""

    for call in (lambda: db.changes_since(models=[Ahead]), lambda: db.apply_changes(feed, models=[Ahead])):
        with pytest.raises(SchemaMismatchError) as raised:
            call()
        assert (raised.value.table, raised.value.column) == ("words", "extra")
        assert "sync_models" in str(raised.value)
    assert _dump(conn) == before
    sync_models(conn, [Num, Ahead])
    assert db.apply_changes(db.changes_since(models=[Ahead]), models=[Ahead]) == 0


# --- changes this replica could only take by landing them on the wrong row ---------------------


class Day(SyncModel, table="days"):
    day: Annotated[dt.date, PrimaryKey()]
    text: Annotated[str, LWW()] = ""


class Handle(SyncModel, table="handles"):
    id: Annotated[str, PrimaryKey(), StringConstraints(to_lower=True)]
    text: Annotated[str, LWW()] = ""
    count: int = 0


class Measure(SyncModel, table="measures"):
    at: Annotated[float, PrimaryKey()]
    value: Annotated[str, LWW()] = ""


class Folded(SyncModel, table="folded"):
    id: Annotated[str, PrimaryKey(), Collate("NOCASE")]
    text: Annotated[str, LWW()] = ""


def _pair(models, path):
    older = Database(sqlite3.connect(path / "older.db"), wall_clock=lambda: 1_700_000_000_000)
    newer = Database(sqlite3.connect(path / "newer.db"), wall_clock=lambda: 1_700_000_000_500)
    for db in (older, newer):
        sync_models(db.conn, models)
    return older, newer


@pytest.mark.parametrize(
    ("model", "fields", "spelled"),
    [(Day, {"day": dt.date(2024, 1, 1)}, "2024-01-01T00:00:00"), (Handle, {"id": "abc"}, "ABC")],
)
def test_a_key_the_model_would_change_is_refused_not_landed_on_another_row(tmp_path, model, fields, spelled):
    older, newer = _pair([model], tmp_path)
    older.insert(model(**fields, text="older write"))
    newer.insert(model(**fields, text="newer write"))
    stale = older.changes_since(models=[model]).changes[0]
    respelled = _with(stale, key=(spelled,))  # the same stale state, its key in another spelling
    before = _dump(newer.conn)
    with pytest.raises(SyncError, match=rf"with key \({spelled!r},\) validates to the key .*would land on another row"):
        newer.apply_changes(ChangeSet((respelled,), 1, "other"), [model])
    assert _dump(newer.conn) == before
    assert newer.apply_changes(ChangeSet((stale,), 1, "other"), [model]) == 0  # as stored, it merges (and loses)
    assert [row.text for row in newer.select(model)] == ["newer write"]


@pytest.mark.parametrize("key", [-0.0, float("nan")])
def test_float_keys_sqlite_cannot_tell_apart_are_refused(tmp_path, key):
    older, newer = _pair([Measure], tmp_path)
    newer.insert(Measure(at=0.0, value="zero"))
    older.insert(Measure(at=1.5, value="x"))
    change = _with(older.changes_since(models=[Measure]).changes[0], key=(key,))
    before = _dump(newer.conn)
    with pytest.raises(SyncError, match=rf"change #0 \(table 'measures', key \({key!r},\)\): key column 'at' holds {key!r}, which no key can hold"):
        newer.apply_changes(ChangeSet((change,), 1, "other"), [Measure])
    assert _dump(newer.conn) == before


def test_a_synced_table_whose_key_has_a_collation_refuses_to_sync(tmp_path):
    """'abc' and 'ABC' are one row to SQLite under NOCASE but two keys to replicas: they would swap
    values and never agree, so neither the feed nor a merge runs."""
    older, newer = _pair([Folded], tmp_path)
    older.insert(Folded(id="abc", text="a"))
    newer.insert(Folded(id="ABC", text="b"))
    message = r"table 'folded' cannot sync: its key column 'id' compares with COLLATE NOCASE.*drop the collation"
    with pytest.raises(SyncError, match=message):
        older.changes_since(models=[Folded])
    with pytest.raises(SyncError, match=message):
        newer.apply_changes(ChangeSet((), 0, "x"), [Folded])


def test_a_deleted_row_that_does_not_validate_is_refused_like_a_visible_one(tmp_path):
    """A tombstone keeps the row's registers, which come back when a later write revives the row:
    taken unchecked, they would make every later merge of that row fail."""
    _, source = _replica(tmp_path / "source.db")
    source.insert(Num(id=1, n=1, count=1))
    source.delete(Num, 1)
    (dead,) = source.changes_since(models=[Num]).changes
    assert dead.deleted is not None and not dead.alive
    conn, target = _replica(tmp_path / "target.db")
    target.insert(Num(id=2, n=2))  # the replica's own bookkeeping tables exist
    before = _dump(conn)
    with pytest.raises(SyncError, match=r"a deleted row of table 'nums' with key \(1,\) does not validate \(column count\)"):
        target.apply_changes(ChangeSet((_with(dead, values={"count": "many"}),), 1, "source"), [Num])
    assert _dump(conn) == before
    assert target.apply_changes(ChangeSet((dead,), 1, "source"), [Num]) == 1


@pytest.mark.parametrize("register", [lambda stamp, value: {stamp, value}, lambda stamp, value: {stamp: value, "x": 1}])
def test_a_register_that_is_not_a_pair_is_refused_naming_the_column(tmp_path, register):
    _, source = _replica(tmp_path / "source.db")
    source.insert(Num(id=1, n=1))
    (change,) = source.changes_since(models=[Num]).changes
    stamp, value = change.columns["n"]
    conn, target = _replica(tmp_path / "target.db")
    with pytest.raises(SyncError, match=r"change #0 \(table 'nums', key \(1,\)\): column 'n' must be a \(timestamp, value\) pair"):
        target.apply_changes(ChangeSet((_with(change, columns={"n": register(stamp, "v")}),), 1, "source"), [Num])
    Pair = namedtuple("Pair", "stamp value")
    assert target.apply_changes(ChangeSet((_with(change, columns={"n": Pair(stamp, value)}),), 1, "source"), [Num]) == 1
    assert target.get(Num, 1).n == value
