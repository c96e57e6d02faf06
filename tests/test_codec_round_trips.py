"""Every value the codecs accept comes back exactly (value, offset, digits), or is refused when written."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import uuid
import zoneinfo
from typing import Annotated, Any, Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pydsqlite import LWW, Database, Field, PrimaryKey, SyncModel, UnstorableValueError, col, sync_models


class Moment(SyncModel, table="moments"):
    id: Annotated[int, PrimaryKey()]
    at: dt.datetime
    clock: dt.time
    maybe_at: Optional[dt.datetime] = None
    maybe_clock: Optional[dt.time] = None


class Stamp(BaseModel):
    at: dt.datetime
    clock: Optional[dt.time] = None


class Journal(SyncModel, table="journal"):
    id: Annotated[int, PrimaryKey()]
    stamp: Stamp
    history: list[dt.datetime] = []
    by_time: dict[str, dt.time] = {}


class SyncedMoment(SyncModel, table="synced_moments"):
    id: Annotated[uuid.UUID, PrimaryKey()]
    at: Annotated[dt.datetime, LWW()]
    clock: Optional[dt.time] = None


class Mood(enum.Enum):
    CALM = "calm"
    GRÜN = "grün ✓"


class Rank(enum.IntEnum):
    LOW = -(2**63)
    HIGH = 2**63 - 1


class Edges(SyncModel, table="edges"):
    id: Annotated[int, PrimaryKey()]
    amount: Annotated[decimal.Decimal, Field(allow_inf_nan=True)]
    real: float
    key: uuid.UUID
    mood: Mood
    rank: Rank
    data: dict[str, Any]
    text: str


MODELS = [Moment, Journal, SyncedMoment, Edges]

offsets = st.timedeltas(min_value=dt.timedelta(hours=-24) + dt.timedelta(microseconds=1), max_value=dt.timedelta(hours=24) - dt.timedelta(microseconds=1))
"""Every offset Python allows: whole minutes, seconds and microseconds, up to a microsecond short of a day."""
whole_minutes = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: dt.timedelta(minutes=minutes))
zones = st.one_of(st.none(), offsets.map(dt.timezone), whole_minutes.map(dt.timezone), st.timezones())
"""Naive, any fixed offset, and zoneinfo zones (old dates give local mean time offsets in seconds)."""
datetimes = st.datetimes(timezones=zones)
times = st.times(timezones=st.one_of(st.none(), offsets.map(dt.timezone), whole_minutes.map(dt.timezone)))


@pytest.fixture
def db(memory_conn):
    sync_models(memory_conn, MODELS)
    return Database(memory_conn)


def same_moment(back: Any, written: Any) -> bool:
    """Equal wall-clock fields and the same offset (or both naive). Plain ``==`` compares instants,
    which overflows at the ends of the calendar and ignores the offset."""
    if back is None or written is None:
        return back is written
    return back.replace(tzinfo=None) == written.replace(tzinfo=None) and back.utcoffset() == written.utcoffset()


def fresh(db: Database, table: str) -> None:
    db.conn.execute(f"DELETE FROM {table}")
    db.conn.commit()


LATEST_OFFSET = dt.timezone(dt.timedelta(hours=24) - dt.timedelta(microseconds=1))
EARLIEST_OFFSET = dt.timezone(-dt.timedelta(hours=24) + dt.timedelta(microseconds=1))
CALENDAR_ENDS = [
    (dt.datetime.min.replace(tzinfo=LATEST_OFFSET), dt.time.max.replace(tzinfo=EARLIEST_OFFSET), dt.datetime.max.replace(tzinfo=EARLIEST_OFFSET), dt.time.min),
    (dt.datetime.min, dt.time.min.replace(tzinfo=dt.timezone(dt.timedelta(microseconds=-1))), dt.datetime.max, dt.time.max),
]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(rows=CALENDAR_ENDS)
@given(rows=st.lists(st.tuples(datetimes, times, st.none() | datetimes, st.none() | times), min_size=1, max_size=6))
def test_datetimes_and_times_with_any_offset_round_trip_exactly(db, rows):
    fresh(db, "moments")
    written = [Moment(id=n, at=a, clock=c, maybe_at=ma, maybe_clock=mc) for n, (a, c, ma, mc) in enumerate(rows)]
    db.insert_many(written)
    for back, row in zip(db.select(Moment, order_by="id"), written, strict=True):
        for name in ("at", "clock", "maybe_at", "maybe_clock"):
            assert same_moment(getattr(back, name), getattr(row, name)), name
    first = db.get(Moment, 0)
    assert same_moment(first.at, written[0].at)
    assert db.count(Moment, col("at") == written[0].at) >= 1  # a parameter is encoded as the column stores it


def test_an_old_zoneinfo_date_keeps_its_local_mean_time_offset(db):
    from zoneinfo import ZoneInfo

    old = dt.datetime(1850, 6, 1, 12, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert old.utcoffset() == dt.timedelta(hours=5, minutes=53, seconds=28)
    db.insert(Moment(id=1, at=old, clock=dt.time(9, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=15)))))
    back = db.get(Moment, 1)
    assert back.at == old and back.at.utcoffset() == old.utcoffset()
    assert back.clock.utcoffset() == dt.timedelta(hours=5, minutes=30, seconds=15)
    assert db.conn.execute("SELECT at FROM moments").fetchone() == ("1850-06-01T12:00:00.000000+05:53:28",)
    assert db.update(Moment, 1, maybe_at=old).maybe_at == old


@pytest.mark.parametrize("stored", ["not a date +05:30:15", "1850-06-01T12:00:00+\u0660\u0665:30:15"])
def test_a_row_that_is_not_a_datetime_still_names_its_column(db, stored):
    """Also an offset written in another script's digits: Python's int() reads them, a datetime does not have them."""
    db.conn.execute("INSERT INTO moments (id, at, clock) VALUES (1, ?, '12:00:00')", (stored,))
    db.conn.commit()
    from pydsqlite import RowValidationError

    with pytest.raises(RowValidationError, match=r"row 1 of table 'moments' does not validate \(column at\)"):
        db.get(Moment, 1)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(at=datetimes, clock=times)
@example(at=dt.datetime(2012, 3, 11, 2, 0, tzinfo=zoneinfo.ZoneInfo("America/Chicago")), clock=dt.time(12))  # in the spring gap
@example(at=dt.datetime(2012, 11, 4, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/Chicago")), clock=dt.time(12))  # the fold
def test_datetimes_inside_json_round_trip_or_are_refused_when_their_offset_has_seconds(db, at, clock):
    fresh(db, "journal")
    row = Journal(id=1, stamp=Stamp(at=at, clock=clock), history=[at], by_time={"t": clock})
    offsets_with_seconds = [v.utcoffset() for v in (at, clock) if v.utcoffset() is not None and (v.utcoffset().seconds % 60 or v.utcoffset().microseconds)]
    if offsets_with_seconds:
        with pytest.raises(UnstorableValueError, match=r"journal\.stamp: UTC offset .* has seconds, which JSON"):
            db.insert(row)
        assert db.count(Journal) == 0
        return
    db.insert(row)
    back = db.get(Journal, 1)
    assert same_moment(back.stamp.at, at) and same_moment(back.stamp.clock, clock)
    assert same_moment(back.history[0], at) and same_moment(back.by_time["t"], clock)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=100)
@given(at=datetimes, clock=st.none() | times)
def test_a_synced_datetime_with_any_offset_travels_to_another_replica(db, memory_conn, at, clock):
    from pydsqlite import ChangeSet

    fresh(db, "synced_moments")
    key = uuid.uuid4()
    db.insert(SyncedMoment(id=key, at=at, clock=clock))
    other_conn = __import__("sqlite3").connect(":memory:")
    sync_models(other_conn, MODELS)
    other = Database(other_conn)
    other.apply_changes(ChangeSet.from_json(db.changes_since(None, [SyncedMoment]).to_json()), [SyncedMoment])
    back = other.get(SyncedMoment, key)
    assert same_moment(back.at, at) and same_moment(back.clock, clock)
    other_conn.close()


decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(places=None, min_value=None, max_value=None),
    st.sampled_from([decimal.Decimal(text) for text in ("-0", "0E-7", "-0E+12", "1E+999999", "-1E-999999", "sNaN", "-NaN", "NaN", "Infinity", "-Infinity", "1.50", "100")]),
)
edge_floats = st.one_of(st.floats(allow_nan=False), st.sampled_from([math.inf, -math.inf, 5e-324, -5e-324, 1.7976931348623157e308, 2.0**53 + 1]))
json_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | json_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(json_text, children, max_size=3),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    amount=decimals,
    real=edge_floats,
    key=st.uuids(),
    mood=st.sampled_from(Mood),
    rank=st.sampled_from(Rank),
    data=st.dictionaries(json_text, json_values, max_size=3),
    text=st.text(st.characters(exclude_categories=("Cs",))),
)
def test_decimals_floats_uuids_enums_json_and_text_round_trip_exactly(db, amount, real, key, mood, rank, data, text):
    fresh(db, "edges")
    row = Edges(id=1, amount=amount, real=real, key=key, mood=mood, rank=rank, data=data, text=text)
    db.insert(row)
    (back,) = db.select(Edges)
    assert str(back.amount) == str(amount)  # same digits and exponent, NaN and sign included
    assert back.real == real and (real != 0 or math.copysign(1.0, back.real) == 1.0)  # see test below for -0.0
    assert (back.key, back.mood, back.rank, back.text) == (key, mood, rank, text)
    assert back.data == data


def test_negative_zero_reads_back_as_zero_because_sqlite_real_columns_store_it_as_the_integer_0(db):
    db.insert(Edges(id=1, amount=decimal.Decimal("-0"), real=-0.0, key=uuid.UUID(int=0), mood=Mood.CALM, rank=Rank.LOW, data={"z": -0.0}, text=""))
    back = db.get(Edges, 1)
    assert back.real == 0.0 and math.copysign(1.0, back.real) == 1.0
    assert str(back.amount) == "-0" and math.copysign(1.0, back.data["z"]) == -1.0  # text and JSON keep the sign


class Inner(BaseModel):
    label: str = ""
    extra: dict = {}


class Loose(SyncModel, table="loose"):
    """Fields whose types leave the values' types open: JSON decides what comes back."""

    id: Annotated[int, PrimaryKey()]
    plain_dict: dict = {}
    plain_list: list = []
    plain_tuple: tuple = ()
    any_dict: dict[str, Any] = {}
    any_list: list[Any] = []
    nested: list[Inner] = []
    optional_dict: Optional[dict] = None


