"""Writes by primary key touch exactly the row they name: key changes move that row or change nothing."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydsqlite import (
    LWW,
    Collate,
    ConstraintError,
    Database,
    ForeignKey,
    PrimaryKey,
    SchemaMismatchError,
    SyncModel,
    UsageError,
    sync_models,
)


class Slot(SyncModel, table="slots", primary_key=("shelf", "position")):
    shelf: str
    position: int
    label: str = ""


class CompactSlot(SyncModel, table="compact_slots", primary_key=("shelf", "position"), without_rowid=True):
    shelf: str
    position: int
    label: str = ""


class Seat(SyncModel, table="seats"):
    id: Annotated[int, PrimaryKey()]
    label: str = ""


class Tag(SyncModel, table="tags"):
    name: Annotated[str, PrimaryKey(), Collate("NOCASE")]
    label: str = ""


class Card(SyncModel, table="cards"):
    id: Annotated[uuid.UUID, PrimaryKey()]
    label: Annotated[str, LWW()] = ""
    note: str = ""


class SyncedSlot(SyncModel, table="synced_slots", primary_key=("shelf", "position")):
    shelf: str
    position: int
    label: Annotated[str, LWW()] = ""


class Parent(SyncModel, table="parents"):
    id: Annotated[int, PrimaryKey()]
    name: str = ""


class FollowingChild(SyncModel, table="following_children"):
    id: Annotated[int, PrimaryKey()]
    parent_id: Annotated[int, ForeignKey("parents.id", on_update="cascade")]


class StrictChild(SyncModel, table="strict_children"):
    id: Annotated[int, PrimaryKey()]
    parent_id: Annotated[int, ForeignKey("parents.id")]


MODELS = [Slot, CompactSlot, Seat, Tag, Card, SyncedSlot, Parent, FollowingChild, StrictChild]
KEY_PARTS = {"shelf": st.sampled_from(["a", "b"]), "position": st.integers(0, 3), "id": st.integers(0, 5)}
"""Small key spaces, so a drawn new key is often one that is already taken."""


@pytest.fixture
def db(memory_conn):
    sync_models(memory_conn, MODELS)
    return Database(memory_conn)


def table_state(conn: sqlite3.Connection, table: str) -> list[tuple]:
    """Every column of every row, hidden ones included."""
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


@pytest.mark.parametrize("model", [Slot, CompactSlot, Seat], ids=lambda m: m.__name__)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(data=st.data())
def test_an_update_that_changes_key_fields_moves_exactly_that_row_or_changes_nothing(db, model, data):
    key = model.__pydsqlite_table__.primary_key or ("id",)
    stored = data.draw(
        st.dictionaries(st.tuples(*(KEY_PARTS[name] for name in key)), st.text(max_size=3), min_size=1, max_size=8),
        label="stored rows",
    )
    db.conn.execute(f"DELETE FROM {model.__pydsqlite_table__.table}")
    db.conn.commit()
    db.insert_many([model(**dict(zip(key, k, strict=True)), label=label) for k, label in stored.items()])
    old = data.draw(st.sampled_from(sorted(stored)), label="row to update")
    optional = {name: KEY_PARTS[name] for name in key} | {"label": st.text(max_size=3)}
    changes = data.draw(st.fixed_dictionaries({}, optional=optional), label="changes")
    new = tuple(changes.get(name, part) for name, part in zip(key, old, strict=True))
    key_arg = old if len(old) > 1 else old[0]
    expected = dict(stored)
    if new != old and new in stored:
        before = table_state(db.conn, model.__pydsqlite_table__.table)
        with pytest.raises(ConstraintError, match="UNIQUE"):
            db.update(model, key_arg, **changes)
        assert table_state(db.conn, model.__pydsqlite_table__.table) == before
    else:
        updated = db.update(model, key_arg, **changes)
        del expected[old]
        expected[new] = changes.get("label", stored[old])
        assert updated == model(**dict(zip(key, new, strict=True)), label=expected[new])
    assert {tuple(getattr(row, name) for name in key): row.label for row in db.select(model)} == expected
    assert not db.conn.in_transaction


@pytest.mark.parametrize("model", [Card, SyncedSlot], ids=lambda m: m.__name__)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(data=st.data())
def test_a_synced_row_keeps_its_key_and_a_key_change_is_refused_with_nothing_touched(db, model, data):
    table = model.__pydsqlite_table__.table
    db.conn.execute(f"DELETE FROM {table}")
    db.conn.commit()
    if model is Card:
        old_key = (uuid.UUID(int=1),)
        db.insert_many([Card(id=uuid.UUID(int=n), label=str(n)) for n in (1, 2)])
        new_parts = {"id": st.sampled_from([uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)])}
    else:
        old_key = ("a", 1)
        db.insert_many([SyncedSlot(shelf="a", position=n, label=str(n)) for n in (1, 2)])
        new_parts = {"shelf": st.sampled_from(["a", "b"]), "position": st.integers(1, 3)}
    key = tuple(new_parts)
    changes = data.draw(st.fixed_dictionaries(new_parts, optional={"label": st.text(max_size=2)}))
    new_key = tuple(changes[name] for name in key)
    before = table_state(db.conn, table)
    key_arg = old_key if len(old_key) > 1 else old_key[0]
    if new_key != old_key:
        with pytest.raises(UsageError, match=rf"table '{table}' is synced.*Delete the row and insert it under the new key"):
            db.update(model, key_arg, **changes)
        assert table_state(db.conn, table) == before
    else:  # naming the key's own value is no key change
        assert db.update(model, key_arg, **changes).label == changes.get("label", "1")
    assert not db.conn.in_transaction


def test_moving_a_parent_key_follows_the_foreign_key_actions(db):
    db.conn.execute("PRAGMA foreign_keys = ON")
    db.insert_many([Parent(id=1, name="one"), Parent(id=2, name="two")])
    db.insert(FollowingChild(id=10, parent_id=1))
    db.update(Parent, 1, id=5)
    assert db.get(FollowingChild, 10).parent_id == 5  # ON UPDATE CASCADE: SQLite moves the children along
    db.insert(StrictChild(id=20, parent_id=2))
    before = table_state(db.conn, "parents")
    with pytest.raises(ConstraintError, match="FOREIGN KEY"):
        db.update(Parent, 2, id=7)  # NO ACTION: the child would lose its parent
    assert table_state(db.conn, "parents") == before


def test_an_integer_key_moves_with_its_row_and_other_rows_keep_theirs(db):
    db.insert_many([Seat(id=1, label="one"), Seat(id=2, label="two")])
    db.update(Seat, 1, id=9, label="nine")
    assert table_state(db.conn, "seats") == [(2, "two"), (9, "nine")]


def test_update_of_an_instance_and_upsert_write_the_row_their_key_names_and_no_other(db):
    db.insert_many([Tag(name="news", label="n"), Tag(name="misc", label="m")])
    db.update(Tag(name="NEWS", label="updated"))  # NOCASE key: the same row; its stored key is kept
    assert table_state(db.conn, "tags") == [("misc", "m"), ("news", "updated")]
    db.upsert(Tag(name="Misc", label="upserted"))
    assert table_state(db.conn, "tags") == [("misc", "upserted"), ("news", "updated")]
    db.upsert(Tag(name="new", label="inserted"))
    assert len(table_state(db.conn, "tags")) == 3


def test_writes_by_key_to_a_table_whose_key_is_not_the_models_change_nothing(memory_conn):
    memory_conn.execute("CREATE TABLE seats (id INTEGER, label TEXT)")  # no primary key: ids can repeat
    memory_conn.executemany("INSERT INTO seats VALUES (?, ?)", [(1, "a"), (1, "b"), (2, "c")])
    memory_conn.commit()
    db = Database(memory_conn)
    before = table_state(memory_conn, "seats")
    for write in (
        lambda: db.update(Seat, 1, label="x"),
        lambda: db.update(Seat(id=1, label="x")),
        lambda: db.upsert(Seat(id=1, label="x")),
        lambda: db.delete(Seat, 1),
        lambda: db.update(Seat, 1, id=3),
    ):
        with pytest.raises(SchemaMismatchError, match=r"key \(1,\) names 2 rows of table 'seats'.*sync_models") as raised:
            write()
        assert raised.value.table == "seats"
        assert table_state(memory_conn, "seats") == before
    db.update(Seat, 2, label="only row 2")
    assert table_state(memory_conn, "seats") == [(1, "a"), (1, "b"), (2, "only row 2")]


def _normalising_models() -> list[tuple[type[SyncModel], tuple[str, ...], tuple[object, ...], tuple[object, ...]]]:
    """(model, key fields, the key as a caller writes it, the key as stored) for each way a model
    normalises a key: Annotated constraints, model configuration, field validators (after, before)."""
    import datetime as dt

    from pydantic import ConfigDict, StringConstraints, field_validator

    class Trimmed(SyncModel, table="trimmed"):
        id: Annotated[str, PrimaryKey(), StringConstraints(strip_whitespace=True, to_lower=True)]
        v: str = ""

    class Lowered(SyncModel, table="lowered"):
        model_config = ConfigDict(str_to_lower=True)
        id: Annotated[str, PrimaryKey()]
        v: str = ""

    class Moment(SyncModel, table="moments"):
        at: Annotated[dt.datetime, PrimaryKey()]
        v: str = ""

        @field_validator("at")
        @classmethod
        def in_utc(cls, value: dt.datetime) -> dt.datetime:
            return value.astimezone(dt.timezone.utc)

    class Email(SyncModel, table="emails", primary_key=("domain", "user")):
        domain: str
        user: str
        v: str = ""

        @field_validator("domain", mode="before")
        @classmethod
        def lower(cls, value: object) -> object:
            return value.lower() if isinstance(value, str) else value

    two_hours = dt.timezone(dt.timedelta(hours=2))
    return [
        (Trimmed, ("id",), (" AbC ",), ("abc",)),
        (Lowered, ("id",), ("AbC",), ("abc",)),
        (Moment, ("at",), (dt.datetime(2024, 5, 1, 14, tzinfo=two_hours),), (dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc),)),
        (Email, ("domain", "user"), ("X.ORG", "ann"), ("x.org", "ann")),
    ]


@pytest.mark.parametrize("case", range(4))
def test_the_key_a_row_was_written_with_finds_it_again_through_the_models_own_normalisation(memory_conn, case):
    model, names, given, stored = _normalising_models()[case]
    sync_models(memory_conn, [model])
    db = Database(memory_conn)
    db.insert(model(**dict(zip(names, given)), v="1"))
    key = given if len(given) > 1 else given[0]
    found = db.get(model, key)
    assert found is not None and tuple(getattr(found, name) for name in names) == stored
    assert db.update(model, key, v="2").v == "2"
    assert db.delete(model, key) and db.count(model) == 0


def test_a_key_validator_using_the_models_helpers_or_the_other_fields_still_finds_its_row(memory_conn):
    """The key's own validation runs the model's field validators bound to the model (its helpers and
    ClassVars); one that reads the rest of the row (info.data) falls back to the declared types."""
    from typing import ClassVar

    from pydantic import ValidationInfo, field_validator

    class Code(SyncModel, table="helper_codes"):
        SUFFIX: ClassVar[str] = "!"
        code: Annotated[str, PrimaryKey()]
        v: int = 0

        @field_validator("code")
        @classmethod
        def normalise(cls, value: str) -> str:
            return cls._lower(value) + ("" if value.endswith(cls.SUFFIX) else cls.SUFFIX)

        @classmethod
        def _lower(cls, value: str) -> str:
            return value.lower()

    class Tagged(SyncModel, table="tagged_codes"):
        kind: str
        code: Annotated[str, PrimaryKey()]

        @field_validator("code")
        @classmethod
        def prefixed(cls, value: str, info: ValidationInfo) -> str:
            prefix = f"{info.data['kind']}-"
            return value if value.startswith(prefix) else prefix + value

    sync_models(memory_conn, [Code, Tagged])
    db = Database(memory_conn)
    db.insert(Code(code="AB"))
    assert db.get(Code, "AB") == Code(code="ab!")
    assert db.update(Code, "AB", v=1).v == 1 and db.delete(Code, "AB")
    db.insert(Tagged(kind="k", code="ab"))
    assert db.get(Tagged, "k-ab") == Tagged(kind="k", code="k-ab")
    assert db.delete(Tagged, "k-ab") and db.count(Tagged) == 0
