"""The neutral, immutable schema model that every pipeline stage passes to the next.

Both ``compile`` (from models) and ``introspect`` (from a live database) produce a
``Schema``; ``diff`` and ``plan`` are pure functions of two of them.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, dataclass, field, fields
from functools import cached_property, lru_cache
from typing import Any, TypeVar

LWW_SUFFIX = "__hlc"
"""Suffix of the hidden TEXT column that holds the HLC timestamp of an LWW column."""
VERSION_COLUMN = "_pydsqlite_version"
"""Hidden column of synced tables: the HLC timestamp of the last write to the row's non-LWW columns."""
SEQ_COLUMN = "_pydsqlite_seq"
"""Hidden column of synced tables: this replica's change sequence number of the row (the feed's cursor)."""


@lru_cache(maxsize=16384)
def fold_name(name: str) -> str:
    """The case-folded form SQLite uses to compare identifiers (ASCII letters only).

    Cached: planning compares the same few names thousands of times.
    """
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@lru_cache(maxsize=4096)
def normalize_type(declared: str) -> str:
    """Canonical spelling of a declared column type (upper case, single spaces).

    Cached: every column built (compiled or read) normalises its type, and types repeat."""
    return " ".join(declared.split()).upper()


def type_affinity(declared: str) -> str:
    """SQLite's column affinity for a declared type (rules of datatype3.html, section 3.1)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"


def column_affinity(column: Column, table: Table) -> str | None:
    """How ``table`` converts values stored in ``column``: an affinity, or None when values are
    stored exactly as given (a STRICT table's ``ANY`` column)."""
    if table.strict and column.type == "ANY":
        return None
    return column.affinity


_Record = TypeVar("_Record")


def _filled_at_once(cls: type[_Record]) -> type[_Record]:
    """Give a frozen dataclass an ``__init__`` that fills the instance dict in one update.

    The generated one assigns each field through ``object.__setattr__`` (five microseconds for a
    ``Column``), and a plan builds an object per column of every table it reads or compiles. Same
    signature, annotations, defaults and ``__post_init__``; instances stay frozen."""
    items = fields(cls)  # type: ignore[arg-type]
    defaults = {f"_default_{item.name}": item.default for item in items if item.default is not MISSING}
    parameters = ", ".join(f"{item.name}=_default_{item.name}" if f"_default_{item.name}" in defaults else item.name for item in items)
    body = f"self.__dict__.update({', '.join(f'{item.name}={item.name}' for item in items)})"
    if hasattr(cls, "__post_init__"):
        body += "\n        self.__post_init__()"
    source = f"def _make({', '.join(defaults)}):\n    def __init__(self, {parameters}):\n        {body}\n    return __init__\n"
    made: dict[str, Any] = {}
    exec(source, sys.modules[cls.__module__].__dict__, made)  # noqa: S102 - text built from field names; defines only _make, in `made`
    init = made["_make"](**defaults)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {**{item.name: item.type for item in items}, "return": None}
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


CONFLICT_ACTIONS = ("ROLLBACK", "ABORT", "FAIL", "IGNORE", "REPLACE")
"""What an ON CONFLICT clause may say; ABORT is what a constraint does without one."""


def conflict_action(action: str | None) -> str:
    """The ON CONFLICT action a constraint takes (ABORT unless it says otherwise)."""
    return action or "ABORT"


@dataclass(frozen=True)
class Check:
    """A CHECK constraint: its expression as written, and its CONSTRAINT name (which SQLite
    reports when a row violates it)."""

    sql: str
    name: str | None = None


@_filled_at_once
@dataclass(frozen=True)
class UniqueConstraint:
    """A UNIQUE constraint written in CREATE TABLE (models declare unique indexes instead).

    ``collations`` holds the collation each column compares with (upper-case), as SQLite
    reports it; empty means each column's own."""

    columns: tuple[str, ...]
    collations: tuple[str, ...] = ()
    descending: tuple[bool, ...] = ()
    on_conflict: str | None = None
    name: str | None = None


@_filled_at_once
@dataclass(frozen=True)
class Column:
    """One physical column.

    ``default``, ``checks`` and ``generated`` hold SQL expression text exactly as it
    appears in the CREATE TABLE statement. ``renamed_from`` is only set on desired
    columns; ``lww`` marks a column whose companion ``<name>__hlc`` exists;
    ``on_conflict`` is the action of its NOT NULL constraint.
    """

    name: str
    type: str = ""
    not_null: bool = False
    default: str | None = None
    checks: tuple[Check, ...] = ()
    on_conflict: str | None = None
    collate: str | None = None
    generated: str | None = None
    generated_stored: bool = False
    lww: bool = False
    renamed_from: tuple[str, ...] = ()
    stable_default: bool = True
    """False for a model default of a date, time, datetime or UUID value, which is often computed
    at import time (``datetime.now()``): its SQL DEFAULT is written but never compared, so a
    default that differs on every start never causes a migration. A field with no SQL default
    (``None``, a ``default_factory``) compares as any: a DEFAULT the table has is planned away."""
    hidden: bool = False
    """A sync column pydsqlite adds itself (LWW companion, row version, change sequence); set by
    compile only, so pydsqlite records exactly the columns it created."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", normalize_type(self.type))

    @property
    def affinity(self) -> str:
        return type_affinity(self.type)

    @property
    def is_lww_companion(self) -> bool:
        return self.name.endswith(LWW_SUFFIX)


@_filled_at_once
@dataclass(frozen=True)
class ForeignKey:
    """A foreign key from ``columns`` to ``ref_columns`` of ``ref_table``."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str = "NO ACTION"
    on_update: str = "NO ACTION"
    deferred: bool = False
    """DEFERRABLE INITIALLY DEFERRED: checked at COMMIT instead of at each statement."""
    name: str | None = field(default=None, compare=False)

    @property
    def link(self) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
        """What the key connects, case-folded: (columns, parent table, parent columns)."""
        return (
            tuple(fold_name(c) for c in self.columns),
            fold_name(self.ref_table),
            tuple(fold_name(c) for c in self.ref_columns),
        )


@_filled_at_once
@dataclass(frozen=True)
class Index:
    """An index created with CREATE INDEX; ``columns`` are column names or expression text."""

    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str | None = None
    sql: str | None = None
    """The live CREATE INDEX text (introspected indexes only), replayed verbatim for hand-made indexes."""


@dataclass(frozen=True)
class Trigger:
    """A trigger, kept as its CREATE TRIGGER text."""

    name: str
    table: str
    sql: str


@dataclass(frozen=True)
class View:
    """A view, kept as its CREATE VIEW text."""

    name: str
    sql: str


@_filled_at_once
@dataclass(frozen=True)
class Table:
    """A table: its columns in order plus keys, constraints, options and indexes."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    autoincrement: bool = False
    foreign_keys: tuple[ForeignKey, ...] = ()
    checks: tuple[Check, ...] = ()
    uniques: tuple[UniqueConstraint, ...] = ()
    """UNIQUE constraints of the CREATE TABLE text (hand-written DDL); models declare unique indexes instead."""
    primary_key_conflict: str | None = None
    primary_key_name: str | None = field(default=None, compare=False)
    strict: bool = False
    without_rowid: bool = False
    integer_key_not_rowid: bool = False
    """The key was declared ``id INTEGER PRIMARY KEY DESC`` (hand-written DDL): by SQLite's quirk
    an ordinary key, which takes NULL and text, not an alias of the rowid. Models never declare it."""
    indexes: tuple[Index, ...] = ()
    renamed_from: tuple[str, ...] = ()
    model: str | None = None
    """Qualified name of the model class this table was compiled from, for error messages."""
    sql: str | None = field(default=None, compare=False, repr=False)
    """The live CREATE TABLE text (introspected tables only)."""

    def column(self, name: str) -> Column | None:
        """The column called ``name`` (case-insensitive, as in SQLite)."""
        return self._columns_by_name.get(fold_name(name))

    @cached_property
    def _columns_by_name(self) -> dict[str, Column]:
        return {fold_name(column.name): column for column in self.columns}

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def has_rowid(self) -> bool:
        return not self.without_rowid

    @property
    def rowid_alias(self) -> str | None:
        """The INTEGER PRIMARY KEY column that aliases the rowid, if any."""
        if self.without_rowid or self.integer_key_not_rowid or len(self.primary_key) != 1:
            return None
        column = self.column(self.primary_key[0])
        if column is not None and column.type == "INTEGER":
            return column.name
        return None


@dataclass(frozen=True)
class VirtualTable:
    """A virtual table (full-text search, R*Tree…), kept as its CREATE VIRTUAL TABLE text. It is
    created and dropped whole; the shadow tables its module keeps are never planned on their own."""

    name: str
    sql: str
    columns: tuple[str, ...] = ()
    """Its columns as the live database reports them (empty when its module is not loaded)."""


@dataclass(frozen=True)
class Schema:
    """A whole database schema: tables (with their indexes), virtual tables, triggers and views.

    ``bookkeeping`` holds the CREATE text of pydsqlite's own tables, which no plan touches but
    which a rehearsal of a plan needs (triggers may write to them). ``schema_from_sql`` and
    ``schema_from_database`` make one; ``sync_schema`` migrates a database to it.

    Examples:
        >>> from pydsqlite import schema_from_sql
        >>> schema = schema_from_sql(
        ...     "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);"
        ...     "CREATE VIEW emails AS SELECT email FROM users;"
        ... )
        >>> [table.name for table in schema.tables], [view.name for view in schema.views]
        (['users'], ['emails'])
        >>> users = schema.table("USERS")  # names compare as SQLite compares them
        >>> users.column_names, users.primary_key, users.column("email").not_null
        (('id', 'email'), ('id',), True)
    """

    tables: tuple[Table, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    views: tuple[View, ...] = ()
    virtual_tables: tuple[VirtualTable, ...] = ()
    bookkeeping: tuple[str, ...] = field(default=(), compare=False, repr=False)
    _by_name: dict[str, Table] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({fold_name(table.name): table for table in self.tables})

    def table(self, name: str) -> Table | None:
        """The table called ``name`` (SQLite names are case-insensitive)."""
        return self._by_name.get(fold_name(name))
