"""Pipeline stage 5: apply a checked ``MigrationPlan`` (the only stage that writes schema).

Everything it sends goes through the connection's ``Engine`` (statements, pragmas,
functions), so an engine that cannot switch foreign keys off can take another route.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..engines import Engine
from ..errors import MigrationError
from ..replica.reshape import reshape_tombstones, settle_pending_deletes
from ..schema.objects import Schema
from ..sql.ddl import tokenize
from ..sql.render import quote_identifier
from .dependants import broken_objects
from .metadata import ManagedObjects, audit_statements, managed_differs, record_statements, state_statements
from .migration import MigrationPlan, Operation, RowCopy
from .rebuild import PROGRESS_FUNCTION

logger = logging.getLogger(__name__)

_SAVEPOINT = "pydsqlite_migration"
DEFAULT_BUSY_TIMEOUT_MS = 60_000

ProgressCallback = Callable[[str, int, int], object]
"""``progress(table, rows_copied, total_rows)``, called while a rebuild copies rows."""


class MigrationSession:
    """An open migration transaction: the write lock is held while the plan is made and applied."""

    def __init__(self, engine: Engine, *, foreign_keys_enforced: bool, check_foreign_keys: bool) -> None:
        self.engine = engine
        self.foreign_keys_enforced = foreign_keys_enforced
        """True when foreign keys stay enforced during the migration (caller's open transaction)."""
        self.check_foreign_keys = check_foreign_keys
        self.foreign_key_tables: tuple[str, ...] | None = None
        """When set, only these tables' foreign keys are checked (an online migration cannot afford
        a scan of the whole database while it holds the lock; it checks the tables it copies itself)."""

    def apply(
        self,
        plan: MigrationPlan,
        desired: Schema,
        fingerprint: str,
        managed: ManagedObjects,
        progress: ProgressCallback | None = None,
        after_expand: Callable[[], MigrationPlan] | None = None,
    ) -> MigrationPlan:
        """Run every statement of ``plan``, record the managed objects and the audit entry, verify
        foreign keys; returns the plan applied.

        ``progress(table, rows_copied, total_rows)`` is called while rebuilds copy rows. A plan
        with data steps runs its operations before them, then ``after_expand()``, which runs the
        steps and returns the checked operations to run after them (in place of the plan's own).
        """
        if plan.is_empty:
            self._bookkeep_if_writable(desired, fingerprint, managed)
            return plan
        unrehearsed = [op.description for op in plan.operations if op.replay is not None]
        if unrehearsed:
            raise MigrationError(f"the plan was not rehearsed ({unrehearsed[0]}); make it with model_migration_plan or sync_models")
        if self.foreign_keys_enforced:
            self._refuse_cascading_drops(plan)
        legacy = bool(self.engine.pragma("legacy_alter_table"))
        if legacy:  # renames must rewrite the views and triggers that name what they rename
            self.engine.set_pragma("legacy_alter_table", "OFF")
        try:
            return self._run(plan, desired, fingerprint, progress, after_expand)
        finally:
            if legacy:
                self.engine.set_pragma("legacy_alter_table", "ON")

    def _refuse_cascading_drops(self, plan: MigrationPlan) -> None:
        """With foreign keys enforced (inside the caller's transaction), dropping a table that other
        tables reference would fire their ON DELETE actions: refuse exactly those plans."""
        for operation in plan.operations:
            if operation.kind not in ("rebuild_table", "drop_table"):
                continue
            children = _tables_referencing(self.engine, operation.table)
            if children:
                raise MigrationError(
                    f"cannot rebuild or drop table {operation.table!r} inside an open transaction while PRAGMA "
                    f"foreign_keys is ON: {', '.join(sorted(children))} reference{'s' if len(children) == 1 else ''} it, "
                    "and dropping the old table would fire their ON DELETE actions. Commit first (pydsqlite then "
                    "switches foreign keys off for the rebuild) or turn foreign keys off; nothing was changed."
                )

    def _run(
        self,
        plan: MigrationPlan,
        desired: Schema,
        fingerprint: str,
        progress: ProgressCallback | None,
        after_expand: Callable[[], MigrationPlan] | None,
    ) -> MigrationPlan:
        baseline = self._foreign_key_violations() if self.check_foreign_keys else Counter()
        broken_before = broken_objects(self.engine)
        settle_pending_deletes(self.engine)
        if plan.data_steps:
            assert after_expand is not None, "a plan with data steps needs after_expand"
            self._execute(plan.operations_before_data_steps, progress)
            contract = after_expand()
            settle_pending_deletes(self.engine)  # deletes a step made, while they fit the shape the steps saw
            if self.foreign_keys_enforced:
                self._refuse_cascading_drops(contract)
            plan = plan.followed_by(contract)
            self._execute(contract.operations, progress, first=len(plan.operations) - len(contract.operations) + 1)
        else:
            self._execute(plan.operations, progress)
        reshape_tombstones(self.engine, desired, plan.table_renames, plan.renames)
        broken = [text for name, text in broken_objects(self.engine).items() if name not in broken_before]
        if broken:
            raise MigrationError(
                "the migration would leave views or triggers that no longer work; nothing was changed:\n  - "
                + "\n  - ".join(broken)
            )
        applied_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
        audit = audit_statements(applied_at, fingerprint, str(plan), plan.sql, plan.data_steps)
        for statement in [*record_statements(desired, plan.renames), *audit]:
            self.engine.execute(statement)
        if self.check_foreign_keys:
            introduced = self._foreign_key_violations() - baseline
            if introduced:
                details = ", ".join(f"{table} -> {parent}: {count}" for (table, parent), count in sorted(introduced.items()))
                raise MigrationError(
                    f"the migration would leave {sum(introduced.values())} row(s) violating foreign keys "
                    f"({details}); nothing was changed"
                )
        for statement in state_statements(fingerprint):
            self.engine.execute(statement)
        return plan

    def _execute(self, operations: tuple[Operation, ...], progress: ProgressCallback | None, first: int = 1) -> None:
        """Run the statements of ``operations`` (numbered from ``first`` in logs and errors)."""
        total = first - 1 + len(operations)
        for number, operation in enumerate(operations, first):
            logger.info("migration step %d/%d: %s", number, total, operation.description)
            temporary = temporary_triggers(self.engine, operation.table) if operation.kind == "rebuild_table" else []
            for position, statement in enumerate(operation.statements):
                try:
                    if progress is not None and operation.copy is not None and operation.copy.index == position:
                        self._copy_with_progress(operation.table, operation.copy, progress)
                    else:
                        self.engine.execute(statement)
                except self.engine.Error as error:
                    raise MigrationError(
                        f"step {number} ({operation.description}) failed: {error}; nothing was changed.\n"
                        f"Statement: {statement}"
                    ) from error
            for name, sql in temporary:  # dropped with the old table; they belong to this connection alone
                try:
                    self.engine.execute(sql)
                except self.engine.Error as error:
                    raise MigrationError(
                        f"step {number} ({operation.description}): temporary trigger {name} cannot be created again "
                        f"after the rebuild: {error}; nothing was changed. Drop it first, or change it"
                    ) from error

    def _bookkeep_if_writable(self, desired: Schema, fingerprint: str, managed: ManagedObjects) -> None:
        """Nothing to migrate: record the managed objects and the fast-path state, unless the
        database is read-only (then there is simply nothing to do)."""
        statements = record_statements(desired) if managed_differs(managed, desired) else []
        try:
            for statement in [*statements, *state_statements(fingerprint)]:
                self.engine.execute(statement)
        except self.engine.OperationalError as error:
            if not self.engine.is_read_only(error):
                raise
            logger.debug("read-only database: schema matches, bookkeeping skipped")

    def _copy_with_progress(self, table: str, copy: RowCopy, progress: ProgressCallback) -> None:
        """The rebuild's row copy, reporting about every 1% of the rows (the callback may raise to cancel)."""
        total = int(self.engine.scalar(f"SELECT COUNT(*) FROM {quote_identifier(copy.source)}"))
        step = max(1, total // 100)
        copied = 0
        raised: list[BaseException] = []

        def count_row() -> int:
            nonlocal copied
            copied += 1
            if copied % step == 0 and copied < total:
                try:
                    progress(table, copied, total)
                except BaseException as error:  # re-raised below: SQLite would only say "function raised"
                    raised.append(error)
                    raise
            return 1

        self.engine.create_function(PROGRESS_FUNCTION, 0, count_row)
        progress(table, 0, total)
        try:
            self.engine.execute(copy.with_progress)
        except self.engine.Error:
            if raised:
                raise raised[0] from None
            raise
        progress(table, total, total)

    def _foreign_key_violations(self) -> Counter[tuple[str, str]]:
        """Violations per (child table, parent table); ones that predate the migration are not its fault."""
        if self.foreign_key_tables is None:
            rows = self.engine.execute("PRAGMA foreign_key_check").fetchall()
        else:
            rows = [
                row
                for table in self.foreign_key_tables
                if self.engine.scalar("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,))
                for row in self.engine.execute("SELECT * FROM pragma_foreign_key_check(?)", (table,)).fetchall()
            ]
        return Counter((row[0], row[2]) for row in rows)


def temporary_triggers(engine: Engine, table: str) -> list[tuple[str, str]]:
    """(name, SQL) of this connection's temporary triggers on ``table``, which dropping the table drops."""
    query = "SELECT name, sql FROM temp.sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE ORDER BY rowid"
    triggers = []
    for name, sql in engine.execute(query, (table,)).fetchall():
        keyword = tokenize(sql)[1]  # SQLite stores "CREATE TRIGGER …" without the TEMP that made it
        triggers.append((name, f"{sql[: keyword.start]}TEMP {sql[keyword.start :]}"))
    return triggers


def _tables_referencing(engine: Engine, table: str) -> list[str]:
    """Other tables with a foreign key to ``table``."""
    rows = engine.execute(
        "SELECT DISTINCT m.name FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
        "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE AND m.name != ? COLLATE NOCASE",
        (table, table),
    ).fetchall()
    return [name for (name,) in rows]


@contextmanager
def migration_settings(engine: Engine, busy_timeout: float | None = None) -> Iterator[bool]:
    """Wait up to ``busy_timeout`` seconds for the write lock (default: the connection's own
    timeout, but at least ``DEFAULT_BUSY_TIMEOUT``: at start-up, waiting for another process's
    migration beats failing) and switch foreign keys off unless a transaction is open (inside one
    SQLite ignores the pragma); restore both afterwards. Yields whether foreign keys were on."""
    previous_timeout = int(engine.pragma("busy_timeout"))
    wanted = round(busy_timeout * 1000) if busy_timeout is not None else max(previous_timeout, DEFAULT_BUSY_TIMEOUT_MS)
    if wanted != previous_timeout:
        engine.set_pragma("busy_timeout", wanted)
    foreign_keys_on = bool(engine.pragma("foreign_keys"))
    switched_off = foreign_keys_on and not engine.in_transaction
    if switched_off:
        engine.set_pragma("foreign_keys", "OFF")
    try:
        yield foreign_keys_on
    finally:
        if switched_off:
            engine.set_pragma("foreign_keys", "ON")
        if wanted != previous_timeout:
            engine.set_pragma("busy_timeout", previous_timeout)


@contextmanager
def migration_session(engine: Engine, busy_timeout: float | None = None) -> Iterator[MigrationSession]:
    """Foreign keys off (before the transaction), ``BEGIN IMMEDIATE``, commit or roll back, restore.

    ``BEGIN IMMEDIATE`` takes the write lock before the schema is read (see ``migration_settings``
    for how long it waits). Inside the caller's open transaction a savepoint is used instead, and
    foreign keys cannot be switched off (SQLite ignores the pragma in a transaction).
    """
    outer = engine.in_transaction
    with migration_settings(engine, busy_timeout) as foreign_keys_on:
        try:
            engine.execute(f"SAVEPOINT {_SAVEPOINT}" if outer else engine.begin_statement(immediate=True))
        except engine.Error as error:
            raise MigrationError(f"could not start the migration transaction: {error}") from error
        session = MigrationSession(engine, foreign_keys_enforced=foreign_keys_on and outer, check_foreign_keys=foreign_keys_on)
        try:
            yield session
        except BaseException:
            if outer:
                engine.execute(f"ROLLBACK TO {_SAVEPOINT}")
                engine.execute(f"RELEASE {_SAVEPOINT}")
            elif engine.in_transaction:
                engine.execute("ROLLBACK")
            raise
        try:
            engine.execute(f"RELEASE {_SAVEPOINT}" if outer else "COMMIT")
        except engine.Error as error:
            if not outer and engine.in_transaction:
                engine.execute("ROLLBACK")
            raise MigrationError(f"could not commit the migration: {error}") from error


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[None]:
    """A read transaction so the preview sees one consistent state; it writes nothing."""
    if engine.in_transaction:
        yield
        return
    engine.execute("BEGIN")
    try:
        yield
    finally:
        if engine.in_transaction:
            engine.execute("ROLLBACK")
