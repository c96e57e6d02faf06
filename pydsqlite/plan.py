"""Pipeline stage 4: turn a ``SchemaDiff`` into an ordered ``MigrationPlan`` of SQL operations.

A pure function of the two schemas. In-place ``ALTER TABLE`` is used where SQLite
allows it; everything else becomes one rebuild per table following SQLite's recipe
(create under a temporary name, copy, drop, rename, recreate indexes and triggers).
Each operation also carries the data checks (COUNT queries) that decide, before
anything runs, whether it would lose or reject existing rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .ddl_parser import identifiers_in, tokenize
from .diff import (
    AddColumn,
    AlterColumn,
    ChangeForeignKeys,
    ChangePrimaryKey,
    ChangeTableConstraints,
    ChangeTableOptions,
    Change,
    CreateIndex,
    DropColumn,
    DropIndex,
    RenameColumn,
    SchemaDiff,
    SetLWW,
    TableDiff,
)
from .metadata import METADATA_PREFIX
from .schema import LWW_SUFFIX, Column, Index, Schema, Table, fold_name
from .sqltext import (
    quote_identifier,
    quote_literal,
    render_add_column,
    render_create_index,
    render_create_table,
    render_drop_column,
    render_drop_index,
    render_drop_table,
    render_rename_column,
    render_rename_table,
)


@dataclass(frozen=True)
class DataCheck:
    """A question for the live data: how many rows does ``count_sql`` find?

    ``blocking`` checks make the operation impossible (the plan is refused);
    the others mean the operation loses data (it needs ``allow_destructive=True``).
    """

    table: str
    column: str | None
    problem: str
    count_sql: str
    sample_sql: str | None
    blocking: bool


@dataclass(frozen=True)
class Operation:
    """One step of a migration: what it does, its SQL, and whether it loses data."""

    kind: str
    table: str
    description: str
    statements: tuple[str, ...]
    destructive: bool = False
    row_count: int | None = None
    """Rows (or non-NULL values) the destructive step discards, once the plan was checked against data."""
    findings: tuple[str, ...] = ()
    """What the data checks found (lossy conversions, rows in the way)."""
    checks: tuple[DataCheck, ...] = field(default=(), repr=False)
    problems: tuple[str, ...] = field(default=(), repr=False)
    """Reasons, known without reading data, why the operation cannot run."""

    def __str__(self) -> str:
        mark = "DESTRUCTIVE " if self.destructive else ""
        text = f"{mark}{self.description}"
        if self.row_count is not None and self.destructive:
            text += f" [{self.row_count} row{'s' if self.row_count != 1 else ''}]"
        for finding in self.findings:
            text += f"\n    ! {finding}"
        return text


@dataclass(frozen=True)
class MigrationPlan:
    """The ordered operations that bring a database in line with the models.

    ``problems`` lists what makes the plan impossible (``sync_models`` refuses it);
    ``str(plan)`` is a readable summary, ``plan.sql`` the whole SQL script.
    """

    operations: tuple[Operation, ...] = ()
    problems: tuple[str, ...] = ()
    checked: bool = False
    """True once the data checks ran (row counts and findings are filled in)."""

    @property
    def is_empty(self) -> bool:
        return not self.operations

    @property
    def sql(self) -> str:
        return "".join(statement + ";\n" for operation in self.operations for statement in operation.statements)

    @property
    def destructive_operations(self) -> tuple[Operation, ...]:
        return tuple(operation for operation in self.operations if operation.destructive)

    @property
    def rebuilt_tables(self) -> tuple[str, ...]:
        return tuple(operation.table for operation in self.operations if operation.kind == "rebuild_table")

    def __str__(self) -> str:
        if self.is_empty:
            return "Nothing to do: the database matches the models."
        lines = [f"Migration plan ({len(self.operations)} operation{'s' if len(self.operations) != 1 else ''}):"]
        lines.extend(f"  {number}. {operation}" for number, operation in enumerate(self.operations, 1))
        if self.problems:
            lines.append("Cannot be applied:")
            lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)

    def with_operations(self, operations: tuple[Operation, ...], problems: tuple[str, ...]) -> MigrationPlan:
        return replace(self, operations=operations, problems=problems, checked=True)


REBUILD_PREFIX = f"{METADATA_PREFIX}_new_"


def build_plan(schema_diff: SchemaDiff, live: Schema) -> MigrationPlan:
    """Order the changes: renames, creates, per-table alterations or rebuilds, then drops."""
    operations: list[Operation] = []
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
    for item in schema_diff.altered:
        if not item.changes:
            continue
        if _needs_rebuild(item):
            operations.append(_rebuild_table(item, live))
        else:
            operations.extend(_alter_in_place(item))
    for table in schema_diff.dropped:
        operations.append(
            Operation(
                kind="drop_table",
                table=table.name,
                description=f"drop table {table.name}",
                statements=(render_drop_table(table.name),),
                destructive=True,
                checks=(
                    DataCheck(
                        table=table.name,
                        column=None,
                        problem="rows would be deleted with the table",
                        count_sql=f"SELECT COUNT(*) FROM {quote_identifier(table.name)}",
                        sample_sql=None,
                        blocking=False,
                    ),
                ),
            )
        )
    return MigrationPlan(operations=tuple(operations))


def _create_table(table: Table) -> Operation:
    statements = [render_create_table(table)]
    statements.extend(render_create_index(index) for index in table.indexes)
    indexes = f", {len(table.indexes)} index{'es' if len(table.indexes) != 1 else ''}" if table.indexes else ""
    return Operation(
        kind="create_table",
        table=table.name,
        description=f"create table {table.name} ({len(table.columns)} columns{indexes})",
        statements=tuple(statements),
    )


def _needs_rebuild(item: TableDiff) -> bool:
    """True when some change cannot be done by ALTER TABLE / CREATE INDEX in place."""
    surviving_indexes = _surviving_live_indexes(item)
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
    if column.default is not None and column.default.strip().upper() in ("CURRENT_TIME", "CURRENT_DATE", "CURRENT_TIMESTAMP"):
        return False
    if column.default is not None and column.default.strip().startswith("("):
        return False
    return True


def _can_drop_in_place(column: Column, table: Table, surviving_indexes: list[Index]) -> bool:
    """ALTER TABLE DROP COLUMN rules: not in a key, index, UNIQUE, FK, or another column's expression."""
    name = fold_name(column.name)
    if name in {fold_name(key) for key in table.primary_key}:
        return False
    if any(name in {fold_name(c) for c in unique} for unique in table.uniques):
        return False
    if any(name in {fold_name(c) for c in key.columns} for key in table.foreign_keys):
        return False
    for index in surviving_indexes:
        if any(name in identifiers_in(term) for term in index.columns) or (index.where and name in identifiers_in(index.where)):
            return False
    expressions = list(table.checks)
    for other in table.columns:
        if fold_name(other.name) != name:
            expressions.extend(other.checks)
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
            operations.append(_drop_column(table, item.live.name, change.column))
        elif isinstance(change, SetLWW):
            companion = Column(name=change.column + LWW_SUFFIX, type="TEXT")
            if change.enabled:
                operations.append(
                    Operation(
                        "enable_lww", table, f"turn LWW on for {table}.{change.column} (add {companion.name})",
                        (render_add_column(table, companion),),
                    )
                )
            else:
                operations.append(
                    Operation(
                        "disable_lww", table, f"turn LWW off for {table}.{change.column} (drop {companion.name})",
                        (render_drop_column(table, companion.name),),
                    )
                )
        elif isinstance(change, CreateIndex):
            operations.append(_create_index(table, item.live.name, change.index, _renamed_columns(item)))
    return operations


