"""Merged states validated through the table's model and encoded as the rows the table stores.

The merge writes only what the model accepts: a state the model refuses or cannot store, or
whose key validation would change, is refused with ``SyncError`` naming the table and key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from pydantic import ValidationError

from ..errors import SyncError
from ..rows.codec import RowCodec
from ..schema.codecs import unstorable_reason
from ..sql.render import quote_identifier, quote_literal
from .changeset import RowChange


def stored_rows(codec: RowCodec, states: list[RowChange], what: str, *, dates_checked: bool = True) -> list[list[Any]]:
    """Each state's row validated through the model and encoded as stored (field order). A row the
    model refuses or cannot store, or whose key validation would change (another row's key, so a
    stale state would land on it), raises ``SyncError`` naming the table and key; so does a date
    column holding no ISO 8601 text (Pydantic would guess at it), unless not ``dates_checked``: a
    deleted row's state is kept as it came, its values not stored, and its sender cannot repair it."""
    try:
        data = _rows_to_validate(codec, states)
    except (ValueError, TypeError):
        for state in states:  # find the row a decoder refused, to name it
            try:
                _rows_to_validate(codec, [state])
            except (ValueError, TypeError) as error:
                raise SyncError(
                    f"a {what} of table {codec.name!r} with key {state.key!r} does not validate: {error}", table=codec.name, key=state.key,
                ) from None
        raise
    for state, values in zip(states, data, strict=True) if codec.dated and dates_checked else ():
        misread = codec.date_not_iso(values)
        if misread is not None:  # Pydantic would guess (Unix seconds...) and this replica store the guess
            date_column, value = misread
            raise SyncError(
                f"a {what} of table {codec.name!r} with key {state.key!r} holds {value!r} in its date column {date_column!r}, "
                "which is not ISO 8601 text (written outside the model on the sending replica: a number could be Unix "
                "seconds or milliseconds, or a Julian day, so it is not guessed); convert it there, where reading the row "
                "names the SQL that does",
                table=codec.name, key=state.key,
            )
    try:
        instances = codec.validate_stored(data)
    except ValidationError as error:
        row = error.errors()[0]["loc"][0]
        key = states[row].key if isinstance(row, int) else None
        found = [  # this row's errors: (column or None, message, offending input)
            (".".join(map(str, item["loc"][1:])) or None, item["msg"], item["input"])
            for item in error.errors() if item["loc"][:1] == (row,)
        ]
        (column, message, given), *more = found
        where = f" (column {column})" if column else ""
        further = "".join(f"; {'column ' + other if other else 'the row'}: {text} (got {value!r})" for other, text, value in more)
        raise SyncError(
            f"a {what} of table {codec.name!r} with key {key!r} does not validate{where}: {message} (got {given!r}){further}",
            table=codec.name, key=key,
        ) from None
    try:
        rows = codec.values_of_many(instances)
    except ValueError:
        for state, instance in zip(states, instances, strict=True):  # find the row that cannot be stored, to name it
            try:
                codec.values(instance)
            except ValueError as error:
                raise SyncError(
                    f"a {what} of table {codec.name!r} with key {state.key!r} cannot be stored: {error}", table=codec.name, key=state.key,
                ) from None
        raise
    _require_keys_kept(codec, states, rows, what)
    return rows


def require_storable(codec: RowCodec, states: list[RowChange], rows: list[list[Any]]) -> None:
    """Refuse a deleted row holding a value SQLite cannot store (a lone surrogate, an integer beyond 64
    bits): its tombstone keeps the values as JSON, which would take them, and a later write reviving
    the row would then fail on every replica that received it."""
    for state, row in zip(states, rows, strict=True):
        for name, value in zip(codec.fields, row, strict=True):
            reason = unstorable_reason(value)
            if reason is not None:
                raise SyncError(
                    f"a deleted row of table {codec.name!r} with key {state.key!r} cannot be stored (column {name}): {reason}",
                    table=codec.name, key=state.key,
                )


