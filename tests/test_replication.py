"""Replica sync: the clock's properties, the change feed, merges, and convergence of many replicas."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Annotated, Optional
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from pydsqlite import (
    HLC,
    LWW,
    ClockError,
    ConstraintError,
    Database,
    Field,
    ForeignKey,
    PrimaryKey,
    SyncModel,
    Timestamp,
    UsageError,
    col,
    sync_models,
)
from pydsqlite.replica import replication
from pydsqlite.replica.changeset import RowChange, key_from_text, key_text, merge_states, to_json_value
from pydsqlite.replica.hlc import MAX_COUNTER, RECEIVED_COUNTER_LIMIT, successor
from pydsqlite.replica.replication import ChangeSet, SyncError


class Note(SyncModel, table="replica_notes"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""
    count: Annotated[int, LWW()] = 0
    body: str = ""


class Plain(SyncModel, table="plain"):
    id: Annotated[int, PrimaryKey()]
    text: str = ""


class FakeClock:
    """A wall clock the test moves: forwards, backwards, or not at all."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def replica(start: int = 1_700_000_000_000, **options) -> Database:
    conn = sqlite3.connect(":memory:")
    sync_models(conn, [Note, Plain])
    return Database(conn, wall_clock=FakeClock(start), **options)


# --- the clock ---------------------------------------------------------------------------------

wall_steps = st.lists(st.integers(-5_000, 5_000), min_size=1, max_size=40)


@given(steps=wall_steps)
def test_now_is_strictly_monotonic_under_any_wall_clock(steps):
    wall = FakeClock(1_000_000)
    clock = HLC("node-a", wall)
    last = clock.now()
    for step in steps:
        wall.now = max(0, wall.now + step)
        stamp = clock.now()
        assert stamp > last and str(stamp) > str(last)
        assert stamp.millis >= wall.now
        last = stamp


@given(steps=wall_steps, remote_offset=st.integers(-10_000, 59_000), counter=st.integers(0, 1000))
def test_receive_orders_after_both_the_local_past_and_the_message(steps, remote_offset, counter):
    wall = FakeClock(1_000_000)
    clock = HLC("a", wall)
    for step in steps:
        wall.now = max(0, wall.now + step)
        clock.now()
    before = clock.last
    message = Timestamp(max(0, wall.now + remote_offset), counter, "b")
    received = clock.receive(str(message))
    assert received > message and received > before
    assert clock.now() > received


@given(a=st.tuples(st.integers(0, 10**15 - 1), st.integers(0, MAX_COUNTER), st.sampled_from(["a", "b", "zz", "node-1"])),
       b=st.tuples(st.integers(0, 10**15 - 1), st.integers(0, MAX_COUNTER), st.sampled_from(["a", "b", "zz", "node-1"])))
def test_text_order_equals_clock_order_and_round_trips(a, b):
    first, second = Timestamp(*a), Timestamp(*b)
    assert (str(first) < str(second)) == (first < second)
    assert Timestamp.parse(str(first)) == first and len(str(first)) == 15 + 1 + 9 + 1 + 36


node_ids = st.text(alphabet="-_09AZaz", min_size=1, max_size=36).filter(lambda node: node != "-" * 36)


@given(seen=st.tuples(st.integers(0, 10**15 - 2), st.integers(0, RECEIVED_COUNTER_LIMIT), node_ids), node=node_ids,
       steps=wall_steps, concurrent=st.tuples(st.integers(0, 10**15 - 1), st.integers(0, MAX_COUNTER), node_ids))
def test_a_settlement_stamp_is_above_the_state_and_below_anything_a_clock_issues_after_seeing_it(seen, node, steps, concurrent):
    """Foreign-key settlements of a merge are stamped with the successor of the state they settle: above
    it, and below every timestamp any clock issues once it has received that state."""
    state = Timestamp(*seen)
    settled = successor(str(state))
    assert settled > str(state) and Timestamp.parse(settled) > state
    wall = FakeClock(max(0, state.millis - 30_000))
    clock = HLC(node, wall)
    clock.receive(str(state))
    for step in steps:
        wall.now = max(0, wall.now + step)
        assert str(clock.now()) > settled
    other = Timestamp(*concurrent)  # a clock that never saw the state may fall on either side
    assert (str(other) > settled) == (other > Timestamp.parse(settled))


def test_the_node_id_of_settlements_is_reserved():
    with pytest.raises(ClockError, match="reserved"):
        HLC("-" * 36)
    assert successor(f"{5:015d}:{MAX_COUNTER:09d}:{'a' * 36}") == f"{6:015d}:{0:09d}:{'-' * 36}"


def test_drift_overflow_and_malformed_timestamps_are_refused_without_changing_the_clock():
    wall = FakeClock(1_000_000)
    clock = HLC("a", wall, max_drift_ms=60_000)
    clock.now()
    before = clock.last
    with pytest.raises(ClockError, match="ahead of the local clock"):
        clock.receive(Timestamp(1_000_000 + 60_001, 0, "b"))
    assert clock.last == before
    clock.receive(Timestamp(1_000_000 + 60_000, 0, "b"))
    with pytest.raises(ClockError, match="malformed"):
        clock.receive("2024-01-01")
    with pytest.raises(ClockError, match="invalid node id"):
        HLC("has spaces")
    stuck = HLC("c", FakeClock(5))
    stuck.receive(Timestamp(5, MAX_COUNTER - 1, "d"))
    with pytest.raises(ClockError, match="overflow"):
        stuck.now()


@pytest.mark.parametrize("max_drift_ms", [None, "60000", -1, 1.5, float("inf"), True])
def test_clock_arguments_that_would_fail_at_a_merge_are_refused_when_the_database_is_made(max_drift_ms, db_path):
    with pytest.raises(UsageError, match=rf"max_drift_ms must be a whole number of milliseconds, 0 or more, not {re.escape(repr(max_drift_ms))}"):
        Database(db_path, max_drift_ms=max_drift_ms)
    with pytest.raises(UsageError, match="max_drift_ms"):
        HLC("a", max_drift_ms=max_drift_ms)
    with pytest.raises(UsageError, match="wall_clock must be a function returning milliseconds"):
        Database(db_path, wall_clock=1_000_000)


