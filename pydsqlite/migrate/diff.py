"""Pipeline stage 3: compare the desired and the live ``Schema`` into typed changes.

A pure function: no database access. Tables are matched by name, then by
``renamed_from``; columns likewise. Only tables and indexes that the desired schema
declares, or that pydsqlite manages, are ever changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..schema.objects import (
    LWW_SUFFIX,
    Check,
    Column,
    ForeignKey,
    Index,
    Schema,
    Table,
    Trigger,
    UniqueConstraint,
    View,
    VirtualTable,
    conflict_action,
    fold_name,
)
from ..sql.ddl import normalize_expression
from ..sql.render import double_quotes_as_names, quote_identifier, renamed_spelling, render_create_index, render_create_table
from .metadata import ManagedObjects

_SqlObject = TypeVar("_SqlObject", View, Trigger, VirtualTable)
"""An object the schema keeps as its SQL text."""

@dataclass(frozen=True)
class CreateTable:
    table: Table


@dataclass(frozen=True)
class DropTable:
    table: Table


@dataclass(frozen=True)
class RenameTable:
    old: str
    new: str


@dataclass(frozen=True)
class AddColumn:
    column: Column


@dataclass(frozen=True)
class DropColumn:
    """``owned``: a hidden sync column pydsqlite created itself (dropping it loses no user data)."""

    column: Column
    owned: bool = False


@dataclass(frozen=True)
class RenameColumn:
    old: str
    new: str


@dataclass(frozen=True)
class AlterColumn:
    """The column keeps its name but changes ``aspects`` (type, nullability, default, check, collate, generated)."""

    old: Column
    new: Column
    aspects: tuple[str, ...]


@dataclass(frozen=True)
class SetLWW:
    column: str
    """The column as the live table names it (its clock is ``column__hlc``)."""
    enabled: bool
    renamed_to: str | None = None
    """The column's new name when the migration also renames it (said in the plan's description)."""


@dataclass(frozen=True)
class ChangePrimaryKey:
    old: tuple[str, ...]
    new: tuple[str, ...]


@dataclass(frozen=True)
class ChangeForeignKeys:
    """The table's foreign keys differ: ``old`` are the live ones as they read after the planned
    table and column renames (which SQLite applies to them), ``new`` the desired ones."""

    old: tuple[ForeignKey, ...]
    new: tuple[ForeignKey, ...]


@dataclass(frozen=True)
class ChangeTableConstraints:
    """Table-level CHECKs or inline UNIQUE constraints differ."""

    aspects: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    """The live constraints the new shape does not have, as SQL (``CHECK (…)``, ``UNIQUE (…)``)."""
    added: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeTableOptions:
    """STRICT, WITHOUT ROWID or AUTOINCREMENT differ."""

    aspects: tuple[str, ...]


@dataclass(frozen=True)
class CreateIndex:
    index: Index


@dataclass(frozen=True)
class DropIndex:
    index: Index


Change = (
    AddColumn | DropColumn | RenameColumn | AlterColumn | SetLWW | ChangePrimaryKey | ChangeForeignKeys
    | ChangeTableConstraints | ChangeTableOptions | CreateIndex | DropIndex
)


@dataclass(frozen=True)
class CreateView:
    view: View


@dataclass(frozen=True)
class DropView:
    view: View


@dataclass(frozen=True)
class CreateTrigger:
    trigger: Trigger


@dataclass(frozen=True)
class DropTrigger:
    trigger: Trigger


@dataclass(frozen=True)
class TableDiff:
    """Everything that differs for one desired table matched to one live table.

    ``column_sources`` maps each desired column that already exists to its live name;
    ``existing_links`` are the live foreign keys' links as they read after the planned table and
    column renames (a renamed key is not a new key).
    """

    live: Table
    desired: Table
    rename: RenameTable | None
    changes: tuple[Change, ...]
    column_sources: tuple[tuple[str, str], ...]
    existing_links: frozenset[tuple[tuple[str, ...], str, tuple[str, ...]]] = frozenset()
    problems: tuple[str, ...] = ()
    """Why the table's changes cannot be applied as declared (known without reading data)."""
    fresh_columns: frozenset[str] = frozenset()
    """Folded names of live columns the expand phase of this migration added (see ``ManagedObjects``)."""

    @property
    def is_empty(self) -> bool:
        return self.rename is None and not self.changes and not self.problems