class Typed(SyncModel, table="typed_json"):
    """Typed JSON fields: the model restores what JSON changes (keys, tuples, decimals)."""

    id: Annotated[int, PrimaryKey()]
    by_number: dict[int, str] = {}
    pair: tuple[int, int] = (0, 0)
    amounts: list[decimal.Decimal] = []


LOOSE_FIELDS = ["plain_dict", "plain_list", "plain_tuple", "any_dict", "any_list", "nested", "optional_dict"]

python_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
    | st.decimals(allow_nan=False, allow_infinity=False, places=2)
    | st.binary(max_size=3)
    | st.datetimes(timezones=zones)
    | st.dates()
    | st.uuids()
    | st.sampled_from(Mood)
)
python_values = st.recursive(
    python_leaves,
    lambda children: st.lists(children, max_size=3)
    | st.lists(children, max_size=3).map(tuple)
    | st.dictionaries(json_text | st.integers(-5, 5) | st.booleans(), children, max_size=3),
    max_leaves=8,
)


def identical(back: Any, written: Any) -> bool:
    """The same value with the same types at every depth (``==`` alone takes 1 == 1.0 == True, (1,) != [1] aside)."""
    if type(back) is not type(written):
        return False
    if isinstance(written, BaseModel):
        return identical(back.__dict__, written.__dict__)
    if isinstance(written, dict):
        return list(map(type, back)) == list(map(type, written)) and list(back) == list(written) and all(identical(back[key], written[key]) for key in written)
    if isinstance(written, (list, tuple)):
        return len(back) == len(written) and all(identical(b, w) for b, w in zip(back, written))
    return back == written