def test_a_wall_clock_in_float_milliseconds_is_read_whole_and_other_readings_are_refused_by_name():
    db = replica()
    db.clock.wall_clock = lambda: 1_700_000_000_123.9
    db.insert(Note(id="float"))
    assert db.conn.execute("SELECT title__hlc FROM replica_notes").fetchone()[0].startswith("001700000000123:000000000:")
    before = state(db)
    for reading, error, message in [
        ("1700000000000", UsageError, r"wall_clock returned '1700000000000' \(str\): it must return milliseconds since the epoch"),
        (float("nan"), UsageError, r"wall_clock returned nan \(float\)"),
        (-5, ClockError, r"wall_clock returned -5: milliseconds since the epoch must be between 0 and"),
        (10**16, ClockError, r"wall_clock returned 10000000000000000"),
    ]:
        db.clock.wall_clock = lambda reading=reading: reading
        with pytest.raises(error, match=message):
            db.insert(Note(id="refused"))
    assert state(db) == before


def test_node_id_is_stored_once_per_database(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Note, Plain])
    node = Database(conn).clock.node_id
    conn.close()
    assert Database(sqlite3.connect(db_path)).clock.node_id == node


# --- feed and merge ------------------------------------------------------------------------------


def exchange(*replicas: Database) -> None:
    for _ in range(2):
        for source in replicas:
            for target in replicas:
                if source is not target:
                    target.apply_changes(ChangeSet.from_json(source.changes_since().to_json()))


def state(db: Database) -> tuple[list, list, list]:
    rows = db.conn.execute("SELECT id, title, count, body FROM replica_notes ORDER BY id").fetchall()
    meta = db.conn.execute("SELECT id, title__hlc, count__hlc, _pydsqlite_version FROM replica_notes ORDER BY id").fetchall()
    tombstones = db.conn.execute("SELECT table_name, key, deleted, state FROM _pydsqlite_tombstones ORDER BY key").fetchall()
    return rows, meta, tombstones


def test_columns_merge_independently_and_the_feed_resumes_from_its_cursor():
    a, b = replica(), replica(start=1_700_000_000_500)
    a.insert(Note(id="n", title="t0", count=1, body="b0"))
    first = a.changes_since()
    assert [c.key for c in first.changes] == [("n",)] and first.cursor >= 1
    b.apply_changes(first)
    a.update(Note, "n", title="from a")
    b.update(Note, "n", count=7)
    assert [c.key for c in a.changes_since(first.cursor).changes] == [("n",)]
    assert a.changes_since(a.changes_since().cursor).changes == ()
    exchange(a, b)
    assert a.get(Note, "n") == b.get(Note, "n") == Note(id="n", title="from a", count=7, body="b0")
    assert state(a) == state(b)


def test_deletes_travel_and_a_newer_write_brings_the_row_back():
    a, b = replica(), replica(start=1_700_000_000_000)
    a.insert(Note(id="n", title="x"))
    exchange(a, b)
    a.delete(Note, "n")
    b.clock.wall_clock.now += 1_000  # b's update is later than a's delete
    b.update(Note, "n", title="edited after the delete")
    exchange(a, b)
    assert a.get(Note, "n") == b.get(Note, "n") == Note(id="n", title="edited after the delete")
    a.clock.wall_clock.now += 5_000
    a.delete(Note, "n")
    exchange(a, b)
    assert a.get(Note, "n") is None and b.get(Note, "n") is None and state(a) == state(b)
    b.insert(Note(id="n", title="reborn"))  # re-insert after delete
    exchange(a, b)
    assert a.get(Note, "n") == Note(id="n", title="reborn") and state(a) == state(b)


def test_applying_twice_or_in_any_order_gives_the_same_state_and_merges_are_not_local_edits():
    a, b, c = replica(), replica(start=1_700_000_000_100), replica(start=1_700_000_000_200)
    a.insert(Note(id="1", title="a"))
    b.insert(Note(id="1", title="b", count=2))
    c.insert(Note(id="2", body="c"))
    sets = [a.changes_since(), b.changes_since(), c.changes_since()]
    one, two = replica(start=1_700_000_001_000), replica(start=1_700_000_001_000)
    for changeset in sets + sets:
        one.apply_changes(changeset)
    for changeset in reversed(sets):
        two.apply_changes(changeset)
    assert state(one)[:2] == state(two)[:2]
    stamps = one.conn.execute("SELECT title__hlc FROM replica_notes").fetchall()
    assert all(not stamp.endswith(one.clock.node_id) for (stamp,) in stamps)
    assert one.clock.last > max(Timestamp.parse(s) for change in sets for ch in change.changes for s in ch.timestamps())
    relay = one.changes_since()
    assert {c.key for c in relay.changes} == {("1",), ("2",)}  # merged changes travel on


def test_equal_timestamps_break_ties_by_value_everywhere():
    a, b = replica(), replica()
    for db, title in ((a, "alpha"), (b, "omega")):
        db.conn.execute("INSERT INTO replica_notes (id, title) VALUES ('n', ?)", (title,))  # baseline stamps on both
        db.conn.commit()
    exchange(a, b)
    assert a.get(Note, "n").title == b.get(Note, "n").title == "omega"


class Stamped(SyncModel, table="replica_stamped"):
    id: Annotated[str, PrimaryKey()]
    at: Annotated[dt.datetime, LWW()]
    owner: Annotated[Optional[uuid.UUID], LWW()] = None
    since: Optional[dt.date] = None


