"""Changesets: the row states replicas exchange, their JSON form, their checks and their join.

Each row of a synced table is a set of registers, each a (timestamp, value) pair: one per
LWW column and one for the group of all other non-key columns (the row version). A
delete leaves a tombstone time. Two states of one key merge register by register — the
later timestamp wins, equal timestamps are broken by the value so every replica picks
the same winner — and the tombstone time is the later of the two (``merge_states``).

A changeset from the network is checked whole before anything is written: every value
must be one SQLite stores (None, int, float, str, bytes), every key must fit its table's
key, every timestamp must be well formed; a problem raises ``SyncError`` naming where it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import SyncError
from ..rows.codec import RowCodec
from ..schema.codecs import unstorable_reason
from ..schema.objects import fold_name
from .hlc import ClockError, check_text

_SCALARS = frozenset({type(None), int, float, str, bytes})
"""The Python types of values SQLite stores (bool is not one: SQLite holds it as an int)."""
_KEY_TYPES = {"INTEGER": int, "TEXT": str, "BLOB": bytes, "REAL": float}
_KEY_ENCODER = json.JSONEncoder(separators=(",", ":"))
_ORDER_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class RowChange:
    """The whole known state of one row of a synced table.

    ``key`` holds the stored primary-key values; ``columns`` maps each LWW column to its
    (timestamp, stored value); ``version`` and ``values`` are the register of the other
    non-key columns; ``deleted`` is the tombstone time, if the row was ever deleted.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import LWW, Database, PrimaryKey, SyncModel, sync_models
        >>> class Song(SyncModel, table="songs"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     title: Annotated[str, LWW()]
        ...     plays: int = 0
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Song])
        >>> db = Database(conn)
        >>> _ = db.insert(Song(id=1, title="Intro"))
        >>> (change,) = db.changes_since().changes
        >>> change.table, change.key, change.columns["title"][1], change.values, change.deleted
        ('songs', (1,), 'Intro', {'plays': 0}, None)
    """

    table: str
    key: tuple[Any, ...]
    columns: dict[str, tuple[str, Any]]
    version: str
    values: dict[str, Any]
    deleted: str | None = None

    @property
    def alive(self) -> bool:
        """Whether the row exists: never deleted, or written again after its tombstone."""
        if self.deleted is None:
            return True
        return max([self.version, *(stamp for stamp, _ in self.columns.values())]) > self.deleted

    def timestamps(self) -> list[str]:
        """Every timestamp the state carries (registers and tombstone), for the clock to receive."""
        stamps = [self.version, *(stamp for stamp, _ in self.columns.values())]
        return stamps + ([self.deleted] if self.deleted else [])

    def stored_values(self, key_names: Iterable[str]) -> dict[str, Any]:
        """Every column's value by name (the key's columns named ``key_names``), as the row holds them."""
        values = dict(zip(key_names, self.key, strict=True))
        values.update({name: value for name, (_, value) in self.columns.items()})
        values.update(self.values)
        return values


@dataclass(frozen=True)
class ChangeSet:
    """Changes read from one replica: pass it to another replica's ``apply_changes``.

    ``cursor`` is the sending replica's sequence number to resume its feed from;
    ``to_json()`` and ``ChangeSet.from_json`` carry it over the network.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import LWW, ChangeSet, Database, PrimaryKey, SyncModel, sync_models
        >>> class Memo(SyncModel, table="memos"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     text: Annotated[str, LWW()]
        >>> phone, laptop = Database(sqlite3.connect(":memory:")), Database(sqlite3.connect(":memory:"))
        >>> for replica in (phone, laptop):
        ...     _ = sync_models(replica.conn, [Memo])
        >>> _ = phone.insert(Memo(id=1, text="buy milk"))
        >>> changes = phone.changes_since()
        >>> laptop.apply_changes(ChangeSet.from_json(changes.to_json()))
        1
        >>> laptop.select(Memo)
        [Memo(id=1, text='buy milk')]
        >>> phone.changes_since(changes.cursor).changes  # nothing new since
        ()
    """

    changes: tuple[RowChange, ...] = ()
    cursor: int = 0
    node: str = ""

    def to_json(self) -> str:
        """The changeset as JSON text (blobs in base64), for ``ChangeSet.from_json`` on the other side."""
        return json.dumps(
            {
                "format": 1,
                "node": self.node,
                "cursor": self.cursor,
                "changes": [
                    {
                        "table": c.table,
                        "key": [to_json_value(v) for v in c.key],
                        "columns": {name: [stamp, to_json_value(v)] for name, (stamp, v) in sorted(c.columns.items())},
                        "version": c.version,
                        "values": {name: to_json_value(v) for name, v in sorted(c.values.items())},
                        "deleted": c.deleted,
                    }
                    for c in self.changes
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ChangeSet:
        """Parse ``to_json`` output; anything else raises ``SyncError`` naming the change and column."""
        try:
            data = json.loads(text, parse_constant=_NotJSON, parse_float=_finite_or_not_json, object_pairs_hook=_without_repeats)
        except (TypeError, ValueError) as error:
            raise SyncError(f"malformed changeset JSON: {error}") from None
        except RecursionError:  # arrays or objects nested deeper than Python's reader goes: no changeset is
            raise SyncError("malformed changeset JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise SyncError(f"malformed changeset JSON: expected an object, got {type(data).__name__}")
        if type(data.get("format")) is not int or data.get("format") != 1:
            raise SyncError(f"malformed changeset JSON: unknown changeset format {data.get('format')!r}")
        cursor, node, items = data.get("cursor"), data.get("node", ""), data.get("changes")
        if type(cursor) is not int or cursor < 0:
            raise SyncError(f"malformed changeset JSON: cursor {cursor!r} is not a non-negative integer")
        if not isinstance(node, str):
            raise SyncError(f"malformed changeset JSON: node {node!r} is not text")
        if not isinstance(items, list):
            raise SyncError(f"malformed changeset JSON: 'changes' must be a list, got {type(items).__name__}")
        changes = tuple(_change_from_json(item, position) for position, item in enumerate(items))
        return cls(changes=changes, cursor=cursor, node=node)


def _without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members; a name given twice is refused (``to_json`` never writes one, and readers
    disagree on which value counts: a proxy keeping the first would see other data than the merge)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        names = [name for name, _ in pairs]
        repeated = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"an object gives the name {repeated!r} twice")
    return data


class _NotJSON:
    """A token Python's JSON reader accepts but JSON has not (``NaN``, ``Infinity``, a number beyond
    float range such as ``1e400``): kept as read, so the change holding it is named when refused."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"{self.text} (not JSON)"


