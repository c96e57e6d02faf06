"""Pipeline stage 4: turn a ``SchemaDiff`` into an ordered ``MigrationPlan`` of SQL operations.

A pure function of the two schemas. In-place ``ALTER TABLE`` / ``CREATE INDEX`` is
used where SQLite allows it; everything else becomes one rebuild per table (see
``rebuild``). Each operation carries the data checks (COUNT queries) that decide,
before anything runs, whether it would lose or reject existing rows.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..replica.capture import capture_setup
from ..schema.objects import LWW_SUFFIX, VERSION_COLUMN, Column, Index, Schema, Table, fold_name
from ..sql.ddl import identifiers_in
from ..sql.render import (
    quote_identifier,
    render_add_column,
    render_create_index,
    render_create_table,
    render_drop_column,
    render_drop_index,
    render_drop_table,
    render_rename_column,
    render_rename_table,
)
from .checks import dropped_values_check, table_rows_check
from .diff import (
    AddColumn,
    AlterColumn,
    Change,
    ChangeForeignKeys,
    ChangePrimaryKey,
    ChangeTableConstraints,
    ChangeTableOptions,
    CreateIndex,
    CreateTrigger,
    CreateView,
    DropColumn,
    DropIndex,
    DropTrigger,
    DropView,
    RenameColumn,
    SchemaDiff,
    SetLWW,
    TableDiff,
    describe_change,
)
from .migration import DataCheck, MigrationPlan, Operation, ValueChange
from .rebuild import PlannedParents, new_rows_projection, rebuild_after_renames, unique_index_check, value_changes


def build_plan(schema_diff: SchemaDiff, live: Schema) -> MigrationPlan:
    """Order the changes: renames, creates, per-table alterations or rebuilds, then drops."""
    operations: list[Operation] = [_sql_object_operation(change) for change in schema_diff.dropped_objects]
    operations.extend(_drop_whole("virtual table", virtual.name) for virtual in schema_diff.dropped_virtual)
    operations.extend(
        Operation("drop_index", holder, description, (render_drop_index(index.name),))
        for index, holder, description in schema_diff.index_names_moving
    )
    for item in schema_diff.altered:
        if item.rename is not None:
            operations.append(
                Operation(
                    kind="rename_table",
                    table=item.desired.name,
                    description=f"rename table {item.rename.old} to {item.rename.new}",
                    statements=(render_rename_table(item.rename.old, item.rename.new),),
                )
            )
    for table in schema_diff.created:
        operations.append(_create_table(table))
    for virtual in schema_diff.created_virtual:
        operations.append(Operation("create_virtual_table", virtual.name, f"create virtual table {virtual.name}", (virtual.sql,)))
    changed_values: list[ValueChange] = []
    converted = _converted_columns(schema_diff)
    released = _released_references(schema_diff)
    parents = _parents_in_plan(schema_diff)
    for item in schema_diff.altered:
        if not item.changes:
            continue
        if _needs_rebuild(item):
            table_operations = rebuild_after_renames(item, live, converted, released, parents)
            changed_values.extend(value_changes(item))
        else:
            table_operations = _alter_in_place(_without_drops_done_first(item, schema_diff.index_names_moving))
            if not table_operations:
                continue  # its only change was giving up an index name, done first
        if item.problems:
            first = table_operations[0]
            table_operations[0] = replace(first, problems=(*first.problems, *item.problems))
        operations.extend(table_operations)
    operations.extend(_drop_whole("table", table.name) for table in schema_diff.dropped)
    operations.extend(_sql_object_operation(change) for change in schema_diff.created_objects)
    for table_name, problem in schema_diff.index_name_problems:
        position = next((n for n, operation in enumerate(operations) if fold_name(operation.table) == fold_name(table_name)), None)
        if position is not None:
            operations[position] = replace(operations[position], problems=(*operations[position].problems, problem))
    renames = tuple(
        (item.desired.name, old, new)
        for item in schema_diff.altered
        for new, old in item.column_sources
        if fold_name(old) != fold_name(new)
    )
    table_renames = tuple((item.rename.old, item.rename.new) for item in schema_diff.altered if item.rename is not None)
    return MigrationPlan(operations=tuple(operations), renames=renames, table_renames=table_renames, value_changes=tuple(changed_values))


def _without_drops_done_first(item: TableDiff, moving: tuple[tuple[Index, str, str], ...]) -> TableDiff:
    """``item`` without dropping the indexes whose names the plan frees first for another table."""
    freed = {fold_name(index.name) for index, holder, _ in moving if fold_name(holder) == fold_name(item.live.name)}
    if not freed:
        return item
    return replace(item, changes=tuple(c for c in item.changes if not (isinstance(c, DropIndex) and fold_name(c.index.name) in freed)))


def expand_diff(schema_diff: SchemaDiff) -> SchemaDiff:
    """The part of a diff that only adds, for the phase before data steps (see ``steps``).

    New tables and virtual tables, table and column renames, new columns that ``ALTER TABLE
    ADD COLUMN`` can add (a NOT NULL one without a default added nullable, for a step to
    fill), LWW companions, and dropped indexes (a loosening). Everything else — drops,
    tightening, rebuilds, new indexes, views and triggers — is left to the plan made after
    the steps, so every part of this one runs in place and nothing it does can lose data.
    """
    replaced = {fold_name(virtual.name) for virtual in schema_diff.dropped_virtual}
    return SchemaDiff(
        created=schema_diff.created,
        dropped=(),
        # a table's problems (a blocked rename) are reported once, by the plan made after the steps
        altered=tuple(replace(item, changes=_expand_changes(item), problems=()) for item in schema_diff.altered),
        created_virtual=tuple(virtual for virtual in schema_diff.created_virtual if fold_name(virtual.name) not in replaced),
        index_name_problems=schema_diff.index_name_problems,
        index_names_moving=schema_diff.index_names_moving,  # freeing a name is a loosening: the expand phase does it
    )


def _expand_changes(item: TableDiff) -> tuple[Change, ...]:
    expanding: list[Change] = []
    # a clock column another column's clock still holds the name of (an LWW column swapped with a plain one) comes with the rebuild
    ending_clocks = {fold_name(change.column) for change in item.changes if isinstance(change, SetLWW) and not change.enabled}
    for change in item.changes:
        if isinstance(change, (RenameColumn, DropIndex)) or (
            isinstance(change, SetLWW) and change.enabled and fold_name(change.column) not in ending_clocks
        ):
            expanding.append(change)
        elif isinstance(change, AddColumn) and change.column.generated is None:
            column = change.column
            if column.default is None:
                column = replace(column, not_null=False, on_conflict=None)
            if _can_add_in_place(column, item.desired):
                expanding.append(AddColumn(column))
    return tuple(expanding)


def _sql_object_operation(change: CreateView | DropView | CreateTrigger | DropTrigger) -> Operation:
    """Views and triggers are dropped before the table changes and created after them."""
    if isinstance(change, (CreateView, DropView)):
        name, table, kind = change.view.name, change.view.name, "view"
        sql = change.view.sql if isinstance(change, CreateView) else f"DROP VIEW {quote_identifier(name)}"
    else:
        name, table, kind = change.trigger.name, change.trigger.table, "trigger"
        sql = change.trigger.sql if isinstance(change, CreateTrigger) else f"DROP TRIGGER {quote_identifier(name)}"
    action = "create" if isinstance(change, (CreateView, CreateTrigger)) else "drop"
    setup = capture_setup(change.trigger) if isinstance(change, CreateTrigger) else ()
    return Operation(f"{action}_{kind}", table, describe_change(change), (*setup, sql))


def _drop_whole(kind: str, name: str) -> Operation:
    """Drop a table, or a virtual table with the shadow tables its module keeps: destructive, its rows go."""
    return Operation(
        kind=f"drop_{kind.replace(' ', '_')}",
        table=name,
        description=f"drop {kind} {name}",
        statements=(render_drop_table(name),),
        destructive=True,
        checks=(table_rows_check(name),),
    )


def _create_table(table: Table) -> Operation:
    statements = [render_create_table(table)]
    statements.extend(render_create_index(index) for index in table.indexes)
    indexes = f", {len(table.indexes)} index{'es' if len(table.indexes) != 1 else ''}" if table.indexes else ""
    return Operation(
        kind="create_table",
        table=table.name,
        description=f"create table {table.name} ({len(table.columns)} column{'s' if len(table.columns) != 1 else ''}{indexes})",
        statements=tuple(statements),
    )


def _converted_columns(schema_diff: SchemaDiff) -> frozenset[tuple[str, str]]:
    """(table, column) as they are live, folded, of every column a rebuild of the plan casts: a foreign
    key whose both ends are cast is left to the final foreign-key check (each end's own check would
    compare converted values with unconverted ones)."""
    found = set()
    for item in schema_diff.altered:
        if item.changes and _needs_rebuild(item):
            sources = {fold_name(new): old for new, old in item.column_sources}
            for change in value_changes(item):
                if change.cast is not None and fold_name(change.column) in sources:
                    found.add((fold_name(item.live.name), fold_name(sources[fold_name(change.column)])))
    return frozenset(found)


def _parents_in_plan(schema_diff: SchemaDiff) -> PlannedParents:
    """Where the tables a new foreign key may reference are while the data checks run: each matched
    table under its live name and column names, with its desired shape (the collations its columns
    get), each created table as None (it starts empty)."""
    parents: dict[str, tuple[str, dict[str, str], Table] | None] = {
        fold_name(item.desired.name): (item.live.name, {fold_name(new): old for new, old in item.column_sources}, item.desired)
        for item in schema_diff.altered
    }
    parents.update((fold_name(table.name), None) for table in schema_diff.created)
    return parents


def _released_references(schema_diff: SchemaDiff) -> frozenset[tuple[str, str]]:
    """(child, parent) as they are live, folded: tables that reference that parent no more once the
    migration is done (the child is dropped, or its new shape has no foreign key to the parent).
    A rebuild of the parent need not ask whether their rows keep finding a parent row."""
    desired_name = {fold_name(item.live.name): fold_name(item.desired.name) for item in schema_diff.altered}
    released = {(fold_name(table.name), fold_name(key.ref_table)) for table in schema_diff.dropped for key in table.foreign_keys}
    for item in schema_diff.altered:
        still = {fold_name(key.ref_table) for key in item.desired.foreign_keys}
        for key in item.live.foreign_keys:
            parent = fold_name(key.ref_table)
            if desired_name.get(parent, parent) not in still:
                released.add((fold_name(item.live.name), parent))
    return frozenset(released)


def _needs_rebuild(item: TableDiff) -> bool:
    """True when some change cannot be done by ALTER TABLE / CREATE INDEX in place."""
    surviving_indexes = _surviving_live_indexes(item)
    dropped = {fold_name(change.column.name) for change in item.changes if isinstance(change, DropColumn)}
    if dropped & {fold_name(column.name) for column in item.desired.columns}:
        return True  # a user's column named like a sync column goes and pydsqlite's comes: in one copy
    toggled = [(fold_name(change.column), change.enabled) for change in item.changes if isinstance(change, SetLWW)]
    if {name for name, on in toggled if on} & {name for name, on in toggled if not on}:
        return True  # an LWW column swapped with a plain one: one clock column goes and another of its name comes
    for change in item.changes:
        if isinstance(change, (AlterColumn, ChangePrimaryKey, ChangeForeignKeys, ChangeTableConstraints, ChangeTableOptions)):
            return True
        if isinstance(change, AddColumn) and not _can_add_in_place(change.column, item.desired):
            return True
        if isinstance(change, DropColumn) and not _can_drop_in_place(change.column, item.live, surviving_indexes):
            return True
    return False


def _can_add_in_place(column: Column, table: Table) -> bool:
    """ALTER TABLE ADD COLUMN rules (lang_altertable.html): no key, constant default, NOT NULL needs one."""
    if fold_name(column.name) in {fold_name(name) for name in table.primary_key}:
        return False
    if column.generated is not None and column.generated_stored:
        return False
    if column.not_null and column.default is None:
        return False
    return column.default is None or _LITERAL_DEFAULT.fullmatch(column.default.strip()) is not None


_LITERAL_DEFAULT = re.compile(
    r"[+-]?(\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|0[xX][0-9a-fA-F]+)"  # a number
    r"|'([^']|'')*'|[xX]'[0-9a-fA-F]*'|NULL|TRUE|FALSE",  # text, a blob, a keyword
    re.IGNORECASE,
)
"""A default ADD COLUMN takes on a table with rows: a literal. An expression (``datetime('now')``,
which ``PRAGMA table_xinfo`` reports without its parentheses) or ``CURRENT_TIMESTAMP`` takes a rebuild."""


def _can_drop_in_place(column: Column, table: Table, surviving_indexes: list[Index]) -> bool:
    """ALTER TABLE DROP COLUMN rules: not in a key, index, UNIQUE, FK, or another column's expression."""
    name = fold_name(column.name)
    if name in {fold_name(key) for key in table.primary_key}:
        return False
    if any(name in {fold_name(c) for c in unique.columns} for unique in table.uniques):
        return False
    if any(name in {fold_name(c) for c in key.columns} for key in table.foreign_keys):
        return False
    for index in surviving_indexes:
        if any(name in identifiers_in(term) for term in index.columns) or (index.where and name in identifiers_in(index.where)):
            return False
    expressions = [check.sql for check in table.checks]
    for other in table.columns:
        if fold_name(other.name) != name:
            expressions.extend(check.sql for check in other.checks)
            if other.generated:
                expressions.append(other.generated)
    return not any(name in identifiers_in(expression) for expression in expressions)


