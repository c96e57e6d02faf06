"""Builders of the data checks: COUNT queries that find rows a migration step would reject or lose."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..engines import Engine
from ..schema.objects import Column, ForeignKey, Table, fold_name
from ..sql.ddl import strip_sort_order
from ..sql.render import quote_identifier, render_collation
from .migration import DataCheck


def duplicates_check(table: str, source: str, terms: tuple[str, ...], label: str, what: str, where: str | None = None) -> DataCheck:
    """Rows of ``source`` whose values of ``terms`` (SQL over ``source``, each with its collation)
    repeat, among the rows matching ``where`` (a partial index). NULLs never collide, as in SQLite's UNIQUE."""
    grouped_terms = ", ".join(terms)
    keys = [f"k{position}" for position in range(len(terms))]
    selected = ", ".join(f"{term} AS {key}" for term, key in zip(terms, keys, strict=True))
    conditions = [f"({term}) IS NOT NULL" for term in terms]
    if where:
        conditions.insert(0, f"({where})")
    grouped = (
        f"SELECT {selected}, COUNT(*) AS n FROM {source} WHERE {' AND '.join(conditions)} "
        f"GROUP BY {grouped_terms} HAVING COUNT(*) > 1"
    )
    return DataCheck(
        table=table,
        column=label,
        problem=f"rows share a value that {what} requires to be unique",
        blocking=True,
        count_sql=f"SELECT COALESCE(SUM(n), 0) FROM ({grouped})",
        sample_sql=f"SELECT {', '.join(keys)} FROM ({grouped}) LIMIT 1",
    )