@pytest.mark.parametrize(
    ("on_a", "on_b"),
    [
        ({"at": "2024-01-01T10:00:00Z"}, None),  # one replica's SQL-written row: the other stores it re-encoded
        ({"at": "2024-01-01T10:00:00Z", "owner": "00000000000000000000000000abcdef"}, None),  # a UUID as hex
        ({"at": "2024-01-01T10:00:00Z"}, {"at": "2024-01-01T10:00:00+00:00"}),  # one instant, two spellings
        ({"at": "2024-01-01T10:00:00Z"}, {"at": "2025-06-01T08:30:00+02:00"}),  # two values, both by SQL
        ({"at": "2024-01-01T10:00:00Z", "since": "2024-01-01T00:00:00"}, {"at": "2024-01-01T10:00:00Z", "since": "2024-01-01"}),
    ],
)
def test_rows_written_by_sql_in_another_spelling_converge_to_what_the_model_stores(on_a, on_b):
    """Rows written by SQL carry the baseline timestamp, so replicas compare their values to break the
    tie. A value spelled otherwise than the model stores it ('...Z', a UUID without hyphens) is
    compared as stored, so both replicas store the same bytes and SQL filters agree."""
    a, b = replica(), replica()
    for db, written in ((a, on_a), (b, on_b)):
        sync_models(db.conn, [Note, Plain, Stamped])
        if written is not None:
            names = ", ".join(written)
            db.conn.execute(f"INSERT INTO replica_stamped (id, {names}) VALUES ('k', {', '.join('?' * len(written))})", tuple(written.values()))
            db.conn.commit()
    for _ in range(2):
        for source, target in ((a, b), (b, a)):
            target.apply_changes(ChangeSet.from_json(source.changes_since().to_json()), [Stamped])
    stored = "SELECT id, at, at__hlc, owner, owner__hlc, since, _pydsqlite_version FROM replica_stamped"
    assert a.conn.execute(stored).fetchall() == b.conn.execute(stored).fetchall()
    row = a.get(Stamped, "k")
    written_by_pydsqlite = replica()
    sync_models(written_by_pydsqlite.conn, [Note, Plain, Stamped])
    written_by_pydsqlite.insert(row)
    values = "SELECT at, owner, since FROM replica_stamped"
    assert a.conn.execute(values).fetchall() == written_by_pydsqlite.conn.execute(values).fetchall()
    for db in (a, b):
        assert db.count(Stamped, col("at") == row.at) == 1
        assert db.get(Stamped, "k") == row


tricky = st.sampled_from([0, 1, -1, 10, 2, 0.0, -0.0, 1.0, float("inf"), float("nan"), "", "1", "é", b"", b"1", None])
tied_stamps = st.sampled_from(["000000000000000:000000000:" + "0" * 36, "001700000000000:000000001:" + "a" * 36])


@given(stamp=tied_stamps, a=tricky, b=tricky, group_a=tricky, group_b=tricky)
def test_tied_registers_pick_the_same_winner_in_either_order(stamp, a, b, group_a, group_b):
    one = RowChange("t", ("k",), {"c": (stamp, a)}, stamp, {"g": group_a})
    two = RowChange("t", ("k",), {"c": (stamp, b)}, stamp, {"g": group_b})
    left, right = merge_states(one, two), merge_states(two, one)
    for merged in (left, right):
        assert repr(merged.columns["c"][1]) == repr(max(a, b, key=lambda v: json.dumps(to_json_value(v))))
    assert repr(left.values) == repr(right.values)


def _join_model(key_type: type) -> type[SyncModel]:
    """A synced table keyed by ``key_type``, with two LWW columns and two grouped ones."""
    annotations = {"id": Annotated[key_type, PrimaryKey()], "a": Annotated[str, LWW()], "b": Annotated[int, LWW()], "g": str, "h": int}
    namespace = {"__annotations__": annotations, "__module__": __name__, "a": "", "b": 0, "g": "", "h": 0}
    return type(SyncModel)(f"By{key_type.__name__.title()}", (SyncModel,), namespace, table=f"join_by_{key_type.__name__}")


ByText, ByInt, ByBytes = _join_model(str), _join_model(int), _join_model(bytes)
JOIN_KEYS = {ByText: ["k0", "k1", "k2", "k3"], ByInt: [0, 1, -7, 2**40], ByBytes: [b"", b"\x00", b"k", b"\xff\x01"]}
JOIN_TABLES = {model: f"join_by_{kind}" for model, kind in ((ByText, "str"), (ByInt, "int"), (ByBytes, "bytes"))}
FEW_STAMPS = sorted(f"0017000000000{n:02d}:00000000{c}:" + node * 36 for n in (0, 1) for c in (0, 1) for node in "ab")


@st.composite
def row_states(draw, model: type[SyncModel], key: object) -> RowChange:
    """A state whose registers mostly share one stamp (as one write leaves them) from a few stamps,
    so that ties with different values, and states later or earlier in every register, are common."""
    base = draw(st.sampled_from(FEW_STAMPS))
    stamp = st.just(base) | st.sampled_from(FEW_STAMPS)
    columns = {"a": (draw(stamp), draw(st.sampled_from(["", "x", "y"]))), "b": (draw(stamp), draw(st.sampled_from([0, 1, 2])))}
    values = {"g": draw(st.sampled_from(["", "p", "q"])), "h": draw(st.sampled_from([0, 5]))}
    deleted = draw(st.none() | st.none() | stamp)  # most rows were never deleted
    return RowChange(JOIN_TABLES[model], (key,), columns, draw(stamp), values, deleted)


@settings(max_examples=300)
@given(data=st.data(), model=st.sampled_from([ByText, ByInt, ByBytes]), scan_from=st.sampled_from([0, replication._SCAN_FROM_KEYS]))
def test_a_merge_stores_exactly_the_join_of_the_local_and_incoming_states(data, model, scan_from):
    """Whatever the local rows, tombstones and incoming states (ties, splits, repeated keys in one
    changeset), the replica ends holding ``merge_states`` of each key, and counts the keys that changed;
    also when the local rows are read by scanning the table (``scan_from`` 0) instead of by key."""
    with patch.object(replication, "_SCAN_FROM_KEYS", scan_from):
        _merge_equals_the_join(data, model)


def _merge_equals_the_join(data, model) -> None:
    keys = JOIN_KEYS[model]
    local_keys = data.draw(st.lists(st.sampled_from(keys), unique=True, min_size=len(keys) - 1))
    local = {key: data.draw(row_states(model, key)) for key in local_keys}
    incoming = data.draw(st.lists(st.sampled_from(keys).flatmap(lambda key: row_states(model, key)), min_size=1, max_size=8))
    db = Database(sqlite3.connect(":memory:"))
    sync_models(db.conn, [model])
    db.apply_changes(ChangeSet(tuple(local.values()), 1, "local"), [model])
    expected = dict(local)
    joined: dict[object, RowChange] = {}
    for change in incoming:
        joined[change.key[0]] = merge_states(joined.get(change.key[0]), change)
    for key, change in joined.items():
        expected[key] = merge_states(local.get(key), change)
    changed = db.apply_changes(ChangeSet(tuple(incoming), 2, "remote"), [model])
    held = {change.key[0]: change for change in db.changes_since().changes}
    assert held == expected
    assert changed == sum(1 for key in joined if expected[key] != local.get(key))
    visible = {row.id for row in db.select(model)}
    assert visible == {key for key, state in expected.items() if state.alive}


