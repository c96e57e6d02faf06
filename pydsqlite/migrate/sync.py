"""The public entry points that run the pipeline: compile → introspect → diff → plan → check → execute."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace

from pydantic import BaseModel

from ..collector import collector_paused
from ..engines import Engine, SqliteEngine, engine_for, is_connection
from ..engines.base import migration_running_on
from ..engines.sqlite import LEGACY_TRANSACTION_CONTROL, connect_read_only
from ..errors import ConnectionLostError, MigrationError, PydsqliteError, UsageError
from ..rows.database import Database
from ..schema.compile import CompiledModels, compile_cached
from ..schema.declaration import models_and_key
from ..schema.objects import LWW_SUFFIX, Schema, fold_name
from ..sql.ddl import tokenize
from ..sql.render import quote_identifier
from .datacheck import check_plan_against_data, refuse_unless_applicable, refuse_unless_expected
from .diff import AddColumn, SchemaDiff, SetLWW, diff_schemas
from .execute import MigrationSession, ProgressCallback, lock_waits, migration_session
from .foreign_keys import ForeignKeyStrategy
from .introspect import (
    STATE_IS_CURRENT,
    introspect,
    read_managed_objects,
    read_migration_history,
    schema_unchanged_since_sync,
    state_is_current,
    temp_shadows,
)
from .metadata import AppliedMigration, ManagedObjects, schema_fingerprint
from .migration import MigrationPlan
from .online.claim import wait_for_online_migrations
from .online.driver import migrate as migrate_online
from .online.leftovers import pending_online_work, settle_offline
from .online.preview import online_plan, require_wal
from .plan import build_plan, expand_diff
from .rehearse import rehearse, rehearse_and_read
from .steps import DataStep, PendingSteps, count_moves, pending_steps, run_data_steps, steps_from, with_steps

Connectable = sqlite3.Connection | Engine | str | os.PathLike[str]
"""A connection pydsqlite can drive (see ``engines``), or a database file's path."""

DataSteps = Mapping[str, DataStep | Callable[[Database], object]]
"""``data_steps=``: step name → ``fn(db)`` or ``DataStep``; see ``sync_models``."""


def model_migration_plan(
    conn: Connectable,
    models: Iterable[type[BaseModel]] | None = None,
    *,
    data_steps: DataSteps | None = None,
    online: bool = False,
) -> MigrationPlan:
    """Preview what ``sync_models`` would do, checked against the data; changes nothing.

    With ``data_steps``, the steps not yet applied are listed where they would run; the
    operations after them are checked against the data only when a sync has run them.
    ``online=True``: as ``sync_models(..., online=True)`` would do it (which rebuilds go online, and why).

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import SyncModel, model_migration_plan, sync_models
        >>> class City(SyncModel, table="cities"):
        ...     name: str
        >>> conn = sqlite3.connect(":memory:")
        >>> print(model_migration_plan(conn, [City]))
        Migration plan (1 operation):
          1. create table cities (1 column)
        >>> _ = sync_models(conn, [City])
        >>> print(model_migration_plan(conn, [City], data_steps={"001_seed": lambda db: None}))
        Migration plan (0 operations, 1 data step):
          data step 001_seed
    """
    chosen, key = models_and_key(models)
    compiled = compile_cached(chosen)
    return preview_schema(conn, compiled.schema, fingerprint=key or compiled.fingerprint, data_steps=data_steps, online=online)


