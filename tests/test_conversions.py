"""Type changes: a conversion is lossless exactly when every stored value survives it.

For every pair of source and target column types (plain and STRICT) and values at the
edges of each storage class, the plan must call the rebuild destructive exactly when some
value would change, count exactly those rows, and keep every other value exact.
"""

from __future__ import annotations

import math
import re
import sqlite3

import pytest

from pydsqlite import DestructiveChangeError, MigrationError
from pydsqlite.migrate.sync import apply_schema, preview_schema
from pydsqlite.sql.source import schema_from_sql

EDGE_VALUES = [
    None, 0, 1, -1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**62 + 1, 2**63 - 1, -(2**63),
    0.5, 3.0, -2.0, 1e20, 2.0**53, 2.0**63, -(2.0**63), 9.223372036854776e18, 1e300, 0.1 + 0.2, 1 / 3, 5e-324,
    "", "abc", "12", "012", " 12", "12 ", "1e3", "1.5", "1.50", "3.0", "-7", "+7", "0x10",
    "9007199254740993", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "1e500",
    b"", b"x", b"12", b"\x80\xff",
]

SOURCES = ["", "INTEGER", "REAL", "TEXT", "BLOB", "NUMERIC"]
TARGETS = [("INTEGER", False), ("REAL", False), ("TEXT", False), ("BLOB", False), ("NUMERIC", False), ("", False),
           ("INTEGER", True), ("REAL", True), ("TEXT", True), ("BLOB", True), ("ANY", True)]


def cast_in_sqlite(value, affinity):
    """What SQLite's CAST makes of ``value`` (text that is not UTF-8 kept readable with surrogate escapes)."""
    with sqlite3.connect(":memory:") as scratch:
        scratch.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        return scratch.execute(f"SELECT CAST(? AS {affinity})", (value,)).fetchone()[0]


def is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def affinity_of(declared: str, strict: bool) -> str | None:
    if strict and declared == "ANY":
        return None
    return {"": "BLOB", "INTEGER": "INTEGER", "REAL": "REAL", "TEXT": "TEXT", "BLOB": "BLOB", "NUMERIC": "NUMERIC"}[declared]


def survives(value, new) -> bool:
    """The oracle, in Python: does ``new`` hold ``value`` exactly?"""
    if value is None:
        return new is None
    if isinstance(value, bytes) or isinstance(new, bytes):
        return type(value) is type(new) and value == new  # blobs never compare equal to text or numbers
    if isinstance(value, (int, float)) and isinstance(new, (int, float)):
        return value == new  # Python compares ints with floats exactly
    if isinstance(value, (int, float)):  # number -> text: SQLite must read the text back as the number
        return cast_in_sqlite(new, "REAL" if isinstance(value, float) else "INTEGER") == value
    if isinstance(new, str):
        return new == value
    if cast_in_sqlite(new, "TEXT") == value:  # text -> number: it must print back as the same text
        return True
    return isinstance(new, float) and cast_in_sqlite(value, "INTEGER") == new and str(cast_in_sqlite(value, "INTEGER")) == value


def expected_after(stored, source_affinity, target, strict, target_affinity):
    """What the rebuild stores: the value cast when the affinity (or strictness) changes, then
    stored under the target column's own affinity (SQLite itself decides, in a scratch table)."""
    cast = target and target_affinity is not None and (source_affinity != target_affinity or strict)
    with sqlite3.connect(":memory:") as scratch:
        scratch.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
        scratch.execute(f"CREATE TABLE x (v {target}){' STRICT' if strict else ''}")
        scratch.execute(f"INSERT INTO x VALUES ({f'CAST(? AS {target_affinity})' if cast else '?'})", (stored,))
        return scratch.execute("SELECT v FROM x").fetchone()[0]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


PAIRS = [(source, target, strict) for source in SOURCES for target, strict in TARGETS if (target, strict) != (source, False)]