def unique_terms(table: Table, terms: tuple[str, ...], collations: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The SQL that a unique key or index over ``terms`` of ``table`` compares: a column under
    the collation it will use (``collations``, else its own: so a new NOCASE finds
    case-duplicates), an expression as written."""
    out = []
    for position, term in enumerate(terms):
        column = table.column(term)
        if column is not None:
            collation = collations[position] if position < len(collations) else (column.collate or "BINARY")
            out.append(f"{quote_identifier(column.name)} COLLATE {render_collation(collation)}")
        else:
            out.append(f"({strip_sort_order(term)})")
    return tuple(out)


def row_check(
    table: str,
    column: str | None,
    problem: str,
    source: str,
    condition: str,
    *,
    blocking: bool,
    sample: str | None = None,
    sample_key: str | None = None,
) -> DataCheck:
    """Rows of ``source`` for which ``condition`` is true; ``sample`` is shown for the first one:
    its value, or (``sample_key`` naming the key it starts with) the row's key, then the value of
    ``column`` if it samples that too."""
    return DataCheck(
        table=table,
        column=column,
        problem=problem,
        blocking=blocking,
        source=source,
        condition=condition,
        sample_sql=f"SELECT {sample} FROM {source} WHERE {condition} LIMIT 1" if sample else None,
        sample_key=sample_key,
    )


def dropped_values_check(table: str, live_table: str, column: Column) -> DataCheck:
    """Non-NULL values that dropping ``column`` deletes (counted in ``live_table``, before any rename)."""
    quoted = quote_identifier(column.name)
    check = row_check(
        table, column.name, "values would be deleted with the column", quote_identifier(live_table), f"{quoted} IS NOT NULL",
        blocking=False,
    )
    return replace(check, drops=True, non_null=quoted)


_CHILD = "_pydsqlite_child"
"""Alias of the rows an orphans check reads: inside its subquery over the parent table an
unqualified column would name the parent's own column of that name (always, for a table
that references itself)."""


def no_parent_condition(
    child: list[str], parent: str, parent_columns: tuple[str, ...] | list[str], collations: tuple[str, ...] | None = None
) -> str:
    """SQL true for a child row whose key terms (``child``, SQL over the child row, all non-NULL)
    match no row of ``parent`` (``parent_columns`` by position), compared as a foreign key compares:
    with the parent column's affinity (``+`` takes the child term's own away, so the parent's applies
    to it: an INTEGER child ``1`` does not find the TEXT parent ``'01'``) and its collation, or the
    ``collations`` the parent columns get in the migration."""
    present = " AND ".join(f"{term} IS NOT NULL" for term in child)
    matches = " AND ".join(
        f"p.{quote_identifier(ref)} = +{term}" + (f" COLLATE {render_collation(collations[n])}" if collations else "")
        for n, (ref, term) in enumerate(zip(parent_columns, child, strict=True))
    )
    return f"{present} AND NOT EXISTS (SELECT 1 FROM {quote_identifier(parent)} AS p WHERE {matches})"


def orphans_check(
    table: str,
    source: str,
    key: ForeignKey,
    parent: str,
    *,
    new_key: bool,
    parent_columns: tuple[str, ...] | None = None,
    collations: tuple[str, ...] | None = None,
) -> DataCheck:
    """Rows of ``source`` whose foreign key points at no row of ``parent`` (the parent table's
    current name; ``parent_columns``: its referenced columns' current names, when the plan renames
    them; ``collations``: theirs after the migration). For a ``new_key`` asked whatever ``PRAGMA
    foreign_keys`` says: a constraint the rows violate from the moment it exists is a broken schema
    (``foreign_key_check`` fails, and the day foreign keys are on, so do writes); for a key that
    existed, only when foreign keys are enforced (with them off, orphans may have been there all along)."""
    columns = [f"{_CHILD}.{quote_identifier(column)}" for column in key.columns]
    problem = f"rows reference no row of {key.ref_table}" + (f" through the new foreign key to {key.ref_table}({', '.join(key.ref_columns)})" if new_key else "")
    check = row_check(
        table, ", ".join(key.columns), problem,
        f"{source} AS {_CHILD}", no_parent_condition(columns, parent, parent_columns or key.ref_columns, collations),
        blocking=True, sample=", ".join(columns),
    )
    return check if new_key else replace(check, when_foreign_keys_on=True)


def references_to_a_created_table_check(table: str, source: str, key: ForeignKey) -> DataCheck:
    """Rows of ``source`` that the new foreign key makes reference a table this migration creates:
    that table holds no rows yet, so every reference (no key column NULL) finds no parent. Asked
    whatever ``PRAGMA foreign_keys`` says, as for any new key."""
    columns = [f"{_CHILD}.{quote_identifier(column)}" for column in key.columns]
    return row_check(
        table, ", ".join(key.columns),
        f"rows reference no row of {key.ref_table} through the new foreign key to {key.ref_table}({', '.join(key.ref_columns)}), "
        "a table this migration creates empty",
        f"{source} AS {_CHILD}", " AND ".join(f"{column} IS NOT NULL" for column in columns),
        blocking=True, sample=", ".join(columns),
    )


def converted_orphans_check(
    table: str,
    live_table: str,
    key: ForeignKey,
    parent: str,
    pairs: list[tuple[str, str]],
    parent_columns: tuple[str, ...] | None = None,
    collations: tuple[str, ...] | None = None,
) -> DataCheck:
    """Rows of ``live_table`` that the copy gives a new value (``pairs``: each key column's copy term and
    old value) that no row of ``parent`` holds (``parent_columns``: as for ``orphans_check``): a default
    filling NULLs, a conversion. Rows that referenced no parent before are left to the foreign-key
    check, which lets what was there stay.
    Asked whatever ``PRAGMA foreign_keys`` says: the migration itself would break those references."""
    selected = ", ".join(f"{term} AS k{n}, {old} AS o{n}" for n, (term, old) in enumerate(pairs))
    new = [f"{_CHILD}.k{n}" for n in range(len(pairs))]
    changed = " OR ".join(f"{_CHILD}.k{n} IS NOT {_CHILD}.o{n}" for n in range(len(pairs)))
    return row_check(
        table, ", ".join(key.columns), f"the migration gives rows a value no row of {key.ref_table} holds, which the foreign key refuses",
        f"(SELECT {selected} FROM {quote_identifier(live_table)}) AS {_CHILD}",
        f"({changed}) AND {no_parent_condition(new, parent, parent_columns or key.ref_columns, collations)}",
        blocking=True, sample=", ".join(new),
    )


def table_rows_check(table: str) -> DataCheck:
    """Rows that dropping ``table`` deletes."""
    check = row_check(table, None, "rows would be deleted with the table", quote_identifier(table), "1", blocking=False)
    return replace(check, drops=True)


def _text_equal(a: str, b: str) -> str:
    """Exact text comparison, whatever the operands' affinities and collations."""
    return f"CAST({a} AS TEXT) = CAST({b} AS TEXT) COLLATE BINARY"


