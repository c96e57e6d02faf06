"""One table rebuilt online: a new table beside the live one, filled in key order while the
application keeps writing (the shape of gh-ost and pt-online-schema-change, mapped to SQLite).

- The new shape is created empty as ``_pydsqlite_online_new_<table>``, with its indexes, so
  each chunk of the copy maintains them (a CREATE INDEX afterwards would hold the write lock
  for the whole build).
- Triggers on the live table record the key of every row an INSERT, UPDATE or DELETE touches
  in ``_pydsqlite_online_log_<table>``; before a write they also record the rows an
  ``OR REPLACE`` would delete (SQLite fires no delete trigger for those unless
  ``recursive_triggers`` is on, and that is the writer's connection's choice).
- Rows are copied in key order, one chunk per short transaction, up to a cursor kept in the
  state table. What holds after every transaction: each live row at or below the cursor
  whose key is not in the log is in the new table exactly as the rebuild copies it; above
  the cursor the new table holds nothing. The last chunk sets the cursor to the end.
- A catch-up pass takes logged keys, deletes those rows from the new table and copies them
  again from the live table (keys above the cursor are left to the copy); the swap runs the
  last pass, so nothing written while the copy ran is lost or applied twice.

The machinery is the same for both passes of a table: the shape change (pass 1) and, when
the new shape keeps index names the old table holds (SQLite cannot rename an index), the
identity copy that gives the indexes their names back (pass 2).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..engines import Engine
from ..schema.objects import Table, fold_name
from ..sql.ddl import Token, parse_create_table, strip_sort_order, tokenize
from ..sql.render import (
    quote_identifier,
    quote_literal,
    render_create_index,
    render_create_table,
    render_drop_table,
    render_rename_table,
)
from .diff import TableDiff
from .metadata import ONLINE_PREFIX
from .migration import DataCheck, Operation
from .rebuild import ROWID_NAMES, carry_sequence, copy_columns, created_table, new_rows_projection, rowid_name
from .rehearse import create_in_scratch

STATE_TABLE = ONLINE_PREFIX
CREATE_STATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} ("
    "table_name TEXT PRIMARY KEY, pass INTEGER NOT NULL, fingerprint TEXT NOT NULL, cursor TEXT, "
    "copied INTEGER NOT NULL DEFAULT 0, source_sql TEXT NOT NULL DEFAULT '', final_indexes TEXT)"
)
"""One row per table an online rebuild is working on: which pass, the fingerprint of what it
copies (a later sync resumes only the same work), the copy's cursor and, for pass 2, the
CREATE INDEX statements that give the indexes their names back."""

_END = "end"
"""The cursor once the copy has reached the end of the table: every key is in the copied range."""


def new_table_name(table: str) -> str:
    return f"{ONLINE_PREFIX}_new_{table}"


def log_table_name(table: str) -> str:
    return f"{ONLINE_PREFIX}_log_{table}"


def old_table_name(table: str) -> str:
    return f"{ONLINE_PREFIX}_old_{table}"


def recorder_prefix(table: str) -> str:
    return f"{ONLINE_PREFIX}_record_{table}_"


RECORDER_EVENTS = ("insert", "update", "delete", "guard_insert", "guard_update")


def forgetter_names(table: str) -> tuple[str, str]:
    """The triggers that keep ``table``'s old copy from holding rows the table no longer has, while it is freed."""
    return f"{ONLINE_PREFIX}_forget_{table}_update", f"{ONLINE_PREFIX}_forget_{table}_delete"


def is_recorder_of(name: str, table: str) -> bool:
    """Whether trigger ``name`` is one of the recorders of ``table``'s copy: matched whole, since one
    table's prefix may begin another's (``user_`` and ``user_role_``)."""
    return fold_name(name) in {fold_name(recorder_prefix(table) + event) for event in RECORDER_EVENTS}


def temporary_index_name(table: str, number: int) -> str:
    return f"{ONLINE_PREFIX}_index{number}_{table}"


class NotOnline(Exception):
    """The table cannot be rebuilt online; the message says why (shown in the plan)."""


@dataclass(frozen=True)
class LogColumn:
    """A column of the key log: what it records from the live table, typed and collated like it."""

    name: str
    source: str
    declared: str
    collation: str | None = None


