"""SQLite's refusals of a read or write as errors of our hierarchy, naming the model, table and
column, and what of the written rows broke a constraint: a foreign key's row and value, the
tables whose rows keep a deleted one."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ..engines import Engine
from ..engines.base import transaction_ended_by
from ..errors import (
    ConstraintError,
    EngineError,
    PydsqliteError,
    SchemaMismatchError,
    SqliteOperationalError,
    UsageError,
)
from ..schema.objects import fold_name
from ..sql.render import quote_identifier
from .codec import RowCodec


def closed_connection(where: str) -> UsageError:
    """The refusal of a call on a connection the application closed."""
    return UsageError(f"{where}: the connection is closed (conn.close() was called, or the Database that opened it was closed); open a new one")


def refused_commit(error: Exception) -> PydsqliteError:
    """The error of a ``db.transaction()`` block whose commit SQLite refused, after the block's code ran
    (a deferred constraint names no table: ``ConstraintError.table`` is empty)."""
    if transaction_ended_by(error):
        undone = "the whole transaction was rolled back, the writes pending before the block included"
    else:
        undone = "the block was rolled back (nothing of it was written; what was pending before it stays pending)"
    where = f"db.transaction(): SQLite refused to end the block, so {undone}"
    constraint = constraint_named(error)
    if constraint is not None:
        return ConstraintError("", constraint, f"{where}: {error} (a deferred constraint: a row written in the transaction breaks it)")
    if "statements in progress" in str(error):  # SQLITE_BUSY, but from this connection, not another one
        return SqliteOperationalError(
            f"{where}: {error}; a statement of yours is still running on this connection (a cursor not read to the end, "
            "such as a RETURNING query's): read or close it before the block ends",
            code=result_code(error),
        )
    return engine_refusal(where, error)


def result_code(error: Exception) -> int | None:
    """SQLite's primary result code of a driver's error (the low byte of an extended code), if it gives one."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        code = getattr(error, "code", None)
    return code & 0xFF if isinstance(code, int) else None


_BUSY_SNAPSHOT = 517
def unopenable(where: str, error: Exception) -> EngineError:
    """The refusal of a database file SQLite cannot open, ``where`` naming the call and its path."""
    return engine_refusal(f"{where}: cannot open the database file (does its folder exist, may this process write there?)", error)


def engine_refusal(where: str, error: Exception) -> EngineError:
    """The engine's refusal of a read or write that no more precise error describes (the database is
    locked by another connection, a disk error), as ``EngineError`` saying ``where`` ("Model (table
    't')"), with SQLite's primary result code. A refusal of the ``sqlite3`` driver becomes a
    ``SqliteOperationalError``, still an ``sqlite3.OperationalError`` with the driver's attributes."""
    code = result_code(error)
    hint = ""
    if getattr(error, "sqlite_errorcode", None) == _BUSY_SNAPSHOT:
        hint = (
            "; another connection wrote since this connection's read began (an iter_select still being iterated, a "
            "read transaction, or the transaction an autocommit=False connection keeps open since its last commit), and "
            "SQLite cannot turn that read into a write: finish the read first (on an autocommit=False connection, "
            "conn.commit() or conn.rollback()), or write through another connection"
        )
    elif code in (5, 6):
        hint = (
            "; another connection holds the lock, and the connection's busy timeout ran out (or SQLite refused at "
            "once: this connection's own unfinished read, such as an iter_select, would deadlock with that writer)"
        )
    message = f"{where}: {error}{hint}"
    if isinstance(error, EngineError):  # an engine's own (dqlite): the same class, naming where it happened
        refusal = type(error)(message, code=code)
    elif isinstance(error, sqlite3.OperationalError):
        refusal = SqliteOperationalError(message, code=code)
        refusal.sqlite_errorcode = getattr(error, "sqlite_errorcode", code or 0)  # absent from an error made by hand
        refusal.sqlite_errorname = getattr(error, "sqlite_errorname", "")
    else:
        refusal = EngineError(message, code=code)
    return refusal


def described(codec: RowCodec) -> str:
    return f"{codec.model.__qualname__} (table {codec.name!r})"


_CONSTRAINT = re.compile(r"(UNIQUE|NOT NULL|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed(?::\s*(.*))?", re.IGNORECASE)


def constraint_named(error: Exception) -> str | None:
    """The constraint SQLite names in ``error`` ("UNIQUE people.email", "FOREIGN KEY"), if it names one."""
    match = _CONSTRAINT.search(str(error))
    return None if match is None else f"{match.group(1).upper()} {(match.group(2) or '').strip()}".strip()


def constraint_error(codec: RowCodec, error: Exception, culprit: str | None = None) -> ConstraintError:
    """``ConstraintError`` naming the table and constraint, and ``culprit`` (what of the written rows breaks it) when known."""
    constraint = constraint_named(error) or "constraint"
    if transaction_ended_by(error):
        what = (
            "SQLite rolled back the whole transaction it was part of, so the writes pending before it on this connection "
            "are gone too (a trigger's RAISE(ROLLBACK) or an ON CONFLICT ROLLBACK clause)"
        )
    else:
        what = "rolled back"
    found = f": {culprit}" if culprit else ""
    return ConstraintError(codec.name, constraint, f"write to table {codec.name!r} violates {constraint}{found}; {what} ({error})")


