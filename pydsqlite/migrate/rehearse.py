"""Pipeline stage 4b: rehearse the plan on an empty copy of the live schema.

Every statement of the plan runs in a scratch in-memory database holding the live schema
and no rows. That does two things nothing else can do safely:

- A rebuild drops the table's triggers and hand-made indexes with it; their SQL is read
  from the scratch copy right before the rebuild, after every earlier step (renames
  included) has been applied to it by SQLite's own parser, and appended to the rebuild. No
  SQL text is ever rewritten by pydsqlite.
- A step that would fail, and a view or trigger that would no longer compile afterwards,
  is found here, in the preview, before the real database is touched.
"""

from __future__ import annotations

import itertools
import logging
import re
import sqlite3
from contextlib import closing
from dataclasses import replace

from ..engines import SqliteEngine
from ..schema.objects import Schema, VirtualTable, fold_name
from ..sql.ddl import tokenize
from ..sql.render import quote_identifier
from .dependants import Dependants
from .introspect import introspect
from .migration import MigrationPlan, Operation

logger = logging.getLogger(__name__)

_MISSING = re.compile(r"no such (collation sequence|function|module): (.+)")


class RehearsalError(Exception):
    """The live schema does not load into a scratch database."""


def rehearse(plan: MigrationPlan, live: Schema, mismatched_before: frozenset[str] | None = None) -> MigrationPlan:
    """The plan with each rebuild's dependants appended and, as problems, every step that fails,
    every view or trigger the plan would break and every foreign key that would lose its parent
    key (ones broken before do not count; ``mismatched_before`` names the tables whose foreign
    keys count as broken before, when ``live`` is itself a step of the migration)."""
    return _rehearse(plan, live, mismatched_before, read_after=False)[0]


def rehearse_and_read(plan: MigrationPlan, live: Schema) -> tuple[MigrationPlan, Schema | None, frozenset[str] | None]:
    """``rehearse``, without the foreign-key check, and the schema the plan leaves behind as SQLite
    reports it (None when a step fails): what the plan made after data steps starts from. Also
    the tables whose foreign keys had no parent key before it, for the plan that follows: the phase
    before data steps only adds, so a new child may wait for the phase after them to get its key
    (None when there was nothing to rehearse: the plan that follows reads them itself)."""
    return _rehearse(plan, live, None, read_after=True)


def _rehearse(
    plan: MigrationPlan, live: Schema, mismatched_before: frozenset[str] | None, *, read_after: bool
) -> tuple[MigrationPlan, Schema | None, frozenset[str] | None]:
    if not plan.operations:
        return plan, live, mismatched_before
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        try:
            stand_ins = _load(scratch, live)
        except RehearsalError as error:
            failed = _with_problem(plan, len(plan.operations) - 1, f"the migration cannot be rehearsed: {error}")
            return failed, None, mismatched_before
        dependants_before = Dependants.read(SqliteEngine(scratch))
        implicit_before = implicit_references(scratch)
        if mismatched_before is None:
            mismatched_before = frozenset(mismatched_foreign_keys(scratch))
        operations = list(plan.operations)
        for position, operation in enumerate(operations):
            operation, replayed = _complete(scratch, operation)
            operations[position] = operation
            failure = _run(scratch, operation, replayed)
            if failure is not None:
                return _with_problem(replace(plan, operations=tuple(operations)), position, failure), None, mismatched_before
        operations = _with_functions(scratch, operations)
        broken = {text: text for text in dependants_before.broken_by(Dependants.read(SqliteEngine(scratch)))}
        broken |= {text: text for text in retargeted_references(implicit_before, implicit_references(scratch), plan)}
        if not read_after:
            broken |= {
                f"foreign keys of {name}": text
                for name, text in mismatched_foreign_keys(scratch).items()
                if name not in mismatched_before
            }
        after = _read(scratch, stand_ins) if read_after else None
    rehearsed = replace(plan, operations=tuple(operations))
    for text in broken.values():
        rehearsed = _with_problem(rehearsed, len(operations) - 1, f"{text} after the migration; change or drop it first")
    return rehearsed, after, mismatched_before


_ImplicitReferences = dict[tuple[str, tuple[str, ...]], tuple[str, str, tuple[str, ...]]]


