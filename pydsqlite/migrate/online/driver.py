"""An online migration from its plan to its swap: ``migrate`` takes the claim, copies, swaps in
one short final transaction, then frees the old tables and runs any index pass."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from ...engines import Engine
from ...errors import MigrationError, UsageError
from ...schema.objects import Schema, fold_name
from ...sql.render import quote_identifier
from ..datacheck import check_plan_against_data, refuse_unless_applicable, refuse_unless_expected
from ..diff import TableDiff
from ..execute import ProgressCallback, migration_session, migration_settings, streaming_refusal
from ..introspect import has_object
from ..metadata import STATE_TABLE as FAST_PATH_TABLE
from ..metadata import ManagedObjects
from ..migration import MigrationPlan
from ..shadow import STATE_TABLE
from .claim import TAKEN_OVER
from .copying import SYNCHRONOUS_NORMAL, Run, TableCopy, Violation
from .leftovers import pending_online_work, schema_outside_online
from .preview import online_plan

logger = logging.getLogger(__name__)

CACHE_KIB = 16 * 1024
"""Page cache (KiB) the migrating connection uses at least during an online migration: every
chunk updates the new table's indexes at scattered places, and a cache smaller than their
busy pages makes each chunk read them again. A fixed amount, whatever the table's size."""

Planner = Callable[[Engine, Schema, bool, bool], tuple[MigrationPlan, ManagedObjects]]
"""Makes the checked plan (introspect → diff → plan → rehearse → check), given ``foreign_keys_on``."""


def migrate(
    engine: Engine,
    desired: Schema,
    fingerprint: str,
    planner: Planner,
    *,
    manage_all: bool,
    allow_destructive: bool,
    busy_timeout: float | None,
    progress: ProgressCallback | None,
    expected_plan: MigrationPlan | None = None,
) -> MigrationPlan:
    """``apply_schema(..., online=True)`` from the plan on; returns the plan as it was applied."""
    if engine.in_transaction:
        raise UsageError("online=True needs a connection without an open transaction: it commits many short ones of its own")
    if engine.tables_streamed:
        raise streaming_refusal(engine, "an online migration does (the old table, its own bookkeeping)")
    with migration_settings(engine, busy_timeout) as foreign_keys, _step_settings(engine) as synchronous:
        run = Run(engine, busy_timeout if busy_timeout is not None else int(engine.pragma("busy_timeout")) / 1000, progress, allow_destructive)
        run.foreign_keys_on = foreign_keys.enforced_before
        run.synchronous = synchronous
        run.claim.take(engine, run.busy_timeout)
        try:
            applied = _migrate(run, desired, fingerprint, planner, manage_all, expected_plan)
        finally:
            run.release()
        run.finish(fingerprint)  # after the release: dropping the bookkeeping changes the schema
        return applied


@contextmanager
def _step_settings(engine: Engine) -> Iterator[int]:
    """The migrating connection's settings for the steps, restored afterwards. ``PRAGMA synchronous
    = NORMAL`` (yields the connection's own level, which the swap uses): in WAL mode a step then
    commits without waiting for the disk, and a step lost to a power cut is only redone by the
    next sync; the swap keeps the connection's durability. No automatic checkpoint (the pauses
    between steps checkpoint), and a page cache of at least ``CACHE_KIB``."""
    level = int(engine.pragma("synchronous"))
    checkpoint_every = int(engine.pragma("wal_autocheckpoint"))
    cache_size = int(engine.pragma("cache_size"))
    cache_kib = -cache_size if cache_size < 0 else cache_size * int(engine.pragma("page_size")) // 1024
    if level > SYNCHRONOUS_NORMAL:
        engine.set_pragma("synchronous", SYNCHRONOUS_NORMAL)
    engine.set_pragma("wal_autocheckpoint", 0)
    if cache_kib < CACHE_KIB:
        engine.set_pragma("cache_size", -CACHE_KIB)
    try:
        yield level
    finally:
        engine.set_pragma("cache_size", cache_size)
        engine.set_pragma("wal_autocheckpoint", checkpoint_every)
        if level > SYNCHRONOUS_NORMAL:
            engine.set_pragma("synchronous", level)


