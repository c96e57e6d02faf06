"""``SyncModel``: the Pydantic base class whose subclasses declare tables, and the model registry."""

from __future__ import annotations

import difflib
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr
from pydantic import Field as PydanticField
from pydantic._internal._model_construction import ModelMetaclass, build_lenient_weakvaluedict
from pydantic._internal._typing_extra import parent_frame_namespace
from typing_extensions import Unpack, dataclass_transform

from ..errors import SchemaDefinitionError
from .markers import LWW, Collate, Field, ForeignKey, Index, PrimaryKey, RenamedFrom, Unique
from .objects import fold_name

logger = logging.getLogger(__name__)

_registry: dict[str, type[SyncModel]] = {}
"""Table models by folded table name, in definition order; a redefinition replaces its entry."""
_registry_version = [0]
"""Bumped on every registration, so compiled schemas cached against the registry expire."""


def snake_case(name: str) -> str:
    """``TodoItem`` → ``todo_item``: the default table name of a model class."""
    text = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    text = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", text)
    return text.lower()


class TableOptions:
    """The table-level declarations of one model class (its class keywords)."""

    __slots__ = ("table", "primary_key", "indexes", "strict", "without_rowid", "renamed_from")

    def __init__(
        self,
        table: str,
        primary_key: tuple[str, ...] | None,
        indexes: tuple[Index, ...],
        strict: bool,
        without_rowid: bool,
        renamed_from: tuple[str, ...],
    ) -> None:
        self.table = table
        self.primary_key = primary_key
        self.indexes = indexes
        self.strict = strict
        self.without_rowid = without_rowid
        self.renamed_from = renamed_from