def implicit_references(scratch: sqlite3.Connection) -> _ImplicitReferences:
    """Every foreign key that names no parent column (``REFERENCES parent``), by folded child table and
    columns: the child's spelling, the parent's, and the columns it reaches — the parent's primary key
    as it is at this point, which a migration moving that key would silently change."""
    rows = scratch.execute(
        'SELECT m.name, f.id, f."table", f."from", f."to" FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f '
        "WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq"
    ).fetchall()
    keys: dict[tuple[str, int], list[tuple[str, str, str | None]]] = {}
    for child, ident, parent, column, target in rows:
        keys.setdefault((child, ident), []).append((parent, column, target))
    found = {}
    for (child, _), columns in keys.items():
        parent = columns[0][0]
        if any(target is not None for _, _, target in columns):
            continue
        reached = tuple(
            name for (name,) in scratch.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (parent,))
        )
        found[(fold_name(child), tuple(fold_name(column) for _, column, _ in columns))] = (child, parent, reached)
    return found


def retargeted_references(before: _ImplicitReferences, after: _ImplicitReferences, plan: MigrationPlan) -> list[str]:
    """Problems for the foreign keys of ``implicit_references`` whose parent key the migration moves to
    other columns (a parent key column the plan renames is the same column under its new name)."""
    new_table = {fold_name(old): fold_name(new) for old, new in plan.table_renames}
    renamed = {(fold_name(table), fold_name(old)): fold_name(new) for table, old, new in plan.renames}
    problems = []
    for key, (child, parent, reached) in after.items():
        earlier = before.get(key)
        if earlier is None:
            continue
        table = new_table.get(fold_name(earlier[1]), fold_name(earlier[1]))
        becomes = [renamed.get((table, fold_name(name)), fold_name(name)) for name in earlier[2]]
        if becomes == [fold_name(name) for name in reached]:
            continue
        columns, was = ", ".join(key[1]), ", ".join(earlier[2])
        moved = "" if becomes == [fold_name(name) for name in earlier[2]] else f", which the migration renames to ({', '.join(becomes)}),"
        problems.append(
            f"table {child}'s foreign key ({columns}) names no column of {parent} (name the columns it should reach in its "
            f"REFERENCES clause): it reaches {parent}'s primary key, ({was}) now{moved} and ({', '.join(reached)})"
        )
    return problems


def mismatched_foreign_keys(scratch: sqlite3.Connection) -> dict[str, str]:
    """Tables whose foreign keys name a parent key that is neither its primary key nor under a unique
    index (say, after the plan drops the ``Unique()`` a hand-made table's key relies on): SQLite
    then refuses every write to the child and every delete from the parent with "foreign key
    mismatch", by folded table name."""
    children = scratch.execute(
        "SELECT DISTINCT m.name FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f WHERE m.type = 'table'"
    ).fetchall()
    found = {}
    for (name,) in children:
        try:
            scratch.execute(f"PRAGMA foreign_key_check({quote_identifier(name)})").fetchall()
        except sqlite3.Error as error:
            found[fold_name(name)] = (
                f"table {name}'s foreign key would no longer find its parent key ({error}: the referenced columns must be "
                "the parent's primary key or carry a unique index)"
            )
    return found


def _read(scratch: sqlite3.Connection, stand_ins: dict[str, VirtualTable]) -> Schema:
    """The scratch database's schema, with each virtual table it stood in for as it really is."""
    schema = introspect(SqliteEngine(scratch))
    tables = tuple(table for table in schema.tables if fold_name(table.name) not in stand_ins)
    return replace(schema, tables=tables, virtual_tables=(*schema.virtual_tables, *stand_ins.values()))


def _complete(scratch: sqlite3.Connection, operation: Operation) -> tuple[Operation, list[str]]:
    """A rebuild with the CREATE statements of its table's indexes and triggers appended, as they
    read in the scratch copy at this point, and what each appended statement recreates."""
    if operation.replay is None:
        return operation, []
    replay = operation.replay
    rows = scratch.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL "
        "ORDER BY type = 'trigger', rowid"
    ).fetchall()
    kept = [
        (f"{kind} {name} on {table}", sql)
        for kind, name, table, sql in rows
        if fold_name(table) == fold_name(replay.table) and not (kind == "index" and fold_name(name) in replay.skip_indexes)
    ]
    statements = (*operation.statements, *(sql for _, sql in kept))
    return replace(operation, statements=statements, replay=None), [label for label, _ in kept]


def _run(scratch: sqlite3.Connection, operation: Operation, replayed: list[str]) -> str | None:
    """Run one operation's statements; the failure, if any, as a problem naming the step, or the
    index or trigger (made by hand, kept through a rebuild) that could not be recreated."""
    first_replay = len(operation.statements) - len(replayed)
    for position, statement in enumerate(operation.statements):
        try:
            execute_standing_in(scratch, statement)
        except sqlite3.Error as error:
            if position >= first_replay:
                return (
                    f"{replayed[position - first_replay]} cannot be recreated after '{operation.description}': {error}; "
                    "change or drop it first"
                )
            return f"step '{operation.description}' would fail: {error} (in: {_shorten(statement)})"
    return None


