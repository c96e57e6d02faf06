"""Which views and triggers no longer compile: SQLite checks a view or trigger body only when a
statement uses it, so a migration can leave one broken (naming a dropped column) without any
error. Compiling a statement that uses each one (``EXPLAIN`` prepares it without running it)
finds them; a migration compares the broken set before and after its steps.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from ..engines import Engine
from ..schema.objects import fold_name
from ..sql.ddl import tokenize
from ..sql.render import quote_identifier

_EVENTS = ("INSERT", "UPDATE", "DELETE")
_CALLS = itertools.count()


def broken_objects(engine: Engine) -> dict[str, str]:
    """Folded name → "view v: error" / "trigger t on x: error" for every view and trigger of the
    main database that does not compile."""
    rows = engine.execute("SELECT type, name, tbl_name, sql FROM main.sqlite_master WHERE type IN ('view', 'trigger')").fetchall()
    broken: dict[str, str] = {}
    triggers: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, name, table, sql in rows:
        if kind == "view":
            error = _compile_error(engine, f"EXPLAIN SELECT * FROM {quote_identifier(name)}")
            if error is not None:
                broken[fold_name(name)] = f"view {name}: {error}"
        elif sql:
            triggers[(table, trigger_event(sql))].append(name)
    for (table, event), names in triggers.items():
        statement = _firing_statement(engine, table, event)
        if statement is None or _compile_error(engine, statement) is None:
            continue
        for name in names:
            error = _compile_alone(engine, statement, name, [other for other in names if other != name])
            if error is not None:
                broken[fold_name(name)] = f"trigger {name} on {table}: {error}"
    return broken


def trigger_event(sql: str) -> str:
    """INSERT, UPDATE or DELETE: the event a CREATE TRIGGER statement fires on."""
    tokens = tokenize(sql)
    words = [token.upper for token in tokens]
    position = words.index("TRIGGER") + 1 if "TRIGGER" in words else 0
    if words[position : position + 3] == ["IF", "NOT", "EXISTS"]:
        position += 3
    # skip the trigger's name (``name`` or ``schema.name``), which may itself read like a keyword
    position += 3 if position + 1 < len(tokens) and tokens[position + 1].text == "." else 1
    return next((word for word in words[position:] if word in _EVENTS), "INSERT")


def _firing_statement(engine: Engine, table: str, event: str) -> str | None:
    quoted = quote_identifier(table)
    if event == "INSERT":
        return f"EXPLAIN INSERT INTO {quoted} DEFAULT VALUES"
    if event == "DELETE":
        return f"EXPLAIN DELETE FROM {quoted}"
    columns = [row[0] for row in engine.execute("SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0", (table,)).fetchall()]
    if not columns:
        return None
    assignments = ", ".join(f"{quote_identifier(column)} = {quote_identifier(column)}" for column in columns)
    return f"EXPLAIN UPDATE {quoted} SET {assignments}"


def _compile_error(engine: Engine, statement: str) -> str | None:
    """SQLite's error compiling ``statement`` (an EXPLAIN, which runs nothing), or None.

    Each call sends distinct text: a cached EXPLAIN that SQLite re-prepares after a schema
    change can crash the process (seen with SQLite 3.40), so none is ever reused."""
    try:
        engine.execute(f"{statement} /* pydsqlite check {next(_CALLS)} */").fetchall()
    except engine.Error as error:
        return str(error)
    return None


def _compile_alone(engine: Engine, statement: str, name: str, others: list[str]) -> str | None:
    """Compile ``statement`` with only trigger ``name`` of its event in place (the others are dropped
    inside a savepoint and restored), to tell which trigger of several fails."""
    if not others:
        return _compile_error(engine, statement)
    engine.execute("SAVEPOINT pydsqlite_compile_check")
    try:
        for other in others:
            engine.execute(f"DROP TRIGGER {quote_identifier(other)}")
        return _compile_error(engine, statement)
    finally:
        if not engine.connection_lost:  # a lost connection has nothing to roll back
            engine.execute("ROLLBACK TO pydsqlite_compile_check")
            engine.execute("RELEASE pydsqlite_compile_check")
