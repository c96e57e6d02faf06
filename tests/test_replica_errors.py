"""Replica calls fail with the library's own errors, naming where the problem is, and change nothing:
values SQLite cannot bind, arguments of the wrong type, a model ahead of its table."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import uuid
from collections import namedtuple
from typing import Annotated

import pytest
from pydantic import StringConstraints, model_validator

from pydsqlite import (
    LWW,
    ChangeSet,
    Collate,
    Database,
    ForeignKey,
    PrimaryKey,
    RowNotFoundError,
    SchemaMismatchError,
    SyncError,
    SyncModel,
    Unique,
    UsageError,
    sync_models,
)
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


def _holding(change: RowChange, table: str, where: str, bad: object) -> RowChange:
    """``change`` with ``bad`` as its key, its first LWW value or its plain column's value."""
    if where == "key":
        return _with(change, key=(bad,))
    if where == "lww":
        name = next(iter(change.columns))
        return _with(change, columns={name: (change.columns[name][0], bad)})
    return _with(change, values={**change.values, ("count" if table == "nums" else "note"): bad})


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
    changes[position] = _holding(change, table, where, bad)

    with pytest.raises(SyncError) as raised:
        target.apply_changes(ChangeSet(tuple(changes), 5, "peer"), models=[Num, Word])
    message = str(raised.value)
    assert f"change #{position}" in message and repr(table) in message and repr(bad) in message
    assert (raised.value.table, raised.value.key) == (table, changes[position].key)
    assert _dump(conn) == before


@pytest.mark.parametrize(
    ("table", "where", "bad"),
    [("nums", "key", 2**63), ("nums", "lww", 2**64), ("nums", "group", 10**30), ("words", "key", "\udc80"), ("words", "lww", "ok\ud800"), ("words", "group", "\udfff tail")],
)
def test_a_deleted_row_holding_a_value_sqlite_cannot_store_is_refused_naming_it(tmp_path, table, where, bad):
    """A deleted row's values are kept as JSON, which takes what SQLite refuses: accepted, the tombstone
    would travel on and a later write reviving the row would fail on every replica holding it."""
    _, source = _replica(tmp_path / "source.db")
    source.insert(Num(id=1, n=1, count=1))
    source.insert(Word(id="a", w="a", note="a"))
    source.delete(Num, 1)
    source.delete(Word, "a")
    conn, target = _replica(tmp_path / "target.db")
    target.insert(Word(id="kept", w="x"))
    before = _dump(conn)
    changes = list(source.changes_since(models=[Num, Word]).changes)
    position = next(n for n, change in enumerate(changes) if change.table == table)
    change = changes[position]
    assert not change.alive
    changes[position] = _holding(change, table, where, bad)
    named = rf"a deleted row of table '{table}' with key .* cannot be stored \(column \w+\): " if where != "key" else rf"change #{position} \(table '{table}'"
    with pytest.raises(SyncError, match=named) as raised:  # a key is refused as soon as the merge looks it up
        target.apply_changes(ChangeSet(tuple(changes), 5, "peer"), models=[Num, Word])
    assert (raised.value.table, raised.value.key) == (table, changes[position].key)
    assert _dump(conn) == before


class Event(SyncModel, table="numeric_events"):
    id: Annotated[str, PrimaryKey()]
    at: Annotated[dt.datetime, LWW()]
    title: Annotated[str, LWW()] = ""


def test_a_date_written_as_a_number_on_the_sender_is_refused_by_the_receiver_not_guessed(tmp_path):
    """The sender reads such a row as refused (RowValidationError); its feed carries the stored number, which
    the receiver would read as Unix seconds (a Julian day as a day in 1970) and store: ``SyncError`` naming
    table, key and column, nothing written. A deleted row's kept state is not read, so it does not block."""
    sender, receiver = Database(sqlite3.connect(tmp_path / "sender.db")), Database(sqlite3.connect(tmp_path / "receiver.db"))
    for db in (sender, receiver):
        sync_models(db.conn, [Event])
    sender.insert_many([Event(id="gone", at=dt.datetime(2024, 1, 1)), Event(id="kept", at=dt.datetime(2024, 1, 2))])
    sender.conn.execute("UPDATE numeric_events SET at = '1704067200' WHERE id = 'gone'")
    sender.conn.commit()
    sender.delete(Event, "gone")  # its tombstone keeps the number
    receiver.apply_changes(sender.changes_since(models=[Event]), [Event])
    assert [event.id for event in receiver.select(Event)] == ["kept"]
    sender.conn.execute("UPDATE numeric_events SET at = 2460311.5, title = 'sql' WHERE id = 'kept'")
    sender.conn.commit()
    before = receiver.conn.execute("SELECT * FROM numeric_events").fetchall()
    with pytest.raises(SyncError, match=r"numeric_events.*key \('kept',\) holds '2460311.5' in its date column 'at'") as raised:
        receiver.apply_changes(sender.changes_since(models=[Event]), [Event])
    assert (raised.value.table, raised.value.key) == ("numeric_events", ("kept",))
    assert receiver.conn.execute("SELECT * FROM numeric_events").fetchall() == before


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


