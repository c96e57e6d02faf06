"""Tombstones follow schema migrations the way live rows do.

A deleted row of a synced table keeps the registers it held (a late write to it merges with
them), stored as JSON beside its tombstone time. When a migration renames a synced table or
its columns, adds or drops columns, changes which columns are LWW, or converts values (a
type change's CAST, a default filling NULLs under a new NOT NULL), those stored states
must change exactly as the live rows do: otherwise every changeset carrying one of them no
longer fits the table here or on an upgraded peer, and replication stops. Deletes the capture
triggers recorded but no replica operation has settled yet are settled first, in the shape
they were captured in, so the same reshaping covers them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from typing import Any

from ..engines import Engine
from ..migrate.introspect import has_object
from ..migrate.migration import ValueChange
from ..schema.objects import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, Schema, Table, fold_name
from ..sql.render import quote_identifier
from .capture import CAPTURED, register_roles
from .changeset import from_json_value, key_from_text, key_text, to_json_value
from .deleted_rows import lossy_key_conversions
from .hlc import BASELINE, DEFAULT_MAX_DRIFT_MS
from .node import NODE_TABLE, TOMBSTONES, Node


def settle_pending_deletes(engine: Engine) -> None:
    """Turn deletes captured before a migration into tombstones now, while they still fit the live shape."""
    if not has_object(engine, CAPTURED) or engine.execute(f"SELECT 1 FROM {CAPTURED} LIMIT 1").fetchone() is None:
        return
    from .replication import Replica  # the merge imports the migration's introspection: import here, not at load

    node = Node(engine, None, DEFAULT_MAX_DRIFT_MS, nullcontext)  # settling stamps local events only: it receives nothing
    Replica(engine, node, nullcontext).settle_captured()


def reshape_tombstones(
    engine: Engine,
    desired: Schema,
    table_renames: Iterable[tuple[str, str]],
    column_renames: Iterable[tuple[str, str, str]],
    value_changes: Iterable[ValueChange] = (),
    forgetting: Iterable[str] = (),
    landing: Mapping[str, set[str]] | None = None,
) -> None:
    """Bring every stored dead-row state in line with the desired synced tables, inside the migration.

    ``table_renames`` holds (old, new) table names, ``column_renames`` (table, old, new) with the
    table's new name, both as the plan applied them; ``value_changes`` what the rebuilds did to
    the values they copied (a type change's CAST, a default for NULLs), done to the states too;
    ``forgetting`` the live names of tables whose primary key moved (their deletes are forgotten,
    as the plan said: see ``deleted_rows``); ``landing`` by folded table name, the stored keys of
    deletes a key conversion would move onto a live row's converted key (forgotten too)."""
    if not has_object(engine, TOMBSTONES):
        return
    for name in forgetting:
        engine.execute(f"DELETE FROM {TOMBSTONES} WHERE table_name = ? COLLATE NOCASE", (name,))
    for old, new in table_renames:
        engine.execute(f"UPDATE {TOMBSTONES} SET table_name = ? WHERE table_name = ? COLLATE NOCASE", (new, old))
    for (name,) in engine.execute(f"SELECT DISTINCT table_name FROM {TOMBSTONES}").fetchall():
        table = desired.table(name)
        if table is not None and table.column(VERSION_COLUMN) is None:  # it stops syncing: its deletes are forgotten,
            engine.execute(f"DELETE FROM {TOMBSTONES} WHERE table_name = ?", (name,))  # so syncing again starts afresh
    renamed: dict[str, dict[str, str]] = {}
    for table_name, old, new in column_renames:
        renamed.setdefault(fold_name(table_name), {})[fold_name(old)] = new
    converted: dict[str, dict[str, ValueChange]] = {}
    for change in value_changes:
        converted.setdefault(fold_name(change.table), {})[fold_name(change.column)] = change
    stored = engine.execute(f"SELECT DISTINCT table_name FROM {TOMBSTONES} WHERE state IS NOT NULL").fetchall()
    for (name,) in stored:
        table = desired.table(name)
        if table is None or not table.primary_key:
            continue
        shape = _Shape(engine, table, renamed.get(fold_name(name), {}), converted.get(fold_name(table.name), {}))
        rows = engine.execute(f"SELECT key, state FROM {TOMBSTONES} WHERE table_name = ? AND state IS NOT NULL", (name,)).fetchall()
        updates = [(text, table.name, key) for key, state in rows if (text := shape.reshape(state)) != state]
        renamed_table = name != table.name
        if renamed_table:  # the name as the desired schema spells it, which the feed reads by
            engine.execute(f"UPDATE {TOMBSTONES} SET table_name = ? WHERE table_name = ?", (table.name, name))
        if updates:
            engine.executemany(f"UPDATE {TOMBSTONES} SET state = ? WHERE table_name = ? AND key = ?", updates)
    for table in desired.tables:
        key_changes = [converted.get(fold_name(table.name), {}).get(fold_name(column)) for column in table.primary_key]
        if any(key_changes):
            _convert_keys(engine, table.name, key_changes, (landing or {}).get(fold_name(table.name), set()))


def synced_registers(engine: Engine) -> dict[str, set[str]]:
    """The LWW registers (companion columns, folded) of each synced table (folded name) as they are now."""
    columns: dict[str, set[str]] = {}
    for table, column in engine.execute(
        "SELECT m.name, c.name FROM main.sqlite_master AS m, pragma_table_xinfo(m.name) AS c WHERE m.type = 'table'"
    ):
        columns.setdefault(fold_name(table), set()).add(fold_name(column))
    version = fold_name(VERSION_COLUMN)
    return {table: {name for name in names if name.endswith(LWW_SUFFIX)} for table, names in columns.items() if version in names}


def renumber_folded_rows(
    engine: Engine,
    desired: Schema,
    before: dict[str, set[str]],
    table_renames: Iterable[tuple[str, str]],
    column_renames: Iterable[tuple[str, str, str]],
) -> None:
    """Give every row of a synced table that lost an LWW register (a column turned plain or dropped,
    its time folded into the row version) a new sequence number, so the next feed sends each again:
    a replica holding other unexchanged edits would otherwise keep its own state under the same
    version, and incremental exchanges would never meet. Only when the replica ever gave a cursor."""
    if not has_object(engine, NODE_TABLE):
        return
    old_name = {fold_name(new): fold_name(old) for old, new in table_renames}
    renamed = {(fold_name(table), fold_name(old)): fold_name(new) for table, old, new in column_renames}
    for table in desired.tables:
        if table.column(VERSION_COLUMN) is None:
            continue
        name = fold_name(table.name)
        registers = before.get(old_name.get(name, name))
        now = {fold_name(column.name) for column in table.columns if column.is_lww_companion}
        if registers and {renamed.get((name, register), register) for register in registers} - now:
            seq = Node(engine, None, DEFAULT_MAX_DRIFT_MS, nullcontext).allocate_seq(1)
            engine.execute(f"UPDATE {quote_identifier(table.name)} SET {quote_identifier(SEQ_COLUMN)} = ?", (seq,))
            if has_object(engine, TOMBSTONES):  # deleted rows' states were folded alike
                engine.execute(f"UPDATE {TOMBSTONES} SET seq = ? WHERE table_name = ? AND state IS NOT NULL", (seq, table.name))


def _convert_keys(engine: Engine, table: str, changes: list[ValueChange | None], forget: set[str]) -> None:
    """Tombstone keys converted as the rebuild converted the key columns (an INTEGER key turning TEXT:
    ``[1]`` becomes ``["1"]``), or they would name no row and fit no changeset. A key the conversion
    does not keep exactly (``'01'`` to INTEGER) would land on another row's key and delete it: that
    delete is forgotten instead (the plan counted it as destructive), as is one in ``forget`` (stored key
    texts): it converts exactly, but onto the key a live row's lossily converted key became."""
    rows = engine.execute(f"SELECT key, deleted, state, seq FROM {TOMBSTONES} WHERE table_name = ? ORDER BY deleted", (table,)).fetchall()
    keys = [key_from_text(key) for key, _, _, _ in rows]
    lossy = lossy_key_conversions(engine, keys, changes)
    gone: list[str] = []  # stored key texts to delete: the forgotten and the moved ones
    moved: list[tuple[str, str, str, str | None, int]] = []
    for position, (key, deleted, state, seq) in enumerate(rows):
        if position in lossy or key in forget:
            gone.append(key)
            continue
        converted = key_text(tuple(
            value if change is None else engine.scalar(f"SELECT {change.applied_to('?')}", (value,))
            for value, change in zip(keys[position], changes, strict=True)
        ))
        if converted != key:
            gone.append(key)
            moved.append((table, converted, deleted, state, seq))
    if gone:
        engine.executemany(f"DELETE FROM {TOMBSTONES} WHERE table_name = ? AND key = ?", [(table, key) for key in gone])
    if moved:
        engine.executemany(f"INSERT OR REPLACE INTO {TOMBSTONES} (table_name, key, deleted, state, seq) VALUES (?, ?, ?, ?, ?)", moved)


class _Shape:
    """The register layout of one desired synced table, and how a stored state is mapped onto it."""

    def __init__(self, engine: Engine, table: Table, renames: dict[str, str], conversions: dict[str, ValueChange]) -> None:
        self.engine = engine
        self.table = table
        self.renames = renames
        self.conversions = conversions
        roles = register_roles(table)
        self.lww = [name for role, name in roles if role == "lww"]
        self.group = [name for role, name in roles if role == "group"]
        self._defaults: dict[str, Any] = {}

    def reshape(self, text: str) -> str:
        """The stored state ``text`` with renamed columns renamed, dropped ones removed (the version
        keeps their time), new ones at their default (an LWW register at the baseline time, as a live
        row's new companion column holds), and values moved between the group and LWW registers as
        the live columns moved (with the row version's time, as the migration does to live rows)."""
        data = json.loads(text)
        seen: dict[str, Any] = {}  # folded current name → stored value (JSON form)
        stamps: dict[str, str] = {}
        for name, (stamp, value) in data["columns"].items():
            current = fold_name(self.renames.get(fold_name(name), name))
            seen[current], stamps[current] = value, stamp
        for name, value in data["values"].items():
            seen[fold_name(self.renames.get(fold_name(name), name))] = value
        for folded, change in self.conversions.items():
            if folded in seen:
                seen[folded] = self._converted(seen[folded], change)
        version = data["version"]
        columns = {}
        for name in self.lww:
            folded = fold_name(name)
            value = seen[folded] if folded in seen else self._default(name)
            # a group column turning LWW was last written at the row version, as the live rows' copy says
            columns[name] = [stamps.get(folded, version if folded in seen else BASELINE), value]
        values = {name: seen[fold_name(name)] if fold_name(name) in seen else self._default(name) for name in self.group}
        # a column turning group or dropped brings its register's time to the version, as the live rows' copy
        # does (fixed-width text: max is the latest)
        registers = {fold_name(name) for name in self.lww}
        version = max([version, *(stamp for folded, stamp in stamps.items() if folded not in registers)])
        reshaped = {"columns": dict(sorted(columns.items())), "version": version, "values": dict(sorted(values.items()))}
        return json.dumps(reshaped, separators=(",", ":"), sort_keys=True)

    def _converted(self, value: Any, change: ValueChange) -> Any:
        """A stored value (JSON form) as the rebuild's copy turned the live rows' values: by SQLite itself."""
        return to_json_value(self.engine.scalar(f"SELECT {change.applied_to('?')}", (from_json_value(value),)))

    def _default(self, name: str) -> Any:
        """The value a new column gives rows that had none: its SQL default, evaluated once."""
        if name not in self._defaults:
            column = self.table.column(name)
            default = column.default if column is not None else None
            value = self.engine.scalar(f"SELECT {default}") if default is not None else None
            self._defaults[name] = to_json_value(value)
        return self._defaults[name]
