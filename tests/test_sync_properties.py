"""Property test: random table, random rows, random edits; sync keeps every surviving cell.

Either the migration succeeds and the live schema equals the new models (the next
plan is empty) with every surviving value intact (after SQLite's CAST for declared
type changes), or it raises a pydsqlite error and the file is byte-for-byte unchanged.
For one table the refusal is predicted exactly: a NOT NULL column without a default is
refused when a row would need a value for it (a new column over rows, or NULLs in the
column it comes from), blobs that are not UTF-8 never become TEXT, and nothing else
refuses a migration that is allowed to be destructive.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import Annotated, Any, Optional

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pydsqlite import (
    LWW,
    Field,
    ForeignKey,
    Index,
    MigrationError,
    PrimaryKey,
    PydsqliteError,
    SyncModel,
    model_migration_plan,
    sync_models,
)

KINDS = {"int": int, "str": str, "float": float, "bool": bool, "bytes": bytes}
SQL_TYPE = {"int": "INTEGER", "str": "TEXT", "float": "REAL", "bool": "INTEGER", "bytes": "BLOB"}
NAMES = ["alpha", "Beta", "gamma delta", "select", 'quo"te', "ünï", "e", "f"]


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str
    nullable: bool
    default: Any
    indexed: bool
    lww: bool
    renamed_from: str | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    composite_key: str | None
    renamed_from: str | None = None


EDGE_INTS = [2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**62 + 1, 2**63 - 1, -(2**63)]
"""Where REAL stops holding integers exactly, and the ends of SQLite's INTEGER."""
NUMERIC_TEXT = ["012", " 12", "12 ", "1e3", "1.50", "3.0", "+7", "0x10", "9007199254740993", "9223372036854775808", "-0"]
EDGE_FLOATS = [0.1 + 0.2, 2.0**53, 2.0**63, -(2.0**63), 1e300, 5e-324, -0.0, 1 / 3]


def values_of(kind: str) -> st.SearchStrategy:
    return {
        "int": st.one_of(st.integers(-(2**40), 2**40), st.integers(-(2**63), 2**63 - 1), st.sampled_from(EDGE_INTS)),
        "str": st.one_of(
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
            st.sampled_from(NUMERIC_TEXT), st.integers(-(2**63), 2**63 - 1).map(str), st.floats(allow_nan=False).map(repr),
        ),
        "float": st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), st.sampled_from(EDGE_FLOATS)),
        "bool": st.booleans(),
        "bytes": st.binary(max_size=8),
    }[kind]


@st.composite
def column_specs(draw, name: str) -> ColumnSpec:
    kind = draw(st.sampled_from(sorted(KINDS)))
    nullable = draw(st.booleans())
    default = draw(st.one_of(st.none(), values_of(kind))) if draw(st.booleans()) else None
    return ColumnSpec(name, kind, nullable, default, draw(st.booleans()), draw(st.booleans()))


@st.composite
def table_specs(draw) -> TableSpec:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique_by=str.lower))
    columns = tuple(draw(column_specs(name)) for name in names)
    composite = draw(st.one_of(st.none(), st.sampled_from([c.name for c in columns if not c.nullable and not c.lww] or [None])))
    return TableSpec("items", columns, composite)