def _surviving_live_indexes(item: TableDiff) -> list[Index]:
    dropped = {fold_name(change.index.name) for change in item.changes if isinstance(change, DropIndex)}
    return [index for index in item.live.indexes if fold_name(index.name) not in dropped]


def _alter_in_place(item: TableDiff) -> list[Operation]:
    table = item.desired.name
    operations: list[Operation] = []
    ordered = sorted(item.changes, key=_in_place_order)
    for change in ordered:
        if isinstance(change, DropIndex):
            operations.append(
                Operation("drop_index", table, f"drop index {change.index.name} on {table}", (render_drop_index(change.index.name),))
            )
        elif isinstance(change, RenameColumn):
            operations.append(
                Operation(
                    "rename_column", table, f"rename column {table}.{change.old} to {change.new}",
                    (render_rename_column(table, change.old, change.new),),
                )
            )
        elif isinstance(change, AddColumn):
            operations.append(
                Operation("add_column", table, f"add column {table}.{change.column.name}", (render_add_column(table, change.column),))
            )
        elif isinstance(change, DropColumn):
            operation = _drop_column(table, item.live.name, change)
            if change.owned and change.column.is_lww_companion and item.desired.column(VERSION_COLUMN) is not None:
                # the dropped column's edit may be what keeps the row alive past a delete: the version keeps its time
                quoted, version = quote_identifier(change.column.name), quote_identifier(VERSION_COLUMN)
                keep = f"UPDATE {quote_identifier(table)} SET {version} = {quoted} WHERE {quoted} > {version}"
                operation = replace(operation, statements=(keep, *operation.statements))
            operations.append(operation)
        elif isinstance(change, SetLWW):
            companion = item.desired.column(change.column + LWW_SUFFIX) or item.live.column(change.column + LWW_SUFFIX)
            assert companion is not None
            # on a table that already syncs, the row version is when its group columns were written:
            # a column joining or leaving them carries that time across, so unexchanged edits keep their order
            base = {fold_name(new): old for new, old in item.column_sources}.get(fold_name(change.column))
            versioned = item.live.column(VERSION_COLUMN) is not None and base is not None and item.live.column(base) is not None
            quoted, version = quote_identifier(companion.name), quote_identifier(VERSION_COLUMN)
            if change.enabled:
                statements = [render_add_column(table, companion)]
                if versioned:
                    statements.append(f"UPDATE {quote_identifier(table)} SET {quoted} = {version}")
                operations.append(
                    Operation("enable_lww", table, f"turn LWW on for {table}.{change.column} (add {companion.name})", tuple(statements))
                )
            else:
                statements = [render_drop_column(table, companion.name)]
                if versioned:
                    statements.insert(0, f"UPDATE {quote_identifier(table)} SET {version} = {quoted} WHERE {quoted} > {version}")
                operations.append(
                    Operation("disable_lww", table, f"turn LWW off for {table}.{change.column} (drop {companion.name})", tuple(statements))
                )
        elif isinstance(change, CreateIndex):
            operations.append(_create_index(table, change.index, item))
    return operations


