"""The public entry points that run the pipeline: compile → introspect → diff → plan → check → execute."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from pydantic import BaseModel

from ..engines import Engine, SqliteEngine, engine_for, is_connection
from ..errors import ConnectionLostError, DestructiveChangeError, MigrationError, PydsqliteError, UsageError
from ..schema.compile import compile_cached
from ..schema.objects import Schema, fold_name
from ..sql.source import connect_read_only
from .datacheck import check_plan_against_data
from .diff import diff_schemas
from .execute import MigrationSession, ProgressCallback, migration_session, read_snapshot
from .introspect import introspect, read_managed_objects, read_migration_history, schema_unchanged_since_sync
from .metadata import AppliedMigration, ManagedObjects, schema_fingerprint
from .migration import MigrationPlan
from .plan import build_plan
from .rehearse import rehearse

Connectable = sqlite3.Connection | Engine | str | os.PathLike[str]
"""A connection pydsqlite can drive (see ``engines``), or a database file's path."""


def model_migration_plan(conn: Connectable, models: Iterable[type[BaseModel]] | None = None) -> MigrationPlan:
    """Preview what ``sync_models`` would do, checked against the data; changes nothing."""
    compiled = compile_cached(models)
    return preview_schema(conn, compiled.schema, fingerprint=compiled.fingerprint)


def sync_models(
    conn: Connectable,
    models: Iterable[type[BaseModel]] | None = None,
    *,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
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
    """
    compiled = compile_cached(models)
    return apply_schema(
        conn,
        compiled.schema,
        fingerprint=compiled.fingerprint,
        allow_destructive=allow_destructive,
        busy_timeout=busy_timeout,
        progress=progress,
    )


def schema_migration_plan(conn: Connectable, desired: Schema) -> MigrationPlan:
    """Preview the migration to ``desired`` (from ``schema_from_sql`` or ``schema_from_database``).

    The desired schema describes the whole database: live tables, views and triggers it
    lacks are dropped (drops of tables and columns are destructive steps).
    """
    return preview_schema(conn, desired, manage_all=True)


def sync_schema(
    conn: Connectable,
    desired: Schema,
    *,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
) -> MigrationPlan:
    """Bring the database in line with ``desired`` in one transaction, with the same engine,
    checks and errors as ``sync_models``; see ``schema_migration_plan`` for what is dropped."""
    return apply_schema(
        conn, desired, allow_destructive=allow_destructive, busy_timeout=busy_timeout, progress=progress, manage_all=True
    )


def preview_schema(
    conn: Connectable, desired: Schema, *, fingerprint: str | None = None, manage_all: bool = False
) -> MigrationPlan:
    """The checked plan from the live database to ``desired``, read in one snapshot.

    With ``fingerprint`` (of ``desired``), an unchanged database is recognised from two
    cheap reads instead of a full introspection.
    """
    with _engine(conn, read_only=True) as engine, _database_errors(engine):
        if fingerprint is not None and schema_unchanged_since_sync(engine, fingerprint):
            return MigrationPlan(checked=True)
        with read_snapshot(engine):
            return _plan(engine, desired, manage_all)[0]


def apply_schema(
    conn: Connectable,
    desired: Schema,
    *,
    fingerprint: str | None = None,
    allow_destructive: bool = False,
    busy_timeout: float | None = None,
    progress: ProgressCallback | None = None,
    manage_all: bool = False,
) -> MigrationPlan:
    """Plan (under the write lock), check and apply the migration to ``desired``.

    With ``fingerprint`` given and the schema unchanged since the last sync to it,
    returns an empty plan without taking the write lock or introspecting.
    """
    fingerprint = fingerprint if fingerprint is not None else schema_fingerprint(desired)
    if manage_all:
        fingerprint += ":whole-database"  # the same tables synced as models would leave other objects alone
    with _engine(conn) as engine, _database_errors(engine), _interrupted_migration(), engine.outside_transaction():
        if schema_unchanged_since_sync(engine, fingerprint):
            return MigrationPlan(checked=True)
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
    plan, managed = _plan(engine, desired, manage_all, foreign_keys_on=session.check_foreign_keys)
    if plan.problems:
        raise MigrationError("the migration cannot be applied; nothing was changed:\n  - " + "\n  - ".join(plan.problems))
    destructive = plan.destructive_operations
    if destructive and not allow_destructive:
        listing = "\n  - ".join(str(operation) for operation in destructive)
        raise DestructiveChangeError(
            "the migration would lose data; pass allow_destructive=True to apply it. Destructive steps:\n  - " + listing,
            destructive,
        )
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
    return check_plan_against_data(engine, plan, foreign_keys_on), managed


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
        raise MigrationError(f"database error: {error}") from error
