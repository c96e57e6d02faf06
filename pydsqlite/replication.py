"""Replica sync of tables with LWW columns: a change feed and a merge that converges.

Each row of a synced table is a set of registers, each a (timestamp, value) pair: one per
LWW column (its ``<column>__hlc`` companion) and one for the group of all other non-key
columns (the row version ``_pydsqlite_version``). A delete leaves a tombstone with its
timestamp and the row's registers. The state of a key is (registers, tombstone time); two
states merge register by register — the later timestamp wins, equal timestamps are broken
by the value so every replica picks the same winner — and the tombstone time is the later
of the two. A row is visible when some register is newer than its tombstone. Merging is
commutative, associative and idempotent, so replicas that have seen the same changes hold
the same rows in any order of exchange.

Every local write or merge that changes a row gives it this replica's next sequence
number (``_pydsqlite_seq``); ``changes_since(cursor)`` returns the rows and tombstones with a
higher number, so merged changes travel on (relays) without being re-stamped as local edits.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .errors import PydsqliteError
from .hlc import HLC, Timestamp
from .rowcodec import RowCodec
from .schema import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN
from .sqltext import quote_identifier

TOMBSTONES = "_pydsqlite_tombstones"
CREATE_TOMBSTONES = (
    f"CREATE TABLE IF NOT EXISTS {TOMBSTONES} ("
    "table_name TEXT NOT NULL, key TEXT NOT NULL, deleted TEXT NOT NULL, state TEXT, seq INTEGER NOT NULL, "
    "PRIMARY KEY (table_name, key)) WITHOUT ROWID"
)


class SyncError(PydsqliteError):
    """A changeset cannot be applied (unknown table or column, other schema, invalid value); nothing was applied."""


@dataclass(frozen=True)
class RowChange:
    """The whole known state of one row of a synced table.

    ``key`` holds the stored primary-key values; ``columns`` maps each LWW column to its
    (timestamp, stored value); ``version`` and ``values`` are the register of the other
    non-key columns; ``deleted`` is the tombstone time, if the row was ever deleted.
    """

    table: str
    key: tuple[Any, ...]
    columns: dict[str, tuple[str, Any]]
    version: str
    values: dict[str, Any]
    deleted: str | None = None

    @property
    def alive(self) -> bool:
        newest = max([self.version, *(stamp for stamp, _ in self.columns.values())])
        return self.deleted is None or newest > self.deleted

    def timestamps(self) -> list[str]:
        stamps = [self.version, *(stamp for stamp, _ in self.columns.values())]
        return stamps + ([self.deleted] if self.deleted else [])


@dataclass(frozen=True)
class ChangeSet:
    """Changes read from one replica: pass it to another replica's ``apply_changes``.

    ``cursor`` is the sending replica's sequence number to resume its feed from.
    """

    changes: tuple[RowChange, ...] = ()
    cursor: int = 0
    node: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": 1,
                "node": self.node,
                "cursor": self.cursor,
                "changes": [
                    {
                        "table": c.table,
                        "key": [_to_json(v) for v in c.key],
                        "columns": {name: [stamp, _to_json(v)] for name, (stamp, v) in sorted(c.columns.items())},
                        "version": c.version,
                        "values": {name: _to_json(v) for name, v in sorted(c.values.items())},
                        "deleted": c.deleted,
                    }
                    for c in self.changes
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ChangeSet:
        try:
            data = json.loads(text)
            if data.get("format") != 1:
                raise ValueError(f"unknown changeset format {data.get('format')!r}")
            changes = tuple(
                RowChange(
                    table=item["table"],
                    key=tuple(_from_json(v) for v in item["key"]),
                    columns={name: (pair[0], _from_json(pair[1])) for name, pair in item["columns"].items()},
                    version=item["version"],
                    values={name: _from_json(v) for name, v in item["values"].items()},
                    deleted=item.get("deleted"),
                )
                for item in data["changes"]
            )
            return cls(changes=changes, cursor=int(data["cursor"]), node=str(data.get("node", "")))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise SyncError(f"malformed changeset JSON: {error}") from None


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if "$float" in value:
            return float(value["$float"])
        raise ValueError(f"unexpected object {value!r} in a changeset")
    return value


def key_text(key: tuple[Any, ...]) -> str:
    """The canonical text of a stored key (the tombstones table's key)."""
    return json.dumps([_to_json(v) for v in key], separators=(",", ":"))


def _order(value: Any) -> str:
    """A total order on stored values, used only to break timestamp ties identically everywhere."""
    return json.dumps(_to_json(value), sort_keys=True, separators=(",", ":"))


def _newer(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    """Whether register ``a`` beats register ``b``: later timestamp, then the larger value."""
    return (a[0], _order(a[1])) > (b[0], _order(b[1]))


def merge_states(local: RowChange | None, remote: RowChange) -> RowChange:
    """The join of two states of the same key (commutative, associative, idempotent)."""
    if local is None:
        return remote
    columns = {}
    for name in local.columns.keys() | remote.columns.keys():
        mine, theirs = local.columns.get(name), remote.columns.get(name)
        columns[name] = theirs if mine is None or (theirs is not None and _newer(theirs, mine)) else mine
    group_mine = (local.version, local.values)
    group_theirs = (remote.version, remote.values)
    version, values = group_theirs if _newer(group_theirs, group_mine) else group_mine
    deleted = max(filter(None, (local.deleted, remote.deleted)), default=None)
    return RowChange(local.table, local.key, columns, version, values, deleted)


class Replica:
    """Reads and writes the sync state of one database for ``Database``: its feed and its merges."""

    def __init__(self, conn: sqlite3.Connection, clock: HLC, allocate_seq: Callable[[int], int]) -> None:
        self.conn = conn
        self.clock = clock
        self.allocate_seq = allocate_seq
        """Reserves n consecutive sequence numbers of this replica and returns the first."""

    def next_seq(self) -> int:
        return self.allocate_seq(1)

    # --- local writes ----------------------------------------------------------------------

    def ensure_tables(self) -> None:
        self.conn.execute(CREATE_TOMBSTONES)

    def revive(self, keys: list[tuple[Any, ...]], codec: RowCodec, first_seq: int) -> None:
        """Local inserts of deleted keys make them visible again (their registers are all newer than the
        tombstone): the tombstones keep their time but no longer hold the row."""
        dead = self.conn.execute(
            f"SELECT 1 FROM {TOMBSTONES} WHERE table_name = ? AND state IS NOT NULL LIMIT 1", (codec.name,)
        ).fetchone()
        if dead is None:
            return
        self.conn.executemany(
            f"UPDATE {TOMBSTONES} SET state = NULL, seq = ? WHERE table_name = ? AND key = ? AND state IS NOT NULL",
            [(first_seq + position, codec.name, key_text(key)) for position, key in enumerate(keys)],
        )

    def delete(self, codec: RowCodec, key: tuple[Any, ...]) -> bool:
        """Replace the row by a tombstone carrying its registers, stamped now."""
        state = self.read_row(codec, key)
        if state is None:
            return False
        dead = RowChange(state.table, state.key, state.columns, state.version, state.values, str(self.clock.now()))
        self._write_tombstone(dead, self.next_seq())
        self.conn.execute(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()}", key)
        return True

    # --- the feed --------------------------------------------------------------------------

    def read_row(self, codec: RowCodec, key: tuple[Any, ...]) -> RowChange | None:
        row = self.conn.execute(f"{_state_select(codec)} WHERE {codec.key_where()}", key).fetchone()
        return None if row is None else _row_state(codec, row, None)

    def read_tombstone(self, codec: RowCodec, key: tuple[Any, ...]) -> tuple[str, RowChange | None] | None:
        row = self.conn.execute(
            f"SELECT deleted, state FROM {TOMBSTONES} WHERE table_name = ? AND key = ?", (codec.name, key_text(key))
        ).fetchone()
        if row is None:
            return None
        deleted, state = row
        return deleted, (_state_from_json(codec, key, state, deleted) if state is not None else None)

    def changes_since(self, codecs: list[RowCodec], cursor: int | None) -> list[RowChange]:
        after = -1 if cursor is None else cursor
        changes: list[RowChange] = []
        for codec in codecs:
            deleted_at = dict(
                self.conn.execute(f"SELECT key, deleted FROM {TOMBSTONES} WHERE table_name = ?", (codec.name,)).fetchall()
            )
            for row in self.conn.execute(f"{_state_select(codec)} WHERE {quote_identifier(SEQ_COLUMN)} > ?", (after,)):
                state = _row_state(codec, row, None)
                changes.append(_with_deleted(state, deleted_at.get(key_text(state.key))))
            for key, deleted, state in self.conn.execute(
                f"SELECT key, deleted, state FROM {TOMBSTONES} WHERE table_name = ? AND seq > ? AND state IS NOT NULL",
                (codec.name, after),
            ):
                stored_key = tuple(_from_json(v) for v in json.loads(key))
                changes.append(_state_from_json(codec, stored_key, state, deleted))
        return changes

    # --- merging ---------------------------------------------------------------------------

    def apply(self, codec: RowCodec, remote: RowChange) -> bool:
        """Merge one remote state into this replica; returns whether anything changed."""
        live = self.read_row(codec, remote.key)
        tombstone = self.read_tombstone(codec, remote.key)
        local = live
        if live is not None and tombstone is not None:
            local = _with_deleted(live, tombstone[0])
        elif live is None and tombstone is not None:
            local = tombstone[1] if tombstone[1] is not None else None
            if local is not None:
                local = _with_deleted(local, tombstone[0])
        merged = merge_states(local, remote)
        if local is not None and merged == local:
            return False
        seq = self.next_seq()
        if merged.alive:
            self._write_row(codec, merged, seq, exists=live is not None)
            if merged.deleted is not None:
                self._write_tombstone(merged, seq, keep_state=False)
        else:
            if live is not None:
                self.conn.execute(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()}", merged.key)
            self._write_tombstone(merged, seq)
        return True

    def _write_row(self, codec: RowCodec, state: RowChange, seq: int, *, exists: bool) -> None:
        data = dict(zip(codec.key, state.key, strict=True))
        data.update({name: value for name, (_, value) in state.columns.items()})
        data.update(state.values)
        try:
            instance = codec.validate(codec.decode_values(data))
        except (ValidationError, ValueError, TypeError) as error:
            raise SyncError(f"a merged row of table {codec.name!r} with key {state.key!r} does not validate: {error}") from None
        values = dict(zip(codec.fields, codec.values(instance), strict=True))
        for name, (stamp, _) in state.columns.items():
            values[name + LWW_SUFFIX] = stamp
        values[VERSION_COLUMN] = state.version
        values[SEQ_COLUMN] = seq
        names = list(values)
        if exists:
            assignments = ", ".join(f"{quote_identifier(n)} = ?" for n in names if n not in codec.key)
            params = [values[n] for n in names if n not in codec.key] + list(state.key)
            self.conn.execute(f"UPDATE {codec.quoted_table} SET {assignments} WHERE {codec.key_where()}", params)
        else:
            columns = ", ".join(quote_identifier(n) for n in names)
            self.conn.execute(
                f"INSERT INTO {codec.quoted_table} ({columns}) VALUES ({', '.join('?' * len(names))})", [values[n] for n in names]
            )

    def _write_tombstone(self, change: RowChange, seq: int, *, keep_state: bool = True) -> None:
        """Record the tombstone time of a key; a dead row's registers go with it, a live row's stay in the table."""
        assert change.deleted is not None
        self.ensure_tables()
        self.conn.execute(
            f"INSERT OR REPLACE INTO {TOMBSTONES} (table_name, key, deleted, state, seq) VALUES (?, ?, ?, ?, ?)",
            (change.table, key_text(change.key), change.deleted, _state_to_json(change) if keep_state else None, seq),
        )


def _state_select(codec: RowCodec) -> str:
    """SELECT of a synced row's key, LWW columns with companions, other columns and row version."""
    names = [*codec.key, *codec.lww, *(name + LWW_SUFFIX for name in codec.lww), *codec.group, VERSION_COLUMN]
    return f"SELECT {', '.join(quote_identifier(n) for n in names)} FROM {codec.quoted_table}"


def _row_state(codec: RowCodec, row: tuple[Any, ...], deleted: str | None) -> RowChange:
    width, lww = len(codec.key), len(codec.lww)
    key = tuple(row[:width])
    values = row[width : width + lww]
    stamps = row[width + lww : width + 2 * lww]
    group = row[width + 2 * lww : -1]
    return RowChange(
        table=codec.name,
        key=key,
        columns={name: (stamp, value) for name, stamp, value in zip(codec.lww, stamps, values, strict=True)},
        version=row[-1],
        values=dict(zip(codec.group, group, strict=True)),
        deleted=deleted,
    )


def _with_deleted(state: RowChange, deleted: str | None) -> RowChange:
    return RowChange(state.table, state.key, state.columns, state.version, state.values, deleted)


def _state_to_json(state: RowChange) -> str:
    return json.dumps(
        {
            "columns": {name: [stamp, _to_json(v)] for name, (stamp, v) in sorted(state.columns.items())},
            "version": state.version,
            "values": {name: _to_json(v) for name, v in sorted(state.values.items())},
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def _state_from_json(codec: RowCodec, key: tuple[Any, ...], text: str, deleted: str) -> RowChange:
    data = json.loads(text)
    return RowChange(
        table=codec.name,
        key=key,
        columns={name: (pair[0], _from_json(pair[1])) for name, pair in data["columns"].items()},
        version=data["version"],
        values={name: _from_json(v) for name, v in data["values"].items()},
        deleted=deleted,
    )


def check_change(codec: RowCodec | None, change: RowChange, table: str) -> None:
    """Refuse a change this replica cannot hold, before anything is written."""
    if codec is None:
        raise SyncError(f"changeset names table {table!r}, which is not a synced table here (no table model with LWW columns)")
    if len(change.key) != len(codec.key):
        raise SyncError(f"changeset key {change.key!r} does not fit the key {codec.key} of table {codec.name!r}")
    if set(change.columns) != set(codec.lww) or set(change.values) != set(codec.group):
        raise SyncError(
            f"changeset for table {codec.name!r} has columns {sorted(change.columns) + sorted(change.values)} but this "
            f"replica's schema has {sorted(codec.lww) + sorted(codec.group)}; sync both replicas' schemas first"
        )
    for stamp in change.timestamps():
        Timestamp.parse(stamp)