_IN_PLACE_ORDER = (DropIndex, RenameColumn, SetLWW, AddColumn, DropColumn, CreateIndex)


def _in_place_order(change: Change) -> int:
    return next(position for position, kind in enumerate(_IN_PLACE_ORDER) if isinstance(change, kind))


def _drop_column(table: str, live_table: str, column: Column) -> Operation:
    """Drop in place; the data check reads ``live_table``, the name before any planned rename."""
    quoted = quote_identifier(column.name)
    return Operation(
        kind="drop_column",
        table=table,
        description=f"drop column {table}.{column.name}",
        statements=(render_drop_column(table, column.name),),
        destructive=True,
        checks=(
            DataCheck(
                table=table,
                column=column.name,
                problem="values would be deleted with the column",
                count_sql=f"SELECT COUNT(*) FROM {quote_identifier(live_table)} WHERE {quoted} IS NOT NULL",
                sample_sql=None,
                blocking=False,
            ),
        ),
    )


def _create_index(table: str, live_table: str, index: Index, renamed: dict[str, str]) -> Operation:
    """Create in place; a unique index first counts duplicates in ``live_table`` (pre-rename names)."""
    checks: tuple[DataCheck, ...] = ()
    if index.unique:
        old_names = tuple(renamed.get(fold_name(column), column) for column in index.columns)
        checks = (_duplicates_check(table, quote_identifier(live_table), old_names, f"unique index {index.name}"),)
    kind = "unique index" if index.unique else "index"
    return Operation(
        "create_index", table, f"create {kind} {index.name} on {table} ({', '.join(index.columns)})",
        (render_create_index(index),), checks=checks,
    )