def canonical(codec: RowCodec, state: RowChange) -> RowChange:
    """``state`` with its values as the model stores them (a value written by SQL in another
    spelling: ``'...Z'`` for a datetime, a UUID without hyphens), so that a timestamp tie is broken
    by the value both replicas store, and the replica holding the other spelling takes this one;
    unchanged when the model refuses the row."""
    try:
        (row,) = stored_rows(codec, [state], "row")
    except SyncError:
        return state
    stored = dict(zip(codec.fields, row, strict=True))
    columns = {name: (stamp, stored[name]) for name, (stamp, _) in state.columns.items()}
    values = {name: stored[name] for name in state.values}
    return RowChange(state.table, state.key, columns, state.version, values, state.deleted)


def _require_keys_kept(codec: RowCodec, states: list[RowChange], rows: list[list[Any]], what: str) -> None:
    """Refuse a state whose key the model's validation changed (a date sent as other text, a key a
    validator lower-cases): compared at C speed over the batch, values and their types."""
    positions = codec.key_positions
    if len(positions) == 1:
        stored = list(map(itemgetter(positions[0]), rows))
        sent = [state.key[0] for state in states]
        if stored == sent and list(map(type, stored)) == list(map(type, sent)):
            return
        stored_keys = [(value,) for value in stored]
    else:
        stored_keys = list(map(tuple, map(itemgetter(*positions), rows)))
    for state, key in zip(states, stored_keys, strict=True):
        if key != state.key or tuple(map(type, key)) != tuple(map(type, state.key)):
            assignments = ", ".join(
                f"{quote_identifier(name)} = {quote_literal(new)}" for name, new in zip(codec.key, key, strict=True)
            )
            where = " AND ".join(f"{quote_identifier(name)} = {quote_literal(old)}" for name, old in zip(codec.key, state.key, strict=True))
            raise SyncError(
                f"a {what} of table {codec.name!r} with key {state.key!r} validates to the key {key!r}: the model changes "
                "it, so it would land on another row. Keys travel as they are stored: the sending replica stores this "
                "one in another spelling than the model's (written there by SQL, outside pydsqlite, or by a changed "
                "validator), and every changeset holding it is refused. Rewrite it once on that replica, where the "
                f"row is: UPDATE {codec.quoted_table} SET {assignments} WHERE {where}",
                table=codec.name, key=state.key,
            )


def _rows_to_validate(codec: RowCodec, states: list[RowChange]) -> list[dict[str, Any]]:
    """The stored values of each state's row keyed for validation (key, LWW values, the other columns)."""
    data = _row_builder(tuple(codec.key), tuple(codec.lww))(states)
    if codec.decoders or codec.aliased:
        return [codec.decode_values(row) for row in data]
    return data


@functools.lru_cache(maxsize=256)
def stamp_builder(lww: tuple[str, ...]) -> Callable[[list[list[Any]], list[RowChange], int], None]:
    """A function appending each state's LWW timestamps, row version and sequence number to its
    encoded row (in ``_write_rows``' column order), generated once per shape."""
    stamps = "".join(f"state.columns[{name!r}][0], " for name in lww)
    source = (
        "def extend(rows, states, seq):\n"
        "    for row, state in zip(rows, states):\n"
        f"        row += ({stamps}state.version, seq)\n"
        "        seq += 1\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - column names enter only as repr() string literals
    extend: Callable[[list[list[Any]], list[RowChange], int], None] = namespace["extend"]
    return extend


@functools.lru_cache(maxsize=256)
def _row_builder(key: tuple[str, ...], lww: tuple[str, ...]) -> Callable[[list[RowChange]], list[dict[str, Any]]]:
    """A function turning states into row dicts by field name, generated once per shape: one
    expression per column, so a merge of many rows pays no per-cell loop."""
    terms = [f"{name!r}: state.key[{position}]" for position, name in enumerate(key)]
    terms += [f"{name!r}: state.columns[{name!r}][1]" for name in lww]
    source = "def build(states):\n    return [{" + ", ".join([*terms, "**state.values"]) + "} for state in states]\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - column names enter only as repr() string literals
    build: Callable[[list[RowChange]], list[dict[str, Any]]] = namespace["build"]
    return build