@dataclass(frozen=True)
class RowKey:
    """How rows are found: the first ``position`` log columns order the copy (and tell whether a
    logged row lies in the copied range); ``identity`` pairs a log column with the new table's
    column that holds the same value, to find the copied row again."""

    columns: tuple[LogColumn, ...]
    position: int
    identity: tuple[tuple[str, str], ...]

    @property
    def ordering(self) -> tuple[LogColumn, ...]:
        return self.columns[: self.position]

    def describe(self) -> str:
        return ", ".join("rowid" if column.source == "rowid" else column.source for column in self.ordering)

    def identity_sources(self, prefix: str = "") -> str:
        """The live table's terms that find a row again (``prefix``: ``OLD.`` in a trigger), as one SQL value."""
        source_of = {column.name: column.source for column in self.columns}
        return _row([f"{prefix}{source_of[name]}" for name, _ in self.identity])

    def identity_targets(self, prefix: str = "") -> str:
        """The new table's columns holding those values, as one SQL value."""
        return _row([f"{prefix}{column}" for _, column in self.identity])


@dataclass(frozen=True)
class ShadowSpec:
    """Everything one online pass over one table does, as SQL (see the module docstring)."""

    table: str
    """The table's name once migrated."""
    source: str
    """The live table's name now (before a rename the plan makes)."""
    create: str
    indexes: tuple[str, ...]
    """CREATE INDEX statements for the new table, built while it is empty."""
    targets: tuple[str, ...]
    terms: tuple[str, ...]
    key: RowKey
    guards: tuple[tuple[str, ...], ...]
    """The terms of each UNIQUE key of the live table besides the log key: a write whose NEW values
    match another row's there may delete that row (``OR REPLACE``), so the recorder logs it."""
    columns: tuple[str, ...]
    """The live table's columns, for the guards to read a write's NEW values by name."""
    carry_sequence: bool = False
    final_indexes: tuple[str, ...] = ()
    """Pass 1 only: CREATE INDEX statements (naming the table) that pass 2 builds, when the new
    table carries its indexes under temporary names."""
    triggers: tuple[str, ...] | None = None
    """CREATE TRIGGER statements the swap recreates (pass 1: from the rehearsal); None: the
    table's triggers as they read at the swap (pass 2)."""
    operation: Operation | None = None
    """Pass 1: the rehearsed rebuild, whose data checks also run on every chunk."""
    keys_stable: bool = True
    """Whether the rows keep the keys the copy and its log find them by while no run is watching: not
    for a table copied by an implicit rowid, which ``VACUUM`` renumbers (so an interrupted copy of it
    is started again, not resumed)."""

    @property
    def new(self) -> str:
        return new_table_name(self.table)

    @property
    def log(self) -> str:
        return log_table_name(self.table)

    @property
    def old(self) -> str:
        return old_table_name(self.table)

    @property
    def pass_number(self) -> int:
        return 1 if self.operation is not None else 2

    @property
    def recorder_names(self) -> tuple[str, ...]:
        prefix = recorder_prefix(self.table)
        return tuple(prefix + event for event in RECORDER_EVENTS[: 5 if self.guards else 3])

    @property
    def fingerprint(self) -> str:
        """What the copy writes and how it finds rows: a later sync resumes an interrupted copy only
        when this is unchanged."""
        parts = [self.source, self.create, *self.indexes, *self.targets, *self.terms, *self.final_indexes]
        parts += [" ".join(terms) for terms in self.guards]
        parts += [f"{c.name} {c.source} {c.declared} {c.collation}" for c in self.key.columns]
        parts += [f"{self.key.position}", *(f"{a}={b}" for a, b in self.key.identity)]
        return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()

    # --- SQL ---------------------------------------------------------------------------------

    def setup_statements(self) -> list[str]:
        """Create the new table, its indexes, the key log and the recorder triggers."""
        columns = ", ".join(
            f"{quote_identifier(c.name)}{' ' + c.declared if c.declared else ''}"
            + (f" COLLATE {c.collation}" if c.collation else "")
            for c in self.key.columns
        )
        return [
            self.create,
            *self.indexes,
            f"CREATE TABLE {quote_identifier(self.log)} ({columns})",
            *self._recorders(),
        ]

    def _recorders(self) -> list[str]:
        table, log = quote_identifier(self.source), quote_identifier(self.log)
        names = [quote_identifier(name) for name in self.recorder_names]
        log_columns = ", ".join(quote_identifier(c.name) for c in self.key.columns)

        def values(row: str) -> str:
            return ", ".join(f"{row}.{c.source}" for c in self.key.columns)

        changed = " OR ".join(f"NEW.{c.source} IS NOT OLD.{c.source}" for c in self.key.columns)
        insert = f"INSERT INTO {log} ({log_columns})"
        # The old row's copy goes at once (the log has it copied again): a copy that lingered would still
        # reference its parent, so a connection enforcing foreign keys could not delete that parent next.
        copied_row = self.key.identity_targets()
        forget = f"DELETE FROM {quote_identifier(self.new)} WHERE {copied_row} = {self.key.identity_sources('OLD.')};"
        statements = [
            f"CREATE TRIGGER {names[0]} AFTER INSERT ON {table} BEGIN {insert} VALUES ({values('NEW')}); END",
            f"CREATE TRIGGER {names[1]} AFTER UPDATE ON {table} BEGIN {insert} VALUES ({values('OLD')}); "
            f"{insert} SELECT {values('NEW')} WHERE {changed}; {forget} END",
            f"CREATE TRIGGER {names[2]} AFTER DELETE ON {table} BEGIN {insert} VALUES ({values('OLD')}); {forget} END",
        ]
        if self.guards:
            new_row = ", ".join(f"NEW.{quote_identifier(column)} AS {quote_identifier(column)}" for column in self.columns)
            sources = ", ".join(c.source for c in self.key.columns)
            statements_of_guards = []
            for terms in self.guards:
                match = f"{_row(terms)} = (SELECT {', '.join(terms)} FROM (SELECT {new_row}))"
                statements_of_guards.append(f"{insert} SELECT {sources} FROM {table} WHERE {match};")
                # a row REPLACE removes fires no delete trigger: its copy goes here, as a deleted row's does
                statements_of_guards.append(
                    f"DELETE FROM {quote_identifier(self.new)} WHERE {copied_row} IN (SELECT {self.key.identity_sources()} FROM {table} WHERE {match});"
                )
            body = " ".join(statements_of_guards)
            statements.append(f"CREATE TRIGGER {names[3]} BEFORE INSERT ON {table} BEGIN {body} END")
            statements.append(f"CREATE TRIGGER {names[4]} BEFORE UPDATE ON {table} BEGIN {body} END")
        return statements

    def ordering_row(self, source: bool = True) -> str:
        """The ordering key as one SQL value: over the live table, or (``source=False``) the log."""
        return _row([c.source if source else quote_identifier(c.name) for c in self.key.ordering])

    def bounds_sql(self, condition: str) -> str:
        """The key of the row as many rows (the one parameter) into the live rows matching ``condition``,
        in key order."""
        ordering = ", ".join(c.source for c in self.key.ordering)
        return f"SELECT {ordering} FROM {quote_identifier(self.source)} WHERE {condition} ORDER BY {ordering} LIMIT 1 OFFSET ?"

    def range_condition(self, lower: Sequence[str] | None, upper: Sequence[str] | None) -> str:
        """SQL over the live table for the rows after key ``lower`` up to key ``upper`` (inclusive;
        None: unbounded), each given as SQL values (literals or parameters)."""
        ordering = self.ordering_row()
        parts = []
        if lower is not None:
            parts.append(f"{ordering} > {_row(lower)}")
        if upper is not None:
            parts.append(f"{ordering} <= {_row(upper)}")
        return " AND ".join(parts) or "1"

    def copy_sql(self, condition: str, *, or_ignore: bool = False) -> str:
        """Copy the live rows matching ``condition`` into the new table. ``or_ignore``: rows the new
        table refuses are left out instead of failing the statement (which then needs no
        statement journal); the caller counts what it took."""
        verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
        return (
            f"{verb} INTO {quote_identifier(self.new)} ({', '.join(self.targets)}) "
            f"SELECT {', '.join(self.terms)} FROM {quote_identifier(self.source)} WHERE {condition}"
        )

    def count_sql(self, condition: str) -> str:
        """How many live rows match ``condition``."""
        return f"SELECT COUNT(*) FROM {quote_identifier(self.source)} WHERE {condition}"

    def logged(self, last_entry: str, cursor: Sequence[str] | None, columns: Iterable[LogColumn]) -> str:
        """The logged keys up to log entry ``last_entry`` that lie in the copied range (up to key
        ``cursor``; None: the copy has reached the end), all given as SQL values."""
        selected = ", ".join(quote_identifier(c.name) for c in columns)
        where = f"rowid <= {last_entry}"
        if cursor is not None:
            where += f" AND {self.ordering_row(source=False)} <= {_row(cursor)}"
        return f"SELECT {selected} FROM {quote_identifier(self.log)} WHERE {where}"

    def catch_up_statements(self, last_entry: str, cursor: Sequence[str] | None) -> list[str]:
        """Copy the rows of the logged keys again (up to log entry ``last_entry``), then forget them."""
        names = dict((c.name, c) for c in self.key.columns)
        identity_columns = [names[name] for name, _ in self.key.identity]
        identity = _row([column for _, column in self.key.identity])
        return [
            f"DELETE FROM {quote_identifier(self.new)} WHERE {identity} IN ({self.logged(last_entry, cursor, identity_columns)})",
            self.copy_sql(self.logged_condition(last_entry, cursor)),
            f"DELETE FROM {quote_identifier(self.log)} WHERE rowid <= {last_entry}",
        ]

    def logged_condition(self, last_entry: str, cursor: Sequence[str] | None) -> str:
        """SQL over the live table for the rows of the logged keys a catch-up copies again."""
        return f"{self.ordering_row()} IN ({self.logged(last_entry, cursor, self.key.ordering)})"

    def swap_statements(self, triggers: Sequence[tuple[str, str]]) -> list[str]:
        """The swap, inside the migration's last transaction: drop the recorders and the table's
        triggers (they would follow the old table), move the old table aside and the new one
        into place, recreate the triggers. ``triggers``: (name, CREATE TRIGGER) of the live
        table's own triggers now. The old table's pages are freed afterwards, in steps."""
        statements = [f"DROP TRIGGER {quote_identifier(name)}" for name in self.recorder_names]
        statements += [f"DROP TRIGGER {quote_identifier(name)}" for name, _ in triggers]
        if self.carry_sequence:
            statements += carry_sequence(self.table, self.new)
        statements += [
            "PRAGMA legacy_alter_table = ON",
            render_rename_table(self.table, self.old),
            render_rename_table(self.new, self.table),
            "PRAGMA legacy_alter_table = OFF",
        ]
        statements += self.triggers if self.triggers is not None else [sql for _, sql in triggers]
        statements.append(render_drop_table(self.log))
        return statements + self._forgetters()

    def _forgetters(self) -> list[str]:
        """Triggers on the table in place that delete a changed or deleted row's old version from the
        old table while it is freed: a lingering old row would still reference its parent, so a
        connection enforcing foreign keys could not delete that parent. Dropped with the old table."""
        table, old = quote_identifier(self.table), quote_identifier(self.old)
        forget = f"DELETE FROM {old} WHERE {self.key.identity_sources()} = {self.key.identity_targets('OLD.')};"
        return [
            f"CREATE TRIGGER {quote_identifier(name)} AFTER {event.upper()} ON {table} BEGIN {forget} END"
            for name, event in zip(forgetter_names(self.table), ("update", "delete"), strict=True)
        ]

    def chunk_checks(self, condition: str, allow_destructive: bool, foreign_keys_on: bool) -> tuple[DataCheck, ...]:
        """The rebuild's row checks narrowed to the live rows matching ``condition``: what the new
        table's own constraints do not refuse (lossy conversions, non-UTF-8 text, orphans)."""
        if self.operation is None or self.operation.rebuild is None:
            return ()
        item = self.operation.rebuild
        narrowed = {
            new_rows_projection(item): new_rows_projection(item, f" WHERE {condition}"),
            quote_identifier(item.live.name): f"(SELECT * FROM {quote_identifier(item.live.name)} WHERE {condition})",
        }
        return tuple(
            replace(check, source=narrowed[check.source])
            for check in self.operation.checks
            if check.source in narrowed
            and check.condition is not None
            and (check.blocking or not allow_destructive)
            and (foreign_keys_on or not check.when_foreign_keys_on)
        )