def test_a_model_and_a_table_that_disagree_on_syncing_are_refused_not_left_out_of_the_exchange(tmp_path):
    """A table that syncs here, read through a model with no LWW field (a later declaration of the
    table, or one passed in models=), would drop out of every changeset without a word; a model with
    LWW fields on a table that does not sync yet is a database behind its model."""

    class Jotting(SyncModel, table="jottings"):
        id: Annotated[str, PrimaryKey()]
        text: Annotated[str, LWW()] = ""

    conn = sqlite3.connect(tmp_path / "r.db")
    sync_models(conn, [Jotting])
    db = Database(conn)
    db.insert(Jotting(id="a", text="kept"))
    feed = db.changes_since(models=[Jotting])
    assert [change.key for change in feed.changes] == [("a",)]
    before = _dump(conn)

    class PlainJotting(SyncModel, table="jottings"):  # declared later: the registry's model for the table now
        id: Annotated[str, PrimaryKey()]
        text: str = ""

    calls = {
        "registry feed": lambda: db.changes_since(),
        "registry merge": lambda: db.apply_changes(feed),
        "explicit feed": lambda: db.changes_since(models=[PlainJotting]),
        "explicit merge": lambda: db.apply_changes(feed, models=[PlainJotting]),
    }
    for label, call in calls.items():
        with pytest.raises(SchemaMismatchError) as raised:
            call()
        assert raised.value.table == "jottings", label
        assert "PlainJotting" in str(raised.value) and "marks no LWW field" in str(raised.value), label
        assert ("models=[...]" in str(raised.value)) == label.startswith("registry"), label
    assert _dump(conn) == before
    assert db.changes_since(models=[Jotting]).changes == feed.changes

    other = sqlite3.connect(tmp_path / "plain.db")
    sync_models(other, [PlainJotting])
    behind = Database(other)
    for call in (lambda: behind.changes_since(models=[Jotting]), lambda: behind.apply_changes(feed, models=[Jotting])):
        with pytest.raises(SchemaMismatchError, match="does not sync in this database.*run sync_models"):
            call()
    assert behind.changes_since(models=[PlainJotting]).changes == ()
    sync_models(other, [Jotting])
    assert behind.apply_changes(feed, models=[Jotting]) == 1
    assert behind.get(Jotting, "a") == Jotting(id="a", text="kept")


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


class Ticket(SyncModel, table="tickets"):
    id: Annotated[uuid.UUID, PrimaryKey()]
    text: Annotated[str, LWW()] = ""


def test_a_key_written_by_sql_in_another_spelling_is_refused_with_the_repair_to_run_on_the_sender(tmp_path):
    """A row inserted by SQL with a UUID key without hyphens: the model reads it, but the key travels as
    stored and the receiver refuses it (it would land on another row). The error gives the UPDATE that
    rewrites the key on the sender; once run there, the replicas exchange."""
    sender, receiver = _pair([Ticket], tmp_path)
    key = uuid.UUID(int=7)
    sender.conn.execute("INSERT INTO tickets (id, text) VALUES (?, 'by SQL')", (key.hex,))
    sender.conn.commit()
    sender.insert(Ticket(id=uuid.UUID(int=8), text="by pydsqlite"))
    with pytest.raises(SyncError, match="Rewrite it once on that replica") as refused:
        receiver.apply_changes(sender.changes_since(), [Ticket])
    repair = str(refused.value).rsplit("where the row is: ", 1)[1]
    assert repair == f"UPDATE `tickets` SET `id` = '{key}' WHERE `id` = '{key.hex}'"
    assert receiver.select(Ticket) == []
    sender.conn.execute(repair)
    sender.conn.commit()
    sender.update(Ticket, key, text="repaired")  # an UPDATE by SQL alone keeps the old timestamps
    receiver.apply_changes(sender.changes_since(), [Ticket])
    assert sorted((ticket.id, ticket.text) for ticket in receiver.select(Ticket)) == [(key, "repaired"), (uuid.UUID(int=8), "by pydsqlite")]


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


class Span(SyncModel, table="spans"):
    """Two LWW columns tied by a model validator: each replica's row is valid, a merge of two
    concurrent edits (one column from each side) may not be."""

    id: Annotated[str, PrimaryKey()]
    lo: Annotated[int, LWW()] = 0
    hi: Annotated[int, LWW()] = 0

    @model_validator(mode="after")
    def _ordered(self) -> "Span":
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo} exceeds hi {self.hi}")
        return self


def test_a_merged_row_the_model_refuses_names_its_key_and_the_application_settles_it_with_a_new_write(tmp_path):
    """Concurrent edits that are each valid but merge into a row the model refuses: each side
    refuses the whole changeset (nothing is written, the other rows wait too), and the error's
    ``table`` and ``key`` name the row. ``touch`` on one side (its values, stamped after both
    edits) settles it: both replicas then merge everything and agree."""
    replicas = []
    for name, start in (("a", 1_700_000_000_000), ("b", 1_700_000_000_100)):
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        sync_models(conn, [Span, Num])
        replicas.append(Database(conn, wall_clock=lambda start=start: start))
    a, b = replicas
    a.insert(Span(id="s", lo=0, hi=10))
    b.apply_changes(a.changes_since(models=[Span]), [Span])
    a.update(Span, "s", lo=5)  # valid here: 5 <= 10
    b.update(Span, "s", hi=3)  # valid there: 0 <= 3
    a.insert(Num(id=1, n=1))  # an unrelated row travels in the same changeset
    before = {name: _dump(db.conn) for name, db in (("a", a), ("b", b))}
    for receiver, sender, name in ((b, a, "b"), (a, b, "a")):
        with pytest.raises(SyncError, match=r"(?s)spans.*'s'.*lo 5 exceeds hi 3") as refused:
            receiver.apply_changes(sender.changes_since(models=[Span, Num]), [Span, Num])
        assert (refused.value.table, refused.value.key) == ("spans", ("s",))
        assert _dump(receiver.conn) == before[name]

    assert a.update(Span, "s", lo=5, hi=10) == Span(id="s", lo=5, hi=10)  # unchanged values: no new timestamps
    with pytest.raises(SyncError, match="lo 5 exceeds hi 3"):
        b.apply_changes(a.changes_since(models=[Span, Num]), [Span, Num])
    assert a.touch(Span, refused.value.key[0], "lo", "hi") == Span(id="s", lo=5, hi=10)  # a's row, stamped now
    b.apply_changes(a.changes_since(models=[Span, Num]), [Span, Num])
    a.apply_changes(b.changes_since(models=[Span, Num]), [Span, Num])
    for db in (a, b):
        assert db.get(Span, "s") == Span(id="s", lo=5, hi=10)
        assert db.get(Num, 1) == Num(id=1, n=1)


