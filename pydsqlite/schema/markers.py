"""Field and table markers that declare storage details next to a Pydantic field.

Markers are plain objects placed in ``Annotated[...]`` metadata (or attached by
:func:`Field`); Pydantic ignores them, so they never reach ``model_json_schema()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field as _PydanticField
from pydantic_core import PydanticUndefined

_ACTIONS = {"NO ACTION", "RESTRICT", "SET NULL", "SET DEFAULT", "CASCADE"}


@dataclass(frozen=True)
class PrimaryKey:
    """The field is (part of) the primary key; several marked fields form a composite key in field order.

    ``autoincrement=True`` (single INTEGER key only) adds SQLite's AUTOINCREMENT: ids of
    deleted rows are never reused.
    """

    autoincrement: bool = False


@dataclass(frozen=True)
class Collate:
    """The column compares text with the named collation (``BINARY``, ``NOCASE``, ``RTRIM``)."""

    name: str


@dataclass(frozen=True, init=False)
class Index:
    """An index. On a field: an index on that column. As a class keyword
    (``indexes=[Index("a", "b", unique=True, name=...)]``): a composite index."""

    columns: tuple[str, ...]
    unique: bool
    name: str | None

    def __init__(self, *columns: str, unique: bool = False, name: str | None = None) -> None:
        object.__setattr__(self, "columns", tuple(columns))
        object.__setattr__(self, "unique", unique)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True)
class Unique:
    """The column's values are unique (a unique index on it)."""

    name: str | None = None


@dataclass(frozen=True)
class LWW:
    """Last-write-wins column: a hidden ``<column>__hlc`` companion holds its HLC timestamp."""


@dataclass(frozen=True, init=False)
class ForeignKey:
    """References ``"table.column"`` or a table model class (its single-column primary key)."""

    target: Any
    on_delete: str
    on_update: str

    def __init__(self, target: Any, *, on_delete: str = "NO ACTION", on_update: str = "NO ACTION") -> None:
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "on_delete", _action(on_delete))
        object.__setattr__(self, "on_update", _action(on_update))


def _action(text: str) -> str:
    action = " ".join(text.replace("_", " ").split()).upper()
    if action not in _ACTIONS:
        raise ValueError(f"unknown foreign key action {text!r}; expected one of {sorted(_ACTIONS)}")
    return action


@dataclass(frozen=True, init=False)
class RenamedFrom:
    """The column (or, as a class keyword, the table) used to be called one of ``names``."""

    names: tuple[str, ...]

    def __init__(self, *names: str) -> None:
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ValueError("RenamedFrom needs at least one non-empty old name")
        object.__setattr__(self, "names", tuple(names))


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
    """``pydantic.Field`` plus storage markers; everything else is passed through unchanged."""
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
