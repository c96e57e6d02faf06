"""Desired state from SQL text or another database: just other producers of a ``Schema``.

The DDL is loaded into an in-memory database and introspected, so it means exactly
what SQLite makes of it. Rename hints in comments (``-- @renamed from=old`` after a
column definition, or on the CREATE TABLE line for the table) become ``renamed_from``,
as with ``RenamedFrom`` on a model.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from typing import Any

from ..engines import SqliteEngine, engine_for, is_connection
from ..engines.sqlite import connect_read_only
from ..errors import MigrationError, SchemaDefinitionError
from ..migrate.dependants import broken_objects
from ..migrate.introspect import introspect
from ..migrate.rehearse import execute_standing_in
from ..replica.capture import capture_setup, capture_triggers, is_capture_trigger
from ..schema.objects import Schema, fold_name
from .ddl import split_statements, table_body_columns, tokenize

_UNKNOWN_HERE = re.compile(r"no such (function|collation sequence|module)")
_RENAME_HINT = re.compile(r"""(?:--|/\*)\s*@renamed\s+from\s*=\s*("(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[^\s*]+)""", re.IGNORECASE)


def schema_from_sql(ddl: str) -> Schema:
    """The ``Schema`` that the DDL script ``ddl`` creates (tables, indexes, triggers, views),
    as SQLite reads it; a ``-- @renamed from=old`` comment after a column (or on the CREATE
    TABLE line) is a rename hint, like ``RenamedFrom``.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import schema_from_sql, sync_schema
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        >>> desired = schema_from_sql('''
        ...     CREATE TABLE notes (
        ...         id INTEGER PRIMARY KEY,
        ...         text TEXT  -- @renamed from=body
        ...     );
        ...     CREATE INDEX notes_by_text ON notes (text);
        ... ''')
        >>> print(sync_schema(conn, desired))
        Migration plan (2 operations):
          1. rename column notes.body to text
          2. create index notes_by_text on notes (text)
    """
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        load_schema_sql(scratch, ddl)
        engine = SqliteEngine(scratch)
        broken = [text for text in broken_objects(engine, literal_names=False).values() if not _UNKNOWN_HERE.search(text)]
        if broken:  # (functions, collations and modules your connection registers are unknown here)
            raise SchemaDefinitionError("SQL", None, "the desired schema has views or triggers that do not compile: " + "; ".join(broken))
        schema = introspect(engine)
    return _apply_rename_hints(_with_capture_triggers(schema), ddl)


def create_capture_triggers(scratch: sqlite3.Connection) -> None:
    """Create, on a scratch database loaded from a schema script, the delete-capture triggers (and
    the table they write to) of its synced tables: what ``schema_from_sql`` adds to the schema it
    reads, so that the script on either side of a comparison reads the same."""
    for trigger in _with_capture_triggers(introspect(SqliteEngine(scratch))).triggers:
        if is_capture_trigger(trigger.name) and not scratch.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (trigger.name,)).fetchone():
            for statement in (*capture_setup(trigger), trigger.sql):
                scratch.execute(statement)


def _with_capture_triggers(schema: Schema) -> Schema:
    """A synced table (its LWW companion columns written out, as ``pydsqlite inspect`` prints them)
    gets the triggers that capture its deletes, as the same table declared by a model has: the
    script need not (and cannot: they write to pydsqlite's bookkeeping) spell them out."""
    present = {fold_name(trigger.name) for trigger in schema.triggers}
    missing = tuple(trigger for trigger in capture_triggers(schema.tables) if fold_name(trigger.name) not in present)
    return replace(schema, triggers=(*schema.triggers, *missing)) if missing else schema


def load_schema_sql(scratch: sqlite3.Connection, ddl: str) -> None:
    """Run the schema statements of ``ddl`` on the scratch connection, one at a time.

    Only CREATE TABLE / INDEX / VIEW / TRIGGER / VIRTUAL TABLE (and transaction control) are
    accepted: a schema file is data, and anything else in it (ATTACH, DML, VACUUM INTO, PRAGMA)
    could reach outside the scratch database. Each statement is executed on its own, so what
    was checked is exactly what runs; collations and functions the caller's connection
    registers are stood in for.
    """
    pending = ""
    pieces = _pieces_ending_at_semicolons(ddl)
    for number, piece in enumerate(pieces, 1):
        last = number == len(pieces)
        pending += piece
        if not last and not sqlite3.complete_statement(pending):
            continue
        if all(token.text == ";" for token in tokenize(pending)):  # comments and empty statements
            pending = ""
            continue
        _check_schema_statement(pending)
        try:
            execute_standing_in(scratch, pending)  # one statement: sqlite3 refuses any text after it
        except sqlite3.Error as error:
            if "incomplete input" in str(error) and not last:
                continue  # a ``;`` inside a trigger body that sqlite3_complete took for the end
            raise SchemaDefinitionError("SQL", None, f"the desired schema does not load: {error} (in: {_shortened(pending)})") from error
        pending = ""