def value_for(field: str, value: Any) -> Any:
    """``value`` shaped for the field's outer type."""
    if field in ("plain_dict", "any_dict", "optional_dict"):
        return {"v": value}
    if field in ("plain_list", "any_list"):
        return [value]
    if field == "plain_tuple":
        return (value,)
    return [Inner(label="x", extra={"v": value})]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=300)
@given(field=st.sampled_from(LOOSE_FIELDS), value=python_values, how=st.sampled_from(["insert", "insert_many", "upsert", "update"]))
def test_loosely_typed_json_fields_round_trip_exactly_or_refuse_the_value(db, field, value, how):
    sync_models(db.conn, [*MODELS, Loose])
    fresh(db, "loose")
    db.insert(Loose(id=1))
    before = db.conn.execute("SELECT * FROM loose").fetchall()
    written = value_for(field, value)
    row = Loose(id=2 if how != "update" else 1, **{field: written})
    written = getattr(row, field)  # as validated
    try:
        if how == "insert":
            db.insert(row)
        elif how == "insert_many":
            db.insert_many([Loose(id=3), row])
        elif how == "upsert":
            db.upsert(row)
        else:
            db.update(Loose, 1, **{field: written})
    except UnstorableValueError as error:
        assert (error.table, error.field) == ("loose", field)
        assert f"loose.{field}: " in str(error)
        assert db.conn.execute("SELECT * FROM loose").fetchall() == before
        return
    back = db.get(Loose, row.id)
    assert identical(getattr(back, field), written), (getattr(back, field), written)


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("plain_dict", {1: "one"}, "key 1 (int) comes back as '1' (str)"),
        ("plain_dict", {"t": (1, 2)}, "(1, 2) (tuple) comes back as [1, 2] (list)"),
        ("plain_dict", {"d": decimal.Decimal("1.50")}, "Decimal('1.50') (Decimal) comes back as '1.50' (str)"),
        ("plain_dict", {"b": b"x"}, "b'x' (bytes) comes back as 'x' (str)"),
        ("any_dict", {"when": dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=15)))}, "(datetime) comes back as '2024-01-01T12:00:00+05:30' (str)"),
        ("any_list", [Mood.CALM], "(Mood) comes back as"),
        ("plain_list", [{1: "a", "1": "b"}], "key 1 (int) comes back as '1' (str)"),
        ("nested", [Inner(extra={"k": (1,)})], "(1,) (tuple) comes back as [1] (list)"),
        ("plain_tuple", ((1, 2),), "(1, 2) (tuple) comes back as [1, 2] (list)"),
    ],
)
def test_values_json_would_change_are_refused_naming_table_field_value_and_what_changes(db, field, value, what):
    sync_models(db.conn, [*MODELS, Loose])
    with pytest.raises(UnstorableValueError) as raised:
        db.insert(Loose(id=1, **{field: value}))
    assert (raised.value.table, raised.value.field) == ("loose", field)
    assert what in str(raised.value) and f"loose.{field}: JSON does not keep it" in str(raised.value)
    assert db.count(Loose) == 0


def test_typed_json_fields_restore_what_json_changes(db):
    sync_models(db.conn, [*MODELS, Typed])
    row = Typed(id=1, by_number={1: "one", 2: "two"}, pair=(3, 4), amounts=[decimal.Decimal("1.50")])
    db.insert(row)
    back = db.get(Typed, 1)
    assert identical(back.by_number, row.by_number) and identical(back.pair, row.pair) and identical(back.amounts, row.amounts)