def _duplicates_check(table: str, source: str, columns: tuple[str, ...], what: str) -> DataCheck:
    """Rows of ``source`` whose values in ``columns`` repeat (NULLs never collide, as in SQLite's UNIQUE)."""
    names = ", ".join(quote_identifier(column) for column in columns)
    not_null = " AND ".join(f"{quote_identifier(column)} IS NOT NULL" for column in columns)
    grouped = f"SELECT {names}, COUNT(*) AS n FROM {source} WHERE {not_null} GROUP BY {names} HAVING COUNT(*) > 1"
    return DataCheck(
        table=table,
        column=", ".join(columns),
        problem=f"rows share a value that {what} requires to be unique",
        count_sql=f"SELECT COALESCE(SUM(n), 0) FROM ({grouped})",
        sample_sql=f"SELECT {names} FROM ({grouped}) LIMIT 1",
        blocking=True,
    )


@dataclass(frozen=True)
class _Copy:
    """How a rebuild fills the new table: INSERT targets, their SELECT terms, and a projection
    of the old rows under the new column names (what the data checks query)."""

    targets: tuple[str, ...]
    terms: tuple[str, ...]
    projection: str
    conversions: tuple[DataCheck, ...]
    missing: tuple[str, ...]
    """New NOT NULL columns that nothing fills (no source, no default)."""