def sync_models(
    conn: Connectable,
    models: Iterable[type[BaseModel]] | None = None,
    *,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
    data_steps: DataSteps | None = None,
    online: bool = False,
    expected_plan: MigrationPlan | None = None,
) -> MigrationPlan:
    """Bring the database in line with ``models`` (default: every table model) in one transaction.

    Returns the plan that was applied. Raises ``DestructiveChangeError`` for drops and
    lossy conversions unless ``allow_destructive=True``, and ``MigrationError`` when the
    data makes the plan impossible; in both cases nothing is changed. The write lock is
    taken before the schema is read; another writer is waited for up to ``busy_timeout``
    seconds (default: the connection's timeout, but at least 60 s).
    ``progress(table, rows_copied, total_rows)`` is called while rebuilds copy rows; an
    exception raised by it cancels the migration (nothing is changed) — except, online, in the
    phases after the swap committed (``"swap"``, ``"free"``, a second copy): the new shape stays,
    and the next sync finishes the freeing and the index names.

    Inside the caller's open transaction (legacy mode) the migration is a savepoint and the
    caller commits; on a PEP 249 connection (``autocommit=False``) the pending transaction
    is committed first and a new one is open again on return.

    ``data_steps`` maps names to functions ``fn(db)`` (or ``DataStep`` objects) that move or fill
    data. Each runs once per database, in name order, inside the migration's transaction:
    after new tables and columns exist, before anything is dropped or tightened. ``db`` is a
    ``Database`` on that transaction (``db.conn`` its connection). What comes after the steps
    is planned and checked against the data as they left it; a failing step raises
    ``DataStepError`` naming it, and nothing is changed; so does a step that tries to commit or
    roll back (the connection's authorizer refuses it while the steps run). A new database (no tables yet) has no
    data to move: its steps are recorded without running.

    ``online=True`` (WAL databases only) rebuilds tables while other connections keep reading
    and writing them, holding the write lock only for short steps; everything else still
    happens in one short final transaction (see the "Online rebuilds" docs). Data steps do not
    run in an online migration (``UsageError``): apply them with an offline sync first.

    ``expected_plan``: a plan from ``model_migration_plan`` that a person approved. The migration
    is planned again under the write lock and applied only if it reads the same (steps, row
    counts, findings); otherwise ``PlanChangedError`` carries the new plan and nothing is changed.
    A database another process already migrated to the models returns an empty plan.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import Database, SyncModel, sync_models
        >>> class Book(SyncModel, table="books"):
        ...     title: str
        >>> conn = sqlite3.connect(":memory:")
        >>> print(sync_models(conn, [Book]))
        Migration plan (1 operation):
          1. create table books (1 column)
        >>> _ = Database(conn).insert(Book(title="Dune"))
        >>> class Book(SyncModel, table="books"):  # the next release: a slug every row needs
        ...     title: str
        ...     slug: str
        >>> def fill_slugs(db):
        ...     db.conn.execute("UPDATE books SET slug = lower(replace(title, ' ', '-'))")
        >>> print(sync_models(conn, [Book], data_steps={"002_slugs": fill_slugs}))
        Migration plan (2 operations, 1 data step):
          1. add column books.slug
          data step 002_slugs
          2. rebuild table books: alter column slug (NOT NULL)
        >>> Database(conn).select(Book)
        [Book(title='Dune', slug='dune')]
    """
    chosen, key = models_and_key(models)  # an unchanged database is recognised before compiling
    return _apply(
        conn, key, lambda: compile_cached(chosen), allow_destructive=allow_destructive, busy_timeout=busy_timeout,
        progress=progress, manage_all=False, data_steps=data_steps, online=online, expected_plan=expected_plan,
    )


def schema_migration_plan(
    conn: Connectable, desired: Schema, *, data_steps: DataSteps | None = None, online: bool = False
) -> MigrationPlan:
    """Preview the migration to ``desired`` (from ``schema_from_sql`` or ``schema_from_database``).

    The desired schema describes the whole database: live tables, views and triggers it
    lacks are dropped (drops of tables and columns are destructive steps). ``data_steps``
    and ``online`` as for ``model_migration_plan``.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import schema_from_sql, schema_migration_plan
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = conn.execute("CREATE TABLE scratch (x)")
        >>> print(schema_migration_plan(conn, schema_from_sql("CREATE TABLE kept (id INTEGER PRIMARY KEY)")))
        Migration plan (2 operations):
          1. create table kept (1 column)
          2. DESTRUCTIVE drop table scratch [0 rows]
    """
    return preview_schema(conn, desired, manage_all=True, data_steps=data_steps, online=online)