def test_touch_stamps_only_the_named_fields_and_refuses_what_has_no_timestamp(tmp_path):
    """``touch`` re-stamps the named LWW fields (a field without LWW stamps the row version, shared by
    every such field), so those local values beat a concurrent remote edit this replica has seen,
    while the fields it did not name still take the remote edit. Bad calls change nothing."""
    conns = [sqlite3.connect(tmp_path / f"{name}.db") for name in "ab"]
    for conn in conns:
        sync_models(conn, [Num, Word])
    a = Database(conns[0], wall_clock=lambda: 1_700_000_000_000)
    b = Database(conns[1], wall_clock=lambda: 1_700_000_000_500)  # ahead: its edits win unless touched
    a.insert(Word(id="w", w="first", note="n1"))
    b.apply_changes(a.changes_since(models=[Word]), [Word])
    b.update(Word, "w", w="remote", note="remote note")
    a.apply_changes(b.changes_since(models=[Word]), [Word])  # a now holds b's edit; a's clock has received it
    a.conn.execute("UPDATE words SET w = 'mine', note = 'my note' WHERE id = 'w'")  # by SQL: not stamped
    a.conn.commit()
    assert a.touch(Word, "w", "w") == Word(id="w", w="mine", note="my note")
    b.apply_changes(a.changes_since(models=[Word]), [Word])
    assert b.get(Word, "w") == Word(id="w", w="mine", note="remote note")  # the version was not touched
    a.touch(Word, "w")  # every non-key field: w and the version
    b.apply_changes(a.changes_since(models=[Word]), [Word])
    assert b.get(Word, "w") == Word(id="w", w="mine", note="my note")

    before = _dump(a.conn)
    for call, error, message in [
        (lambda: a.touch(Word, "nope"), RowNotFoundError, "no row with key 'nope'"),
        (lambda: a.touch(Word, "w", "id"), UsageError, "'id' of table 'words' is the row's key"),
        (lambda: a.touch(Word, "w", "colour"), UsageError, "has no field.*'colour'"),
        (lambda: a.touch(Word, 5), UsageError, "touch"),
        (lambda: a.touch(Plainly, 1), UsageError, "'plainly' is not synced"),
    ]:
        with pytest.raises(error, match=message):
            call()
    assert _dump(a.conn) == before


def test_touch_of_an_unknown_key_on_a_fresh_replica_says_the_row_is_not_found(tmp_path):
    """A replica that has not written or merged anything yet has no sync tables: touch still says
    that no row has the key, as it does later."""
    db = Database(sqlite3.connect(tmp_path / "fresh.db"))
    sync_models(db.conn, [Word])
    with pytest.raises(RowNotFoundError, match="no row with key 'missing' in table 'words', deleted or not"):
        db.touch(Word, "missing")


class Plainly(SyncModel, table="plainly"):
    id: Annotated[int, PrimaryKey()]
    text: str = ""


def _span_replicas(tmp_path) -> tuple[Database, Database]:
    replicas = []
    for name, start in (("a", 1_700_000_000_000), ("b", 1_700_000_000_100)):
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        sync_models(conn, [Span, Num])
        replicas.append(Database(conn, wall_clock=lambda start=start: start))
    return replicas[0], replicas[1]


def _exchange(a: Database, b: Database) -> None:
    """Each replica applies the other's changeset (both are tried); the first refusal is raised."""
    refusals = []
    for receiver, sender in ((b, a), (a, b)):
        try:
            receiver.apply_changes(sender.changes_since(models=[Span, Num]), [Span, Num])
        except SyncError as error:
            refusals.append(error)
    if refusals:
        raise refusals[0]


@pytest.mark.parametrize(
    ("deleted_on", "touched_on", "survives"),
    [
        ("both", "a", False), ("both", "b", False),
        ("a", "a", False),  # the deleter re-asserts its deletion (and the values it kept)
        ("a", "b", True),  # the other side re-asserts its row: a write after the delete revives it
    ],
)
def test_a_refused_merge_of_a_deleted_row_is_settled_by_touch_on_either_side(tmp_path, deleted_on, touched_on, survives):
    """Concurrent edits that merge into registers the model refuses block the exchange even when
    the row was deleted meanwhile (a deleted row keeps its registers, and they are validated).
    ``touch`` on a deleted row stamps the values its tombstone keeps, then the deletion: the row
    stays deleted everywhere; ``touch`` on a visible row makes its values win, reviving it."""
    a, b = _span_replicas(tmp_path)
    a.insert(Span(id="s", lo=0, hi=10))
    b.apply_changes(a.changes_since(models=[Span]), [Span])
    a.update(Span, "s", lo=5)
    b.update(Span, "s", hi=3)
    for name, db in (("a", a), ("b", b)):
        if deleted_on in (name, "both"):
            db.delete(Span, "s")
    b.insert(Num(id=7, n=7))  # an unrelated row waits with the refused one
    with pytest.raises(SyncError) as refused:
        _exchange(a, b)
    assert (refused.value.table, refused.value.key) == ("spans", ("s",))
    with pytest.raises(RowNotFoundError, match="no row with key 'never' in table 'spans', deleted or not"):
        a.touch(Span, "never")

    toucher = a if touched_on == "a" else b
    row = toucher.touch(Span, *refused.value.key)
    assert (row is None) == (deleted_on in (touched_on, "both"))
    _exchange(a, b)
    expected = toucher.get(Span, "s") if survives else None
    assert survives == (expected is not None)
    for db in (a, b):
        assert db.get(Span, "s") == expected
        assert db.get(Num, 7) == Num(id=7, n=7)
    assert a.changes_since(models=[Span]).changes == b.changes_since(models=[Span]).changes  # the same state, tombstone included


