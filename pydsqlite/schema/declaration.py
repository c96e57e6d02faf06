"""The declaration key: a cheap digest of what table models declare, read from the classes
without compiling them, so a fresh process recognises an unchanged database at start-up.

``sync_models`` records the key in the database when it leaves the schema in line with the
models; a later call whose models give the same key (and finds ``PRAGMA schema_version``
unchanged) returns at once. The key must change whenever the compiled schema could, so it
covers, per model in the order given: the class's qualified name and table options (table
name, primary key, indexes, strict, without_rowid, renames); its Pydantic config; and per
field its name, annotation (recursively: typing constructs, builtin and standard-library
types, enum members), ``Annotated``/``Field`` metadata (pydsqlite markers, annotated-types
and Pydantic constraints, with all their values) and default (a ``default_factory`` only as
a flag, since it never becomes an SQL DEFAULT). It also covers the versions of Pydantic and
pydantic-core and the size and modification time of every pydsqlite source file, so an
upgrade of either plans once.

Anything whose effect cannot be read from a stable representation — validators (decorators
or ``Annotated`` functions), custom or nested-model types, foreign keys (their columns depend
on the parent model), unresolved forward references, config values that are functions —
makes that model's part of the key its compiled table instead: still correct, at the cost of
compiling that one model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import os
import types
import typing
import uuid
from collections.abc import Iterable
from typing import Any

import pydantic
import pydantic_core
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..errors import SchemaDefinitionError
from .compile import chosen_models
from .markers import ForeignKey
from .model import registered_models, registry_version, table_options
from .objects import Schema, fold_name

_PLAIN_VALUE_TYPES = frozenset(
    {type(None), bool, int, float, str, bytes, dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID, decimal.Decimal}
)
_PLAIN_TYPES = frozenset({*_PLAIN_VALUE_TYPES, list, dict, tuple, set, frozenset, object})
_UNSTABLE_DEFAULT_TYPES = (dt.datetime, dt.date, dt.time, uuid.UUID)
"""Defaults of these field types are left out of the fingerprint (``stable_default=False``), so
the key leaves them out too: a ``datetime.now()`` default must not re-plan every start."""
_TRUSTED_METADATA_MODULES = ("pydsqlite.", "annotated_types", "pydantic.")
_VALIDATOR_KINDS = ("validators", "field_validators", "root_validators", "model_validators")


class _Unstable(Exception):
    """A declaration part has no stable representation: the model's compiled table stands in."""


_KEYS_KEPT = 32
_keys: dict[tuple[Any, int], tuple[tuple[type[BaseModel], ...], str | None]] = {}
_last: list[Any] = []
"""The last call's (registry version, models given, the list they came in (a copy), result)."""


def models_and_key(models: Iterable[type[BaseModel]] | None) -> tuple[tuple[type[BaseModel], ...], str | None]:
    """The table models a call names and their ``declaration_key``, remembered per list of classes
    and registry state: a repeated call costs one lookup (a new table model expires it)."""
    version = registry_version()
    if _last and _last[0] == version and (_last[1] is models or type(models) is list and _same_items(models, _last[2])):
        last: tuple[tuple[type[BaseModel], ...], str | None] = _last[3]  # the usual repeat
        return last
    if models is None or type(models) is tuple:
        given = models
    elif type(models) is list:
        given = tuple(models)
    else:  # another iterable is read once here; anything else is refused here with its precise error
        given = chosen_models(models)
    if _last and _last[0] == version and _same_items(given, _last[1]):
        repeated: tuple[tuple[type[BaseModel], ...], str | None] = _last[3]
        return repeated
    try:
        hit = _keys.get((given, version))
    except TypeError:  # something unhashable in the list: chosen_models names it
        hit = None
    if hit is None:
        chosen = chosen_models(given)
        hit = (chosen, declaration_key(chosen))
        if len(_keys) >= _KEYS_KEPT:
            _keys.pop(next(iter(_keys)))
        _keys[(given, version)] = hit
    _last[:] = [version, given, list(models) if type(models) is list else None, hit]
    return hit