def sync_schema(
    conn: Connectable,
    desired: Schema,
    *,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
    data_steps: DataSteps | None = None,
    online: bool = False,
    expected_plan: MigrationPlan | None = None,
) -> MigrationPlan:
    """Bring the database in line with ``desired`` in one transaction, with the same engine,
    checks, data steps, ``expected_plan`` and errors as ``sync_models``; see
    ``schema_migration_plan`` for what is dropped.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import schema_from_sql, sync_schema
        >>> conn = sqlite3.connect(":memory:")
        >>> desired = schema_from_sql("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
        >>> print(sync_schema(conn, desired))
        Migration plan (1 operation):
          1. create table kv (2 columns)
        >>> conn.execute("SELECT name FROM sqlite_master WHERE name = 'kv'").fetchall()
        [('kv',)]
    """
    return apply_schema(
        conn, desired, allow_destructive=allow_destructive, busy_timeout=busy_timeout, progress=progress, manage_all=True,
        data_steps=data_steps, online=online, expected_plan=expected_plan,
    )


def preview_schema(
    conn: Connectable,
    desired: Schema,
    *,
    fingerprint: str | None = None,
    manage_all: bool = False,
    data_steps: DataSteps | None = None,
    online: bool = False,
) -> MigrationPlan:
    """The checked plan from the live database to ``desired``, read in one snapshot.

    With ``fingerprint`` (of ``desired``), an unchanged database with no data step pending is
    recognised from two cheap reads instead of a full introspection. ``online``: the plan as an online migration
    runs it (a database not in WAL mode gets that as a problem).
    """
    _refuse_during_a_migration(conn, "a migration plan (model_migration_plan, schema_migration_plan) was asked for", "Ask for it before sync_models() starts or after it returns")
    steps = steps_from(data_steps)
    with _engine(conn, read_only=True) as engine, _database_errors(engine):
        if fingerprint is not None and schema_unchanged_since_sync(engine, fingerprint) and not pending_steps(engine, steps):
            return MigrationPlan(checked=True)
        # the sync would run inside the caller's transaction (PEP 249: only inside a Database.transaction() block)
        callers = engine.unit_open if engine.pep249_mode else engine.in_transaction
        with engine.read_snapshot():
            pending = pending_steps(engine, steps)
            finished = pending_online_work(engine)
            if pending:
                if online:
                    raise _online_steps_refused(pending)
                return replace(_phased_plan(engine, desired, manage_all, pending)[0], finished_first=finished)
            plan = replace(_plan(engine, desired, manage_all)[0], finished_first=finished)
            refused = ForeignKeyStrategy.refusal_in_preview(engine, plan, desired, inside_caller_transaction=callers)
            if refused is not None:
                plan = replace(plan, problems=(*plan.problems, refused))
            if not online or plan.is_empty:
                return plan
            plan = online_plan(engine, plan)[0]
        try:
            require_wal(engine)
        except MigrationError as error:
            return replace(plan, problems=(*plan.problems, str(error).removesuffix(" Nothing was changed.")))
        return plan


def apply_schema(
    conn: Connectable,
    desired: Schema,
    *,
    fingerprint: str | None = None,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
    manage_all: bool = False,
    data_steps: DataSteps | None = None,
    online: bool = False,
    expected_plan: MigrationPlan | None = None,
) -> MigrationPlan:
    """Plan (under the write lock), check and apply the migration to ``desired``.

    With ``fingerprint`` given, the schema unchanged since the last sync to it and no data
    step pending, returns an empty plan without taking the write lock or introspecting. ``online``: see
    ``sync_models``; the plan is made under a claim instead of the write lock, and checked again
    on every chunk the copy takes.
    """
    fingerprint = fingerprint if fingerprint is not None else schema_fingerprint(desired)
    if manage_all:
        fingerprint += ":whole-database"  # the same tables synced as models would leave other objects alone
    compiled = CompiledModels(desired, fingerprint)
    return _apply(
        conn, fingerprint, lambda: compiled, allow_destructive=allow_destructive, busy_timeout=busy_timeout,
        progress=progress, manage_all=manage_all, data_steps=data_steps, online=online, expected_plan=expected_plan,
    )