def references_to(engine: Engine, codec: RowCodec, key: tuple[Any, ...] | None) -> str | None:
    """The tables whose rows still reference the row with ``key`` through a foreign key that keeps it
    (ON DELETE NO ACTION or RESTRICT; read after the delete was rolled back), as "rows of items
    (shop_id) reference it"; None when none is found (a row further down a cascade refused it)."""
    if key is None or not codec.key:
        return None
    by_column = dict(zip(map(fold_name, codec.key), key, strict=True))
    links: dict[tuple[str, int], list[tuple[str, str | None]]] = {}
    for child, ident, column, referenced in engine.execute(
        'SELECT m.name, f.id, f."from", f."to" FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f '
        "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE AND f.on_delete IN ('NO ACTION', 'RESTRICT') "
        "ORDER BY m.name, f.id, f.seq",
        (codec.name,),
    ).fetchall():
        links.setdefault((child, ident), []).append((column, referenced))
    found = []
    for (child, _), pairs in links.items():
        parent_columns = [fold_name(referenced) if referenced else fold_name(name) for (_, referenced), name in zip(pairs, codec.key, strict=False)]
        if len(parent_columns) != len(pairs) or any(name not in by_column for name in parent_columns):
            continue
        where = " AND ".join(f"{quote_identifier(column)} = ?" for column, _ in pairs)
        if engine.execute(f"SELECT 1 FROM {quote_identifier(child)} WHERE {where} LIMIT 1", [by_column[name] for name in parent_columns]).fetchone():
            found.append(f"{child} ({', '.join(column for column, _ in pairs)})")
    return f"rows of {', '.join(found)} reference the row with key {key!r}" if found else None


def row_without_parent(engine: Engine, codec: RowCodec, rows: Sequence[BaseModel]) -> str | None:
    """The first written row whose foreign key finds no parent row, read after the write was rolled
    back (a parent the same rows give, in a table referencing itself, counts as there), as "the row
    with key …: column = value, which no row of parent(column) holds"; None when none is found."""
    stored_rows = [codec.values(row) for row in rows]
    folded_fields = [fold_name(name) for name in codec.fields]
    for key in sorted(codec.table.foreign_keys, key=lambda key: key.deferred):  # a deferred key fails only at COMMIT
        if not key.ref_columns or any(fold_name(name) not in folded_fields for name in key.columns):
            continue
        positions = [folded_fields.index(fold_name(name)) for name in key.columns]
        probe = (
            f"SELECT 1 FROM {quote_identifier(key.ref_table)} WHERE "
            + " AND ".join(f"{quote_identifier(name)} = ?" for name in key.ref_columns) + " LIMIT 1"
        )
        given: set[tuple[Any, ...]] = set()  # parent values the rows give themselves (a table referencing itself)
        if fold_name(key.ref_table) == fold_name(codec.name) and all(fold_name(name) in folded_fields for name in key.ref_columns):
            referenced = [folded_fields.index(fold_name(name)) for name in key.ref_columns]
            given = {tuple(stored[position] for position in referenced) for stored in stored_rows}
        for row, stored in zip(rows, stored_rows, strict=True):
            values = [stored[position] for position in positions]
            if any(value is None for value in values) or tuple(values) in given:
                continue
            try:
                found = engine.execute(probe, values).fetchone()
            except engine.Error:
                return None
            if found is None:
                held = ", ".join(f"{name} = {value!r}" for name, value in zip(key.columns, values, strict=True))
                row_key = tuple(codec.key_of(row)) if codec.key else (None,)
                which = "a new row" if None in row_key else f"the row with key {row_key!r}"
                return f"{which} has {held}, which no row of {key.ref_table}({', '.join(key.ref_columns)}) holds"
    return None


_NO_TABLE = re.compile(r"no such table: (?:main\.)?(.+)")
NO_COLUMN = re.compile(r"no such column: (.+)|table .+ has no column named (.+)")


def schema_error(codec: RowCodec, error: Exception) -> SchemaMismatchError | None:
    """SQLite's "no such table/column" (identifiers are quoted in grave accents, so a missing one is
    always an error) as ``SchemaMismatchError``; None for other errors."""
    text = str(error)
    missing_table = _NO_TABLE.match(text)
    if missing_table:
        table = missing_table.group(1)
        if fold_name(table) != fold_name(codec.name):
            return SchemaMismatchError(table, None, f"no table {table!r} in the database (named in a condition on {codec.name!r})")
        return SchemaMismatchError(
            table,
            None,
            f"table {table!r} of {codec.model.__qualname__} does not exist in the database: "
            "run sync_models(conn, [...]) with the model first",
        )
    no_column = NO_COLUMN.match(text)
    if no_column:
        column = no_column.group(1) or no_column.group(2)
        prefix = codec.name + "."
        if fold_name(column).startswith(fold_name(prefix)):
            column = column[len(prefix) :]
        return missing_column(codec, column, "the query")
    return None


def missing_column(codec: RowCodec, column: str, named_in: str) -> SchemaMismatchError:
    """A column the table lacks: one the model needs means the database is behind the model,
    any other name is a misspelling (in a condition, SQL text or ``order_by``)."""
    model = codec.model.__qualname__
    if fold_name(column) in {fold_name(item.name) for item in codec.table.columns}:
        message = (
            f"table {codec.name!r} has no column {column!r}, which {model} needs: the database is behind the "
            "model; run sync_models(conn, [...]) with it to migrate the table"
        )
    else:
        message = f"{named_in} names {column!r}, which is not a field of {model} (fields: {', '.join(codec.fields)})"
        if named_in != "order_by":
            message += f" nor a column of table {codec.name!r}"
    return SchemaMismatchError(codec.name, column, message)