@pytest.mark.parametrize(
    ("source", "target", "strict"), PAIRS,
    ids=[f"{source or 'untyped'}->{'STRICT ' if strict else ''}{target or 'untyped'}" for source, target, strict in PAIRS],
)
def test_a_type_change_is_destructive_exactly_for_the_values_it_would_change(source, target, strict):
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {source})")
    conn.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(EDGE_VALUES)))
    stored = dict(conn.execute("SELECT id, v FROM t").fetchall())
    options = " STRICT" if strict else ""
    desired = schema_from_sql(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {target}){options}")
    source_affinity = affinity_of(source, False)
    target_affinity = affinity_of(target, strict) if target else "BLOB"
    after = {key: expected_after(value, source_affinity, target, strict, target_affinity) for key, value in stored.items()}
    lost = sorted(key for key, value in stored.items() if not survives(value, after[key]))
    undecodable = [key for key, value in stored.items() if isinstance(value, bytes) and isinstance(after[key], str) and not is_utf8(value)]

    plan = preview_schema(conn, desired)
    assert bool(plan.problems) is bool(undecodable), plan
    if undecodable:  # bytes that are not UTF-8 never become TEXT, whatever is allowed
        assert f"t.v: {len(undecodable)} row" in plan.problems[0] and "not valid UTF-8" in plan.problems[0]
        with pytest.raises(MigrationError, match="not valid UTF-8"):
            apply_schema(conn, desired, allow_destructive=True)
        conn.executemany("DELETE FROM t WHERE id = ?", [(key,) for key in undecodable])
        stored = {key: value for key, value in stored.items() if key not in undecodable}
        lost = [key for key in lost if key not in undecodable]
        plan = preview_schema(conn, desired)
    counted = sum(op.row_count or 0 for op in plan.destructive_operations)
    assert counted == len(lost), (plan, [stored[key] for key in lost])
    if lost:
        with pytest.raises(DestructiveChangeError, match=rf"t\.v: {len(lost)} rows?: values (not stored as \w+ )?would change"):
            apply_schema(conn, desired)
        assert dict(conn.execute("SELECT id, v FROM t").fetchall()) == stored  # nothing changed
        apply_schema(conn, desired, allow_destructive=True)
    else:
        apply_schema(conn, desired)
    now = dict(conn.execute("SELECT id, v FROM t").fetchall())
    for key, value in stored.items():
        if key not in lost:
            assert survives(value, now[key]), (key, value, now[key])
            assert same(now[key], after[key]), (key, value, now[key], after[key])


def test_duplicates_that_are_not_utf8_once_cast_to_text_are_named_not_a_database_error():
    """Two equal non-UTF-8 blobs becoming TEXT under a unique index: both problems are listed, the
    duplicate's sample described rather than failing to decode."""
    conn = sqlite3.connect(":memory:")
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t VALUES (1, x'80'), (2, x'80');")
    desired = schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE UNIQUE INDEX t_v ON t (v);")
    plan = preview_schema(conn, desired, manage_all=True)
    assert any("not valid UTF-8" in problem and "cannot become TEXT" in problem for problem in plan.problems)
    assert "t.v: 2 rows: rows share a value that unique index t_v requires to be unique (e.g. a value that is not valid UTF-8 text)" in plan.problems
    with pytest.raises(MigrationError, match="not valid UTF-8"):
        apply_schema(conn, desired, manage_all=True)
    assert conn.execute("SELECT v FROM t ORDER BY id").fetchall() == [(b"\x80",), (b"\x80",)]


@pytest.mark.parametrize(
    ("live", "rows", "desired", "where", "sample"),
    [
        ("CREATE TABLE k (a PRIMARY KEY, b TEXT)", [(1, "int"), ("1", "text")],
         "CREATE TABLE k (a INTEGER NOT NULL PRIMARY KEY, b TEXT)", "k.a", "1"),
        ("CREATE TABLE k (a, b, c TEXT, PRIMARY KEY (a, b))", [(1, "x", "int"), ("1", "x", "text")],
         "CREATE TABLE k (a INTEGER NOT NULL, b TEXT NOT NULL, c TEXT, PRIMARY KEY (a, b))", "k.a, b", "(1, 'x')"),
        ("CREATE TABLE k (a TEXT NOT NULL PRIMARY KEY, c TEXT) WITHOUT ROWID", [("1.0", "x"), ("1", "y")],
         "CREATE TABLE k (a REAL NOT NULL PRIMARY KEY, c TEXT) WITHOUT ROWID", "k.a", "1.0"),
        ("CREATE TABLE k (a TEXT PRIMARY KEY, c TEXT)", [(None, "x"), (None, "y"), ("z", "z")],
         "CREATE TABLE k (a TEXT NOT NULL DEFAULT '' PRIMARY KEY, c TEXT)", "k.a", "''"),
        ("CREATE TABLE k (a TEXT NOT NULL PRIMARY KEY, c TEXT)", [("A", "x"), ("a", "y")],
         "CREATE TABLE k (a TEXT NOT NULL COLLATE NOCASE PRIMARY KEY, c TEXT)", "k.a", "'A'"),
        ("CREATE TABLE k (a TEXT NOT NULL, b TEXT NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID", [("x", "a "), ("x", "a")],
         "CREATE TABLE k (a TEXT NOT NULL, b TEXT NOT NULL COLLATE RTRIM, PRIMARY KEY (a, b)) WITHOUT ROWID", "k.a, b", "('x', 'a')"),
    ],
    ids=["cast", "composite", "without rowid", "filled NULLs", "collation", "composite collation"],
)
def test_keys_a_conversion_would_merge_are_refused_in_the_preview_and_the_sync(tmp_path, live, rows, desired, where, sample):
    """A CAST (or a default filling NULL keys) can give two rows one key: named as a problem with the
    row count and the shared value, before anything changes."""
    path = tmp_path / "k.db"
    conn = sqlite3.connect(path)
    conn.execute(live)
    conn.executemany(f"INSERT INTO k VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.commit()
    before = path.read_bytes()
    expected = f"{where}: 2 rows: rows share a value that the primary key requires to be unique (e.g. {sample})"
    assert expected in preview_schema(conn, schema_from_sql(desired)).problems
    with pytest.raises(MigrationError, match=re.escape(expected)):
        apply_schema(conn, schema_from_sql(desired), allow_destructive=True)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("default", "check"),
    [
        ("(datetime('now'))", "length(created) = 19"),
        ("(lower(hex(randomblob(16))))", "length(created) = 32"),
        ("CURRENT_TIMESTAMP", "length(created) = 19"),
        ("(1 + 1)", "created = 2"),
        ("'plain'", "created = 'plain'"),
        ("-9e999", "created < 0"),
    ],
)
def test_a_new_column_with_an_expression_default_is_added_to_a_table_with_rows(tmp_path, default, check):
    """SQLite's ADD COLUMN refuses a default that is not a literal once the table has rows, and
    PRAGMA table_xinfo reports ``(datetime('now'))`` without its parentheses: such a column is added
    by a rebuild, which fills every existing row, and the preview says so."""
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');")
    desired = schema_from_sql(f"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, created TEXT DEFAULT {default})")
    plan = preview_schema(conn, desired)
    assert not plan.problems
    apply_schema(conn, desired)
    assert conn.execute(f"SELECT count(*) FROM t WHERE {check}").fetchone() == (2,)
    assert preview_schema(conn, desired).is_empty


