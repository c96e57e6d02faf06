"""A key's sync state as this replica keeps it: a row of its table (read in ``state_columns``
order), the JSON a tombstone keeps of a deleted row's registers, or what a capture trigger saw.

A state is a ``RowChange``: the registers (timestamp, value) of the LWW columns, the plain
columns with the row version, and the tombstone time when the key was deleted.
"""

from __future__ import annotations

import json
from typing import Any

from ..rows.codec import RowCodec
from ..schema.objects import LWW_SUFFIX, VERSION_COLUMN
from ..sql.render import quote_identifier
from .capture import CapturedEvent
from .changeset import RowChange, from_json_value, to_json_value


def captured_state(event: CapturedEvent) -> RowChange:
    """The registers a deleted row held, as its capture trigger recorded them."""
    columns: dict[str, Any] = {}  # LWW and version roles always carry their stamp
    values: dict[str, Any] = {}
    version: Any = ""
    for name, (role, value, stamp) in event.columns.items():
        if role == "lww":
            columns[name] = (stamp, value)
        elif role == "group":
            values[name] = value
        else:
            version = stamp
    return RowChange(event.table, event.key, columns, version, values)


def local_state(
    live: RowChange | None, tombstone: tuple[str, str | None] | None, codec: RowCodec, key: tuple[Any, ...]
) -> RowChange | None:
    """A key's local state: the visible row or the dead row's registers, with its tombstone time."""
    if tombstone is None:
        return live
    deleted, state = tombstone
    if live is not None:
        return with_deleted(live, deleted)
    return state_from_json(codec, key, state, deleted) if state is not None else None


def state_columns(codec: RowCodec) -> list[str]:
    """A synced row's key, LWW columns, their timestamps, other columns and row version, in the order
    ``row_state`` and ``_RegisterOrder`` read them."""
    return [*codec.key, *codec.lww, *(name + LWW_SUFFIX for name in codec.lww), *codec.group, VERSION_COLUMN]


def state_select(codec: RowCodec) -> str:
    """SELECT of ``state_columns`` from the table."""
    return f"SELECT {', '.join(quote_identifier(n) for n in state_columns(codec))} FROM {codec.quoted_table}"


def row_state(codec: RowCodec, row: tuple[Any, ...], deleted: str | None) -> RowChange:
    """A row read by ``state_select`` (or in its column order) as a state; the slices have the
    codec's lengths by construction, so plain ``zip`` pairs them (in C)."""
    width, lww = len(codec.key), len(codec.lww)
    stamped = zip(row[width + lww : width + 2 * lww], row[width : width + lww])
    return RowChange(codec.name, tuple(row[:width]), dict(zip(codec.lww, stamped)), row[-1], dict(zip(codec.group, row[width + 2 * lww : -1])), deleted)


def with_deleted(state: RowChange, deleted: str | None) -> RowChange:
    return RowChange(state.table, state.key, state.columns, state.version, state.values, deleted)


def state_to_json(state: RowChange) -> str:
    return json.dumps(
        {
            "columns": {name: [stamp, to_json_value(v)] for name, (stamp, v) in sorted(state.columns.items())},
            "version": state.version,
            "values": {name: to_json_value(v) for name, v in sorted(state.values.items())},
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def state_from_json(codec: RowCodec, key: tuple[Any, ...], text: str, deleted: str) -> RowChange:
    data = json.loads(text)
    return RowChange(
        table=codec.name,
        key=key,
        columns={name: (pair[0], from_json_value(pair[1])) for name, pair in data["columns"].items()},
        version=data["version"],
        values={name: from_json_value(v) for name, v in data["values"].items()},
        deleted=deleted,
    )