def _migrate(run: Run, desired: Schema, fingerprint: str, planner: Planner, manage_all: bool, expected_plan: MigrationPlan | None) -> MigrationPlan:
    engine = run.engine
    finished = pending_online_work(engine)
    run.settle_before_planning()
    with engine.read_snapshot():
        plan, managed = planner(engine, desired, manage_all, run.foreign_keys_on)
        plan, specs = online_plan(engine, plan)
        plan = replace(plan, finished_first=finished)
        planned_on = schema_outside_online(engine)
    refuse_unless_expected(plan, expected_plan, finished_kept=True)
    refuse_unless_applicable(plan, run.allow_destructive)
    run.discard_unplanned(specs)
    copies = [TableCopy(run, spec) for spec in specs]
    try:
        for copy in copies:
            copy.setup()
        schema_version = engine.pragma("schema_version")
        run.copy(copies)
        with _connection_durability(run):
            applied = _swap(run, plan, copies, desired, fingerprint, managed, (schema_version, planned_on))
    except Violation as violation:
        _abandon(run, copies)
        _refuse_violation(run, violation)
        raise AssertionError("unreachable") from violation
    except MigrationError:  # refused (the schema changed meanwhile, a step failed): the copies are of no use
        _abandon(run, copies)
        raise
    except engine.Error as error:
        if not _claim_still_held(run):  # another process took over: what failed was reading its objects
            raise MigrationError(TAKEN_OVER) from error
        gone = [copy.spec.source for copy in copies if not has_object(engine, copy.spec.source)]
        if not gone:
            _abandon(run, copies, free=False)
            raise
        _abandon(run, copies)
        raise MigrationError(
            f"table {gone[0]!r} was dropped or renamed by another connection during its online rebuild, so the "
            f"rebuild stopped ({error}); its copy was freed and nothing else was changed: run sync_models again"
        ) from error
    except BaseException:  # interrupted: leave the freeing to the next sync
        _abandon(run, copies, free=False)
        raise
    for copy in copies:
        run.progress(copy.spec.table, 1, 1, "swap")
        run.free(copy.spec.old, copy.spec.table)
    for copy in copies:
        if copy.spec.final_indexes:
            run.index_pass(copy.spec.table, list(copy.spec.final_indexes))
    return applied


@contextmanager
def _connection_durability(run: Run) -> Iterator[None]:
    """The connection's own ``PRAGMA synchronous`` level for the final transaction (the steps run
    with NORMAL, see ``_step_settings``)."""
    relaxed = run.synchronous > SYNCHRONOUS_NORMAL
    if relaxed:
        run.engine.set_pragma("synchronous", run.synchronous)
    try:
        yield
    finally:
        if relaxed:
            run.engine.set_pragma("synchronous", SYNCHRONOUS_NORMAL)


def _swap(
    run: Run,
    plan: MigrationPlan,
    copies: Sequence[TableCopy],
    desired: Schema,
    fingerprint: str,
    managed: ManagedObjects,
    schema_seen: tuple[int, list[tuple[str, str, str, str | None]]],
) -> MigrationPlan:
    """The final transaction: last catch-ups, the rest of the plan in order with each online rebuild
    reduced to its swap, the migration's records. ``schema_seen``: the schema version after the
    copies were set up, and the schema (outside the copies) the plan was made on: another
    connection's change to either refuses the swap."""
    engine = run.engine
    schema_version, planned_on = schema_seen
    with migration_session(engine, run.busy_timeout) as session:
        run.claim.heartbeat(engine)
        if engine.pragma("schema_version") != schema_version or schema_outside_online(engine) != planned_on:
            raise MigrationError(
                "the schema changed (by another connection) while the online migration copied rows; nothing was "
                "changed: run the migration again"
            )
        session.check_foreign_keys = run.foreign_keys_on
        session.foreign_key_tables = _foreign_key_tables(engine, plan, {copy.spec.table for copy in copies})
        dropped = {fold_name(sql) for operation in plan.operations if operation.kind == "drop_trigger" for sql in operation.statements}
        swaps = {fold_name(copy.spec.table): copy.swap_statements(recreate_temporary=False, dropped=dropped) for copy in copies}
        operations = tuple(
            replace(operation, statements=tuple(swaps[fold_name(operation.table)]))
            if operation.kind == "rebuild_table" and fold_name(operation.table) in swaps
            else operation
            for operation in plan.operations
        )
        session.apply(replace(plan, operations=operations), desired, fingerprint, managed, run.progress.callback)
        for copy in copies:
            if copy.spec.final_indexes:
                engine.execute(
                    f"UPDATE {STATE_TABLE} SET pass = 2, fingerprint = '', cursor = NULL, copied = 0 WHERE table_name = ?",
                    (copy.spec.table,),
                )
            else:
                engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", (copy.spec.table,))
        if copies:  # the old tables are freed next: the next sync must not take the fast path before that
            engine.execute(f"DELETE FROM {FAST_PATH_TABLE}")
    return plan


