"""sync_models and model_migration_plan against real SQLite files: every kind of change keeps the data."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import sqlite3
import uuid
from typing import Annotated, Literal, Optional

import pytest

from pydsqlite import (
    LWW,
    Collate,
    DestructiveChangeError,
    Field,
    ForeignKey,
    Index,
    MigrationError,
    PrimaryKey,
    RenamedFrom,
    SyncModel,
    Unique,
    model_migration_plan,
    schema_from_sql,
    schema_migration_plan,
    sync_models,
    sync_schema,
)

from .helpers import columns, index_names, table_sql


def rows(conn: sqlite3.Connection, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


def test_create_from_nothing_then_second_plan_is_empty(conn):
    class Author(SyncModel, table="authors"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, Field(max_length=100)]
        email: Annotated[str, Unique()]

    class Book(SyncModel, table="books", indexes=[Index("author_id", "title")]):
        id: Annotated[int, PrimaryKey()]
        author_id: Annotated[int, ForeignKey("authors.id", on_delete="cascade")]
        title: str
        price: Optional[decimal.Decimal] = None

    plan = sync_models(conn, [Author, Book])
    assert [op.kind for op in plan.operations] == ["create_table", "create_table"]
    assert columns(conn, "authors") == {
        "id": ("INTEGER", True, None),
        "name": ("TEXT", True, None),
        "email": ("TEXT", True, None),
    }
    assert index_names(conn, "authors") == {"uq_users_email".replace("users", "authors")}
    assert index_names(conn, "books") == {"ix_books_author_id_title"}
    fks = rows(conn, "SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list('books')")
    assert fks == [("authors", "author_id", "id", "CASCADE")]
    assert model_migration_plan(conn, [Author, Book]).is_empty
    assert sync_models(conn, [Author, Book]).is_empty


def test_every_supported_type_round_trips_to_an_empty_second_plan(conn):
    class Everything(SyncModel, table="everything", strict=True):
        id: Annotated[int, PrimaryKey()]
        flag: bool = False
        count: Annotated[int, Field(ge=0, lt=10)] = 3
        ratio: float = -0.25
        name: Annotated[str, Field(min_length=1, max_length=5)] = "it's"
        raw: bytes = b"\x01"
        key: uuid.UUID = uuid.UUID(int=7)
        when: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        day: dt.date = dt.date(2024, 1, 2)
        at: dt.time = dt.time(1, 2, 3)
        amount: decimal.Decimal = decimal.Decimal("10.10")
        kind: Literal["a", "b"] = "a"
        data: dict[str, int] = Field(default_factory=dict)
        maybe: Optional[list[int]] = None
        lww_text: Annotated[str, LWW()] = ""

    sync_models(conn, [Everything])
    assert "STRICT" in table_sql(conn, "everything")
    assert model_migration_plan(conn, [Everything]).is_empty
    conn.execute("INSERT INTO everything (id, data) VALUES (1, '{}')")
    assert rows(conn, "SELECT flag, count, ratio, name, raw, key, amount, kind FROM everything") == [
        (0, 3, -0.25, "it's", b"\x01", str(uuid.UUID(int=7)), "10.10", "a")
    ]


def test_strict_class_keyword_does_not_make_pydantic_validation_strict():
    class Loose(SyncModel, table="loose", strict=True):
        id: int
        when: dt.date

    assert Loose.model_validate({"id": "1", "when": "2024-01-02"}).when == dt.date(2024, 1, 2)


class V1(SyncModel, table="people"):
    id: Annotated[int, PrimaryKey()]
    name: str
    age: Optional[int] = None


def seed_people(conn: sqlite3.Connection) -> None:
    sync_models(conn, [V1])
    conn.executemany("INSERT INTO people (id, name, age) VALUES (?, ?, ?)", [(1, "ann", 30), (2, "bob", None), (3, "cy", 41)])
    conn.commit()


def test_add_nullable_column_in_place(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[int] = None
        nickname: Optional[str] = None

    plan = sync_models(conn, [V2])
    assert [op.kind for op in plan.operations] == ["add_column"]
    assert rows(conn, "SELECT id, name, age, nickname FROM people ORDER BY id") == [
        (1, "ann", 30, None), (2, "bob", None, None), (3, "cy", 41, None)
    ]
    assert model_migration_plan(conn, [V2]).is_empty


def test_add_not_null_column_with_default_fills_existing_rows(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[int] = None
        country: str = "NZ"
        active: bool = True

    plan = sync_models(conn, [V2])
    assert {op.kind for op in plan.operations} == {"add_column"}
    assert rows(conn, "SELECT id, country, active FROM people ORDER BY id") == [(1, "NZ", 1), (2, "NZ", 1), (3, "NZ", 1)]
    assert model_migration_plan(conn, [V2]).is_empty


def test_add_not_null_column_without_default_to_table_with_rows_is_refused(conn, db_path):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[int] = None
        country: str

    before = rows(conn, "SELECT * FROM people ORDER BY id")
    schema_before = table_sql(conn, "people")
    with pytest.raises(MigrationError, match=r"people\.country: 3 rows: .*no default"):
        sync_models(conn, [V2])
    assert rows(conn, "SELECT * FROM people ORDER BY id") == before
    assert table_sql(conn, "people") == schema_before


def test_add_not_null_column_without_default_to_empty_table_works(conn):
    sync_models(conn, [V1])

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[int] = None
        country: str

    sync_models(conn, [V2])
    assert columns(conn, "people")["country"] == ("TEXT", True, None)
    assert model_migration_plan(conn, [V2]).is_empty


def test_drop_column_needs_permission_and_keeps_the_other_data(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str

    plan = model_migration_plan(conn, [V2])
    assert [(op.kind, op.destructive, op.row_count) for op in plan.operations] == [("drop_column", True, 2)]
    with pytest.raises(DestructiveChangeError, match=r"drop column people\.age") as raised:
        sync_models(conn, [V2])
    assert raised.value.operations[0].row_count == 2
    assert "age" in columns(conn, "people")
    sync_models(conn, [V2], allow_destructive=True)
    assert rows(conn, "SELECT * FROM people ORDER BY id") == [(1, "ann"), (2, "bob"), (3, "cy")]
    assert model_migration_plan(conn, [V2]).is_empty


def test_drop_indexed_column_rebuilds_and_keeps_data(conn):
    class Indexed(SyncModel, table="indexed"):
        id: Annotated[int, PrimaryKey()]
        code: Annotated[str, Index()]
        gone: Annotated[str, Unique()]

    sync_models(conn, [Indexed])
    conn.executemany("INSERT INTO indexed VALUES (?, ?, ?)", [(1, "a", "x"), (2, "b", "y")])

    class Indexed2(SyncModel, table="indexed"):
        id: Annotated[int, PrimaryKey()]
        code: Annotated[str, Index()]

    sync_models(conn, [Indexed2], allow_destructive=True)
    assert rows(conn, "SELECT * FROM indexed ORDER BY id") == [(1, "a"), (2, "b")]
    assert index_names(conn, "indexed") == {"ix_indexed_code"}
    assert model_migration_plan(conn, [Indexed2]).is_empty


def test_rename_column_and_table_keep_data(conn):
    seed_people(conn)

    class V2(SyncModel, table="persons", renamed_from="people"):
        id: Annotated[int, PrimaryKey()]
        full_name: Annotated[str, RenamedFrom("name")]
        years: Optional[int] = Field(None, renamed_from="age")

    plan = sync_models(conn, [V2])
    assert [op.kind for op in plan.operations] == ["rename_table", "rename_column", "rename_column"]
    assert not any(op.destructive for op in plan.operations)
    assert table_sql(conn, "people") is None
    assert rows(conn, "SELECT id, full_name, years FROM persons ORDER BY id") == [(1, "ann", 30), (2, "bob", None), (3, "cy", 41)]
    assert model_migration_plan(conn, [V2]).is_empty


def test_renamed_from_is_ignored_once_the_rename_happened(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        full_name: Annotated[str, RenamedFrom("name", "nm")]
        age: Optional[int] = None

    sync_models(conn, [V2])
    assert sync_models(conn, [V2]).is_empty


@pytest.mark.parametrize("seed", [[(1, 10), (2, -5), (3, None)], []])
def test_type_change_integer_to_text_and_back_keeps_values(conn, seed):
    class AsInt(SyncModel, table="values_t"):
        id: Annotated[int, PrimaryKey()]
        amount: Optional[int] = None

    class AsText(SyncModel, table="values_t"):
        id: Annotated[int, PrimaryKey()]
        amount: Optional[str] = None

    sync_models(conn, [AsInt])
    conn.executemany("INSERT INTO values_t VALUES (?, ?)", seed)
    plan = sync_models(conn, [AsText])
    assert [op.kind for op in plan.operations] == ["rebuild_table"]
    assert rows(conn, "SELECT id, amount, typeof(amount) FROM values_t ORDER BY id") == [
        (i, None if v is None else str(v), "null" if v is None else "text") for i, v in seed
    ]
    sync_models(conn, [AsInt])
    assert rows(conn, "SELECT id, amount, typeof(amount) FROM values_t ORDER BY id") == [
        (i, v, "null" if v is None else "integer") for i, v in seed
    ]
    assert model_migration_plan(conn, [AsInt]).is_empty


def test_lossy_type_change_is_destructive_and_refused_without_permission(conn):
    class AsText(SyncModel, table="lossy"):
        id: Annotated[int, PrimaryKey()]
        v: str

    class AsInt(SyncModel, table="lossy"):
        id: Annotated[int, PrimaryKey()]
        v: int

    sync_models(conn, [AsText])
    conn.executemany("INSERT INTO lossy VALUES (?, ?)", [(1, "12"), (2, "abc"), (3, "3.7")])
    conn.commit()
    plan = model_migration_plan(conn, [AsText, AsInt][1:])
    assert plan.operations[0].destructive and plan.operations[0].row_count == 2
    with pytest.raises(DestructiveChangeError, match=r"lossy\.v: 2 rows: values would change.*TEXT to INTEGER"):
        sync_models(conn, [AsInt])
    assert rows(conn, "SELECT v FROM lossy ORDER BY id") == [("12",), ("abc",), ("3.7",)]
    sync_models(conn, [AsInt], allow_destructive=True)
    assert rows(conn, "SELECT v FROM lossy ORDER BY id") == [(12,), (0,), (3,)]


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        (["0012", "1e3", "12.5k"], ("'1e3' becomes 1", "'12.5k' becomes 12")),
        (["0012", "007"], ("'0012' becomes 12", "'007' becomes 7")),
        (["3.75", "2.0"], ("'3.75' becomes 3",)),
    ],
    ids=["a value whose number changes comes first", "only leading zeros lost", "a fraction cut off"],
)
def test_a_lossy_conversion_shows_a_value_and_what_it_becomes_preferring_one_whose_number_changes(conn, values, shown):
    """'0012' only loses its spelling (12); '1e3' becomes 1 and '12.5k' 12: the sample shows one of
    those first, with the value it would become."""

    class AsText(SyncModel, table="amounts"):
        id: Annotated[int, PrimaryKey()]
        v: Optional[str] = None

    class AsInt(SyncModel, table="amounts"):
        id: Annotated[int, PrimaryKey()]
        v: Optional[int] = None

    sync_models(conn, [AsText])
    conn.executemany("INSERT INTO amounts VALUES (?, ?)", list(enumerate(values)))
    conn.commit()
    (finding,) = model_migration_plan(conn, [AsInt]).operations[0].findings
    assert finding.startswith("amounts.v: ")
    assert any(finding.endswith(f"(e.g. {sample})") for sample in shown), finding


def test_real_to_integer_keeps_whole_numbers_without_ceremony(conn):
    class AsReal(SyncModel, table="reals"):
        id: Annotated[int, PrimaryKey()]
        v: float

    class AsInt(SyncModel, table="reals"):
        id: Annotated[int, PrimaryKey()]
        v: int

    sync_models(conn, [AsReal])
    conn.executemany("INSERT INTO reals VALUES (?, ?)", [(1, 2.0), (2, -7.0)])
    plan = sync_models(conn, [AsInt])
    assert not plan.destructive_operations
    assert rows(conn, "SELECT v, typeof(v) FROM reals ORDER BY id") == [(2, "integer"), (-7, "integer")]


def test_nullable_to_not_null_fills_nulls_from_the_default(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: int = 18

    plan = sync_models(conn, [V2])
    assert [op.kind for op in plan.operations] == ["rebuild_table"]
    assert rows(conn, "SELECT id, name, age FROM people ORDER BY id") == [(1, "ann", 30), (2, "bob", 18), (3, "cy", 41)]
    assert columns(conn, "people")["age"] == ("INTEGER", True, "18")
    assert model_migration_plan(conn, [V2]).is_empty


def test_nullable_to_not_null_without_default_over_nulls_is_refused(conn, db_path):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: int

    plan = model_migration_plan(conn, [V2])
    assert plan.problems and "people.age: 1 row" in plan.problems[0]
    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match=r"people\.age: 1 row: rows hold NULL .*\(e\.g\. the row with id 2\)"):
        sync_models(conn, [V2])
    assert db_path.read_bytes() == before
    conn.execute("UPDATE people SET age = 0 WHERE age IS NULL")
    conn.commit()
    sync_models(conn, [V2])
    assert columns(conn, "people")["age"] == ("INTEGER", True, None)


def test_add_and_drop_index_and_unique_index(conn):
    seed_people(conn)

    class Indexed(SyncModel, table="people", indexes=[Index("name", "age")]):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, Unique()]
        age: Annotated[Optional[int], Index()] = None

    plan = sync_models(conn, [Indexed])
    assert {op.kind for op in plan.operations} == {"create_index"}
    assert index_names(conn, "people") == {"uq_people_name", "ix_people_age", "ix_people_name_age"}
    unique = rows(conn, "SELECT \"unique\" FROM pragma_index_list('people') WHERE name = 'uq_people_name'")
    assert unique == [(1,)]
    assert model_migration_plan(conn, [Indexed]).is_empty
    plan = sync_models(conn, [V1])
    assert {op.kind for op in plan.operations} == {"drop_index"}
    assert index_names(conn, "people") == set()
    assert rows(conn, "SELECT count(*) FROM people") == [(3,)]


HOLDER_FATES = ["table dropped", "index removed", "rebuilt without it", "renamed without it"]
TAKER_SHAPES = ["new table", "in place", "rebuilt"]
PATHS = ["offline", "online", "with a data step"]


def _sync_by(path: str, conn: sqlite3.Connection, models: list[type[SyncModel]], **options) -> object:
    if path == "online":
        conn.execute("PRAGMA journal_mode = WAL")
        return sync_models(conn, models, online=True, **options)
    if path == "with a data step":
        return sync_models(conn, models, data_steps={"count": lambda db: db.conn.execute("SELECT count(*) FROM sqlite_master")}, **options)
    return sync_models(conn, models, **options)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("taker", TAKER_SHAPES)
@pytest.mark.parametrize("fate", HOLDER_FATES)
def test_an_index_name_moves_to_another_table_in_one_migration(conn, fate, taker, path):
    """Index names are one namespace in SQLite: a model's index taking the name another table's index
    gives up in the same migration (its table dropped, renamed or rebuilt, or the index removed) frees
    the name first, whatever else either table does; rows and the other indexes stay."""

    class Old(SyncModel, table="old_things", indexes=[Index("v", name="the_ix")]):
        id: Annotated[int, PrimaryKey()]
        v: str = ""

    class Taker(SyncModel, table="takers"):
        id: Annotated[int, PrimaryKey()]
        w: int = 0

    sync_models(conn, [Old, Taker] if taker != "new table" else [Old])
    conn.executemany("INSERT INTO old_things (id, v) VALUES (?, ?)", [(n, f"v{n}") for n in range(50)])
    if taker != "new table":
        conn.executemany("INSERT INTO takers (id, w) VALUES (?, ?)", [(n, n * 2) for n in range(40)])
    conn.commit()

    table_name = "renamed_things" if fate == "renamed without it" else "old_things"

    class OldAfter(SyncModel, table=table_name, renamed_from="old_things"):
        id: Annotated[int, PrimaryKey()]
        v: str = "changed" if fate in ("rebuilt without it", "renamed without it") else ""

    class TakerAfter(SyncModel, table="takers", indexes=[Index("w", name="the_ix")]):
        id: Annotated[int, PrimaryKey()]
        w: int = 0

    if taker == "rebuilt":
        class TakerAfter(SyncModel, table="takers", indexes=[Index("w", name="the_ix")]):  # type: ignore[no-redef]
            id: Annotated[int, PrimaryKey()]
            w: str = "0"

    models = [TakerAfter] if fate == "table dropped" else [OldAfter, TakerAfter]
    preview = model_migration_plan(conn, models)
    renamed = "renamed to renamed_things; " if fate == "renamed without it" else ""
    to = "the new table takers" if taker == "new table" else "takers"
    assert preview.operations[0].description == f"drop index the_ix on old_things ({renamed}its name moves to {to})"
    _sync_by(path, conn, models, allow_destructive=True)
    assert rows(conn, "SELECT name, tbl_name FROM sqlite_master WHERE name = 'the_ix'") == [("the_ix", "takers")]
    assert rows(conn, "SELECT name FROM pragma_index_info('the_ix')") == [("w",)]
    if fate != "table dropped":
        assert rows(conn, f"SELECT count(*), min(v), max(v) FROM {table_name}") == [(50, "v0", "v9")]
    if taker != "new table":
        assert rows(conn, "SELECT count(*), CAST(sum(w) AS INTEGER) FROM takers") == [(40, sum(n * 2 for n in range(40)))]
    assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
    assert model_migration_plan(conn, models).is_empty


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rebuilt", [False, True])
def test_two_tables_swap_their_index_names(conn, rebuilt, path):
    class X(SyncModel, table="xs", indexes=[Index("v", name="ix_one")]):
        id: Annotated[int, PrimaryKey()]
        v: str = ""

    class Y(SyncModel, table="ys", indexes=[Index("w", unique=True, name="ix_two")]):
        id: Annotated[int, PrimaryKey()]
        w: str = ""

    sync_models(conn, [X, Y])
    conn.executemany("INSERT INTO xs (id, v) VALUES (?, ?)", [(n, f"v{n % 3}") for n in range(30)])
    conn.executemany("INSERT INTO ys (id, w) VALUES (?, ?)", [(n, f"w{n}") for n in range(30)])
    conn.commit()

    class XAfter(SyncModel, table="xs", indexes=[Index("v", name="ix_two")]):
        id: Annotated[int, PrimaryKey()]
        v: str = "d" if rebuilt else ""

    class YAfter(SyncModel, table="ys", indexes=[Index("w", unique=True, name="ix_one")]):
        id: Annotated[int, PrimaryKey()]
        w: str = "d" if rebuilt else ""

    _sync_by(path, conn, [XAfter, YAfter])
    assert rows(conn, "SELECT name, tbl_name FROM sqlite_master WHERE name IN ('ix_one', 'ix_two') ORDER BY name") == [
        ("ix_one", "ys"), ("ix_two", "xs"),
    ]
    assert rows(conn, "SELECT \"unique\" FROM pragma_index_list('ys') WHERE name = 'ix_one'") == [(1,)]
    assert rows(conn, "SELECT count(*) FROM xs") == [(30,)] and rows(conn, "SELECT count(DISTINCT w) FROM ys") == [(30,)]
    assert model_migration_plan(conn, [XAfter, YAfter]).is_empty


def test_a_rebuild_builds_the_new_shapes_indexes_on_the_filled_copy_before_the_old_table_goes(conn):
    class Before(SyncModel, table="items", indexes=[Index("label")]):
        id: Annotated[int, PrimaryKey()]
        label: str
        amount: int
        code: Optional[str] = None

    class After(SyncModel, table="items", indexes=[Index("label"), Index("amount", "label"), Index("code", unique=True, name="by_code")]):
        id: Annotated[int, PrimaryKey()]
        label: str
        amount: str
        code: Annotated[Optional[str], Index()] = None

    sync_models(conn, [Before])
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", [(i, f"l{i % 7}", i * 3, f"c{i}" if i % 2 else None) for i in range(300)])
    conn.execute("CREATE INDEX hand_made ON items (amount DESC)")
    conn.commit()
    before = rows(conn, "SELECT id, label, CAST(amount AS TEXT), code FROM items ORDER BY id")

    plan = model_migration_plan(conn, [After])
    (rebuild,) = [operation for operation in plan.operations if operation.kind == "rebuild_table"]
    drop = next(position for position, sql in enumerate(rebuild.statements) if sql.startswith("DROP TABLE"))
    # every declared index is built on the filled copy (new pages, not the old table's freed ones, which a
    # rollback journal must save first); the old table's index of a name the new shape keeps goes first
    on_copy = [sql for sql in rebuild.statements[:drop] if sql.startswith("CREATE") and "INDEX" in sql.split()[:3]]
    assert sorted(sql.replace("`", "").split(" ON ")[0].split()[-1] for sql in on_copy) == [
        "by_code", "ix_items_amount_label", "ix_items_code", "ix_items_label",
    ]
    assert all(" ON `_pydsqlite_new_items` " in sql for sql in on_copy)
    assert "DROP INDEX `ix_items_label`" in rebuild.statements[:drop]
    assert [sql for sql in rebuild.statements[drop:] if "INDEX" in sql.split()[:3]] == ["CREATE INDEX hand_made ON items (amount DESC)"]

    sync_models(conn, [After])
    assert index_names(conn, "items") == {"ix_items_label", "ix_items_amount_label", "ix_items_code", "by_code", "hand_made"}
    assert all("_pydsqlite" not in sql for (sql,) in rows(conn, "SELECT sql FROM sqlite_master WHERE tbl_name = 'items' AND sql IS NOT NULL"))
    assert rows(conn, "SELECT id, label, amount, code FROM items ORDER BY id") == before
    assert rows(conn, "SELECT count(*) FROM items INDEXED BY ix_items_amount_label WHERE amount = '9'") == [(1,)]
    assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
    assert model_migration_plan(conn, [After]).is_empty
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO items VALUES (1000, 'x', '1', 'c1')")


def test_unique_index_over_duplicates_is_refused_with_count_and_sample(conn):
    seed_people(conn)
    conn.execute("INSERT INTO people VALUES (4, 'ann', 1)")
    conn.commit()

    class UniqueName(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, Unique()]
        age: Optional[int] = None

    with pytest.raises(MigrationError, match=r"people\.name: 2 rows: .*unique.*'ann'"):
        sync_models(conn, [UniqueName])
    assert index_names(conn, "people") == set()


# Uniqueness checked against the rows as the rebuilt table will hold them, before anything
# runs: (current SQL, rows, desired SQL, the refusal, the row whose removal lets it apply).
UNIQUENESS_IN_A_REBUILD = {
    "table UNIQUE constraint over two columns; NULLs never collide": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)",
        "INSERT INTO t VALUES (1, 'x', 'y'), (2, 'x', 'y'), (3, 'x', NULL), (4, 'x', NULL)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT, UNIQUE (a, b))",
        "t.a, b: 2 rows: rows share a value that a UNIQUE constraint requires to be unique (e.g. ('x', 'y'))",
        "DELETE FROM t WHERE id = 2",
    ),
    "UNIQUE column under a new NOCASE collation": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)",
        "INSERT INTO t VALUES (1, 'x'), (2, 'X'), (3, NULL), (4, NULL)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT COLLATE NOCASE UNIQUE)",
        "t.a: 2 rows: rows share a value that a UNIQUE constraint requires to be unique (e.g. 'x')",
        "DELETE FROM t WHERE id = 2",
    ),
    "partial unique index created by the rebuild; rows outside its WHERE do not count": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, live INTEGER)",
        "INSERT INTO t VALUES (1, 'x', 1), (2, 'x', 1), (3, 'y', 0), (4, 'y', 0)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT '', live INTEGER);"
        "CREATE UNIQUE INDEX t_a ON t (a) WHERE live = 1",
        "t.a: 2 rows: rows share a value that unique index t_a requires to be unique (e.g. 'x')",
        "UPDATE t SET live = 0 WHERE id = 2",
    ),
    "unique index over a generated column, in a rebuild": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, w REAL, h REAL, area REAL GENERATED ALWAYS AS (w * h) VIRTUAL)",
        "INSERT INTO t (id, w, h) VALUES (1, 2, 3), (2, 3, 2), (3, 1, 1)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, w REAL CHECK (w > 0), h REAL, area REAL GENERATED ALWAYS AS (w * h) VIRTUAL);"
        "CREATE UNIQUE INDEX t_area ON t (area)",
        "t.area: 2 rows: rows share a value that unique index t_area requires to be unique (e.g. 6.0)",
        "DELETE FROM t WHERE id = 2",
    ),
}


@pytest.mark.parametrize("case", UNIQUENESS_IN_A_REBUILD)
def test_uniqueness_a_rebuild_introduces_is_checked_before_it_runs(conn, db_path, case):
    current, seed, desired_sql, problem, fix = UNIQUENESS_IN_A_REBUILD[case]
    conn.executescript(current + ";" + seed)
    desired = schema_from_sql(desired_sql)
    plan = schema_migration_plan(conn, desired)
    assert plan.rebuilt_tables == ("t",) and plan.problems == (problem,)
    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match=re.escape(problem)):
        sync_schema(conn, desired)
    assert db_path.read_bytes() == before
    conn.executescript(fix)
    sync_schema(conn, desired)
    assert schema_migration_plan(conn, desired).is_empty


def test_a_rebuild_that_drops_a_column_holding_values_is_destructive(conn, db_path):
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, legacy TEXT); INSERT INTO t VALUES (1, 'x', 'old'), (2, NULL, NULL)")
    desired = schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL DEFAULT '')")  # NOT NULL: a rebuild
    plan = schema_migration_plan(conn, desired)
    (operation,) = plan.destructive_operations
    assert operation.kind == "rebuild_table" and operation.row_count == 1
    assert operation.findings == ("t.legacy: 1 row: values would be deleted with the column",)
    before = db_path.read_bytes()
    with pytest.raises(DestructiveChangeError, match=r"t\.legacy: 1 row: values would be deleted"):
        sync_schema(conn, desired)
    assert db_path.read_bytes() == before
    sync_schema(conn, desired, allow_destructive=True)
    assert rows(conn, "SELECT * FROM t ORDER BY id") == [(1, "x"), (2, "")]


def test_long_index_names_sync_and_stay_stable(conn):
    long = "a_column_with_a_really_quite_remarkably_long_name_for_testing"

    Model = type(SyncModel)(
        "LongNames", (SyncModel,),
        {"__annotations__": {"id": int, long: str, long + "_2": str}},
        table="long_table_name_for_indexes", indexes=[Index(long, long + "_2", unique=True)],
    )
    sync_models(conn, [Model])
    (name,) = index_names(conn, "long_table_name_for_indexes")
    assert len(name) <= 64
    assert model_migration_plan(conn, [Model]).is_empty


def test_change_primary_key_single_to_composite_keeps_rows(conn):
    class Single(SyncModel, table="memberships"):
        id: Annotated[int, PrimaryKey()]
        org: str
        user: str

    class Composite(SyncModel, table="memberships", primary_key=("org", "user")):
        org: str
        user: str
        id: int

    sync_models(conn, [Single])
    conn.executemany("INSERT INTO memberships VALUES (?, ?, ?)", [(1, "acme", "ann"), (2, "acme", "bob"), (3, "init", "ann")])
    plan = sync_models(conn, [Composite])
    assert [op.kind for op in plan.operations] == ["rebuild_table"]
    assert rows(conn, "SELECT name FROM pragma_table_info('memberships') WHERE pk > 0 ORDER BY pk") == [("org",), ("user",)]
    assert rows(conn, "SELECT org, user, id FROM memberships ORDER BY id") == [("acme", "ann", 1), ("acme", "bob", 2), ("init", "ann", 3)]
    assert model_migration_plan(conn, [Composite]).is_empty


def test_new_primary_key_over_duplicates_is_refused(conn):
    class Single(SyncModel, table="memberships"):
        id: Annotated[int, PrimaryKey()]
        org: str

    class ByOrg(SyncModel, table="memberships"):
        org: Annotated[str, PrimaryKey()]
        id: int

    sync_models(conn, [Single])
    conn.executemany("INSERT INTO memberships VALUES (?, ?)", [(1, "acme"), (2, "acme")])
    conn.commit()
    with pytest.raises(MigrationError, match=r"memberships\.org: 2 rows: .*primary key.*'acme'"):
        sync_models(conn, [ByOrg])
    assert rows(conn, "SELECT count(*) FROM memberships") == [(2,)]


def test_lww_on_adds_companion_keeps_data_and_off_removes_it(conn):
    seed_people(conn)

    class WithLWW(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, LWW()]
        age: Optional[int] = None

    plan = sync_models(conn, [WithLWW])
    assert sorted(op.kind for op in plan.operations) == ["add_column", "add_column", "create_index", "create_trigger", "enable_lww"]
    baseline = "000000000000000:000000000:" + "0" * 36
    assert columns(conn, "people")["name__hlc"] == ("TEXT", False, f"'{baseline}'")
    assert rows(conn, "SELECT id, name, name__hlc, _pydsqlite_version FROM people ORDER BY id") == [
        (1, "ann", baseline, baseline), (2, "bob", baseline, baseline), (3, "cy", baseline, baseline)
    ]
    assert model_migration_plan(conn, [WithLWW]).is_empty
    conn.execute("UPDATE people SET name__hlc = 'stamp'")
    plan = sync_models(conn, [V1])
    assert sorted(op.kind for op in plan.operations) == ["disable_lww", "drop_column", "drop_column", "drop_index", "drop_trigger"]
    assert not plan.destructive_operations
    assert set(columns(conn, "people")) == {"id", "name", "age"}
    assert rows(conn, "SELECT id, name FROM people ORDER BY id") == [(1, "ann"), (2, "bob"), (3, "cy")]


def test_renaming_an_lww_column_keeps_its_timestamps(conn):
    class Before(SyncModel, table="notes"):
        id: Annotated[int, PrimaryKey()]
        body: Annotated[str, LWW()]

    class After(SyncModel, table="notes"):
        id: Annotated[int, PrimaryKey()]
        text: Annotated[str, LWW(), RenamedFrom("body")]

    sync_models(conn, [Before])
    conn.execute("INSERT INTO notes (id, body, body__hlc) VALUES (1, 'hello', '000000000000001:000000000:node')")
    plan = sync_models(conn, [After])
    assert not plan.destructive_operations
    assert rows(conn, "SELECT text, text__hlc FROM notes") == [("hello", "000000000000001:000000000:node")]
    assert model_migration_plan(conn, [After]).is_empty


def test_lww_on_together_with_a_rebuild(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, LWW()]
        age: int = 0

    sync_models(conn, [V2])
    assert "name__hlc" in columns(conn, "people")
    assert rows(conn, "SELECT id, name, age FROM people ORDER BY id") == [(1, "ann", 30), (2, "bob", 0), (3, "cy", 41)]
    assert model_migration_plan(conn, [V2]).is_empty


def test_preview_leaves_the_file_byte_identical(conn, db_path):
    seed_people(conn)

    class V2(SyncModel, table="people", renamed_from="x"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, Unique()]
        age: int = 1
        extra: str = "e"

    class Other(SyncModel, table="other"):
        id: int

    version = rows(conn, "PRAGMA schema_version")
    before = db_path.read_bytes()
    plan = model_migration_plan(conn, [V2, Other])
    assert not plan.is_empty and plan.sql
    assert db_path.read_bytes() == before
    assert rows(conn, "PRAGMA schema_version") == version
    assert not conn.in_transaction


def test_preview_accepts_a_path_and_describes_each_step(db_path):
    conn = sqlite3.connect(db_path)
    seed_people(conn)
    conn.close()

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: int = 0

    plan = model_migration_plan(db_path, [V2])
    text = str(plan)
    assert "rebuild table people" in text and "age" in text and "NOT NULL" in text
    assert plan.sql.count("CREATE TABLE") == 1 and "INSERT INTO" in plan.sql
    applied = sync_models(str(db_path), [V2])
    assert applied.operations == plan.operations
    assert "Nothing to do" in str(model_migration_plan(db_path, [V2]))


def test_unmanaged_tables_are_never_touched_and_managed_drops_need_permission(conn):
    conn.execute("CREATE TABLE hand_made (x TEXT)")
    conn.execute("INSERT INTO hand_made VALUES ('keep me')")
    seed_people(conn)

    class Other(SyncModel, table="other"):
        id: int

    plan = model_migration_plan(conn, [Other])
    assert [(op.kind, op.table, op.destructive, op.row_count) for op in plan.operations] == [
        ("create_table", "other", False, None),
        ("drop_table", "people", True, 3),
    ]
    with pytest.raises(DestructiveChangeError, match="drop table people"):
        sync_models(conn, [Other])
    assert table_sql(conn, "other") is None
    sync_models(conn, [Other], allow_destructive=True)
    assert table_sql(conn, "people") is None
    assert rows(conn, "SELECT x FROM hand_made") == [("keep me",)]


def test_an_existing_table_matching_a_model_is_adopted(conn):
    conn.execute('CREATE TABLE people (id INTEGER NOT NULL, name TEXT NOT NULL, age INTEGER, PRIMARY KEY (id))')
    conn.execute("INSERT INTO people VALUES (1, 'ann', 3)")
    assert model_migration_plan(conn, [V1]).is_empty
    sync_models(conn, [V1])

    class Other(SyncModel, table="other"):
        id: int

    with pytest.raises(DestructiveChangeError):
        sync_models(conn, [Other])


def test_hand_made_index_and_trigger_survive_a_rebuild(conn):
    seed_people(conn)
    conn.execute("CREATE INDEX by_hand ON people (name)")
    conn.execute("CREATE TABLE audit (msg TEXT)")
    conn.execute("CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN INSERT INTO audit VALUES (new.name); END")
    conn.execute("CREATE VIEW adults AS SELECT name FROM people WHERE age >= 18")

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: int = 0

    sync_models(conn, [V2])
    assert "by_hand" in index_names(conn, "people")
    conn.execute("INSERT INTO people (id, name) VALUES (9, 'zed')")
    assert rows(conn, "SELECT msg FROM audit") == [("zed",)]
    assert rows(conn, "SELECT name FROM adults ORDER BY name") == [("ann",), ("cy",)]
    assert model_migration_plan(conn, [V2]).is_empty


def test_rebuilding_a_parent_with_cascading_children_keeps_every_child(conn):
    class Parent(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class Child(SyncModel, table="children"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id", on_delete="cascade")] = None

    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Parent, Child])
    conn.executemany("INSERT INTO parents VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.executemany("INSERT INTO children VALUES (?, ?)", [(i, 1 + i % 2) for i in range(50)])
    conn.commit()

    class ParentRebuilt(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        name: Optional[str] = None

    plan = sync_models(conn, [ParentRebuilt, Child])
    assert plan.rebuilt_tables == ("parents",)
    assert rows(conn, "SELECT count(*) FROM children") == [(50,)]
    assert rows(conn, "PRAGMA foreign_keys") == [(1,)]
    assert rows(conn, "PRAGMA foreign_key_check") == []


@pytest.mark.parametrize("action", ["cascade", "set null", "no action", "restrict"])
@pytest.mark.parametrize("declared", ["before and after", "added by the change"])
def test_inside_an_open_transaction_with_foreign_keys_on_a_self_referencing_table_is_not_rebuilt(tmp_path, action, declared):
    """The rebuilt copy's rows reference the old table by name until the rename: dropping the old
    table would fire ON DELETE on the copy (CASCADE emptied it, SET NULL cut every link)."""
    conn = sqlite3.connect(tmp_path / "tree.db")

    class Node(SyncModel, table="nodes"):
        id: Annotated[int, PrimaryKey()]
        parent: Annotated[Optional[int], ForeignKey("nodes", on_delete=action)] = None
        name: str

    class Unlinked(SyncModel, table="nodes"):
        id: Annotated[int, PrimaryKey()]
        parent: Optional[int] = None
        name: str

    class NodeV2(SyncModel, table="nodes"):  # name becomes optional: a rebuild
        id: Annotated[int, PrimaryKey()]
        parent: Annotated[Optional[int], ForeignKey("nodes", on_delete=action)] = None
        name: Optional[str] = None

    sync_models(conn, [Node if declared == "before and after" else Unlinked])
    conn.executemany("INSERT INTO nodes VALUES (?, ?, ?)", [(1, None, "root"), (2, 1, "child"), (3, 2, "grandchild")])
    conn.commit()
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE app_log (line TEXT)")
    conn.execute("INSERT INTO app_log VALUES ('pending')")  # the application's open transaction
    assert conn.in_transaction
    with pytest.raises(MigrationError, match=r"table 'nodes' inside an open transaction while PRAGMA foreign_keys is ON: nodes itself"):
        sync_models(conn, [NodeV2])
    assert conn.in_transaction and rows(conn, "SELECT * FROM app_log") == [("pending",)]
    conn.commit()
    assert rows(conn, "SELECT * FROM nodes ORDER BY id") == [(1, None, "root"), (2, 1, "child"), (3, 2, "grandchild")]
    sync_models(conn, [NodeV2])  # outside a transaction foreign keys are switched off for the rebuild
    assert rows(conn, "SELECT * FROM nodes ORDER BY id") == [(1, None, "root"), (2, 1, "child"), (3, 2, "grandchild")]


def test_inside_an_open_transaction_with_foreign_keys_on_only_rebuilds_of_referenced_tables_are_refused(conn):
    class Parent(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class Child(SyncModel, table="children"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id", on_delete="cascade")] = None
        note: str = ""

    sync_models(conn, [Parent, Child])
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO parents VALUES (1, 'a')")
    conn.execute("INSERT INTO children VALUES (1, 1, 'x')")
    assert conn.in_transaction

    class ParentV2(SyncModel, table="parents"):
        id: Annotated[int, PrimaryKey()]
        name: Optional[str] = None

    preview = model_migration_plan(conn, [ParentV2, Child])  # the preview on this connection says so too
    assert len(preview.problems) == 1 and "inside an open transaction while PRAGMA foreign_keys is ON: children references it" in preview.problems[0]
    with pytest.raises(MigrationError, match="table 'parents' inside an open transaction while PRAGMA foreign_keys is ON: children references it"):
        sync_models(conn, [ParentV2, Child])
    assert conn.in_transaction and rows(conn, "SELECT count(*) FROM children") == [(1,)]

    class ChildV2(SyncModel, table="children"):  # nothing references children: its rebuild cascades nowhere
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("parents.id", on_delete="cascade")] = None
        note: Optional[str] = None

    assert sync_models(conn, [Parent, ChildV2]).rebuilt_tables == ("children",)
    assert conn.in_transaction  # the caller's transaction: the caller commits
    conn.commit()
    assert rows(conn, "SELECT * FROM children") == [(1, 1, "x")] and rows(conn, "SELECT * FROM parents") == [(1, "a")]


@pytest.mark.parametrize("without_rowid", [False, True])
def test_inside_an_open_transaction_with_foreign_keys_on_a_child_holding_orphans_is_refused_naming_one(tmp_path, without_rowid):
    """Rows written while foreign keys were off that reference a missing parent: the rebuild's copy
    would re-check them and fail with a bare SQLite error, so the refusal names them first."""
    conn = sqlite3.connect(tmp_path / "kids.db")

    class Par(SyncModel, table="par"):
        code: Annotated[str, PrimaryKey()]

    class Kid(SyncModel, table="kid", without_rowid=without_rowid):
        id: Annotated[int, PrimaryKey()]
        code: Annotated[str, ForeignKey(Par)]
        name: str

    class KidV2(SyncModel, table="kid", without_rowid=without_rowid):
        id: Annotated[int, PrimaryKey()]
        code: Annotated[str, ForeignKey(Par)]
        name: Optional[str] = None  # a rebuild

    sync_models(conn, [Par, Kid])
    conn.execute("INSERT INTO par VALUES ('a')")
    conn.executemany("INSERT INTO kid VALUES (?, ?, ?)", [(1, "a", "ok"), (2, "b", "orphan"), (3, "c", "orphan")])
    conn.commit()
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE app_log (line TEXT)")
    conn.execute("INSERT INTO app_log VALUES ('pending')")  # the application's open transaction
    before = list(conn.iterdump())
    assert "2 rows reference a missing parent" in " ".join(model_migration_plan(conn, [Par, KidV2]).problems)
    with pytest.raises(MigrationError) as raised:
        sync_models(conn, [Par, KidV2])
    message = str(raised.value)
    assert "cannot rebuild table 'kid' inside an open transaction while PRAGMA foreign_keys is ON: 2 rows reference a missing parent" in message
    assert "no row of 'par' holds" in message and "nothing was changed" in message
    assert "the row with id 2, where code = 'b'" in message
    assert conn.in_transaction and list(conn.iterdump()) == before
    conn.execute("DELETE FROM kid WHERE id > 1")
    assert sync_models(conn, [Par, KidV2]).rebuilt_tables == ("kid",)
    conn.commit()
    assert rows(conn, "SELECT * FROM kid") == [(1, "a", "ok")] and rows(conn, "SELECT * FROM app_log") == [("pending",)]


def test_inside_an_open_transaction_in_place_changes_join_it(conn):
    seed_people(conn)
    conn.execute("INSERT INTO people VALUES (7, 'in tx', 1)")

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[int] = None
        note: Optional[str] = None

    sync_models(conn, [V2])
    assert conn.in_transaction
    conn.rollback()
    assert "note" not in columns(conn, "people")
    assert rows(conn, "SELECT count(*) FROM people") == [(3,)]


def test_failure_mid_plan_leaves_schema_and_data_unchanged(conn, db_path):
    seed_people(conn)
    conn.execute("CREATE VIEW broken_later AS SELECT age FROM people")

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        nickname: str = "x"

    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match=r"drop column people\.age.* would fail: error in view broken_later"):
        sync_models(conn, [V2], allow_destructive=True)
    assert db_path.read_bytes() == before
    assert "nickname" not in columns(conn, "people")
    assert not conn.in_transaction


def test_not_a_database_raises_our_error(tmp_path):
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(MigrationError, match="not a database"):
        sync_models(path, [V1])
    with pytest.raises(MigrationError, match="not a database"):
        model_migration_plan(path, [V1])


def test_models_none_means_every_table_model_defined_so_far(conn, monkeypatch):
    import pydsqlite.schema.model

    monkeypatch.setattr(pydsqlite.schema.model, "_registry", {})

    class Base(SyncModel):
        id: Annotated[int, PrimaryKey()]

    class First(Base, table="first_auto"):
        pass

    class Second(Base, table=True):
        name: str = ""

    plan = sync_models(conn)
    assert [op.table for op in plan.operations] == ["first_auto", "second"]
    assert model_migration_plan(conn).is_empty


class Org(SyncModel, table="orgs"):
    id: Annotated[int, PrimaryKey()]
    name: str


def seed_orgs_and_members(conn: sqlite3.Connection, member_model: type[SyncModel]) -> None:
    sync_models(conn, [Org, member_model])
    conn.executemany("INSERT INTO orgs VALUES (?, ?)", [(1, "acme"), (2, "initech")])
    conn.executemany("INSERT INTO members VALUES (?, ?)", [(10, 1), (11, 2), (12, 1)])
    conn.commit()


def test_adding_changing_and_removing_a_foreign_key_rebuilds_and_keeps_rows(conn):
    class Plain(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: int

    class Linked(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: Annotated[int, ForeignKey("orgs.id")]

    class Cascading(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: Annotated[int, ForeignKey("orgs.id", on_delete="cascade")]

    seed_orgs_and_members(conn, Plain)
    for model, expected in [(Linked, [("orgs", "NO ACTION")]), (Cascading, [("orgs", "CASCADE")]), (Plain, [])]:
        plan = sync_models(conn, [Org, model])
        assert plan.rebuilt_tables == ("members",)
        assert rows(conn, "SELECT \"table\", on_delete FROM pragma_foreign_key_list('members')") == expected
        assert rows(conn, "SELECT * FROM members ORDER BY id") == [(10, 1), (11, 2), (12, 1)]
        assert model_migration_plan(conn, [Org, model]).is_empty


@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_new_foreign_key_over_orphan_rows_is_refused_whatever_the_pragma_says(conn, db_path, enforced):
    """A constraint the rows violate from the moment it exists is a broken schema: with foreign keys
    off (Python's default, and the CLI's) too, since foreign_key_check fails and so would every
    write the day they are on."""

    class Plain(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: int

    class Linked(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: Annotated[int, ForeignKey("orgs.id")]

    seed_orgs_and_members(conn, Plain)
    conn.execute("INSERT INTO members VALUES (13, 99)")
    conn.commit()
    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    before = db_path.read_bytes()
    plan = model_migration_plan(conn, [Org, Linked])
    assert plan.problems == ("members.org_id: 1 row: rows reference no row of orgs through the new foreign key to orgs(id) (e.g. 99)",)
    with pytest.raises(MigrationError, match=r"members\.org_id: 1 row: rows reference no row of orgs"):
        sync_models(conn, [Org, Linked])
    assert rows(conn, "SELECT count(*) FROM pragma_foreign_key_list('members')") == [(0,)]
    assert rows(conn, "PRAGMA foreign_keys") == [(int(enforced),)]
    assert db_path.read_bytes() == before

    def orphans_to_null(db) -> None:
        db.conn.execute("DELETE FROM members WHERE org_id NOT IN (SELECT id FROM orgs)")

    sync_models(conn, [Org, Linked], data_steps={"001 orphans": orphans_to_null})
    assert rows(conn, "PRAGMA foreign_key_check") == []


def test_a_new_foreign_key_finds_orphans_by_the_childs_own_columns(conn):
    """The orphans check reads the parent table in a subquery: a child column named like a parent
    column (always so when a table references itself) must still mean the child's value."""

    class Node(SyncModel, table="nodes"):
        id: Annotated[int, PrimaryKey()]
        parent: Optional[int] = None

    class Tree(SyncModel, table="nodes"):
        id: Annotated[int, PrimaryKey()]
        parent: Annotated[Optional[int], ForeignKey("nodes.id")] = None

    class Code(SyncModel, table="codes"):
        code: Annotated[str, PrimaryKey()]

    class Use(SyncModel, table="uses"):
        id: Annotated[int, PrimaryKey()]
        code: str

    class LinkedUse(SyncModel, table="uses"):
        id: Annotated[int, PrimaryKey()]
        code: Annotated[str, ForeignKey("codes.code")]

    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Node, Code, Use])
    conn.executemany("INSERT INTO nodes VALUES (?, ?)", [(1, None), (2, 1), (3, 2)])
    conn.execute("INSERT INTO codes VALUES ('a')")
    conn.executemany("INSERT INTO uses VALUES (?, ?)", [(1, "a"), (2, "zz")])
    conn.commit()
    assert not model_migration_plan(conn, [Tree, Code, Use]).problems  # every parent exists
    assert model_migration_plan(conn, [Node, Code, LinkedUse]).problems == (
        "uses.code: 1 row: rows reference no row of codes through the new foreign key to codes(code) (e.g. 'zz')",
    )
    conn.execute("INSERT INTO nodes VALUES (4, 99)")
    conn.commit()
    assert model_migration_plan(conn, [Tree, Code, Use]).problems == (
        "nodes.parent: 1 row: rows reference no row of nodes through the new foreign key to nodes(id) (e.g. 99)",
    )