@dataclass(frozen=True)
class SchemaDiff:
    """All differences: tables to create, to drop, per matched table its changes, and the
    views and triggers to drop (gone or changed) and to create (new or changed)."""

    created: tuple[Table, ...]
    dropped: tuple[Table, ...]
    altered: tuple[TableDiff, ...]
    dropped_objects: tuple[DropView | DropTrigger, ...] = ()
    created_objects: tuple[CreateView | CreateTrigger, ...] = ()
    dropped_virtual: tuple[VirtualTable, ...] = ()
    created_virtual: tuple[VirtualTable, ...] = ()
    index_name_problems: tuple[tuple[str, str], ...] = ()
    """(table, problem): a model's index whose name a hand-made index of another table holds."""
    index_names_moving: tuple[tuple[Index, str, str], ...] = ()
    """(live index, its table, the plan's description): names the plan frees before anything else."""

    @property
    def is_empty(self) -> bool:
        return (
            not self.created
            and not self.dropped
            and not self.dropped_objects
            and not self.created_objects
            and not self.dropped_virtual
            and not self.created_virtual
            and all(item.is_empty for item in self.altered)
        )


def diff_schemas(desired: Schema, live: Schema, managed: ManagedObjects) -> SchemaDiff:
    """What must change for ``live`` to match ``desired``; unmanaged live tables are ignored."""
    matches: list[tuple[Table, Table]] = []
    claimed: set[str] = set()
    renamed: dict[str, Table] = {}
    for table in desired.tables:  # a rename hint applies while its new name is not a live table
        if live.table(table.name) is None:
            for old in table.renamed_from:
                candidate = live.table(old)
                if candidate is not None and fold_name(candidate.name) not in claimed:
                    renamed[fold_name(table.name)] = candidate
                    claimed.add(fold_name(candidate.name))
                    break
    created = []
    for table in desired.tables:
        live_table = renamed.get(fold_name(table.name))
        if live_table is None:
            same = live.table(table.name)  # a renamed table's old name may be wanted again, for a new table
            live_table = same if same is not None and fold_name(same.name) not in claimed else None
        if live_table is None:
            created.append(table)
        else:
            claimed.add(fold_name(live_table.name))
            matches.append((table, live_table))
    table_renames = {
        fold_name(live_table.name): table.name
        for table, live_table in matches
        if fold_name(live_table.name) != fold_name(table.name)
    }
    column_renames = {}
    rename_problems = {}
    for table, live_table in matches:
        key = fold_name(table.name)
        column_renames[key], rename_problems[key] = _column_renames(table, live_table, managed.renames_done(live_table.name))
    dropped = tuple(
        table
        for table in live.tables
        if fold_name(table.name) not in claimed and managed.manages_table(table.name)
    )
    renamed_under = {  # live tables whose name or columns the plan renames: SQLite rewrites the REFERENCES naming them
        fold_name(live_table.name) for table, live_table in matches
        if fold_name(live_table.name) in table_renames or column_renames[fold_name(table.name)]
    }
    altered = tuple(
        _with_problems(_diff_table(table, live_table, managed, table_renames, column_renames), rename_problems[fold_name(table.name)])
        for table, live_table in matches
        if column_renames[fold_name(table.name)] or rename_problems[fold_name(table.name)] or not created_as(table, live_table)
        or any(fold_name(key.ref_table) in renamed_under for key in live_table.foreign_keys)
    )
    dropped_views, created_views = _diff_sql_objects(desired.views, live.views, managed.manages_view)
    dropped_triggers, created_triggers = _diff_sql_objects(desired.triggers, live.triggers, managed.manages_trigger)
    dropped_virtual, created_virtual = _diff_sql_objects(desired.virtual_tables, live.virtual_tables, managed.manages_table)
    return SchemaDiff(
        created=tuple(created),
        dropped=dropped,
        altered=altered,
        dropped_objects=(*(DropTrigger(t) for t in dropped_triggers), *(DropView(v) for v in dropped_views)),
        created_objects=(*(CreateView(v) for v in created_views), *(CreateTrigger(t) for t in created_triggers)),
        dropped_virtual=tuple(dropped_virtual),
        created_virtual=tuple(created_virtual),
        index_name_problems=_index_names_held_elsewhere(desired, live, managed),
        index_names_moving=_index_names_moving(created, dropped, altered),
    )