def _apply(
    conn: Connectable,
    state_key: str | None,
    compile_desired: Callable[[], CompiledModels],
    *,
    allow_destructive: bool,
    busy_timeout: float | None,
    progress: ProgressCallback | None,
    manage_all: bool,
    data_steps: DataSteps | None,
    online: bool,
    expected_plan: MigrationPlan | None,
) -> MigrationPlan:
    """``apply_schema`` with the desired schema made only when the database is not already at
    ``state_key`` (the key recorded after the migration; default: the schema's fingerprint)."""
    _refuse_during_a_migration(conn, "a migration (sync_models, sync_schema) was started", "Start it after the running sync_models() returns")
    steps = steps_from(data_steps)
    synced = None if state_key is None or steps else _synced_already(conn, state_key)
    if synced:
        return _NOTHING_TO_DO
    if not is_connection(conn) and isinstance(conn, (str, os.PathLike)) and not os.path.exists(os.fspath(conn)):
        compile_desired()  # a declaration error is raised before the file is created
    with _engine(conn) as engine, _database_errors(engine), _interrupted_migration(), engine.outside_transaction():
        if synced is None and state_key is not None and schema_unchanged_since_sync(engine, state_key) and not pending_steps(engine, steps):
            return _NOTHING_TO_DO
        with lock_waits(engine, busy_timeout):  # every read from here on waits for a writer's lock, not only BEGIN
            compiled = compile_desired()
            desired, fingerprint = compiled.schema, compiled.fingerprint
            if online:
                pending = pending_steps(engine, steps)
                if pending:  # also where the schema needs nothing: an online sync never runs data steps
                    raise _online_steps_refused(pending)
            if online and _needs_nothing_online(engine, desired, manage_all):
                online = False  # no WAL needed to change nothing: an application may pass online=True on every start
            if online:  # records the schema's fingerprint: the next sync_models plans once and records its key
                require_wal(engine)
                return migrate_online(
                    engine, desired, fingerprint, _plan, manage_all=manage_all, allow_destructive=allow_destructive,
                    busy_timeout=busy_timeout, progress=progress, expected_plan=expected_plan,
                )
            if not engine.in_transaction:
                wait_for_online_migrations(engine, busy_timeout)
            with migration_session(engine, busy_timeout) as session, engine.migration_running():
                return _plan_and_apply(
                    engine, session, desired, fingerprint, state_key or fingerprint, allow_destructive, manage_all, progress, steps,
                    expected_plan,
                )


def _refuse_during_a_migration(conn: Connectable, asked: str, instead: str) -> None:
    """Refuse a plan on a connection whose migration is applying its own (from one of its data steps or
    its progress callback): it would be made against the schema half-way through that migration (and
    then show, for example, the drop of a clock the running migration has just renamed)."""
    if migration_running_on(conn.connection if isinstance(conn, Engine) else conn):
        raise UsageError(
            f"{asked} on a connection whose migration is still running (from one of its data steps or its progress "
            f"callback): the schema is half-way through that migration, so the plan would be made against neither "
            f"side of it. {instead}"
        )


_NOTHING_TO_DO = MigrationPlan(checked=True)
"""The plan of a database already at the models (immutable, so one instance serves every call)."""


