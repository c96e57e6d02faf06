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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import PydsqliteError
from .hlc import HLC, check_text
from .model import registered_models, table_options
from .node import CREATE_TOMBSTONES, TOMBSTONES, Node
from .rowcodec import RowCodec, codec_for
from .schema import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, fold_name
from .sqltext import quote_identifier


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
    if a[0] != b[0]:
        return a[0] > b[0]
    return _order(a[1]) > _order(b[1])


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

    def __init__(self, conn: sqlite3.Connection, node: Node) -> None:
        self.conn = conn
        self.node = node

    @property
    def clock(self) -> HLC:
        return self.node.clock

    def allocate_seq(self, count: int) -> int:
        return self.node.allocate_seq(count)

    def next_seq(self) -> int:
        return self.node.allocate_seq(1)

    # --- the public feed and merge -------------------------------------------------------------

    def feed(self, cursor: int | None, models: Iterable[type[BaseModel]] | None) -> ChangeSet:
        """The changes after ``cursor``, read in one snapshot."""
        codecs = self.synced_codecs(models)
        self.node.current_seq()  # creates the node and tombstone tables before the read-only snapshot
        with self._read_snapshot():
            cursor_now = self.node.current_seq()
            changes = self.changes_since(list(codecs.values()), cursor)
        return ChangeSet(tuple(changes), cursor_now, self.clock.node_id)

    def merge(self, changeset: ChangeSet, models: Iterable[type[BaseModel]] | None, transaction: Callable) -> int:
        """Check the whole changeset, advance the clock past it, then merge it table by table in one transaction."""
        codecs = self.synced_codecs(models)
        stamps: set[str] = set()
        for change in changeset.changes:
            check_change(codecs.get(fold_name(change.table)), change)
            stamps.update(change.timestamps())
        for stamp in stamps:  # each distinct timestamp once: a batch of rows often shares one
            check_text(stamp)
        if stamps:
            self.clock.receive(max(stamps))
        by_table: dict[str, list[RowChange]] = {}
        for change in changeset.changes:
            by_table.setdefault(fold_name(change.table), []).append(change)
        changed = 0
        with transaction():
            for table, changes in by_table.items():
                try:
                    changed += self.apply_many(codecs[table], changes)
                except sqlite3.IntegrityError as error:
                    raise SyncError(f"merging rows of table {changes[0].table!r} violates a constraint: {error}") from error
        return changed

    def synced_codecs(self, models: Iterable[type[BaseModel]] | None) -> dict[str, RowCodec]:
        """Codecs of the synced tables (models with LWW columns) that exist in this database."""
        present = {
            fold_name(name)
            for (name,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE ?", (f"%{SEQ_COLUMN}%",)
            )
        }
        chosen = registered_models() if models is None else list(models)
        codecs = {}
        for model in chosen:
            options = table_options(model)
            if options is None or fold_name(options.table) not in present:
                continue
            codec = codec_for(model)
            if codec.synced:
                if codec.auto_key is not None:
                    raise SyncError(
                        f"table {codec.name!r} cannot sync: its key {codec.auto_key!r} is assigned by SQLite, so two "
                        "replicas would give the same id to different rows; use a key the writer chooses (a UUID)"
                    )
                codecs[fold_name(codec.name)] = codec
        return codecs

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

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

    def apply_many(self, codec: RowCodec, remotes: list[RowChange]) -> int:
        """Merge remote states of one table in bulk: read the local states, join, validate the
        visible rows in one call, write with ``executemany``. Returns how many keys changed."""
        incoming: dict[str, RowChange] = {}
        for remote in remotes:
            text = key_text(remote.key)
            incoming[text] = merge_states(incoming.get(text), remote)
        live = self._read_rows(codec, [change.key for change in incoming.values()])
        tombstones = self._read_tombstones(codec)
        alive: list[RowChange] = []
        dead: list[RowChange] = []
        for text, remote in incoming.items():
            local = _local_state(live.get(text), tombstones.get(text), codec, remote.key)
            merged = merge_states(local, remote)
            if local is not None and merged == local:
                continue
            (alive if merged.alive else dead).append(merged)
        if not alive and not dead:
            return 0
        first = self.allocate_seq(len(alive) + len(dead))
        self._write_rows(codec, alive, first)
        gone = [change.key for change in dead if key_text(change.key) in live]
        if gone:
            self.conn.executemany(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()}", gone)
        marks = [(change, first + n, False) for n, change in enumerate(alive) if change.deleted is not None]
        marks += [(change, first + len(alive) + n, True) for n, change in enumerate(dead)]
        self._write_tombstones(marks)
        return len(alive) + len(dead)

    def _read_rows(self, codec: RowCodec, keys: list[tuple[Any, ...]]) -> dict[str, RowChange]:
        """Local states of the rows with these keys (chunked ``IN (VALUES …)`` lookups)."""
        found: dict[str, RowChange] = {}
        columns = ", ".join(quote_identifier(name) for name in codec.key)
        width = len(codec.key)
        chunk = max(1, 900 // width)
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            values = ", ".join("(" + ", ".join("?" * width) + ")" for _ in part)
            params = [value for key in part for value in key]
            for row in self.conn.execute(f"{_state_select(codec)} WHERE ({columns}) IN (VALUES {values})", params):
                state = _row_state(codec, row, None)
                found[key_text(state.key)] = state
        return found

    def _read_tombstones(self, codec: RowCodec) -> dict[str, tuple[str, str | None]]:
        rows = self.conn.execute(f"SELECT key, deleted, state FROM {TOMBSTONES} WHERE table_name = ?", (codec.name,))
        return {key: (deleted, state) for key, deleted, state in rows}

    def _write_rows(self, codec: RowCodec, states: list[RowChange], first_seq: int) -> None:
        """Validate the visible merged rows through the model, then upsert them."""
        if not states:
            return
        data = []
        for state in states:
            row = dict(zip(codec.key, state.key, strict=True))
            row.update({name: value for name, (_, value) in state.columns.items()})
            row.update(state.values)
            data.append(codec.decode_values(row))
        try:
            instances = codec.validate_stored(data)
        except ValidationError as error:
            position = error.errors()[0]["loc"][0]
            key = states[position].key if isinstance(position, int) else "?"
            raise SyncError(f"a merged row of table {codec.name!r} with key {key!r} does not validate: {error}") from None
        except (ValueError, TypeError) as error:
            raise SyncError(f"a merged row of table {codec.name!r} does not validate: {error}") from None
        names = [*codec.fields, *(name + LWW_SUFFIX for name in codec.lww), VERSION_COLUMN, SEQ_COLUMN]
        rows = []
        for position, (state, instance) in enumerate(zip(states, instances, strict=True)):
            rows.append(
                [*codec.values(instance), *(state.columns[name][0] for name in codec.lww), state.version, first_seq + position]
            )
        updates = ", ".join(f"{quote_identifier(n)} = excluded.{quote_identifier(n)}" for n in names if n not in codec.key)
        self.conn.executemany(
            f"INSERT INTO {codec.quoted_table} ({', '.join(quote_identifier(n) for n in names)}) "
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(quote_identifier(n) for n in codec.key)}) DO UPDATE SET {updates}",
            rows,
        )

    def _write_tombstone(self, change: RowChange, seq: int, *, keep_state: bool = True) -> None:
        self._write_tombstones([(change, seq, keep_state)])

    def _write_tombstones(self, marks: list[tuple[RowChange, int, bool]]) -> None:
        """Record tombstone times; a dead row's registers go with it, a visible row's stay in its table."""
        if not marks:
            return
        self.ensure_tables()
        self.conn.executemany(
            f"INSERT OR REPLACE INTO {TOMBSTONES} (table_name, key, deleted, state, seq) VALUES (?, ?, ?, ?, ?)",
            [
                (change.table, key_text(change.key), change.deleted, _state_to_json(change) if keep else None, seq)
                for change, seq, keep in marks
            ],
        )


def _local_state(
    live: RowChange | None, tombstone: tuple[str, str | None] | None, codec: RowCodec, key: tuple[Any, ...]
) -> RowChange | None:
    """A key's local state: the visible row or the dead row's registers, with its tombstone time."""
    if tombstone is None:
        return live
    deleted, state = tombstone
    if live is not None:
        return _with_deleted(live, deleted)
    return _state_from_json(codec, key, state, deleted) if state is not None else None


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


def check_change(codec: RowCodec | None, change: RowChange) -> None:
    """Refuse a change this replica cannot hold, before anything is written."""
    if codec is None:
        raise SyncError(
            f"changeset names table {change.table!r}, which is not a synced table here (no table model with LWW columns)"
        )
    if len(change.key) != len(codec.key):
        raise SyncError(f"changeset key {change.key!r} does not fit the key {codec.key} of table {codec.name!r}")
    if set(change.columns) != set(codec.lww) or set(change.values) != set(codec.group):
        raise SyncError(
            f"changeset for table {codec.name!r} has columns {sorted(change.columns) + sorted(change.values)} but this "
            f"replica's schema has {sorted(codec.lww) + sorted(codec.group)}; sync both replicas' schemas first"
        )