def _row(terms: Sequence[str]) -> str:
    return terms[0] if len(terms) == 1 else f"({', '.join(terms)})"


def _params(first: int, count: int) -> list[str]:
    return [f"?{number}" for number in range(first, first + count)]


# --- deriving a pass from a rebuild ----------------------------------------------------------


def table_rebuild_spec(engine: Engine, operation: Operation, live_names: Iterable[str]) -> ShadowSpec:
    """Pass 1 of the rehearsed rebuild ``operation``; raises ``NotOnline`` with the reason when the
    table cannot be rebuilt online. ``live_names``: folded names of every live schema object
    (indexes of the new shape whose names are taken are built under temporary names)."""
    item = operation.rebuild
    if item is None:
        raise NotOnline("the plan does not say how the table is copied")
    live, desired = item.live, item.desired
    targets, terms = copy_columns(item)
    key = _row_key(engine, item, targets, terms)
    _refuse_converted_references(engine, item, targets, terms)
    final_indexes, triggers = _dependants(operation)
    taken = set(live_names)
    collide = any(fold_name(_index_name(sql)) in taken for sql in final_indexes)
    created = created_table(item)
    create = render_create_table(created, name=desired.name)
    indexes = _retarget(create, final_indexes, desired.name)
    if collide:
        indexes = [_renamed_index(sql, temporary_index_name(desired.name, number)) for number, sql in enumerate(indexes, 1)]
    return ShadowSpec(
        table=desired.name,
        source=live.name,
        create=render_create_table(created, name=new_table_name(desired.name)),
        indexes=tuple(indexes),
        targets=targets,
        terms=terms,
        key=key,
        guards=_guards(live, key),
        columns=_all_columns(engine, live.name),
        carry_sequence=live.autoincrement and desired.autoincrement,
        final_indexes=tuple(final_indexes) if collide else (),
        triggers=tuple(triggers),
        operation=operation,
        keys_stable=_keys_stable(live, key),
    )