class NotesCapitalised(SyncModel, table="Spelled_Notes"):
    id: Annotated[str, PrimaryKey()]
    text: Annotated[str, LWW()] = ""
    body: str = ""


class NotesLower(SyncModel, table="spelled_notes"):
    id: Annotated[str, PrimaryKey()]
    text: Annotated[str, LWW()] = ""
    body: str = ""


@pytest.mark.parametrize("held", [True, False], ids=["row held here", "key new here"])
def test_a_table_named_in_another_case_merges_and_relays_as_this_replicas_table(held):
    """SQLite's names ignore ASCII case, so two app versions may spell one table differently: what
    a merge records (tombstones, the feed) is under this replica's name, so deletes travel on and a
    changeset applied again changes nothing."""
    a, b = replica(), replica()
    for db, model in ((a, NotesCapitalised), (b, NotesLower)):
        sync_models(db.conn, [Note, Plain, model])
    if held:
        b.insert(NotesLower(id="k", text="b", body="b"))
        a.apply_changes(b.changes_since(models=[NotesLower]), [NotesCapitalised])
        a.clock.wall_clock.now += 10  # every register of a's delete is later than b's
        a.update(NotesCapitalised, "k", text="a", body="a")
    else:
        a.insert(NotesCapitalised(id="k", text="a", body="a"))
    a.delete(NotesCapitalised, "k")
    changes = a.changes_since(models=[NotesCapitalised])
    assert {change.table for change in changes.changes} == {"Spelled_Notes"}
    assert b.apply_changes(changes, [NotesLower]) == 1
    assert b.select(NotesLower) == []
    assert [(change.table, change.key, change.deleted is not None) for change in b.changes_since(models=[NotesLower]).changes] == [
        ("spelled_notes", ("k",), True)
    ]
    assert b.apply_changes(changes, [NotesLower]) == 0
    c = replica()
    sync_models(c.conn, [Note, Plain, NotesLower])
    c.insert(NotesLower(id="k", text="stale", body="stale"))  # older than everything above
    c.conn.execute("UPDATE spelled_notes SET text__hlc = ?, _pydsqlite_version = ?", ("0" * 15 + ":000000000:" + "0" * 36,) * 2)
    c.conn.commit()
    c.apply_changes(b.changes_since(models=[NotesLower]), [NotesLower])  # c hears of the delete from b only
    assert c.select(NotesLower) == []


def test_a_delete_made_by_sql_before_a_merge_is_ordered_before_what_the_merge_receives():
    """A row deleted by plain SQL is recorded at the next pydsqlite call; a merge records it before
    its clock moves past the incoming changeset, so a remote edit made after the delete wins, as it
    does against a delete made through ``db.delete``."""
    source, target = replica(), replica()
    source.insert(Note(id="k", title="first"))
    target.apply_changes(source.changes_since())
    target.clock.wall_clock.now += 1_000
    target.conn.execute("DELETE FROM replica_notes WHERE id = 'k'")
    target.conn.commit()
    source.clock.wall_clock.now += 3_000  # the edit comes two seconds after the delete
    source.update(Note, "k", title="edited after the delete")
    target.apply_changes(source.changes_since())
    assert target.get(Note, "k").title == "edited after the delete"


@pytest.mark.parametrize("factory", [sqlite3.Row, lambda cursor, row: {d[0]: v for d, v in zip(cursor.description, row)}], ids=["Row", "dict"])
def test_a_connection_with_its_own_row_factory_syncs_and_reads_the_same(factory):
    plain, custom = replica(), replica()
    custom.conn.row_factory = factory
    for db in (plain, custom):
        sync_models(db.conn, [Note, Plain])
        db.insert_many([Note(id=f"n{number}", title=f"t{number}", count=number) for number in range(5)])
    custom.update(Note, "n1", title="changed")
    custom.delete(Note, "n2")
    plain.apply_changes(custom.changes_since())
    custom.apply_changes(plain.changes_since())
    assert custom.select(Note, order_by="id") == plain.select(Note, order_by="id")
    assert custom.get(Note, "n1").title == "changed" and custom.get(Note, "n2") is None
    assert isinstance(custom.conn.execute("SELECT 1 AS one").fetchone(), (sqlite3.Row, dict))  # the application's setting stays


def test_changesets_for_unknown_tables_or_columns_or_bad_values_are_refused_whole():
    a, b = replica(), replica()
    a.insert(Note(id="x", title="ok"))
    good = a.changes_since().changes[0]
    unknown_table = ChangeSet((good, type(good)("nope", good.key, good.columns, good.version, good.values)), 1, "a")
    with pytest.raises(SyncError, match="'nope'"):
        b.apply_changes(unknown_table)
    extra_column = type(good)("replica_notes", ("y",), {**good.columns, "mood": (good.version, 1)}, good.version, good.values)
    with pytest.raises(SyncError, match="schema"):
        b.apply_changes(ChangeSet((good, extra_column), 1, "a"))
    bad_value = type(good)("replica_notes", ("z",), {**good.columns, "count": (good.version, "many")}, good.version, good.values)
    with pytest.raises(SyncError, match="does not validate"):
        b.apply_changes(ChangeSet((good, bad_value), 1, "a"))
    assert b.count(Note) == 0
    with pytest.raises(SyncError, match="malformed"):
        ChangeSet.from_json('{"format": 1}')
    future = type(good)("replica_notes", ("f",), good.columns, "9" * 15 + ":000000000:" + "0" * 36, good.values)
    with pytest.raises(ClockError):
        b.apply_changes(ChangeSet((future,), 1, "a"))
    assert b.count(Note) == 0


STAMP = "001700000000000:000000001:" + "a" * 36


def note_json(**overrides) -> dict:
    """One change of table replica_notes as ``to_json`` writes it, with some fields replaced."""
    change = {
        "table": "replica_notes", "key": ["n1"], "version": STAMP, "deleted": None,
        "columns": {"title": [STAMP, "t"], "count": [STAMP, 1]}, "values": {"body": "b"},
    }
    change.update(overrides)
    return change