def _synced_already(conn: Connectable, state_key: str) -> bool | None:
    """Whether a plain ``sqlite3`` connection outside PEP 249 mode is already at ``state_key``, read
    straight from the connection: an application calls ``sync_models`` on every start (and some on
    every request), so the no-op skips the engine and its guards. None when this cannot tell (another
    connection or mode, a row or text factory, an error: a database locked past the connection's own
    timeout is left to the full path, which waits for the lock as long as ``busy_timeout`` says)."""
    if type(conn) is not sqlite3.Connection:
        return None
    try:  # a closed connection refuses even its attributes (Python 3.12+)
        if conn.row_factory is not None or conn.text_factory is not str:
            return None
        if getattr(conn, "autocommit", LEGACY_TRANSACTION_CONTROL) is False:  # PEP 249: the pending transaction is committed first
            return None
        row = conn.execute(STATE_IS_CURRENT).fetchone()
    except sqlite3.Error:
        return None
    return state_is_current(row, state_key)


def _needs_nothing_online(engine: Engine, desired: Schema, manage_all: bool) -> bool:
    """Whether an ``online=True`` migration on a database not in WAL mode has nothing to do (so the
    missing WAL mode need not refuse it); in WAL mode the online path is taken in any case."""
    if str(engine.pragma("journal_mode")).lower() == "wal":
        return False
    return _plan(engine, desired, manage_all)[0].is_empty


def _plan_and_apply(
    engine: Engine,
    session: MigrationSession,
    desired: Schema,
    fingerprint: str,
    state_key: str,
    allow_destructive: bool,
    manage_all: bool,
    progress: ProgressCallback | None,
    steps: PendingSteps = (),
    expected_plan: MigrationPlan | None = None,
) -> MigrationPlan:
    finished = pending_online_work(engine)
    settle_offline(engine)
    pending = pending_steps(engine, steps)  # read under the write lock: another process may just have run them
    if not pending:
        plan, managed = _plan(engine, desired, manage_all, foreign_keys_on=session.check_foreign_keys)
        plan = replace(plan, finished_first=finished)
        refuse_unless_expected(plan, expected_plan)
        refuse_unless_applicable(plan, allow_destructive)
        session.apply(plan, desired, fingerprint, managed, progress, state_key=state_key)
        return plan
    plan, managed, expanded = _phased_plan(engine, desired, manage_all, pending, session.check_foreign_keys)
    plan = replace(plan, finished_first=finished)
    refuse_unless_expected(plan, expected_plan)
    refuse_unless_applicable(plan, allow_destructive)

    def contract() -> MigrationPlan:
        if plan.data_steps_skipped:
            return MigrationPlan()
        run_data_steps(engine, pending)
        after, _ = _plan(engine, desired, manage_all, session.check_foreign_keys, managed=expanded, steps=pending)
        refuse_unless_applicable(after, allow_destructive, after_steps=plan.data_steps)
        return after

    return session.apply(plan, desired, fingerprint, managed, progress, after_expand=contract, state_key=state_key)


def _introspect_unshadowed(engine: Engine, desired: Schema) -> Schema:
    """The live schema, refused while a TEMP table or view of this connection is named like a
    table of ``main`` or of ``desired`` (the migration would read and alter it instead, and
    record the change as made)."""
    live = introspect(engine)
    tables = [table.name for schema in (live, desired) for table in schema.tables]
    virtual_tables = [table.name for schema in (live, desired) for table in schema.virtual_tables]
    shadows = temp_shadows(engine, tables + virtual_tables)
    if shadows:
        raise MigrationError(
            f"{', '.join(shadows)} on this connection {'is' if len(shadows) == 1 else 'are'} named like a table of the "
            "database or of the models: SQLite looks names up in TEMP first, so the migration would read and change "
            "the TEMP one. Drop it, or migrate on another connection; nothing was changed"
        )
    return live


