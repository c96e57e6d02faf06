"""Builders of the data checks: COUNT queries that find rows a migration step would reject or lose."""

from __future__ import annotations

from dataclasses import replace

from .ddl_parser import strip_sort_order
from .migration import DataCheck
from .schema import Column, ForeignKey, Table
from .sqltext import quote_identifier, render_collation


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


def unique_terms(table: Table, terms: tuple[str, ...]) -> tuple[str, ...]:
    """The SQL that a unique key or index over ``terms`` of ``table`` compares: a column under
    its own collation (so a new NOCASE finds case-duplicates), an expression as written."""
    out = []
    for term in terms:
        column = table.column(term)
        if column is not None:
            out.append(f"{quote_identifier(column.name)} COLLATE {render_collation(column.collate or 'BINARY')}")
        else:
            out.append(f"({strip_sort_order(term)})")
    return tuple(out)


def row_check(
    table: str, column: str | None, problem: str, source: str, condition: str, *, blocking: bool, sample: str | None = None
) -> DataCheck:
    """Rows of ``source`` for which ``condition`` is true; ``sample`` is shown for the first one."""
    return DataCheck(
        table=table,
        column=column,
        problem=problem,
        blocking=blocking,
        source=source,
        condition=condition,
        sample_sql=f"SELECT {sample} FROM {source} WHERE {condition} LIMIT 1" if sample else None,
    )


def dropped_values_check(table: str, live_table: str, column: Column) -> DataCheck:
    """Non-NULL values that dropping ``column`` deletes (counted in ``live_table``, before any rename)."""
    quoted = quote_identifier(column.name)
    return row_check(
        table, column.name, "values would be deleted with the column", quote_identifier(live_table), f"{quoted} IS NOT NULL",
        blocking=False,
    )


def orphans_check(table: str, source: str, key: ForeignKey, parent: str) -> DataCheck:
    """Rows of ``source`` whose new foreign key points at no row of ``parent`` (the parent table's
    current name). Asked only when foreign keys are enforced: then they would fail the migration."""
    columns = [quote_identifier(column) for column in key.columns]
    present = " AND ".join(f"{column} IS NOT NULL" for column in columns)
    matches = " AND ".join(f"p.{quote_identifier(ref)} = {column}" for ref, column in zip(key.ref_columns, columns, strict=True))
    check = row_check(
        table, ", ".join(key.columns), f"rows reference no row of {key.ref_table} through the new foreign key",
        source, f"{present} AND NOT EXISTS (SELECT 1 FROM {quote_identifier(parent)} AS p WHERE {matches})",
        blocking=True, sample=", ".join(columns),
    )
    return replace(check, when_foreign_keys_on=True)


def table_rows_check(table: str) -> DataCheck:
    """Rows that dropping ``table`` deletes."""
    return row_check(table, None, "rows would be deleted with the table", quote_identifier(table), "1", blocking=False)


_LOSSY = {
    "INTEGER": "typeof({c}) IN ('real', 'text', 'blob') AND NOT ((typeof({c}) = 'real' AND {c} = CAST({c} AS INTEGER))"
    " OR (typeof({c}) = 'text' AND CAST(CAST({c} AS INTEGER) AS TEXT) = {c}))",
    "REAL": "typeof({c}) IN ('integer', 'text', 'blob') AND NOT ((typeof({c}) = 'integer' AND CAST(CAST({c} AS REAL) AS INTEGER) = {c})"
    " OR (typeof({c}) = 'text' AND (CAST(CAST({c} AS REAL) AS TEXT) = {c} OR CAST(CAST({c} AS INTEGER) AS TEXT) = {c})))",
    "NUMERIC": "typeof({c}) IN ('text', 'blob') AND NOT (typeof({c}) = 'text' AND CAST(CAST({c} AS NUMERIC) AS TEXT) = {c})",
    "TEXT": "typeof({c}) IN ('real', 'blob') AND NOT ((typeof({c}) = 'real' AND CAST(CAST({c} AS TEXT) AS REAL) = {c})"
    " OR (typeof({c}) = 'blob' AND pydsqlite_is_utf8({c})))",
    "BLOB": "typeof({c}) IN ('integer', 'real')",
}
"""Per CAST target: the values that would not read back unchanged. The leading typeof()
test lets the common, lossless storage class skip the rest of the expression."""


def conversion_check(table: str, live_table: str, old: Column, new: Column, cast: str) -> DataCheck:
    """Rows whose value would not survive ``CAST(old AS cast)`` unchanged."""
    quoted = quote_identifier(old.name)
    return row_check(
        table, new.name, f"values would change when converted from {old.type or 'untyped'} to {new.type}",
        quote_identifier(live_table), f"({_LOSSY[cast].format(c=quoted)})", blocking=False, sample=quoted,
    )
