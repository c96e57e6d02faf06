"""The foreign-key strategy of a migration: how rebuilds and table drops stay safe under foreign keys.

SQLite's rebuild recipe drops the old table. With foreign keys enforced, that ``DROP`` first
deletes every row and fires the ``ON DELETE`` actions of the tables that reference it
(``CASCADE`` empties them, silently: the rows are deleted, not orphaned). So foreign keys are
switched off before the migration's transaction (inside one the pragma does nothing) and read
back inside it, on the connection that runs it: the plain recipe runs only when they are
verifiably off. Where they stay on (the caller's open transaction, or an engine where the
switch did not take, as a dqlite connection could), a plan that rebuilds or drops a table
other tables reference is refused before anything runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..engines import Engine
from ..errors import MigrationError
from ..schema.objects import Schema, Table, fold_name
from ..sql.render import quote_identifier
from .checks import no_parent_condition
from .migration import MigrationPlan

logger = logging.getLogger(__name__)


@dataclass
class ForeignKeyStrategy:
    """How one migration deals with the connection's foreign keys."""

    enforced_before: bool
    """The connection enforced foreign keys when the migration began: it must leave none violated."""
    switched_off: bool
    """Foreign keys were switched off for the migration (and are switched on again after it)."""
    inside_caller_transaction: bool
    enforced: bool = False
    """Still enforced inside the migration's transaction, as read back there."""

    @classmethod
    def before_transaction(cls, engine: Engine, *, inside_caller_transaction: bool) -> ForeignKeyStrategy:
        """Switch foreign keys off before the transaction begins, where that is possible."""
        enforced = bool(engine.pragma("foreign_keys"))
        switch = enforced and not inside_caller_transaction
        if switch:
            try:
                engine.set_pragma("foreign_keys", "OFF")
            except engine.Error as error:  # read back inside the transaction, which decides
                logger.warning("foreign keys could not be switched off for the migration: %s", error)
        return cls(enforced, switch, inside_caller_transaction)

    def verify(self, engine: Engine) -> None:
        """Inside the migration's transaction: read back whether foreign keys are enforced."""
        self.enforced = self.enforced_before and bool(engine.pragma("foreign_keys"))

    def refuse_cascading_drops(self, engine: Engine, plan: MigrationPlan, desired: Schema) -> None:
        """With foreign keys enforced, dropping a table that other tables reference would fire their
        ON DELETE actions: refuse exactly the plans that rebuild or drop such a table. A rebuilt
        table that references itself counts too: until the rename, its new copy's rows reference
        the old table by name, so dropping that fires the actions on the copy. A rebuilt table
        holding rows that already reference a missing parent is refused as well (its copy would fail)."""
        if not self.enforced:
            return
        for operation in plan.operations:
            if operation.kind not in ("rebuild_table", "drop_table"):
                continue
            if operation.kind == "rebuild_table":
                self._refuse_copying_orphans(engine, operation.table, desired.table(operation.table))
            children = tables_referencing(engine, operation.table)
            if operation.kind == "rebuild_table" and references_itself(desired.table(operation.table)):
                children.append(f"{operation.table} itself (its rebuilt copy)")
            if not children:
                continue
            why, remedy = self._why_enforced()
            raise MigrationError(
                f"cannot rebuild or drop table {operation.table!r} {why}: {', '.join(sorted(children))} "
                f"reference{'s' if len(children) == 1 else ''} it, and dropping the old table would fire their "
                f"ON DELETE actions. {remedy}; nothing was changed."
            )

    def _refuse_copying_orphans(self, engine: Engine, name: str, rebuilt: Table | None) -> None:
        """With foreign keys enforced, the rebuild's copy re-checks every row against the foreign keys
        the table keeps: rows that already reference a missing parent (written while foreign keys were
        off) would fail the copy with a bare SQLite error, so they are named first."""
        if rebuilt is None or not rebuilt.foreign_keys:
            return
        kept = {fold_name(key.ref_table) for key in rebuilt.foreign_keys}
        orphans = [
            (parent, ident)
            for _, _, parent, ident in engine.execute(f"PRAGMA foreign_key_check({quote_identifier(name)})")
            if fold_name(parent) in kept
        ]
        if not orphans:
            return
        parent, ident = orphans[0]
        count = len(orphans)
        shown = _orphan_sample(engine, name, ident)
        why, remedy = self._why_enforced()
        raise MigrationError(
            f"cannot rebuild table {name!r} {why}: {count} {'rows reference' if count != 1 else 'row references'} a "
            f"missing parent (e.g. {shown}, which no row of {parent!r} holds; written while foreign keys were off), and "
            f"the rebuild's copy would be refused for them. Delete or fix those rows, or {remedy[0].lower()}{remedy[1:]}; "
            "nothing was changed."
        )

    def _why_enforced(self) -> tuple[str, str]:
        """Why foreign keys are enforced during this migration, and how to run it without them."""
        if self.inside_caller_transaction:
            return (
                "inside an open transaction while PRAGMA foreign_keys is ON",
                "Commit first (pydsqlite then switches foreign keys off for the rebuild) or turn foreign keys off",
            )
        return (
            "because foreign keys could not be switched off on this connection (PRAGMA foreign_keys still reads ON)",
            "Run the migration on a connection where PRAGMA foreign_keys = OFF takes effect",
        )

    @classmethod
    def refusal_in_preview(cls, engine: Engine, plan: MigrationPlan, desired: Schema, *, inside_caller_transaction: bool) -> str | None:
        """What ``refuse_cascading_drops`` would refuse when the plan is applied on this connection now,
        inside the caller's open transaction with foreign keys on, for the preview to list; else None."""
        if not inside_caller_transaction or not engine.pragma("foreign_keys"):
            return None
        strategy = cls(enforced_before=True, switched_off=False, inside_caller_transaction=True, enforced=True)
        try:
            strategy.refuse_cascading_drops(engine, plan, desired)
        except MigrationError as error:
            return str(error).removesuffix(" nothing was changed.").removesuffix(";")
        return None

    def restore(self, engine: Engine) -> None:
        """Switch foreign keys on again after the migration (a lost connection has nothing to restore)."""
        if self.switched_off and not engine.connection_lost:
            engine.set_pragma("foreign_keys", "ON")


