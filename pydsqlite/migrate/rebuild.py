"""Planning a table rebuild: SQLite's recipe for changes ALTER TABLE cannot make in place.

Create the new shape under a temporary name, copy the rows with one INSERT … SELECT
(columns mapped by name and rename, converted and filled from defaults), index the copy
where the names are free, drop the old table, rename the new one into place, then
recreate the other indexes and the triggers (lang_altertable.html, section 7). Foreign keys are handled by the executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..schema.objects import (
    LWW_SUFFIX,
    VERSION_COLUMN,
    Check,
    Column,
    ForeignKey,
    Index,
    Schema,
    Table,
    column_affinity,
    fold_name,
)
from ..sql.ddl import identifiers_in, parse_index_terms, strip_sort_order, tokenize
from ..sql.render import (
    parenthesized,
    quote_identifier,
    quote_literal,
    render_create_index,
    render_create_table,
    render_drop_index,
    render_drop_table,
    render_rename_column,
    render_rename_table,
)
from .checks import (
    conversion_checks,
    converted_orphans_check,
    dropped_values_check,
    duplicates_check,
    lossy_condition,
    orphans_check,
    references_to_a_created_table_check,
    row_check,
    rowid_change_check,
    rowid_values_check,
    unique_terms,
)
from .diff import ChangePrimaryKey, DropColumn, DropIndex, RenameColumn, TableDiff, describe_change
from .metadata import METADATA_PREFIX
from .migration import DataCheck, Operation, Replay, RowCopy, ValueChange

REBUILD_PREFIX = f"{METADATA_PREFIX}_new_"
PROGRESS_FUNCTION = "pydsqlite_copy_progress"
"""SQL function the executor registers to count copied rows when progress is reported."""
SAMPLE = "_pydsqlite_sample"
"""Column of the copy projection that identifies a row (its old key or rowid) in error messages."""


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
    chunk_key: tuple[str, ...]
    """What orders the old rows for a copy in ranges: the rowid, or the key of a WITHOUT ROWID table."""
    value_changes: tuple[ValueChange, ...]
    """What the copy does to the values of the columns it converts (a CAST, a default for NULLs)."""
    sample_key: str | None
    """How the key the projection samples (``SAMPLE``) is named in messages: ``id``, ``(a, b)``, ``rowid``."""


def _plan_copy(item: TableDiff, where: str = "") -> _Copy:
    live, desired = item.live, item.desired
    sources = {fold_name(new): old for new, old in item.column_sources}
    live_rowid, desired_rowid = rowid_name(live), rowid_name(desired)
    targets: list[str] = []
    terms: list[str] = []
    projected: list[str] = []
    conversions: list[DataCheck] = []
    changes: list[ValueChange] = []
    missing: list[str] = []
    alias = fold_name(desired.rowid_alias or "")
    if live_rowid is not None and desired_rowid is not None and not alias:
        targets.append(desired_rowid)
        terms.append(live_rowid)
    version_terms = _version_terms(item, sources)
    for column in desired.columns:
        if column.generated is not None:
            stored = live.column(sources[fold_name(column.name)]) if fold_name(column.name) in sources else None
            if stored is not None and stored.generated is None:
                renamed = any(new != fold_name(old) for new, old in sources.items())
                conversions.append(_replaced_by_expression(desired.name, live, stored, column.generated, renamed=renamed))
            continue
        quoted = quote_identifier(column.name)
        old_column = live.column(sources[fold_name(column.name)]) if fold_name(column.name) in sources else None
        if fold_name(column.name) in version_terms:
            expression = version_terms[fold_name(column.name)]
        elif old_column is not None:
            if old_column.generated is not None:  # turning plain, it keeps the values it reads now
                conversions.append(_no_longer_generated(desired.name, live, old_column))
            change = _value_change(old_column, column, live, desired)
            expression = change.applied_to(quote_identifier(old_column.name))
            if change.cast is not None:
                conversions.extend(conversion_checks(desired.name, live.name, old_column, column, change.cast))
            elif fold_name(column.name) == alias and fold_name(live.rowid_alias or "") != fold_name(old_column.name):
                conversions.append(rowid_values_check(desired.name, live.name, old_column, column))
            if fold_name(column.name) == alias and live_rowid is not None and fold_name(live.rowid_alias or "") != fold_name(old_column.name):
                conversions.append(rowid_change_check(desired.name, live.name, column, expression))
            if change.cast is not None or change.null_default is not None:
                changes.append(change)
        elif fold_name(column.name) == alias and live_rowid is not None:
            expression = live_rowid
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
    key = live.primary_key or ((live_rowid,) if live_rowid is not None else ())
    if live_rowid is not None and live.rowid_alias is None and not all(column.not_null for column in live.columns if fold_name(column.name) in _folded_key(live)):
        key = (live_rowid,)  # a key of a rowid table may hold NULLs (SQLite allows it): the rowid names the row
    sample = _key_text(key)
    projection = f"(SELECT {', '.join([*projected, f'{sample} AS {SAMPLE}'])} FROM {quote_identifier(live.name)}{where})"
    for column in desired.columns:  # generated columns read the projected ones, one layer each
        if column.generated is not None:
            projection = f"(SELECT *, ({column.generated}) AS {quote_identifier(column.name)} FROM {projection})"
    chunk_key = (live_rowid,) if live_rowid is not None else () if live.has_rowid else live.primary_key
    key_name = (key[0] if len(key) == 1 else f"({', '.join(key)})") if key else None
    return _Copy(tuple(targets), tuple(terms), projection, tuple(conversions), tuple(missing), chunk_key, tuple(changes), key_name)


def _version_terms(item: TableDiff, sources: dict[str, str]) -> dict[str, str]:
    """On a table that already syncs, the row version is when its group columns were written. A column
    turning LWW takes that time as its register's (not the baseline, which would let text order settle
    edits not yet exchanged), and the version takes the register's time of a column turning group or
    dropped (an edit of it may be what keeps the row alive past a delete): the copy terms for those
    columns, by folded desired name."""
    live, desired = item.live, item.desired
    if fold_name(VERSION_COLUMN) not in sources:  # not synced yet (a user's look-alike column is no version)
        return {}
    version = quote_identifier(VERSION_COLUMN)
    terms = {}
    kept = {fold_name(old) for old in sources.values()}
    for column in desired.columns:
        if not column.is_lww_companion or fold_name(column.name) in sources:
            continue
        base = sources.get(fold_name(column.name[: -len(LWW_SUFFIX)]))
        # a live clock of that name that no column keeps is another column's (an LWW column swapped with a plain one);
        # a column added before the data steps holds new values, whose clock starts at the baseline
        fresh = base is not None and fold_name(base) in item.fresh_columns
        if base is not None and not fresh and live.column(base) is not None and fold_name(base + LWW_SUFFIX) not in kept:
            terms[fold_name(column.name)] = version
    ending = [quote_identifier(column.name) for column in live.columns if column.is_lww_companion and fold_name(column.name) not in kept]
    if ending:
        terms[fold_name(VERSION_COLUMN)] = f"MAX({version}, {', '.join(f'IFNULL({name}, {version})' for name in ending)})"
    return terms


def _replaced_by_expression(table: str, live: Table, stored: Column, expression: str, *, renamed: bool) -> DataCheck:
    """The values of a stored column that becomes generated which its expression would change (read
    over the old row; every non-NULL value counts when a rename makes the expression's names the
    new ones)."""
    quoted = quote_identifier(stored.name)
    differs = f"{quoted} IS NOT NULL" if renamed else f"{quoted} IS NOT NULL AND {quoted} IS NOT ({expression})"
    return row_check(
        table, stored.name, "stored values would be replaced by the generated column's expression",
        quote_identifier(live.name), differs, blocking=False, sample=quoted,
    )


def _respelled(item: TableDiff) -> list[str]:
    """Names the rebuilt table takes in the model's spelling where the live one differs only in case (SQL
    does not mind; ``cursor.description`` and code comparing names do): ``names as the models spell
    them: Users -> users, ID -> id``."""
    sources = {fold_name(new): old for new, old in item.column_sources}
    pairs = [(item.live.name, item.desired.name)] if item.live.name != item.desired.name and fold_name(item.live.name) == fold_name(item.desired.name) else []
    for column in item.desired.columns:
        old = sources.get(fold_name(column.name))
        if old is not None and old != column.name and fold_name(old) == fold_name(column.name):
            pairs.append((old, column.name))
    return [f"names as the models spell them: {', '.join(f'{old} -> {new}' for old, new in pairs)}"] if pairs else []


def _no_longer_generated(table: str, live: Table, generated: Column) -> DataCheck:
    """The rows of a generated column that turns plain: each keeps the value it reads now, which then
    no longer follows the columns it was computed from (what a model declaring the column as a field
    does, as a model cannot declare a generated column)."""
    rule = f"GENERATED ALWAYS AS ({' '.join((generated.generated or '').split())}) {'STORED' if generated.generated_stored else 'VIRTUAL'}"
    return row_check(
        table, generated.name,
        f"values would stop following {rule}: each keeps its current value, which later writes to the columns it is "
        "computed from leave as it is",
        quote_identifier(live.name), "1", blocking=False, sample=quote_identifier(generated.name),
    )


def _compared_anew(item: TableDiff, key_column: str, converted: set[str]) -> bool:
    """Whether the rebuild changes how a key column's values compare: a CAST or filled NULLs change
    them, another collation compares them otherwise (two keys can become one either way)."""
    if fold_name(key_column) in converted:
        return True
    new = item.desired.column(key_column)
    sources = {fold_name(new): old for new, old in item.column_sources}
    old = item.live.column(sources.get(fold_name(key_column), key_column))
    return new is not None and old is not None and (new.collate or "BINARY").upper() != (old.collate or "BINARY").upper()


ROWID_NAMES = ("rowid", "_rowid_", "oid")


def rowid_name(table: Table) -> str | None:
    """The name that reaches ``table``'s rowid: the first of SQLite's three that no column takes (a
    column named ``oid`` hides only that one); None for a table without rowids or with all three taken."""
    if not table.has_rowid:
        return None
    taken = {fold_name(column.name) for column in table.columns}
    return next((name for name in ROWID_NAMES if name not in taken), None)


def key_term(name: str) -> str:
    """SQL for one key column of a copy, or the rowid under the name ``rowid_name`` chose (left bare:
    quoted, it would read a column of that name)."""
    return name if name in ROWID_NAMES else quote_identifier(name)


def _folded_key(table: Table) -> set[str]:
    return {fold_name(name) for name in table.primary_key}


def _key_text(key: tuple[str, ...]) -> str:
    """SQL giving a row's key (the sample a check names): the value itself for one column, the
    values as SQL literals in parentheses for several."""
    terms = [key_term(name) for name in key]
    if len(terms) <= 1:
        return terms[0] if terms else "NULL"
    return "'(' || " + " || ', ' || ".join(f"quote({term})" for term in terms) + " || ')'"


def new_rows_projection(item: TableDiff, where: str = "") -> str:
    """The live rows as the new table would hold them, under the new column names (what the
    data checks of a table change query, before anything runs); ``where`` (`` WHERE …`` over
    the live table) narrows it to some rows."""
    return _plan_copy(item, where).projection


PlannedParents = Mapping[str, "tuple[str, Mapping[str, str], Table] | None"]
"""The tables a plan renames or changes, and the tables it creates, by folded desired name: the
live name, the live column names (by folded desired name) and the desired table of the first,
None for the second. The data checks read the live tables, before anything runs."""


@dataclass(frozen=True)
class LiveParent:
    """A foreign key's parent as the data checks read it: its live name and referenced columns, and
    the collations those columns get in the migration (None: they keep theirs)."""

    name: str
    columns: tuple[str, ...]
    collations: tuple[str, ...] | None = None


CREATED_PARENT = LiveParent("", ())
"""A foreign key's parent that the plan creates: it holds no rows while the data checks run."""