def _index_names_moving(created: list[Table], dropped: tuple[Table, ...], altered: tuple[TableDiff, ...]) -> tuple[tuple[Index, str, str], ...]:
    """Index names a model's index takes from another table that gives them up in this migration (the
    table dropped, or its index removed or renamed): (the live index, its table, how the plan says it).
    Index names are one namespace in SQLite, so the plan frees them before anything else."""
    new_tables = {fold_name(table.name) for table in created}
    wanted = {
        fold_name(index.name): table.name
        for table in (*created, *(item.desired for item in altered))
        for index in table.indexes
    }
    moving: dict[str, tuple[Index, str, str]] = {}
    given_up = [(table.name, table.name, index) for table in dropped for index in table.indexes]
    given_up += [
        (item.live.name, item.desired.name, change.index)
        for item in altered for change in item.changes if isinstance(change, DropIndex)
    ]
    for holder, holder_becomes, index in given_up:
        taker = wanted.get(fold_name(index.name))
        if taker is None or fold_name(taker) == fold_name(holder_becomes):
            continue
        renamed = f"renamed to {holder_becomes}; " if fold_name(holder_becomes) != fold_name(holder) else ""
        to = f"the new table {taker}" if fold_name(taker) in new_tables else taker
        moving[fold_name(index.name)] = (index, holder, f"drop index {index.name} on {holder} ({renamed}its name moves to {to})")
    return tuple(moving.values())


def _index_names_held_elsewhere(desired: Schema, live: Schema, managed: ManagedObjects) -> tuple[tuple[str, str], ...]:
    """A model's index whose name a hand-made index of another table holds: index names are one
    namespace in SQLite, so creating it would fail; named as a problem like the same-table case."""
    holders = {
        fold_name(index.name): (index, table.name)
        for table in live.tables for index in table.indexes if not managed.manages_index(index.name)
    }
    problems = []
    for table in desired.tables:
        for index in table.indexes:
            held = holders.get(fold_name(index.name))
            if held is not None and fold_name(held[1]) != fold_name(table.name) and fold_name(held[1]) not in {
                fold_name(old) for old in table.renamed_from
            }:
                problems.append((table.name, (
                    f"index {held[0].name} on {held[1]} was not made by pydsqlite and holds the name of the model's index on "
                    f"{table.name} ({', '.join(index.columns)}); index names are shared by all tables: drop or rename it, or "
                    "give the model's index another name (name=... on Unique() or Index())"
                )))
    return tuple(problems)


@dataclass(frozen=True)
class _Rendering:
    """A desired table's CREATE TABLE text and its sorted CREATE INDEX texts, with the spellings a
    rebuild or a rename leaves: SQLite rewrites the table's name in double quotes (``CREATE TABLE
    "t"``, ``ON "t"``) when the new table is renamed into place, and a renamed column's name
    wherever the table's and its indexes' texts name it (``"title"``)."""

    table: Table
    table_texts: frozenset[str]
    named_alike: str
    """The CREATE TABLE text with every name in grave accents (see ``_names_alike``)."""
    index_texts: list[str]
    index_spellings: dict[str, str]
    """Every accepted CREATE INDEX text (and its ``_names_alike`` form) → the text as rendered."""


_renderings: dict[int, _Rendering] = {}
"""Desired tables (kept alive here, so their ids stay theirs) and their renderings: compiled
schemas are cached, so each table is rendered once per process."""
_RENDERINGS_KEPT = 20_000


def created_as(desired: Table, live: Table) -> bool:
    """Whether ``live`` is exactly what creating ``desired`` gives (or a rebuild or rename into its
    name): its CREATE TABLE and CREATE INDEX texts are pydsqlite's rendering of ``desired``, so the
    table needs no diff (the common case of a plan over tables that did not change)."""
    if live.sql is None:
        return False
    rendered = _renderings.get(id(desired))
    if rendered is None or rendered.table is not desired:
        if len(_renderings) >= _RENDERINGS_KEPT:
            _renderings.clear()
        rendered = _renderings[id(desired)] = _render(desired)
    if len(live.indexes) != len(rendered.index_texts):
        return False
    if live.sql not in rendered.table_texts and _names_alike(live.sql) != rendered.named_alike:
        return False
    spellings = rendered.index_spellings
    return sorted(spellings.get(index.sql or "") or spellings.get(_names_alike(index.sql or ""), "") for index in live.indexes) == rendered.index_texts


def _names_alike(sql: str) -> str:
    """``sql`` with its double-quoted names in grave accents. Two texts of one table alike in this form
    define the same thing: a name either spelling gives resolves alike, as the rest of the text is the same."""
    return double_quotes_as_names(sql) if '"' in sql else sql


