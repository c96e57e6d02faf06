"""Pipeline stage 5: apply a checked ``MigrationPlan`` (the only stage that writes schema).

Everything it sends goes through the connection's ``Engine`` (statements, pragmas,
functions); how rebuilds stay safe under foreign keys is the ``ForeignKeyStrategy``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from ..engines import Engine
from ..errors import MigrationError, UsageError
from ..replica.deleted_rows import deletes_landing_on_converted_rows, tables_forgetting_deletes
from ..replica.reshape import renumber_folded_rows, reshape_tombstones, settle_pending_deletes, synced_registers
from ..schema.objects import Schema, fold_name
from ..sql.ddl import tokenize
from ..sql.render import quote_identifier
from .dependants import Dependants
from .foreign_keys import ForeignKeyStrategy, violating_row
from .introspect import has_object
from .metadata import ManagedObjects, audit_statements, managed_differs, record_statements, renames_to_record, state_statements
from .migration import MigrationPlan, Operation, RowCopy
from .rebuild import PROGRESS_FUNCTION, key_term

logger = logging.getLogger(__name__)

_SAVEPOINT = "pydsqlite_migration"
DEFAULT_BUSY_TIMEOUT_MS = 60_000

ProgressCallback = Callable[[str, int, int], object]
"""``progress(table, rows_copied, total_rows)``, called while a rebuild copies rows."""


class MigrationSession:
    """An open migration transaction: the write lock is held while the plan is made and applied."""

    def __init__(self, engine: Engine, foreign_keys: ForeignKeyStrategy) -> None:
        self.engine = engine
        self.foreign_keys = foreign_keys
        self.check_foreign_keys = foreign_keys.enforced_before
        """The connection enforces foreign keys: the migration must leave no row violating them."""
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
        *,
        state_key: str | None = None,
    ) -> MigrationPlan:
        """Run every statement of ``plan``, record the managed objects and the audit entry, verify
        foreign keys; returns the plan applied. The fast-path state records ``state_key``
        (default: ``fingerprint``, which the audit records).

        ``progress(table, rows_copied, total_rows)`` is called while rebuilds copy rows. A plan
        with data steps runs its operations before them, then ``after_expand()``, which runs the
        steps and returns the checked operations to run after them (in place of the plan's own).
        """
        state_key = state_key or fingerprint
        if plan.is_empty:
            self._bookkeep_if_writable(desired, state_key, managed)
            return plan
        unrehearsed = [op.description for op in plan.operations if op.replay is not None]
        if unrehearsed:
            raise MigrationError(f"the plan was not rehearsed ({unrehearsed[0]}); make it with model_migration_plan or sync_models")
        refuse_while_streaming(self.engine, plan)
        self.foreign_keys.refuse_cascading_drops(self.engine, plan, desired)
        legacy = bool(self.engine.pragma("legacy_alter_table"))
        if legacy:  # renames must rewrite the views and triggers that name what they rename
            self.engine.set_pragma("legacy_alter_table", "OFF")
        try:
            return self._run(plan, desired, managed, fingerprint, state_key, progress, after_expand)
        finally:
            if legacy and not self.engine.connection_lost:  # a lost connection has nothing to restore
                self.engine.set_pragma("legacy_alter_table", "ON")

    def _run(
        self,
        plan: MigrationPlan,
        desired: Schema,
        managed: ManagedObjects,
        fingerprint: str,
        state_key: str,
        progress: ProgressCallback | None,
        after_expand: Callable[[], MigrationPlan] | None,
    ) -> MigrationPlan:
        baseline = self._foreign_key_violations() if self.check_foreign_keys else Counter()
        dependants_before = Dependants.read(self.engine)
        settle_pending_deletes(self.engine)
        registers_before = synced_registers(self.engine)
        if plan.data_steps:
            assert after_expand is not None, "a plan with data steps needs after_expand"
            expand = replace(plan, operations=plan.operations_before_data_steps)
            landing = deletes_landing_on_converted_rows(self.engine, expand)  # read before the rebuilds convert the keys
            self._execute(expand.operations, progress)
            contract = after_expand()
            settle_pending_deletes(self.engine)  # deletes a step made, while they fit the shape the steps saw
            self.foreign_keys.refuse_cascading_drops(self.engine, contract, desired)
            plan = plan.followed_by(contract)
            for table, keys in deletes_landing_on_converted_rows(self.engine, contract).items():
                landing.setdefault(table, set()).update(keys)
            self._execute(contract.operations, progress, first=len(plan.operations) - len(contract.operations) + 1)
        else:
            landing = deletes_landing_on_converted_rows(self.engine, plan)
            self._execute(plan.operations, progress)
        reshape_tombstones(
            self.engine, desired, plan.table_renames, plan.renames, plan.value_changes, tables_forgetting_deletes(plan), landing
        )
        renumber_folded_rows(self.engine, desired, registers_before, plan.table_renames, plan.renames)
        broken = dependants_before.broken_by(Dependants.read(self.engine))
        if broken:
            raise MigrationError(
                "the migration would leave views or triggers that no longer work; nothing was changed:\n  - "
                + "\n  - ".join(broken)
            )
        applied_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
        audit = audit_statements(applied_at, fingerprint, str(plan), plan.sql, plan.data_steps)
        created = [operation.table for operation in plan.operations if operation.kind == "create_table"]
        renames = renames_to_record(managed, desired, plan.renames, created, plan.table_renames)
        for statement in [*record_statements(desired, renames), *audit]:
            self.engine.execute(statement)
        if not self.check_foreign_keys:
            self._refuse_broken_new_foreign_keys(plan)
        else:
            introduced = self._foreign_key_violations() - baseline
            if introduced:
                details = ", ".join(f"{table} -> {parent}: {count}" for (table, parent), count in sorted(introduced.items()))
                table, parent = min(introduced)
                raise MigrationError(
                    f"the migration would leave {sum(introduced.values())} row(s) violating foreign keys "
                    f"({details}; e.g. {violating_row(self.engine, table, parent)}); nothing was changed"
                )
        for statement in state_statements(state_key):
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
                        self._copy_with_progress(operation.table, operation.copy, statement, progress)
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

    def _bookkeep_if_writable(self, desired: Schema, state_key: str, managed: ManagedObjects) -> None:
        """Nothing to migrate: record the managed objects and the fast-path state, unless the
        database is read-only (then there is simply nothing to do)."""
        statements = record_statements(desired, renames_to_record(managed, desired)) if managed_differs(managed, desired) else []
        try:
            for statement in [*statements, *state_statements(state_key)]:
                self.engine.execute(statement)
        except self.engine.OperationalError as error:
            if not self.engine.is_read_only(error):
                raise
            logger.debug("read-only database: schema matches, bookkeeping skipped")

    def _copy_with_progress(self, table: str, copy: RowCopy, statement: str, progress: ProgressCallback) -> None:
        """The rebuild's row copy, reporting about every 1% of the rows (the callback may raise to cancel)."""
        total = int(self.engine.scalar(f"SELECT COUNT(*) FROM {quote_identifier(copy.source)}"))
        step = max(1, total // 100)
        if not self.engine.supports_functions:
            self._copy_in_chunks(table, copy, statement, progress, total, step)
            return
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

    def _copy_in_chunks(self, table: str, copy: RowCopy, statement: str, progress: ProgressCallback, total: int, step: int) -> None:
        """The copy on an engine without SQL functions: ranges of ``step`` rows in the order of the
        old table's rowid (or key), reporting after each; then every row must have been copied."""
        progress(table, 0, total)
        if not copy.chunk_key:
            self.engine.execute(statement)
            progress(table, total, total)
            return
        key = ", ".join(key_term(name) for name in copy.chunk_key)
        slots = ", ".join("?" * len(copy.chunk_key))
        source = quote_identifier(copy.source)
        copied = 0
        after: tuple[object, ...] = ()
        while True:
            lower = [f"({key}) > ({slots})"] if after else []
            bound = self.engine.execute(
                f"SELECT {key} FROM {source}{' WHERE ' + lower[0] if lower else ''} ORDER BY {key} LIMIT 1 OFFSET {step - 1}", after
            ).fetchone()
            conditions = lower + ([f"({key}) <= ({slots})"] if bound is not None else [])
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            copied += self.engine.execute(statement + where, (*after, *(bound or ()))).rowcount
            if bound is None:
                break
            after = tuple(bound)
            if copied < total:
                progress(table, copied, total)
        if copied != total:
            raise MigrationError(f"the rebuild of table {table!r} copied {copied} of its {total} rows; nothing was changed")
        progress(table, total, total)

    def _refuse_broken_new_foreign_keys(self, plan: MigrationPlan) -> None:
        """With foreign keys off, a foreign key the migration creates must still hold for every row
        (else ``foreign_key_check`` fails from then on, and every write the day they are on). The
        plan's data checks refuse that before anything runs; this reads, after the statements ran,
        the tables that gained a foreign key: the application's code may have run meanwhile (a
        ``progress`` callback, writes during an online rebuild's copy)."""
        for operation in plan.operations:
            item = operation.rebuild
            if item is None:
                continue
            new_links = {key.link for key in item.desired.foreign_keys} - item.existing_links
            if not new_links:
                continue
            links: dict[int, tuple[list[str], str, list[str]]] = {}
            for ident, parent, column, referenced in self.engine.execute(
                'SELECT id, "table", "from", "to" FROM pragma_foreign_key_list(?) ORDER BY id, seq', (operation.table,)
            ).fetchall():
                columns, _, parent_columns = links.setdefault(ident, ([], fold_name(parent), []))
                columns.append(fold_name(column))
                parent_columns.append(fold_name(referenced or ""))
            created = {
                ident for ident, (columns, parent, parent_columns) in links.items() if (tuple(columns), parent, tuple(parent_columns)) in new_links
            }
            broken = [
                (parent, ident) for _, _, parent, ident in self.engine.execute(
                    "SELECT * FROM pragma_foreign_key_check(?)", (operation.table,)
                ).fetchall() if ident in created
            ]
            if broken:
                parent = broken[0][0]
                raise MigrationError(
                    f"the migration would leave {len(broken)} row(s) of table {operation.table!r} violating the foreign key "
                    f"it creates to {parent} (e.g. {violating_row(self.engine, operation.table, parent)}); nothing was changed"
                )

    def _foreign_key_violations(self) -> Counter[tuple[str, str]]:
        """Violations per (child table, parent table); ones that predate the migration are not its fault."""
        if self.foreign_key_tables is None:
            rows = self.engine.execute("PRAGMA foreign_key_check").fetchall()
        else:
            rows = [
                row
                for table in self.foreign_key_tables
                if has_object(self.engine, table)
                for row in self.engine.execute("SELECT * FROM pragma_foreign_key_check(?)", (table,)).fetchall()
            ]
        return Counter((row[0], row[2]) for row in rows)


def refuse_while_streaming(engine: Engine, plan: MigrationPlan) -> None:
    """Refuse, before anything changes, a plan that drops a table or an index (a rebuild drops the old
    table) while an ``iter_select`` of this connection is still reading: SQLite refuses to drop any
    table or index while a statement of the same connection reads ("database table is locked"), so
    the migration would fail halfway, and rolling it back would end the stream too."""
    if not engine.tables_streamed:
        return
    for operation in plan.operations:
        if any(_drops_storage(statement) for statement in operation.statements):
            raise streaming_refusal(engine, f"the migration would ({operation.description})")


def streaming_refusal(engine: Engine, dropping: str) -> UsageError:
    """The ``UsageError`` of a migration refused because an ``iter_select`` of the connection is still
    reading; ``dropping`` says what of the migration drops a table or an index."""
    return UsageError(
        f"an iter_select of this connection is still reading table {sorted(engine.tables_streamed)[0]!r} (a loop not "
        "finished yet, or left without closing the iterator: contextlib.closing, or aclosing for the async one), and "
        f"SQLite drops no table or index while a statement of the same connection reads, which {dropping}; finish or "
        "close the iteration first, or migrate on another connection. Nothing was changed"
    )


def _drops_storage(statement: str) -> bool:
    words = [token.upper for token in tokenize(statement)[:2]]
    return words in (["DROP", "TABLE"], ["DROP", "INDEX"])


def temporary_triggers(engine: Engine, table: str) -> list[tuple[str, str]]:
    """(name, SQL) of this connection's temporary triggers on ``table``, which dropping the table drops."""
    query = "SELECT name, sql FROM temp.sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE ORDER BY rowid"
    triggers = []
    for name, sql in engine.execute(query, (table,)).fetchall():
        keyword = tokenize(sql)[1]  # SQLite stores "CREATE TRIGGER …" without the TEMP that made it
        triggers.append((name, f"{sql[: keyword.start]}TEMP {sql[keyword.start :]}"))
    return triggers


@contextmanager
def lock_waits(engine: Engine, busy_timeout: float | None = None) -> Iterator[None]:
    """Wait up to ``busy_timeout`` seconds for a lock another connection holds (default: the
    connection's own timeout, but at least ``DEFAULT_BUSY_TIMEOUT``: at start-up, waiting for another
    process's migration beats failing) for the whole block, reads included; restore it afterwards."""
    previous_timeout = int(engine.pragma("busy_timeout"))
    wanted = round(busy_timeout * 1000) if busy_timeout is not None else max(previous_timeout, DEFAULT_BUSY_TIMEOUT_MS)
    if wanted != previous_timeout:
        engine.set_pragma("busy_timeout", wanted)
    try:
        yield
    finally:
        if wanted != previous_timeout and not engine.connection_lost:
            engine.set_pragma("busy_timeout", previous_timeout)


@contextmanager
def migration_settings(engine: Engine, busy_timeout: float | None = None) -> Iterator[ForeignKeyStrategy]:
    """Wait for the write lock as ``lock_waits`` says and switch foreign keys off unless a
    transaction is open (inside one SQLite ignores the pragma); restore both afterwards. Yields
    the foreign-key strategy."""
    with lock_waits(engine, busy_timeout):
        foreign_keys = ForeignKeyStrategy.before_transaction(engine, inside_caller_transaction=engine.in_transaction)
        try:
            yield foreign_keys
        finally:
            foreign_keys.restore(engine)


@contextmanager
def migration_session(engine: Engine, busy_timeout: float | None = None) -> Iterator[MigrationSession]:
    """Foreign keys off (before the transaction), ``BEGIN IMMEDIATE``, commit or roll back, restore.

    ``BEGIN IMMEDIATE`` takes the write lock before the schema is read (see ``migration_settings``
    for how long it waits). Inside the caller's open transaction a savepoint is used instead, and
    foreign keys cannot be switched off (SQLite ignores the pragma in a transaction).
    """
    outer = engine.in_transaction
    with migration_settings(engine, busy_timeout) as foreign_keys:
        try:
            engine.execute(f"SAVEPOINT {_SAVEPOINT}" if outer else engine.begin_statement(immediate=True))
        except engine.Error as error:
            raise MigrationError(f"could not start the migration transaction: {error}") from error
        session = MigrationSession(engine, foreign_keys)
        try:
            foreign_keys.verify(engine)
            yield session
        except BaseException:
            if engine.connection_lost:  # the database rolled back; nothing can be sent to clean up
                raise
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