def lossy_condition(value: str, cast: str, affinity: str | None = None) -> str:
    """SQL that is true when ``CAST(value AS cast)`` would not keep ``value`` exactly.

    A conversion is lossless only when the converted value converts back to the original
    exactly (numbers compared exactly, text byte for byte), and the value does not cross
    between the text/number classes and blobs (a blob never compares equal to text).
    ``'000123'`` to INTEGER, 2**53 + 1 to REAL, ``0.1 + 0.2`` to TEXT (15 digits) and text to
    BLOB are lossy; 5 to TEXT, 3.0 to INTEGER and ``'12'`` to INTEGER or REAL are not.
    The storage class most values of a column with ``affinity`` have is tested first: the
    check evaluates this once per row.
    """
    new = f"CAST({value} AS {cast})"
    numeric_back = f"{new} = {value}"  # SQLite compares integers with reals exactly
    text_back = _text_equal(new, value)
    if cast == "NUMERIC":  # a NUMERIC column then stores a whole REAL as an INTEGER: compare what is stored
        text_back = _text_equal(f"CASE WHEN typeof({new}) = 'real' AND {new} = CAST({new} AS INTEGER) THEN CAST({new} AS INTEGER) ELSE {new} END", value)
    integer_text = f"({_text_equal(f'CAST({value} AS INTEGER)', value)} AND CAST({value} AS INTEGER) = {new})"
    by_class = {
        "INTEGER": {"integer": "0", "real": f"NOT ({numeric_back})", "text": f"NOT ({text_back})"},
        "REAL": {"integer": f"NOT ({numeric_back})", "real": "0", "text": f"NOT ({text_back} OR {integer_text})"},
        "NUMERIC": {"integer": "0", "real": f"NOT ({numeric_back})", "text": f"NOT ({text_back})"},
        "TEXT": {"integer": "0", "real": f"NOT (CAST({new} AS REAL) = {value})", "text": "0"},
        "BLOB": {"blob": "0"},
    }[cast]
    arms = {"null": "0", **by_class}
    likely = _LIKELY_CLASS.get(affinity or "")
    if likely in arms:
        arms = {likely: arms.pop(likely), **arms}
    whens = " ".join(f"WHEN '{kind}' THEN {test}" for kind, test in arms.items())
    return f"CASE typeof({value}) {whens} ELSE 1 END"


def lossy_values(engine: Engine, values: list[Any], cast: str) -> list[bool]:
    """For each value (as SQLite stores it), whether ``CAST(value AS cast)`` would not keep it
    exactly: ``lossy_condition`` asked of values held outside a table (a deleted row's kept
    state), so they are judged as a table's rows are. A few hundred values per statement."""
    flags: list[bool] = []
    for start in range(0, len(values), _VALUES_PER_STATEMENT):
        chunk = values[start : start + _VALUES_PER_STATEMENT]
        rows = ", ".join("(?)" for _ in chunk)
        flags.extend(bool(flag) for (flag,) in engine.execute(f"SELECT {lossy_condition('column1', cast)} FROM (VALUES {rows})", chunk))
    return flags


