"""Start-up fast path: an unchanged database is recognised without introspection."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import ForeignKey, Index, PrimaryKey, RenamedFrom, SyncModel, model_migration_plan, sync_models
from pydsqlite.engines import SqliteEngine

from .helpers import index_names


class Note(SyncModel, table="notes", indexes=[Index("title")]):
    id: Annotated[int, PrimaryKey()]
    title: str
    body: Optional[str] = None


def traced(conn: sqlite3.Connection, action) -> list[str]:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    return statements


def test_a_second_sync_skips_introspection_and_takes_no_lock(conn):
    sync_models(conn, [Note])
    statements = traced(conn, lambda: sync_models(conn, [Note]))
    assert statements and not any("pragma_table_xinfo" in s or "BEGIN" in s.upper() for s in statements)
    statements = traced(conn, lambda: model_migration_plan(conn, [Note]))
    assert not any("pragma_table_xinfo" in s for s in statements)


def test_a_schema_changed_by_hand_is_noticed(conn):
    sync_models(conn, [Note])
    conn.execute("DROP INDEX ix_notes_title")
    plan = model_migration_plan(conn, [Note])
    assert [op.kind for op in plan.operations] == ["create_index"]
    sync_models(conn, [Note])
    assert index_names(conn, "notes") == {"ix_notes_title"}


def test_a_schema_migrated_by_another_app_version_is_noticed(db_path):
    first = sqlite3.connect(db_path)
    sync_models(first, [Note])

    class NoteV2(SyncModel, table="notes", indexes=[Index("title")]):
        id: Annotated[int, PrimaryKey()]
        title: str
        body: Optional[str] = None
        pinned: bool = False

    other = sqlite3.connect(db_path)
    sync_models(other, [NoteV2])
    other.close()
    plan = model_migration_plan(first, [Note])
    assert [op.kind for op in plan.operations] == ["drop_column"]
    first.close()


def test_unrelated_hand_made_tables_cost_one_full_plan_then_the_fast_path_again(conn):
    sync_models(conn, [Note])
    conn.execute("CREATE TABLE scratch (x)")
    statements = traced(conn, lambda: sync_models(conn, [Note]))
    assert any("FROM main.sqlite_master ORDER BY rowid" in s for s in statements)  # the live schema read again
    statements = traced(conn, lambda: sync_models(conn, [Note]))
    assert not any("sqlite_master" in s for s in statements)


def _cold_models(count: int, prefix: str) -> list[type[SyncModel]]:
    """``count`` table models of their own (none read before), each with two indexes and, after the
    first, a foreign key to the one before it."""
    from typing import Any

    made: list[type[SyncModel]] = []
    for number in range(count):
        annotations: dict[str, Any] = {"id": Annotated[int, PrimaryKey()], "a": str, "b": Optional[int]}
        namespace: dict[str, Any] = {"__annotations__": annotations, "b": None}
        if made:
            annotations["parent"] = Annotated[Optional[int], ForeignKey(made[-1], on_delete="CASCADE")]
            namespace["parent"] = None
        table = f"{prefix}_{number}"
        made.append(type(SyncModel)(f"Cold{number}", (SyncModel,), namespace, table=table, indexes=[Index("a"), Index("a", "b")]))
    return made


def test_a_cold_plan_reads_every_table_in_a_fixed_number_of_queries(conn):
    from pydsqlite.migrate.sync import preview_schema
    from pydsqlite.schema.compile import compile_models

    counts = {}
    declared: list[type[SyncModel]] = []
    for size in (10, 40):
        declared += _cold_models(size, f"cold_{size}")  # the tables of the first size stay declared (and were read before)
        sync_models(conn, declared)
        desired = compile_models(declared)
        statements = traced(conn, lambda desired=desired: preview_schema(conn, desired))  # fast path off: full introspection
        counts[size] = [s for s in statements if not s.startswith("--")]  # "--" lines are SQLite's own sub-steps
        assert sum("pragma_table_xinfo" in s for s in counts[size]) == 1  # one statement for every table not read before
    assert len(counts[40]) == len(counts[10]) <= 12  # columns, index keys, foreign keys, and a few fixed reads
    again = traced(conn, lambda: preview_schema(conn, desired))  # every table as read before: no PRAGMA reads them again
    assert not any("pragma_table_xinfo" in s or "pragma_index_list" in s for s in again)


def test_a_schema_of_more_tables_than_one_read_takes_is_read_whole(conn):
    """Tables are read in chunks of a few hundred: every chunk's columns, indexes and foreign keys
    land on their own tables, and a change by hand to a table of a later chunk is planned."""
    from pydsqlite.migrate.introspect import forget_tables_read
    from pydsqlite.migrate.pragmas import NAMES_PER_STATEMENT
    from pydsqlite.migrate.sync import preview_schema
    from pydsqlite.schema.compile import compile_models

    models = _cold_models(NAMES_PER_STATEMENT + 30, "chunked")
    sync_models(conn, models)
    desired = compile_models(models)
    forget_tables_read()
    statements = traced(conn, lambda: preview_schema(conn, desired))
    assert sum("pragma_table_xinfo" in s for s in statements if not s.startswith("--")) == 2
    assert preview_schema(conn, desired).is_empty
    late = f"chunked_{NAMES_PER_STATEMENT + 20}"
    conn.execute(f"DROP INDEX ix_{late}_a")
    conn.execute(f"CREATE INDEX ix_{late}_b ON {late} (b)")
    conn.commit()
    forget_tables_read()
    plan = preview_schema(conn, desired)
    assert [operation.description for operation in plan.operations] == [f"create index ix_{late}_a on {late} (a)"]  # ix_b, made by hand, stays
    sync_models(conn, models)
    assert f"ix_{late}_a" in index_names(conn, late) and f"ix_{late}_b" in index_names(conn, late)
    forget_tables_read()
    assert preview_schema(conn, desired).is_empty


def test_a_no_op_on_a_connection_with_its_own_factories_leaves_them_and_answers_empty(conn):
    sync_models(conn, [Note])
    conn.row_factory = sqlite3.Row
    conn.text_factory = bytes
    plan = sync_models(conn, [Note])
    assert plan.is_empty and plan.checked
    assert conn.row_factory is sqlite3.Row and conn.text_factory is bytes
    assert conn.execute("SELECT 'x' AS v").fetchone()["v"] == b"x"


def test_a_no_op_while_another_connection_holds_an_exclusive_lock_waits_for_it(db_path):
    import threading
    import time

    first = sqlite3.connect(db_path)
    sync_models(first, [Note])
    first.close()
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # readers are refused until it ends
    release = threading.Timer(0.4, lambda: holder.execute("COMMIT"))
    conn = sqlite3.connect(db_path, timeout=0.05)
    started = time.monotonic()  # before the timer starts: the lock is held for 0.4 s after this, however late this thread runs
    release.start()
    try:
        plan = sync_models(conn, [Note], busy_timeout=10)
        assert plan.is_empty and time.monotonic() - started >= 0.3  # waited for the lock, was not refused
        assert not conn.in_transaction
    finally:
        release.join()
        conn.close()
        holder.close()


def test_a_no_op_on_a_closed_connection_is_our_error(conn):
    from pydsqlite import PydsqliteError

    sync_models(conn, [Note])
    conn.close()
    with pytest.raises(PydsqliteError, match="closed"):
        sync_models(conn, [Note])


def test_a_changed_pydsqlite_source_file_plans_once_then_the_fast_path_again(conn, monkeypatch):
    """An upgrade (or an edited checkout) may plan differently: the first sync after it plans in full."""
    import os

    import pydsqlite.migrate.diff as diff_module
    from pydsqlite.schema import declaration

    sync_models(conn, [Note])
    source = diff_module.__file__
    status = os.stat(source)
    for cache in ("_environment_digest", "_last"):  # as in a new process
        monkeypatch.setattr(declaration, cache, [])
    monkeypatch.setattr(declaration, "_keys", {})
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    try:
        statements = traced(conn, lambda: sync_models(conn, [Note]))
        assert any("FROM main.sqlite_master ORDER BY rowid" in s for s in statements)  # planned
        statements = traced(conn, lambda: sync_models(conn, [Note]))
        assert not any("sqlite_master" in s for s in statements)
    finally:
        os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns))


def test_schema_objects_built_by_the_quick_init_behave_as_their_dataclass_declares():
    """Column, Table, Index, ForeignKey and UniqueConstraint fill their fields in one step: the
    signature, defaults, normalisation of a column's type, equality and frozenness are the dataclass's."""
    import dataclasses
    import inspect
    import typing

    from pydsqlite.schema import objects

    for cls in (objects.Column, objects.Table, objects.Index, objects.ForeignKey, objects.UniqueConstraint):
        parameters = list(inspect.signature(cls).parameters.values())
        assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(cls)]
        assert [p.default for p in parameters] == [inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in dataclasses.fields(cls)]
        assert [p.annotation for p in parameters] == [f.type for f in dataclasses.fields(cls)]
        hints = typing.get_type_hints(cls.__init__)
        assert hints.pop("return") is type(None) and hints == typing.get_type_hints(cls)
        assert cls.__init__.__module__ == objects.__name__ and cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
    column = objects.Column("Price", "numeric  ( 10, 2 )", not_null=True)
    assert column.type == "NUMERIC ( 10, 2 )" and column.default is None and column.stable_default
    assert column == objects.Column(name="Price", type="NUMERIC ( 10, 2 )", not_null=True) and hash(column) == hash(dataclasses.replace(column))
    assert dataclasses.replace(column, type="text").type == "TEXT"
    with pytest.raises(dataclasses.FrozenInstanceError):
        column.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="name"):
        objects.Column()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        objects.Column("a", size=3)  # type: ignore[call-arg]
    table = objects.Table("t", (column,), primary_key=("Price",))
    assert table.column("price") is column and table.sql is None and table == objects.Table("t", (column,), ("Price",), sql="CREATE TABLE t (Price)")


def test_the_quick_look_for_table_extras_misses_no_create_text_that_has_them():
    """A CREATE TABLE text is tokenized only when a word says it may hold what the PRAGMAs do not
    report; the substring tests must say so for every text the full pattern finds."""
    import re

    from hypothesis import given
    from hypothesis import strategies as st

    from pydsqlite.sql.ddl import _might_have_extras

    full = re.compile(r"CHECK|COLLATE|\bAS\b|GENERATED|AUTOINCREMENT|UNIQUE|STRICT|ROWID|CONFLICT|CONSTRAINT|DEFERRABLE|\bDESC\b")
    pieces = st.sampled_from(["CHECK", "AS", "DESC", "LAST", "DESCRIPTION", "BASE", "ROWID", "GENERATED", " ", "(", ")", ",", "`", "_", "X", "1", "UNIQUE", "STRICT", "CONFLICT"])

    @given(st.lists(pieces, max_size=12).map("".join))
    def agrees(text: str) -> None:
        assert _might_have_extras(text) == (full.search(text) is not None)

    agrees()
    assert not _might_have_extras('CREATE TABLE "LAST_SEEN" ("DESCRIPTION" TEXT, "BASE" INTEGER)')
    assert _might_have_extras("CREATE TABLE T (A INTEGER, B AS (A + 1))") and _might_have_extras("CREATE TABLE T (A INTEGER PRIMARY KEY DESC)")


class Priced(SyncModel, table="priced_items", indexes=[Index("name")]):
    id: Annotated[int, PrimaryKey()]
    name: str
    price: int = 0


class PricedAsText(SyncModel, table="priced_items", indexes=[Index("name")]):
    """price changes type: a rebuild, which renames the new table into place."""

    id: Annotated[int, PrimaryKey()]
    name: str
    price: str = "0"


class PricedRenamed(SyncModel, table='price "list"', renamed_from="priced_items", indexes=[Index("name")]):
    id: Annotated[int, PrimaryKey()]
    name: str
    price: str = "0"


@pytest.mark.parametrize("foreign_keys", [False, True])
def test_a_table_rebuilt_or_renamed_by_a_migration_is_recognised_without_a_diff(conn, foreign_keys):
    """SQLite writes a renamed table's name in double quotes into its CREATE TABLE and CREATE INDEX
    texts; a cold plan still recognises pydsqlite's own rendering there (a full diff per table, about
    a hundred microseconds each, otherwise), and still notices what is changed by hand."""
    from pydsqlite.migrate.diff import created_as
    from pydsqlite.migrate.introspect import introspect
    from pydsqlite.schema.compile import compile_models

    if foreign_keys:
        conn.execute("PRAGMA foreign_keys = ON")

    def recognised(model: type[SyncModel]) -> bool:
        desired = compile_models([model]).tables[0]
        live = introspect(SqliteEngine(conn)).table(desired.name)
        assert live is not None
        return created_as(desired, live)

    sync_models(conn, [Priced])
    assert recognised(Priced)
    assert sync_models(conn, [PricedAsText]).rebuilt_tables == ("priced_items",)
    assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'priced_items'").fetchone()[0].startswith('CREATE TABLE "priced_items"')
    assert recognised(PricedAsText) and not recognised(Priced)
    sync_models(conn, [PricedRenamed])
    assert recognised(PricedRenamed)
    conn.execute('DROP INDEX "ix_price ""list""_name"')
    conn.commit()
    assert not recognised(PricedRenamed)
    assert [op.description for op in model_migration_plan(conn, [PricedRenamed]).operations] == ['create index ix_price "list"_name on price "list" (name)']


class Titled(SyncModel, table='titled "t"', indexes=[Index("name", "kind", name="ix_titled_pair")]):
    id: Annotated[int, PrimaryKey()]
    name: str
    kind: str = "say `hi`"


class TitledRenamed(SyncModel, table='titled "t"', indexes=[Index("title", "sort", name="ix_titled_pair")]):
    """Both indexed columns renamed: SQLite writes the new names in double quotes in the CREATE TABLE
    text and in the index's."""

    id: Annotated[int, PrimaryKey()]
    title: Annotated[str, RenamedFrom("name")]
    sort: Annotated[str, RenamedFrom("kind")] = "say `hi`"