@pytest.mark.parametrize(("ids", "changed"), [((1, 2, 3), 0), ((10, 5, 3), 2)])
def test_a_key_becoming_the_rowid_is_destructive_where_rows_get_a_new_rowid(tmp_path, ids, changed):
    """``id INT PRIMARY KEY`` is not the rowid; ``INTEGER PRIMARY KEY`` is. Rebuilt so, each row's
    rowid becomes its id: an FTS index with content= the table (which finds rows by rowid) would
    return the wrong rows, so rowids that change make the step destructive, with the count."""
    path = tmp_path / "docs.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE docs (id INT PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO docs VALUES (?, ?)", [(id_, f"body {id_}") for id_ in ids])
    conn.commit()
    desired = schema_from_sql("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT)")
    plan = preview_schema(conn, desired)
    findings = [finding for operation in plan.operations for finding in operation.findings]
    if not changed:
        assert not plan.destructive_operations and not findings
        apply_schema(conn, desired)
    else:
        assert [f"docs.id: {changed} rows: rows get a new rowid" in finding for finding in findings] == [True]
        before = path.read_bytes()
        with pytest.raises(DestructiveChangeError, match="rows get a new rowid"):
            apply_schema(conn, desired)
        assert path.read_bytes() == before
        apply_schema(conn, desired, allow_destructive=True)
    assert conn.execute("SELECT count(*) FROM docs WHERE rowid = id").fetchone() == (len(ids),)


