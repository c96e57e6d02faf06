"""Pipeline stage 2: read the live database into a ``Schema`` (the only stage that reads schema).

PRAGMA table_xinfo / index_list / index_xinfo / foreign_key_list give columns, keys
and indexes; the CREATE text in ``sqlite_master`` gives what they do not report
(CHECK, COLLATE, AUTOINCREMENT, STRICT, WITHOUT ROWID, partial-index WHERE).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..engines import Engine
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
    fold_name,
    normalize_type,
)
from ..sql.ddl import TableExtras, default_as_text, parse_create_table, parse_index_terms, parse_index_where
from .metadata import (
    COLUMNS_RECORDED,
    DATA_STEPS_TABLE,
    METADATA_PREFIX,
    MIGRATIONS_TABLE,
    OBJECTS_TABLE,
    ONLINE_PREFIX,
    STATE_TABLE,
    AppliedMigration,
    ManagedObjects,
)
from .pragmas import ForeignKeyRow, IndexPragmas, TablePragmas, read_pragmas


def introspect(engine: Engine) -> Schema:
    """The live schema of the ``main`` database, leaving out SQLite's own tables; pydsqlite's
    bookkeeping tables are kept apart, and the shadow tables of virtual tables left out."""
    rows = engine.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master ORDER BY rowid"
    ).fetchall()
    index_sql = {fold_name(name): sql for kind, name, _, sql in rows if kind == "index" and sql}
    indexes_of: dict[str, list[str]] = defaultdict(list)
    for kind, _, table_name, sql in rows:
        if kind == "index" and sql:
            indexes_of[fold_name(table_name)].append(sql)
    shadows = shadow_tables(engine, rows)
    ordinary: list[tuple[str, str, tuple[str, ...]]] = []
    virtual_tables = []
    bookkeeping = []
    triggers = []
    views = []
    for kind, name, table_name, sql in rows:
        if kind == "table":
            folded = fold_name(name)
            if folded.startswith(("sqlite_", ONLINE_PREFIX)) or not sql or folded in shadows:
                continue
            if folded.startswith(METADATA_PREFIX):
                bookkeeping.append(sql)
            elif _is_virtual(sql):
                virtual_tables.append(VirtualTable(name=name, sql=sql, columns=_virtual_columns(engine, name)))
            else:
                ordinary.append((name, sql, tuple(indexes_of.get(folded, ()))))
        elif kind == "trigger" and not fold_name(name).startswith(ONLINE_PREFIX):
            triggers.append(Trigger(name=name, table=table_name, sql=sql))
        elif kind == "view":
            views.append(View(name=name, sql=sql))
    return Schema(
        tables=tuple(_resolve_implicit_references(_read_tables(engine, ordinary, index_sql))),
        triggers=tuple(triggers),
        views=tuple(views),
        virtual_tables=tuple(virtual_tables),
        bookkeeping=tuple(bookkeeping),
    )


def _is_virtual(sql: str | None) -> bool:
    return sql is not None and " ".join(sql.split()[:2]).upper() == "CREATE VIRTUAL"


def shadow_tables(engine: Engine, master_rows: list[tuple[str, str, str, str | None]]) -> frozenset[str]:
    """Folded names of the tables virtual tables keep their data in, given ``sqlite_master``'s
    (type, name, tbl_name, sql) rows (SQLite 3.37+ says which; before that, the tables named
    ``<virtual table>_…``, as every built-in module names them)."""
    virtual_names = [name for kind, name, _, sql in master_rows if kind == "table" and _is_virtual(sql)]
    if not virtual_names:
        return frozenset()
    try:
        rows = engine.execute("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'").fetchall()
        return frozenset(fold_name(name) for (name,) in rows)
    except engine.OperationalError:
        prefixes = tuple(fold_name(name) + "_" for name in virtual_names)
        rows = engine.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'").fetchall()
        return frozenset(fold_name(name) for (name,) in rows if fold_name(name).startswith(prefixes))


def _virtual_columns(engine: Engine, name: str) -> tuple[str, ...]:
    try:
        rows = engine.execute("SELECT name FROM pragma_table_xinfo(?, 'main') WHERE hidden = 0", (name,)).fetchall()
    except engine.OperationalError:  # its module is not loaded on this connection
        return ()
    return tuple(row[0] for row in rows)


_tables_read: dict[tuple[str, str, str, tuple[str, ...]], Table] = {}
"""Tables as read before, by engine kind, name, CREATE TABLE text and CREATE INDEX texts (in the
order SQLite lists them): what the PRAGMAs say about a table is a function of exactly these."""
_TABLES_KEPT = 10_000


def forget_tables_read() -> None:
    """Drop the tables kept from earlier reads, so the next introspection reads every table afresh
    (the benchmarks measure a plan over tables never seen before with it)."""
    _tables_read.clear()


def _read_tables(engine: Engine, tables: list[tuple[str, str, tuple[str, ...]]], index_sql: dict[str, str]) -> list[Table]:
    """Each (name, CREATE TABLE text, CREATE INDEX texts) read into a ``Table``: the PRAGMAs of the
    tables not read before from the same texts in one go, the others as read then (a migration reads
    the live schema several times, and most tables never change between two plans)."""
    keys = [(engine.name, name, sql, index_texts) for name, sql, index_texts in tables]
    known = [_tables_read.get(key) for key in keys]  # looked up once: another thread may clear the cache meanwhile
    unread = [name for (name, _, _), table in zip(tables, known, strict=True) if table is None]
    pragmas = read_pragmas(engine, unread) if unread else {}
    if len(_tables_read) + len(unread) > _TABLES_KEPT:
        _tables_read.clear()
    read = []
    for key, (name, sql, _), table in zip(keys, tables, known, strict=True):
        if table is None:
            table = _tables_read[key] = _read_table(name, sql, index_sql, pragmas[name])
        read.append(table)
    return read


def _read_table(name: str, sql: str, index_sql: dict[str, str], pragmas: TablePragmas) -> Table:
    """One table from its PRAGMA facts and its CREATE TABLE text."""
    extras = parse_create_table(sql)
    extras_by_name = {fold_name(key): value for key, value in extras.columns.items()}
    pragma_columns = pragmas.columns
    names = {fold_name(row[0]) for row in pragma_columns}
    primary_key = tuple(column for _, column in sorted((pk, column) for column, _, _, _, pk, _ in pragma_columns if pk))
    key_extra = extras_by_name.get(fold_name(primary_key[0])) if len(primary_key) == 1 else None
    key_type = next((normalize_type(declared or "") for column, declared, *_ in pragma_columns if len(primary_key) == 1 and column == primary_key[0]), None)
    integer_key_not_rowid = key_extra is not None and key_extra.key_descending and key_type == "INTEGER" and not extras.without_rowid
    # An INTEGER PRIMARY KEY is the rowid: it can never be NULL, whatever the DDL says.
    rowid_key = primary_key[0] if len(primary_key) == 1 and key_type == "INTEGER" and not extras.without_rowid and not integer_key_not_rowid else None
    columns = []
    autoincrement = False
    for column_name, declared, not_null, default, _, hidden in pragma_columns:
        extra = extras_by_name.get(fold_name(column_name)) if extras_by_name else None
        autoincrement = autoincrement or (extra is not None and extra.autoincrement)
        columns.append(
            Column(
                name=column_name,
                type=declared or "",
                not_null=bool(not_null) or column_name == rowid_key,
                default=None if default is None else default_as_text(default) or default,
                checks=tuple(Check(text, check_name) for text, check_name in extra.checks) if extra else (),
                on_conflict=extra.not_null.on_conflict if extra and extra.not_null else None,
                collate=extra.collate if extra else None,
                generated=extra.generated if extra and hidden in (2, 3) else None,
                generated_stored=hidden == 3,
                lww=fold_name(column_name + LWW_SUFFIX) in names,
            )
        )
    uniques, indexes = _read_indexes(name, pragmas.indexes, index_sql, extras)
    key_clause = extras.primary_key or next(
        (extras_by_name[fold_name(column)].primary_key for column in primary_key if fold_name(column) in extras_by_name), None
    )
    return Table(
        name=name,
        columns=tuple(columns),
        primary_key=primary_key,
        autoincrement=autoincrement,
        foreign_keys=_read_foreign_keys(pragmas.foreign_keys, extras),
        checks=tuple(Check(text, check_name) for text, check_name in extras.checks),
        uniques=uniques,
        primary_key_conflict=key_clause.on_conflict if key_clause else None,
        primary_key_name=key_clause.name if key_clause else None,
        strict=extras.strict,
        without_rowid=extras.without_rowid,
        integer_key_not_rowid=integer_key_not_rowid,
        indexes=indexes,
        sql=sql,
    )


def _read_indexes(
    table: str, listed: list[IndexPragmas], index_sql: dict[str, str], extras: TableExtras
) -> tuple[tuple[UniqueConstraint, ...], tuple[Index, ...]]:
    uniques = []
    indexes = []
    column_collations = {fold_name(name): extra.collate for name, extra in extras.columns.items()}
    for index in listed:
        key_columns, index_name = index.key_columns, index.name
        if index.origin == "u":
            uniques.append(_unique_constraint(tuple(row[1] or "" for row in key_columns), key_columns, extras))  # a constraint's keys are columns
            continue
        if index.origin != "c" or fold_name(index_name).startswith(ONLINE_PREFIX):
            continue
        sql = index_sql.get(fold_name(index_name), "")
        # plain: bare columns compared as the columns themselves compare (an explicit COLLATE that
        # differs from the column's own is part of what the index does, and is kept as written)
        plain = all(
            cid >= 0 and not descending and (collation or "BINARY").upper() == (column_collations.get(fold_name(column or "")) or "BINARY").upper()
            for cid, column, descending, collation in key_columns
        )
        if plain:
            columns = [column or "" for _, column, _, _ in key_columns]
        else:
            terms = parse_index_terms(sql)  # expressions, DESC or COLLATE: keep the written term
            columns = [
                terms[position] if position < len(terms) else (column or "")
                for position, (_, column, _, _) in enumerate(key_columns)
            ]
        indexes.append(
            Index(
                name=index_name,
                table=table,
                columns=tuple(columns),
                unique=bool(index.unique),
                where=parse_index_where(sql) if index.partial else None,
                sql=sql,
            )
        )
    return tuple(uniques), tuple(indexes)


def _unique_constraint(columns: tuple[str, ...], key_columns: list[tuple[Any, ...]], extras: TableExtras) -> UniqueConstraint:
    """A UNIQUE constraint from PRAGMA index_xinfo (columns, collations, order) and the CREATE
    text (its name and ON CONFLICT action, written on the table or on its single column)."""
    folded = tuple(fold_name(column) for column in columns)
    clause = extras.uniques.get(folded)
    if clause is None and len(columns) == 1:
        column = next((extra for key, extra in extras.columns.items() if fold_name(key) == folded[0]), None)
        clause = column.unique if column else None
    return UniqueConstraint(
        columns=columns,
        collations=tuple((collation or "BINARY").upper() for _, _, _, collation in key_columns),
        descending=tuple(bool(descending) for _, _, descending, _ in key_columns),
        on_conflict=clause.on_conflict if clause else None,
        name=clause.name if clause else None,
    )


def _read_foreign_keys(listed: list[ForeignKeyRow], extras: TableExtras) -> tuple[ForeignKey, ...]:
    grouped: dict[int, list[ForeignKeyRow]] = defaultdict(list)
    for row in listed:
        grouped[row[0]].append(row)
    keys = []
    for fk_id in sorted(grouped, reverse=True):
        rows = grouped[fk_id]
        columns = tuple(row[3] for row in rows)
        clause = extras.foreign_keys.get(tuple(fold_name(column) for column in columns))
        if clause is None and len(columns) == 1:
            column = next((extra for key, extra in extras.columns.items() if fold_name(key) == fold_name(columns[0])), None)
            clause = column.reference if column else None
        keys.append(
            ForeignKey(
                columns=columns,
                ref_table=rows[0][2],
                ref_columns=tuple(row[4] for row in rows) if all(row[4] is not None for row in rows) else (),
                on_delete=rows[0][6].upper(),
                on_update=rows[0][5].upper(),
                deferred=clause[1] if clause else False,
                name=clause[0] if clause else None,
            )
        )
    return tuple(keys)


def _resolve_implicit_references(tables: list[Table]) -> list[Table]:
    """Spell out ``REFERENCES parent`` (no columns) as the parent's primary key, so it compares equal."""
    by_name = {fold_name(table.name): table for table in tables}
    resolved = []
    for table in tables:
        keys = []
        changed = False
        for key in table.foreign_keys:
            parent = by_name.get(fold_name(key.ref_table))
            if not key.ref_columns and parent is not None and parent.primary_key:
                key = replace(key, ref_columns=parent.primary_key)
                changed = True
            keys.append(key)
        resolved.append(replace(table, foreign_keys=tuple(keys)) if changed else table)
    return resolved