def document(*changes, **overrides) -> str:
    data = {"format": 1, "node": "a", "cursor": 3, "changes": [note_json(), *changes]}
    data.update(overrides)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (document(note_json(values={"body": {"$bytes": "@@@@"}})), r"change #1 \(table 'replica_notes', key \['n1'\]\): column 'body': invalid base64"),
        (document(note_json(values={"body": {"$bytes": "AAA"}})), r"change #1 .*column 'body': invalid base64"),
        (document(note_json(columns={"title": [STAMP, {"$float": "1.5"}], "count": [STAMP, 1]})), r"change #1 .*column 'title': .* is not a stored value"),
        (document(note_json(columns={"title": [STAMP, ["a"]], "count": [STAMP, 1]})), r"change #1 .*column 'title': \['a'\] is not a stored value"),
        (document(note_json(columns={"title": [STAMP, "t"], "count": [STAMP, True]})), r"change #1 .*column 'count': True is not a stored value"),
        (document(note_json(values={"body": {"nested": 1}})), r"change #1 .*column 'body'"),
        (document(note_json(columns={"title": [STAMP], "count": [STAMP, 1]})), r"change #1 .*column 'title' must be \[timestamp, value\]"),
        (document(note_json(columns={"title": [5, "t"], "count": [STAMP, 1]})), r"change #1 .*column 'title' must be \[timestamp, value\]"),
        (document(note_json(key="n1")), r"change #1 .*the key must be a list"),
        (document(note_json(key=[["n1"]])), r"change #1 .*the key: \['n1'\] is not a stored value"),
        (document(note_json(version=None)), r"change #1 .*'version' and 'deleted' must be timestamps"),
        (document(note_json(deleted=17)), r"change #1 .*'version' and 'deleted' must be timestamps"),
        (document(note_json(table=None)), r"change #1 has table None"),
        (document(note_json(columns=[])), r"change #1 .*'columns' and 'values' must be objects"),
        (document("not an object"), r"change #1 is not an object"),
        (document(changes={}), r"'changes' must be a list"),
        (document(cursor="3"), r"cursor '3'"),
        (document(cursor=-1), r"cursor -1"),
        (document(node=5), r"node 5"),
        (document(format=2), r"unknown changeset format 2"),
        (document(format=True), r"unknown changeset format True"),
        (document(format=1.0), r"unknown changeset format 1\.0"),
        ("[" * 100_000 + "]" * 100_000, r"malformed changeset JSON: nested too deeply"),
        ("[1, 2]", r"expected an object"),
        ("{", r"malformed changeset JSON"),
        # a name given twice: readers disagree on which value counts (a proxy keeping the first sees other data)
        (document(note_json(values={"body": "LITERAL"})).replace('"body":"LITERAL"', '"body":"a","body":"b"').replace('"body": "LITERAL"', '"body": "a", "body": "b"'),
         r"malformed changeset JSON: an object gives the name 'body' twice"),
        (document().replace('"cursor": 3', '"cursor": 3, "cursor": 99'), r"an object gives the name 'cursor' twice"),
        *[
            (document(note_json(values={"body": "LITERAL"})).replace('"LITERAL"', literal), rf"change #1 .*column 'body': {shown} is not JSON")
            for literal, shown in [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "1e400"), ("-1E+999", "-1E\\+999")]
        ],
        (document(note_json(columns={"title": [STAMP, "t"], "count": [STAMP, "LITERAL"]})).replace('"LITERAL"', "NaN"), r"change #1 .*column 'count': NaN is not JSON"),
        (document(note_json(key=["LITERAL"])).replace('"LITERAL"', "Infinity"), r"change #1 .*the key: Infinity is not JSON"),
        (document(cursor="LITERAL").replace('"LITERAL"', "NaN"), r"cursor NaN \(not JSON\) is not a non-negative integer"),
    ],
)
def test_malformed_changeset_documents_are_refused_naming_the_change_and_column(text, expected):
    with pytest.raises(SyncError, match=expected) as refused:
        ChangeSet.from_json(text)
    if "change #1 (" in str(refused.value):  # the error names the change's table (and key), as attributes too
        assert refused.value.table == "replica_notes"
        if "key ['n1']" in str(refused.value):
            assert refused.value.key == ("n1",)


def test_the_reference_document_of_the_malformed_cases_is_valid():
    changeset = ChangeSet.from_json(document())
    assert [change.key for change in changeset.changes] == [("n1",)]
    db = replica()
    assert db.apply_changes(changeset) == 1 and db.get(Note, "n1") == Note(id="n1", title="t", count=1, body="b")


def malformed_changes(good):
    """(change, where the error must point) pairs: each change is wrong in one way."""
    rowchange = type(good)
    columns, values = good.columns, good.values
    return [
        (rowchange("replica_notes", ("n", "extra"), columns, good.version, values), r"key \('n', 'extra'\)\): the key does not fit"),
        (rowchange("replica_notes", ["n"], columns, good.version, values), r"key \['n'\]\): the key does not fit"),
        (rowchange("replica_notes", (1,), columns, good.version, values), r"key column 'id' holds 1 \(int\), expected str"),
        (rowchange("replica_notes", (b"n",), columns, good.version, values), r"key column 'id' holds b'n' \(bytes\), expected str"),
        (rowchange("replica_notes", (object(),), columns, good.version, values), r"key column 'id' holds <object .*expected str"),
        (rowchange("replica_notes", ("n",), {**columns, "title": (good.version, ["x"])}, good.version, values), r"column 'title' holds \['x'\]"),
        (rowchange("replica_notes", ("n",), {**columns, "count": (good.version, True)}, good.version, values), r"column 'count' holds True \(bool\)"),
        (rowchange("replica_notes", ("n",), columns, good.version, {"body": {"a": 1}}), r"column 'body' holds \{'a': 1\}"),
        (rowchange("replica_notes", ("n",), columns, good.version, {"body": object()}), r"column 'body' holds <object"),
        (rowchange("replica_notes", ("n",), {**columns, "title": (good.version, "a", "b")}, good.version, values), r"column 'title' must be a \(timestamp, value\) pair"),
        (rowchange("replica_notes", ("n",), {**columns, "title": (5, "a")}, good.version, values), r"column 'title': malformed HLC timestamp 5"),
        (rowchange("replica_notes", ("n",), {**columns, "title": (["x"], "a")}, good.version, values), r"column 'title': malformed HLC timestamp \['x'\]"),
        (rowchange("replica_notes", ("n",), columns, None, values), r"the row version: malformed HLC timestamp None"),
        (rowchange("replica_notes", ("n",), columns, good.version, values, 7), r"the tombstone time: malformed HLC timestamp 7"),
        (rowchange("replica_notes", ("n",), columns, "2024-01-01", values), r"the row version: malformed HLC timestamp '2024-01-01'"),
        # digits of other scripts: int() reads them, but as text they sort above every real timestamp (would win for ever)
        (rowchange("replica_notes", ("n",), {**columns, "title": ("\u0660" * 15 + good.version[15:], "a")}, good.version, values), r"column 'title': malformed HLC timestamp '\u0660"),
        (rowchange("replica_notes", ("n",), columns, good.version[:16] + "\uff10" * 9 + good.version[25:], values), r"the row version: malformed HLC timestamp"),
        # a counter no clock reaches: receiving it would leave this clock no room for its own events
        (rowchange("replica_notes", ("n",), {**columns, "title": (good.version[:16] + "999999998" + good.version[25:], "a")}, good.version, values),
         r"column 'title': HLC timestamp .* has counter 999999998, more than 899999999"),
        (rowchange(None, ("n",), columns, good.version, values), r"change #1 names table None"),
    ]