class LooseMember(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org_id: Optional[int] = None


class LinkedMember(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org_id: Annotated[Optional[int], ForeignKey("orgs.id")] = None


class Company(SyncModel, table="companies", renamed_from="orgs"):
    id: Annotated[int, PrimaryKey()]
    name: str


class CompanyMember(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org_id: Annotated[Optional[int], ForeignKey("companies.id")] = None


class CodedOrg(SyncModel, table="orgs"):
    id: Annotated[int, PrimaryKey()]
    name: str
    code: Annotated[Optional[str], Unique()] = None


class CodeMember(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org_id: Annotated[Optional[str], ForeignKey("orgs.code")] = None


class TextTag(SyncModel, table="tags"):
    name: Annotated[str, PrimaryKey()]


class IntegerTag(SyncModel, table="tags"):
    name: Annotated[int, PrimaryKey()]


class Tagged(SyncModel, table="tagged"):
    id: Annotated[int, PrimaryKey()]
    tag: Annotated[Optional[str], ForeignKey("tags.name")] = None


# Plans whose foreign-key violations only exist once the migration has run, so the check
# before it (orphans under a new key to a parent as it is now) cannot see them:
# (before, seed, after, rows in the way, child -> parent, fix).
VIOLATIONS_AFTER_THE_FACT = {
    "new key to a parent table the migration creates": (
        [LooseMember], "INSERT INTO members VALUES (10, 1), (11, NULL)", [Org, LinkedMember], 1, "members -> orgs",
        "UPDATE members SET org_id = NULL",
    ),
    "new key to a parent table the migration renames": (
        [Org, LooseMember], "INSERT INTO orgs VALUES (1, 'acme'); INSERT INTO members VALUES (10, 1), (11, 99), (12, 98)",
        [Company, CompanyMember], 2, "members -> companies", "DELETE FROM members WHERE org_id > 1",
    ),
    "new key to a parent column the migration adds": (
        [Org, LooseMember], "INSERT INTO orgs VALUES (1, 'acme'); INSERT INTO members VALUES (10, 1)",
        [CodedOrg, CodeMember], 1, "members -> orgs", "UPDATE members SET org_id = NULL",
    ),
    "parent key values changed by an allowed lossy conversion": (
        [TextTag, Tagged], "INSERT INTO tags VALUES ('7'), ('x'); INSERT INTO tagged VALUES (1, '7'), (2, 'x'), (3, NULL)",
        [IntegerTag, Tagged], 1, "tagged -> tags", "DELETE FROM tagged WHERE tag = 'x'; DELETE FROM tags WHERE name = 'x'",
    ),
}


@pytest.mark.parametrize("case", VIOLATIONS_AFTER_THE_FACT)
def test_a_migration_that_would_leave_foreign_key_violations_is_rolled_back(conn, db_path, case):
    before, seed, after, count, link, fix = VIOLATIONS_AFTER_THE_FACT[case]
    sync_models(conn, before)
    conn.executescript(seed)
    conn.execute("PRAGMA foreign_keys = ON")
    file_before = db_path.read_bytes()
    child, parent = link.split(" -> ")
    with pytest.raises(MigrationError, match=rf"{count} row.*({link}: {count}|{parent})") as raised:
        sync_models(conn, after, allow_destructive=True)
    assert child in str(raised.value) and "nothing was changed" in str(raised.value)
    assert db_path.read_bytes() == file_before
    assert rows(conn, "PRAGMA foreign_keys") == [(1,)]
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.executescript(fix)
    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, after, allow_destructive=True)  # without the rows in the way the same plan applies
    assert rows(conn, "PRAGMA foreign_key_check") == []
    assert model_migration_plan(conn, after).is_empty


def test_a_new_foreign_key_over_rows_with_null_references_applies_with_foreign_keys_on(conn):
    """A NULL foreign key references nothing and is never an orphan (SQLite does not check it)."""
    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Org, LooseMember])
    conn.execute("INSERT INTO orgs VALUES (1, 'acme')")
    conn.executemany("INSERT INTO members VALUES (?, ?)", [(10, 1), (11, None), (12, None)])
    conn.commit()
    assert not model_migration_plan(conn, [Org, LinkedMember]).problems
    assert sync_models(conn, [Org, LinkedMember]).rebuilt_tables == ("members",)
    assert rows(conn, "SELECT id, org_id FROM members ORDER BY id") == [(10, 1), (11, None), (12, None)]
    assert rows(conn, "PRAGMA foreign_key_check") == []


def test_renaming_a_parent_table_and_key_column_keeps_children_pointing_at_it(conn):
    class Member(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: Annotated[int, ForeignKey("orgs.id", on_delete="cascade")]

    seed_orgs_and_members(conn, Member)

    class Company(SyncModel, table="companies", renamed_from="orgs"):
        key: Annotated[int, PrimaryKey(), RenamedFrom("id")]
        name: str

    class Member2(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        org_id: Annotated[int, ForeignKey("companies.key", on_delete="cascade")]

    plan = sync_models(conn, [Company, Member2])
    assert [op.kind for op in plan.operations] == ["rename_table", "rename_column"]
    assert rows(conn, "SELECT \"table\", \"to\" FROM pragma_foreign_key_list('members')") == [("companies", "key")]
    assert model_migration_plan(conn, [Company, Member2]).is_empty
    assert rows(conn, "SELECT count(*) FROM members") == [(3,)]


def test_composite_to_single_primary_key_and_strict_toggles(conn):
    class Composite(SyncModel, table="pairs", primary_key=("a", "b")):
        a: int
        b: str
        note: Optional[str] = None

    class Single(SyncModel, table="pairs", strict=True):
        id: Annotated[int, PrimaryKey()]
        a: int
        b: str
        note: Optional[str] = None

    sync_models(conn, [Composite])
    conn.executemany("INSERT INTO pairs (a, b, note) VALUES (?, ?, ?)", [(1, "x", None), (1, "y", "n")])
    conn.commit()
    sync_models(conn, [Single])  # the new INTEGER PRIMARY KEY takes each row's rowid
    assert rows(conn, "SELECT id, a, b FROM pairs ORDER BY id") == [(1, 1, "x"), (2, 1, "y")]
    sync_models(conn, [Composite], allow_destructive=True)

    class Loose(SyncModel, table="pairs", primary_key=("a", "b")):
        a: int
        b: str
        note: Optional[str] = None
        extra: Optional[float] = None

    class Strict(Loose, strict=True):
        pass

    sync_models(conn, [Strict])
    assert table_sql(conn, "pairs").rstrip().endswith("STRICT")
    sync_models(conn, [Loose])
    assert not table_sql(conn, "pairs").rstrip().endswith("STRICT")
    assert rows(conn, "SELECT a, b, note FROM pairs ORDER BY b") == [(1, "x", None), (1, "y", "n")]


def test_a_hand_made_index_on_a_dropped_column_is_reported_not_lost(conn):
    seed_people(conn)
    conn.execute("CREATE INDEX by_hand_age ON people (age, name)")

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str

    with pytest.raises(MigrationError, match=r"index by_hand_age on people cannot be recreated after 'rebuild table people: drop column age': no such column: age"):
        sync_models(conn, [V2], allow_destructive=True)
    assert "by_hand_age" in index_names(conn, "people")


def test_table_rename_with_rebuild_replays_hand_made_index_and_trigger(conn):
    seed_people(conn)
    conn.execute("CREATE INDEX by_hand ON people (name)")
    conn.execute("CREATE TABLE audit (msg TEXT)")
    conn.execute("CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN INSERT INTO audit VALUES (new.name); END")

    class V2(SyncModel, table="persons", renamed_from="people"):
        id: Annotated[int, PrimaryKey()]
        label: Annotated[str, RenamedFrom("name")]
        age: int = 5

    sync_models(conn, [V2])
    assert "by_hand" in index_names(conn, "persons")
    conn.execute("INSERT INTO persons (id, label) VALUES (9, 'zed')")
    assert rows(conn, "SELECT msg FROM audit") == [("zed",)]
    assert rows(conn, "SELECT id, label, age FROM persons ORDER BY id") == [(1, "ann", 30), (2, "bob", 5), (3, "cy", 41), (9, "zed", 5)]
    assert model_migration_plan(conn, [V2]).is_empty


def test_unique_index_on_a_renamed_column_checks_the_old_values(conn):
    seed_people(conn)
    conn.execute("INSERT INTO people VALUES (4, 'ann', 2)")
    conn.commit()

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        handle: Annotated[str, Unique(), RenamedFrom("name")]
        age: Optional[int] = None

    with pytest.raises(MigrationError, match=r"people\.handle: 2 rows.*'ann'"):
        sync_models(conn, [V2])
    assert "name" in columns(conn, "people")


# --- regressions found by the property tests ---------------------------------------------


def test_bytes_to_text_is_destructive_and_bytes_that_are_not_utf8_never_become_text(conn):
    class AsBytes(SyncModel, table="blobs"):
        id: Annotated[int, PrimaryKey()]
        v: bytes

    class AsText(SyncModel, table="blobs"):
        id: Annotated[int, PrimaryKey()]
        v: str

    sync_models(conn, [AsBytes])
    conn.executemany("INSERT INTO blobs VALUES (?, ?)", [(1, "fine".encode()), (2, b"\x80\xff")])
    conn.commit()
    with pytest.raises(MigrationError, match=r"blobs\.v: 1 row: blob values are not valid UTF-8.*b'\\x80\\xff'"):
        sync_models(conn, [AsText], allow_destructive=True)
    conn.execute("DELETE FROM blobs WHERE id = 2")
    conn.commit()
    with pytest.raises(DestructiveChangeError, match=r"blobs\.v: 1 row: values would change"):
        sync_models(conn, [AsText])  # a blob never compares equal to text: its class changes
    sync_models(conn, [AsText], allow_destructive=True)
    assert rows(conn, "SELECT v, typeof(v) FROM blobs") == [("fine", "text")]


@pytest.mark.parametrize("value", [2.1302709707209372e-305, -1.7010803124328016e-307, 0.1, 1e300, -0.0])
def test_float_defaults_that_sqlite_parses_inexactly_still_round_trip(conn, value):
    Model = type(SyncModel)("Floaty", (SyncModel,), {"__annotations__": {"id": int, "f": float}, "f": value}, table="floaty")
    sync_models(conn, [Model])
    conn.execute("INSERT INTO floaty (id) VALUES (1)")
    assert rows(conn, "SELECT f FROM floaty") == [(value,)]
    assert model_migration_plan(conn, [Model]).is_empty


def test_dropping_and_re_adding_a_column_name_is_the_same_column(conn):
    seed_people(conn)

    class V2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[int] = 5

    sync_models(conn, [V2])
    assert rows(conn, "SELECT age FROM people ORDER BY id") == [(30,), (None,), (41,)]


def test_a_rebuild_that_renames_a_column_keeps_views_on_that_column_working(conn):
    class M(SyncModel, table="m"):
        id: Annotated[int, PrimaryKey()]
        nick: Optional[str] = None
        other: Optional[str] = None

    class M2(SyncModel, table="m"):
        id: Annotated[int, PrimaryKey()]
        handle: Annotated[str, RenamedFrom("nick")] = ""  # renamed and made NOT NULL: a rebuild
        other: Optional[str] = None

    class M3(SyncModel, table="m"):
        id: Annotated[int, PrimaryKey()]
        handle: str = ""
        misc: Annotated[Optional[str], RenamedFrom("other")] = None

    sync_models(conn, [M])
    conn.execute("INSERT INTO m VALUES (1, 'ann', 'x')")
    conn.execute("CREATE VIEW v2 AS SELECT nick FROM m")
    conn.commit()
    plan = sync_models(conn, [M2])
    assert [op.kind for op in plan.operations] == ["rename_column", "rebuild_table"]
    assert rows(conn, "SELECT * FROM v2") == [("ann",)]
    sync_models(conn, [M3])
    assert rows(conn, "SELECT * FROM v2") == [("ann",)] and rows(conn, "SELECT misc FROM m") == [("x",)]


def test_adopting_a_hand_made_table_with_integer_primary_key_needs_no_rebuild(conn):
    conn.execute("CREATE TABLE c (id integer primary key, v text not null)")

    class C(SyncModel, table="c"):
        id: Annotated[int, PrimaryKey()]
        v: str

    assert model_migration_plan(conn, [C]).is_empty


HAND_CHANGES_KEEPING_THE_TABLE_TEXT = {
    "index dropped": ("DROP INDEX ix_texted_label", ["create index ix_texted_label"]),
    "index rebuilt on other columns": (
        "DROP INDEX ix_texted_label; CREATE INDEX ix_texted_label ON texted (size)",
        ["drop index ix_texted_label", "create index ix_texted_label"],
    ),
    "index made unique": (
        "DROP INDEX ix_texted_label; CREATE UNIQUE INDEX ix_texted_label ON texted (label)",
        ["drop index ix_texted_label", "create index ix_texted_label"],
    ),
}


@pytest.mark.parametrize("change", HAND_CHANGES_KEEPING_THE_TABLE_TEXT)
def test_a_plan_finds_hand_changes_to_a_table_whose_create_text_is_unchanged(conn, change):
    """A table whose CREATE TABLE text is exactly what pydsqlite renders skips the diff only when its
    indexes are exactly the rendered ones too: a hand change to an index is always planned back."""

    class Texted(SyncModel, table="texted", indexes=[Index("label")]):
        id: Annotated[int, PrimaryKey()]
        label: str
        size: int

    sync_models(conn, [Texted])
    statements, expected = HAND_CHANGES_KEEPING_THE_TABLE_TEXT[change]
    conn.executescript(statements)
    plan = model_migration_plan(conn, [Texted])
    assert [operation.description.split(" on ")[0] for operation in plan.operations] == expected
    sync_models(conn, [Texted])
    assert index_names(conn, "texted") == {"ix_texted_label"}
    assert model_migration_plan(conn, [Texted]).is_empty


def test_a_refusal_names_a_row_of_a_composite_key_by_every_key_column(conn):
    class Cell(SyncModel, table="cells"):
        row: Annotated[int, PrimaryKey()]
        col: Annotated[str, PrimaryKey()]
        value: Optional[str] = None

    class CellV2(SyncModel, table="cells"):
        row: Annotated[int, PrimaryKey()]
        col: Annotated[str, PrimaryKey()]
        value: str

    sync_models(conn, [Cell])
    conn.executemany("INSERT INTO cells VALUES (?, ?, ?)", [(1, "a", "x"), (2, "it's", None)])
    with pytest.raises(MigrationError, match=re.escape("cells.value: 1 row: rows hold NULL but the column becomes NOT NULL with no default (e.g. the row with (row, col) = (2, 'it''s'))")):
        sync_models(conn, [CellV2])


def test_with_foreign_keys_on_a_default_filling_nulls_that_no_parent_holds_is_refused_naming_it(tmp_path):
    """Optional parent id -> id with a default: the filled rows would reference no parent. Rows that
    referenced no parent before (written with foreign keys off) do not block, as everywhere."""
    path = tmp_path / "fill.db"
    conn = sqlite3.connect(path)

    class Par(SyncModel, table="par"):
        id: Annotated[int, PrimaryKey()]

    class Kid(SyncModel, table="kid"):
        id: Annotated[int, PrimaryKey()]
        pid: Annotated[Optional[int], ForeignKey(Par)] = None

    class KidFilled(SyncModel, table="kid"):
        id: Annotated[int, PrimaryKey()]
        pid: Annotated[int, ForeignKey(Par)] = 0

    sync_models(conn, [Par, Kid])
    conn.executemany("INSERT INTO par VALUES (?)", [(1,)])
    conn.executemany("INSERT INTO kid VALUES (?, ?)", [(1, 1), (2, None), (3, 99)])  # 3: an orphan from before
    conn.commit()
    conn.execute("PRAGMA foreign_keys = ON")
    before = path.read_bytes()
    plan = model_migration_plan(conn, [Par, KidFilled])
    assert plan.problems == ("kid.pid: 1 row: the migration gives rows a value no row of par holds, which the foreign key refuses (e.g. 0)",)
    with pytest.raises(MigrationError, match="no row of par holds"):
        sync_models(conn, [Par, KidFilled])
    assert path.read_bytes() == before
    conn.execute("INSERT INTO par VALUES (0)")
    conn.commit()
    sync_models(conn, [Par, KidFilled])
    assert rows(conn, "SELECT * FROM kid ORDER BY id") == [(1, 1), (2, 0), (3, 99)]


class DeferParent(SyncModel, table="parent"):
    id: Annotated[int, PrimaryKey()]
    name: Optional[str] = None


class DeferChild(SyncModel, table="child"):
    id: Annotated[int, PrimaryKey()]
    pid: Annotated[int, ForeignKey(DeferParent, on_delete="cascade", deferred=True)]


class ImmediateChild(SyncModel, table="child"):
    id: Annotated[int, PrimaryKey()]
    pid: Annotated[int, ForeignKey(DeferParent, on_delete="cascade")]


def _child_then_parent(conn: sqlite3.Connection, n: int) -> None:
    with conn:
        conn.execute("INSERT INTO child VALUES (?, ?)", (n, n))
        conn.execute("INSERT INTO parent (id) VALUES (?)", (n,))


def test_a_deferred_foreign_key_is_declared_kept_and_its_change_named(memory_conn):
    """``ForeignKey(..., deferred=True)`` is DEFERRABLE INITIALLY DEFERRED: a transaction may insert the
    child before its parent. A hand-made deferred key matches it (no rebuild); a model without it says
    in the plan that the key would be checked after each statement."""
    conn = memory_conn
    conn.executescript(
        """
        CREATE TABLE parent (id INTEGER NOT NULL, name TEXT, PRIMARY KEY (id));
        CREATE TABLE child (id INTEGER NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (id),
            FOREIGN KEY (pid) REFERENCES parent (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
        """
    )
    conn.execute("PRAGMA foreign_keys = ON")
    plan = model_migration_plan(conn, [DeferParent, ImmediateChild])
    assert "foreign key (pid) -> parent(id) DEFERRABLE INITIALLY DEFERRED -> checked after each statement" in str(plan)
    assert model_migration_plan(conn, [DeferParent, DeferChild]).rebuilt_tables == ()
    sync_models(conn, [DeferParent, DeferChild])
    _child_then_parent(conn, 1)
    sync_models(conn, [DeferParent, ImmediateChild])
    with pytest.raises(sqlite3.IntegrityError):
        _child_then_parent(conn, 2)
    sync_models(conn, [DeferParent, DeferChild])
    assert "DEFERRABLE INITIALLY DEFERRED" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'child'").fetchone()[0]
    _child_then_parent(conn, 3)
    assert conn.execute("SELECT id FROM child ORDER BY id").fetchall() == [(1,), (3,)]


@pytest.mark.parametrize("self_reference", [False, True], ids=["child table", "same table"])
def test_a_parent_key_conversion_that_would_orphan_children_is_a_problem_when_foreign_keys_are_on(tmp_path, self_reference):
    """A parent key turning TEXT -> INTEGER loses 'x' (it becomes 0): the child row referencing 'x' would
    lose its parent. With foreign keys on, the preview names it as a problem (the sync refused it only
    after the work, at its final check); values that convert exactly keep their children."""

    class ParentV1(SyncModel, table="coded_parents"):
        code: Annotated[str, PrimaryKey()]
        up: Annotated[Optional[str], ForeignKey("coded_parents.code")] = None

    class ParentV2(SyncModel, table="coded_parents"):
        code: Annotated[int, PrimaryKey()]
        up: Annotated[Optional[str], ForeignKey("coded_parents.code")] = None

    class Child(SyncModel, table="coded_children"):
        id: Annotated[int, PrimaryKey()]
        parent: Annotated[str, ForeignKey("coded_parents.code")]

    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [ParentV1, Child])
    conn.executemany("INSERT INTO coded_parents (code) VALUES (?)", [("1",), ("2",), ("x",)])
    if self_reference:
        conn.execute("UPDATE coded_parents SET up = 'x' WHERE code = '2'")
    else:
        conn.executemany("INSERT INTO coded_children VALUES (?, ?)", [(1, "1"), (2, "x")])
    conn.commit()
    conn.execute("PRAGMA foreign_keys = ON")
    table, column = ("coded_parents", "up") if self_reference else ("coded_children", "parent")
    plan = model_migration_plan(conn, [ParentV2, Child])
    assert plan.problems == (
        f"{table}.{column}: 1 row: rows reference rows of coded_parents whose code the conversion would change, so they "
        "would lose their parent (e.g. 'x')",
    )
    before = path.read_bytes()
    with pytest.raises(MigrationError, match="would lose their parent"):
        sync_models(conn, [ParentV2, Child], allow_destructive=True)
    assert path.read_bytes() == before
    conn.execute("DELETE FROM coded_children WHERE parent = 'x'")
    conn.execute("UPDATE coded_parents SET up = NULL")
    conn.commit()
    assert not model_migration_plan(conn, [ParentV2, Child]).problems


def test_a_foreign_key_whose_both_ends_are_converted_is_checked_on_the_converted_values(tmp_path):
    """The parent key and the child's reference both turn TEXT -> INTEGER: '01' becomes 1 on both ends,
    so the child keeps its parent. Not refused (each end's own check compared a converted value with an
    unconverted one); a child left without a parent is still refused, at the final foreign-key check."""
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.executescript(
        "CREATE TABLE both_parents (a TEXT PRIMARY KEY, n TEXT);"
        "CREATE TABLE both_children (id INTEGER PRIMARY KEY, pa TEXT REFERENCES both_parents (a));"
        "INSERT INTO both_parents VALUES ('01', 'one'); INSERT INTO both_children VALUES (1, '01');"
    )
    conn.execute("PRAGMA foreign_keys = ON")
    desired = schema_from_sql(
        "CREATE TABLE both_parents (a INTEGER PRIMARY KEY, n TEXT);"
        "CREATE TABLE both_children (id INTEGER PRIMARY KEY, pa INTEGER REFERENCES both_parents (a));"
    )
    plan = schema_migration_plan(conn, desired)
    assert not plan.problems and len(plan.destructive_operations) == 2, plan
    sync_schema(conn, desired, allow_destructive=True)
    assert conn.execute("SELECT pa FROM both_children").fetchall() == [(1,)] and conn.execute("PRAGMA foreign_key_check").fetchall() == []

    conn.execute("CREATE TABLE lone_parents (a TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE lone_children (id INTEGER PRIMARY KEY, pa TEXT REFERENCES lone_parents (a))")
    conn.execute("INSERT INTO lone_parents VALUES ('x')")
    conn.execute("INSERT INTO lone_children VALUES (1, 'x')")
    conn.commit()
    desired = schema_from_sql(
        "CREATE TABLE both_parents (a INTEGER PRIMARY KEY, n TEXT);"
        "CREATE TABLE both_children (id INTEGER PRIMARY KEY, pa INTEGER REFERENCES both_parents (a));"
        "CREATE TABLE lone_parents (a INTEGER PRIMARY KEY);"
        "CREATE TABLE lone_children (id INTEGER PRIMARY KEY, pa TEXT REFERENCES lone_parents (a));"
    )
    before = list(conn.iterdump())
    with pytest.raises(MigrationError, match="lone_children"):
        sync_schema(conn, desired, allow_destructive=True)
    assert list(conn.iterdump()) == before


def test_turning_strict_on_over_values_of_another_kind_names_them_as_such(conn, db_path):
    """A column keeps its type while the table turns STRICT: the finding says which values are not
    stored as that type (not "from INTEGER to INTEGER"), and the file is unchanged without permission."""

    class Loose(SyncModel, table="strict_turned_on"):
        id: Annotated[int, PrimaryKey()]
        n: int = 0

    class Strict(SyncModel, table="strict_turned_on", strict=True):
        id: Annotated[int, PrimaryKey()]
        n: int = 0

    sync_models(conn, [Loose])
    conn.executemany("INSERT INTO strict_turned_on VALUES (?, ?)", [(1, 5), (2, "abc")])
    conn.commit()
    before = db_path.read_bytes()
    with pytest.raises(DestructiveChangeError) as raised:
        sync_models(conn, [Strict])
    assert "strict_turned_on.n: 1 row: values not stored as INTEGER would change when converted to it (e.g. 'abc' becomes 0)" in str(raised.value)
    assert db_path.read_bytes() == before


def test_a_foreign_key_to_a_parent_model_follows_its_new_primary_key_and_the_plan_says_where(conn, db_path):
    """ForeignKey(Parent) names no column: re-keying the parent moves the reference, which the plan
    and the refusal name (tags(id) -> tags(name)), so a reader does not hunt for missing tags."""

    class Label(SyncModel, table="retarget_labels"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class Labelled(SyncModel, table="retarget_labelled"):
        id: Annotated[int, PrimaryKey()]
        label_id: Annotated[int, ForeignKey(Label)]

    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Label, Labelled])
    conn.executemany("INSERT INTO retarget_labels VALUES (?, ?)", [(1, "sale"), (2, "gift")])
    conn.executemany("INSERT INTO retarget_labelled VALUES (?, ?)", [(10, 1), (11, 2)])
    conn.commit()
    before = db_path.read_bytes()

    class LabelByName(SyncModel, table="retarget_labels"):
        id: Annotated[int, Unique()]
        name: Annotated[str, PrimaryKey()]

    class LabelledByName(SyncModel, table="retarget_labelled"):
        id: Annotated[int, PrimaryKey()]
        label_id: Annotated[int, ForeignKey(LabelByName)]

    plan = model_migration_plan(conn, [LabelByName, LabelledByName])
    assert "add foreign key (label_id) -> retarget_labels(name); drop foreign key (label_id) -> retarget_labels(id)" in str(plan)
    assert plan.problems == (
        "retarget_labelled.label_id: 2 rows: rows reference no row of retarget_labels through the new foreign key to "
        "retarget_labels(name) (e.g. 1)",
    )
    with pytest.raises(MigrationError):
        sync_models(conn, [LabelByName, LabelledByName])
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_parent_key_changing_collation_under_its_children_is_refused(conn, db_path, enforced):
    """A child 'A' finds its parent 'a' under NOCASE; after the parent's key turns BINARY it would not:
    refused whatever the pragma says (with it off the migration left foreign_key_check failing)."""

    class Tag(SyncModel, table="recollated_tags"):
        name: Annotated[str, PrimaryKey(), Collate("NOCASE")]

    class Post(SyncModel, table="recollated_posts"):
        id: Annotated[int, PrimaryKey()]
        tag: Annotated[Optional[str], ForeignKey(Tag)] = None

    class TagBinary(SyncModel, table="recollated_tags"):
        name: Annotated[str, PrimaryKey()]

    class PostBinary(SyncModel, table="recollated_posts"):
        id: Annotated[int, PrimaryKey()]
        tag: Annotated[Optional[str], ForeignKey(TagBinary)] = None

    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Tag, Post])
    conn.execute("INSERT INTO recollated_tags VALUES ('a'), ('b')")
    conn.execute("INSERT INTO recollated_posts VALUES (1, 'A'), (2, 'b'), (3, NULL)")
    conn.commit()
    before = db_path.read_bytes()
    plan = model_migration_plan(conn, [TagBinary, PostBinary])
    assert plan.problems == (
        "recollated_posts.tag: 1 row: rows reference rows of recollated_tags that the new type or collation of name no longer "
        "matches, so they would lose their parent (e.g. 'A')",
    )
    with pytest.raises(MigrationError):
        sync_models(conn, [TagBinary, PostBinary])
    assert db_path.read_bytes() == before
    conn.execute("UPDATE recollated_posts SET tag = 'a' WHERE id = 1")
    conn.commit()
    sync_models(conn, [TagBinary, PostBinary])
    assert rows(conn, "PRAGMA foreign_key_check") == []