_VALUES_PER_STATEMENT = 500
"""Below SQLite's default limit of host parameters (999 before 3.32) and its compound-SELECT depth."""

_LIKELY_CLASS = {"INTEGER": "integer", "NUMERIC": "integer", "REAL": "real", "TEXT": "text"}
"""The storage class a column of each affinity holds for almost every value it was given."""


UTF8_FUNCTION = "pydsqlite_is_utf8"
"""SQL function the data checks register: whether a blob would read back as text (SQLite has no UTF-8 validator)."""


def conversion_checks(table: str, live_table: str, old: Column, new: Column, cast: str) -> tuple[DataCheck, ...]:
    """Rows whose value would not survive ``CAST(old AS cast)`` unchanged; for TEXT, also blobs that
    are not UTF-8 and so would become text no reader can decode (refused even when losses are allowed).
    ``value >= x''`` holds for blobs alone (numbers and text sort before every blob, and no
    affinity converts a blob): a comparison, cheaper per row than ``typeof()``."""
    quoted = quote_identifier(old.name)
    source = quote_identifier(live_table)
    if fold_name(old.type or "") == fold_name(new.type or ""):  # a STRICT table takes only values of its type
        problem = f"values not stored as {new.type} would change when converted to it"
    else:
        problem = f"values would change when converted from {old.type or 'untyped'} to {new.type}"
    lossy = lossy_condition(quoted, cast, old.affinity)
    converted = f"CAST({quoted} AS {cast})"
    meaning_changes = f"CAST({converted} AS REAL) IS NOT CAST({quoted} AS REAL)"  # '1e3' -> 1 before '0012' -> 12
    checks = [
        replace(
            row_check(table, new.name, problem, source, lossy, blocking=False),
            sample_sql=f"SELECT {quoted}, {converted} FROM {source} WHERE {lossy} ORDER BY {meaning_changes} DESC LIMIT 1",
            sample_becomes=True,
        )
    ]
    if cast == "TEXT":
        blobs = row_check(
            table, new.name, "blob values are not valid UTF-8 text, so they cannot become TEXT",
            source, f"{quoted} >= x'' AND NOT {UTF8_FUNCTION}({quoted})", blocking=True, sample=quoted,
        )
        checks.append(replace(blobs, utf8_column=quoted))
    return tuple(checks)


def rowid_values_check(table: str, live_table: str, old: Column, new: Column) -> DataCheck:
    """Rows whose key cannot become the rowid: an ``INTEGER PRIMARY KEY`` takes integers alone
    (and NULL, for which SQLite picks a new key). Asked when a column copied as it is (same
    INTEGER type, no CAST) becomes the rowid; its other values would stop the copy with
    "datatype mismatch"."""
    quoted = quote_identifier(old.name)
    return row_check(
        table, new.name, "values are not integers, so they cannot become the rowid key (INTEGER PRIMARY KEY)",
        quote_identifier(live_table), f"typeof({quoted}) NOT IN ('integer', 'null')", blocking=True, sample=quoted,
    )


def rowid_change_check(table: str, live_table: str, new: Column, key: str) -> DataCheck:
    """Rows whose rowid the rebuild changes: a key that becomes the rowid (``INTEGER PRIMARY KEY``)
    gives each row its key value as rowid, where the table numbered its rows apart from the key
    before. What keeps this table's rowids (an FTS index with ``content=`` it, rowids an app
    saved) no longer matches, so the rows count as changed (destructive), not as copied."""
    return row_check(
        table, new.name,
        "rows get a new rowid, as the key becomes the rowid (INTEGER PRIMARY KEY): whatever keeps this table's rowids "
        "no longer matches them (rebuild an FTS index whose content= is this table afterwards: "
        "INSERT INTO <fts table>(<fts table>) VALUES('rebuild'))",
        quote_identifier(live_table), f"rowid IS NOT {key}", blocking=False,
        sample=f"'rowid ' || rowid || ' becomes ' || quote({key})",
    )