def test_touch_settles_a_delete_made_by_sql_first(tmp_path):
    """A row deleted by plain SQL is a delete that syncs: touching it stamps its tombstone."""
    a, b = _span_replicas(tmp_path)
    a.insert(Span(id="s", lo=1, hi=2))
    b.apply_changes(a.changes_since(models=[Span]), [Span])
    a.conn.execute("DELETE FROM spans WHERE id = 's'")
    a.conn.commit()
    assert a.touch(Span, "s", "lo") is None
    b.apply_changes(a.changes_since(models=[Span]), [Span])
    assert b.get(Span, "s") is None


def test_a_new_process_settles_a_refused_row_after_receiving_the_changeset_once_more(tmp_path):
    """A process that did not receive the refused changeset has a clock that may be behind the
    other side's edit (its wall clock is slower): its touch alone would lose again. Applying the
    changeset once more is refused again but moves the clock, and the touch then settles the row."""
    a, b = _span_replicas(tmp_path)  # b's wall clock runs 100 ms ahead
    a.insert(Span(id="s", lo=0, hi=10))
    b.apply_changes(a.changes_since(models=[Span]), [Span])
    a.update(Span, "s", lo=5)
    b.update(Span, "s", hi=3)
    with pytest.raises(SyncError):
        _exchange(a, b)
    restarted = Database(sqlite3.connect(tmp_path / "a.db"), wall_clock=lambda: 1_700_000_000_000)
    restarted.touch(Span, "s")  # stamped before b's edit: not enough
    with pytest.raises(SyncError):
        _exchange(restarted, b)
    restarted = Database(sqlite3.connect(tmp_path / "a.db"), wall_clock=lambda: 1_700_000_000_000)
    with pytest.raises(SyncError):
        restarted.apply_changes(b.changes_since(models=[Span, Num]), [Span, Num])
    restarted.touch(Span, "s")
    _exchange(restarted, b)
    assert restarted.get(Span, "s") == b.get(Span, "s") == Span(id="s", lo=5, hi=10)


class Seat(SyncModel, table="seats"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW(), Unique()]


def test_a_changeset_a_unique_index_refuses_names_the_rows_and_is_settled_by_an_update(tmp_path):
    """Values swapped between rows in one transaction, or one value given to different keys by two
    replicas, hit a unique index row by row: the refusal names the table, the incoming row and the
    row holding its value here, and changes nothing; updating one of the rows settles it."""
    older, newer = _pair([Seat], tmp_path)
    older.insert(Seat(id="s1", label="A1"))
    older.insert(Seat(id="s2", label="A2"))
    newer.apply_changes(older.changes_since(models=[Seat]), [Seat])
    cursor = older.changes_since(models=[Seat]).cursor
    with older.transaction():
        older.update(Seat, "s1", label="tmp")
        older.update(Seat, "s2", label="A1")
        older.update(Seat, "s1", label="A2")
    swapped = older.changes_since(cursor, models=[Seat])
    before = _dump(newer.conn)
    with pytest.raises(SyncError, match=r"unique index on seats\(label\): it gives label = 'A1' to the row with key \('s2',\), "
                       r"which the row with key \('s1',\) holds here \(.*swapped\).*update one of the rows") as refused:
        newer.apply_changes(swapped, [Seat])
    assert (refused.value.table, refused.value.key) == ("seats", ("s2",))
    assert _dump(newer.conn) == before
    newer.update(Seat, "s1", label="B1")  # settled on the refusing side
    newer.apply_changes(swapped, [Seat])
    older.apply_changes(newer.changes_since(models=[Seat]), [Seat])
    assert newer.select(Seat, order_by="id") == older.select(Seat, order_by="id") == [Seat(id="s1", label="B1"), Seat(id="s2", label="A1")]

    other = Database(sqlite3.connect(tmp_path / "other.db"), wall_clock=lambda: 1_700_000_000_000)
    sync_models(other.conn, [Seat])
    other.insert(Seat(id="x", label="A1"))  # the same value under another key, concurrently
    with pytest.raises(SyncError, match=r"gives label = 'A1' to the row with key \('x',\), which the row with key \('s2',\) holds here;") as refused:
        older.apply_changes(other.changes_since(models=[Seat]), [Seat])
    assert (refused.value.table, refused.value.key) == ("seats", ("x",))


class Stall(SyncModel, table="stalls"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW(), Unique()]


class Booking(SyncModel, table="stall_bookings"):
    id: Annotated[str, PrimaryKey()]
    stall: Annotated[str, ForeignKey("stalls.label", on_delete="cascade")]
    note: Annotated[str, LWW()] = ""