def _plan(
    engine: Engine,
    desired: Schema,
    manage_all: bool = False,
    foreign_keys_on: bool | None = None,
    *,
    managed: ManagedObjects | None = None,
    steps: PendingSteps = (),
) -> tuple[MigrationPlan, ManagedObjects]:
    """The checked plan from the live database to ``desired``; ``managed`` overrides what the
    bookkeeping says (mid-migration, after renames), ``steps`` declare what they moved."""
    with collector_paused():  # the live schema and the diff are many small objects, all kept
        live = _introspect_unshadowed(engine, desired)
        if managed is None:
            managed = read_managed_objects(engine)
        plan = count_moves(_rehearsed_plan(desired, live, managed, manage_all), steps, live, desired)
    unregistered = _unregistered_names(engine, plan, desired)
    if unregistered.problems:  # the data checks would compare with the missing collation too
        return unregistered, managed
    return check_plan_against_data(engine, plan, foreign_keys_on), managed


def _rehearsed_plan(
    desired: Schema, live: Schema, managed: ManagedObjects, manage_all: bool, mismatched_before: frozenset[str] | None = None
) -> MigrationPlan:
    everything = replace(managed, everything=True) if manage_all else managed
    plan = build_plan(diff_schemas(desired, live, everything), live)
    if not manage_all:  # a schema from SQL describes the whole database, dangling references as SQLite took them
        _check_foreign_key_targets(desired, live, plan)
    return rehearse(plan, live, mismatched_before)


def _phased_plan(
    engine: Engine, desired: Schema, manage_all: bool, steps: PendingSteps, foreign_keys_on: bool | None = None
) -> tuple[MigrationPlan, ManagedObjects, ManagedObjects]:
    """With data steps pending: the expand phase (only additions, checked against the data), the
    steps, and the contract phase as planned from the schema the expand phase leaves (its data
    checks wait for the steps). Also the managed objects before and after the expand phase.

    A new database (no tables but pydsqlite's) has no data for a step to move or fill: it gets
    the plain plan, and its steps are recorded without running."""
    live = _introspect_unshadowed(engine, desired)
    if not live.tables and not live.virtual_tables:
        plan, managed = _plan(engine, desired, manage_all, foreign_keys_on)
        return replace(plan, data_steps=tuple(name for name, _ in steps), data_steps_skipped=True), managed, managed
    managed = read_managed_objects(engine)
    everything = replace(managed, everything=True) if manage_all else managed
    schema_diff = diff_schemas(desired, live, everything)
    expanding = expand_diff(schema_diff)
    expand, expanded_schema, mismatched_before = rehearse_and_read(build_plan(expanding, live), live)
    expand = check_plan_against_data(engine, expand, foreign_keys_on)
    table_renames = {item.live.name: item.desired.name for item in schema_diff.altered if item.rename is not None}
    expanded = replace(
        managed.after_renames(table_renames, expand.renames),
        abandoned_clocks=_clocks_left_by_renames(schema_diff),
        added_before_steps=frozenset(
            (fold_name(item.desired.name), fold_name(change.column.name))
            for item in expanding.altered for change in item.changes if isinstance(change, AddColumn)
        ),
    )
    if expanded_schema is not None:  # the hidden columns the expand phase makes are pydsqlite's, not look-alikes
        expanded = replace(expanded, columns=expanded.columns | _hidden_columns_made(desired, live, expanded_schema, table_renames, expand.renames))
    contract = MigrationPlan()
    if expanded_schema is not None:  # else the expand phase's problems say why
        contract = _rehearsed_plan(desired, expanded_schema, expanded, manage_all, mismatched_before)
        contract = count_moves(contract, steps, expanded_schema, desired)
    return with_steps(expand, contract, steps), managed, expanded


def _clocks_left_by_renames(schema_diff: SchemaDiff) -> frozenset[tuple[str, str]]:
    """(table, clock), folded: the clocks of LWW columns that the expand phase renames to columns that
    are no longer LWW. The clock keeps its name until the phase after the steps drops it, so a new LWW
    column given the old name must not take it (with the old column's stamps) as its own."""
    return frozenset(
        (fold_name(item.desired.name), fold_name(change.column + LWW_SUFFIX))
        for item in schema_diff.altered for change in item.changes
        if isinstance(change, SetLWW) and not change.enabled
        and change.renamed_to is not None and fold_name(change.renamed_to) != fold_name(change.column)
    )