def _finite_or_not_json(text: str) -> float | _NotJSON:
    value = float(text)
    return value if math.isfinite(value) else _NotJSON(text)


class _Named(NamedTuple):
    """The table and key of the change being read, for the ``SyncError`` that refuses it."""

    table: str
    key: tuple[Any, ...] | None


def _change_from_json(item: Any, position: int) -> RowChange:
    where = f"change #{position}"
    if not isinstance(item, dict):
        raise SyncError(f"malformed changeset JSON: {where} is not an object")
    table = item.get("table")
    if not isinstance(table, str):
        raise SyncError(f"malformed changeset JSON: {where} has table {table!r}, not a table name")
    raw_key = item.get("key")
    where = f"{where} (table {table!r}, key {raw_key!r})"
    named = _Named(table, tuple(raw_key) if isinstance(raw_key, list) else None)
    if not isinstance(raw_key, list):
        raise SyncError(f"malformed changeset JSON: {where}: the key must be a list of values", table=named.table, key=named.key)
    key = tuple(_value_from_json(value, where, "the key", named) for value in raw_key)
    raw_columns, raw_values = item.get("columns"), item.get("values")
    if not isinstance(raw_columns, dict) or not isinstance(raw_values, dict):
        raise SyncError(f"malformed changeset JSON: {where}: 'columns' and 'values' must be objects", table=named.table, key=named.key)
    columns = {}
    for name, pair in raw_columns.items():
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise SyncError(f"malformed changeset JSON: {where}: column {name!r} must be [timestamp, value], got {pair!r}", table=named.table, key=named.key)
        columns[name] = (pair[0], _value_from_json(pair[1], where, f"column {name!r}", named))
    values = {name: _value_from_json(value, where, f"column {name!r}", named) for name, value in raw_values.items()}
    version, deleted = item.get("version"), item.get("deleted")
    if not isinstance(version, str) or not (deleted is None or isinstance(deleted, str)):
        raise SyncError(
            f"malformed changeset JSON: {where}: 'version' and 'deleted' must be timestamps, got {version!r}, {deleted!r}",
            table=named.table, key=named.key,
        )
    return RowChange(table, key, columns, version, values, deleted)


