"""The declaration key: a fresh process recognises an unchanged database from the model classes
alone, and any declaration change that changes the compiled schema is never mistaken for none."""

from __future__ import annotations

import enum
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import annotated_types
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AfterValidator, ConfigDict, Field, field_validator

from pydsqlite import LWW, Collate, DestructiveChangeError, ForeignKey, Index, PrimaryKey, SyncModel, Unique, sync_models
from pydsqlite.migrate.sync import preview_schema
from pydsqlite.schema.compile import compile_cached, compile_models
from pydsqlite.schema.declaration import declaration_key

ROOT = Path(__file__).resolve().parent.parent


def model(table: str, fields: dict[str, Any], defaults: dict[str, Any] | None = None, **keywords: Any) -> type[SyncModel]:
    namespace: dict[str, Any] = {"__annotations__": {"id": Annotated[int, PrimaryKey()], **fields}, **(defaults or {})}
    return type(SyncModel)("Declared", (SyncModel,), namespace, table=table, **keywords)


def upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def shout(cls: type, value: Any) -> Any:
    return upper(value)


def with_validator(table: str) -> type[SyncModel]:
    """``model(table, {"label": str}, {"label": "a"})`` plus a validator that rewrites the default."""
    return model(table, {"label": str}, {"label": "a", "shout": field_validator("label")(classmethod(shout))})


TextColour = enum.Enum("Colour", {"RED": "red"})
NumberColour = enum.Enum("Colour", {"RED": 1})  # the same name and member, another value type


PAIRS: dict[str, Any] = {
    "type": lambda t: (model(t, {"a": str}), model(t, {"a": int})),
    "optional": lambda t: (model(t, {"a": str}), model(t, {"a": Optional[str]})),
    "new field": lambda t: (model(t, {"a": str}), model(t, {"a": str, "b": Optional[int]}, {"b": None})),
    "field order": lambda t: (model(t, {"a": str, "b": int}), model(t, {"b": int, "a": str})),
    "default": lambda t: (model(t, {"a": int}, {"a": 1}), model(t, {"a": int}, {"a": 2})),
    "default equal but typed differently": lambda t: (model(t, {"a": float}, {"a": 1}), model(t, {"a": float}, {"a": 1.5})),
    "default dropped": lambda t: (model(t, {"a": int}, {"a": 1}), model(t, {"a": int})),
    "default validated by a field validator": lambda t: (model(t, {"label": str}, {"label": "a"}), with_validator(t)),
    "default validated by an Annotated function": lambda t: (
        model(t, {"a": str}, {"a": "x"}), model(t, {"a": Annotated[str, AfterValidator(upper)]}, {"a": "x"})
    ),
    "config that rewrites defaults": lambda t: (
        model(t, {"a": str}, {"a": "x", "model_config": ConfigDict(str_to_upper=False)}),
        model(t, {"a": str}, {"a": "x", "model_config": ConfigDict(str_to_upper=True)}),
    ),
    "bound": lambda t: (model(t, {"a": Annotated[int, annotated_types.Gt(0)]}), model(t, {"a": Annotated[int, annotated_types.Gt(1)]})),
    "bound of another type": lambda t: (
        model(t, {"a": Annotated[float, annotated_types.Gt(0)]}), model(t, {"a": Annotated[float, annotated_types.Gt(0.5)]})
    ),
    "Field constraint": lambda t: (model(t, {"a": str}, {"a": Field(max_length=5)}), model(t, {"a": str}, {"a": Field(max_length=6)})),
    "field index": lambda t: (model(t, {"a": str}), model(t, {"a": Annotated[str, Index()]})),
    "unique": lambda t: (model(t, {"a": Annotated[str, Index()]}), model(t, {"a": Annotated[str, Unique()]})),
    "collation": lambda t: (model(t, {"a": str}), model(t, {"a": Annotated[str, Collate("NOCASE")]})),
    "lww": lambda t: (model(t, {"a": str}), model(t, {"a": Annotated[str, LWW()]})),
    "class indexes": lambda t: (model(t, {"a": str, "b": str}, indexes=[Index("a")]), model(t, {"a": str, "b": str}, indexes=[Index("a", "b")])),
    "strict": lambda t: (model(t, {"a": str}), model(t, {"a": str}, strict=True)),
    "without rowid": lambda t: (model(t, {"a": str}), model(t, {"a": str}, without_rowid=True)),
    "literal values": lambda t: (model(t, {"a": Literal["x", "y"]}), model(t, {"a": Literal[1, 2]})),
    "enum values": lambda t: (model(t, {"a": TextColour}), model(t, {"a": NumberColour})),
    "foreign key target": lambda t: (
        model(t, {"a": Annotated[int, ForeignKey(f"{t}_parent.id")]}),
        model(t, {"a": Annotated[str, ForeignKey(f"{t}_parent.code")]}),
    ),
}