def has_object(engine: Engine, name: str, kind: str = "table") -> bool:
    """Whether the main database holds a ``kind`` (table, trigger, index, view) named ``name``."""
    return engine.execute("SELECT 1 FROM main.sqlite_master WHERE type = ? AND name = ? COLLATE NOCASE", (kind, name)).fetchone() is not None


def temp_shadows(engine: Engine, tables: Iterable[str]) -> list[str]:
    """This connection's TEMP tables and views named like one of ``tables``: SQLite resolves a
    name without a schema in ``temp`` first, so every statement of a migration would reach them."""
    names = {fold_name(name) for name in tables}
    rows = engine.execute("SELECT type, name FROM temp.sqlite_master WHERE type IN ('table', 'view')").fetchall()
    return [f"TEMP {kind} {name!r}" for kind, name in rows if fold_name(name) in names]


def read_managed_objects(engine: Engine) -> ManagedObjects:
    """The tables and indexes pydsqlite recorded as its own (empty before the first sync)."""
    if not has_object(engine, OBJECTS_TABLE):
        return ManagedObjects()
    rows = engine.execute(f"SELECT kind, name FROM {OBJECTS_TABLE}").fetchall()
    by_kind: dict[str, set[str]] = defaultdict(set)
    columns = set()
    renames = set()
    for kind, name in rows:
        if kind == "column":
            table, column = json.loads(name)
            columns.add((fold_name(table), fold_name(column)))
        elif kind == "rename":
            table, old, new = json.loads(name)
            renames.add((fold_name(table), fold_name(old), fold_name(new)))
        else:
            by_kind[kind].add(fold_name(name))
    return ManagedObjects(
        tables=frozenset(by_kind["table"]),
        indexes=frozenset(by_kind["index"]),
        views=frozenset(by_kind["view"]),
        triggers=frozenset(by_kind["trigger"]),
        columns=frozenset(columns),
        renames=frozenset(renames),
        columns_recorded=bool(columns) or COLUMNS_RECORDED in by_kind["format"],
    )