@pytest.mark.parametrize("case", range(19))
def test_malformed_changes_are_refused_naming_table_key_and_column_before_anything_is_written(case):
    a, b = replica(), replica(start=1_700_000_000_000)
    a.insert(Note(id="x", title="ok"))
    good = a.changes_since().changes[0]
    bad, where = malformed_changes(good)[case]
    clock = b.clock.last
    with pytest.raises(SyncError, match=r"change #1 .*" + where if not where.startswith("change #1") else where):
        b.apply_changes(ChangeSet((good, bad), 1, "a"))
    assert b.count(Note) == 0 and b.clock.last == clock
    assert b.conn.execute("SELECT count(*) FROM _pydsqlite_tombstones").fetchone() == (0,)


def test_json_round_trip_keeps_bytes_infinities_and_keys():
    a = replica()
    a.insert(Note(id="n", title="t", count=3, body="b"))
    a.delete(Note, "n")
    changeset = a.changes_since()
    assert ChangeSet.from_json(changeset.to_json()) == changeset


def test_turning_lww_on_stamps_a_baseline_and_renames_keep_timestamps():
    conn = sqlite3.connect(":memory:")

    class Before(SyncModel, table="docs"):
        id: Annotated[str, PrimaryKey()]
        text: str = ""

    class After(SyncModel, table="docs"):
        id: Annotated[str, PrimaryKey()]
        text: Annotated[str, LWW()] = ""

    sync_models(conn, [Before])
    conn.execute("INSERT INTO docs VALUES ('d', 'old text')")
    sync_models(conn, [After])
    baseline = "000000000000000:000000000:" + "0" * 36
    assert conn.execute("SELECT text__hlc, _pydsqlite_version FROM docs").fetchone() == (baseline, baseline)
    db = Database(conn)
    db.update(After, "d", text="new")
    assert db.conn.execute("SELECT text__hlc FROM docs").fetchone()[0] > baseline


# --- convergence of many replicas --------------------------------------------------------------

KEYS = ["k0", "k1", "k2"]
titles = st.sampled_from(["", "a", "b"])  # few values, so equal values happen
counts = st.sampled_from([0, 2, 10])  # as JSON text 10 sorts between 0 and 2


def wins(a: tuple[str, object], b: tuple[str, object]) -> bool:
    """The documented register order: the later timestamp; on equal timestamps the value whose JSON
    text (as changesets carry it; a group's values as one object with sorted names) is larger."""
    if a[0] != b[0]:
        return a[0] > b[0]
    return json.dumps(a[1], sort_keys=True) > json.dumps(b[1], sort_keys=True)


