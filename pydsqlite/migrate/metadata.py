"""pydsqlite's own bookkeeping tables: which tables and indexes it manages, and an audit
trail of every migration it applied."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..schema.objects import LWW_SUFFIX, Schema, Table, Trigger, View, VirtualTable, fold_name
from ..sql.render import quote_literal, render_create_index, render_create_table

METADATA_PREFIX = "_pydsqlite"
ONLINE_PREFIX = f"{METADATA_PREFIX}_online"
"""Names of everything an online rebuild keeps while it runs (its new table, key log, recorder
triggers, temporarily named indexes, the old table until it is freed, its state); introspection
leaves them out."""
OBJECTS_TABLE = "_pydsqlite_objects"
CREATE_OBJECTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {OBJECTS_TABLE} ("
    "kind TEXT NOT NULL, name TEXT NOT NULL, table_name TEXT NOT NULL, PRIMARY KEY (kind, name)"
    ") WITHOUT ROWID"
)

MIGRATIONS_TABLE = "_pydsqlite_migrations"
CREATE_MIGRATIONS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    "id INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, fingerprint TEXT NOT NULL, "
    "description TEXT NOT NULL, sql TEXT NOT NULL)"
)

DATA_STEPS_TABLE = "_pydsqlite_data_steps"
CREATE_DATA_STEPS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {DATA_STEPS_TABLE} ("
    "name TEXT PRIMARY KEY, migration_id INTEGER NOT NULL, applied_at TEXT NOT NULL)"
)

STATE_TABLE = "_pydsqlite_state"
CREATE_STATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL, schema_version INTEGER NOT NULL)"
)


def state_statements(fingerprint: str) -> list[str]:
    """Remember that the schema now matches ``fingerprint`` at the current ``PRAGMA schema_version``.

    SQLite bumps ``schema_version`` on every schema change, so a later sync that finds
    both values unchanged can skip introspection entirely (issue: start-up cost).
    """
    return [
        CREATE_STATE_TABLE,
        f"INSERT OR REPLACE INTO {STATE_TABLE} (id, fingerprint, schema_version) "
        f"SELECT 1, {quote_literal(fingerprint)}, schema_version FROM pragma_schema_version",
    ]


@dataclass(frozen=True)
class AppliedMigration:
    """One entry of the audit trail (``migration_history``): when a plan was applied, for which
    models, what it did, and the data steps it ran.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import SyncModel, migration_history, sync_models
        >>> class Note(SyncModel, table="notes"):
        ...     body: str
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Note])
        >>> class Note(SyncModel, table="notes"):
        ...     body: str
        ...     pinned: bool = False
        >>> def pin_the_first(db):
        ...     db.conn.execute("UPDATE notes SET pinned = 1 WHERE rowid = 1")
        >>> _ = sync_models(conn, [Note], data_steps={"002_pin": pin_the_first})
        >>> [(entry.id, entry.data_steps) for entry in migration_history(conn)]
        [(1, ()), (2, ('002_pin',))]
        >>> print(migration_history(conn)[-1].description)
        Migration plan (1 operation, 1 data step):
          1. add column notes.pinned
          data step 002_pin
    """

    id: int
    applied_at: str
    """UTC time in ISO 8601."""
    fingerprint: str
    """``schema_fingerprint`` of the models the database was migrated to."""
    description: str
    """``str(plan)`` of the plan applied."""
    sql: str
    """``plan.sql``: every statement applied, the data steps as comments where they ran."""
    data_steps: tuple[str, ...] = ()
    """Names of the data steps this migration ran, in order."""


COLUMNS_RECORDED = "columns recorded"
"""The objects table's marker row (kind ``format``) saying that its hidden columns are recorded."""

METADATA_FORMAT = "2"
"""Bumped when the bookkeeping records more (2: the hidden sync columns pydsqlite created), so the
first sync after an upgrade takes the full path once and records it."""


def schema_fingerprint(schema: Schema) -> str:
    """A stable hash of a desired schema: the SQL that would create it, object by object."""
    digest = hashlib.sha256(METADATA_FORMAT.encode())
    for table in sorted(schema.tables, key=lambda table: fold_name(table.name)):
        stable = tuple(column if column.stable_default else replace(column, default=None) for column in table.columns)
        digest.update(render_create_table(replace(table, columns=stable)).encode("utf-8"))
        hints = [table.renamed_from, *((column.name, column.renamed_from) for column in table.columns if column.renamed_from)]
        digest.update(json.dumps(hints).encode("utf-8"))  # a new rename hint (say, a swap) must be planned
        for index in sorted(table.indexes, key=lambda index: fold_name(index.name)):
            digest.update(render_create_index(index).encode("utf-8"))
    others: tuple[View | Trigger | VirtualTable, ...] = (*schema.views, *schema.triggers, *schema.virtual_tables)
    for item in sorted(others, key=lambda item: fold_name(item.name)):
        digest.update(item.sql.encode("utf-8"))
    return digest.hexdigest()