def _render(desired: Table) -> _Rendering:
    quoted, renamed = quote_identifier(desired.name), renamed_spelling(desired.name)
    table_text = render_create_table(desired)
    head = f"CREATE TABLE {quoted} ("
    table_texts = {table_text, f"CREATE TABLE {renamed} (" + table_text.removeprefix(head)} if table_text.startswith(head) else {table_text}
    index_texts, spellings = [], {}
    for index in desired.indexes:
        text = render_create_index(index)
        index_texts.append(text)
        spellings[_names_alike(text)] = text
        spellings[text] = text
        if index.sql is None:  # rendered by pydsqlite, on this table
            spellings[text.replace(f" ON {quoted} (", f" ON {renamed} (", 1)] = text
    return _Rendering(desired, frozenset(table_texts), _names_alike(table_text), sorted(index_texts), spellings)


def _diff_sql_objects(
    desired: tuple[_SqlObject, ...], live: tuple[_SqlObject, ...], manages: Callable[[str], bool]
) -> tuple[list[_SqlObject], list[_SqlObject]]:
    """Views, triggers or virtual tables, kept as SQL: (live ones to drop, desired ones to create).

    A changed definition is dropped and created again; a live one the desired schema
    lacks is dropped only when managed (objects made by hand survive).
    """
    wanted = {fold_name(item.name): item for item in desired}
    present = {fold_name(item.name): item for item in live}
    to_drop: list[_SqlObject] = []
    for key, item in present.items():
        target = wanted.get(key)
        if target is None:
            if manages(item.name):
                to_drop.append(item)
        elif normalize_expression(target.sql) != normalize_expression(item.sql):
            to_drop.append(item)
    to_create = [
        item for key, item in wanted.items()
        if key not in present or normalize_expression(item.sql) != normalize_expression(present[key].sql)
    ]
    return to_drop, to_create