def _recognised(conn: sqlite3.Connection, model: type[SyncModel]) -> bool:
    from pydsqlite.migrate.diff import created_as
    from pydsqlite.migrate.introspect import introspect
    from pydsqlite.schema.compile import compile_models

    desired = compile_models([model]).tables[0]
    live = introspect(SqliteEngine(conn)).table(desired.name)
    assert live is not None
    return created_as(desired, live)


def test_a_table_whose_columns_were_renamed_is_recognised_without_a_diff(conn):
    """A renamed column is written back by SQLite as ``"title"`` into the table's and its indexes'
    CREATE texts; a cold plan still recognises pydsqlite's rendering (a full diff per table, about a
    hundred microseconds each, otherwise), and a hand-made table differing only inside a string
    literal's quotes is not taken for it."""
    sync_models(conn, [Titled])
    plan = sync_models(conn, [TitledRenamed])
    assert not plan.rebuilt_tables and sum(op.kind == "rename_column" for op in plan.operations) == 2
    texts = [sql for (sql,) in conn.execute("""SELECT sql FROM sqlite_master WHERE tbl_name = 'titled "t"'""")]
    assert len(texts) == 2 and all('"title"' in text and '"sort"' in text for text in texts)
    assert _recognised(conn, TitledRenamed) and not _recognised(conn, Titled)
    assert model_migration_plan(conn, [TitledRenamed]).is_empty

    table = texts[0]
    assert "'say `hi`'" in table
    conn.execute('DROP TABLE "titled ""t"""')
    conn.execute(table.replace("'say `hi`'", "'say \"hi\"'"))  # the same but for the default's quotes
    conn.execute(texts[1])
    conn.commit()
    assert not _recognised(conn, TitledRenamed)
    assert [op.kind for op in model_migration_plan(conn, [TitledRenamed]).operations] == ["rebuild_table"]