def index_pass_spec(engine: Engine, table: Table, final_indexes: Sequence[str]) -> ShadowSpec:
    """Pass 2: copy ``table`` as it is into a new table that carries ``final_indexes`` under their
    own names (the old table's were freed with it)."""
    live_sql = table.sql or render_create_table(table)
    rowid = rowid_name(table)
    stored = tuple(quote_identifier(c.name) for c in table.columns if c.generated is None)
    targets = ((rowid,) if rowid is not None and not table.rowid_alias else ()) + stored
    same = TableDiff(live=table, desired=table, rename=None, changes=(), column_sources=tuple((c.name, c.name) for c in table.columns))
    return ShadowSpec(
        table=table.name,
        source=table.name,
        create=_retarget_table(live_sql, table.name),
        indexes=tuple(_retarget(live_sql, list(final_indexes), table.name)),
        targets=targets,
        terms=targets,
        key=(key := _row_key(engine, same, targets, targets)),
        guards=_guards(table, key),
        columns=_all_columns(engine, table.name),
        carry_sequence=table.autoincrement,
        keys_stable=_keys_stable(table, key),
    )


def _keys_stable(live: Table, key: RowKey) -> bool:
    return not (key.columns[0].source == "rowid" and live.rowid_alias is None)


def _row_key(engine: Engine, item: TableDiff, targets: tuple[str, ...], terms: tuple[str, ...]) -> RowKey:
    live, desired = item.live, item.desired
    rowid_usable = live.has_rowid and not any(fold_name(c.name) in ROWID_NAMES for c in live.columns)
    term_of = dict(zip(targets, terms, strict=True))
    alias = desired.rowid_alias
    alias_term = term_of.get(quote_identifier(alias)) if alias else None
    carried = "rowid" in targets or (
        alias_term is not None
        and (alias_term == "rowid" or (live.rowid_alias is not None and alias_term == quote_identifier(live.rowid_alias)))
    )
    if rowid_usable and carried:
        return RowKey((LogColumn("k0", "rowid", "INTEGER"),), 1, (("k0", "rowid"),))
    if not live.primary_key:
        if live.has_rowid and not rowid_usable:
            raise NotOnline("it has no primary key, and a column of it is named rowid, oid or _rowid_, which the copy's triggers would take for its rowid")
        raise NotOnline("its rows have no key the new table keeps (no primary key, and the rowid is not carried over)")
    key_columns = _primary_key_order(engine, live)
    sources = {fold_name(old): new for new, old in item.column_sources}
    identity_targets = []
    for name, _, _ in key_columns:
        new = sources.get(fold_name(name))
        target = desired.column(new) if new is not None else None
        if target is None or term_of.get(quote_identifier(target.name)) != quote_identifier(name):
            raise NotOnline(f"its key column {name} is converted or dropped, so rows written during the copy could not be matched")
        identity_targets.append(target.name)
    if {fold_name(name) for name in identity_targets} != {fold_name(name) for name in desired.primary_key}:
        raise NotOnline("its primary key changes, so rows written during the copy could not be matched")
    if live.has_rowid and any(not (live.column(name) and live.column(name).not_null) for name, _, _ in key_columns):  # type: ignore[union-attr]
        raise NotOnline("its primary key columns may hold NULL")
    log_columns = [
        LogColumn(f"k{number + (1 if rowid_usable else 0)}", quote_identifier(name), _log_type(live, name), collation)
        for number, (name, _, collation) in enumerate(key_columns)
    ]
    identity = tuple((column.name, quote_identifier(new)) for column, new in zip(log_columns, identity_targets, strict=True))
    if rowid_usable:
        return RowKey((LogColumn("k0", "rowid", "INTEGER"), *log_columns), 1, identity)
    if any(descending for _, descending, _ in key_columns):
        raise NotOnline("its primary key has a descending column, which a chunked copy in key order cannot follow")
    for name, _, collation in key_columns:
        declared = (live.column(name).collate or "BINARY").upper()  # type: ignore[union-attr]
        if (collation or "BINARY").upper() != declared:
            raise NotOnline(f"its primary key compares {name} with another collation than the column's")
    return RowKey(tuple(log_columns), len(log_columns), identity)