def _load(scratch: sqlite3.Connection, live: Schema) -> dict[str, VirtualTable]:
    """Create every object of ``live`` (no rows) in the scratch database. Collations and functions
    the scratch database lacks are stood in for; a virtual table whose module it lacks becomes a
    plain table with the same columns (returned by folded name)."""
    stand_ins = {}
    for table in live.tables:
        create_in_scratch(scratch, table.sql or "", table.name)
    for virtual in live.virtual_tables:
        try:
            create_in_scratch(scratch, virtual.sql, virtual.name)
        except RehearsalError:
            columns = ", ".join(quote_identifier(column) for column in virtual.columns) or quote_identifier("_unknown")
            create_in_scratch(scratch, f"CREATE TABLE {quote_identifier(virtual.name)} ({columns})", virtual.name)
            stand_ins[fold_name(virtual.name)] = virtual
    for sql in live.bookkeeping:
        create_in_scratch(scratch, sql, "pydsqlite's bookkeeping")
    for table in live.tables:
        for index in table.indexes:
            if index.sql:
                create_in_scratch(scratch, index.sql, index.name)
    for view in live.views:
        create_in_scratch(scratch, view.sql, view.name)
    for trigger in live.triggers:
        create_in_scratch(scratch, trigger.sql, trigger.name)
    return stand_ins


def create_in_scratch(scratch: sqlite3.Connection, sql: str, name: str) -> None:
    """Run ``sql`` (a CREATE statement of object ``name``) in a scratch database, standing in for
    the collations and functions it lacks; ``RehearsalError`` when it still does not load."""
    try:
        execute_standing_in(scratch, sql)
    except sqlite3.Error as error:
        raise RehearsalError(f"{name} does not load in a scratch database ({error})") from None


def execute_standing_in(scratch: sqlite3.Connection, sql: str) -> None:
    """Execute ``sql``, standing in for each collation and function it names that the scratch
    database lacks (the real connection registers them; whether it does is checked there)."""
    stood_in: set[str] = set()
    while True:
        try:
            scratch.execute(sql)
            return
        except sqlite3.Error as error:
            missing = _MISSING.search(str(error))
            if missing is None or missing.group(1) == "module" or missing.group(2) in stood_in:
                raise
            kind, what = missing.groups()
            stood_in.add(what)
            logger.debug("rehearsal stands in for %s %s", kind, what)
            if kind == "function":
                scratch.create_function(what, -1, _stand_in_function, deterministic=True)
            else:
                scratch.create_collation(what, _stand_in_collation)


def _stand_in_function(*args: object) -> None:
    return None


def _stand_in_collation(a: str, b: str) -> int:
    return (a > b) - (a < b)


def _with_functions(scratch: sqlite3.Connection, operations: list[Operation]) -> list[Operation]:
    """``operations`` with the functions their statements call that the scratch database had to stand
    in for (no function of SQLite's own): the application's, which the real connection must have."""
    stood_in = {fold_name(name) for (name,) in scratch.execute("SELECT name FROM pragma_function_list WHERE builtin = 0")}
    if not stood_in:
        return operations
    completed = []
    for operation in operations:
        called: dict[str, None] = {}
        for statement in operation.statements:
            tokens = tokenize(statement)
            words = [token.upper for token in tokens[:3]]
            if words[:1] == ["CREATE"] and ({"TRIGGER", "VIEW"} & set(words[1:])):
                continue  # a trigger or view calls its functions only when used, as before the migration
            for token, following in itertools.pairwise(tokens):
                name = _OPERATOR_FUNCTIONS.get(token.upper) or (token.identifier if following.text == "(" and token.kind in ("word", "quoted") else None)
                if name is not None and fold_name(name) in stood_in:
                    called[name] = None
        completed.append(replace(operation, functions=tuple(called)) if called else operation)
    return completed


_OPERATOR_FUNCTIONS = {"REGEXP": "regexp", "MATCH": "match"}
"""Operators SQLite turns into calls of an application's function (``x REGEXP y`` is ``regexp(y, x)``)."""


def _with_problem(plan: MigrationPlan, position: int, problem: str) -> MigrationPlan:
    operations = list(plan.operations)
    operations[position] = replace(operations[position], problems=(*operations[position].problems, problem))
    return replace(plan, operations=tuple(operations))


def _shorten(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 120 else text[:117] + "..."
