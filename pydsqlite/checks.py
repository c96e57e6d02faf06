"""Builders of the data checks: COUNT queries that find rows a migration step would reject or lose."""

from __future__ import annotations

from dataclasses import replace

from .migration import DataCheck
from .schema import Column, ForeignKey
from .sqltext import quote_identifier


def duplicates_check(table: str, source: str, columns: tuple[str, ...], what: str) -> DataCheck:
    """Rows of ``source`` whose values in ``columns`` repeat (NULLs never collide, as in SQLite's UNIQUE)."""
    names = ", ".join(quote_identifier(column) for column in columns)
    not_null = " AND ".join(f"{quote_identifier(column)} IS NOT NULL" for column in columns)
    grouped = f"SELECT {names}, COUNT(*) AS n FROM {source} WHERE {not_null} GROUP BY {names} HAVING COUNT(*) > 1"
    return DataCheck(
        table=table,
        column=", ".join(columns),
        problem=f"rows share a value that {what} requires to be unique",
        blocking=True,
        count_sql=f"SELECT COALESCE(SUM(n), 0) FROM ({grouped})",
        sample_sql=f"SELECT {names} FROM ({grouped}) LIMIT 1",
    )


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