def _same_items(models: Any, last: Any) -> bool:
    """Whether ``models`` holds the classes the last call was given (a list or tuple compared with
    one of the same kind, item by item by identity in one C-level pass); anything else in it is
    left to ``chosen_models`` to name."""
    try:
        return last is not None and bool(models == last)
    except Exception:  # an item whose own __eq__ raises: not a model class
        return False


def declaration_key(chosen: tuple[type[BaseModel], ...]) -> str | None:
    """The key of ``chosen`` (already checked to be table model classes), as recorded in the state
    table; None when a model does not compile (the full compile then raises the precise error)."""
    digest = hashlib.sha256(_environment())
    known: dict[str, type[BaseModel]] | None = None
    for model in chosen:
        part = declared_part(model)
        if part is None:
            if known is None:
                known = _known_models(chosen)
            try:
                part = _part_digest("compiled:" + _compiled_part(model, known))
            except SchemaDefinitionError:
                return None
        digest.update(part)
    return "declarations:" + digest.hexdigest()


def declared_part(model: type[BaseModel]) -> bytes | None:
    """The digest of ``model``'s part of the key read from its declaration (None when it is not
    plain), computed when the class is defined and kept until Pydantic rebuilds the model's fields."""
    cached = model.__dict__.get("__pydsqlite_declaration__")
    fields = model.__pydantic_fields__
    if cached is not None and cached[0] is fields:
        kept: bytes | None = cached[1]
        return kept
    if not model.__pydantic_complete__:  # forward references: read it again once they resolve
        return None
    try:
        part: bytes | None = _part_digest(_declared(model))
    except _Unstable:
        part = None
    type.__setattr__(model, "__pydsqlite_declaration__", (fields, part))
    return part


def _part_digest(part: str) -> bytes:
    """One model's part of the key as a fixed-size digest: the key hashes these, not the texts."""
    return hashlib.sha256(part.encode("utf-8", "surrogatepass")).digest()


def _declared(model: type[BaseModel]) -> str:
    decorators = model.__pydantic_decorators__
    if any(getattr(decorators, kind) for kind in _VALIDATOR_KINDS):
        raise _Unstable
    if any("__get_pydantic_core_schema__" in klass.__dict__ for klass in model.__mro__[: model.__mro__.index(BaseModel)]):
        raise _Unstable  # the model builds its own validation
    options = table_options(model)
    assert options is not None
    parts = [
        model.__module__, model.__qualname__, options.table, _stable(options.primary_key), _stable(options.indexes),
        str(options.strict), str(options.without_rowid), _stable(options.renamed_from),
        _stable(sorted(model.model_config.items())),
    ]
    for name, info in model.__pydantic_fields__.items():
        annotation = _stable(info.annotation)
        if info.default_factory is not None:
            default = "factory"
        elif info.default is PydanticUndefined:
            default = "required"
        elif isinstance(info.default, _UNSTABLE_DEFAULT_TYPES) and _bare(info.annotation) in _UNSTABLE_DEFAULT_TYPES:
            default = "unstable"
        else:
            default = _stable(info.default)
        parts.append(f"{name}\x01{annotation}\x01{_stable(info.metadata)}\x01{default}\x01{info.frozen}")
    return "\x02".join(parts)