@pytest.mark.parametrize("change", sorted(PAIRS))
def test_every_schema_change_of_a_declaration_is_migrated(conn, change):
    table = "decl_" + "_".join(change.split())
    parent = model(f"{table}_parent", {"code": Annotated[str, Unique()]})  # the foreign-key case's target
    before, after = PAIRS[change](table)
    sync_models(conn, [parent, before])
    assert declaration_key((parent, before)) != declaration_key((parent, after))
    sync_models(conn, [parent, after], allow_destructive=True)
    assert preview_schema(conn, compile_models([parent, after])).is_empty  # the full plan finds nothing left to do


def test_a_default_factory_or_a_docstring_changes_nothing_in_the_schema(conn):
    sync_models(conn, [model("decl_factory", {"a": int})])
    again = model("decl_factory", {"a": int}, {"a": Field(default_factory=lambda: 3, description="counted")})
    sync_models(conn, [again])
    assert preview_schema(conn, compile_models([again])).is_empty


def test_a_datetime_default_computed_at_import_does_not_replan_every_start(conn):
    import datetime as dt

    first = model("decl_stamp", {"at": dt.datetime}, {"at": dt.datetime(2024, 1, 1)})
    second = model("decl_stamp", {"at": dt.datetime}, {"at": dt.datetime(2025, 6, 1)})
    assert declaration_key((first,)) == declaration_key((second,))
    assert compile_cached((first,)).fingerprint == compile_cached((second,)).fingerprint  # the fingerprint agrees


def test_a_model_rebuilt_after_its_forward_references_resolve_is_read_again(conn):
    class Late(SyncModel, table="decl_late"):
        id: Annotated[int, PrimaryKey()]
        mode: Mode  # noqa: F821 - defined below

    class Mode(enum.Enum):
        ON = "on"

    Late.model_rebuild(_types_namespace={"Mode": Mode})
    sync_models(conn, [Late])
    assert preview_schema(conn, compile_models([Late])).is_empty
    assert declaration_key((Late,)) is not None


SCRIPT = """
import sqlite3, sys
from typing import Annotated, Optional
from pydsqlite import Index, PrimaryKey, SyncModel, sync_models
from pydsqlite.schema import compile as compiler

class Note(SyncModel, table="notes", indexes=[Index("title")]):
    id: Annotated[int, PrimaryKey()]
    title: str
    body: Optional[str] = {default!r}

plan = sync_models(sqlite3.connect(sys.argv[1]), [Note])
print(len(plan.operations), len(compiler._cache))
"""


def test_a_fresh_process_recognises_unchanged_models_without_compiling_them(db_path):
    def run(default: str | None) -> list[str]:
        script = textwrap.dedent(SCRIPT.format(default=default))
        output = subprocess.run(
            [sys.executable, "-c", script, str(db_path)], check=True, capture_output=True, text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        return output.stdout.split()

    assert run(None) == ["1", "1"]  # created the table: compiled
    assert run(None) == ["0", "0"]  # unchanged: the declaration key alone, nothing compiled
    assert run("empty") == ["1", "1"]  # a new default: compiled and migrated
    assert run("empty") == ["0", "0"]


FIELD_TYPES = [str, int, float, bool, bytes, Optional[str], Optional[int], Optional[float], TextColour, NumberColour, Literal["x", "y"]]
DEFAULTS = [None, 0, 1, 1.0, True, False, "1", "x", "X", " x ", b"x", "red", 1.5, -0.0]
METADATA = [Index(), Unique(), LWW(), Collate("NOCASE"), annotated_types.Gt(0), annotated_types.Gt(0.0), annotated_types.Le(1),
            annotated_types.MaxLen(3), annotated_types.MinLen(1), AfterValidator(upper)]


FieldSpec = tuple[str, Any, tuple[Any, ...], tuple[bool, Any]]
"""(name, annotation, metadata, (has a default, the default))."""

field_specs = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(FIELD_TYPES),
    st.lists(st.sampled_from(METADATA), max_size=2, unique_by=repr).map(tuple),
    st.tuples(st.booleans(), st.sampled_from(DEFAULTS)),
)
configs = st.one_of(st.none(), st.tuples(st.booleans(), st.booleans()))