class Replicas(RuleBasedStateMachine):
    """2-5 replicas with skewed clocks write, delete, re-insert and exchange partial, reordered and
    duplicated changesets; at the end every replica equals the clock-ordered oracle. Rows written by
    raw SQL carry the baseline timestamp on every replica, so their registers tie and the oracle
    picks the winner by value."""

    changesets = Bundle("changesets")

    @initialize(count=st.integers(2, 5), skews=st.lists(st.integers(-3_000, 3_000), min_size=5, max_size=5))
    def start(self, count, skews):
        self.dbs = [replica(start=1_700_000_000_000 + skews[i]) for i in range(count)]
        self.registers: dict[str, dict[str, tuple[str, object]]] = {}
        self.deleted: dict[str, str] = {}
        for number, db in enumerate(self.dbs):  # every run starts with concurrent inserts of one key
            db.insert(Note(id="k0", title=["a", "b"][number % 2], count=number))
            self._record(db, "k0", ["title", "count", "group"])

    def _record(self, db: Database, key: str, names: list[str]) -> None:
        row = db.conn.execute("SELECT title, title__hlc, count, count__hlc, body, _pydsqlite_version FROM replica_notes WHERE id = ?", (key,)).fetchone()
        current = {"title": (row[1], row[0]), "count": (row[3], row[2]), "group": (row[5], {"body": row[4]})}
        registers = self.registers.setdefault(key, {})
        for name in names:
            if name not in registers or wins(current[name], registers[name]):
                registers[name] = current[name]

    @rule(r=st.integers(0, 4), key=st.sampled_from(KEYS), title=titles, count=counts, body=titles)
    def insert(self, r, key, title, count, body):
        db = self.dbs[r % len(self.dbs)]
        if db.get(Note, key) is not None:
            return
        db.insert(Note(id=key, title=title, count=count, body=body))
        self._record(db, key, ["title", "count", "group"])

    @rule(r=st.integers(0, 4), key=st.sampled_from(KEYS), title=titles, count=counts, body=titles)
    def raw_insert(self, r, key, title, count, body):
        """A row written outside pydsqlite on a replica that never knew the key: baseline timestamps."""
        db = self.dbs[r % len(self.dbs)]
        known = db.conn.execute(
            "SELECT 1 FROM replica_notes WHERE id = ? UNION ALL SELECT 1 FROM _pydsqlite_tombstones WHERE key = ?", (key, f'["{key}"]')
        ).fetchone()
        if known is not None:
            return
        db.conn.execute("INSERT INTO replica_notes (id, title, count, body) VALUES (?, ?, ?, ?)", (key, title, count, body))
        db.conn.commit()
        self._record(db, key, ["title", "count", "group"])

    @rule(r=st.integers(0, 4), key=st.sampled_from(KEYS), field=st.sampled_from(["title", "count", "body"]), value=st.integers(0, 2))
    def update(self, r, key, field, value):
        db = self.dbs[r % len(self.dbs)]
        current = db.get(Note, key)
        if current is None:
            return
        new = {"title": ["", "a", "b"][value], "count": [0, 2, 10][value], "body": ["", "a", "b"][value]}[field]
        db.update(Note, key, **{field: new})
        if getattr(current, field) != new:
            self._record(db, key, ["group" if field == "body" else field])

    @rule(r=st.integers(0, 4), key=st.sampled_from(KEYS))
    def delete(self, r, key):
        db = self.dbs[r % len(self.dbs)]
        if db.delete(Note, key):
            stamp = db.conn.execute("SELECT deleted FROM _pydsqlite_tombstones WHERE key = ?", (f'["{key}"]',)).fetchone()[0]
            self.deleted[key] = max(stamp, self.deleted.get(key, ""))

    @rule(r=st.integers(0, 4), step=st.integers(-2_000, 2_000))
    def move_clock(self, r, step):
        self.dbs[r % len(self.dbs)].clock.wall_clock.now += step

    @rule(target=changesets, r=st.integers(0, 4), partial=st.booleans())
    def read_feed(self, r, partial):
        db = self.dbs[r % len(self.dbs)]
        cursor = db.changes_since().cursor // 2 if partial else None
        return ChangeSet.from_json(db.changes_since(cursor).to_json())

    @rule(changeset=changesets, r=st.integers(0, 4))
    def deliver(self, changeset, r):
        self.dbs[r % len(self.dbs)].apply_changes(changeset)

    @invariant()
    def no_open_transactions(self):
        for db in getattr(self, "dbs", []):
            assert not db.conn.in_transaction

    def teardown(self):
        if not hasattr(self, "dbs"):
            return
        exchange(*self.dbs)
        first = state(self.dbs[0])
        event(f"{len(first[0])} live rows, {len(first[2])} tombstones, {len(self.dbs)} replicas")
        for db in self.dbs[1:]:
            assert state(db) == first
        expected = []
        for key, registers in sorted(self.registers.items()):
            newest = max(stamp for stamp, _ in registers.values())
            if key in self.deleted and self.deleted[key] >= newest:
                continue
            expected.append((key, registers["title"][1], registers["count"][1], registers["group"][1]["body"]))
        assert first[0] == expected


TestConvergence = Replicas.TestCase
TestConvergence.settings = settings(
    max_examples=settings().max_examples, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Parent(SyncModel, table="first_parents"):
    id: Annotated[str, PrimaryKey()]


class Child(SyncModel, table="first_children"):
    id: Annotated[str, PrimaryKey()]
    parent: Annotated[str, ForeignKey(Parent)]
    text: Annotated[str, LWW()] = ""


def test_a_first_write_that_fails_leaves_a_working_replica(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Parent, Child])
    conn.execute("PRAGMA foreign_keys = ON")
    db = Database(conn)
    with pytest.raises(ConstraintError):
        db.insert(Child(id="c", parent="missing"))  # the clock's tables were created inside this failed write
    node = db.clock.node_id
    assert db.changes_since().changes == ()
    db.insert(Parent(id="p"))
    db.insert(Child(id="c", parent="p"))
    assert [change.key for change in db.changes_since().changes] == [("c",)]
    conn.close()
    assert Database(sqlite3.connect(db_path)).clock.node_id == node


def test_a_restarted_replica_never_stamps_below_its_own_past(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Note, Plain])
    db = Database(conn, wall_clock=FakeClock(1_700_000_100_000))
    db.insert(Note(id="n", title="before restart"))
    stamp = conn.execute("SELECT title__hlc FROM replica_notes").fetchone()[0]
    conn.close()
    restarted = Database(sqlite3.connect(db_path), wall_clock=FakeClock(1_700_000_000_000))  # the wall clock went back
    restarted.update(Note, "n", title="after restart")
    assert restarted.conn.execute("SELECT title__hlc FROM replica_notes").fetchone()[0] > stamp


def test_two_database_objects_on_one_file_stamp_after_what_the_other_merged(db_path):
    """Worker 1 merges an edit stamped 30 s ahead of this replica's wall clock; worker 2, which read its
    clock from the file before that, edits the row after reading the merged value: its edit must win."""
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Note, Plain])
    worker1, worker2 = Database(conn, wall_clock=FakeClock(1_000_000)), Database(sqlite3.connect(db_path), wall_clock=FakeClock(1_000_000))
    other = replica(start=1_030_000)
    worker2.clock  # noqa: B018 - worker 2 reads the clock before the merge
    worker1.insert(Note(id="n", title="v1"))
    other.apply_changes(worker1.changes_since())
    other.update(Note, "n", title="from the other replica")
    worker1.apply_changes(other.changes_since())
    assert worker2.get(Note, "n").title == "from the other replica"
    worker2.update(Note, "n", title="edited after reading it")
    other.apply_changes(worker2.changes_since())
    assert other.get(Note, "n").title == worker1.get(Note, "n").title == "edited after reading it"


def test_a_write_stamps_after_what_another_process_merged_into_the_file(db_path, tmp_path):
    """Another process merges an edit stamped 30 s ahead of this replica's wall clock; an edit made
    here afterwards, by a Database that read its clock before, wins on every replica."""
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Note, Plain])
    here = Database(conn, wall_clock=FakeClock(1_000_000))
    here.insert(Note(id="n", title="v1"))
    ahead = replica(start=1_030_000)
    ahead.apply_changes(here.changes_since())
    ahead.update(Note, "n", title="ahead")
    (tmp_path / "changeset.json").write_text(ahead.changes_since().to_json())
    script = (
        "import sqlite3\n"
        "from pydsqlite import ChangeSet, Database\n"
        "from tests.test_replication import Note\n"
        f"db = Database(sqlite3.connect({str(db_path)!r}), wall_clock=lambda: 1_000_000)\n"
        f"print(db.apply_changes(ChangeSet.from_json(open({str(tmp_path / 'changeset.json')!r}).read()), models=[Note]))\n"
    )
    root = str(Path(__file__).parent.parent)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert result.stdout.strip() == "1", result.stderr
    here.update(Note, "n", title="edited here after")
    ahead.apply_changes(here.changes_since())
    assert ahead.get(Note, "n").title == here.get(Note, "n").title == "edited here after"