def references_itself(table: Table | None) -> bool:
    """Whether ``table`` has a foreign key to itself."""
    return table is not None and any(fold_name(key.ref_table) == fold_name(table.name) for key in table.foreign_keys)


def tables_referencing(engine: Engine, table: str) -> list[str]:
    """Other tables with a foreign key to ``table``."""
    rows = engine.execute(
        "SELECT DISTINCT m.name FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
        "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE AND m.name != ? COLLATE NOCASE",
        (table, table),
    ).fetchall()
    return [name for (name,) in rows]


def _orphan_sample(engine: Engine, table: str, ident: int) -> str:
    """One row of ``table`` that foreign key ``ident`` finds no parent for, named by its live key."""
    key = [name for (name,) in engine.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,))] or ["rowid"]
    pairs = engine.execute(
        'SELECT "from", "to", "table" FROM pragma_foreign_key_list(?) WHERE id = ? ORDER BY seq', (table, ident)
    ).fetchall()
    parent = pairs[0][2]
    targets = [to for _, to, _ in pairs]
    if any(to is None for to in targets):  # the parent's primary key
        targets = [name for (name,) in engine.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (parent,))]
    columns = [column for column, _, _ in pairs]
    shown = [*key, *(column for column in columns if column not in key)]
    orphan = no_parent_condition([f"c.{quote_identifier(column)}" for column in columns], parent, targets)
    row = engine.execute(
        f"SELECT {', '.join(f'c.{quote_identifier(column)}' for column in shown)} FROM {quote_identifier(table)} AS c "
        f"WHERE {orphan} LIMIT 1"
    ).fetchone()
    if row is None:  # SQLite compares with the parent's affinity, which this plain lookup may not
        return f"a row whose {', '.join(columns)} finds no parent"
    values = dict(zip(shown, row, strict=True))
    named = ", ".join(f"{column} {values[column]!r}" for column in key)
    held = ", ".join(f"{column} = {values[column]!r}" for column in columns)
    return f"the row with {named}, where {held}"


def violating_row(engine: Engine, table: str, parent: str) -> str:
    """One row of ``table`` whose foreign key to ``parent`` finds no parent row, named by its key and
    the values it references."""
    for _, _, referenced, ident in engine.execute(f"PRAGMA foreign_key_check({quote_identifier(table)})"):
        if fold_name(referenced) == fold_name(parent):
            return f"in {table}, " + _orphan_sample(engine, table, ident) + f", which no row of {parent} holds"
    return f"a row of {table}"
