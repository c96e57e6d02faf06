"""What a migration's rebuild does to a synced table's deleted rows, told before it runs.

A deleted row lives on as a tombstone: its key and the registers it held (a late write
revives it with them). A rebuild converts the live rows' values and their losses are counted;
the deleted rows' keys and kept values go through the same conversion (``reshape``), so their
losses are counted too. A tombstone whose key the conversion would change is forgotten rather
than moved onto another row's key (it would delete that row on every replica receiving it), as
is one whose key converts exactly onto the key a live row's changed key becomes; when the primary
key moves to other columns no tombstone can follow it. All are destructive steps the plan names,
with how many deletes they forget.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..engines import Engine
from ..migrate.checks import lossy_condition, lossy_values
from ..migrate.diff import TableDiff
from ..migrate.introspect import has_object
from ..migrate.migration import DataCheck, MigrationPlan, ValueChange
from ..migrate.rebuild import value_changes
from ..schema.objects import VERSION_COLUMN, fold_name
from ..sql.render import quote_identifier, quote_literal
from .capture import CAPTURED
from .changeset import from_json_value, key_from_text, key_text
from .node import TOMBSTONES

_EXCHANGE_FIRST = (
    "exchange changesets with every replica before this migration: a replica that has not received a "
    "forgotten delete keeps that row, and sends it back after the migration"
)


def moves_key(item: TableDiff) -> bool:
    """Whether a rebuild gives a synced table a primary key over other columns (more, fewer, another
    column or order), not just its key columns renamed or converted: stored deletes' keys then
    name no row of the new table."""
    if item.live.column(VERSION_COLUMN) is None or item.desired.column(VERSION_COLUMN) is None:
        return False
    sources = {fold_name(new): fold_name(old) for new, old in item.column_sources}
    moved = tuple(sources.get(fold_name(name)) for name in item.desired.primary_key)
    return moved != tuple(fold_name(name) for name in item.live.primary_key)


def tables_forgetting_deletes(plan: MigrationPlan) -> list[str]:
    """The live names of the synced tables whose primary key the plan moves (their tombstones go)."""
    return [operation.rebuild.live.name for operation in plan.operations if operation.rebuild is not None and moves_key(operation.rebuild)]


def deleted_rows_checks(engine: Engine, item: TableDiff, changes: Iterable[ValueChange]) -> tuple[DataCheck, ...]:
    """The checks a rebuild of a synced table adds for its deleted rows (none when it has none):
    deletes forgotten because the key moves or a key conversion would change it, kept values a
    conversion would change. Each is answered here and carried as a count (``count_sql``)."""
    if item.live.column(VERSION_COLUMN) is None or item.desired.column(VERSION_COLUMN) is None:
        return ()
    deleted = _deleted_rows(engine, item.live.name)
    if not deleted:
        return ()
    table = item.desired.name
    if moves_key(item):
        before, after = ", ".join(item.live.primary_key), ", ".join(item.desired.primary_key)
        problem = (
            f"deleted rows' deletes would be forgotten: the primary key moves from ({before}) to ({after}), which "
            f"their stored keys cannot follow; {_EXCHANGE_FIRST}"
        )
        return (_counted(table, None, problem, len(deleted), None),)
    live_key = [fold_name(name) for name in item.live.primary_key]
    key_position = {fold_name(new): live_key.index(fold_name(old)) for new, old in item.column_sources if fold_name(old) in live_key}
    sources = {fold_name(new): fold_name(old) for new, old in item.column_sources}
    checks = []
    for change in changes:
        folded = fold_name(change.column)
        if change.cast is None or folded not in sources:
            continue
        if folded in key_position:
            keys = [key[key_position[folded]] for key, _ in deleted]
            lossy = [n for n, flag in enumerate(lossy_values(engine, keys, change.cast)) if flag]
            if lossy:
                sample = deleted[lossy[0]][0]
                problem = (
                    f"deleted rows' keys would change when converted to {change.cast} (e.g. the key {sample!r}), so their "
                    f"deletes would be forgotten rather than name other rows; {_EXCHANGE_FIRST}"
                )
                checks.append(_counted(table, change.column, problem, len(lossy), None))
            continue
        kept = [(n, state[sources[folded]]) for n, (_, state) in enumerate(deleted) if sources[folded] in state]
        lossy = [n for (n, _), flag in zip(kept, lossy_values(engine, [value for _, value in kept], change.cast), strict=True) if flag]
        if lossy:
            value = dict(kept)[lossy[0]]
            problem = f"values deleted rows keep (a later write revives them) would change when converted to {change.cast}"
            checks.append(_counted(table, change.column, problem, len(lossy), value))
    landing = _landing_on_converted_rows(engine, item, changes, [key for key, _ in deleted])
    if landing:
        sample = deleted[landing[0]][0]
        problem = (
            f"deletes would be forgotten: their keys convert exactly, but onto the key a live row's changed key converts "
            f"to (e.g. the deleted key {sample!r}), so they would delete that row; {_EXCHANGE_FIRST}"
        )
        checks.append(_counted(table, None, problem, len(landing), None))
    checks.extend(_kept_nulls(item, deleted, changes))
    return tuple(checks)


def deletes_landing_on_converted_rows(engine: Engine, plan: MigrationPlan) -> dict[str, set[str]]:
    """Read before the plan's rebuilds run: by the folded new name of each synced table, the stored keys
    (text) of deletes whose key converts exactly onto the key a live row's lossily converted key becomes
    (the deleted '1' and the live '01' both turning 1): ``reshape`` forgets them, as the plan said."""
    found: dict[str, set[str]] = {}
    if not has_object(engine, TOMBSTONES):
        return found
    for operation in plan.operations:
        item = operation.rebuild
        if item is None or item.live.column(VERSION_COLUMN) is None or item.desired.column(VERSION_COLUMN) is None or moves_key(item):
            continue
        texts = [text for (text,) in engine.execute(f"SELECT key FROM {TOMBSTONES} WHERE table_name = ? COLLATE NOCASE", (item.live.name,))]
        landing = _landing_on_converted_rows(engine, item, value_changes(item), [key_from_text(text) for text in texts])
        if landing:
            found.setdefault(fold_name(item.desired.name), set()).update(texts[n] for n in landing)
    return found


def _landing_on_converted_rows(engine: Engine, item: TableDiff, changes: Iterable[ValueChange], keys: list[tuple[Any, ...]]) -> list[int]:
    """Positions in ``keys`` (deleted rows' keys, in the live key's column order) of those a key
    conversion keeps exactly but lands on the converted key of a live row whose own key it changes."""
    per_column = _key_conversions(item, changes)
    if not any(per_column) or not keys:
        return []
    terms, lossy = [], []
    for name, change in zip(item.live.primary_key, per_column, strict=True):
        column = quote_identifier(name)
        terms.append(change.applied_to(column) if change is not None else column)
        live_column = item.live.column(name)
        if change is not None and change.cast is not None and live_column is not None:
            lossy.append(f"({lossy_condition(column, change.cast, live_column.affinity)})")
    taken = {key_text(tuple(row)) for row in engine.execute(f"SELECT {', '.join(terms)} FROM {quote_identifier(item.live.name)} WHERE {' OR '.join(lossy)}")}
    if not taken:
        return []
    forgotten = lossy_key_conversions(engine, keys, per_column)
    exact = [n for n in range(len(keys)) if n not in forgotten]
    converted = {n: tuple(value if change is None else engine.scalar(f"SELECT {change.applied_to('?')}", (value,))
                          for value, change in zip(keys[n], per_column, strict=True)) for n in exact}
    return [n for n in exact if key_text(converted[n]) in taken]


def _key_conversions(item: TableDiff, changes: Iterable[ValueChange]) -> list[ValueChange | None]:
    """The conversion of each live key column (None: copied as it is)."""
    by_source = {fold_name(old): fold_name(new) for new, old in item.column_sources}
    converting = {fold_name(change.column): change for change in changes if change.cast is not None}
    return [converting.get(by_source.get(fold_name(name), "")) for name in item.live.primary_key]


def _kept_nulls(item: TableDiff, deleted: list[tuple[tuple[Any, ...], dict[str, Any]]], changes: Iterable[ValueChange]) -> list[DataCheck]:
    """Deleted rows keeping NULL in a column that becomes NOT NULL with no default to take instead:
    a write reviving such a row would be refused on every replica (a live row's NULL is refused alike)."""
    filled = {fold_name(change.column) for change in changes if change.null_default is not None}
    checks = []
    for new, old in item.column_sources:
        column, before = item.desired.column(new), item.live.column(old)
        if column is None or before is None or not column.not_null or before.not_null or fold_name(new) in filled:
            continue
        count = sum(1 for _, kept in deleted if fold_name(old) in kept and kept[fold_name(old)] is None)
        if count:
            problem = "values deleted rows keep are NULL but the column becomes NOT NULL with no default (declare one: their NULLs then take it)"
            checks.append(replace(_counted(item.desired.name, column.name, problem, count, None), blocking=True))
    return checks


def lossy_key_conversions(engine: Engine, keys: list[tuple[Any, ...]], changes: list[ValueChange | None]) -> set[int]:
    """Positions in ``keys`` of the keys that ``changes`` (one per key column, None: unchanged) do not
    convert exactly: those deletes are forgotten, not moved onto another key."""
    lossy: set[int] = set()
    for position, change in enumerate(changes):
        if change is not None and change.cast is not None:
            flags = lossy_values(engine, [key[position] for key in keys], change.cast)
            lossy.update(n for n, flag in enumerate(flags) if flag)
    return lossy


def _deleted_rows(engine: Engine, table: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Each stored delete of ``table`` (tombstones, and deletes captured but not yet settled, which
    the migration settles first): its key and the values it keeps by folded column name."""
    rows: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    if has_object(engine, TOMBSTONES):
        for key, state in engine.execute(f"SELECT key, state FROM {TOMBSTONES} WHERE table_name = ? COLLATE NOCASE", (table,)):
            kept: dict[str, Any] = {}
            if state is not None:
                data = json.loads(state)
                kept.update((fold_name(name), from_json_value(value)) for name, (_, value) in data["columns"].items())
                kept.update((fold_name(name), from_json_value(value)) for name, value in data["values"].items())
            rows.append((key_from_text(key), kept))
    if has_object(engine, CAPTURED):
        events: dict[int, tuple[list[Any], dict[str, Any]]] = {}
        captured = engine.execute(
            f"SELECT event, role, column_name, value FROM {CAPTURED} WHERE kind = 'delete' AND table_name = ? COLLATE NOCASE ORDER BY rowid",
            (table,),
        )
        for event, role, column, value in captured:
            key, kept = events.setdefault(event, ([], {}))
            if role == "key":
                key.append(value)
            elif role != "version":
                kept[fold_name(column)] = value
        rows.extend((tuple(key), kept) for key, kept in events.values())
    return rows


def _counted(table: str, column: str | None, problem: str, count: int, sample: Any) -> DataCheck:
    """A destructive finding already counted here: the check then only states the count and sample."""
    return DataCheck(
        table=table,
        column=column,
        problem=problem,
        blocking=False,
        count_sql=f"SELECT {count}",
        sample_sql=None if sample is None else f"SELECT {quote_literal(sample)}",
    )