def test_rows_of_a_key_that_holds_nulls_are_named_by_rowid():
    """SQLite lets the key of a rowid table hold NULL (unless NOT NULL): such a key cannot name the
    offending row, its rowid can."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE k (code TEXT PRIMARY KEY, points INTEGER)")
    conn.executemany("INSERT INTO k VALUES (?, ?)", [("a", 1), (None, 2), (None, 3)])
    plan = preview_schema(conn, schema_from_sql("CREATE TABLE k (code TEXT NOT NULL PRIMARY KEY, points INTEGER)"))
    assert plan.problems == ("k.code: 2 rows: rows hold NULL but the column becomes NOT NULL with no default (e.g. the row with rowid 2)",)


def _untyped_to_text_model(rename: str) -> type:
    """t(id, k, v untyped, w TEXT) with v turned TEXT (5 and '5' become one value), and a rename."""
    from typing import Annotated, Optional

    from pydsqlite import Field, RenamedFrom, SyncModel

    v_name, w_name = ("v2" if rename == "the indexed column" else "v"), ("w2" if rename == "another column" else "w")
    annotations = {"id": int, "k": Optional[int], v_name: Optional[str], w_name: Optional[str]}
    namespace = {"__annotations__": annotations, "id": Field(default=None, primary_key=True), "k": None}
    namespace[v_name] = None
    namespace[w_name] = None
    if v_name != "v":
        annotations[v_name] = Annotated[Optional[str], RenamedFrom("v")]
    if w_name != "w":
        annotations[w_name] = Annotated[Optional[str], RenamedFrom("w")]
    return type(SyncModel)(f"T_{rename.replace(' ', '_')}", (SyncModel,), namespace, table="t")


@pytest.mark.parametrize("rename", ["none", "another column", "the indexed column"])
@pytest.mark.parametrize(
    "index",
    [
        "CREATE UNIQUE INDEX u ON t (v) WHERE k > 0",
        "CREATE UNIQUE INDEX u ON t (typeof(v))",
        "CREATE UNIQUE INDEX u ON t (v) WHERE w IS NOT NULL",
        "CREATE UNIQUE INDEX u ON t (k, quote(v)) WHERE v <> ''",
    ],
    ids=["partial", "expression", "partial reading another column", "expression and partial"],
)
def test_a_hand_made_unique_index_a_conversion_would_break_is_refused_along_with_renames(tmp_path, index, rename):
    """A hand-made partial or expression unique index names columns as they were when the rebuild
    replays it: with renames in the same migration its duplicates are still found, named with a count,
    in the preview and the sync (not a bare UNIQUE error from the replay)."""
    from pydsqlite import model_migration_plan, sync_models

    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        f"""
        CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v, w TEXT);
        INSERT INTO t VALUES (1, 1, 5, 'a'), (2, 1, '5', 'b'), (3, 2, NULL, 'c');
        {index};
        """
    )
    model = _untyped_to_text_model(rename)
    before = path.read_bytes()
    plan = model_migration_plan(conn, [model])
    assert any("2 rows: rows share a value that unique index u requires to be unique" in problem for problem in plan.problems), plan
    with pytest.raises(MigrationError, match="2 rows: rows share a value that unique index u requires to be unique"):
        sync_models(conn, [model])
    assert path.read_bytes() == before
    conn.execute("DELETE FROM t WHERE id = 2")
    conn.commit()
    assert model_migration_plan(conn, [model]).problems == ()
    sync_models(conn, [model])
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


@pytest.mark.parametrize("index", ["CREATE UNIQUE INDEX u ON t (v) WHERE k > 0", "CREATE UNIQUE INDEX u ON t ((typeof(v) || w))"])
def test_a_hand_made_unique_index_is_checked_when_the_migration_swaps_column_names(tmp_path, index):
    """v and w trade names while v turns TEXT (5 and '5' become one value): the index, replayed as
    written, reads the old v under its new name w. Its duplicates are named before anything changes."""
    from typing import Annotated, Optional

    from pydsqlite import Field, RenamedFrom, SyncModel, model_migration_plan, sync_models

    class Swapped(SyncModel, table="t"):
        id: int = Field(default=None, primary_key=True)
        k: Optional[int] = None
        w: Annotated[Optional[str], RenamedFrom("v")] = None
        v: Annotated[Optional[str], RenamedFrom("w")] = None

    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v, w TEXT); INSERT INTO t VALUES (1, 1, 5, 'x'), (2, 1, '5', 'x'); {index};")
    before = path.read_bytes()
    expected = "2 rows: rows share a value that unique index u requires to be unique"
    assert any(expected in problem for problem in model_migration_plan(conn, [Swapped]).problems)
    with pytest.raises(MigrationError, match=expected):
        sync_models(conn, [Swapped])
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([(1, "x", 0.1 + 0.2, 2**53 + 1)], 1),  # three columns lose a value, all in one row
        ([(1, "x", 1.5, 1), (2, "1", 0.1 + 0.2, 1), (3, "2", 2.5, 2**53 + 1)], 3),
        ([(1, "x", 0.1 + 0.2, 1), (2, "1", 1.5, 2**53 + 1), (3, "2", 2.5, 3)], 2),
    ],
)
def test_a_steps_row_count_counts_each_row_once_however_many_of_its_values_change(rows, expected):
    """``[N rows]`` and ``row_count`` say how many rows lose data: a row losing values in three
    columns is one row (it was counted three times), each column's finding keeps its own count."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b REAL, c INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    desired = schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL)")
    (operation,) = preview_schema(conn, desired).operations
    assert operation.destructive and operation.row_count == expected
    assert str(operation).split("\n")[0].endswith(f"[{expected} row{'s' if expected != 1 else ''}]")
    per_column = {finding.split(":")[0]: int(finding.split(": ")[1].split()[0]) for finding in operation.findings}
    lossy = {"t.a": sum(1 for row in rows if row[1] == "x"), "t.b": sum(1 for row in rows if row[2] == 0.1 + 0.2),
             "t.c": sum(1 for row in rows if row[3] == 2**53 + 1)}
    assert per_column == {column: count for column, count in lossy.items() if count}