_SCHEMA_STATEMENTS = {("TABLE",), ("INDEX",), ("UNIQUE", "INDEX"), ("VIEW",), ("TRIGGER",), ("VIRTUAL", "TABLE")}
_TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}


def _pieces_ending_at_semicolons(ddl: str) -> list[str]:
    """The script cut after each ``;`` token (not one inside a string, quoted name or comment)."""
    ends = [token.end for token in tokenize(ddl) if token.text == ";"]
    return [ddl[start:end] for start, end in zip([0, *ends], [*ends, len(ddl)])]


def _check_schema_statement(statement: str) -> None:
    words = [token.upper for token in tokenize(statement)[:3]] + ["", ""]
    if words[0] in _TRANSACTION_CONTROL:
        return
    if words[0] == "CREATE" and words[1] in ("TEMP", "TEMPORARY"):
        raise SchemaDefinitionError(
            "SQL", None, f"temporary objects are not part of a database's schema; remove {words[1]} or the statement (in: {_shortened(statement)})"
        )
    if words[0] != "CREATE" or not any(tuple(words[1 : 1 + len(kind)]) == kind for kind in _SCHEMA_STATEMENTS):
        raise SchemaDefinitionError(
            "SQL",
            None,
            "a desired schema holds only CREATE TABLE / INDEX / VIEW / TRIGGER / VIRTUAL TABLE statements; "
            f"refused: {_shortened(statement)}",
        )


def _shortened(statement: str, limit: int = 120) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def schema_from_database(source: Any) -> Schema:
    """The ``Schema`` of another SQLite database (a connection or a path, opened read-only):
    to make a database match a reference one.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import schema_from_database, schema_migration_plan
        >>> reference = sqlite3.connect(":memory:")
        >>> _ = reference.execute("CREATE TABLE tags (name TEXT PRIMARY KEY)")
        >>> target = sqlite3.connect(":memory:")
        >>> print(schema_migration_plan(target, schema_from_database(reference)))
        Migration plan (1 operation):
          1. create table tags (1 column)
    """
    if is_connection(source):
        return introspect(engine_for(source))
    path = os.fspath(source)
    if not os.path.exists(path):
        raise MigrationError(f"cannot open database {path!r}: no such file")
    try:
        with closing(connect_read_only(path)) as connection:
            return introspect(SqliteEngine(connection))
    except sqlite3.Error as error:
        raise MigrationError(f"cannot read database {path!r}: {error}") from error


def _apply_rename_hints(schema: Schema, ddl: str) -> Schema:
    table_hints: dict[str, tuple[str, ...]] = {}
    column_hints: dict[tuple[str, str], tuple[str, ...]] = {}
    for start, end, table_name, columns in _create_table_statements(ddl):
        for match in _RENAME_HINT.finditer(ddl, start, end):
            old = _unquote(match.group(1))
            line = ddl.count("\n", 0, match.start())
            owner = None
            for column_start, column_name in columns:
                if column_start < match.start() and ddl.count("\n", 0, column_start) == line:
                    owner = column_name
            if owner is None:
                table_hints[fold_name(table_name)] = (*table_hints.get(fold_name(table_name), ()), old)
            else:
                key = (fold_name(table_name), fold_name(owner))
                column_hints[key] = (*column_hints.get(key, ()), old)
    if not table_hints and not column_hints:
        return schema
    tables = []
    for table in schema.tables:
        hinted = tuple(
            replace(column, renamed_from=column_hints[(fold_name(table.name), fold_name(column.name))])
            if (fold_name(table.name), fold_name(column.name)) in column_hints
            else column
            for column in table.columns
        )
        tables.append(replace(table, columns=hinted, renamed_from=table_hints.get(fold_name(table.name), table.renamed_from)))
    return replace(schema, tables=tuple(tables), _by_name={})


def _create_table_statements(ddl: str) -> Iterator[tuple[int, int, str, list[tuple[int, str]]]]:
    """(start, end, table name, [(column start, column name)]) of each CREATE TABLE in the script;
    the end reaches to the end of the line of the statement's last token, where a trailing hint sits."""
    for start, end, tokens in split_statements(ddl):
        words = [token.upper for token in tokens[:6]]
        if "TABLE" not in words or words[0] != "CREATE":
            continue
        line_end = ddl.find("\n", end)
        name, columns = table_body_columns(tokens)
        if name is not None:
            yield start, len(ddl) if line_end < 0 else line_end, name, columns


def _unquote(text: str) -> str:
    if text[:1] == '"' and text[-1:] == '"':
        return text[1:-1].replace('""', '"')
    if text[:1] in "`[" and len(text) > 1:
        return text[1:-1]
    return text