@pytest.mark.parametrize("foreign_keys", [False, True])
@pytest.mark.parametrize("with_child_table", [False, True])
def test_a_unique_value_freed_by_a_delete_and_given_to_a_new_row_merges(tmp_path, foreign_keys, with_child_table):
    """No swap and no conflict: the sender deleted a row, then gave its value to a new one. The merge
    deletes the dead row before writing the new one, unless a row it writes could be reached by the
    delete's ON DELETE actions."""
    models = [Stall, Booking] if with_child_table else [Stall]
    older, newer = _pair(models, tmp_path)
    for db in (older, newer):
        db.conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    older.insert(Stall(id="s1", label="A1"))
    newer.apply_changes(older.changes_since(models=models), models)
    older.delete(Stall, "s1")
    older.insert(Stall(id="s2", label="A1"))
    assert newer.apply_changes(older.changes_since(models=models), models) == 2
    older.apply_changes(newer.changes_since(models=models), models)
    assert newer.select(Stall) == older.select(Stall) == [Stall(id="s2", label="A1")]
    assert newer.conn.execute("PRAGMA foreign_key_check").fetchall() == []


class Pitch(SyncModel, table="pitches"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW(), Unique()]


def _pitch_booking(on_delete: str) -> type[SyncModel]:
    """A table of bookings referencing pitches by key with ``on_delete``."""
    table = f"pitch_bookings_{on_delete.replace(' ', '_')}"
    fields = {
        "__annotations__": {
            "id": Annotated[str, PrimaryKey()],
            "pitch": Annotated[str | None, ForeignKey(Pitch, on_delete=on_delete)],
            "who": Annotated[str, LWW()],
        },
        "__module__": __name__,
    }
    return type(SyncModel)(f"PitchBooking_{on_delete.replace(' ', '_')}", (SyncModel,), fields, table=table)


_PITCH_BOOKINGS = {action: _pitch_booking(action) for action in ("cascade", "set null", "no action", "restrict")}


def _pitch_replicas(tmp_path, booking: type[SyncModel]) -> tuple[Database, Database]:
    older, newer = _pair([Pitch, booking], tmp_path)
    for db in (older, newer):
        db.conn.execute("PRAGMA foreign_keys = ON")
    return older, newer


def _pitch_state(db: Database, booking: type[SyncModel]) -> tuple[list, list]:
    return db.select(Pitch, order_by="id"), db.select(booking, order_by="id")


@pytest.mark.parametrize("on_delete", sorted(_PITCH_BOOKINGS))
def test_a_freed_unique_value_merges_when_the_changeset_also_writes_rows_referencing_its_table(tmp_path, on_delete):
    """The sender deleted pitch p1, gave its label to a new pitch p2 and booked p2 (and kept a booking
    of another pitch). The bookings table references pitches, so the merge would delete p1 after
    writing the rows; as p1's ON DELETE actions reach none of the rows the changeset writes, it is
    deleted first and the label is free. Both replicas end alike, whatever the action."""
    booking = _PITCH_BOOKINGS[on_delete]
    models = [Pitch, booking]
    older, newer = _pitch_replicas(tmp_path, booking)
    older.insert_many([Pitch(id="p1", label="A1"), Pitch(id="p0", label="B1")])
    older.insert(booking(id="b0", pitch="p0", who="ann"))
    newer.apply_changes(older.changes_since(models=models), models)
    cursor = older.changes_since(models=models).cursor
    older.delete(Pitch, "p1")
    older.insert(Pitch(id="p2", label="A1"))
    older.insert(booking(id="b2", pitch="p2", who="bob"))
    older.update(booking, "b0", who="cy")
    assert newer.apply_changes(older.changes_since(cursor, models=models), models) == 4
    older.apply_changes(newer.changes_since(models=models), models)
    assert _pitch_state(newer, booking) == _pitch_state(older, booking) == (
        [Pitch(id="p0", label="B1"), Pitch(id="p2", label="A1")],
        [booking(id="b0", pitch="p0", who="cy"), booking(id="b2", pitch="p2", who="bob")],
    )
    assert newer.conn.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.parametrize("on_delete", ["no action", "restrict"])
def test_a_freed_unique_value_whose_row_a_local_reference_keeps_is_refused_as_a_conflict(tmp_path, on_delete):
    """Here a booking still references the deleted pitch, and a reference beats a concurrent delete,
    so the pitch stays with its label and two rows want it: refused, naming the reference as the
    cause; removing the reference here settles it."""
    booking = _PITCH_BOOKINGS[on_delete]
    models = [Pitch, booking]
    older, newer = _pitch_replicas(tmp_path, booking)
    older.insert(Pitch(id="p1", label="A1"))
    newer.apply_changes(older.changes_since(models=models), models)
    newer.insert(booking(id="b9", pitch="p1", who="here"))
    cursor = older.changes_since(models=models).cursor
    older.delete(Pitch, "p1")
    older.insert(Pitch(id="p2", label="A1"))
    before = _pitch_state(newer, booking)
    with pytest.raises(SyncError, match=r"which the row with key \('p1',\) holds here: the changeset deletes that row, but rows "
                                        r"here reference it.*remove the references to the row with key \('p1',\) here"):
        newer.apply_changes(older.changes_since(cursor, models=models), models)
    assert _pitch_state(newer, booking) == before
    newer.delete(booking, "b9")
    newer.apply_changes(older.changes_since(cursor, models=models), models)
    older.apply_changes(newer.changes_since(models=models), models)
    assert _pitch_state(newer, booking) == _pitch_state(older, booking) == ([Pitch(id="p2", label="A1")], [])


