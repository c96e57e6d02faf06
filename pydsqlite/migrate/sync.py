"""The public entry points that run the pipeline: compile → introspect → diff → plan → check → execute."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from pydantic import BaseModel

from ..engines import Engine, SqliteEngine, engine_for, is_connection
from ..errors import MigrationError, PydsqliteError, UsageError
from ..schema.compile import compile_cached
from ..schema.objects import Schema, fold_name
from ..sql.ddl import tokenize
from ..sql.render import quote_identifier
from ..sql.source import connect_read_only
from .datacheck import check_plan_against_data, refuse_unless_applicable
from .diff import diff_schemas
from .execute import MigrationSession, ProgressCallback, migration_session, read_snapshot
from .introspect import introspect, read_managed_objects, read_migration_history, schema_unchanged_since_sync
from .metadata import AppliedMigration, ManagedObjects, schema_fingerprint
from .migration import MigrationPlan
from .online import migrate as migrate_online
from .online import online_plan, require_wal, settle_offline, wait_for_online_migrations
from .plan import build_plan
from .rehearse import rehearse

Connectable = sqlite3.Connection | Engine | str | os.PathLike[str]
"""A connection pydsqlite can drive (see ``engines``), or a database file's path."""


def model_migration_plan(
    conn: Connectable, models: Iterable[type[BaseModel]] | None = None, *, online: bool = False
) -> MigrationPlan:
    """Preview what ``sync_models`` would do, checked against the data; changes nothing.
    ``online=True``: as ``sync_models(..., online=True)`` would do it (which rebuilds go online, and why)."""
    compiled = compile_cached(models)
    return preview_schema(conn, compiled.schema, fingerprint=compiled.fingerprint, online=online)


def sync_models(
    conn: Connectable,
    models: Iterable[type[BaseModel]] | None = None,
    *,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
    online: bool = False,
) -> MigrationPlan:
    """Bring the database in line with ``models`` (default: every table model) in one transaction.

    Returns the plan that was applied. Raises ``DestructiveChangeError`` for drops and
    lossy conversions unless ``allow_destructive=True``, and ``MigrationError`` when the
    data makes the plan impossible; in both cases nothing is changed. The write lock is
    taken before the schema is read; another writer is waited for up to ``busy_timeout``
    seconds (default: the connection's timeout, but at least 60 s).
    ``progress(table, rows_copied, total_rows)`` is called while rebuilds copy rows; an
    exception raised by it cancels the migration (nothing is changed).

    Inside the caller's open transaction (legacy mode) the migration is a savepoint and the
    caller commits; on a PEP 249 connection (``autocommit=False``) the pending transaction
    is committed first and a new one is open again on return.

    ``online=True`` (WAL databases only) rebuilds tables while other connections keep reading
    and writing them, holding the write lock only for short steps; everything else still
    happens in one short final transaction (see the "Online rebuilds" docs).
    """
    compiled = compile_cached(models)
    return apply_schema(
        conn,
        compiled.schema,
        fingerprint=compiled.fingerprint,
        allow_destructive=allow_destructive,
        busy_timeout=busy_timeout,
        progress=progress,
        online=online,
    )


def schema_migration_plan(conn: Connectable, desired: Schema, *, online: bool = False) -> MigrationPlan:
    """Preview the migration to ``desired`` (from ``schema_from_sql`` or ``schema_from_database``).

    The desired schema describes the whole database: live tables, views and triggers it
    lacks are dropped (drops of tables and columns are destructive steps).
    """
    return preview_schema(conn, desired, manage_all=True, online=online)


def sync_schema(
    conn: Connectable,
    desired: Schema,
    *,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
    online: bool = False,
) -> MigrationPlan:
    """Bring the database in line with ``desired`` in one transaction, with the same engine,
    checks and errors as ``sync_models``; see ``schema_migration_plan`` for what is dropped."""
    return apply_schema(
        conn, desired, allow_destructive=allow_destructive, busy_timeout=busy_timeout, progress=progress,
        manage_all=True, online=online,
    )