@dataclass_transform(kw_only_default=True, field_specifiers=(PydanticField, PrivateAttr, Field))
class SyncModelMeta(ModelMetaclass):
    """Takes the ``strict=`` class keyword for STRICT tables before Pydantic reads it as its
    own ``strict`` validation setting (which would refuse ISO text for datetimes).

    For type checkers: it subclasses Pydantic's metaclass by name (``type(BaseModel)`` is opaque
    to them), and repeats its ``dataclass_transform`` (which pyright does not inherit) with
    pydsqlite's ``Field`` as a field specifier too, so models get typed ``__init__`` signatures."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> type:
        if "strict" in kwargs:
            kwargs["sqlite_strict"] = kwargs.pop("strict")
        if "__pydantic_reset_parent_namespace__" not in kwargs:
            # Pydantic keeps the namespace of the frame that called its metaclass, to resolve
            # annotations later: that is this frame, not the function defining the model, whose
            # local names (``limit`` in ``Field(le=limit)``) a later build would not find.
            namespace["__pydantic_parent_namespace__"] = build_lenient_weakvaluedict(parent_frame_namespace())
            kwargs["__pydantic_reset_parent_namespace__"] = False
        return super().__new__(mcs, name, bases, namespace, **kwargs)


_CLASS_OPTIONS = ("table", "primary_key", "indexes", "sqlite_strict", "without_rowid", "renamed_from")


def _unknown_class_options(cls: type, names: list[str]) -> SchemaDefinitionError:
    """The refusal of class keywords that no class of the model took (a table option, a pydantic
    config key, a mixin's own), with the option each most likely meant."""
    choices = [*_CLASS_OPTIONS, *sorted(ConfigDict.__annotations__)]
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return SchemaDefinitionError(
        cls.__qualname__, None,
        f"unknown class keyword{'s' if len(names) > 1 else ''} {', '.join(parts)}: a table model takes "
        f"{', '.join(f'{option}=' for option in _CLASS_OPTIONS)}, pydantic's model_config keys and its base classes' own",
    )

class SyncModel(BaseModel, metaclass=SyncModelMeta):
    """Base class of table models.

    ``class Todo(SyncModel, table="todos")`` declares a table (``table=True`` uses the
    snake_case class name). Further class keywords: ``primary_key=("a", "b")``,
    ``indexes=[Index(...)]``, ``strict=True``, ``without_rowid=True``, ``renamed_from="old"``. A subclass of a
    table model maps to the same table unless it passes ``table=False``; classes that
    never declare a table are plain abstract bases. Everything else is a Pydantic model.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated, Optional
        >>> from pydsqlite import Database, PrimaryKey, SyncModel, sync_models
        >>> class Todo(SyncModel, table="todos"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     title: str
        ...     done: bool = False
        ...     note: Optional[str] = None
        >>> conn = sqlite3.connect(":memory:")
        >>> print(sync_models(conn, [Todo]))
        Migration plan (1 operation):
          1. create table todos (4 columns)
        >>> Database(conn).insert(Todo(id=1, title="write docs"))
        Todo(id=1, title='write docs', done=False, note=None)
        >>> sorted(Todo.model_json_schema()["properties"])  # an API schema like any other model's
        ['done', 'id', 'note', 'title']
    """

    if TYPE_CHECKING:  # no annotations at run time: Pydantic evaluates its bases' annotations for every new model
        __pydsqlite_table__: ClassVar[TableOptions | None]
        __pydsqlite_not_a_table__: ClassVar[bool]

    def __init_subclass__(
        cls,
        *,
        table: str | bool | None = None,
        primary_key: str | tuple[str, ...] | list[str] | None = None,
        indexes: list[Index] | tuple[Index, ...] | None = None,
        sqlite_strict: bool | None = None,
        without_rowid: bool | None = None,
        renamed_from: str | tuple[str, ...] | list[str] | RenamedFrom | None = None,
        **kwargs: Unpack[ConfigDict],
    ) -> None:
        try:
            super().__init_subclass__(**kwargs)  # a mixin's keywords reach it; pydantic took its config keys
        except TypeError as error:  # object.__init_subclass__: no class further up took them
            if not kwargs or "keyword argument" not in str(error):
                raise
            raise _unknown_class_options(cls, list(kwargs)) from error
        inherited = getattr(cls, "__pydsqlite_table__", None)
        options_given = any(value is not None for value in (primary_key, indexes, sqlite_strict, without_rowid, renamed_from))
        if table is False:
            if options_given:
                raise SchemaDefinitionError(cls.__qualname__, None, "table options were given with table=False, which declares no table")
            cls.__pydsqlite_table__ = None
            cls.__pydsqlite_not_a_table__ = True
            return
        if table is None and inherited is None:
            if options_given:
                raise SchemaDefinitionError(
                    cls.__qualname__, None, "table options were given without table=...; pass table=True or a name"
                )
            return
        if table is None:
            assert inherited is not None
            name = inherited.table
        elif table is True:
            name = snake_case(cls.__name__)
        elif isinstance(table, str) and table:
            name = table
        else:
            raise SchemaDefinitionError(cls.__qualname__, None, f"table= must be a non-empty name or True, not {table!r}")
        keep = inherited if (inherited is not None and table is None) else None
        cls.__pydsqlite_table__ = TableOptions(
            table=name,
            primary_key=_as_names(primary_key) if primary_key is not None else (keep.primary_key if keep else None),
            indexes=tuple(indexes) if indexes is not None else (keep.indexes if keep else ()),
            strict=bool(sqlite_strict) if sqlite_strict is not None else (keep.strict if keep else False),
            without_rowid=bool(without_rowid) if without_rowid is not None else (keep.without_rowid if keep else False),
            renamed_from=_as_names(renamed_from) if renamed_from is not None else (),
        )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        private = _private_attribute_with_markers(cls)
        if private is not None:
            raise SchemaDefinitionError(
                cls.__qualname__, private,
                "a name starting with '_' is a Pydantic private attribute, not a field, so it would not be a column "
                "and its pydsqlite markers would be ignored; give the field a name without the leading underscore",
            )
        options = cls.__pydsqlite_table__
        if options is None or "__pydsqlite_table__" not in cls.__dict__:
            return
        key = fold_name(options.table)
        previous = _registry.get(key)
        if previous is not None and previous.__module__ != cls.__module__:
            logger.warning(
                "table %r was declared by %s.%s and is now declared by %s.%s; the latest wins",
                options.table, previous.__module__, previous.__qualname__, cls.__module__, cls.__qualname__,
            )
        _registry.pop(key, None)
        _registry[key] = cls
        _registry_version[0] += 1
        from .declaration import declared_part  # the declaration module reads this one's options

        declared_part(cls)


SyncModel.__pydsqlite_table__ = None
SyncModel.__pydsqlite_not_a_table__ = False


_COLUMN_MARKERS = (PrimaryKey, Unique, LWW, ForeignKey, Collate, RenamedFrom)


def _private_attribute_with_markers(cls: type[BaseModel]) -> str | None:
    """The first private attribute (a name with a leading underscore) of ``cls`` annotated with a column
    marker: Pydantic drops it from the fields silently, so the marker would be lost without a word."""
    own = cls.__dict__.get("__annotations__", {})
    for name in cls.__private_attributes__:
        annotation = own.get(name)
        if isinstance(annotation, str):  # postponed annotations: read them as typing.get_type_hints would
            try:
                annotation = eval(annotation, vars(sys.modules[cls.__module__]), dict(vars(cls)))  # noqa: S307
            except Exception:  # a forward reference not yet defined: no marker can be read from it either
                continue
        if any(isinstance(item, _COLUMN_MARKERS) for item in getattr(annotation, "__metadata__", ())):
            return name
    return None


def _as_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, RenamedFrom):
        return value.names
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def table_options(model: type[BaseModel]) -> TableOptions | None:
    """The table declaration of ``model``, or None for non-table models.

    A ``SyncModel`` subclass that declares no table but is used as one (passed to
    ``sync_models``, ``Database``...) maps to its snake_case class name; ``table=False``
    opts out. Only declared tables are in the registry (``sync_models()`` without a list).
    """
    declared: TableOptions | None = getattr(model, "__pydsqlite_table__", None)
    if declared is not None:
        return declared
    if isinstance(model, type) and issubclass(model, SyncModel) and model is not SyncModel:
        if not model.__dict__.get("__pydsqlite_not_a_table__", False):
            return TableOptions(snake_case(model.__name__), None, (), False, False, ())
    return None


def registry_version() -> int:
    """Changes whenever a table model is defined."""
    return _registry_version[0]


def registered_models() -> list[type[SyncModel]]:
    """Every table model defined so far, in definition order."""
    return list(_registry.values())