def _hidden_columns_made(
    desired: Schema, live: Schema, expanded: Schema, table_renames: dict[str, str], column_renames: tuple[tuple[str, str, str], ...]
) -> frozenset[tuple[str, str]]:
    """(table, column), folded: the hidden sync columns of ``desired`` that the schema after the expand
    phase has and ``live`` (before it) had not, or had under a name the expand phase renamed away
    (``column_renames``: (table, old, new); an LWW column renamed, and a new one given its old name)."""
    old_name = {fold_name(new): old for old, new in table_renames.items()}
    renamed_away = {(fold_name(table), fold_name(old)) for table, old, _ in column_renames}
    made = set()
    for table in desired.tables:
        after, before = expanded.table(table.name), live.table(old_name.get(fold_name(table.name), table.name))
        for column in table.columns:
            key = (fold_name(table.name), fold_name(column.name))
            if column.hidden and after is not None and after.column(column.name) is not None and (
                before is None or before.column(column.name) is None or key in renamed_away
            ):
                made.add(key)
    return frozenset(made)


def _online_steps_refused(pending: PendingSteps) -> UsageError:
    names = ", ".join(name for name, _ in pending)
    return UsageError(
        f"data steps do not run in an online migration (pending: {names}); apply them with an offline "
        "sync_models(..., data_steps=...) first, then migrate online"
    )


_BUILT_IN_COLLATIONS = frozenset({"binary", "nocase", "rtrim"})


def _unregistered_names(engine: Engine, plan: MigrationPlan, desired: Schema) -> MigrationPlan:
    """The plan with a problem on each step whose SQL names a collation or calls a function this
    connection does not register (the rehearsal stands in for them; the real statements would fail)."""
    registered: dict[str, bool] = {}
    operations = []
    for operation in plan.operations:
        found = []
        for name in _collations_named(operation.statements):
            if fold_name(name) not in _BUILT_IN_COLLATIONS and not registered.setdefault(name, _collation_registered(engine, name)):
                found.append(_unregistered_collation_problem(desired, operation.table, name))
        for name in operation.functions:
            if not registered.setdefault(f"{name}()", _function_registered(engine, name)):
                found.append(
                    f"{operation.table}: step '{operation.description}' calls SQL function {name}(), which this connection does "
                    f"not register (an index, view or trigger of yours uses it); register it with conn.create_function({name!r}, ...) "
                    "on the connection you migrate with (the command line cannot: migrate from Python)"
                )
        operations.append(replace(operation, problems=(*operation.problems, *found)))
    if operations == list(plan.operations):
        return plan
    problems = tuple(problem for operation in operations for problem in operation.problems)
    return replace(plan, operations=tuple(operations), problems=problems)


def _collations_named(statements: Iterable[str]) -> dict[str, None]:
    names: dict[str, None] = {}
    for statement in statements:
        tokens = tokenize(statement)
        for token, following in zip(tokens, tokens[1:]):
            if token.upper == "COLLATE" and following.kind in ("word", "quoted", "string"):
                names[following.identifier] = None
    return names


def _function_registered(engine: Engine, name: str) -> bool:
    """Whether SQL function ``name`` exists on the connection, whatever its arity (SQLite says "wrong
    number of arguments" for a function it has, "no such function" for one it lacks)."""
    try:
        engine.execute(f"EXPLAIN SELECT {quote_identifier(name)}()").fetchall()
    except engine.OperationalError as error:
        return "no such function" not in str(error)
    return True


def _collation_registered(engine: Engine, name: str) -> bool:
    try:
        engine.execute(f"SELECT 'a' < 'b' COLLATE {quote_identifier(name)}").fetchall()
    except engine.OperationalError:
        return False
    return True