def _column_renames(desired: Table, live: Table, done: frozenset[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Folded live column name → desired name, for columns matched through ``renamed_from``, and
    the hints that cannot apply.

    A hint applies while its new name is not a live column (the old name may be wanted again,
    for a new column); when the new name is live too, only as part of a swap or longer cycle of
    renames that has not been applied yet (``done``: folded (old, new) pairs already applied).
    A hint onto a live column that stays, from a column the models no longer have, cannot apply
    without dropping one of the two: that is refused rather than guessed."""
    blocked: list[str] = []
    proposed: dict[str, str] = {}  # folded new name -> live source column
    used: set[str] = set()
    for column in desired.columns:
        for old in column.renamed_from:
            renamed = live.column(old)
            if renamed is not None and fold_name(renamed.name) not in used and fold_name(old) != fold_name(column.name):
                proposed[fold_name(column.name)] = renamed.name
                used.add(fold_name(renamed.name))
                break
    settled = False
    while not settled:
        settled = True
        moving = {fold_name(source) for source in proposed.values()}
        for new, source in list(proposed.items()):
            if live.column(new) is not None and (new not in moving or (fold_name(source), new) in done):
                del proposed[new]
                settled = False
                if new not in moving and (fold_name(source), new) not in done and desired.column(source) is None:
                    target = live.column(new).name  # type: ignore[union-attr]
                    blocked.append(
                        f"{desired.name}.{source} cannot be renamed to {target}: {target} exists and stays; drop or rename "
                        f"{target} in one release and rename {source} in the next"
                    )
    renames = {fold_name(source): desired.column(new).name for new, source in proposed.items()}  # type: ignore[union-attr]
    for live_name, new_name in list(renames.items()):
        live_column = live.column(live_name)
        desired_column = desired.column(new_name)
        if live_column is not None and desired_column is not None and live_column.lww and desired_column.lww:
            renames[fold_name(live_column.name + LWW_SUFFIX)] = desired_column.name + LWW_SUFFIX
    return renames, blocked


def _rename_steps(live: Table, renames: dict[str, str]) -> list[RenameColumn]:
    """The renames as RENAME COLUMN steps that can run in order: a rename waits until its new name
    is free, and a cycle (a swap) goes through a temporary name."""
    current = {fold_name(column.name) for column in live.columns}
    pending = [(live.column(old).name, new) for old, new in renames.items()]  # type: ignore[union-attr]
    steps: list[RenameColumn] = []
    spare = 0
    while pending:
        ready = next((pair for pair in pending if fold_name(pair[1]) not in current), None)
        if ready is None:  # every new name is still taken: move one column out of the way
            old, new = pending[0]
            while f"_pydsqlite_swap_{spare}" in current:
                spare += 1
            temporary = f"_pydsqlite_swap_{spare}"
            steps.append(RenameColumn(old, temporary))
            current.discard(fold_name(old))
            current.add(temporary)
            pending[0] = (temporary, new)
            continue
        pending.remove(ready)
        steps.append(RenameColumn(*ready))
        current.discard(fold_name(ready[0]))
        current.add(fold_name(ready[1]))
    return steps


def _diff_table(
    desired: Table,
    live: Table,
    managed: ManagedObjects,
    table_renames: dict[str, str],
    column_renames: dict[str, dict[str, str]],
) -> TableDiff:
    renames = column_renames[fold_name(desired.name)]
    source_of = {fold_name(new): old for old, new in renames.items()}
    live_names, desired_names = _column_names(live), _column_names(desired)
    changes: list[Change] = list(_rename_steps(live, renames))
    sources: list[tuple[str, str]] = []
    matched_live: set[str] = set()
    for column in desired.columns:
        old_name = source_of.get(fold_name(column.name))
        if old_name is not None:
            live_column = live.column(old_name)
        else:
            live_column = live.column(column.name)
            if live_column is not None and fold_name(live_column.name) in renames:
                live_column = None  # that live column moves to another name: this one is new
            elif live_column is not None and column.is_lww_companion and fold_name(column.name[: -len(LWW_SUFFIX)]) in renames:
                live_column = None  # the clock of a column that moves to another name (a swap): this column's is new
            elif live_column is not None and column.hidden and not managed.may_adopt_column(
                live.name, live_column.name,
                made_as_ours=live_column.type == column.type and _normalize_default(live_column.default) == _normalize_default(column.default),
            ):
                live_column = None  # the user's column named like a sync column: dropped, and the sync column made anew
        if live_column is None:
            if not column.is_lww_companion:
                changes.append(AddColumn(column))
            else:
                changes.append(SetLWW(column.name[: -len(LWW_SUFFIX)], True))
            continue
        matched_live.add(fold_name(live_column.name))
        sources.append((column.name, live_column.name))
        aspects = _column_aspects(live_column, column, renames, live_names, desired_names)
        if aspects:
            changes.append(AlterColumn(live_column, column, aspects))
    for live_column in live.columns:
        if fold_name(live_column.name) in matched_live:
            continue
        base = live_column.name[: -len(LWW_SUFFIX)]
        owned = managed.owns_column(live.name, live_column.name)
        if owned and live_column.is_lww_companion and live.column(base) is not None and desired.column(renames.get(fold_name(base), base)) is not None:
            changes.append(SetLWW(base, False, renames.get(fold_name(base))))
        else:
            changes.append(DropColumn(live_column, owned))
    live_key = tuple(renames.get(fold_name(name), name) for name in live.primary_key)
    if _folded(live_key) != _folded(desired.primary_key):
        changes.append(ChangePrimaryKey(live.primary_key, desired.primary_key))
    live_keys = tuple(_translate_foreign_key(key, renames, table_renames, column_renames) for key in live.foreign_keys)
    if _foreign_key_set(live_keys) != _foreign_key_set(desired.foreign_keys):
        changes.append(ChangeForeignKeys(live_keys, desired.foreign_keys))
    constraint_aspects = []
    if _check_signature(live.checks, renames, live_names) != _check_signature(desired.checks, None, desired_names):
        constraint_aspects.append("check")
    live_uniques = {_unique_signature(live, unique, renames) for unique in live.uniques}
    if live_uniques != {_unique_signature(desired, unique, {}) for unique in desired.uniques}:
        constraint_aspects.append("unique")
    if conflict_action(live.primary_key_conflict) != conflict_action(desired.primary_key_conflict):
        constraint_aspects.append("primary key ON CONFLICT")
    if constraint_aspects:
        live_checks = {signature: check for check in live.checks for signature in _check_signature((check,), renames, live_names)}
        desired_checks = {signature: check for check in desired.checks for signature in _check_signature((check,), None, desired_names)}
        live_unique = {_unique_signature(live, unique, renames): unique for unique in live.uniques}
        desired_unique = {_unique_signature(desired, unique, {}): unique for unique in desired.uniques}
        changes.append(
            ChangeTableConstraints(
                tuple(constraint_aspects),
                dropped=(
                    *(_check_sql(check) for signature, check in live_checks.items() if signature not in desired_checks),
                    *(_unique_sql(unique) for signature, unique in live_unique.items() if signature not in desired_unique),
                ),
                added=(
                    *(_check_sql(check) for signature, check in desired_checks.items() if signature not in live_checks),
                    *(_unique_sql(unique) for signature, unique in desired_unique.items() if signature not in live_unique),
                ),
            )
        )
    option_aspects = tuple(
        name for name in ("strict", "without_rowid", "autoincrement") if getattr(live, name) != getattr(desired, name)
    )
    if live.integer_key_not_rowid != desired.integer_key_not_rowid:
        option_aspects += ("INTEGER PRIMARY KEY DESC becomes the rowid",)
    if option_aspects:
        changes.append(ChangeTableOptions(option_aspects))
    index_changes, clashes = _diff_indexes(desired, live, managed, renames)
    changes.extend(index_changes)
    rename = RenameTable(live.name, desired.name) if fold_name(live.name) != fold_name(desired.name) else None
    return TableDiff(
        live=live, desired=desired, rename=rename, changes=tuple(changes), column_sources=tuple(sources),
        existing_links=frozenset(key.link for key in live_keys), problems=tuple(clashes),
        fresh_columns=frozenset(
            fold_name(column.name) for column in live.columns if (fold_name(desired.name), fold_name(column.name)) in managed.added_before_steps
        ),
    )


def _with_problems(diff: TableDiff, problems: list[str] | tuple[str, ...]) -> TableDiff:
    return replace(diff, problems=(*diff.problems, *problems)) if problems else diff


def _column_aspects(
    live: Column, desired: Column, renames: dict[str, str], live_names: frozenset[str], desired_names: frozenset[str]
) -> tuple[str, ...]:
    """What differs between a live column and the desired one; ``live_names`` and ``desired_names``:
    the folded column names of each side's table, which its expressions may name."""
    aspects = []
    if live.type != desired.type:
        aspects.append("type")
    if live.not_null != desired.not_null:
        aspects.append("nullability")
    if desired.stable_default and _normalize_default(live.default) != _normalize_default(desired.default):
        aspects.append("default")
    if _check_signature(live.checks, renames, live_names) != _check_signature(desired.checks, None, desired_names):
        aspects.append("check")
    if live.not_null and desired.not_null and conflict_action(live.on_conflict) != conflict_action(desired.on_conflict):
        aspects.append("NOT NULL ON CONFLICT")
    if (live.collate or "BINARY").upper() != (desired.collate or "BINARY").upper():
        aspects.append("collate")
    live_generated = normalize_expression(live.generated, renames, live_names) if live.generated is not None else None
    desired_generated = normalize_expression(desired.generated, None, desired_names) if desired.generated is not None else None
    if live_generated != desired_generated or (live.generated is not None and live.generated_stored != desired.generated_stored):
        aspects.append("generated")
    return tuple(aspects)


def _check_signature(checks: tuple[Check, ...], renames: dict[str, str] | None, columns: frozenset[str]) -> list[tuple[str, str]]:
    """CHECKs compared by expression (whatever its spacing, quoting and comments; ``columns``: the
    table's, see ``normalize_expression``) and by name, which SQLite reports when a row violates one."""
    return sorted((normalize_expression(check.sql, renames, columns), check.name or "") for check in checks)


def _column_names(table: Table) -> frozenset[str]:
    """What a double-quoted name in the table's expressions can name: its columns, and the rowid
    (a WITHOUT ROWID table has none: there ``"rowid"`` is text)."""
    names = frozenset(fold_name(column.name) for column in table.columns)
    return names if table.without_rowid else names | _ROWID_ALIASES


_ROWID_ALIASES = frozenset({"rowid", "oid", "_rowid_"})


def _check_sql(check: Check) -> str:
    """A CHECK as a plan lists it: ``CONSTRAINT name CHECK (expression)``, on one line."""
    return f"{f'CONSTRAINT {check.name} ' if check.name else ''}CHECK ({' '.join(check.sql.split())})"


def _unique_sql(unique: UniqueConstraint) -> str:
    """A UNIQUE constraint as a plan lists it, with the collation (other than BINARY) and order of each column."""
    action = conflict_action(unique.on_conflict)
    terms = []
    for position, column in enumerate(unique.columns):
        collation = unique.collations[position] if position < len(unique.collations) else ""
        descending = position < len(unique.descending) and unique.descending[position]
        terms.append(column + (f" COLLATE {collation}" if collation and collation != "BINARY" else "") + (" DESC" if descending else ""))
    return f"{f'CONSTRAINT {unique.name} ' if unique.name else ''}UNIQUE ({', '.join(terms)})" + (
        f" ON CONFLICT {action}" if action != "ABORT" else ""
    )


def _constraint_changes(dropped: Iterable[str], added: Iterable[str]) -> str:
    """``drops X, Y; adds Z`` (either part left out when empty)."""
    parts = [f"{verb} {', '.join(items)}" for verb, items in (("drops", list(dropped)), ("adds", list(added))) if items]
    return "; ".join(parts)


def _unique_signature(table: Table, unique: UniqueConstraint, renames: dict[str, str]) -> tuple[Any, ...]:
    """What a UNIQUE constraint does: its columns (after renames), the collation each compares
    with, their order, and its ON CONFLICT action."""
    collations = []
    for position, name in enumerate(unique.columns):
        column = table.column(name)
        own = ((column.collate if column else None) or "BINARY").upper()
        collations.append(unique.collations[position] if position < len(unique.collations) else own)
    return (
        tuple(fold_name(renames.get(fold_name(name), name)) for name in unique.columns),
        tuple(collations),
        tuple(unique.descending) if any(unique.descending) else (),
        conflict_action(unique.on_conflict),
    )


def _normalize_default(default: str | None) -> str | None:
    if default is None:
        return None
    text = default.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    if text.upper() == "NULL":
        return None
    return normalize_expression(text, columns=frozenset())  # a default names no column: "x" is a string


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            return False
    return depth == 0


def _folded(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(fold_name(name) for name in names)


def _translate_foreign_key(
    key: ForeignKey, renames: dict[str, str], table_renames: dict[str, str], column_renames: dict[str, dict[str, str]]
) -> ForeignKey:
    """The live foreign key as it reads after the planned table and column renames."""
    parent = table_renames.get(fold_name(key.ref_table), key.ref_table)
    parent_renames = column_renames.get(fold_name(parent), {})
    return replace(
        key,
        columns=tuple(renames.get(fold_name(name), name) for name in key.columns),
        ref_table=parent,
        ref_columns=tuple(parent_renames.get(fold_name(name), name) for name in key.ref_columns),
    )


def _foreign_key_set(keys: tuple[ForeignKey, ...]) -> set[tuple[Any, ...]]:
    return {(*key.link, key.on_delete, key.on_update, key.deferred) for key in keys}


def _diff_indexes(
    desired: Table, live: Table, managed: ManagedObjects, renames: dict[str, str]
) -> tuple[list[Change], list[str]]:
    """Index changes: managed live indexes are dropped when gone or different; hand-made ones are left
    alone. A hand-made index holding the name of a model's index but indexing something else is a
    problem (dropping it would silently lose what it enforces), not a change."""
    changes: list[Change] = []
    problems: list[str] = []
    desired_by_name = {fold_name(index.name): index for index in desired.indexes}
    kept: set[str] = set()
    for index in live.indexes:
        key = fold_name(index.name)
        wanted = desired_by_name.get(key)
        if wanted is not None and _index_signature(index, renames, live) == _index_signature(wanted, {}, desired):
            kept.add(key)
        elif managed.manages_index(index.name):
            changes.append(DropIndex(index))
        elif wanted is not None:  # its CreateIndex stays in the plan, which the problem blocks
            problems.append(
                f"index {index.name} on {live.name} was not made by pydsqlite and differs from the model's index of that "
                f"name ({index.sql or ', '.join(index.columns)}); drop or rename it, or give the model's index another "
                "name (name=... on Unique() or Index())"
            )
    for index in desired.indexes:
        if fold_name(index.name) not in kept:
            changes.append(CreateIndex(index))
    return changes, problems


def _index_signature(index: Index, renames: dict[str, str], table: Table) -> tuple[Any, ...]:
    return (
        tuple(fold_name(renames.get(fold_name(column), column)) for column in index.columns),
        index.unique,
        normalize_expression(index.where, renames, _column_names(table)) if index.where else None,
    )


def _describe_foreign_keys(change: ChangeForeignKeys) -> str:
    """What changes: keys added or dropped, and for a key kept, its actions and deferral."""
    old = {key.link: key for key in change.old}
    new = {key.link: key for key in change.new}
    parts = []
    for link, key in new.items():
        before = old.get(link)
        named = f"({', '.join(key.columns)}) -> {_referenced(key)}"
        if before is None:
            parts.append(f"add foreign key {named}")
            continue
        if before.on_delete != key.on_delete:
            parts.append(f"foreign key {named} ON DELETE {before.on_delete} -> {key.on_delete}")
        if before.on_update != key.on_update:
            parts.append(f"foreign key {named} ON UPDATE {before.on_update} -> {key.on_update}")
        if before.deferred != key.deferred:
            when = ("DEFERRABLE INITIALLY DEFERRED", "checked after each statement")
            parts.append(f"foreign key {named} {when[0] if before.deferred else when[1]} -> {when[0] if key.deferred else when[1]}")
    parts += [f"drop foreign key ({', '.join(key.columns)}) -> {_referenced(key)}" for link, key in old.items() if link not in new]
    return "; ".join(parts) or "foreign keys changed"


def _referenced(key: ForeignKey) -> str:
    """``parent(columns)``: a key moving from one parent column to another (the parent's primary key
    changed under a ``ForeignKey(Parent)``) reads as the change it is."""
    return f"{key.ref_table}({', '.join(key.ref_columns)})" if key.ref_columns else key.ref_table


def describe_change(change: Change | CreateView | DropView | CreateTrigger | DropTrigger) -> str:
    """A short human description of one change, for plan listings."""
    if isinstance(change, AddColumn):
        return f"add column {change.column.name}"
    if isinstance(change, DropColumn):
        return f"drop column {change.column.name}"
    if isinstance(change, RenameColumn):
        return f"rename column {change.old} to {change.new}"
    if isinstance(change, AlterColumn):
        details = []
        for aspect in change.aspects:
            if aspect == "type":
                details.append(f"type {change.old.type or 'untyped'} -> {change.new.type or 'untyped'}")
            elif aspect == "nullability" and change.new.not_null and change.new.default is not None and "default" not in change.aspects:
                details.append(f"NOT NULL, NULLs take {change.new.default}")  # a default never compared is not listed otherwise
            elif aspect == "nullability":
                details.append("NOT NULL" if change.new.not_null else "nullable")
            elif aspect == "default":
                details.append(f"default {change.old.default} -> {change.new.default}")
            elif aspect == "check":
                old_checks = {normalize_expression(check.sql): check for check in change.old.checks}
                new_checks = {normalize_expression(check.sql): check for check in change.new.checks}
                names_changed = sorted(check.name or "" for check in change.old.checks) != sorted(check.name or "" for check in change.new.checks)
                details.append(
                    _constraint_changes(
                        (_check_sql(check) for text, check in old_checks.items() if text not in new_checks),
                        (_check_sql(check) for text, check in new_checks.items() if text not in old_checks),
                    ) or ("CHECK renamed" if names_changed else "CHECK reads a double-quoted name otherwise: a column on one side, text on the other")
                )
            elif aspect == "generated":
                if change.new.generated is None:
                    details.append("no longer generated")
                elif change.old.generated is None:
                    details.append("now generated")
                else:
                    details.append("generated expression changed")
            else:
                details.append(f"{aspect} changed")
        return f"alter column {change.new.name} ({', '.join(details)})"
    if isinstance(change, SetLWW):
        renamed = f"{change.renamed_to} (renamed from {change.column})" if change.renamed_to else change.column
        return f"turn LWW {'on' if change.enabled else 'off'} for {renamed}"
    if isinstance(change, ChangePrimaryKey):
        return f"primary key ({', '.join(change.old)}) -> ({', '.join(change.new)})"
    if isinstance(change, ChangeForeignKeys):
        return _describe_foreign_keys(change)
    if isinstance(change, ChangeTableConstraints):
        listed = _constraint_changes(change.dropped, change.added)
        return f"table {' and '.join(change.aspects)} constraints changed" + (f" ({listed})" if listed else "")
    if isinstance(change, ChangeTableOptions):
        return f"table options changed ({', '.join(change.aspects)})"
    if isinstance(change, CreateIndex):
        return f"create {'unique ' if change.index.unique else ''}index {change.index.name}"
    if isinstance(change, DropIndex):
        return f"drop index {change.index.name}"
    if isinstance(change, (CreateView, DropView)):
        return f"{'create' if isinstance(change, CreateView) else 'drop'} view {change.view.name}"
    if isinstance(change, (CreateTrigger, DropTrigger)):
        return f"{'create' if isinstance(change, CreateTrigger) else 'drop'} trigger {change.trigger.name}"
    raise TypeError(change)