def audit_statements(applied_at: str, fingerprint: str, description: str, sql: str, data_steps: tuple[str, ...] = ()) -> list[str]:
    """Statements that append one entry to the audit trail, and mark ``data_steps`` applied by it."""
    values = ", ".join(quote_literal(value) for value in (applied_at, fingerprint, description, sql))
    statements = [
        CREATE_MIGRATIONS_TABLE,
        f"INSERT INTO {MIGRATIONS_TABLE} (applied_at, fingerprint, description, sql) VALUES ({values})",
    ]
    if data_steps:
        statements.append(CREATE_DATA_STEPS_TABLE)
        statements.extend(
            f"INSERT INTO {DATA_STEPS_TABLE} (name, migration_id, applied_at) "
            f"VALUES ({quote_literal(name)}, (SELECT MAX(id) FROM {MIGRATIONS_TABLE}), {quote_literal(applied_at)})"
            for name in data_steps
        )
    return statements


@dataclass(frozen=True)
class ManagedObjects:
    """Names (case-folded) of the objects pydsqlite created or adopted, which it may change or drop.

    ``everything`` is set when the desired schema describes the whole database (SQL or
    another database as the source): then every live object counts as managed.
    """

    tables: frozenset[str] = frozenset()
    indexes: frozenset[str] = frozenset()
    views: frozenset[str] = frozenset()
    triggers: frozenset[str] = frozenset()
    columns: frozenset[tuple[str, str]] = frozenset()
    """(table, column), case-folded: the hidden sync columns pydsqlite created."""
    renames: frozenset[tuple[str, str, str]] = frozenset()
    """(table, old column, new column), case-folded: column renames already applied, so a swap
    whose hints stay in the models is applied once."""
    abandoned_clocks: frozenset[tuple[str, str]] = frozenset()
    """(table, clock column), case-folded: clocks whose column the expand phase of a migration with data
    steps renamed to a column that is no longer LWW. The phase after the steps drops them; a new LWW
    column given the old name gets a clock of its own, not the old column's stamps."""
    added_before_steps: frozenset[tuple[str, str]] = frozenset()
    """(table, column), case-folded: the columns the expand phase added. Their values are new, so the
    clock the phase after the steps makes for one starts at the baseline, as in a migration without
    steps (not at the row's version, the time of a column that already held values)."""
    columns_recorded: bool = True
    """False for bookkeeping that records no hidden column and no marker that it would (written
    before they were recorded, or holding none): see ``may_adopt_column``."""
    everything: bool = False

    def manages_table(self, name: str) -> bool:
        return self.everything or fold_name(name) in self.tables

    def manages_index(self, name: str) -> bool:
        return self.everything or fold_name(name) in self.indexes

    def manages_view(self, name: str) -> bool:
        return self.everything or fold_name(name) in self.views

    def manages_trigger(self, name: str) -> bool:
        return self.everything or fold_name(name) in self.triggers

    def renames_done(self, table: str) -> frozenset[tuple[str, str]]:
        """(old, new) column renames already applied to ``table``, case-folded."""
        return self._renames_by_table.get(fold_name(table), frozenset())

    @functools.cached_property
    def _renames_by_table(self) -> dict[str, frozenset[tuple[str, str]]]:
        """``renames`` by table, gathered on first use: a plan asks for every table's, and a scan of
        them all per table grew with the square of the tables."""
        by_table: dict[str, set[tuple[str, str]]] = {}
        for owner, old, new in self.renames:
            by_table.setdefault(owner, set()).add((old, new))
        return {owner: frozenset(pairs) for owner, pairs in by_table.items()}

    def owns_column(self, table: str, column: str) -> bool:
        """Whether pydsqlite created this hidden column itself (never true for a user's column,
        whatever its name)."""
        return (fold_name(table), fold_name(column)) in self.columns

    def may_adopt_column(self, table: str, column: str, *, made_as_ours: bool) -> bool:
        """Whether a live column named like a hidden sync column the models want is that column:
        one pydsqlite recorded, or, in a table it manages under bookkeeping that records none, one
        it made (``made_as_ours``: with the very type and default pydsqlite gives it). Anything else
        is the user's column, never taken for a clock; nor is an abandoned clock."""
        if (fold_name(table), fold_name(column)) in self.abandoned_clocks:
            return False
        return self.owns_column(table, column) or (not self.columns_recorded and made_as_ours and self.manages_table(table))

    def after_renames(self, tables: dict[str, str], columns: tuple[tuple[str, str, str], ...]) -> ManagedObjects:
        """The same objects as a plan made after renames reads them: ``tables`` (old name → new)
        renamed, and the column renames ``columns`` ((table, old, new)) counted as applied."""
        new_name = {fold_name(old): fold_name(new) for old, new in tables.items()}
        moved = {(fold_name(t), fold_name(old)): fold_name(new) for t, old, new in columns}  # companions are renamed by pairs of their own
        owned = [(new_name.get(table, table), column) for table, column in self.columns]
        return replace(
            self,
            columns=frozenset((table, moved.get((table, column), column)) for table, column in owned),
            renames=frozenset((new_name.get(table, table), old, new) for table, old, new in self.renames)
            | frozenset((fold_name(t), fold_name(old), fold_name(new)) for t, old, new in columns),
        )


