"""JSON columns keep what was written: nested models are stored by their fields, whatever their
serialization settings (which shape API output), and a value JSON would change is refused."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from typing import Annotated, Any, Literal, Optional, Union
from zoneinfo import ZoneInfo

import pytest
from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    RootModel,
    Secret,
    SecretBytes,
    SecretStr,
    computed_field,
    field_serializer,
    model_serializer,
    model_validator,
)
from pydantic import Field as PydanticField

from pydsqlite import Database, Field, SchemaDefinitionError, SyncModel, UnstorableValueError, sync_models
from pydsqlite.schema.compile import compile_models

from .test_codec_round_trips import identical

# --- nested models with every kind of serialization setting ------------------------------


class DayOnly(BaseModel):  # an API that shows the day only
    at: dt.datetime

    @field_serializer("at")
    def day(self, value: dt.datetime) -> str:
        return value.strftime("%Y-%m-%d")


class Wrapped(BaseModel):
    amount: int

    @field_serializer("amount", mode="wrap")
    def in_hundreds(self, value: int, handler: Any) -> Any:
        return handler(value) // 100


class Annotated_(BaseModel):
    at: Annotated[dt.datetime, PlainSerializer(lambda value: value.date().isoformat())]


class WholeSerializer(BaseModel):  # a model_serializer whose output the validator reads back
    x: int
    y: int

    @model_serializer
    def as_text(self) -> str:
        return f"{self.x},{self.y}"

    @model_validator(mode="before")
    @classmethod
    def from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            x, y = value.split(",")
            return {"x": x, "y": y}
        return value


class Excluded(BaseModel):
    name: str
    note: str = PydanticField("", exclude=True)


class ExcludedRequired(BaseModel):
    token: str = PydanticField(exclude=True)


class SerializationAlias(BaseModel):
    amount: int = PydanticField(serialization_alias="amt")


class Alias(BaseModel):
    amount: int = PydanticField(alias="Amount")


class ValidationAliasOnly(BaseModel):
    amount: int = PydanticField(validation_alias="Amount")


class Choices(BaseModel):
    amount: int = PydanticField(validation_alias=AliasChoices(AliasPath("money", 0), "amount_in", "amt"))


class ByName(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    amount: int = PydanticField(alias="Amount", serialization_alias="AMT")


class Computed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    side: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def area(self) -> int:
        return self.side * self.side


class Base64Bytes(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64")
    data: bytes


class FloatTimedelta(BaseModel):
    model_config = ConfigDict(ser_json_timedelta="float")
    took: dt.timedelta


class ExtraAllowed(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class Root(RootModel[list[int]]):
    pass


class Outer(BaseModel):  # settings at two depths
    inner: DayOnly
    items: list[Excluded] = []


CASES = [
    DayOnly(at=dt.datetime(2024, 5, 1, 13, 45, 59)),
    Wrapped(amount=1234),
    Annotated_(at=dt.datetime(2024, 5, 1, 13, 45, 59, 7)),
    WholeSerializer(x=1, y=2),
    Excluded(name="a", note="keep me"),
    ExcludedRequired(token="t"),
    SerializationAlias(amount=5),
    Alias(Amount=5),
    ValidationAliasOnly(Amount=5),
    Choices(amt=5),
    ByName(amount=5),
    Computed(side=3),
    Base64Bytes(data=b"text \x00 bytes"),
    FloatTimedelta(took=dt.timedelta(days=2, microseconds=7)),
    ExtraAllowed(name="a", colour="red", size=[1, 2]),
    Root([1, 2, 3]),
    Outer(inner=DayOnly(at=dt.datetime(2024, 5, 1, 13, 45, 59)), items=[Excluded(name="b", note="kept too")]),
]


def table_for(nested: type[BaseModel]) -> type[SyncModel]:
    """A table holding ``nested`` in every shape a JSON column takes."""
    namespace: dict[str, Any] = {
        "__annotations__": {"id": int, "one": nested, "maybe": Optional[nested], "many": list[nested], "by_name": dict[str, nested]},
        "id": Field(default=None, primary_key=True),
        "maybe": None,
        "many": [],
        "by_name": {},
    }
    return type(SyncModel)(f"Holds{nested.__name__}", (SyncModel,), namespace, table=f"holds_{nested.__name__.lower()}")


@pytest.mark.parametrize("value", CASES, ids=[type(case).__name__ for case in CASES])
def test_a_nested_model_comes_back_equal_whatever_its_serialization_settings(memory_conn, value):
    model = table_for(type(value))
    sync_models(memory_conn, [model])
    db = Database(memory_conn)
    written = model(one=value, maybe=value, many=[value, value], by_name={"k": value})
    saved = db.insert(written)
    db.insert_many([model(one=value)])
    for back in (db.get(model, saved.id), db.select(model, order_by="id")[0]):
        for name in ("one", "maybe", "many", "by_name"):
            assert identical(getattr(back, name), getattr(written, name)), name
    db.update(model, saved.id, maybe=None)
    assert db.get(model, saved.id).maybe is None and identical(db.get(model, saved.id).one, value)


def test_a_nested_model_is_stored_by_its_fields_under_the_keys_its_validator_reads(memory_conn):
    models = [table_for(Alias), table_for(Excluded), table_for(Computed)]
    sync_models(memory_conn, models)
    db = Database(memory_conn)
    db.insert(models[0](one=Alias(Amount=5)))
    db.insert(models[1](one=Excluded(name="a", note="n")))
    db.insert(models[2](one=Computed(side=3)))
    assert memory_conn.execute("SELECT json_extract(one, '$.Amount') FROM holds_alias").fetchone() == (5,)
    assert json.loads(memory_conn.execute("SELECT one FROM holds_excluded").fetchone()[0]) == {"name": "a", "note": "n"}
    assert json.loads(memory_conn.execute("SELECT one FROM holds_computed").fetchone()[0]) == {"side": 3}


def test_a_nested_model_default_is_stored_by_its_fields_so_rows_filled_by_sql_read_back(memory_conn):
    class Priced(SyncModel, table="priced"):
        id: int = Field(default=None, primary_key=True)
        price: SerializationAlias = SerializationAlias(amount=7)

    sync_models(memory_conn, [Priced])
    memory_conn.execute("INSERT INTO priced (id) VALUES (1)")
    assert Database(memory_conn).get(Priced, 1).price == SerializationAlias(amount=7)


# --- values JSON would change are refused, nothing written -------------------------------


class Secretive(BaseModel):
    password: SecretStr


class Hundredfold(BaseModel):
    cents: Annotated[int, AfterValidator(lambda dollars: dollars * 100)]


class TextOnly(BaseModel):  # the validator reads its model_serializer's text only
    x: int

    @model_serializer
    def as_text(self) -> str:
        return str(self.x)

    @model_validator(mode="before")
    @classmethod
    def from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("TextOnly reads its text form only")
        return {"x": value}


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (Hundredfold(cents=3), "300 comes back as 30000"),
        (TextOnly.model_validate("1"), "would not validate again"),
        (Base64Bytes(data=b"\xff\x00"), "invalid utf-8"),
    ],
    ids=["validator-not-idempotent", "serializer-only-shape", "bytes-not-utf8"],
)
def test_a_nested_value_that_would_come_back_different_is_refused_naming_model_table_column_and_value(memory_conn, value, what):
    model = table_for(type(value))
    sync_models(memory_conn, [model])
    db = Database(memory_conn)
    with pytest.raises(UnstorableValueError) as raised:
        db.insert_many([model(one=value), model(one=value, many=[value])])
    error = raised.value
    assert (error.model, error.table, error.field, error.value) == (model.__qualname__, f"holds_{type(value).__name__.lower()}", "one", value)
    assert what in str(error) and f"in {model.__qualname__}.one" in str(error) and "nothing was written" in str(error)
    assert db.count(model) == 0


def test_unions_inside_json_round_trip_or_refuse_the_member_json_cannot_tell_apart(memory_conn):
    class Mixed(SyncModel, table="mixed"):
        id: int = Field(default=None, primary_key=True)
        values: list[Union[int, str, None]] = []
        keys: list[Union[str, uuid.UUID]] = []

    sync_models(memory_conn, [Mixed])
    db = Database(memory_conn)
    saved = db.insert(Mixed(values=[1, "1", None], keys=["plain"]))
    assert identical(db.get(Mixed, saved.id).values, [1, "1", None])
    with pytest.raises(UnstorableValueError, match=r"mixed\.keys: JSON does not keep it: UUID\(.*\) \(UUID\) comes back as '.*' \(str\)"):
        db.insert(Mixed(keys=[uuid.UUID(int=1)]))
    assert db.count(Mixed) == 1


@pytest.mark.parametrize(
    "annotation",
    [list[Union[dt.datetime, dt.date]], dict[str, Optional[Union[dt.date, dt.datetime]]]],
    ids=["list[datetime | date]", "dict[str, date | datetime | None]"],
)
def test_a_union_of_date_and_datetime_in_json_is_refused_when_models_compile(memory_conn, annotation):
    namespace = {"__annotations__": {"id": int, "days": annotation}, "id": Field(default=None, primary_key=True)}
    model = type(SyncModel)("Days", (SyncModel,), namespace, table="days")
    with pytest.raises(SchemaDefinitionError, match=r"Days\.days: .* cannot round-trip through JSON: a date is stored as .* use datetime or date alone"):
        sync_models(memory_conn, [model])
    assert memory_conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


class When(BaseModel):
    at: Union[dt.datetime, dt.date]


def test_a_nested_models_date_or_datetime_union_is_refused_naming_the_nested_field():
    class Plan(SyncModel, table="plans"):
        id: int = Field(default=None, primary_key=True)
        steps: list[When] = []

    with pytest.raises(SchemaDefinitionError, match=r"Plan\.steps: When\.at: .* cannot round-trip through JSON"):
        compile_models([Plan])


class Deep(BaseModel):
    b: int = PydanticField(validation_alias=AliasPath("bee", 0))


def test_an_alias_path_is_refused_when_models_compile_also_inside_a_nested_model(memory_conn):
    class Top(SyncModel, table="top"):
        id: int = Field(default=None, primary_key=True)
        b: int = Field(0, validation_alias=AliasPath("bee", 0))

    with pytest.raises(SchemaDefinitionError, match=r"Top\.b: alias AliasPath\(.*\) is not supported on a table model"):
        sync_models(memory_conn, [Top])

    class HoldsDeep(SyncModel, table="holds_deep"):
        id: int = Field(default=None, primary_key=True)
        deep: Optional[Deep] = None

    with pytest.raises(SchemaDefinitionError, match=r"HoldsDeep\.deep: Deep\.b: alias .* is not supported in a model stored as JSON"):
        sync_models(memory_conn, [HoldsDeep])
    assert memory_conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


# --- NaN and Infinity: JSON has neither ---------------------------------------------------


class Measure(BaseModel):
    value: float


class Floats(SyncModel, table="floats"):
    id: int = Field(default=None, primary_key=True)
    by_name: dict[str, float] = {}
    series: list[float] = []
    loose: dict = {}
    measure: Optional[Measure] = None
    real: float = 0.0


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    ("field", "shape", "where"),
    [
        ("by_name", lambda n: {"a": 1.0, "b": n}, "['b']"),
        ("series", lambda n: [0.5, n], "[1]"),
        ("loose", lambda n: {"deep": [{"x": n}]}, "['deep'][0]['x']"),
        ("measure", lambda n: Measure(value=n), "['value']"),
    ],
)
def test_nan_and_infinity_in_any_json_column_are_refused_saying_json_has_neither(memory_conn, number, field, shape, where):
    sync_models(memory_conn, [Floats])
    db = Database(memory_conn)
    value = shape(number)
    with pytest.raises(UnstorableValueError) as raised:
        db.insert(Floats(**{field: value}))
    assert raised.value.field == field and f"floats.{field}: JSON has no NaN or Infinity ({number!r} at {where})" in str(raised.value)
    assert db.count(Floats) == 0


def test_finite_floats_in_json_are_valid_json_for_sqlite_and_a_real_column_keeps_infinity(memory_conn):
    sync_models(memory_conn, [Floats])
    db = Database(memory_conn)
    db.insert(Floats(by_name={"a": 1e308, "b": -0.0}, series=[5e-324], real=math.inf))
    assert memory_conn.execute("SELECT json_extract(by_name, '$.a'), json_extract(series, '$[0]') FROM floats").fetchone() == (1e308, 5e-324)
    assert db.select(Floats)[0].real == math.inf


# --- times with a zone but no fixed offset ---------------------------------------------


class Opening(BaseModel):
    opens: dt.time


class Shop(SyncModel, table="shops"):
    id: int = Field(default=None, primary_key=True)
    opens: Optional[dt.time] = None
    hours: list[dt.time] = []
    opening: Optional[Opening] = None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("opens", dt.time(9, tzinfo=ZoneInfo("Europe/Paris"))),
        ("hours", [dt.time(9), dt.time(18, tzinfo=ZoneInfo("America/New_York"))]),
        ("opening", Opening(opens=dt.time(9, tzinfo=ZoneInfo("Europe/Paris")))),
    ],
)
def test_a_time_whose_zone_has_no_fixed_offset_is_refused_not_stored_without_its_zone(memory_conn, field, value):
    sync_models(memory_conn, [Shop])
    db = Database(memory_conn)
    with pytest.raises(UnstorableValueError, match=rf"shops\.{field}: time 0?\d+:00:00 has the time zone .*, whose UTC offset depends on the date"):
        db.insert_many([Shop(opens=dt.time(8)), Shop(**{field: value})])
    assert db.count(Shop) == 0


def test_a_time_with_a_fixed_offset_keeps_it_and_a_naive_time_stays_naive(memory_conn):
    sync_models(memory_conn, [Shop])
    db = Database(memory_conn)
    paris_summer = dt.timezone(dt.timedelta(hours=2))
    saved = db.insert(Shop(opens=dt.time(9, tzinfo=paris_summer), hours=[dt.time(9, tzinfo=paris_summer), dt.time(18)]))
    back = db.get(Shop, saved.id)
    assert back.opens.utcoffset() == dt.timedelta(hours=2) and back.opens.replace(tzinfo=None) == dt.time(9)
    assert [t.utcoffset() for t in back.hours] == [dt.timedelta(hours=2), None]


def test_plain_json_data_round_trips_without_a_check_of_its_own(memory_conn):
    class Plain(SyncModel, table="plain"):
        id: int = Field(default=None, primary_key=True)
        amounts: dict[str, decimal.Decimal] = {}
        pairs: list[tuple[int, str]] = []

    sync_models(memory_conn, [Plain])
    db = Database(memory_conn)
    saved = db.insert(Plain(amounts={"a": decimal.Decimal("1.50")}, pairs=[(1, "x")]))
    back = db.get(Plain, saved.id)
    assert identical(back.amounts, {"a": decimal.Decimal("1.50")}) and identical(back.pairs, [(1, "x")])


@pytest.mark.parametrize(
    ("annotation", "where"),
    [
        (list[SecretStr], "Keys.value"),
        (dict[str, SecretBytes], "Keys.value"),
        (Optional[list[Secret[int]]], "Keys.value"),
        (Secretive, "Secretive.password"),
        (list[Secretive], "Secretive.password"),
    ],
    ids=["list of SecretStr", "dict of SecretBytes", "Secret[int]", "nested model", "list of nested models"],
)
def test_a_secret_inside_a_json_column_is_refused_when_models_compile(annotation, where):
    """pydantic serializes a secret as '**********': stored inside JSON, the secret itself would be lost
    (a secret field of its own is refused as unsupported too)."""

    class Keys(SyncModel, table="keys"):
        id: int = Field(default=None, primary_key=True)
        value: annotation  # type: ignore[valid-type]

    with pytest.raises(SchemaDefinitionError, match=r"inside a JSON column would be stored masked") as raised:
        compile_models([Keys])
    assert where in str(raised.value) and raised.value.field == "value"


class Corner(enum.Enum):
    SQUARE = (4, 90)
    TRIANGLE = (3, 60)


@pytest.mark.parametrize(
    "annotation",
    [list[Corner], dict[str, Corner], list[Literal[Corner.SQUARE, Corner.TRIANGLE]], Optional[tuple[Corner, int]]],
    ids=["list", "dict", "literal of members", "in a tuple"],
)
def test_an_enum_whose_values_json_changes_is_refused_when_models_compile(annotation):
    """An enum member whose value is a tuple is stored as a list, which reads back as no member: every
    row would be unreadable, so the declaration is refused naming the member."""

    class Held(SyncModel, table="held"):
        id: int = Field(default=None, primary_key=True)
        value: annotation  # type: ignore[valid-type]

    with pytest.raises(SchemaDefinitionError, match=r"Corner.SQUARE has the value \(4, 90\)") as raised:
        compile_models([Held])
    assert raised.value.field == "value"


def test_a_compiled_pattern_whose_flags_json_would_drop_is_refused_on_write(memory_conn):
    class Held(SyncModel, table="held"):
        id: int = Field(default=None, primary_key=True)
        value: list[re.Pattern]

    sync_models(memory_conn, [Held])
    db = Database(memory_conn)
    with pytest.raises(UnstorableValueError, match=re.escape("comes back as re.compile('abc')")) as raised:
        db.insert_many([Held(value=[re.compile("abc", re.IGNORECASE)])])
    assert raised.value.field == "value" and "nothing was written" in str(raised.value)
    assert db.count(Held) == 0


def test_a_pattern_without_flags_comes_back_equal(memory_conn):
    class Rules(SyncModel, table="rules"):
        id: int = Field(default=None, primary_key=True)
        patterns: list[re.Pattern[str]]

    sync_models(memory_conn, [Rules])
    db = Database(memory_conn)
    saved = db.insert(Rules(patterns=[re.compile(r"\d+"), re.compile("^a")]))
    assert db.get(Rules, saved.id).patterns == [re.compile(r"\d+"), re.compile("^a")]


def test_text_that_is_not_json_names_its_own_column_and_value(tmp_path):
    """Of several JSON columns, the error names the one holding text that does not parse, and shows it."""
    import sqlite3

    from pydsqlite import Database, PrimaryKey, RowValidationError, SyncModel, sync_models

    class Profile(SyncModel, table="json_error_profiles"):
        id: Annotated[int, PrimaryKey()]
        tags: list[str] = []
        prefs: dict[str, int] = {}
        scores: dict[str, int] = {}

    conn = sqlite3.connect(tmp_path / "profiles.db")
    sync_models(conn, [Profile])
    conn.execute("""INSERT INTO json_error_profiles VALUES (1, '["a"]', '{"x": 1}', '{a: 1}')""")
    with pytest.raises(RowValidationError) as raised:
        Database(conn).get(Profile, 1)
    assert raised.value.columns == ["scores"]
    assert "its stored value '{a: 1}' cannot be read as JSON" in str(raised.value)


class StoredAddress(BaseModel):
    city: str


@pytest.mark.parametrize("synced", [False, True])
def test_an_update_leaves_a_json_column_it_does_not_change_as_stored(tmp_path, synced):
    """Keys the nested model does not read (a field a later release dropped, keys another program
    wrote) survive an update of other fields, through both update forms; writing the column itself
    replaces it; on a synced table the untouched column gets no new timestamp."""
    import sqlite3

    from pydsqlite import LWW, Database, PrimaryKey, SyncModel, sync_models

    table = f"json_kept_customers_{int(synced)}"
    if synced:
        class Customer(SyncModel, table=table):
            id: Annotated[int, PrimaryKey()]
            name: Annotated[str, LWW()]
            address: Annotated[StoredAddress, LWW()]
    else:
        class Customer(SyncModel, table=table):  # type: ignore[no-redef]
            id: Annotated[int, PrimaryKey()]
            name: str
            address: StoredAddress

    conn = sqlite3.connect(tmp_path / "customers.db")
    sync_models(conn, [Customer])
    stored = '{"city": "Oslo", "street": "Karl Johans gate 1", "zip": "0154"}'
    db = Database(conn)
    db.insert(Customer(id=1, name="ann", address=StoredAddress(city="x")))
    conn.execute(f"UPDATE {table} SET address = ? WHERE id = 1", (stored,))
    conn.commit()
    clock = conn.execute(f"SELECT address__hlc FROM {table}").fetchone()[0] if synced else None

    db.update(Customer, 1, name="Ann")
    customer = db.get(Customer, 1)
    customer.name = "ANN"
    db.update(customer)
    assert conn.execute(f"SELECT name, address FROM {table}").fetchone() == ("ANN", stored)
    if synced:
        assert conn.execute(f"SELECT address__hlc FROM {table}").fetchone()[0] == clock

    db.update(Customer, 1, address=StoredAddress(city="Bergen"))
    assert json.loads(conn.execute(f"SELECT address FROM {table}").fetchone()[0]) == {"city": "Bergen"}


@pytest.mark.parametrize(
    ("before", "after"),
    [({"flag": 1}, {"flag": True}), ({"x": 1}, {"x": 1.0}), ({"p": decimal.Decimal("1.5")}, {"p": decimal.Decimal("1.50")})],
    ids=["1 to True", "1 to 1.0", "Decimal scale"],
)
def test_update_of_an_instance_writes_a_json_value_python_calls_equal_but_json_does_not(tmp_path, before, after):
    """update(obj) leaves an unchanged JSON column as stored, but a value Python calls equal (1 and
    True, 1 and 1.0, 1.5 and 1.50) is a change: it is written and read back as given."""
    import sqlite3

    from pydsqlite import Database, PrimaryKey, SyncModel, sync_models

    class Settings(SyncModel, table="json_equal_settings"):
        id: Annotated[int, PrimaryKey()]
        values: dict[str, Any]
        exact: dict[str, decimal.Decimal] = {}

    conn = sqlite3.connect(tmp_path / "settings.db")
    sync_models(conn, [Settings])
    db = Database(conn)
    field = "exact" if isinstance(next(iter(before.values())), decimal.Decimal) else "values"
    db.insert(Settings(**{"id": 1, "values": {}, field: before}))
    row = db.get(Settings, 1)
    setattr(row, field, after)
    db.update(row)
    read = getattr(db.get(Settings, 1), field)
    assert read == after and [type(v) for v in read.values()] == [type(v) for v in after.values()]
    assert str(read) == str(after)