def _plan_copy(item: TableDiff) -> _Copy:
    live, desired = item.live, item.desired
    sources = {fold_name(new): old for new, old in item.column_sources}
    rowid_names = ("rowid", "oid", "_rowid_")
    rowid_usable = live.has_rowid and not any(fold_name(c.name) in rowid_names for c in live.columns)
    targets: list[str] = []
    terms: list[str] = []
    projected: list[str] = []
    conversions: list[DataCheck] = []
    missing: list[str] = []
    alias = fold_name(desired.rowid_alias or "")
    if rowid_usable and desired.has_rowid and not alias and not any(fold_name(c.name) in rowid_names for c in desired.columns):
        targets.append("rowid")
        terms.append("rowid")
    for column in desired.columns:
        if column.generated is not None:
            continue
        quoted = quote_identifier(column.name)
        old_column = live.column(sources[fold_name(column.name)]) if fold_name(column.name) in sources else None
        if old_column is not None and old_column.generated is None:
            expression, cast = _copy_expression(old_column, column, live, desired)
            if cast is not None:
                conversions.append(_conversion_check(desired.name, live.name, old_column, column, cast))
        elif fold_name(column.name) == alias and rowid_usable:
            expression = "rowid"
        elif column.default is not None:
            projected.append(f"{column.default} AS {quoted}")
            continue
        else:
            if column.not_null and fold_name(column.name) != alias:
                missing.append(column.name)
            projected.append(f"NULL AS {quoted}")
            continue
        targets.append(quoted)
        terms.append(expression)
        projected.append(f"{expression} AS {quoted}")
    key = live.primary_key or (("rowid",) if rowid_usable else ())
    sample = ", ".join("rowid" if k == "rowid" else quote_identifier(k) for k in key) or "NULL"
    projection = f"(SELECT {', '.join([*projected, f'{sample} AS _pydsqlite_sample'])} FROM {quote_identifier(live.name)})"
    return _Copy(tuple(targets), tuple(terms), projection, tuple(conversions), tuple(missing))


def _rebuild_table(item: TableDiff, live_schema: Schema) -> Operation:
    """One rebuild carrying every change to the table (lang_altertable.html, section 7)."""
    live, desired = item.live, item.desired
    name = desired.name
    temporary = REBUILD_PREFIX + name
    sources = {fold_name(new) for new, _ in item.column_sources}
    copy = _plan_copy(item)
    projection = copy.projection
    checks: list[DataCheck] = list(copy.conversions)
    problems: list[str] = []
    for column_name in copy.missing:
        checks.append(
            DataCheck(
                table=name, column=column_name,
                problem="rows exist but the new NOT NULL column has no default to fill them",
                count_sql=f"SELECT COUNT(*) FROM {quote_identifier(live.name)}",
                sample_sql=f"SELECT _pydsqlite_sample FROM {projection} LIMIT 1",
                blocking=True,
            )
        )
    for column in desired.columns:
        if column.not_null and column.generated is None and fold_name(column.name) in sources and column.default is None:
            quoted = quote_identifier(column.name)
            checks.append(
                DataCheck(
                    table=name, column=column.name,
                    problem="rows hold NULL but the column becomes NOT NULL with no default",
                    count_sql=f"SELECT COUNT(*) FROM {projection} WHERE {quoted} IS NULL",
                    sample_sql=f"SELECT _pydsqlite_sample FROM {projection} WHERE {quoted} IS NULL LIMIT 1",
                    blocking=True,
                )
            )
    if desired.primary_key and _key_changed(item):
        checks.append(_duplicates_check(name, projection, desired.primary_key, "the primary key"))
    for unique in desired.uniques:
        checks.append(_duplicates_check(name, projection, unique, "a UNIQUE constraint"))
    for check in (*desired.checks, *(c for column in desired.columns for c in column.checks)):
        checks.append(
            DataCheck(
                table=name, column=None, problem=f"rows violate CHECK ({check})",
                count_sql=f"SELECT COUNT(*) FROM {projection} WHERE NOT ({check})",
                sample_sql=f"SELECT _pydsqlite_sample FROM {projection} WHERE NOT ({check}) LIMIT 1",
                blocking=True,
            )
        )
    for index in desired.indexes:
        if index.unique:
            checks.append(_duplicates_check(name, projection, index.columns, f"unique index {index.name}"))
    statements = [render_create_table(desired, name=temporary)]
    if copy.targets:
        statements.append(
            f"INSERT INTO {quote_identifier(temporary)} ({', '.join(copy.targets)}) "
            f"SELECT {', '.join(copy.terms)} FROM {quote_identifier(name)}"
        )
    if live.autoincrement and desired.autoincrement:
        statements.extend(_carry_sequence(name, temporary))
    statements.append(render_drop_table(name))
    statements.append("PRAGMA legacy_alter_table = ON")
    statements.append(render_rename_table(temporary, name))
    statements.append("PRAGMA legacy_alter_table = OFF")
    statements.extend(render_create_index(index) for index in desired.indexes)
    desired_index_names = {fold_name(index.name) for index in desired.indexes}
    dropped_names = {fold_name(change.index.name) for change in item.changes if isinstance(change, DropIndex)}
    dropped_columns = {fold_name(change.column.name) for change in item.changes if isinstance(change, DropColumn)}
    renames = {fold_name(old): new for new, old in item.column_sources if fold_name(old) != fold_name(new)}
    for index in live.indexes:
        key = fold_name(index.name)
        if key in desired_index_names or key in dropped_names or index.sql is None:
            continue
        used = set().union(*(identifiers_in(term) for term in index.columns)) | (identifiers_in(index.where) if index.where else set())
        lost = sorted(used & dropped_columns)
        if lost:
            problems.append(
                f"hand-made index {index.name} on {name} uses column {', '.join(lost)} that the models drop; drop the index first"
            )
            continue
        statements.append(_rewrite_references(index.sql, live.name, name, renames))
    for trigger in live_schema.triggers:
        if fold_name(trigger.table) == fold_name(live.name) or fold_name(trigger.table) == fold_name(name):
            statements.append(_rewrite_references(trigger.sql, live.name, name, renames))
    return Operation(
        kind="rebuild_table",
        table=name,
        description=f"rebuild table {name}: " + "; ".join(_describe(change, name) for change in item.changes),
        statements=tuple(statements),
        destructive=any(isinstance(change, DropColumn) for change in item.changes),
        checks=(*_drop_checks(item), *checks),
        problems=tuple(problems),
    )