@pytest.mark.parametrize("release", ["child drops its foreign key", "child table dropped", "child keeps a key to another table"])
@pytest.mark.parametrize("parent_change", ["collation", "lossy type"])
@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_parent_key_change_is_not_refused_for_children_that_stop_referencing_it_in_the_same_migration(
    conn, db_path, enforced, parent_change, release
):
    """The children a parent key change would orphan are refused only while they keep referencing
    it: a release that drops the child table, or the child's foreign key, in the same migration
    applies at once (it was refused, and took two releases). Their rows are kept as they were."""
    # a child 'A' finds 'a' under NOCASE only; 'x' becomes 0 as an INTEGER key
    key_type, new_key_type, first = ("TEXT COLLATE NOCASE", "TEXT", "a") if parent_change == "collation" else ("TEXT", "INTEGER", "1")
    conn.executescript(
        f"""
        CREATE TABLE owners (id INTEGER NOT NULL PRIMARY KEY);
        CREATE TABLE tags (name {key_type} NOT NULL PRIMARY KEY);
        CREATE TABLE posts (id INTEGER NOT NULL PRIMARY KEY, tag TEXT REFERENCES tags(name), owner INTEGER);
        INSERT INTO owners VALUES (1);
        INSERT INTO tags VALUES ('{first}'), ('x');
        INSERT INTO posts VALUES (1, '{first.upper()}', 1), (2, 'x', 1);
        """
    )
    conn.commit()
    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    posts = {
        "child drops its foreign key": "CREATE TABLE posts (id INTEGER NOT NULL PRIMARY KEY, tag TEXT, owner INTEGER);",
        "child table dropped": "",
        "child keeps a key to another table": (
            "CREATE TABLE posts (id INTEGER NOT NULL PRIMARY KEY, tag TEXT, owner INTEGER REFERENCES owners(id));"
        ),
    }[release]
    desired = schema_from_sql(
        f"CREATE TABLE owners (id INTEGER NOT NULL PRIMARY KEY); CREATE TABLE tags (name {new_key_type} NOT NULL PRIMARY KEY); {posts}"
    )
    kept = schema_from_sql(
        f"CREATE TABLE owners (id INTEGER NOT NULL PRIMARY KEY); CREATE TABLE tags (name {new_key_type} NOT NULL PRIMARY KEY); "
        "CREATE TABLE posts (id INTEGER NOT NULL PRIMARY KEY, tag TEXT REFERENCES tags(name), owner INTEGER);"
    )
    still_referencing = schema_migration_plan(conn, kept)
    assert any("would lose their parent" in problem for problem in still_referencing.problems), still_referencing.problems
    plan = schema_migration_plan(conn, desired)
    assert not any("lose their parent" in problem for problem in plan.problems), plan.problems
    sync_schema(conn, desired, allow_destructive=True)
    if release != "child table dropped":
        assert rows(conn, "SELECT id, tag FROM posts ORDER BY id") == [(1, first.upper()), (2, "x")]
    assert rows(conn, "PRAGMA foreign_key_check") == []
    assert schema_migration_plan(conn, desired).is_empty