@st.composite
def edited(draw, table: TableSpec) -> TableSpec:
    columns = list(table.columns)
    for _ in range(draw(st.integers(1, 4))):
        # "nullability" twice: a column turning NOT NULL over NULLs needs rows, NULLs and no default at once.
        edit = draw(st.sampled_from(["add", "drop", "rename", "type", "nullability", "nullability", "index", "lww", "default", "key", "table"]))
        if edit == "add":
            free = [n for n in NAMES if n.lower() not in {c.name.lower() for c in columns}]
            if free:
                columns.append(draw(column_specs(draw(st.sampled_from(free)))))
        elif edit == "drop" and columns:
            columns.pop(draw(st.integers(0, len(columns) - 1)))
        elif edit == "rename" and columns:
            index = draw(st.integers(0, len(columns) - 1))
            free = [n for n in NAMES if n.lower() not in {c.name.lower() for c in columns}]
            hinted = {c.renamed_from.lower() for c in columns if c.renamed_from}  # one column's values go to one column only
            if free and columns[index].renamed_from is None and columns[index].name.lower() not in hinted:
                old = columns[index]
                columns[index] = replace(old, name=draw(st.sampled_from(free)), renamed_from=old.name)
        elif edit == "type" and columns:
            index = draw(st.integers(0, len(columns) - 1))
            columns[index] = replace(columns[index], kind=draw(st.sampled_from(sorted(KINDS))), default=None)
        elif edit == "nullability" and columns:
            index = draw(st.integers(0, len(columns) - 1))
            column = columns[index]
            # Turning NOT NULL keeps, adds or leaves out a default (then NULLs are in the way).
            default = draw(st.sampled_from([column.default, None])) if draw(st.booleans()) else draw(values_of(column.kind))
            columns[index] = replace(column, nullable=not column.nullable, default=default if column.nullable else column.default)
        elif edit == "index" and columns:
            index = draw(st.integers(0, len(columns) - 1))
            columns[index] = replace(columns[index], indexed=not columns[index].indexed)
        elif edit == "lww" and columns:
            index = draw(st.integers(0, len(columns) - 1))
            columns[index] = replace(columns[index], lww=not columns[index].lww)
        elif edit == "default" and columns:
            index = draw(st.integers(0, len(columns) - 1))
            columns[index] = replace(columns[index], default=draw(st.one_of(st.none(), values_of(columns[index].kind))))
        elif edit == "key":
            candidates = [c.name for c in columns if not c.nullable and not c.lww]
            table = replace(table, composite_key=draw(st.one_of(st.none(), st.sampled_from(candidates))) if candidates else None)
        elif edit == "table":
            table = replace(table, name="things" if table.name == "items" else "items", renamed_from=table.name)
    names = {c.name for c in columns}
    key = table.composite_key if table.composite_key in names else None
    if key is not None:
        column = next(c for c in columns if c.name == key)
        if column.nullable or column.lww:
            key = None
    return replace(table, columns=tuple(columns), composite_key=key)


def model_of(table: TableSpec, indexes: tuple[Index, ...] = ()) -> type[SyncModel]:
    annotations: dict[str, Any] = {"id": Annotated[int, PrimaryKey()] if table.composite_key is None else int}
    namespace: dict[str, Any] = {}
    for column in table.columns:
        python_type = KINDS[column.kind]
        metadata: list[Any] = []
        if column.lww:
            metadata.append(LWW())
        if column.indexed:
            metadata.append(Index())
        annotation = Optional[python_type] if column.nullable else python_type
        annotations[column.name] = Annotated[annotation, *metadata] if metadata else annotation
        field_args: dict[str, Any] = {}
        if column.renamed_from:
            field_args["renamed_from"] = column.renamed_from
        if column.default is not None:
            namespace[column.name] = Field(column.default, **field_args)
        elif column.nullable:
            namespace[column.name] = Field(None, **field_args)
        elif field_args:
            namespace[column.name] = Field(**field_args)
    namespace["__annotations__"] = annotations
    keywords: dict[str, Any] = {"table": table.name}
    if indexes:
        keywords["indexes"] = list(indexes)
    if table.composite_key is not None:
        keywords["primary_key"] = ("id", table.composite_key)
    if table.renamed_from:
        keywords["renamed_from"] = table.renamed_from
    return type(SyncModel)("Generated", (SyncModel,), namespace, **keywords)


def encode(kind: str, value: Any) -> Any:
    return int(value) if kind == "bool" and value is not None else value


def cast(conn: sqlite3.Connection, value: Any, sql_type: str) -> Any:
    return conn.execute(f"SELECT CAST(? AS {sql_type})", (value,)).fetchone()[0]