def test_a_freed_unique_value_whose_delete_would_reach_a_row_the_changeset_writes_is_refused_with_a_safe_remedy(tmp_path):
    """The sender moved booking b1 from p1 to p2, deleted p1 and gave its label to p2. Deleting p1
    first here would cascade to the local b1 (still on p1) and its tombstone would beat the move, so
    the delete waits and the label is taken: refused, nothing applied, with advice that does not
    revive p1. Following it, both replicas end alike with b1 kept."""
    booking = _PITCH_BOOKINGS["cascade"]
    models = [Pitch, booking]
    older, newer = _pitch_replicas(tmp_path, booking)
    older.insert_many([Pitch(id="p1", label="A1"), Pitch(id="p2", label="B1")])
    older.insert(booking(id="b1", pitch="p1", who="ann"))
    newer.apply_changes(older.changes_since(models=models), models)
    cursor = older.changes_since(models=models).cursor
    older.update(booking, "b1", pitch="p2")
    older.delete(Pitch, "p1")
    older.update(Pitch, "p2", label="A1")
    before = _pitch_state(newer, booking)
    with pytest.raises(SyncError, match=r"which the row with key \('p1',\) holds here until the changeset deletes it: .*"
                                        r"Settle it on the sender: give the row with key \('p2',\) a value no other row holds") as refused:
        newer.apply_changes(older.changes_since(cursor, models=models), models)
    assert "swap" not in str(refused.value)
    assert (refused.value.table, refused.value.key) == ("pitches", ("p2",))
    assert _pitch_state(newer, booking) == before
    older.update(Pitch, "p2", label="A1-moving")
    newer.apply_changes(older.changes_since(cursor, models=models), models)
    cursor = older.changes_since(models=models).cursor
    older.update(Pitch, "p2", label="A1")
    newer.apply_changes(older.changes_since(cursor, models=models), models)
    older.apply_changes(newer.changes_since(models=models), models)
    assert _pitch_state(newer, booking) == _pitch_state(older, booking) == (
        [Pitch(id="p2", label="A1")], [booking(id="b1", pitch="p2", who="ann")],
    )


@pytest.mark.parametrize("opened_by", ["Database.transaction()", "the application's own write"])
def test_the_feed_is_refused_inside_an_open_transaction_whose_writes_may_still_roll_back(tmp_path, opened_by):
    """A feed read inside a transaction would carry its uncommitted rows; rolled back, they never
    were, and the next writes reuse their sequence numbers, which the feed's cursor skips."""
    conn, db = _replica(tmp_path / "r.db")
    db.insert(Word(id="a", w="a"))
    conn.execute("CREATE TABLE app_log (line TEXT)")
    conn.commit()
    if opened_by == "Database.transaction()":
        with pytest.raises(UsageError, match=r"changes_since\(\) reads committed changes only"), db.transaction():
            db.insert(Word(id="b", w="b"))
            db.changes_since(models=[Num, Word])
    else:
        conn.execute("INSERT INTO app_log VALUES ('pending')")  # legacy mode: a transaction is open now
        with pytest.raises(UsageError, match="call it after the transaction ends"):
            db.changes_since(models=[Num, Word])
        conn.rollback()
    assert not conn.in_transaction
    feed = db.changes_since(models=[Num, Word])
    assert [change.key for change in feed.changes] == [("a",)]
    db.insert(Word(id="c", w="c"))
    assert [change.key for change in db.changes_since(feed.cursor, models=[Num, Word]).changes] == [("c",)]


def test_a_replica_restored_from_a_backup_sends_what_it_writes_after_the_restore(tmp_path):
    """A peer keeps the cursor it reached before the restore; the restored file numbers its next
    changes past every cursor it gave out (the numbers follow its clock), so none is skipped. The clock
    is injected: with the real one, a restore within the millisecond of the last write numbered its
    next change at the peer's cursor (a restore comes later in time, which this clock says)."""
    now = {"t": 1_700_000_000_000}
    conn, db = _replica(tmp_path / "a.db")
    db = Database(conn, wall_clock=lambda: now["t"])
    _, peer = _replica(tmp_path / "b.db")
    db.insert(Word(id="kept", w="in the backup"))
    conn.execute(f"VACUUM INTO '{tmp_path / 'backup.db'}'")
    db.insert_many([Word(id=f"lost{n}", w="after the backup") for n in range(5)])
    feed = db.changes_since(models=[Num, Word])
    peer.apply_changes(feed, [Num, Word])
    conn.close()
    (tmp_path / "a.db").write_bytes((tmp_path / "backup.db").read_bytes())
    now["t"] += 1
    restored = Database(sqlite3.connect(tmp_path / "a.db"), wall_clock=lambda: now["t"])
    for n in range(7):  # more writes than the backup lacks, so plain counting would pass the peer's cursor again
        restored.insert(Word(id=f"new{n}", w="after the restore"))
        later = restored.changes_since(feed.cursor, models=[Num, Word])
        assert f"new{n}" in {change.key[0] for change in later.changes}
    peer.apply_changes(restored.changes_since(feed.cursor, models=[Num, Word]), [Num, Word])
    assert {word.id for word in peer.select(Word)} >= {f"new{n}" for n in range(7)}


def test_a_restored_replica_numbers_past_cursors_taken_while_a_peer_had_pushed_its_clock_ahead(tmp_path):
    """Its clock had taken a peer's timestamp 30 s ahead (within max_drift_ms) before the feed a
    peer resumes from; restored from a backup made before that, it still numbers past that cursor."""
    now = {"a": 1_700_000_000_000, "b": 1_700_000_030_000, "p": 1_700_000_000_000}

    def replica(name: str) -> Database:
        conn = sqlite3.connect(tmp_path / f"{name}.db")
        sync_models(conn, [Num, Word])
        return Database(conn, wall_clock=lambda: now[name])

    a, b, peer = replica("a"), replica("b"), replica("p")
    a.insert(Word(id="kept", w="in the backup"))
    a.conn.execute(f"VACUUM INTO '{tmp_path / 'backup.db'}'")
    b.insert(Word(id="from_b", w="stamped 30 s ahead"))
    a.apply_changes(b.changes_since(models=[Num, Word]), [Num, Word])
    feed = a.changes_since(models=[Num, Word])
    peer.apply_changes(feed, [Num, Word])
    a.conn.close()
    (tmp_path / "a.db").write_bytes((tmp_path / "backup.db").read_bytes())
    now["a"] += 1_000
    restored = Database(sqlite3.connect(tmp_path / "a.db"), wall_clock=lambda: now["a"])
    restored.insert(Word(id="one second later", w="x"))
    now["a"] += 40_000
    restored.insert(Word(id="forty seconds later", w="x"))
    sent = {change.key[0] for change in restored.changes_since(feed.cursor, models=[Num, Word]).changes}
    assert {"one second later", "forty seconds later"} <= sent


