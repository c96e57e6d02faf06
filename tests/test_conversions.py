"""Type changes: a conversion is lossless exactly when every stored value survives it.

For every pair of source and target column types (plain and STRICT) and values at the
edges of each storage class, the plan must call the rebuild destructive exactly when some
value would change, count exactly those rows, and keep every other value exact.
"""

from __future__ import annotations

import math
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
        with pytest.raises(DestructiveChangeError, match=rf"t\.v: {len(lost)} rows?: values would change"):
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
