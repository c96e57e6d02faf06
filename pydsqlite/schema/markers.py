"""Field and table markers that declare storage details next to a Pydantic field.

Markers are plain objects placed in ``Annotated[...]`` metadata (or attached by
:func:`Field`); Pydantic ignores them, so they never reach ``model_json_schema()``.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

from pydantic import Field as _PydanticField
from pydantic_core import PydanticUndefined

from ..errors import UsageError

_ACTIONS = {"NO ACTION", "RESTRICT", "SET NULL", "SET DEFAULT", "CASCADE"}


@dataclass(frozen=True)
class PrimaryKey:
    """The field is (part of) the primary key; several marked fields form a composite key in field order.

    ``autoincrement=True`` (single INTEGER key only) adds SQLite's AUTOINCREMENT: ids of
    deleted rows are never reused. (A composite key can also be named with the class keyword
    ``primary_key=("a", "b")``.)

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import PrimaryKey, SyncModel, model_migration_plan
        >>> class Seat(SyncModel, table="seats"):
        ...     row: Annotated[str, PrimaryKey()]
        ...     number: Annotated[int, PrimaryKey()]
        ...     taken: bool = False
        >>> print(model_migration_plan(sqlite3.connect(":memory:"), [Seat]).sql)
        CREATE TABLE `seats` (
            `row` TEXT NOT NULL,
            `number` INTEGER NOT NULL,
            `taken` INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (`row`, `number`)
        );
        <BLANKLINE>
    """

    autoincrement: bool = False


@dataclass(frozen=True)
class Collate:
    """The column compares text with the named collation (``BINARY``, ``NOCASE``, ``RTRIM``),
    in comparisons, sorting, and the unique indexes over it.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import Collate, Database, SyncModel, col, sync_models
        >>> class Country(SyncModel, table="countries"):
        ...     name: Annotated[str, Collate("NOCASE")]
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Country])
        >>> db = Database(conn)
        >>> _ = db.insert(Country(name="New Zealand"))
        >>> db.select(Country, col("name") == "NEW ZEALAND")
        [Country(name='New Zealand')]
    """

    name: str


@dataclass(frozen=True, init=False)
class Index:
    """An index. On a field: an index on that column. As a class keyword
    (``indexes=[Index("a", "b", unique=True, name=...)]``): a composite index; without a
    name it is called ``ix_<table>_<columns>`` (``uq_…`` when unique).

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import Index, SyncModel, model_migration_plan
        >>> class Visit(SyncModel, table="visits", indexes=[Index("site", "day", unique=True)]):
        ...     site: str
        ...     day: str
        ...     user: Annotated[str, Index()]
        >>> plan = model_migration_plan(sqlite3.connect(":memory:"), [Visit])
        >>> for statement in plan.operations[0].statements[1:]:
        ...     print(statement)
        CREATE INDEX `ix_visits_user` ON `visits` (`user`)
        CREATE UNIQUE INDEX `uq_visits_site_day` ON `visits` (`site`, `day`)
    """

    columns: tuple[str, ...]
    unique: bool
    name: str | None

    def __init__(self, *columns: str, unique: bool = False, name: str | None = None) -> None:
        object.__setattr__(self, "columns", tuple(columns))
        object.__setattr__(self, "unique", unique)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True)
class Unique:
    """The column's values are unique: a unique index on it (``uq_<table>_<column>``, or ``name``).

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import SyncModel, Unique, model_migration_plan
        >>> class Handle(SyncModel, table="handles"):
        ...     handle: Annotated[str, Unique()]
        >>> print(model_migration_plan(sqlite3.connect(":memory:"), [Handle]).operations[0].statements[1])
        CREATE UNIQUE INDEX `uq_handles_handle` ON `handles` (`handle`)
    """

    name: str | None = None


@dataclass(frozen=True)
class LWW:
    """Last-write-wins column: a hidden ``<column>__hlc`` companion holds its HLC timestamp, so
    replicas that changed it concurrently agree on the latest write (see ``Database.apply_changes``).
    The model and its JSON schema never show the hidden columns.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import LWW, Database, PrimaryKey, SyncModel, sync_models
        >>> class Setting(SyncModel, table="settings"):
        ...     key: Annotated[str, PrimaryKey()]
        ...     value: Annotated[str, LWW()]
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Setting])
        >>> [row[1] for row in conn.execute("PRAGMA table_info(settings)")]
        ['key', 'value', 'value__hlc', '_pydsqlite_version', '_pydsqlite_seq']
        >>> Database(conn).insert(Setting(key="theme", value="dark"))
        Setting(key='theme', value='dark')
    """


@dataclass(frozen=True, init=False)
class ForeignKey:
    """References ``"table.column"`` (a primary key or unique column), or ``"table"`` or a table
    model class (its single-column primary key). The table is looked up among the table models
    declared, by name.

    ``on_delete`` / ``on_update``: ``"NO ACTION"`` (default), ``"RESTRICT"``, ``"SET NULL"``,
    ``"SET DEFAULT"`` or ``"CASCADE"`` (any case, ``_`` for spaces). ``deferred=True``:
    ``DEFERRABLE INITIALLY DEFERRED``, checked at COMMIT instead of after each statement (a
    transaction may insert the child before its parent). SQLite enforces foreign keys only on
    connections with ``PRAGMA foreign_keys = ON``.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import ForeignKey, PrimaryKey, SyncModel, model_migration_plan
        >>> class Album(SyncModel, table="albums"):
        ...     id: Annotated[int, PrimaryKey()]
        >>> class Track(SyncModel, table="tracks"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     album_id: Annotated[int, ForeignKey(Album, on_delete="cascade")]
        >>> plan = model_migration_plan(sqlite3.connect(":memory:"), [Album, Track])
        >>> print(plan.operations[1].statements[0])
        CREATE TABLE `tracks` (
            `id` INTEGER NOT NULL,
            `album_id` INTEGER NOT NULL,
            PRIMARY KEY (`id`),
            FOREIGN KEY (`album_id`) REFERENCES `albums` (`id`) ON DELETE CASCADE
        )
    """

    target: Any
    on_delete: str
    on_update: str
    deferred: bool

    def __init__(self, target: Any, *, on_delete: str = "NO ACTION", on_update: str = "NO ACTION", deferred: bool = False) -> None:
        if not isinstance(deferred, bool):
            raise TypeError(f"ForeignKey(deferred=...) takes True or False, not {deferred!r}")
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "on_delete", _action(on_delete))
        object.__setattr__(self, "on_update", _action(on_update))
        object.__setattr__(self, "deferred", deferred)


def _action(text: str) -> str:
    action = " ".join(text.replace("_", " ").split()).upper()
    if action not in _ACTIONS:
        raise ValueError(f"unknown foreign key action {text!r}; expected one of {sorted(_ACTIONS)}")
    return action


@dataclass(frozen=True, init=False)
class RenamedFrom:
    """The column (or, as a class keyword, the table) used to be called one of ``names``:
    ``sync_models`` renames it and keeps its data instead of dropping one column and adding
    another. Also written ``Field(renamed_from=...)`` and ``renamed_from="old"`` on the class.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import RenamedFrom, SyncModel, model_migration_plan, sync_models
        >>> class Pet(SyncModel, table="pets"):
        ...     name: str
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Pet])
        >>> class Pet(SyncModel, table="animals", renamed_from="pets"):
        ...     full_name: Annotated[str, RenamedFrom("name")]
        >>> print(model_migration_plan(conn, [Pet]))
        Migration plan (2 operations):
          1. rename table pets to animals
          2. rename column animals.name to full_name
    """

    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ValueError("RenamedFrom needs at least one non-empty old name")
        object.__setattr__(self, "names", tuple(names))


_PYDANTIC_FIELD_KEYWORDS = frozenset(
    name for name, parameter in inspect.signature(_PydanticField).parameters.items()
    if parameter.kind is not inspect.Parameter.VAR_KEYWORD
)


def _did_you_mean(name: str) -> str:
    """A hint for a misspelt keyword: pydantic would keep it as JSON-schema data, silently."""
    storage = [keyword for keyword in inspect.signature(Field).parameters if keyword not in ("default", "kwargs")]
    close = difflib.get_close_matches(name, [*storage, *sorted(_PYDANTIC_FIELD_KEYWORDS)], n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; extra JSON-schema data goes in json_schema_extra={{...}}"


def Field(  # noqa: N802 - mirrors pydantic.Field
    default: Any = PydanticUndefined,
    *,
    primary_key: bool = False,
    autoincrement: bool = False,
    index: bool = False,
    unique: bool = False,
    lww: bool = False,
    foreign_key: Any = None,
    on_delete: str = "NO ACTION",
    on_update: str = "NO ACTION",
    renamed_from: str | tuple[str, ...] | None = None,
    collate: str | None = None,
    **kwargs: Any,
) -> Any:
    """``pydantic.Field`` plus storage markers; everything else is passed through unchanged.

    ``primary_key``, ``autoincrement``, ``index``, ``unique``, ``lww``, ``foreign_key`` (with
    ``on_delete`` / ``on_update``), ``renamed_from`` and ``collate`` stand for the markers of
    the same names; length and range bounds (``max_length``, ``ge``, …) become CHECKs.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import Field, SyncModel, model_migration_plan
        >>> class Product(SyncModel, table="products"):
        ...     id: int = Field(default=None, primary_key=True)  # None: SQLite assigns the key
        ...     sku: str = Field(max_length=12, unique=True)
        >>> print(model_migration_plan(sqlite3.connect(":memory:"), [Product]).sql)
        CREATE TABLE `products` (
            `id` INTEGER NOT NULL,
            `sku` TEXT NOT NULL CHECK (length(`sku`) <= 12),
            PRIMARY KEY (`id`)
        );
        CREATE UNIQUE INDEX `uq_products_sku` ON `products` (`sku`);
        <BLANKLINE>
        >>> Product.model_json_schema()["properties"]["sku"]
        {'maxLength': 12, 'title': 'Sku', 'type': 'string'}
    """
    unknown = sorted(set(kwargs) - _PYDANTIC_FIELD_KEYWORDS)
    if unknown:
        raise UsageError(f"Field() got unknown keyword argument(s) {', '.join(map(repr, unknown))}{_did_you_mean(unknown[0])}")
    info = _PydanticField(default, **kwargs)
    markers: list[object] = []
    if primary_key or autoincrement:
        markers.append(PrimaryKey(autoincrement=autoincrement))
    if index:
        markers.append(Index())
    if unique:
        markers.append(Unique())
    if lww:
        markers.append(LWW())
    if foreign_key is not None:
        markers.append(ForeignKey(foreign_key, on_delete=on_delete, on_update=on_update))
    if renamed_from is not None:
        names = (renamed_from,) if isinstance(renamed_from, str) else tuple(renamed_from)
        markers.append(RenamedFrom(*names))
    if collate is not None:
        markers.append(Collate(collate))
    info.metadata.extend(markers)
    return info