def read_migration_history(engine: Engine) -> list[AppliedMigration]:
    """Every migration pydsqlite applied to this database, oldest first."""
    if not has_object(engine, MIGRATIONS_TABLE):
        return []
    rows = engine.execute(f"SELECT id, applied_at, fingerprint, description, sql FROM {MIGRATIONS_TABLE} ORDER BY id").fetchall()
    steps: dict[int, list[str]] = defaultdict(list)
    if has_object(engine, DATA_STEPS_TABLE):
        for name, migration in engine.execute(f"SELECT name, migration_id FROM {DATA_STEPS_TABLE} ORDER BY name").fetchall():
            steps[migration].append(name)
    return [
        AppliedMigration(number, applied_at, fingerprint, description, sql, data_steps=tuple(steps.get(number, ())))
        for number, applied_at, fingerprint, description, sql in rows
    ]


def applied_data_steps(engine: Engine) -> frozenset[str]:
    """Names of the data steps already applied to this database."""
    if not has_object(engine, DATA_STEPS_TABLE):
        return frozenset()
    return frozenset(name for (name,) in engine.execute(f"SELECT name FROM {DATA_STEPS_TABLE}").fetchall())


STATE_IS_CURRENT = f"SELECT fingerprint, schema_version = (SELECT schema_version FROM pragma_schema_version) FROM {STATE_TABLE}"
"""The recorded fingerprint, and whether no schema change happened since it was recorded."""


def schema_unchanged_since_sync(engine: Engine, fingerprint: str) -> bool:
    """True when the last sync recorded ``fingerprint`` and no schema change happened since.

    Two cheap reads; any DDL by anyone bumps ``PRAGMA schema_version`` and forces a full plan.
    """
    try:
        row = engine.execute(STATE_IS_CURRENT).fetchone()
    except engine.OperationalError:
        return False
    return state_is_current(row, fingerprint)


def state_is_current(row: Any, fingerprint: str) -> bool:
    """Whether a row ``STATE_IS_CURRENT`` read says the last sync recorded ``fingerprint`` and no schema
    change happened since."""
    return row is not None and row[0] == fingerprint and bool(row[1])