def _unregistered_collation_problem(desired: Schema, table_name: str, collation: str) -> str:
    table = desired.table(table_name)
    columns = [column.name for column in table.columns if fold_name(column.collate or "") == fold_name(collation)] if table else []
    where = ", ".join(f"{table_name}.{column}" for column in columns) or table_name
    return (
        f"{where}: collation {collation!r} is not registered on this connection; register it with "
        f"conn.create_collation({collation!r}, ...) on the connection you migrate (and read) with"
    )


def _check_foreign_key_targets(desired: Schema, live: Schema, plan: MigrationPlan) -> None:
    """Every model's ``ForeignKey`` must reach a table of the models passed or one the database keeps;
    else SQLite would take the reference and fail every later write under it."""
    dropped = {fold_name(operation.table) for operation in plan.operations if operation.kind == "drop_table"}
    present = {fold_name(table.name) for table in desired.tables}
    present |= {fold_name(table.name) for table in live.tables} - dropped
    for table in desired.tables:
        for foreign_key in table.foreign_keys:
            if fold_name(foreign_key.ref_table) not in present:
                raise UsageError(
                    f"{table.model or table.name}.{', '.join(foreign_key.columns)}: the foreign key references table "
                    f"{foreign_key.ref_table!r}, which is neither among the models passed nor kept in the database; "
                    "pass its model too"
                )


def migration_history(conn: Connectable) -> list[AppliedMigration]:
    """The audit trail: every migration ``sync_models`` applied to this database, oldest first
    (see ``AppliedMigration``).

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import SyncModel, migration_history, sync_models
        >>> class Log(SyncModel, table="logs"):
        ...     line: str
        >>> conn = sqlite3.connect(":memory:")
        >>> migration_history(conn)
        []
        >>> _ = sync_models(conn, [Log])
        >>> _ = sync_models(conn, [Log])  # nothing to do: nothing recorded
        >>> [(entry.id, entry.description) for entry in migration_history(conn)]
        [(1, 'Migration plan (1 operation):\\n  1. create table logs (1 column)')]
    """
    with _engine(conn, read_only=True) as engine, _database_errors(engine):
        return read_migration_history(engine)


@contextmanager
def _engine(conn: Connectable, *, read_only: bool = False) -> Iterator[Engine]:
    """The engine of the caller's connection, or of one opened on a path (read-only for previews:
    a preview never creates a missing file)."""
    if is_connection(conn):
        yield engine_for(conn)
        return
    if not isinstance(conn, (str, os.PathLike)):
        hint = " (pass its connection: cursor.connection)" if isinstance(getattr(conn, "connection", None), sqlite3.Connection) else ""
        raise UsageError(f"expected a database connection or a file path, not {type(conn).__name__} {conn!r}{hint}")
    path = os.fspath(conn)
    try:
        if read_only:
            connection = connect_read_only(path)
        else:
            connection = sqlite3.connect(path)
    except sqlite3.Error as error:
        raise MigrationError(f"cannot open database {path!r}: {error}") from error
    try:
        yield SqliteEngine(connection)
    finally:
        connection.close()


@contextmanager
def _interrupted_migration() -> Iterator[None]:
    """A connection lost mid-migration (a dqlite leader went away), said in the migration's terms."""
    try:
        yield
    except ConnectionLostError as error:
        if error.outcome_known:
            outcome = "the database rolled the migration back, so schema and data are exactly as before"
        else:
            outcome = "it was lost while the migration was being committed, so the schema is wholly the old one or wholly the new one"
        raise ConnectionLostError(
            f"the connection was lost during the migration ({error}); {outcome}. Retrying on a new connection "
            "is safe: the plan is made again from the live schema (and is empty if the migration was applied)",
            outcome_known=error.outcome_known,
        ) from error


@contextmanager
def _database_errors(engine: Engine) -> Iterator[None]:
    """Turn the engine's errors raised while reading (not a database, locked, read-only) into ours."""
    try:
        yield
    except PydsqliteError:
        raise
    except engine.Error as error:
        if engine.closed:
            raise UsageError("the connection is closed (conn.close() was called); open a new one. Nothing was changed") from error
        raise MigrationError(f"database error: {error}") from error