def _parent_as_live(key: ForeignKey, live_schema: Schema, parents: PlannedParents) -> LiveParent | None:
    """A foreign key's parent as the data checks read it; ``CREATED_PARENT`` for a parent the plan
    creates; None for a parent that is not a live table (nor created), or lacks a referenced column."""
    folded = fold_name(key.ref_table)
    name, referenced, collations = key.ref_table, key.ref_columns, None
    if folded in parents:
        planned = parents[folded]
        if planned is None:
            return CREATED_PARENT
        name, columns, desired = planned
        referenced = tuple(columns.get(fold_name(column), column) for column in key.ref_columns)
        wanted = [desired.column(column) for column in key.ref_columns]
        collations = tuple((column.collate or "BINARY") if column else "BINARY" for column in wanted)
    parent = live_schema.table(name)
    if parent is None or not referenced or any(parent.column(column) is None for column in referenced):
        return None
    return LiveParent(parent.name, tuple(referenced), collations)


def copy_columns(item: TableDiff) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The rebuild's row copy: the new table's columns it fills, and the SQL over the live table
    that fills each one."""
    copy = _plan_copy(item)
    return copy.targets, copy.terms


def rebuild_after_renames(
    item: TableDiff,
    live_schema: Schema,
    converted: frozenset[tuple[str, str]] = frozenset(),
    released: frozenset[tuple[str, str]] = frozenset(),
    parents: PlannedParents | None = None,
) -> list[Operation]:
    """Column renames in place first (SQLite then rewrites views, triggers and indexes that name
    the columns), then the rebuild of the renamed table. The data checks still read the table
    as it is before anything runs, so they come from the plan of the unrenamed table."""
    renames = [change for change in item.changes if isinstance(change, RenameColumn)]
    if not renames:
        return [rebuild_table(item, live_schema, converted, released, parents)]
    name = item.desired.name
    before = rebuild_table(item, live_schema, converted, released, parents)
    mapping = {fold_name(old): new for new, old in item.column_sources if fold_name(old) != fold_name(new)}
    renamed = TableDiff(
        live=_rename_columns(item.live, mapping),
        desired=item.desired,
        rename=item.rename,
        changes=tuple(change for change in item.changes if not isinstance(change, RenameColumn)),
        column_sources=tuple((new, mapping.get(fold_name(old), old)) for new, old in item.column_sources),
        existing_links=item.existing_links,
        fresh_columns=item.fresh_columns,
    )
    after = rebuild_table(renamed, live_schema, converted, released, parents)
    operations = [
        Operation(
            "rename_column", name, f"rename column {name}.{change.old} to {change.new}",
            (render_rename_column(name, change.old, change.new),),
        )
        for change in renames
    ]
    operations.append(replace(after, checks=before.checks, problems=before.problems, rebuild=before.rebuild))
    return operations


def _rename_columns(table: Table, mapping: dict[str, str]) -> Table:
    """The live table as it reads after the in-place column renames."""
    def new(name: str) -> str:
        return mapping.get(fold_name(name), name)

    return replace(
        table,
        columns=tuple(replace(column, name=new(column.name)) for column in table.columns),
        primary_key=tuple(new(name) for name in table.primary_key),
        uniques=tuple(replace(unique, columns=tuple(new(name) for name in unique.columns)) for unique in table.uniques),
        foreign_keys=tuple(replace(key, columns=tuple(new(name) for name in key.columns)) for key in table.foreign_keys),
        indexes=tuple(replace(index, columns=tuple(new(name) for name in index.columns)) for index in table.indexes),
    )


def rebuild_table(
    item: TableDiff,
    live_schema: Schema,
    converted_in_plan: frozenset[tuple[str, str]] = frozenset(),
    released: frozenset[tuple[str, str]] = frozenset(),
    parents: PlannedParents | None = None,
) -> Operation:
    """One rebuild carrying every change to the table (lang_altertable.html, section 7).
    ``converted_in_plan``: (table, column) of every column the plan casts; ``released``: (child,
    parent) pairs whose references the migration removes (all names live and folded);
    ``parents``: where the tables the plan renames or creates are while the data checks run.

    The table's triggers and hand-made indexes are dropped with it; the rehearsal reads their
    SQL as it stands right before the rebuild (after any renames SQLite applied to it) and
    appends it, so no SQL text is ever rewritten here.

    The columns keep their live order (new ones go last, as ADD COLUMN would put them): the
    diff ignores order, so a rebuild never reorders what positional SQL of yours relies on."""
    item = replace(item, desired=_in_live_order(item))
    live, desired = item.live, item.desired
    name = desired.name
    temporary = REBUILD_PREFIX + name
    sources = {fold_name(new): old for new, old in item.column_sources}
    copy = _plan_copy(item)
    projection = copy.projection
    checks: list[DataCheck] = list(copy.conversions)
    problems: list[str] = []
    for column_name in copy.missing:
        checks.append(
            row_check(
                name, column_name, "rows exist but the new NOT NULL column has no default to fill them",
                projection, "1", blocking=True, sample=SAMPLE, sample_key=copy.sample_key,
            )
        )
    for column in desired.columns:
        old_name = sources.get(fold_name(column.name))
        old_column = live.column(old_name) if old_name is not None else None
        if column.not_null and column.generated is None and column.default is None and old_column is not None and not old_column.not_null:
            checks.append(
                row_check(
                    name, column.name, "rows hold NULL but the column becomes NOT NULL with no default",
                    projection, f"{quote_identifier(column.name)} IS NULL", blocking=True, sample=SAMPLE,
                    sample_key=copy.sample_key,
                )
            )
    converted = {fold_name(change.column) for change in copy.value_changes}
    if desired.primary_key and (_key_changed(item) or any(_compared_anew(item, column, converted) for column in desired.primary_key)):
        checks.append(_duplicates(desired, projection, desired.primary_key, "the primary key"))
    for unique in desired.uniques:
        checks.append(
            duplicates_check(
                name, projection, unique_terms(desired, unique.columns, unique.collations), ", ".join(unique.columns),
                f"a UNIQUE constraint{f' ({unique.name})' if unique.name else ''}",
            )
        )
    for key in desired.foreign_keys:
        parent = _parent_as_live(key, live_schema, parents or {})
        if parent is None:
            continue
        if key.link not in item.existing_links:
            if parent is CREATED_PARENT:
                checks.append(references_to_a_created_table_check(name, projection, key))
            else:
                checks.append(orphans_check(name, projection, key, parent.name, new_key=True, parent_columns=parent.columns, collations=parent.collations))
        elif parent is not CREATED_PARENT and any(fold_name(column) in converted for column in key.columns):
            if any((fold_name(parent.name), fold_name(column)) in converted_in_plan for column in parent.columns):
                continue  # the parent's key is cast too: left to the final foreign-key check
            copied = dict(zip(copy.targets, copy.terms, strict=True))
            if any(quote_identifier(column) not in copied or fold_name(column) not in sources for column in key.columns):
                checks.append(
                    orphans_check(name, projection, key, parent.name, new_key=False, parent_columns=parent.columns, collations=parent.collations)
                )
                continue
            pairs = [(copied[quote_identifier(column)], quote_identifier(sources[fold_name(column)])) for column in key.columns]
            checks.append(converted_orphans_check(name, live.name, key, parent.name, pairs, parent.columns, parent.collations))
    checks.extend(_children_losing_their_parent(item, live_schema, copy.value_changes, converted_in_plan, released))
    owned: list[tuple[str | None, Check]] = [(None, check) for check in desired.checks]
    owned += [(column.name, check) for column in desired.columns for check in column.checks]
    for owner, check in owned:
        named = f"CONSTRAINT {check.name} " if check.name else ""
        checks.append(
            row_check(
                name, owner, f"rows violate {named}CHECK ({' '.join(check.sql.split())})", projection,
                f"NOT {parenthesized(check.sql)}", blocking=True,
                sample=SAMPLE if owner is None else f"{SAMPLE}, {quote_identifier(owner)}", sample_key=copy.sample_key,
            )
        )
    for index in desired.indexes:
        if index.unique:
            checks.append(unique_index_check(desired, projection, index))
    keep_out = {fold_name(index.name) for index in desired.indexes}
    keep_out |= {fold_name(change.index.name) for change in item.changes if isinstance(change, DropIndex)}
    named_before, rows_named_before = _as_named_before(item, projection)
    for index in _replayed_unique_indexes_whose_values_change(item, keep_out, converted):
        checks.append(unique_index_check(named_before, rows_named_before, index))
    statements = [render_create_table(created_table(item), name=temporary)]
    row_copy = None
    if copy.targets:
        insert = (
            f"INSERT INTO {quote_identifier(temporary)} ({', '.join(copy.targets)}) "
            f"SELECT {', '.join(copy.terms)} FROM {quote_identifier(name)}"
        )
        row_copy = RowCopy(len(statements), name, f"{insert} WHERE {PROGRESS_FUNCTION}()", copy.chunk_key)
        statements.append(insert)
    early = indexes_built_on_the_copy(live, desired, live_schema)
    own = {fold_name(index.name): index.name for index in live.indexes}
    statements.extend(render_drop_index(own[fold_name(index.name)]) for index in early if fold_name(index.name) in own)
    statements.extend(render_create_index(replace(index, table=temporary)) for index in early)
    if live.autoincrement and desired.autoincrement:
        statements.extend(carry_sequence(name, temporary))
    statements.append(render_drop_table(name))
    statements.append("PRAGMA legacy_alter_table = ON")
    statements.append(render_rename_table(temporary, name))
    statements.append("PRAGMA legacy_alter_table = OFF")
    statements.extend(render_create_index(index) for index in desired.indexes if index not in early)
    return Operation(
        kind="rebuild_table",
        table=name,
        description=f"rebuild table {name}: " + "; ".join([*(describe_change(change) for change in item.changes), *_respelled(item)]),
        statements=tuple(statements),
        destructive=any(isinstance(change, DropColumn) and not change.owned for change in item.changes),
        checks=(*_drop_checks(item), *checks),
        problems=tuple(problems),
        copy=row_copy,
        replay=Replay(name, frozenset(keep_out)),
        rebuild=item,
    )


def indexes_built_on_the_copy(live: Table, desired: Table, live_schema: Schema) -> tuple[Index, ...]:
    """The new shape's indexes a rebuild creates on the filled copy, before it drops the old table:
    all of them but those whose names another table's index or another object holds (the old
    table's own index of that name is dropped first). Built then, they take new pages at the end of
    the file; built after the drop, they would reuse the old table's freed pages, whose old contents
    a rollback journal must first save (measured: about a tenth of a 1M-row rebuild). Their SQL then
    reads as SQLite's rename writes it (``ON "table"``), like the rebuilt table's own."""
    own = {fold_name(index.name) for index in live.indexes}
    taken = {fold_name(table.name) for table in live_schema.tables}
    taken |= {fold_name(index.name) for table in live_schema.tables for index in table.indexes} - own
    taken |= {fold_name(view.name) for view in live_schema.views} | {fold_name(trigger.name) for trigger in live_schema.triggers}
    taken |= {fold_name(virtual.name) for virtual in live_schema.virtual_tables}
    return tuple(index for index in desired.indexes if index.sql is None and fold_name(index.name) not in taken)


def _children_losing_their_parent(
    item: TableDiff,
    live_schema: Schema,
    changes: tuple[ValueChange, ...],
    converted_in_plan: frozenset[tuple[str, str]],
    released: frozenset[tuple[str, str]],
) -> list[DataCheck]:
    """Rows of tables referencing this one whose parent's key the rebuild converts with a loss (a TEXT
    key 'x' turning INTEGER becomes 0): they would lose their parent (a connection enforcing foreign
    keys refuses that at the end of the migration; one that does not would keep broken references),
    so the plan names them whatever ``PRAGMA foreign_keys`` says. A child whose referencing columns
    the plan casts too is left to the final foreign-key check; one the migration drops, or leaves
    without a foreign key to this table (``released``), has no parent to lose."""
    live = item.live
    sources = {fold_name(new): old for new, old in item.column_sources}
    lossy = {
        fold_name(sources[fold_name(change.column)]): change.cast
        for change in changes
        if change.cast is not None and fold_name(change.column) in sources
    }
    found: list[DataCheck] = []
    for child in live_schema.tables:
        if (fold_name(child.name), fold_name(live.name)) in released:
            continue
        for key in child.foreign_keys:
            referenced = key.ref_columns or live.primary_key
            if fold_name(key.ref_table) != fold_name(live.name):
                continue
            rematched = _rematched_keys(item, child, key.columns, referenced, lossy)  # also where no value changes
            if rematched is not None:
                found.append(rematched)
            if not any(fold_name(name) in lossy for name in referenced):
                continue
            if any((fold_name(child.name), fold_name(column)) in converted_in_plan for column in key.columns):
                continue
            conditions = []
            for name in referenced:
                cast, column = lossy.get(fold_name(name)), live.column(name)
                if cast is not None and column is not None:
                    conditions.append(lossy_condition(quote_identifier(column.name), cast, column.affinity))
            parents = f"SELECT {', '.join(quote_identifier(name) for name in referenced)} FROM {quote_identifier(live.name)} WHERE {' OR '.join(conditions)}"
            columns = ", ".join(quote_identifier(name) for name in key.columns)
            check = row_check(
                child.name, ", ".join(key.columns),
                f"rows reference rows of {live.name} whose {', '.join(referenced)} the conversion would change, so they would lose their parent",
                quote_identifier(child.name), f"({columns}) IN ({parents})", blocking=True, sample=columns,
            )
            found.append(check)  # whatever PRAGMA foreign_keys says: the migration itself would orphan them
    return found


def _rematched_keys(
    item: TableDiff, child: Table, columns: tuple[str, ...], referenced: tuple[str, ...], lossy: dict[str, str]
) -> DataCheck | None:
    """Rows of ``child`` whose parent the rebuilt key no longer matches although nothing is lost in
    the copy: SQLite matches a child value under the parent column's collation and type affinity,
    so a new collation (a child 'A' finds the parent 'a' under NOCASE, not under BINARY) or a new
    affinity (a child '01' finds the INTEGER parent 1, not the TEXT parent '1') can orphan it. None
    when the referenced columns keep both. Parents whose key the copy changes (``lossy``: the casts
    of the referenced columns that change some values) are left to the check of those."""
    if len(columns) != len(referenced):
        return None
    sources = {fold_name(old): new for new, old in item.column_sources}
    pairs = []
    changed = False
    for child_column, name in zip(columns, referenced, strict=True):
        old = item.live.column(name)
        new_name = sources.get(fold_name(name))
        new = item.desired.column(new_name) if new_name is not None else None
        if old is None or new is None:
            return None
        recollated = fold_name(old.collate or "BINARY") != fold_name(new.collate or "BINARY")
        converted = old.affinity != new.affinity
        changed = changed or recollated or converted
        parent_term = f"CAST(p.{quote_identifier(old.name)} AS {new.affinity})" if converted else f"p.{quote_identifier(old.name)}"
        pairs.append((quote_identifier(child_column), quote_identifier(old.name), parent_term, new.collate or "BINARY"))
    if not changed:
        return None
    alias = "_pydsqlite_child"
    present = " AND ".join(f"{alias}.{column} IS NOT NULL" for column, _, _, _ in pairs)
    # "+child" has no affinity: the comparison applies the parent's to it, as a foreign key's lookup does
    before = " AND ".join(f"p.{parent} = +{alias}.{column}" for column, parent, _, _ in pairs)
    for name in referenced:  # a parent the copy changes is named by the conversion's own check
        key_column = item.live.column(name)
        if fold_name(name) in lossy and key_column is not None:
            before += f" AND NOT ({lossy_condition(f'p.{quote_identifier(key_column.name)}', lossy[fold_name(name)], key_column.affinity)})"
    after = " AND ".join(f"{term} = +{alias}.{column} COLLATE {collation}" for column, _, term, collation in pairs)
    parent = quote_identifier(item.live.name)
    condition = f"{present} AND EXISTS (SELECT 1 FROM {parent} AS p WHERE {before}) AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {after})"
    sample = ", ".join(f"{alias}.{column}" for column, _, _, _ in pairs)
    return row_check(
        child.name, ", ".join(columns),
        f"rows reference rows of {item.live.name} that the new type or collation of {', '.join(referenced)} no longer "
        "matches, so they would lose their parent",
        f"{quote_identifier(child.name)} AS {alias}", condition, blocking=True, sample=sample,
    )


def created_table(item: TableDiff) -> Table:
    """The new table a rebuild creates: the desired one, except that a column whose model default is
    never compared (a date, time, datetime or UUID, often computed at import) keeps the DEFAULT the
    live column has (a hand-made ``DEFAULT CURRENT_TIMESTAMP`` that SQL writers rely on), as it does
    when no rebuild happens."""
    sources = {fold_name(new): old for new, old in item.column_sources}
    columns = []
    for column in item.desired.columns:
        old = item.live.column(sources[fold_name(column.name)]) if fold_name(column.name) in sources else None
        if not column.stable_default and old is not None and old.default is not None and column.generated is None:
            column = replace(column, default=old.default)
        columns.append(column)
    return replace(item.desired, columns=tuple(columns))


def _in_live_order(item: TableDiff) -> Table:
    position = {fold_name(live_name): index for index, live_name in enumerate(item.live.column_names)}
    source = {fold_name(new): fold_name(old) for new, old in item.column_sources}
    new_last = len(position)
    ordered = sorted(
        item.desired.columns, key=lambda column: position.get(source.get(fold_name(column.name), ""), new_last)
    )
    return replace(item.desired, columns=tuple(ordered))


def _as_named_before(item: TableDiff, projection: str) -> tuple[Table, str]:
    """The new table and the rows the copy makes (``projection``) with each column under the name it has
    now, which a hand-made index's SQL still uses when it is replayed (renames, swaps included); new
    columns keep their names, unless one is taken by a column renamed away (no such index reads them)."""
    renamed = {fold_name(new): old for new, old in item.column_sources if fold_name(new) != fold_name(old)}
    if not renamed:
        return item.desired, projection
    taken = {fold_name(old) for old in renamed.values()}
    kept = [column for column in item.desired.columns if fold_name(column.name) in renamed or fold_name(column.name) not in taken]
    before = [replace(column, name=renamed.get(fold_name(column.name), column.name)) for column in kept]
    terms = ", ".join(f"{quote_identifier(new.name)} AS {quote_identifier(old.name)}" for new, old in zip(kept, before, strict=True))
    return replace(item.desired, columns=tuple(before)), f"(SELECT {terms}, {SAMPLE} FROM {projection})"


def _replayed_unique_indexes_whose_values_change(item: TableDiff, not_replayed: set[str], converted: set[str]) -> list[Index]:
    """The unique indexes the rebuild replays as written (hand-made ones) over a column whose values or
    collation change (``converted``: folded new names of columns the copy casts or fills): rows that
    were distinct may collide (``1`` and ``'1'`` cast to TEXT, NULLs filled with ``''``,
    case-duplicates under a new NOCASE), and recreating the index would fail with a bare UNIQUE
    error. Their terms and WHERE name the columns as they are now (see ``_as_named_before``)."""
    new_name = {fold_name(old): new for new, old in item.column_sources}

    def reads_converted(sql: str) -> bool:
        return bool({fold_name(new_name.get(fold_name(name), name)) for name in identifiers_in(sql)} & converted)

    found = []
    for index in item.live.indexes:
        if not index.unique or fold_name(index.name) in not_replayed:
            continue
        columns: list[str] = []
        changes = False
        for written in parse_index_terms(index.sql) if index.sql else index.columns:  # `h COLLATE BINARY` keeps BINARY
            term = strip_sort_order(written)
            old = item.live.column(_single_name(term) or term)
            new = item.desired.column(new_name.get(fold_name(old.name), "")) if old is not None else None
            if old is not None and new is None:  # a dropped column: the replay reports the index as broken
                break
            if old is not None and new is not None:
                changes |= (old.collate or "BINARY").upper() != (new.collate or "BINARY").upper() or fold_name(new.name) in converted
                columns.append(old.name)
            else:  # an expression: it changes when a column it reads does
                changes |= reads_converted(term)
                columns.append(term)
        else:
            if changes or (index.where and reads_converted(index.where)):
                found.append(replace(index, columns=tuple(columns)))
    return found


def _single_name(term: str) -> str | None:
    """The column an index term names when it is just a name, however written: ``"email"``,
    ``[email]``, ```email```, ``(email)``."""
    tokens = tokenize(term)
    while len(tokens) >= 3 and tokens[0].text == "(" and tokens[-1].text == ")":
        tokens = tokens[1:-1]
    if len(tokens) == 1 and tokens[0].kind in ("word", "quoted"):
        return tokens[0].identifier
    return None


def _duplicates(table: Table, projection: str, columns: tuple[str, ...], what: str) -> DataCheck:
    return duplicates_check(table.name, projection, unique_terms(table, columns), ", ".join(columns), what)


def unique_index_check(table: Table, projection: str, index: Index) -> DataCheck:
    """Rows of ``projection`` (the rows as ``table`` will hold them) that a new unique index refuses."""
    return duplicates_check(
        table.name, projection, unique_terms(table, index.columns), ", ".join(index.columns),
        f"unique index {index.name}", index.where,
    )


def _key_changed(item: TableDiff) -> bool:
    return any(isinstance(change, ChangePrimaryKey) for change in item.changes)


def renamed_columns(item: TableDiff) -> dict[str, str]:
    """Folded desired column name → its live name, for columns the plan renames."""
    return {fold_name(new): old for new, old in item.column_sources if fold_name(new) != fold_name(old)}


def _drop_checks(item: TableDiff) -> list[DataCheck]:
    return [
        dropped_values_check(item.desired.name, item.live.name, change.column)
        for change in item.changes
        if isinstance(change, DropColumn) and not change.owned
    ]


def _value_change(old: Column, new: Column, live: Table, desired: Table) -> ValueChange:
    """What copying ``old`` into ``new`` does to its values.

    Values are cast when the new column converts them differently (another affinity, or
    STRICT typing where there was none); an untyped column and a STRICT ``ANY`` column
    store values as they are, so nothing is cast into them. NULLs take the default of a
    column that becomes NOT NULL with one."""
    cast = None
    target = column_affinity(new, desired)
    if new.type and target is not None and (column_affinity(old, live) != target or (desired.strict and not live.strict)):
        cast = target
    null_default = new.default if new.not_null and new.default is not None and not old.not_null else None
    return ValueChange(desired.name, new.name, cast, null_default)


def value_changes(item: TableDiff) -> tuple[ValueChange, ...]:
    """How rebuilding ``item`` changes the values it copies, column by column (only the columns it
    changes): the stored states of a synced table's deleted rows must change the same way."""
    return _plan_copy(item).value_changes


def carry_sequence(old: str, temporary: str) -> list[str]:
    """Keep AUTOINCREMENT's high-water mark: copy ``sqlite_sequence`` to the new table before the drop.
    Its rows carry each table's name as created, so they are matched as SQLite matches table names
    (ASCII case ignored): a model spelling ``jobs`` finds the counter of a table made as ``JOBS``."""
    old_literal, new_literal = f"{quote_literal(old)} COLLATE NOCASE", f"{quote_literal(temporary)} COLLATE NOCASE"
    old_seq = f"(SELECT seq FROM sqlite_sequence WHERE name = {old_literal})"
    return [
        f"UPDATE sqlite_sequence SET seq = MAX(seq, {old_seq}) WHERE name = {new_literal} AND {old_seq} IS NOT NULL",
        f"INSERT INTO sqlite_sequence (name, seq) SELECT {quote_literal(temporary)}, seq FROM sqlite_sequence "
        f"WHERE name = {old_literal} AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = {new_literal})",
    ]