def to_json_value(value: Any) -> Any:
    """A stored value as JSON data: bytes and non-finite floats become tagged objects."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


def from_json_value(value: Any) -> Any:
    """The stored value a ``to_json_value`` result stands for; anything else raises ``ValueError``."""
    kind = type(value)
    if kind is str or kind is int or kind is float or value is None:
        return value
    if kind is dict and len(value) == 1:
        if isinstance(value.get("$bytes"), str):
            try:
                return base64.b64decode(value["$bytes"], validate=True)
            except binascii.Error as error:
                raise ValueError(f"invalid base64 in {value!r}: {error}") from None
        if value.get("$float") in ("inf", "-inf", "nan"):
            return float(value["$float"])
    if kind is _NotJSON:
        raise ValueError(f"{value.text} is not JSON; to_json() writes non-finite floats as {{'$float': 'inf'/'-inf'/'nan'}}")
    raise ValueError(f"{value!r} is not a stored value (null, number, text, {{'$bytes': base64}} or {{'$float': 'inf'/'-inf'/'nan'}})")


def _value_from_json(value: Any, where: str, what: str, named: _Named) -> Any:
    try:
        return from_json_value(value)
    except ValueError as error:
        raise SyncError(f"malformed changeset JSON: {where}: {what}: {error}", table=named.table, key=named.key) from None


def key_text(key: tuple[Any, ...]) -> str:
    """The canonical text of a stored key (the tombstones table's key)."""
    for value in key:
        kind = type(value)
        if kind is not str and kind is not int:  # bytes and non-finite floats are tagged
            return _KEY_ENCODER.encode([to_json_value(v) for v in key])
    return _KEY_ENCODER.encode(key)  # text and integers are JSON as they are (a tuple encodes as a list)


def key_from_text(text: str) -> tuple[Any, ...]:
    return tuple(from_json_value(v) for v in json.loads(text))


def value_order(value: Any) -> str:
    """The total order that breaks timestamp ties, identically everywhere: the value's JSON text as it
    travels in changesets (a group's values as one object with sorted names); the larger text wins."""
    if isinstance(value, dict):
        return _ORDER_ENCODER.encode({name: to_json_value(v) for name, v in value.items()})
    return _ORDER_ENCODER.encode(to_json_value(value))


def _newer(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    """Whether register ``a`` beats register ``b``: later timestamp, then the larger value."""
    if a[0] != b[0]:
        return a[0] > b[0]
    if _identical(a[1], b[1]):
        return False  # the same register seen from both sides, the common tie: no ordering needed
    return value_order(a[1]) > value_order(b[1])


def _identical(a: Any, b: Any) -> bool:
    """The same value of the same type (floats bit for bit: ``-0.0 == 0.0`` but they order differently)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return bool(a.hex() == b.hex())
    if kind is dict:
        return a.keys() == b.keys() and all(_identical(value, b[name]) for name, value in a.items())
    return bool(a == b)


def ties_on_different_values(a: RowChange, b: RowChange) -> bool:
    """Whether two states of a key hold different values under the same timestamp (a register, or
    the group under the row version): only rows written outside pydsqlite, which all carry the
    baseline timestamp, can."""
    if a.version == b.version and not _identical(a.values, b.values):
        return True
    return any(
        (theirs := b.columns.get(name)) is not None and stamp == theirs[0] and not _identical(value, theirs[1])
        for name, (stamp, value) in a.columns.items()
    )


def merge_states(local: RowChange | None, remote: RowChange) -> RowChange:
    """The join of two states of the same key (commutative, associative, idempotent)."""
    if local is None:
        return remote
    columns: dict[str, Any] = {}  # every name is in one state at least, so no value is None
    names = remote.columns.keys() if local.columns.keys() == remote.columns.keys() else local.columns.keys() | remote.columns.keys()
    for name in names:
        mine, theirs = local.columns.get(name), remote.columns.get(name)
        columns[name] = theirs if mine is None or (theirs is not None and _newer(theirs, mine)) else mine
    group_mine = (local.version, local.values)
    group_theirs = (remote.version, remote.values)
    version, values = group_theirs if _newer(group_theirs, group_mine) else group_mine
    deleted = max(filter(None, (local.deleted, remote.deleted)), default=None)
    return RowChange(local.table, local.key, columns, version, values, deleted)


def unstorable_change(changes: Iterable[RowChange], names: Mapping[str, str]) -> SyncError:
    """The ``SyncError`` naming the first value of ``changes`` SQLite cannot bind (an integer beyond 64
    bits, text that is not valid UTF-8): found only after binding one failed, so the common case pays
    nothing. ``names`` spells each folded table name as this replica does."""
    for position, change in enumerate(changes):
        named = [("the key", value) for value in change.key]
        named += [(f"column {name!r}", value) for name, (_, value) in change.columns.items()]
        named += [(f"column {name!r}", value) for name, value in change.values.items()]
        for what, value in named:
            reason = unstorable_reason(value)
            if reason is not None:
                table = names.get(fold_name(change.table), change.table)
                return SyncError(
                    f"change #{position} (table {table!r}, key {change.key!r}): {what} holds {value!r}: {reason}",
                    table=table, key=change.key,
                )
    return SyncError("a changeset value cannot be stored by SQLite")


# --- checking a changeset against this replica's tables -----------------------------------------


@dataclass(frozen=True)
class TableShape:
    """What a change of one synced table must look like here: key columns and their stored types,
    the LWW columns and the other (group) columns."""

    codec: RowCodec
    key_types: tuple[type, ...] | None
    """The exact Python type of each stored key value; None when a key column is untyped (any scalar)."""
    lww: frozenset[str]
    group: frozenset[str]

    @classmethod
    def of(cls, codec: RowCodec) -> TableShape:
        types = [_KEY_TYPES.get(codec.table.column(name).type) for name in codec.key]  # type: ignore[union-attr]
        key_types = None if None in types else tuple(kind for kind in types if kind is not None)
        return cls(codec, key_types, frozenset(codec.lww), frozenset(codec.group))

    def key_fits(self, key: Any) -> bool:
        if type(key) is not tuple:
            return False
        if self.key_types is not None:
            if tuple(map(type, key)) != self.key_types:
                return False
        elif not (len(key) == len(self.codec.key) and all(type(v) in _SCALARS and v is not None for v in key)):
            return False
        return not (self.key_types is None or float in self.key_types) or not any(map(_unkeyable, key))


def _unkeyable(value: Any) -> bool:
    """A float no key can hold: SQLite compares -0.0 equal to 0.0 (another row's key) and binds NaN as NULL."""
    return type(value) is float and (value != value or (value == 0.0 and math.copysign(1.0, value) < 0))


class _Malformed(Exception):
    """Raised inside the fast check; the slow pass then finds and names the culprit."""


def check_changes(changes: Iterable[RowChange], shapes: dict[str, TableShape]) -> set[str]:
    """Every distinct timestamp of ``changes``, after checking that this replica can hold each change.

    One cheap pass for the common case; on any problem a second pass locates it and raises
    ``SyncError`` naming the change's position, table, key and column."""
    changes = list(changes)
    stamps: set[str] = set()
    value_types: set[type] = set()
    pair_types: set[type] = set()
    by_name: dict[str, TableShape] = {}  # each table name folded once, not once per change
    try:
        for change in changes:
            shape = by_name.get(change.table)
            if shape is None:
                shape = by_name[change.table] = shapes[fold_name(change.table)]
            if not shape.key_fits(change.key):
                raise _Malformed
            columns, values = change.columns, change.values
            if columns.keys() != shape.lww or values.keys() != shape.group:
                raise _Malformed
            for pair in columns.values():
                pair_types.add(type(pair))
                stamp, value = pair
                stamps.add(stamp)
                value_types.add(type(value))
            value_types.update(map(type, values.values()))
            stamps.add(change.version)
            if change.deleted is not None:
                stamps.add(change.deleted)
        if not value_types <= _SCALARS or not all(issubclass(kind, (tuple, list)) for kind in pair_types):
            raise _Malformed
        for stamp in stamps:
            check_text(stamp)
    except (_Malformed, ClockError, AttributeError, KeyError, TypeError, ValueError):
        for position, change in enumerate(changes):
            _check_one(change, position, shapes)
        raise SyncError("malformed changeset") from None  # unreachable unless a check above is incomplete
    return stamps


def _columns_differ(columns: Any, values: Any, shape: TableShape) -> str:
    """How a change's columns differ from this replica's table: columns only one side has, and
    columns that are LWW on one side and plain on the other (a release turned LWW on or off)."""
    if not isinstance(columns, dict) or not isinstance(values, dict):
        return "'columns' and 'values' must map column names to registers and values"
    lww, group = set(columns), set(values)
    parts = []
    for name in sorted((lww & shape.group) | (group & shape.lww)):
        here, there = ("LWW", "plain") if name in shape.lww else ("plain", "LWW")
        parts.append(f"column {name!r} is {here} here and {there} in the change")
    if (lww | group) - (shape.lww | shape.group):
        parts.append(f"columns this replica's table does not have: {sorted((lww | group) - (shape.lww | shape.group))}")
    if (shape.lww | shape.group) - (lww | group):
        parts.append(f"columns missing that this replica's table has: {sorted((shape.lww | shape.group) - (lww | group))}")
    return "its columns differ from this replica's table: " + "; ".join(parts)


def _check_one(change: Any, position: int, shapes: dict[str, TableShape]) -> None:
    """Raise ``SyncError`` naming what is wrong with one change, if anything."""
    table = getattr(change, "table", None)
    shape = shapes.get(fold_name(table)) if isinstance(table, str) else None
    if shape is None:
        raise SyncError(
            f"change #{position} names table {table!r}, which is not a synced table here (no table model with LWW columns "
            "for it, or its table is not in this database)"
        )
    codec = shape.codec
    key = change.key
    where = f"change #{position} (table {codec.name!r}, key {key!r})"

    def refused(message: str) -> SyncError:
        return SyncError(message, table=codec.name, key=key if type(key) is tuple else None)

    if type(key) is not tuple or len(key) != len(codec.key):
        raise refused(f"{where}: the key does not fit the key {codec.key} of table {codec.name!r}")
    for position_in_key, (name, value) in enumerate(zip(codec.key, key, strict=True)):
        expected = shape.key_types[position_in_key] if shape.key_types else None
        if value is None or type(value) not in _SCALARS or (expected is not None and type(value) is not expected):
            wanted = expected.__name__ if expected else "a non-null int, float, str or bytes"
            raise refused(f"{where}: key column {name!r} holds {value!r} ({type(value).__name__}), expected {wanted}")
        if _unkeyable(value):
            raise refused(f"{where}: key column {name!r} holds {value!r}, which no key can hold: SQLite compares -0.0 equal to 0.0 and stores NaN as NULL")
    columns, values = change.columns, change.values
    if not isinstance(columns, dict) or not isinstance(values, dict) or columns.keys() != shape.lww or values.keys() != shape.group:
        raise refused(f"{where}: {_columns_differ(columns, values, shape)}; sync both replicas' schemas first")
    registers = [(f"column {name!r}", pair) for name, pair in columns.items()]
    for what, pair in registers:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise refused(f"{where}: {what} must be a (timestamp, value) pair, got {pair!r}")
    scalars = [(what, pair[1]) for what, pair in registers] + [(f"column {name!r}", value) for name, value in values.items()]
    for what, value in scalars:
        if type(value) not in _SCALARS:
            raise refused(f"{where}: {what} holds {value!r} ({type(value).__name__}), not a stored value (None, int, float, str, bytes)")
    stamps = [(what, pair[0]) for what, pair in registers] + [("the row version", change.version)]
    if change.deleted is not None:
        stamps.append(("the tombstone time", change.deleted))
    for what, stamp in stamps:
        try:
            check_text(stamp)
        except ClockError as error:
            raise refused(f"{where}: {what}: {error}") from None
