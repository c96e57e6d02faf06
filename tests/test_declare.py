"""Declaring tables: class keywords, markers, type mapping, and every bad declaration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import re
import sqlite3
import uuid
from typing import Annotated, Any, Literal, Optional

import pytest
from annotated_types import Ge, Gt, Lt, MaxLen, MinLen
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, Base64Bytes, Base64Str, BaseModel, Json, StringConstraints, ValidationError
from typing_extensions import TypeAliasType, TypedDict

from pydsqlite import (
    LWW,
    Field,
    ForeignKey,
    Index,
    PrimaryKey,
    PydsqliteError,
    RenamedFrom,
    SchemaDefinitionError,
    SyncModel,
    Unique,
    UsageError,
    sync_models,
)
from pydsqlite.schema.compile import MAX_INDEX_NAME, compile_models, index_name
from pydsqlite.schema.model import registered_models, snake_case, table_options


def compiled(*models: type[BaseModel]):
    return compile_models(list(models))


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    number: int


def test_table_name_explicit_default_and_inherited():
    class TodoItem(SyncModel, table=True):
        id: int

    class Named(SyncModel, table="my todos"):
        id: int

    class Abstract(SyncModel):
        id: int

    class Child(Named):
        extra: str = ""

    class NotATable(Named, table=False):
        pass

    assert snake_case("TodoItem") == "todo_item"
    assert snake_case("HTTPRequestLog") == "http_request_log"
    assert compiled(TodoItem).tables[0].name == "todo_item"
    assert compiled(Named).tables[0].name == "my todos"
    assert compiled(Child).tables[0].column_names == ("id", "extra")
    assert compiled(Child).tables[0].name == "my todos"
    assert compiled(Abstract).tables[0].name == "abstract"  # used as a table: its snake_case name
    assert Abstract not in registered_models()  # but only declared tables are synced by default
    with pytest.raises(SchemaDefinitionError, match="not a table model"):
        compiled(NotATable)


def test_abstract_base_fields_are_inherited_by_table_models():
    class Timestamped(SyncModel):
        created: dt.datetime

    class Note(Timestamped, table="notes"):
        id: Annotated[int, PrimaryKey()]

    table = compiled(Note).tables[0]
    assert table.column_names == ("created", "id")
    assert table.primary_key == ("id",)


def test_registry_lists_table_models_in_definition_order():
    class RegA(SyncModel, table="reg_a"):
        id: int

    class RegB(SyncModel, table="reg_b"):
        id: int

    models = registered_models()
    assert models.index(RegA) < models.index(RegB)

    class RegA2(SyncModel, table="reg_a"):
        id: int

    assert RegA2 in registered_models() and RegA not in registered_models()


TYPE_CASES: list[tuple[Any, str]] = [
    (int, "INTEGER"),
    (bool, "INTEGER"),
    (float, "REAL"),
    (str, "TEXT"),
    (bytes, "BLOB"),
    (uuid.UUID, "TEXT"),
    (dt.datetime, "TEXT"),
    (dt.date, "TEXT"),
    (dt.time, "TEXT"),
    (decimal.Decimal, "TEXT"),
    (Color, "TEXT"),
    (Level, "INTEGER"),
    (Literal["a", "b"], "TEXT"),
    (Literal[1, 2], "INTEGER"),
    (dict, "TEXT"),
    (dict[str, int], "TEXT"),
    (list[int], "TEXT"),
    (Address, "TEXT"),
]


@pytest.mark.parametrize(("annotation", "sql_type"), TYPE_CASES, ids=[str(case[0]) for case in TYPE_CASES])
def test_type_mapping_declares_only_plain_storage_classes(annotation, sql_type):
    namespace = {"__annotations__": {"value": annotation, "maybe": Optional[annotation]}, "maybe": None}
    model = type(SyncModel)("Mapped", (SyncModel,), namespace, table="mapped")
    table = compiled(model).tables[0]
    value, maybe = table.columns
    assert (value.type, value.not_null) == (sql_type, True)
    assert (maybe.type, maybe.not_null, maybe.default) == (sql_type, False, None)


def test_constant_defaults_become_sql_defaults():
    class Defaults(SyncModel, table="defaults"):
        n: int = 5
        neg: int = -3
        f: float = 1.5
        s: str = "it's"
        b: bool = True
        raw: bytes = b"\x00\xff"
        u: uuid.UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")
        d: dt.date = dt.date(2024, 2, 29)
        dec: decimal.Decimal = decimal.Decimal("1.50")
        color: Color = Color.RED
        tags: list[str] = Field(default_factory=list)
        maybe: Optional[int] = None

    defaults = {column.name: column.default for column in compiled(Defaults).tables[0].columns}
    assert defaults == {
        "n": "5",
        "neg": "-3",
        "f": "1.5",
        "s": "'it''s'",
        "b": "1",
        "raw": "X'00FF'",
        "u": "'12345678-1234-5678-1234-567812345678'",
        "d": "'2024-02-29'",
        "dec": "'1.50'",
        "color": "'red'",
        "tags": None,
        "maybe": None,
    }


def test_constraints_become_checks_on_matching_types():
    class Constrained(SyncModel, table="constrained"):
        name: Annotated[str, MaxLen(20), MinLen(1)]
        code: Annotated[str, StringConstraints(max_length=3)]
        age: Annotated[int, Ge(0), Lt(150)]
        ratio: float = Field(gt=0, le=1.0, default=0.5)
        maybe: Optional[Annotated[int, Gt(0)]] = None
        tags: Annotated[list[int], MaxLen(3)] = Field(default_factory=list)

    checks = {column.name: tuple(check.sql for check in column.checks) for column in compiled(Constrained).tables[0].columns}
    assert checks["name"] == ('length(`name`) <= 20', 'length(`name`) >= 1')
    assert checks["code"] == ('length(`code`) <= 3',)
    assert checks["age"] == ('`age` >= 0', '`age` < 150')
    assert checks["ratio"] == ('`ratio` > 0', '`ratio` <= 1.0')
    assert checks["maybe"] == ('`maybe` > 0',)
    assert checks["tags"] == ()


def test_an_integer_bound_renders_the_same_whatever_alias_typing_handed_out():
    """``typing`` caches ``Annotated`` aliases by equal arguments, and ``Gt(0) == Gt(0.0)``: a model
    declared after another process-wide use of ``Annotated[int, Gt(0.0)]`` gets that object.
    On an integer column both bounds render alike, so the schema never depends on what ran first."""
    first = Annotated[int, Gt(0.0), "integer bound test"]  # arguments no other alias in the process has

    class IntegerBound(SyncModel, table="integer_bound"):
        id: Annotated[int, PrimaryKey()]
        count: Annotated[int, Gt(0), "integer bound test"]  # typing hands back ``first``, with Gt(0.0)

    assert Annotated[int, Gt(0), "integer bound test"] is first
    (column,) = [c for c in compiled(IntegerBound).tables[0].columns if c.name == "count"]
    assert tuple(check.sql for check in column.checks) == ("`count` > 0",)


def test_markers_and_field_keywords_are_equivalent():
    class Parent(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        code: Annotated[str, Unique()]

    class ByMarker(SyncModel, table="by_marker"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[int, ForeignKey("parents.id", on_delete="cascade"), Index()]
        code: Annotated[str, Unique()]
        score: Annotated[float, LWW()] = 0.0
        title: Annotated[str, RenamedFrom("name")] = ""

    class ByField(SyncModel, table="by_field"):
        id: int = Field(primary_key=True)
        parent_id: int = Field(foreign_key=Parent, on_delete="CASCADE", index=True)
        code: str = Field(unique=True)
        score: float = Field(0.0, lww=True)
        title: str = Field("", renamed_from="name")

    marker, field = compiled(Parent, ByMarker, ByField).tables[1:]
    assert marker.primary_key == field.primary_key == ("id",)
    assert marker.foreign_keys[0] == field.foreign_keys[0]
    assert marker.foreign_keys[0].on_delete == "CASCADE"
    assert [(i.columns, i.unique) for i in marker.indexes] == [(i.columns, i.unique) for i in field.indexes]
    assert marker.column("title").renamed_from == field.column("title").renamed_from == ("name",)
    assert marker.column_names == field.column_names == (
        "id", "parent_id", "code", "score", "score__hlc", "title", "_pydsqlite_version", "_pydsqlite_seq"
    )
    assert marker.column("score").lww and field.column("score").lww


def test_lww_companion_is_hidden_nullable_text_and_not_a_pydantic_field():
    class Doc(SyncModel, table="docs"):
        id: Annotated[int, PrimaryKey()]
        body: Annotated[str, LWW()]

    table = compiled(Doc).tables[0]
    companion = table.column("body__hlc")
    baseline = "'000000000000000:000000000:" + "0" * 36 + "'"
    assert (companion.type, companion.not_null, companion.default) == ("TEXT", False, baseline)
    assert table.column("_pydsqlite_version").default == baseline
    assert table.column("_pydsqlite_seq").type == "INTEGER"
    assert "body__hlc" not in Doc.model_fields
    assert Doc(id=1, body="x").model_dump() == {"id": 1, "body": "x"}


def test_lww_without_a_key_has_companions_but_no_sync_columns():
    table = compile_models([declare({"a": int, "b": Annotated[str, LWW()]})]).tables[0]
    assert table.column_names == ("a", "b", "b__hlc")


def test_composite_keys_indexes_strict_and_table_rename():
    class Member(SyncModel, table="members", primary_key=("org", "user"), strict=True, renamed_from="people",
                 indexes=[Index("user", "org"), Index("email", unique=True, name="members_email")]):
        org: str
        user: str
        email: str

    class Marked(SyncModel, table="marked"):
        a: Annotated[int, PrimaryKey()]
        b: Annotated[str, PrimaryKey()]

    member, marked = compiled(Member, Marked).tables
    assert member.primary_key == ("org", "user")
    assert marked.primary_key == ("a", "b")
    assert member.strict and member.renamed_from == ("people",)
    assert [(i.name, i.columns, i.unique) for i in member.indexes] == [
        ("ix_members_user_org", ("user", "org"), False),
        ("members_email", ("email",), True),
    ]


def test_long_index_names_are_shortened_deterministically():
    long_table = "t" * 80
    first = index_name(long_table, ("a", "b"), False)
    again = index_name(long_table, ("a", "b"), False)
    other = index_name(long_table, ("a", "c"), False)
    assert len(first) <= MAX_INDEX_NAME and first == again and first != other
    assert index_name("users", ("email",), True) == "uq_users_email"


def test_markers_never_reach_the_json_schema():
    class Plain(BaseModel):
        id: int
        name: str = "x"
        score: float = 0.0
        parent: Optional[int] = None

    class Table(SyncModel, table="json_schema_table"):
        id: int = Field(primary_key=True)
        name: Annotated[str, Unique(), Index()] = "x"
        score: Annotated[float, LWW()] = 0.0
        parent: Optional[int] = Field(None, foreign_key="json_schema_table.id", renamed_from="old_parent")

    ours, theirs = Table.model_json_schema(), Plain.model_json_schema()
    assert ours["properties"] == theirs["properties"]
    assert ours["required"] == theirs["required"]


# --- bad declarations ------------------------------------------------------------


def declare(annotations: dict[str, Any], defaults: dict[str, Any] | None = None, **keywords: Any) -> type[SyncModel]:
    namespace: dict[str, Any] = {"__annotations__": annotations, **(defaults or {})}
    keywords.setdefault("table", "bad")
    return type(SyncModel)("Bad", (SyncModel,), namespace, **keywords)


class Encoded(BaseModel):
    blob: Base64Bytes


class EncodedDict(TypedDict):
    blob: Base64Bytes


@dataclasses.dataclass
class EncodedRecord:
    blob: Base64Bytes


EncodedAlias = TypeAliasType("EncodedAlias", Base64Bytes)


BAD_DECLARATIONS: list[tuple[str, dict, dict, dict, str]] = [
    ("unsupported type", {"id": int, "when": dt.timedelta}, {}, {}, r"Bad\.when: .*timedelta"),
    ("union of types", {"id": int, "v": int | str}, {}, {}, r"Bad\.v: .*union"),
    ("Any", {"id": int, "v": Any}, {}, {}, r"Bad\.v"),
    ("mixed literal", {"id": int, "v": Literal["a", 1]}, {}, {}, r"Bad\.v: .*mixes"),
    ("LWW on primary key", {"id": Annotated[int, PrimaryKey(), LWW()]}, {}, {}, r"Bad\.id: .*primary key.*LWW"),
    ("Optional primary key", {"id": Annotated[Optional[int], PrimaryKey()]}, {"id": None}, {}, r"Bad\.id: .*Optional"),
    ("key declared twice", {"a": Annotated[int, PrimaryKey()], "b": int}, {}, {"primary_key": ("a", "b")}, r"Bad\.a: .*both"),
    ("unknown key field", {"a": int}, {}, {"primary_key": ("a", "nope")}, r"Bad\.nope: .*unknown"),
    ("companion collision", {"id": int, "x__hlc": str}, {}, {}, r"Bad\.x__hlc: .*reserved"),
    ("rowid name", {"rowid": int}, {}, {}, r"Bad\.rowid: .*reserved"),
    ("reserved table name", {"id": int}, {}, {"table": "sqlite_stuff"}, r"Bad: .*reserved"),
    ("reserved own prefix", {"id": int}, {}, {"table": "_pydsqlite_x"}, r"Bad: .*reserved"),
    ("unknown fk table", {"id": int, "p": Annotated[int, ForeignKey("nowhere.id")]}, {}, {}, r"Bad\.p: .*unknown table 'nowhere'"),
    ("unknown fk column", {"id": Annotated[int, PrimaryKey()], "p": Annotated[int, ForeignKey("bad.nope")]}, {}, {}, r"Bad\.p: .*unknown column bad\.nope"),
    ("fk to non-unique", {"id": Annotated[int, PrimaryKey()], "n": int, "p": Annotated[int, ForeignKey("bad.n")]}, {}, {}, r"Bad\.p: .*neither the primary key nor unique"),
    ("invalid default type", {"id": int, "n": int}, {"n": "abc"}, {}, r"Bad\.n: invalid default 'abc'"),
    ("default breaks constraint", {"id": int, "n": Annotated[int, Ge(0)]}, {"n": -1}, {}, r"Bad\.n: invalid default -1"),
    ("None default not optional", {"id": int, "n": int}, {"n": None}, {}, r"Bad\.n: invalid default None"),
    ("index unknown column", {"id": int}, {}, {"indexes": [Index("nope")]}, r"Bad\.nope: index names unknown column"),
    ("empty table index", {"id": int}, {}, {"indexes": [Index()]}, r"Bad: Index\(\) in indexes= needs"),
    ("NaN default", {"id": int, "f": float}, {"f": float("nan")}, {}, r"Bad\.f: .*NaN"),
    ("Base64Bytes", {"id": int, "b": Base64Bytes}, {}, {}, r"Bad\.b: an encoded type .* decoded twice; declare the field as bytes"),
    ("optional Base64Str", {"id": int, "b": Optional[Base64Str]}, {"b": None}, {}, r"Bad\.b: an encoded type"),
    ("Json of a list", {"id": int, "j": Json[list[int]]}, {}, {}, r"Bad\.j: Json\[\.\.\.\] parses JSON text .* declare the parsed type"),
    ("Base64Bytes in a list", {"id": int, "j": list[Base64Bytes]}, {}, {}, r"Bad\.j: an encoded type"),
    ("Base64Str in a dict", {"id": int, "j": dict[str, Base64Str]}, {}, {}, r"Bad\.j: an encoded type"),
    ("Base64Bytes in a nested model", {"id": int, "j": list[Encoded]}, {}, {}, r"Bad\.j: Encoded\.blob: an encoded type"),
    ("Base64Bytes in a TypedDict", {"id": int, "j": list[EncodedDict]}, {}, {}, r"Bad\.j: EncodedDict\.blob: an encoded type"),
    ("Base64Bytes in a dataclass", {"id": int, "j": list[EncodedRecord]}, {}, {}, r"Bad\.j: EncodedRecord\.blob: an encoded type"),
    ("Base64Bytes behind a type alias", {"id": int, "j": list[EncodedAlias]}, {}, {}, r"Bad\.j: an encoded type"),
    ("bare Json in a list", {"id": int, "j": list[Json]}, {}, {}, r"Bad\.j: Json\[\.\.\.\] parses JSON text"),
]


@pytest.mark.parametrize(("case", "annotations", "defaults", "keywords", "message"), BAD_DECLARATIONS, ids=[c[0] for c in BAD_DECLARATIONS])
def test_bad_declarations_raise_schema_definition_error(case, annotations, defaults, keywords, message, memory_conn):
    with pytest.raises(SchemaDefinitionError, match=message) as raised:
        compile_models([declare(annotations, defaults, **keywords)])
    assert isinstance(raised.value, PydsqliteError)
    assert raised.value.model == "Bad"


def test_table_options_without_table_are_refused():
    with pytest.raises(SchemaDefinitionError, match="table options were given"):
        declare({"id": int}, table=None, strict=True)


def test_two_models_for_one_table_in_one_sync_are_refused():
    class First(SyncModel, table="dup_table", ):
        id: int

    second = type(SyncModel)("Second", (SyncModel,), {"__annotations__": {"id": int}}, table="dup_table", renamed_from="x")
    with pytest.raises(SchemaDefinitionError, match=r"table 'dup_table' is declared by two models in this call, tests\.test_declare\..*First and abc\.Second"):
        compile_models([First, second])


def test_index_name_collision_across_tables_is_refused():
    class One(SyncModel, table="one"):
        id: int
        a: str = Field(index=True)

    class Two(SyncModel, table="two", indexes=[Index("b", name="ix_one_a")]):
        id: int
        b: str

    with pytest.raises(SchemaDefinitionError, match="ix_one_a"):
        compile_models([One, Two])


def test_bad_declaration_touches_no_database(conn, db_path):
    before = db_path.read_bytes() if db_path.exists() else b""
    from pydsqlite import sync_models

    with pytest.raises(SchemaDefinitionError):
        sync_models(conn, [declare({"id": int, "when": dt.timedelta})])
    after = db_path.read_bytes() if db_path.exists() else b""
    assert before == after
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def test_invalid_foreign_key_action_is_refused():
    with pytest.raises(ValueError, match="unknown foreign key action"):
        ForeignKey("x.id", on_delete="explode")


def test_set_null_actions_need_a_nullable_column():
    class Parent(SyncModel, table="set_null_parent"):
        id: Annotated[int, PrimaryKey()]

    with pytest.raises(SchemaDefinitionError, match=r"Bad\.parent_id: .*SET NULL on a NOT NULL column"):
        compile_models([Parent, declare({"id": int, "parent_id": Annotated[int, ForeignKey("set_null_parent.id", on_delete="set null")]})])


def _shout(value: str) -> str:
    return value.upper_case()  # type: ignore[attr-defined]  # an AttributeError, as a typo would raise


def test_a_default_whose_own_validator_raises_is_a_schema_definition_error_naming_the_field():
    """Pydantic wraps only ValueError and AssertionError from validators; anything else a validator
    raises on the default is still a declaration error naming the model and field."""

    class Loud(SyncModel, table="loud_defaults"):
        id: Annotated[int, PrimaryKey()]
        word: Annotated[str, AfterValidator(_shout)] = "hi"

    with pytest.raises(SchemaDefinitionError, match=r"Loud\.word.*invalid default 'hi'.*AttributeError"):
        compile_models([Loud])


def test_a_marker_on_a_private_attribute_is_refused_not_dropped():
    """Pydantic makes a name with a leading underscore a private attribute, not a field: its
    ``PrimaryKey()`` or ``LWW()`` would vanish without a word, so the class is refused. (This module
    postpones annotations, so they are strings here; the second class gives them as objects.)"""
    with pytest.raises(SchemaDefinitionError, match=r"Keyed\._rowid_: a name starting with '_' is a Pydantic private attribute"):

        class Keyed(SyncModel, table="keyed_private"):
            _rowid_: Annotated[int, PrimaryKey()]
            name: str = ""

    with pytest.raises(SchemaDefinitionError, match=r"Stamped\._title: .*private attribute"):
        type(SyncModel)("Stamped", (SyncModel,), {"__annotations__": {"id": Annotated[int, PrimaryKey()], "_title": Annotated[str, LWW()]}}, table="stamped_private")

    class Cached(SyncModel, table="cached_private"):
        id: Annotated[int, PrimaryKey()]
        _cache: dict[str, int] = {}

    assert list(Cached.model_fields) == ["id"] and "_cache" in Cached.__private_attributes__


@pytest.mark.parametrize(
    ("keywords", "hint"),
    [
        ({"collation": "NOCASE"}, "did you mean 'collate'"),
        ({"primary_keys": True}, "did you mean 'primary_key'"),
        ({"uniq": True}, "did you mean 'unique'"),
        ({"max_lenght": 3}, "did you mean 'max_length'"),
        ({"example": "x"}, "did you mean 'examples'"),
    ],
)
def test_field_refuses_a_keyword_it_does_not_know_instead_of_dropping_the_marker(keywords, hint):
    """pydantic keeps unknown Field() keywords as JSON-schema data (with a deprecation warning), so a
    misspelt storage keyword would silently lose its marker: pydsqlite's Field refuses it by name."""
    with pytest.raises(UsageError, match=rf"Field\(\) got unknown keyword argument\(s\) {next(iter(keywords))!r} \({hint}\?\)"):
        Field(**keywords)
    info = Field("x", json_schema_extra={"example": "x"}, collate="NOCASE", max_length=3)
    assert info.json_schema_extra == {"example": "x"} and info.metadata