_IN_PLACE_ORDER = (DropIndex, RenameColumn, SetLWW, AddColumn, DropColumn, CreateIndex)


def _in_place_order(change: Change) -> int:
    return next(position for position, kind in enumerate(_IN_PLACE_ORDER) if isinstance(change, kind))


def _drop_column(table: str, live_table: str, change: DropColumn) -> Operation:
    """Drop in place; the data check reads ``live_table``, the name before any planned rename.
    A hidden sync column pydsqlite created is not user data: dropping it is not destructive."""
    column = change.column
    if change.owned:
        return Operation("drop_column", table, f"drop sync column {table}.{column.name}", (render_drop_column(table, column.name),))
    return Operation(
        kind="drop_column",
        table=table,
        description=f"drop column {table}.{column.name}",
        statements=(render_drop_column(table, column.name),),
        destructive=True,
        checks=(dropped_values_check(table, live_table, column),),
    )


def _create_index(table: str, index: Index, item: TableDiff) -> Operation:
    """Create in place; a unique index first counts the rows it would refuse, read from the live
    table as the changed table will hold them (renamed and new columns included)."""
    checks: tuple[DataCheck, ...] = ()
    if index.unique:
        checks = (unique_index_check(item.desired, new_rows_projection(item), index),)
    kind = "unique index" if index.unique else "index"
    return Operation(
        "create_index", table, f"create {kind} {index.name} on {table} ({', '.join(index.columns)})",
        (render_create_index(index),), checks=checks,
    )