def _bare(annotation: Any) -> Any:
    """The annotation without ``Optional``/``Annotated`` layers (None when it is another construct)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return None
            annotation = members[0]
        else:
            return annotation


def _stable(value: Any) -> str:
    """A representation of ``value`` that is the same in every process and changes with anything
    compile reads from it; ``_Unstable`` for values it cannot vouch for (functions, custom classes).
    Classes, typing constructs and frozen markers cannot change once made, so their text is kept
    (with the object, so its id stays taken)."""
    kind = type(value)
    if kind in _PLAIN_VALUE_TYPES:
        return repr(value)
    if kind is list or kind is tuple:
        return f"{kind.__name__}({','.join([_stable(item) for item in value])})"
    if kind is dict:
        return f"dict({','.join([f'{_stable(key)}:{_stable(item)}' for key, item in value.items()])})"
    kept = _kept.get(id(value))
    if kept is None or kept[0] is not value:
        try:
            kept = (value, _stable_object(value))
        except _Unstable:
            kept = (value, None)
        _kept[id(value)] = kept
    if kept[1] is None:
        raise _Unstable
    return kept[1]


_kept: dict[int, tuple[Any, str | None]] = {}


def _stable_object(value: Any) -> str:
    kind = type(value)
    if kind is type:
        if value in _PLAIN_TYPES:
            return str(value.__qualname__)
        raise _Unstable
    if "__dataclass_fields__" in kind.__dict__ and kind.__module__.startswith(_TRUSTED_METADATA_MODULES):
        if kind is ForeignKey or not kind.__dataclass_params__.frozen:
            raise _Unstable  # a foreign key's columns depend on the parent model's declaration
        fields = ",".join([f"{field.name}={_stable(getattr(value, field.name))}" for field in dataclasses.fields(value)])
        return f"{kind.__module__}.{kind.__qualname__}({fields})"
    if isinstance(value, enum.Enum):
        return f"{_stable(kind)}.{value.name}"
    if isinstance(value, type):
        if issubclass(value, enum.Enum) and not _customised(value):
            members = ",".join([f"{member.name}={_stable(member.value)}" for member in value])
            return f"enum {value.__module__}.{value.__qualname__}[{type(value).__name__}:{members}]"
        raise _Unstable
    if value is typing.Any:
        return "Any"
    origin = typing.get_origin(value)
    if origin is not None:
        name = "Union" if origin in (typing.Union, types.UnionType) else _stable(origin) if isinstance(origin, type) else repr(origin)
        return f"{name}[{','.join([_stable(argument) for argument in typing.get_args(value)])}]"
    supertype = getattr(value, "__supertype__", None)
    if supertype is not None:  # NewType
        return f"newtype({_stable(supertype)})"
    raise _Unstable


def _customised(enum_class: type[enum.Enum]) -> bool:
    """Whether the enum changes how Pydantic validates it (so a default's value is not its declaration)."""
    return any(
        "_missing_" in klass.__dict__ or "__get_pydantic_core_schema__" in klass.__dict__
        for klass in enum_class.__mro__ if klass not in (enum.Enum, enum.IntEnum, enum.StrEnum, enum.Flag, enum.IntFlag, object, int, str)
    )


def _known_models(chosen: tuple[type[BaseModel], ...]) -> dict[str, type[BaseModel]]:
    known: dict[str, type[BaseModel]] = {fold_name(table_options(model).table): model for model in registered_models()}  # type: ignore[union-attr]
    known.update({fold_name(table_options(model).table): model for model in chosen})  # type: ignore[union-attr]
    return known


def _compiled_part(model: type[BaseModel], known: dict[str, type[BaseModel]]) -> str:
    """The fingerprint of ``model``'s compiled table (for a model whose declaration is not plain)."""
    from ..migrate.metadata import schema_fingerprint
    from .compile import compile_table

    return schema_fingerprint(Schema(tables=(compile_table(model, known),)))


_environment_digest: list[bytes] = []


def _environment() -> bytes:
    """The Pydantic versions and the size and modification time of every pydsqlite source file
    (any change to pydsqlite, such as an upgrade, plans once), read once per process."""
    if not _environment_digest:
        parts = [f"{pydantic.VERSION} {pydantic_core.__version__}"]
        _source_files(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), parts)
        _environment_digest.append(hashlib.sha256("\n".join(parts).encode()).digest())
    return _environment_digest[0]


def _source_files(folder: str, parts: list[str]) -> None:
    """Append path, size and modification time of each ``.py`` file under ``folder``, in name order
    (``scandir``: the first sync of a process pays this, so it reads each folder once)."""
    with os.scandir(folder) as scanned:
        entries = sorted(scanned, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name.endswith(".py"):
            status = entry.stat()
            parts.append(f"{entry.path} {status.st_size} {status.st_mtime_ns}")
        elif entry.name != "__pycache__" and entry.is_dir():
            _source_files(entry.path, parts)