def _key_changed(item: TableDiff) -> bool:
    return any(isinstance(change, ChangePrimaryKey) for change in item.changes)


def _renamed_columns(item: TableDiff) -> dict[str, str]:
    """Folded desired column name → its live name, for columns the plan renames."""
    return {fold_name(new): old for new, old in item.column_sources if fold_name(new) != fold_name(old)}


def _drop_checks(item: TableDiff) -> list[DataCheck]:
    return [_drop_column(item.desired.name, item.live.name, change.column).checks[0] for change in item.changes if isinstance(change, DropColumn)]


def _copy_expression(old: Column, new: Column, live: Table, desired: Table) -> tuple[str, str | None]:
    """SQL that reads ``old`` as the new column's value, and the CAST type applied (if any)."""
    expression = quote_identifier(old.name)
    cast = None
    if new.type and (old.affinity != new.affinity or (desired.strict and not live.strict)):
        cast = _cast_type(new)
        expression = f"CAST({expression} AS {cast})"
    if new.not_null and new.default is not None and not old.not_null:
        expression = f"IFNULL({expression}, {new.default})"
    return expression, cast


def _cast_type(column: Column) -> str:
    affinity = column.affinity
    return "BLOB" if affinity == "BLOB" else affinity


_SURVIVES = {
    "INTEGER": "typeof({c}) IN ('null', 'integer') OR (typeof({c}) = 'real' AND {c} = CAST({c} AS INTEGER))"
    " OR (typeof({c}) = 'text' AND CAST(CAST({c} AS INTEGER) AS TEXT) = {c})",
    "REAL": "typeof({c}) IN ('null', 'real') OR (typeof({c}) = 'integer' AND CAST(CAST({c} AS REAL) AS INTEGER) = {c})"
    " OR (typeof({c}) = 'text' AND (CAST(CAST({c} AS REAL) AS TEXT) = {c} OR CAST(CAST({c} AS INTEGER) AS TEXT) = {c}))",
    "NUMERIC": "typeof({c}) IN ('null', 'integer', 'real')"
    " OR (typeof({c}) = 'text' AND CAST(CAST({c} AS NUMERIC) AS TEXT) = {c})",
    "TEXT": "typeof({c}) IN ('null', 'text', 'integer')"
    " OR (typeof({c}) = 'real' AND CAST(CAST({c} AS TEXT) AS REAL) = {c})"
    " OR (typeof({c}) = 'blob' AND pydsqlite_is_utf8({c}))",
    "BLOB": "typeof({c}) IN ('null', 'blob', 'text')",
}