def test_double_quoted_names_are_found_where_sqlites_tokenizer_finds_them():
    """Names in double quotes turn into names in grave accents, every one or those spelling one name
    (ASCII case ignored), never inside a string, a comment or another quoting: the same tokens as the
    tokenizer's, found by one regular expression (a cold plan runs it on every renamed table)."""
    from hypothesis import given
    from hypothesis import strategies as st

    from pydsqlite.schema.objects import fold_name
    from pydsqlite.sql.ddl import tokenize
    from pydsqlite.sql.render import double_quotes_as_names, quote_identifier

    def by_tokens(sql: str, name: str | None) -> str:
        pieces, position = [], 0
        for token in tokenize(sql):
            if token.kind == "quoted" and token.text.startswith('"') and (name is None or fold_name(token.identifier) == fold_name(name)):
                pieces.append(sql[position : token.start] + quote_identifier(token.identifier))
                position = token.end
        pieces.append(sql[position:])
        return "".join(pieces)

    pieces = st.sampled_from(['"', "'", "`", "[", "]", "-", "*", "/", "\n", " ", "a", "A", "b", "x", "é", "1", "(", ")", '""', "''", "--", "/*", "*/"])

    @given(st.lists(pieces, max_size=20).map("".join), st.none() | st.sampled_from(["a", "A", "b", 'a"b', "é"]))
    def agrees(text: str, name: str | None) -> None:
        assert double_quotes_as_names(text, name) == by_tokens(text, name)

    agrees()
    assert double_quotes_as_names("""x = "A" AND 'it''s "a"' AND "a""b" -- "a"\n""", "a") == """x = `A` AND 'it''s "a"' AND "a""b" -- "a"\n"""