def _primary_key_order(engine: Engine, table: Table) -> list[tuple[str, bool, str | None]]:
    """(column, descending, collation) of the primary key, in key order."""
    index = engine.scalar("SELECT name FROM pragma_index_list(?) WHERE origin = 'pk'", (table.name,))
    if index is None:  # an INTEGER PRIMARY KEY is the rowid
        return [(name, False, None) for name in table.primary_key]
    rows = engine.execute("SELECT name, \"desc\", coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", (index,)).fetchall()
    return [(name, bool(descending), collation) for name, descending, collation in rows]


def _log_type(table: Table, name: str) -> str:
    column = table.column(name)
    if column is None or (table.strict and column.type == "ANY"):
        return ""
    return column.type


def _all_columns(engine: Engine, table: str) -> tuple[str, ...]:
    return tuple(row[0] for row in engine.execute("SELECT name FROM pragma_table_xinfo(?)", (table,)).fetchall())


def _guards(live: Table, key: RowKey) -> tuple[tuple[str, ...], ...]:
    """The terms of every UNIQUE key of the live table that a conflict could resolve by deleting
    another row: the primary key unless the log records it, UNIQUE constraints, unique indexes
    (their partial WHERE left out: matching too much only logs a key twice)."""
    keyed_by_primary_key = key.columns[0].source != "rowid"
    unique_terms: list[tuple[str, ...]] = []
    if live.primary_key and not live.rowid_alias and not keyed_by_primary_key:
        unique_terms.append(tuple(quote_identifier(name) for name in live.primary_key))
    for unique in live.uniques:
        unique_terms.append(
            tuple(
                quote_identifier(name) + (f" COLLATE {unique.collations[position]}" if position < len(unique.collations) else "")
                for position, name in enumerate(unique.columns)
            )
        )
    for index in live.indexes:
        if index.unique:
            unique_terms.append(tuple(_index_term(live, term) for term in index.columns))
    return tuple(unique_terms)