@pytest.mark.parametrize(
    ("keywords", "hint"),
    [
        ({"tabel": "t"}, "'tabel' (did you mean 'table'?)"),
        ({"table": "t", "primary_keys": "id"}, "'primary_keys' (did you mean 'primary_key'?)"),
        ({"table": "t", "withoutrowid": True}, "'withoutrowid' (did you mean 'without_rowid'?)"),
        ({"table": "t", "fozen": True}, "'fozen' (did you mean 'frozen'?)"),
        ({"table": "t", "colour": "red"}, "'colour': a table model takes table="),
    ],
)
def test_a_class_keyword_that_is_no_option_is_refused_with_the_one_it_most_likely_meant(keywords, hint):
    with pytest.raises(SchemaDefinitionError, match=re.escape(f"Misspelt: unknown class keyword {hint}")):
        type(SyncModel)("Misspelt", (SyncModel,), {"__annotations__": {"id": Annotated[int, PrimaryKey()]}}, **keywords)


class Tagged:
    """A mixin taking a class keyword of its own."""

    def __init_subclass__(cls, tag: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tag = tag  # type: ignore[attr-defined]


@pytest.mark.parametrize("mixin_first", [True, False], ids=["mixin first", "mixin after SyncModel"])
def test_a_mixins_own_class_keyword_reaches_it_wherever_it_stands_among_the_bases(mixin_first):
    bases = (Tagged, SyncModel) if mixin_first else (SyncModel, Tagged)
    model = type(SyncModel)("Labelled", bases, {"__annotations__": {"id": Annotated[int, PrimaryKey()]}}, table="class_keyword_mixin", tag="x")
    assert model.tag == "x" and table_options(model).table == "class_keyword_mixin"
    with pytest.raises(SchemaDefinitionError, match=r"unknown class keyword 'tga' \(did you mean 'tag'\?\)|unknown class keyword 'tga'"):
        type(SyncModel)("Labelled", bases, {"__annotations__": {"id": int}}, table="class_keyword_mixin_2", tga="x")


def test_table_options_with_table_false_are_refused():
    with pytest.raises(SchemaDefinitionError, match="table options were given with table=False"):
        type(SyncModel)("Abstract", (SyncModel,), {"__annotations__": {"id": int}}, table=False, indexes=[Index("id")])


def test_pydantic_config_keywords_still_reach_the_model_config():
    class Settings(SyncModel, table="class_keyword_settings", frozen=True, str_strip_whitespace=True):
        id: Annotated[int, PrimaryKey()]
        name: str

    assert Settings.model_config["frozen"] is True
    assert Settings(id=1, name="  x ").name == "x"


def test_two_models_of_one_table_in_a_call_are_named_by_module_and_the_same_class_twice_is_one():
    class First(SyncModel, table="declared_twice"):
        id: Annotated[int, PrimaryKey()]

    namespace = {"__annotations__": {"id": Annotated[int, PrimaryKey()]}, "__module__": First.__module__, "__qualname__": First.__qualname__}
    same_name = type(SyncModel)("First", (SyncModel,), namespace, table="declared_twice")  # a module run twice
    conn = sqlite3.connect(":memory:")
    with pytest.raises(SchemaDefinitionError, match=r"table 'declared_twice' is declared by two models in this call, .*First \(id 0x[0-9a-f]+\) and .*First \(id 0x"):
        sync_models(conn, [First, same_name])
    sync_models(conn, [First, First])
    assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'declared_twice'").fetchall() == [("declared_twice",)]


@pytest.mark.parametrize("action", ["cascade", "set null"])
def test_a_model_defined_in_a_function_may_use_its_local_names_in_annotations(action):
    """With postponed annotations, names local to the defining function (a bound, a foreign-key
    action) must still resolve when sync_models compiles the model, as they do for pydantic."""
    limit = 10

    class Node(SyncModel, table="local_names_nodes"):
        id: Annotated[int, PrimaryKey()]
        parent: Annotated[Optional[int], ForeignKey("local_names_nodes", on_delete=action)] = None
        size: Annotated[int, Field(le=limit)] = 0

    conn = sqlite3.connect(":memory:")
    sync_models(conn, [Node])
    (create,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'local_names_nodes'").fetchone()
    assert f"ON DELETE {action.upper()}" in create
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        Node(id=1, size=11)


def test_two_fields_renamed_from_the_same_column_are_refused():
    """The old column's values would go to the first field and the second would get its default."""

    class Twice(SyncModel, table="renamed_twice"):
        id: Annotated[int, PrimaryKey()]
        a: Annotated[str, RenamedFrom("z")]
        b: Annotated[str, RenamedFrom("old", "Z")]  # another spelling: names ignore ASCII case

    with pytest.raises(SchemaDefinitionError, match=r"Twice\.b.*RenamedFrom\('Z'\) is declared by field 'a' too"):
        compiled(Twice)


@settings(max_examples=60, deadline=None)
@given(
    bound=st.one_of(
        st.decimals(min_value=-1000, max_value=1000, allow_nan=False, places=3),
        st.fractions(min_value=-1000, max_value=1000, max_denominator=50),
    ),
    value=st.floats(min_value=-1001, max_value=1001, allow_nan=False),
    operator=st.sampled_from(["ge", "gt", "le", "lt"]),
)
def test_a_decimal_or_fraction_bound_becomes_a_check_that_agrees_with_pydantic(bound, value, operator):
    """Bounds however they are written (Decimal("0.5"), Fraction(1, 3)) become the CHECK pydantic's
    own comparison makes: the database refuses exactly the values the model refuses."""
    import sqlite3

    from pydantic import Field as PydanticField
    from pydantic import TypeAdapter, ValidationError

    class Bounded(SyncModel, table="decimal_bounded"):
        id: Annotated[int, PrimaryKey()]
        amount: float = PydanticField(**{operator: bound})

    conn = sqlite3.connect(":memory:")
    sync_models(conn, [Bounded])
    try:
        TypeAdapter(Annotated[float, PydanticField(**{operator: bound})]).validate_python(value)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    try:
        conn.execute("INSERT INTO decimal_bounded VALUES (1, ?)", (value,))
        table_accepts = True
    except sqlite3.IntegrityError:
        table_accepts = False
    assert table_accepts == model_accepts


def test_a_whole_decimal_bound_on_an_int_field_is_exact_beyond_float_precision():
    import sqlite3
    from decimal import Decimal
    from fractions import Fraction

    from pydantic import Field as PydanticField

    class Counter(SyncModel, table="exact_int_bounds"):
        id: Annotated[int, PrimaryKey()]
        high: int = PydanticField(le=Decimal("9007199254740993"), default=0)
        low: int = PydanticField(ge=Fraction(-(2**60) - 1), default=0)

    conn = sqlite3.connect(":memory:")
    sync_models(conn, [Counter])
    conn.execute("INSERT INTO exact_int_bounds VALUES (1, 9007199254740993, ?)", (-(2**60) - 1,))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO exact_int_bounds VALUES (2, 9007199254740994, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO exact_int_bounds VALUES (3, 0, ?)", (-(2**60) - 2,))