@st.composite
def declaration_pairs(draw) -> tuple[tuple, tuple]:
    """A declaration (fields, config, strict) and the same with one part drawn again."""
    fields = draw(st.lists(field_specs, min_size=1, max_size=3, unique_by=lambda spec: spec[0]))
    declaration = (fields, draw(configs), draw(st.booleans()))
    changed_fields = list(fields)
    part = draw(st.integers(0, 5))
    if part < 4:
        position = draw(st.integers(0, len(fields) - 1))
        spec = list(fields[position])
        spec[part] = draw(field_specs)[part]
        changed_fields[position] = tuple(spec)
        if len({spec[0] for spec in changed_fields}) < len(changed_fields):
            changed_fields = fields
        return declaration, (changed_fields, declaration[1], declaration[2])
    if part == 4:
        return declaration, (fields, draw(configs), declaration[2])
    return declaration, (fields, declaration[1], not declaration[2])


def _compiled(declaration: tuple) -> tuple[str | None, str | None]:
    """(declaration key, fingerprint) of a model, or (None, None) when it does not compile."""
    from pydsqlite.errors import SchemaDefinitionError

    fields, config, strict = declaration
    annotations = {name: Annotated[annotation, *metadata] if metadata else annotation for name, annotation, metadata, _ in fields}
    defaults = {name: default for name, _, _, (has_default, default) in fields if has_default}
    if config is not None:
        defaults["model_config"] = ConfigDict(str_to_upper=config[0], str_strip_whitespace=config[1])
    try:
        declared = model("decl_property", annotations, defaults, strict=strict)
        fingerprint = compile_cached((declared,)).fingerprint
    except (SchemaDefinitionError, TypeError, ValueError):
        return None, None
    return declaration_key((declared,)), fingerprint


@given(declaration_pairs())
def test_equal_declaration_keys_mean_equal_compiled_schemas(pair):
    key, fingerprint = _compiled(pair[0])
    other_key, other_fingerprint = _compiled(pair[1])
    if key is not None and key == other_key:
        assert fingerprint == other_fingerprint


@pytest.mark.parametrize("change", ["append", "replace", "remove", "same classes in a tuple"])
def test_a_list_changed_in_place_between_two_syncs_is_never_taken_for_the_last_one(change: str) -> None:
    """The repeat check remembers the list it was given: the same list object, changed since, plans
    again (the new table is created, the replaced model's table changes)."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    first, second = model("in_place_a", {"a": str}), model("in_place_b", {"b": int})
    models: list[type[SyncModel]] = [first]
    sync_models(conn, models)
    if change == "append":
        models.append(second)
    elif change == "replace":
        models[0] = model("in_place_a", {"a": str, "extra": Optional[int]}, {"extra": None})
    elif change == "remove":
        models.append(second)
        sync_models(conn, models)
        models.remove(first)
        with pytest.raises(DestructiveChangeError, match="drop table in_place_a"):  # planned again: in_place_a is no longer declared
            sync_models(conn, models)
        return
    else:
        sync_models(conn, (first,))
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'in_place%'")] == ["in_place_a"]
        return
    sync_models(conn, models)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'in_place%'")}
    columns = {row[1] for row in conn.execute("PRAGMA table_info(in_place_a)")}
    if change == "append":
        assert tables == {"in_place_a", "in_place_b"}
    else:
        assert "extra" in columns


def test_an_object_whose_equality_raises_in_the_models_list_gets_the_precise_error() -> None:
    """The repeat check compares the list with the last one: an item whose ``__eq__`` raises must
    not escape from that comparison instead of the error that names it."""
    import sqlite3

    from pydsqlite.errors import UsageError

    class Odd:
        __hash__ = None  # type: ignore[assignment]

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing me")

    conn = sqlite3.connect(":memory:")
    first = model("odd_one", {"a": str})
    sync_models(conn, [first])
    with pytest.raises(UsageError, match="Odd"):
        sync_models(conn, [Odd()])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="Odd"):
        sync_models(conn, (Odd(),))  # type: ignore[arg-type]