def column_key(table: str, column: str) -> str:
    """How a hidden column is named in the objects table."""
    return json.dumps([table, column])


def declared_renames(schema: Schema) -> frozenset[tuple[str, str, str]]:
    """(table, old column, new column), case-folded: every column rename hint of ``schema``, with
    the timestamp companion of an LWW column, which is renamed with it."""
    hints = set()
    for table in schema.tables:
        for column in table.columns:
            for old in column.renamed_from:
                hints.add((fold_name(table.name), fold_name(old), fold_name(column.name)))
                if column.lww:
                    hints.add((fold_name(table.name), fold_name(old + LWW_SUFFIX), fold_name(column.name + LWW_SUFFIX)))
    return frozenset(hints)


def renames_to_record(
    managed: ManagedObjects,
    schema: Schema,
    applied: Iterable[tuple[str, str, str]] = (),
    created: Iterable[str] = (),
    table_renames: Iterable[tuple[str, str]] = (),
) -> frozenset[tuple[str, str, str]]:
    """The column renames the metadata keeps after a migration to ``schema``: those recorded before
    (under the table's new name when ``table_renames`` renamed it) or ``applied`` now, and every hint
    of a table ``created`` now (made with the new names, it must never go through the renames), for
    as long as the models still declare them. A hint dropped from the models is forgotten, so a
    later release may declare the same swap again and have it applied."""
    new_tables = {fold_name(name) for name in created}
    new_name = {fold_name(old): fold_name(new) for old, new in table_renames}
    done = {(new_name.get(table, table), old, new) for table, old, new in managed.renames}
    done.update((fold_name(table), fold_name(old), fold_name(new)) for table, old, new in applied)
    declared = declared_renames(schema)
    done.update(hint for hint in declared if hint[0] in new_tables)
    return frozenset(done & declared)


def record_statements(schema: Schema, renames: Iterable[tuple[str, str, str]] = ()) -> list[str]:
    """Statements that make the metadata say exactly: the objects of ``schema`` are managed, and
    ``renames`` (table, old column, new column, case-folded) are the column renames applied."""
    statements = [CREATE_OBJECTS_TABLE, f"DELETE FROM {OBJECTS_TABLE}"]
    rows = [("rename", json.dumps(list(rename)), rename[0]) for rename in sorted(renames)]
    rows.append(("format", COLUMNS_RECORDED, ""))  # hidden columns are recorded, even when there are none
    for table in schema.tables:
        rows.append(("table", table.name, table.name))
        rows.extend(("index", index.name, table.name) for index in table.indexes)
        rows.extend(("column", column_key(table.name, column.name), table.name) for column in table.columns if column.hidden)
    rows.extend(("table", virtual.name, virtual.name) for virtual in schema.virtual_tables)
    rows.extend(("view", view.name, view.name) for view in schema.views)
    rows.extend(("trigger", trigger.name, trigger.table) for trigger in schema.triggers)
    for kind, name, table_name in rows:
        statements.append(
            f"INSERT OR REPLACE INTO {OBJECTS_TABLE} (kind, name, table_name) "
            f"VALUES ({quote_literal(kind)}, {quote_literal(name)}, {quote_literal(table_name)})"
        )
    return statements


def managed_differs(managed: ManagedObjects, schema: Schema) -> bool:
    """Whether the recorded managed objects differ from those of ``schema`` (renames included:
    one whose hint left the models is forgotten)."""
    tables: tuple[Table | VirtualTable, ...] = (*schema.tables, *schema.virtual_tables)
    return (
        not managed.columns_recorded
        or managed.renames != renames_to_record(managed, schema)
        or managed.tables != frozenset(fold_name(table.name) for table in tables)
        or managed.indexes != frozenset(fold_name(index.name) for table in schema.tables for index in table.indexes)
        or managed.views != frozenset(fold_name(view.name) for view in schema.views)
        or managed.triggers != frozenset(fold_name(trigger.name) for trigger in schema.triggers)
        or managed.columns != hidden_columns(schema)
    )


def hidden_columns(schema: Schema) -> frozenset[tuple[str, str]]:
    return frozenset((fold_name(table.name), fold_name(column.name)) for table in schema.tables for column in table.columns if column.hidden)