def row_strategy(columns: tuple[ColumnSpec, ...], without_nulls: frozenset[str] = frozenset()) -> st.SearchStrategy:
    """Rows of ``columns``; nullable ones hold NULLs too, except those named in ``without_nulls``."""
    return st.tuples(
        *[values_of(c.kind) if not c.nullable or c.name in without_nulls else st.one_of(st.none(), values_of(c.kind)) for c in columns]
    )


def sources_of(before: TableSpec, after: TableSpec) -> dict[str, tuple[int, ColumnSpec] | None]:
    """Each new column's old column (position, spec), as docs/declaring-models.md says rename
    hints apply: a hint applies while its new name is free (no live column, or one that another
    applying hint moves away, as in swaps); otherwise a column keeps the live column of its name."""
    old = {c.name.lower(): (j, c) for j, c in enumerate(before.columns)}
    hints = {c.name.lower(): c.renamed_from.lower() for c in after.columns if c.renamed_from and c.renamed_from.lower() in old}
    hints = {new: previous for new, previous in hints.items() if new != previous}
    while True:  # the largest set of hints that are consistent with each other
        moved = set(hints.values())
        kept = {new: previous for new, previous in hints.items() if new not in old or new in moved}
        if kept == hints:
            break
        hints = kept
    moved = set(hints.values())
    result: dict[str, tuple[int, ColumnSpec] | None] = {}
    for column in after.columns:
        name = column.name.lower()
        if name in hints:
            result[column.name] = old[hints[name]]
        else:
            result[column.name] = old[name] if name in old and name not in moved else None
    return result


def blocked_renames(before: TableSpec, after: TableSpec) -> list[str]:
    """Hints that cannot apply: the new name is a live column that stays, and the old name is not
    wanted again (docs/declaring-models.md: refused rather than guessed)."""
    old = {c.name.lower() for c in before.columns}
    wanted = {c.name.lower() for c in after.columns}
    sources = sources_of(before, after)
    applied = {c.name.lower() for c in after.columns if c.renamed_from and sources[c.name] is not None
               and sources[c.name][1].name.lower() == c.renamed_from.lower()}
    return [
        c.name for c in after.columns
        if c.renamed_from and c.renamed_from.lower() in old and c.name.lower() in old
        and c.name.lower() not in applied and c.renamed_from.lower() not in wanted
    ]


