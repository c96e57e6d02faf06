"""The codec layer: how each supported Python type is stored in SQLite.

``storage_kind`` classifies an annotation once; ``encode_value`` turns a validated
Python value into the SQLite value of that kind. No global ``sqlite3`` adapters are
registered: encoding is explicit, per column.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

NoneType = type(None)

SQL_TYPE_OF_KIND = {
    "bool": "INTEGER",
    "int": "INTEGER",
    "float": "REAL",
    "str": "TEXT",
    "bytes": "BLOB",
    "uuid": "TEXT",
    "datetime": "TEXT",
    "date": "TEXT",
    "time": "TEXT",
    "decimal": "TEXT",
    "json": "TEXT",
}


class UnsupportedType(TypeError):
    """Raised by ``storage_kind`` for an annotation with no storage mapping."""


def split_optional(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """Strip ``Optional``/``Annotated`` layers: (inner annotation, nullable, metadata found)."""
    metadata: list[Any] = []
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            args = get_args(annotation)
            annotation = args[0]
            metadata.extend(args[1:])
            continue
        if origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not NoneType]
            if len(members) < len(get_args(annotation)):
                nullable = True
            if len(members) == 1:
                annotation = members[0]
                continue
            raise UnsupportedType(f"union {annotation!r} has no single storage type; use one type or Optional[X]")
        supertype = getattr(annotation, "__supertype__", None)
        if supertype is not None:
            annotation = supertype
            continue
        return annotation, nullable, metadata


def storage_kind(annotation: Any) -> str:
    """The storage kind (a key of ``SQL_TYPE_OF_KIND``) of a non-optional annotation."""
    origin = get_origin(annotation)
    if origin is Literal:
        return _kind_of_values(get_args(annotation), annotation)
    if origin in (list, dict, tuple) or annotation in (list, dict, tuple):
        return "json"
    if not isinstance(annotation, type):
        raise UnsupportedType(f"type {annotation!r} is not supported")
    if issubclass(annotation, enum.Enum):
        return _kind_of_values([member.value for member in annotation], annotation)
    for python_type, kind in _SIMPLE_KINDS:
        if issubclass(annotation, python_type):
            return kind
    if issubclass(annotation, BaseModel):
        return "json"
    raise UnsupportedType(f"type {annotation.__qualname__} is not supported")


_SIMPLE_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "bool"),
    (int, "int"),
    (float, "float"),
    (str, "str"),
    (bytes, "bytes"),
    (uuid.UUID, "uuid"),
    (dt.datetime, "datetime"),
    (dt.date, "date"),
    (dt.time, "time"),
    (decimal.Decimal, "decimal"),
)


def _kind_of_values(values: Any, annotation: Any) -> str:
    kinds = set()
    for value in values:
        if isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, int):
            kinds.add("int")
        elif isinstance(value, str):
            kinds.add("str")
        elif isinstance(value, float):
            kinds.add("float")
        else:
            raise UnsupportedType(f"{annotation!r} has a value {value!r} of unsupported type {type(value).__name__}")
    if len(kinds) != 1:
        raise UnsupportedType(f"{annotation!r} mixes value types {sorted(kinds)}; use values of one type")
    return kinds.pop()


def _json_text(value: Any) -> str:
    return json.dumps(to_jsonable_python(value), separators=(",", ":"), ensure_ascii=False)


def _finite_float(value: Any) -> float:
    if value != value:
        raise ValueError("NaN cannot be stored: SQLite turns it into NULL")
    return value


_KIND_ENCODERS: dict[str, Callable[[Any], Any] | None] = {
    "bool": lambda value: 1 if value else 0,
    "int": None,
    "float": _finite_float,
    "str": None,
    "bytes": None,
    "uuid": str,
    "decimal": str,
    "datetime": lambda value: value.isoformat(timespec="microseconds"),
    "date": lambda value: value.isoformat(),
    "time": lambda value: value.isoformat(timespec="microseconds"),
    "json": _json_text,
}


def encoder_for(annotation: Any) -> Callable[[Any], Any] | None:
    """The function that turns a validated value of ``annotation`` into its SQLite value
    (None: store as is). ``None`` values are handled by the caller."""
    inner, _, _ = split_optional(annotation)
    kind = storage_kind(inner)
    encode = _KIND_ENCODERS[kind]
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        if encode is None:
            return _enum_value
        return lambda value: encode(_enum_value(value))
    if kind == "int":
        return int  # plain int for int subclasses (bound exactly by sqlite3)
    return encode


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def decoder_for(annotation: Any) -> Callable[[Any], Any] | None:
    """What a stored value needs before Pydantic validates it: JSON text is parsed, the rest
    (ISO text, canonical UUIDs, exact decimals, 0/1) Pydantic reads as is."""
    inner, _, _ = split_optional(annotation)
    if storage_kind(inner) == "json":
        return _parse_json
    return None


def _parse_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def encode_value(kind: str, value: Any) -> Any:
    """Turn a validated Python value of ``kind`` into the value SQLite stores."""
    if value is None:
        return None
    value = _enum_value(value)
    encode = _KIND_ENCODERS[kind]
    return value if encode is None else encode(value)


def encode_param(value: Any) -> Any:
    """A query parameter as SQLite stores values of its Python type (so ``WHERE key = ?`` matches)."""
    if value is None or isinstance(value, (str, bytes, float)) or type(value) is int:
        return value
    if isinstance(value, enum.Enum):
        return encode_param(value.value)
    for python_type, kind in _SIMPLE_KINDS:
        if isinstance(value, python_type):
            return encode_value(kind, value)
    if isinstance(value, (BaseModel, dict, list)):
        return _json_text(value)
    return value