def _index_term(table: Table, term: str) -> str:
    """An index term as an expression: a column name quoted, written SQL without its ASC/DESC."""
    if table.column(term) is not None:
        return quote_identifier(term)
    return f"({strip_sort_order(term)})"


def _refuse_converted_references(engine: Engine, item: TableDiff, targets: tuple[str, ...], terms: tuple[str, ...]) -> None:
    """Other tables' foreign keys that reference columns whose values the rebuild converts: the
    offline rebuild checks every such reference at its end, an online one could not afford it."""
    term_of = dict(zip(targets, terms, strict=True))
    sources = {fold_name(old): new for new, old in item.column_sources}
    referenced = {
        fold_name(column)
        for (column,) in engine.execute(
            "SELECT DISTINCT f.\"to\" FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
            "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE AND f.\"to\" IS NOT NULL",
            (item.live.name,),
        ).fetchall()
    }
    for column in referenced:
        new = sources.get(column)
        old = item.live.column(column)
        desired = item.desired.column(new) if new is not None else None
        if old is None or desired is None or term_of.get(quote_identifier(desired.name)) != quote_identifier(old.name):
            raise NotOnline(f"other tables' foreign keys reference column {old.name if old else column}, whose values the rebuild converts or drops")


def _dependants(operation: Operation) -> tuple[list[str], list[str]]:
    """The rehearsed rebuild's CREATE INDEX statements (the new shape's and the hand-made ones)
    and CREATE TRIGGER statements, all on the table's own name: the new shape's indexes the
    offline rebuild builds on its copy, then everything after the statement that renames the
    new table into place."""
    name = quote_identifier(operation.table)
    start = next(
        position + 1
        for position, statement in enumerate(operation.statements)
        if statement.startswith("ALTER TABLE") and statement.endswith(f"RENAME TO {name}")
    )
    on_the_copy = {
        fold_name(_index_name(statement))
        for statement in operation.statements[:start]
        if "INDEX" in [token.upper for token in tokenize(statement)[:3]]
    }
    desired = operation.rebuild.desired.indexes if operation.rebuild is not None else ()
    indexes = [render_create_index(index) for index in desired if fold_name(index.name) in on_the_copy]
    triggers: list[str] = []
    for statement in operation.statements[start:]:
        words = [token.upper for token in tokenize(statement)[:3]]
        if "TRIGGER" in words:
            triggers.append(statement)
        elif "INDEX" in words:
            indexes.append(statement)
    return indexes, triggers