def test_a_cursor_that_is_not_this_replicas_is_refused(tmp_path):
    _, db = _replica(tmp_path / "a.db")
    _, other = _replica(tmp_path / "b.db")
    db.insert(Word(id="a", w="a"))
    other.insert_many([Word(id=f"b{n}", w="b") for n in range(3)])
    ahead = other.changes_since(models=[Num, Word]).cursor + 10_000
    with pytest.raises(SyncError, match=rf"cursor {ahead}, beyond this replica's feed \(its last change is number \d+\).*changes_since\(None\)"):
        db.changes_since(ahead, models=[Num, Word])
    for bad in ("abc", 1.5, True, -1):
        with pytest.raises(UsageError, match=r"changes_since\(\) takes a cursor .* not "):
            db.changes_since(bad, models=[Num, Word])
    assert [change.key for change in db.changes_since(None, models=[Num, Word]).changes] == [("a",)]


def test_sequence_numbers_stay_exact_in_json_whatever_drift_the_clock_accepts(tmp_path):
    """Sequence numbers run ahead of the wall clock by the drift the clock accepts, capped, so they
    stay below 2**53 (exact where JSON readers hold numbers as doubles) even for a huge drift."""
    conn = sqlite3.connect(tmp_path / "a.db")
    sync_models(conn, [Num, Word])
    db = Database(conn, max_drift_ms=2**62)
    db.insert_many([Word(id=f"w{n}", w="x") for n in range(3)])
    cursor = db.changes_since(models=[Num, Word]).cursor
    assert 0 < cursor < 2**53


def test_a_genuine_unique_conflict_is_named_not_a_value_the_same_changeset_frees(tmp_path):
    """The sender freed A1 (deleted s1, gave A1 to s2) and gave X to s3, while here s4 took X. The
    refusal names s3 and s4 over X: s1, back after the rollback, was never in the way."""
    older, newer = _pair([Seat], tmp_path)
    older.insert_many([Seat(id="s1", label="A1"), Seat(id="s4", label="Y")])
    newer.apply_changes(older.changes_since(models=[Seat]), [Seat])
    older.update(Seat, "s4", label="X")
    newer.delete(Seat, "s1")
    newer.insert_many([Seat(id="s2", label="A1"), Seat(id="s3", label="X")])
    with pytest.raises(SyncError, match=r"gives label = 'X' to the row with key \('s3',\), which the row with key \('s4',\) holds here") as refused:
        older.apply_changes(newer.changes_since(models=[Seat]), [Seat])
    assert refused.value.key == ("s3",) and "reference" not in str(refused.value)


def test_a_unique_refusal_names_a_row_the_merge_writes_not_one_it_keeps_deleted(tmp_path):
    """The sender gave X to s3, which was deleted here later (it stays deleted), and s4 took X here:
    the merge never writes s3, so the refusal names the clash it met, s5 against s6 over Y."""
    older, newer = _pair([Seat], tmp_path)
    older.insert_many([Seat(id="s3", label="Q"), Seat(id="s4", label="P")])
    newer.apply_changes(older.changes_since(models=[Seat]), [Seat])
    older.update(Seat, "s3", label="X")
    newer.delete(Seat, "s3")  # its clock is later: the delete beats the edit
    newer.update(Seat, "s4", label="X")
    older.insert(Seat(id="s5", label="Y"))
    newer.insert(Seat(id="s6", label="Y"))
    with pytest.raises(SyncError, match=r"gives label = 'Y' to the row with key \('s5',\), which the row with key \('s6',\) holds here") as refused:
        newer.apply_changes(older.changes_since(models=[Seat]), [Seat])
    assert refused.value.key == ("s5",) and "the values were swapped" not in str(refused.value)


