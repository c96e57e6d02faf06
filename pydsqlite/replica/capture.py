"""Delete capture: SQLite triggers that record every delete of a synced row, however it happened.

A row of a synced table can disappear through ``Database.delete``, an ``ON DELETE CASCADE``
action, or the application's own ``DELETE`` statement; an ``ON DELETE SET NULL`` / ``SET
DEFAULT`` (or ``ON UPDATE``) action can change a row's foreign-key columns. Only SQLite
sees all of these, so each synced table gets pydsqlite's own triggers (part of the
compiled desired schema, named ``_pydsqlite_delete_<table>`` and
``_pydsqlite_update_<table>``) that copy what changed into ``_pydsqlite_captured``:
one row per column, raw values in an untyped column so nothing is converted. The replica
turns these records into tombstones and stamped writes (``Replica.settle_captured``)
before any other operation of that database. The triggers are plain SQL (no application
functions), so they run on any SQLite engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engines import Engine
from ..migrate.metadata import METADATA_PREFIX
from ..schema.objects import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, Table, Trigger, fold_name
from ..sql.render import quote_identifier, quote_literal

CAPTURED = f"{METADATA_PREFIX}_captured"
CREATE_CAPTURED = (
    f"CREATE TABLE IF NOT EXISTS {CAPTURED} ("
    "event INTEGER NOT NULL, kind TEXT NOT NULL, table_name TEXT NOT NULL, role TEXT NOT NULL, "
    "column_name TEXT NOT NULL, value, stamp TEXT)"
)
"""``value`` has no declared type, so SQLite stores every value exactly as the row held it."""

DELETE_TRIGGER_PREFIX = f"{METADATA_PREFIX}_delete_"
UPDATE_TRIGGER_PREFIX = f"{METADATA_PREFIX}_update_"


def capture_triggers(tables: tuple[Table, ...]) -> tuple[Trigger, ...]:
    """The capture triggers of every synced table (a primary key and the row-sequence column)."""
    triggers: list[Trigger] = []
    for table in tables:
        if not table.primary_key or table.column(SEQ_COLUMN) is None:
            continue
        triggers.append(_delete_trigger(table))
        written = _columns_written_by_actions(table)
        if written:
            triggers.append(_update_trigger(table, written))
    return tuple(triggers)


def capture_setup(trigger: Trigger) -> tuple[str, ...]:
    """Statements a capture trigger needs before it is created (its table), none for other triggers."""
    return (CREATE_CAPTURED,) if is_capture_trigger(trigger.name) else ()


def is_capture_trigger(name: str) -> bool:
    folded = fold_name(name)
    return folded.startswith(DELETE_TRIGGER_PREFIX) or folded.startswith(UPDATE_TRIGGER_PREFIX)


def register_roles(table: Table) -> list[tuple[str, str]]:
    """(role, column) of every register-bearing column: key columns in key order, then the others."""
    roles = [("key", name) for name in table.primary_key]
    keys = {fold_name(name) for name in table.primary_key}
    for column in table.columns:
        folded = fold_name(column.name)
        if folded in keys or column.is_lww_companion or column.name in (VERSION_COLUMN, SEQ_COLUMN):
            continue
        roles.append(("lww" if column.lww else "group", column.name))
    return roles


def _insert(kind: str, table: Table, selects: list[str]) -> str:
    """One INSERT of all of an event's rows; the event number is the rowid its first row will get."""
    return (
        f"INSERT INTO {CAPTURED} (event, kind, table_name, role, column_name, value, stamp) "
        f"SELECT e.n, {quote_literal(kind)}, {quote_literal(table.name)}, v.* "
        f"FROM (SELECT IFNULL(MAX(rowid), 0) + 1 AS n FROM {CAPTURED}) AS e, ("
        + " UNION ALL ".join(selects)
        + ") AS v;"
    )


def _delete_trigger(table: Table) -> Trigger:
    selects = []
    for role, name in register_roles(table):
        stamp = f"OLD.{quote_identifier(name + LWW_SUFFIX)}" if role == "lww" else "NULL"
        selects.append(f"SELECT {quote_literal(role)}, {quote_literal(name)}, OLD.{quote_identifier(name)}, {stamp}")
    selects.append(f"SELECT 'version', {quote_literal(VERSION_COLUMN)}, NULL, OLD.{quote_identifier(VERSION_COLUMN)}")
    name = DELETE_TRIGGER_PREFIX + table.name
    sql = (
        f"CREATE TRIGGER {quote_identifier(name)} AFTER DELETE ON {quote_identifier(table.name)} BEGIN "
        + _insert("delete", table, selects)
        + " END"
    )
    return Trigger(name=name, table=table.name, sql=sql)


def _columns_written_by_actions(table: Table) -> list[str]:
    """Foreign-key columns that an ON DELETE / ON UPDATE action of their key can change."""
    columns: list[str] = []
    for key in table.foreign_keys:
        if key.on_delete in ("SET NULL", "SET DEFAULT") or key.on_update in ("SET NULL", "SET DEFAULT", "CASCADE"):
            columns.extend(name for name in key.columns if name not in columns)
    return columns


def _update_trigger(table: Table, columns: list[str]) -> Trigger:
    """Changes to foreign-key columns that pydsqlite did not make (its writes always move the row's
    sequence number): ON DELETE / ON UPDATE actions, or the application's own UPDATE."""
    roles = {name: role for role, name in register_roles(table)}
    selects = [
        f"SELECT 'key', {quote_literal(name)}, NEW.{quote_identifier(name)}, NULL" for name in table.primary_key
    ]
    for name in columns:
        column = quote_identifier(name)
        selects.append(
            f"SELECT {quote_literal(roles.get(name, 'group'))}, {quote_literal(name)}, NULL, NULL "
            f"WHERE OLD.{column} IS NOT NEW.{column}"
        )
    name = UPDATE_TRIGGER_PREFIX + table.name
    seq = quote_identifier(SEQ_COLUMN)
    sql = (
        f"CREATE TRIGGER {quote_identifier(name)} AFTER UPDATE OF {', '.join(quote_identifier(c) for c in columns)} "
        f"ON {quote_identifier(table.name)} WHEN NEW.{seq} IS OLD.{seq} BEGIN "
        + _insert("write", table, selects)
        + " END"
    )
    return Trigger(name=name, table=table.name, sql=sql)


@dataclass
class CapturedEvent:
    """One captured delete or write: the table, the row's key, and its other columns by role.

    ``columns`` maps a column to (role, value, stamp): role ``lww`` carries the LWW value and
    its timestamp, ``group`` a group value, ``version`` the row version as its stamp.
    """

    kind: str
    table: str
    key: tuple[Any, ...] = ()
    key_columns: tuple[str, ...] = ()
    columns: dict[str, tuple[str, Any, str | None]] = field(default_factory=dict)


def take_captured(engine: Engine) -> list[CapturedEvent]:
    """Read and remove every captured event, oldest first (none when the capture table does not exist yet)."""
    try:
        rows = engine.execute(
            f"SELECT event, kind, table_name, role, column_name, value, stamp FROM {CAPTURED} ORDER BY rowid"
        ).fetchall()
    except engine.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    if not rows:
        return []
    engine.execute(f"DELETE FROM {CAPTURED}")
    events: dict[int, CapturedEvent] = {}
    for event, kind, table_name, role, column_name, value, stamp in rows:
        captured = events.get(event)
        if captured is None:
            captured = events[event] = CapturedEvent(kind, table_name)
        if role == "key":
            captured.key += (value,)
            captured.key_columns += (column_name,)
        else:
            captured.columns[column_name] = (role, value, stamp)
    return list(events.values())