@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_parent_key_changing_type_under_children_it_would_orphan_is_refused(conn, db_path, enforced):
    """SQLite matches a child under the parent column's affinity: '01' finds the INTEGER parent 1, not
    the TEXT parent '1' that a lossless conversion makes of it. Refused whatever the pragma says."""
    conn.executescript(
        """
        CREATE TABLE retyped_tags (code INTEGER NOT NULL PRIMARY KEY);
        CREATE TABLE retyped_posts (id INTEGER NOT NULL PRIMARY KEY, tag TEXT REFERENCES retyped_tags(code));
        INSERT INTO retyped_tags VALUES (1), (2);
        INSERT INTO retyped_posts VALUES (1, '01'), (2, '2'), (3, NULL);
        """
    )
    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    before = db_path.read_bytes()
    desired = schema_from_sql(
        "CREATE TABLE retyped_tags (code TEXT NOT NULL PRIMARY KEY);"
        "CREATE TABLE retyped_posts (id INTEGER NOT NULL PRIMARY KEY, tag TEXT REFERENCES retyped_tags(code));"
    )
    plan = schema_migration_plan(conn, desired)
    assert any("retyped_posts.tag: 1 row: rows reference rows of retyped_tags that the new type or collation of code" in problem
               and "(e.g. '01')" in problem for problem in plan.problems)
    with pytest.raises(MigrationError):
        sync_schema(conn, desired)
    assert db_path.read_bytes() == before
    conn.execute("UPDATE retyped_posts SET tag = '1' WHERE id = 1")
    conn.commit()
    sync_schema(conn, desired)
    assert rows(conn, "PRAGMA foreign_key_check") == []
