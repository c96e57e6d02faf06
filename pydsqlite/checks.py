"""Builders of the data checks: COUNT queries that find rows a migration step would reject or lose."""

from __future__ import annotations

from .migration import DataCheck
from .schema import Column
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
        count_sql=f"SELECT COALESCE(SUM(n), 0) FROM ({grouped})",
        sample_sql=f"SELECT {names} FROM ({grouped}) LIMIT 1",
        blocking=True,
    )


def dropped_values_check(table: str, live_table: str, column: Column) -> DataCheck:
    """Non-NULL values that dropping ``column`` deletes (counted in ``live_table``, before any rename)."""
    return DataCheck(
        table=table,
        column=column.name,
        problem="values would be deleted with the column",
        count_sql=f"SELECT COUNT(*) FROM {quote_identifier(live_table)} WHERE {quote_identifier(column.name)} IS NOT NULL",
        sample_sql=None,
        blocking=False,
    )


def table_rows_check(table: str) -> DataCheck:
    """Rows that dropping ``table`` deletes."""
    return DataCheck(
        table=table,
        column=None,
        problem="rows would be deleted with the table",
        count_sql=f"SELECT COUNT(*) FROM {quote_identifier(table)}",
        sample_sql=None,
        blocking=False,
    )


_SURVIVES = {
    "INTEGER": "typeof({c}) IN ('null', 'integer') OR (typeof({c}) = 'real' AND {c} = CAST({c} AS INTEGER))"
    " OR (typeof({c}) = 'text' AND CAST(CAST({c} AS INTEGER) AS TEXT) = {c})",
    "REAL": "typeof({c}) IN ('null', 'real') OR (typeof({c}) = 'integer' AND CAST(CAST({c} AS REAL) AS INTEGER) = {c})"
    " OR (typeof({c}) = 'text' AND (CAST(CAST({c} AS REAL) AS TEXT) = {c} OR CAST(CAST({c} AS INTEGER) AS TEXT) = {c}))",
    "NUMERIC": "typeof({c}) IN ('null', 'integer', 'real')"
    " OR (typeof({c}) = 'text' AND CAST(CAST({c} AS NUMERIC) AS TEXT) = {c})",
    "TEXT": "typeof({c}) IN ('null', 'text', 'integer')"
    " OR (typeof({c}) = 'real' AND CAST(CAST({c} AS TEXT) AS REAL) = {c})"
    " OR (typeof({c}) = 'blob' AND pydsqlite_is_utf8({c}))",
    "BLOB": "typeof({c}) IN ('null', 'blob', 'text')",
}


def conversion_check(table: str, live_table: str, old: Column, new: Column, cast: str) -> DataCheck:
    """Rows whose value would not survive ``CAST(old AS cast)`` unchanged."""
    quoted = quote_identifier(old.name)
    survives = _SURVIVES[cast].format(c=quoted)
    where = f"NOT ({survives})"
    return DataCheck(
        table=table,
        column=new.name,
        problem=f"values would change when converted from {old.type or 'untyped'} to {new.type}",
        count_sql=f"SELECT COUNT(*) FROM {quote_identifier(live_table)} WHERE {where}",
        sample_sql=f"SELECT {quoted} FROM {quote_identifier(live_table)} WHERE {where} LIMIT 1",
        blocking=False,
    )