class ToggledV1(SyncModel, table="toggled_tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""
    notes: str = ""


class ToggledV2(SyncModel, table="toggled_tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""
    notes: Annotated[str, LWW()] = ""
    due: str = ""


@pytest.mark.parametrize(("sender", "receiver", "told"), [
    (ToggledV2, ToggledV1, "column 'notes' is plain here and LWW in the change; columns this replica's table does not have: ['due']"),
    (ToggledV1, ToggledV2, "column 'notes' is LWW here and plain in the change; columns missing that this replica's table has: ['due']"),
])
def test_a_change_whose_columns_differ_says_how_lww_turned_on_or_off_included(tmp_path, sender, receiver, told):
    conns = [sqlite3.connect(tmp_path / name) for name in ("sender.db", "receiver.db")]
    sync_models(conns[0], [sender])
    sync_models(conns[1], [receiver])
    source, target = Database(conns[0]), Database(conns[1])
    source.insert(sender(id="k", title="t"))
    with pytest.raises(SyncError) as raised:
        target.apply_changes(source.changes_since(models=[sender]), models=[receiver])
    assert str(raised.value) == (
        f"change #0 (table 'toggled_tasks', key ('k',)): its columns differ from this replica's table: {told}; "
        "sync both replicas' schemas first"
    )


def test_a_restored_replica_numbers_past_cursors_whatever_drift_each_writer_accepts(tmp_path):
    """Writer A accepts 10 minutes of drift, writer B (another Database, or the same app restarted with
    another setting) 1 minute. A peer keeps a cursor from A; the file is restored from a backup; B writes.
    B's numbers pass A's cursor too, so the peer's next incremental feed carries B's write."""
    now = {"t": 1_700_000_000_000}
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Num, Word])
    a = Database(conn, wall_clock=lambda: now["t"], max_drift_ms=600_000)
    _, peer = _replica(tmp_path / "peer.db")
    a.insert(Word(id="kept", w="in the backup"))
    conn.execute(f"VACUUM INTO '{tmp_path / 'backup.db'}'")
    a.insert(Word(id="lost", w="after the backup"))
    feed = a.changes_since(models=[Num, Word])
    peer.apply_changes(feed, [Num, Word])
    conn.close()
    path.write_bytes((tmp_path / "backup.db").read_bytes())
    now["t"] += 1_000
    b = Database(sqlite3.connect(path), wall_clock=lambda: now["t"], max_drift_ms=60_000)
    b.insert(Word(id="after the restore", w="b"))
    later = b.changes_since(feed.cursor, models=[Num, Word])
    assert "after the restore" in {change.key[0] for change in later.changes}


def test_a_feed_read_through_a_read_only_connection_says_it_needs_to_write_once_sql_deleted_a_row(tmp_path):
    """A read-only feed reader works until a row is deleted by SQL: the feed must record that delete as a
    tombstone first (or the delete would never travel). UsageError saying so, not SQLite's bare refusal."""
    path = tmp_path / "a.db"
    conn, db = _replica(path)
    db.insert(Word(id="x", w="x"))
    reader = Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True))
    assert [change.key for change in reader.changes_since(models=[Word]).changes] == [("x",)]
    conn.execute("DELETE FROM words WHERE id = 'x'")
    conn.commit()
    with pytest.raises(UsageError, match="this connection is read-only; read the feed through a connection that may write"):
        reader.changes_since(models=[Word])
    (change,) = db.changes_since(models=[Word]).changes  # a writable connection records it
    assert change.key == ("x",) and not change.alive
    assert [change.key for change in reader.changes_since(models=[Word]).changes] == [("x",)]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sqlite3 autocommit=False (PEP 249) needs Python 3.12")
def test_a_pep249_feed_reader_whose_snapshot_another_connection_overtook_is_told_to_commit(tmp_path):
    """An autocommit=False connection always holds a transaction; its snapshot began before another
    connection created the replica's tables (its first write): the feed, which must create them first,
    says to commit instead of SQLite's bare "database is locked"; after a commit it reads."""
    path = tmp_path / "a.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode = WAL")
    sync_models(setup, [Num, Word])
    setup.close()
    reader = Database(sqlite3.connect(path, timeout=1, autocommit=False))
    reader.conn.execute("SELECT count(*) FROM words").fetchone()  # the transaction's snapshot begins
    _, writer = _replica(path)
    writer.insert(Word(id="w", w="x"))
    with pytest.raises(UsageError, match=r"call conn.commit\(\) \(or conn.rollback\(\)\) first"):
        reader.changes_since(models=[Word])
    reader.conn.commit()
    assert [change.key for change in reader.changes_since(models=[Word]).changes] == [("w",)]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sqlite3 autocommit=False (PEP 249) needs Python 3.12")
def test_a_pep249_feed_after_a_refused_commit_sends_nothing_uncommitted(tmp_path, monkeypatch):
    """A block's commit refused by a reader's lock leaves this connection's earlier synced write
    pending and its lock keeping other readers out, so the feed cannot tell what is committed: it
    refuses (it sent the pending row, which a rollback then took back from the origin only)."""
    import pydsqlite.engines.sqlite as sqlite_engine

    path = tmp_path / "origin.db"
    setup = sqlite3.connect(path)
    sync_models(setup, [Word])
    setup.close()
    monkeypatch.setattr(sqlite_engine, "connect_read_only", lambda file: sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=0.05))
    conn = sqlite3.connect(path, autocommit=False, timeout=0.05)
    db = Database(conn)
    db.insert(Word(id="committed", w="a"))
    conn.commit()
    db.insert(Word(id="pending", w="b"))
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM words").fetchone()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        with db.transaction():
            db.insert(Word(id="in a block", w="c"))
    reader.execute("COMMIT")
    reader.close()
    with pytest.raises(UsageError, match=r"cannot be read apart from this autocommit=False connection's open transaction"):
        db.changes_since(models=[Word])
    conn.rollback()
    assert [change.key for change in db.changes_since(models=[Word]).changes] == [("committed",)]


@pytest.mark.parametrize("call", ["changes_since", "apply_changes"])
def test_a_synced_model_named_whose_table_is_missing_is_refused_before_anything_is_written(tmp_path, call):
    """A mistyped path opens a new, empty file: the feed of the models named is not empty, it is
    unknown; nothing is created in that file (the replica's node and tombstone tables neither)."""
    source = Database(sqlite3.connect(tmp_path / "source.db"))
    sync_models(source.conn, [Num])
    source.insert(Num(id=1, n=5))
    changes = source.changes_since(None, [Num])
    conn = sqlite3.connect(tmp_path / "mistyped.db")
    db = Database(conn)
    with pytest.raises(SchemaMismatchError, match="table 'nums' of Num does not exist in this database"):
        db.changes_since(None, [Num]) if call == "changes_since" else db.apply_changes(changes, [Num])
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert db.changes_since(None).changes == ()  # every registered model: the ones whose tables are here