def _retarget_table(table_sql: str, table: str) -> str:
    """``table_sql`` (CREATE TABLE ``table``) for the new table's name, as SQLite's own rename writes it."""
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        create_in_scratch(scratch, table_sql, table)
        scratch.execute("PRAGMA legacy_alter_table = ON")
        scratch.execute(render_rename_table(table, new_table_name(table)))
        return str(scratch.execute("SELECT sql FROM sqlite_master WHERE type = 'table'").fetchone()[0])


def _retarget(table_sql: str, index_sql: list[str], table: str) -> list[str]:
    """The CREATE INDEX statements ``index_sql`` (on ``table``) as they read for the new table:
    SQLite's own rename rewrites them in a scratch database, so pydsqlite edits no SQL text."""
    if not index_sql:
        return []
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        create_in_scratch(scratch, table_sql, table)
        for sql in index_sql:
            create_in_scratch(scratch, sql, _index_name(sql))
        scratch.execute("PRAGMA legacy_alter_table = ON")
        scratch.execute(render_rename_table(table, new_table_name(table)))
        rows = dict(scratch.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall())
    by_name = {fold_name(name): sql for name, sql in rows.items()}
    return [by_name[fold_name(_index_name(sql))] for sql in index_sql]


def _index_name(sql: str) -> str:
    return str(_index_name_token(sql).identifier)


def _index_name_token(sql: str) -> Token:
    tokens = tokenize(sql)
    position = next(i for i, token in enumerate(tokens) if token.upper == "INDEX") + 1
    if [token.upper for token in tokens[position : position + 3]] == ["IF", "NOT", "EXISTS"]:
        position += 3
    if position + 1 < len(tokens) and tokens[position + 1].text == ".":
        position += 2
    return tokens[position]


def _renamed_index(sql: str, name: str) -> str:
    """A temporary copy of an index under ``name``: the statement with its name token replaced
    (the index is pydsqlite's own until pass 2 builds the real one from its original text)."""
    token = _index_name_token(sql)
    return sql[: token.start] + quote_identifier(name) + sql[token.end :]


def has_rowid(table_sql: str) -> bool:
    return not parse_create_table(table_sql).without_rowid


def literals(values: Sequence[Any]) -> list[str]:
    """Key values as SQL literals; text holding NUL (which a quoted literal cannot) as its bytes cast to TEXT."""
    return [f"CAST(X'{value.encode().hex()}' AS TEXT)" if isinstance(value, str) and "\x00" in value else quote_literal(value) for value in values]


def encode_cursor(values: Sequence[Any] | None) -> str | None:
    """The cursor as stored in the state table (JSON; blobs as hex)."""
    if values is None:
        return _END
    return json.dumps([{"b": value.hex()} if isinstance(value, bytes) else value for value in values])


def decode_cursor(text: str | None) -> tuple[Any, ...] | None | Literal[False]:
    """The stored cursor: a key, None for the end, False when the copy has not started."""
    if text is None:
        return False
    if text == _END:
        return None
    return tuple(bytes.fromhex(value["b"]) if isinstance(value, dict) else value for value in json.loads(text))