def _foreign_key_tables(engine: Engine, plan: MigrationPlan, online: set[str]) -> tuple[str, ...]:
    """The tables whose foreign keys the final transaction checks: those rebuilt inside it or
    dropped, the tables referencing them, and online tables that gain a foreign key (their chunks
    were checked as they were copied, but a parent deleted since, or one this migration creates,
    is seen only now); other online tables' rows were checked chunk by chunk."""
    touched = {
        operation.table
        for operation in plan.operations
        if operation.kind in ("rebuild_table", "drop_table")
        and (operation.table not in online or (operation.rebuild is not None and _gains_foreign_key(operation.rebuild)))
    }
    children = {
        name
        for table in touched
        for (name,) in engine.execute(
            "SELECT DISTINCT m.name FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
            "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE",
            (table,),
        ).fetchall()
    }
    return tuple(sorted(touched | children))


def _gains_foreign_key(item: TableDiff) -> bool:
    renamed = {fold_name(old): fold_name(new) for new, old in item.column_sources}
    had = {(tuple(renamed.get(c, c) for c in columns), parent, parents) for columns, parent, parents in (fk.link for fk in item.live.foreign_keys)}
    return any(fk.link not in had for fk in item.desired.foreign_keys)


def _claim_still_held(run: Run) -> bool:
    """Whether this migrator still holds the claim (True when that cannot be read: the failure is then its own)."""
    try:
        return run.claim.held(run.engine)
    except run.engine.Error:
        return True


def _abandon(run: Run, copies: Sequence[TableCopy], *, free: bool = True) -> None:
    """After a failure before the swap committed: drop the recorders and key logs at once (the
    original tables are untouched), then free the new tables in steps (left to the next sync
    when the run was interrupted). Nothing is touched when another process took the claim over
    (this one was paused too long): the recorders, logs and new tables, of fixed names, are its own now."""
    engine = run.engine
    try:
        with engine.unit(immediate=True):
            if not run.claim.held(engine):
                logger.warning("the online migration stopped after another process took it over; its tables are left to that process")
                return
            for copy in copies:
                spec = copy.spec
                for name in spec.recorder_names:
                    engine.execute(f"DROP TRIGGER IF EXISTS {quote_identifier(name)}")
                engine.execute(f"DROP TABLE IF EXISTS {quote_identifier(spec.log)}")
                if has_object(engine, STATE_TABLE):  # a pending index pass stays pending
                    engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ? AND pass = 1", (spec.table,))
        if free:
            for copy in copies:
                run.free(copy.spec.new, copy.spec.table)
    except engine.Error as error:  # the next sync settles what is left
        logger.warning("could not clean up after the online migration failed: %s", error)


def _refuse_violation(run: Run, violation: Violation) -> None:
    """Raise what the offline migration raises for the data as it is now (the same refusals), or
    say what the new table refused when the rows have changed again since."""
    spec = violation.spec
    if spec.operation is not None:
        with run.engine.read_snapshot():
            checked = check_plan_against_data(run.engine, MigrationPlan(operations=(spec.operation,)), run.foreign_keys_on)
        refuse_unless_applicable(checked, run.allow_destructive)
    raise MigrationError(
        f"the online rebuild of table {spec.table!r} stopped: rows written while it copied do not fit the new "
        f"table ({violation}); nothing was changed"
    )