def preview_schema(
    conn: Connectable, desired: Schema, *, fingerprint: str | None = None, manage_all: bool = False, online: bool = False
) -> MigrationPlan:
    """The checked plan from the live database to ``desired``, read in one snapshot.

    With ``fingerprint`` (of ``desired``), an unchanged database is recognised from two
    cheap reads instead of a full introspection. ``online``: the plan as an online migration
    runs it (a database not in WAL mode gets that as a problem).
    """
    with _engine(conn, read_only=True) as engine, _database_errors(engine):
        if fingerprint is not None and schema_unchanged_since_sync(engine, fingerprint):
            return MigrationPlan(checked=True)
        with read_snapshot(engine):
            plan = _plan(engine, desired, manage_all)[0]
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
    online: bool = False,
) -> MigrationPlan:
    """Plan (under the write lock), check and apply the migration to ``desired``.

    With ``fingerprint`` given and the schema unchanged since the last sync to it,
    returns an empty plan without taking the write lock or introspecting. ``online``: see
    ``sync_models``; the plan is made under a claim instead of the write lock, and checked again
    on every chunk the copy takes.
    """
    fingerprint = fingerprint if fingerprint is not None else schema_fingerprint(desired)
    if manage_all:
        fingerprint += ":whole-database"  # the same tables synced as models would leave other objects alone
    with _engine(conn) as engine, _database_errors(engine), engine.outside_transaction():
        if online:
            require_wal(engine)
        if schema_unchanged_since_sync(engine, fingerprint):
            return MigrationPlan(checked=True)
        if online:
            return migrate_online(
                engine, desired, fingerprint, _plan, manage_all=manage_all, allow_destructive=allow_destructive,
                busy_timeout=busy_timeout, progress=progress,
            )
        if not engine.in_transaction:
            wait_for_online_migrations(engine, busy_timeout)
        with migration_session(engine, busy_timeout) as session:
            return _plan_and_apply(engine, session, desired, fingerprint, allow_destructive, manage_all, progress)


def _plan_and_apply(
    engine: Engine,
    session: MigrationSession,
    desired: Schema,
    fingerprint: str,
    allow_destructive: bool,
    manage_all: bool,
    progress: ProgressCallback | None,
) -> MigrationPlan:
    settle_offline(engine)
    plan, managed = _plan(engine, desired, manage_all, foreign_keys_on=session.check_foreign_keys)
    refuse_unless_applicable(plan, allow_destructive)
    session.apply(plan, desired, fingerprint, managed, progress)
    return plan


def _plan(
    engine: Engine, desired: Schema, manage_all: bool = False, foreign_keys_on: bool | None = None
) -> tuple[MigrationPlan, ManagedObjects]:
    live = introspect(engine)
    managed = read_managed_objects(engine)
    everything = replace(managed, everything=True) if manage_all else managed
    plan = build_plan(diff_schemas(desired, live, everything), live)
    if not manage_all:  # a schema from SQL describes the whole database, dangling references as SQLite took them
        _check_foreign_key_targets(desired, live, plan)
    plan = rehearse(plan, live)
    unregistered = _unregistered_collations(engine, plan, desired)
    if unregistered.problems:  # the data checks would compare with the missing collation too
        return unregistered, managed
    return check_plan_against_data(engine, plan, foreign_keys_on), managed


_BUILT_IN_COLLATIONS = frozenset({"binary", "nocase", "rtrim"})


def _unregistered_collations(engine: Engine, plan: MigrationPlan, desired: Schema) -> MigrationPlan:
    """The plan with a problem on each step whose SQL names a collation this connection does not
    register (the rehearsal stands in for it; the real statements would fail)."""
    registered: dict[str, bool] = {}
    operations = []
    for operation in plan.operations:
        found = []
        for name in _collations_named(operation.statements):
            if fold_name(name) not in _BUILT_IN_COLLATIONS and not registered.setdefault(name, _collation_registered(engine, name)):
                found.append(_unregistered_collation_problem(desired, operation.table, name))
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
    """The audit trail: every migration ``sync_models`` applied to this database, oldest first."""
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
        raise UsageError(f"expected a database connection or a file path, not {type(conn).__name__} {conn!r}")
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
def _database_errors(engine: Engine) -> Iterator[None]:
    """Turn the engine's errors raised while reading (not a database, locked, read-only) into ours."""
    try:
        yield
    except PydsqliteError:
        raise
    except engine.Error as error:
        raise MigrationError(f"database error: {error}") from error