def test_a_connection_with_a_lowered_limit_on_bound_parameters_is_read_in_chunks_under_it(db_path):
    """An application may lower SQLITE_LIMIT_VARIABLE_NUMBER on its connection: introspection binds
    no more table names per statement than the connection allows."""
    from pydsqlite.migrate.introspect import forget_tables_read
    from pydsqlite.migrate.sync import preview_schema
    from pydsqlite.schema.compile import compile_models

    models = _cold_models(120, "limited")
    conn = sqlite3.connect(db_path)
    sync_models(conn, models)
    conn.close()
    conn = sqlite3.connect(db_path)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)
    forget_tables_read()
    desired = compile_models(models)
    statements = traced(conn, lambda: preview_schema(conn, desired))  # fast path off: full introspection
    assert sum("pragma_table_xinfo" in s for s in statements if not s.startswith("--")) == 3  # 50 + 50 + 20 names
    forget_tables_read()
    assert preview_schema(conn, desired).is_empty
    conn.close()


def test_tables_read_by_one_thread_while_another_clears_what_was_kept_are_all_read(conn):
    """The tables kept from earlier reads are looked up once per introspection: a cache another thread
    clears in the middle of it (a full cache, ``forget_tables_read``) costs a read, never a KeyError."""
    from pydsqlite.migrate.introspect import forget_tables_read, introspect

    conn.executescript("CREATE TABLE a (x); CREATE TABLE b (y);")
    engine = SqliteEngine(conn)
    introspect(engine)  # a and b kept
    conn.execute("ALTER TABLE b ADD COLUMN z")  # b to be read again, a taken as kept

    def clear_on_the_pragma_read(statement: str) -> None:
        if "pragma_table_xinfo" in statement:
            forget_tables_read()  # what another thread may do at this moment

    conn.set_trace_callback(clear_on_the_pragma_read)
    try:
        schema = introspect(engine)
    finally:
        conn.set_trace_callback(None)
    assert [table.column_names for table in schema.tables] == [("x",), ("y", "z")]


def test_a_temp_table_named_like_a_main_one_never_stands_in_for_it(db_path):
    """Introspection reads the main database: a TEMP table of the same name (which SQLite's name
    lookup finds first) does not give its columns or indexes to the main table, nor to the reads of
    the main table kept for other connections of the process."""
    from pydsqlite.migrate.introspect import introspect
    from pydsqlite.sql.source import schema_from_database

    sync_models(sqlite3.connect(db_path), [Note])
    shadowed = sqlite3.connect(db_path)
    shadowed.executescript("CREATE TEMP TABLE notes (temp_col BLOB); CREATE INDEX temp.ix_temp ON notes (temp_col);")
    table = introspect(SqliteEngine(shadowed)).table("notes")
    assert table is not None and table.column_names[:3] == ("id", "title", "body") and [i.name for i in table.indexes] == ["ix_notes_title"]
    clean = sqlite3.connect(db_path)
    assert schema_from_database(clean).table("notes").column_names[:3] == ("id", "title", "body")  # type: ignore[union-attr]
    assert model_migration_plan(clean, [Note]).is_empty