def is_utf8(value: Any) -> bool:
    if not isinstance(value, bytes):
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_edits_keep_every_surviving_cell(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("prop") / "p.db"
    before_spec = data.draw(table_specs())
    conn = sqlite3.connect(path)
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")  # lossy casts may leave invalid UTF-8
    try:
        sync_models(conn, [model_of(before_spec)])
        # Some nullable columns hold no NULL, so a later NOT NULL without default must apply to them.
        without_nulls = frozenset(c.name for c in before_spec.columns if c.nullable and data.draw(st.booleans()))
        row_values = data.draw(st.lists(row_strategy(before_spec.columns, without_nulls), max_size=6))
        names = ", ".join(["id", *(quote(c.name) for c in before_spec.columns)])
        marks = ", ".join("?" * (len(before_spec.columns) + 1))
        conn.executemany(
            f"INSERT INTO {before_spec.name} ({names}) VALUES ({marks})",
            [(i, *(encode(c.kind, v) for c, v in zip(before_spec.columns, values))) for i, values in enumerate(row_values)],
        )
        conn.commit()
        after_spec = data.draw(edited(before_spec))
        after_model = model_of(after_spec)
        sources = sources_of(before_spec, after_spec)
        # NOT NULL without a default is refused exactly when a row would need a value: no
        # source column to copy from, or a NULL in the source.
        in_the_way = [
            column.name
            for column in after_spec.columns
            if not column.nullable and column.default is None and row_values
            and (sources[column.name] is None or any(values[sources[column.name][0]] is None for values in row_values))
        ]
        # Blobs that are not UTF-8 never become TEXT, even when losses are allowed (docs/migrations.md).
        in_the_way += [
            column.name
            for column in after_spec.columns
            if SQL_TYPE[column.kind] == "TEXT" and (source := sources[column.name]) is not None and source[1].kind == "bytes"
            and any(not is_utf8(values[source[0]]) for values in row_values) and column.name not in in_the_way
        ]
        for column in after_spec.columns:
            if not column.nullable and column.default is None and column.name != after_spec.composite_key:
                source = sources[column.name]
                kind = "new column" if source is None else "nullable column" if source[1].nullable else "NOT NULL column"
                state = "in the way" if column.name in in_the_way else "rows fit" if row_values else "no rows"
                event(f"NOT NULL without default, {kind}: {state}")
        blocked = blocked_renames(before_spec, after_spec)
        file_before = path.read_bytes()
        try:
            sync_models(conn, [after_model], allow_destructive=True)
        except PydsqliteError as error:
            event(f"refused: {type(error).__name__}")
            if blocked:
                assert "cannot be renamed" in str(error) and path.read_bytes() == file_before, str(error)
                return
            assert in_the_way, f"refused although no row is in the way: {error}"
            assert isinstance(error, MigrationError) and "nothing was changed" in str(error), str(error)
            for name in in_the_way:
                assert f"{after_spec.name}.{name}: " in str(error), (name, str(error))
            assert "Statement:" not in str(error) and "database error" not in str(error), str(error)
            assert path.read_bytes() == file_before
            return
        event("applied")
        assert not blocked, f"a rename onto a column that stays was guessed: {blocked}"
        assert not in_the_way, f"NOT NULL columns {in_the_way} without a default were filled with nothing"
        assert model_migration_plan(conn, [after_model]).is_empty
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for i, values in enumerate(row_values):
            for column in after_spec.columns:
                live = conn.execute(f"SELECT {quote(column.name)} FROM {after_spec.name} WHERE id = ?", (i,)).fetchone()[0]
                source = sources[column.name]
                if source is not None:
                    position, old_column = source
                    expected = encode(old_column.kind, values[position])
                    if SQL_TYPE[old_column.kind] != SQL_TYPE[column.kind]:
                        expected = cast(conn, expected, SQL_TYPE[column.kind])
                    if expected is None and not column.nullable:
                        expected = encode(column.kind, column.default)
                else:
                    expected = encode(column.kind, column.default)
                if isinstance(expected, float) and isinstance(live, float):
                    assert live == expected or (live != live and expected != expected)
                else:
                    assert live == expected, (column, values, live, expected)
    finally:
        conn.close()


# --- several tables with foreign keys, unique indexes and table add/drop/rename ------------


@dataclass(frozen=True)
class WorldSpec:
    """A parent table, optionally a child referencing it, optionally an extra table."""

    parent: TableSpec
    parent_unique: str | None
    child_columns: tuple[ColumnSpec, ...] | None
    child_linked: bool
    extra: bool


@st.composite
def world_specs(draw) -> WorldSpec:
    parent = draw(table_specs())
    unique = draw(st.one_of(st.none(), st.sampled_from([c.name for c in parent.columns])))
    child = tuple(draw(column_specs(name)) for name in draw(st.lists(st.sampled_from(NAMES[:4]), max_size=2, unique_by=str.lower)))
    return WorldSpec(parent, unique, child if draw(st.booleans()) else None, draw(st.booleans()), draw(st.booleans()))


@st.composite
def edited_world(draw, world: WorldSpec) -> WorldSpec:
    parent = draw(edited(world.parent))
    names = [c.name for c in parent.columns]
    unique = world.parent_unique if world.parent_unique in names and draw(st.booleans()) else draw(st.one_of(st.none(), st.sampled_from(names or [None])))
    child = world.child_columns
    if child is not None and draw(st.booleans()):
        child = tuple(replace(c, kind=draw(st.sampled_from(sorted(KINDS))), default=None) if c.nullable else c for c in child)
    if draw(st.integers(0, 4)) == 0:
        child = None if child is not None else ()
    linked = world.child_linked if draw(st.integers(0, 3)) else not world.child_linked
    return WorldSpec(parent, unique, child, linked, world.extra if draw(st.integers(0, 2)) else not world.extra)


def world_models(world: WorldSpec) -> list[type[SyncModel]]:
    unique = () if world.parent_unique is None else (Index(world.parent_unique, unique=True, name=f"uq_{world.parent.name}_pick"),)
    parent = model_of(world.parent, unique)
    models = [parent]
    if world.child_columns is not None:
        annotations: dict[str, Any] = {"id": Annotated[int, PrimaryKey()]}
        namespace: dict[str, Any] = {}
        if world.child_linked and world.parent.composite_key is None:
            annotations["parent_id"] = Annotated[Optional[int], ForeignKey(f"{world.parent.name}.id", on_delete="cascade")]
        else:
            annotations["parent_id"] = Optional[int]
        namespace["parent_id"] = None
        for column in world.child_columns:
            annotations[column.name] = Optional[KINDS[column.kind]] if column.nullable else KINDS[column.kind]
            if column.nullable:
                namespace[column.name] = None
            elif column.default is not None:
                namespace[column.name] = column.default
        namespace["__annotations__"] = annotations
        models.append(type(SyncModel)("GeneratedChild", (SyncModel,), namespace, table="children"))
    if world.extra:
        models.append(type(SyncModel)("GeneratedExtra", (SyncModel,), {"__annotations__": {"id": int, "v": Optional[str]}, "v": None}, table="extra"))
    return models


def insert_rows(conn: sqlite3.Connection, table: str, columns: tuple[ColumnSpec, ...], values: list[tuple], extra: dict[str, list]) -> None:
    names = ", ".join(["id", *extra, *(quote(c.name) for c in columns)])
    marks = ", ".join("?" * (1 + len(extra) + len(columns)))
    conn.executemany(
        f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})",
        [(i, *(column[i] for column in extra.values()), *(encode(c.kind, v) for c, v in zip(columns, row))) for i, row in enumerate(values)],
    )


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_multi_table_edits_keep_children_and_foreign_keys(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("world") / "w.db"
    world = data.draw(world_specs())
    conn = sqlite3.connect(path)
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        try:
            sync_models(conn, world_models(world))
        except PydsqliteError as error:
            raise AssertionError(f"a valid first schema was refused: {error}") from error
        parent_rows = data.draw(st.lists(row_strategy(world.parent.columns), max_size=5))
        insert_rows(conn, world.parent.name, world.parent.columns, parent_rows, {})
        parent_ids = [row[0] for row in conn.execute(f"SELECT id FROM {world.parent.name}")]
        child_rows: list[tuple] = []
        if world.child_columns is not None:
            child_rows = data.draw(st.lists(row_strategy(world.child_columns), max_size=5))
            links = [data.draw(st.sampled_from(parent_ids)) if parent_ids and world.child_linked else None for _ in child_rows]
            insert_rows(conn, "children", world.child_columns, child_rows, {"parent_id": links})
        conn.commit()
        children_before = conn.execute("SELECT id, parent_id FROM children ORDER BY id").fetchall() if world.child_columns is not None else []
        after = data.draw(edited_world(world))
        models = world_models(after)
        file_before = path.read_bytes()
        try:
            sync_models(conn, models, allow_destructive=True)
        except PydsqliteError as error:
            event(f"refused: {type(error).__name__}")
            assert "Statement:" not in str(error) and "database error" not in str(error), str(error)
            assert path.read_bytes() == file_before
            return
        event("applied")
        assert model_migration_plan(conn, models).is_empty
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        if after.child_columns is not None and world.child_columns is not None:
            assert conn.execute("SELECT id, parent_id FROM children ORDER BY id").fetchall() == children_before
        parent_name = after.parent.name
        assert conn.execute(f"SELECT count(*) FROM {parent_name}").fetchone()[0] == len(parent_ids)
    finally:
        conn.close()