def _conversion_check(table: str, live_table: str, old: Column, new: Column, cast: str) -> DataCheck:
    """Rows whose value would not survive ``CAST(old AS cast)`` unchanged."""
    quoted = quote_identifier(old.name)
    survives = _SURVIVES[cast].format(c=quoted)
    where = f"NOT ({survives})"
    return DataCheck(
        table=table,
        column=new.name,
        problem=f"values would change when converted from {old.type or 'untyped'} to {new.type}",
        count_sql=f"SELECT COUNT(*) FROM {quote_identifier(live_table)} WHERE {where}",
        sample_sql=f"SELECT {quoted} FROM {quote_identifier(live_table)} WHERE {where} LIMIT 1",
        blocking=False,
    )


def _carry_sequence(old: str, temporary: str) -> list[str]:
    """Keep AUTOINCREMENT's high-water mark: copy ``sqlite_sequence`` to the new table before the drop."""
    old_literal, new_literal = quote_literal(old), quote_literal(temporary)
    old_seq = f"(SELECT seq FROM sqlite_sequence WHERE name = {old_literal})"
    return [
        f"UPDATE sqlite_sequence SET seq = MAX(seq, {old_seq}) WHERE name = {new_literal} AND {old_seq} IS NOT NULL",
        f"INSERT INTO sqlite_sequence (name, seq) SELECT {new_literal}, seq FROM sqlite_sequence "
        f"WHERE name = {old_literal} AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = {new_literal})",
    ]


def _rewrite_references(sql: str, old_table: str, new_table: str, column_renames: dict[str, str]) -> str:
    """Replay a hand-made index or trigger after a rebuild that renamed the table or its columns."""
    if fold_name(old_table) == fold_name(new_table) and not column_renames:
        return sql
    out = []
    position = 0
    for token in tokenize(sql):
        if token.kind in ("word", "quoted"):
            folded = fold_name(token.identifier)
            replacement = None
            if folded == fold_name(old_table) and fold_name(old_table) != fold_name(new_table):
                replacement = new_table
            elif folded in column_renames:
                replacement = column_renames[folded]
            if replacement is not None:
                out.append(sql[position : token.start])
                out.append(quote_identifier(replacement))
                position = token.end
    out.append(sql[position:])
    return "".join(out)


def _describe(change: Change, table: str) -> str:
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
            elif aspect == "nullability":
                details.append("NOT NULL" if change.new.not_null else "nullable")
            elif aspect == "default":
                details.append(f"default {change.old.default} -> {change.new.default}")
            else:
                details.append(f"{aspect} changed")
        return f"alter column {change.new.name} ({', '.join(details)})"
    if isinstance(change, SetLWW):
        return f"turn LWW {'on' if change.enabled else 'off'} for {change.column}"
    if isinstance(change, ChangePrimaryKey):
        return f"primary key ({', '.join(change.old)}) -> ({', '.join(change.new)})"
    if isinstance(change, ChangeForeignKeys):
        return "foreign keys changed"
    if isinstance(change, ChangeTableConstraints):
        return f"table {' and '.join(change.aspects)} constraints changed"
    if isinstance(change, ChangeTableOptions):
        return f"table options changed ({', '.join(change.aspects)})"
    if isinstance(change, CreateIndex):
        return f"create {'unique ' if change.index.unique else ''}index {change.index.name}"
    if isinstance(change, DropIndex):
        return f"drop index {change.index.name}"
    raise TypeError(change)
