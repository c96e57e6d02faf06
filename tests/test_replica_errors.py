"""Replica calls fail with the library's own errors, naming where the problem is, and change nothing:
values SQLite cannot bind, arguments of the wrong type, a model ahead of its table."""

from __future__ import annotations

import sqlite3
from typing import Annotated

import pytest

from pydsqlite import LWW, ChangeSet, Database, PrimaryKey, SchemaMismatchError, SyncError, SyncModel, UsageError, sync_models
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