def test_a_rebuild_keeps_timestamps_versions_and_tombstones():
    conn = sqlite3.connect(":memory:")

    class Doc(SyncModel, table="rebuilt_docs"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""
        size: int = 0

    class DocV2(SyncModel, table="rebuilt_docs"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""
        size: str = "0"  # a type change: the table is rebuilt

    sync_models(conn, [Doc])
    db = Database(conn)
    db.insert_many([Doc(id="a", title="x", size=1), Doc(id="b")])
    db.delete(Doc, "b")
    hidden = "SELECT id, title__hlc, _pydsqlite_version, _pydsqlite_seq FROM rebuilt_docs"
    before = (conn.execute(hidden).fetchall(), conn.execute("SELECT * FROM _pydsqlite_tombstones").fetchall())
    assert sync_models(conn, [DocV2]).rebuilt_tables == ("rebuilt_docs",)
    rows, tombstones = before
    converted = [(*row[:3], row[3].replace('"size":0', '"size":"0"'), *row[4:]) for row in tombstones]  # as the live rows' values
    assert converted != tombstones
    assert (conn.execute(hidden).fetchall(), conn.execute("SELECT * FROM _pydsqlite_tombstones").fetchall()) == (rows, converted)


def test_upsert_and_delete_on_synced_tables_keep_the_rules():
    db = replica()
    db.upsert(Note(id="u", title="one"))
    first = db.conn.execute("SELECT title__hlc, count__hlc FROM replica_notes").fetchone()
    db.upsert(Note(id="u", title="one", count=5))
    second = db.conn.execute("SELECT title__hlc, count__hlc FROM replica_notes").fetchone()
    assert second[0] == first[0] and second[1] > first[1]
    assert db.delete(Note, "missing") is False
    assert db.delete(Note, "u") is True and db.get(Note, "u") is None
    (change,) = db.changes_since().changes
    assert change.key == ("u",) and change.deleted is not None and not change.alive


class Priced(SyncModel, table="priced"):
    id: Annotated[str, PrimaryKey()]
    price: Annotated[decimal.Decimal, LWW()]
    due: Annotated[dt.datetime, LWW()]
    title: Annotated[str, LWW()] = ""
    since: Optional[dt.datetime] = None


UTC, PLUS_TWO = dt.timezone.utc, dt.timezone(dt.timedelta(hours=2))


@pytest.mark.parametrize(
    "changes",
    [
        {"price": decimal.Decimal("1.5")},  # equal in Python to the stored 1.50
        {"price": decimal.Decimal("1.5"), "title": "other field too"},
        {"due": dt.datetime(2024, 1, 1, 14, tzinfo=PLUS_TWO)},  # the same instant, another offset
        {"since": dt.datetime(2024, 1, 1, 14, tzinfo=PLUS_TWO)},  # a field of the row version's group
    ],
)
@pytest.mark.parametrize("how", ["update", "update(obj)", "upsert"])
def test_a_value_equal_in_python_but_stored_differently_is_stamped_and_syncs(changes, how):
    """A write decides what changed on the stored values: a value stored differently, however equal in
    Python, gets a new stamp, so the other replica takes it instead of reverting it."""
    a, b = replica(), replica(start=1_700_000_000_100)
    for db in (a, b):
        sync_models(db.conn, [Note, Plain, Priced])
    noon = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)
    a.insert(Priced(id="p", price=decimal.Decimal("1.50"), due=noon, since=noon))
    b.apply_changes(a.changes_since(models=[Priced]), [Priced])
    if how == "update":
        a.update(Priced, "p", **changes)
    else:
        row = a.get(Priced, "p").model_copy(update=changes)
        getattr(a, how.removesuffix("(obj)"))(row)
    b.apply_changes(a.changes_since(models=[Priced]), [Priced])
    a.apply_changes(b.changes_since(models=[Priced]), [Priced])
    columns = ", ".join(changes)
    stored = a.conn.execute(f"SELECT {columns} FROM priced").fetchone()
    assert stored == b.conn.execute(f"SELECT {columns} FROM priced").fetchone()
    held = a.get(Priced, "p")
    assert [str(getattr(held, name)) for name in changes] == [str(value) for value in changes.values()]  # as written


def test_tables_with_keys_assigned_by_sqlite_are_stamped_but_refuse_to_sync():
    class Counter(SyncModel, table="auto_counters"):
        id: int = Field(default=None, primary_key=True)
        label: Annotated[str, LWW()] = ""

    conn = sqlite3.connect(":memory:")
    sync_models(conn, [Counter])
    db = Database(conn)
    row = db.insert(Counter(label="x"))
    assert row.id == 1 and conn.execute("SELECT label__hlc FROM auto_counters").fetchone()[0].endswith(db.clock.node_id)
    with pytest.raises(SyncError, match="assigned by SQLite"):
        db.changes_since(models=[Counter])


KEY_TEXTS = [
    (("a",), '["a"]'),
    ((1, "b"), '[1,"b"]'),
    (("é ✓ \"q\" \\ \n",), '["\\u00e9 \\u2713 \\"q\\" \\\\ \\n"]'),
    ((2**63 - 1, -(2**63)), "[9223372036854775807,-9223372036854775808]"),
    ((b"\x00\xff",), '[{"$bytes":"AP8="}]'),
    ((1.5, "x"), '[1.5,"x"]'),
    ((float("inf"),), '[{"$float":"inf"}]'),
]


@pytest.mark.parametrize(("key", "text"), KEY_TEXTS)
def test_the_stored_text_of_a_key_never_changes(key, text):
    """Tombstones are stored under this text: a different spelling of the same key in a newer
    version would no longer find them (and deleted rows would come back)."""
    assert key_text(key) == text
    assert key_from_text(text) == key


@given(st.lists(st.one_of(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.binary()), min_size=1, max_size=3))
def test_every_key_text_reads_back_as_its_key(values):
    key = tuple(values)
    assert key_from_text(key_text(key)) == key
