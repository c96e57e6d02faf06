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


def encode_value(kind: str, value: Any) -> Any:
    """Turn a validated Python value of ``kind`` into the value SQLite stores."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if kind == "bool":
        return 1 if value else 0
    if kind in ("int", "float", "str", "bytes"):
        return value
    if kind in ("uuid", "decimal"):
        return str(value)
    if kind in ("datetime", "date", "time"):
        return value.isoformat()
    if kind == "json":
        return json.dumps(to_jsonable_python(value), separators=(",", ":"), ensure_ascii=False, sort_keys=False)
    raise ValueError(f"unknown storage kind {kind!r}")
