"""The codec layer: how each supported Python type is stored in SQLite.

``storage_kind`` classifies an annotation once; ``encode_value`` turns a validated
Python value into the SQLite value of that kind. No global ``sqlite3`` adapters are
registered: encoding is explicit, per column.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import re
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
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


def _json_text_whole_minute_offsets(value: Any) -> str:
    """JSON text of a value whose type can hold date-times or times: pydantic's JSON writes UTC
    offsets in whole minutes, so one with seconds would come back as another instant; refused."""
    _refuse_offsets_with_seconds(value)
    return _json_text(value)


def _refuse_offsets_with_seconds(value: Any) -> None:
    if isinstance(value, (dt.datetime, dt.time)):
        offset = value.utcoffset()
        if offset is not None and (offset.seconds % 60 or offset.microseconds):
            raise ValueError(
                f"UTC offset {offset} has seconds, which JSON (pydantic's format) drops; "
                "convert the value to a whole-minute offset (e.g. UTC) or store it in a datetime field of its own"
            )
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            _refuse_offsets_with_seconds(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_offsets_with_seconds(key)
            _refuse_offsets_with_seconds(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _refuse_offsets_with_seconds(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _refuse_offsets_with_seconds(getattr(value, field.name))


def _may_hold_datetimes(annotation: Any, seen: set[int]) -> bool:
    """Whether values of ``annotation`` can contain a date-time or time (through nested models,
    dataclasses, lists, dicts...); unresolvable annotations count as yes."""
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if isinstance(annotation, type):
        if issubclass(annotation, (dt.datetime, dt.time)):
            return True
        if issubclass(annotation, BaseModel):
            return any(_may_hold_datetimes(info.annotation, seen) for info in annotation.model_fields.values())
        if dataclasses.is_dataclass(annotation) or typing.is_typeddict(annotation):
            try:
                hints = typing.get_type_hints(annotation)
            except Exception:  # unresolvable forward references: check the values instead
                return True
            return any(_may_hold_datetimes(hint, seen) for hint in hints.values())
        return False
    if isinstance(annotation, (str, typing.ForwardRef)):
        return True
    return any(_may_hold_datetimes(arg, seen) for arg in get_args(annotation))


def _finite_float(value: float) -> float:
    if value != value:
        raise ValueError("NaN cannot be stored: SQLite turns it into NULL")
    return value


def _bool_int(value: bool) -> int:
    return 1 if value else 0


def _iso_microseconds(value: Any) -> str:
    return str(value.isoformat(timespec="microseconds"))


def _iso(value: Any) -> str:
    return str(value.isoformat())


_KIND_ENCODERS: dict[str, Callable[[Any], Any] | None] = {
    "bool": _bool_int,
    "int": None,
    "float": _finite_float,
    "str": None,
    "bytes": None,
    "uuid": str,
    "decimal": str,
    "datetime": _iso_microseconds,
    "date": _iso,
    "time": _iso_microseconds,
    "json": _json_text,
}

INLINE_ENCODERS: dict[Callable[[Any], Any], str] = {
    _bool_int: "(1 if {v} else 0)",
    _finite_float: "({v} if {v} == {v} else {f}({v}))",  # only NaN differs from itself: the function refuses it
    _iso_microseconds: "{v}.isoformat(timespec='microseconds')",
    _iso: "{v}.isoformat()",
}
"""Encoders as expressions over the value ``{v}`` (``{f}``: the encoder itself), for the row
encoders generated per model: a bulk write then makes no Python call per cell."""


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
    if kind == "json" and _loosely_typed(inner, set()):
        return _json_text_round_trip(inner)
    if kind == "json" and _may_hold_datetimes(inner, set()):
        return _json_text_whole_minute_offsets
    return encode


_BARE_CONTAINERS = (dict, list, tuple)


def _loosely_typed(annotation: Any, seen: set[int]) -> bool:
    """Whether ``annotation`` leaves some part of its values' types open (``Any``, a bare ``dict``,
    ``list`` or ``tuple``, at any depth): JSON then decides what comes back."""
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if annotation is Any or annotation in _BARE_CONTAINERS:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_loosely_typed(info.annotation, seen) for info in annotation.model_fields.values())
    return any(_loosely_typed(arg, seen) for arg in get_args(annotation) if arg is not Ellipsis)


def _json_text_round_trip(annotation: Any) -> Callable[[Any], str]:
    """JSON text of a value of a loosely typed field, refused (ValueError) unless reading it back
    gives the same value with the same types: a loose type cannot restore what JSON changes
    (integer keys become text, tuples lists, Decimal, bytes and date-times text)."""
    adapter = TypeAdapter(annotation)

    def encode(value: Any) -> str:
        text = _json_text(value)
        difference = _difference(value, adapter.validate_python(json.loads(text)))
        if difference is not None:
            raise ValueError(f"JSON does not keep it: {difference}; use a typed field (e.g. dict[int, str], tuple[int, int], Decimal) or JSON values")
        return text

    return encode


def _difference(original: Any, back: Any) -> str | None:
    """How ``back`` (read back from JSON) differs from ``original``, or None if it is the same value with the same types."""
    if type(original) is not type(back):
        return f"{original!r} ({type(original).__name__}) comes back as {back!r} ({type(back).__name__})"
    if isinstance(original, BaseModel):
        return _difference(original.__dict__, back.__dict__)
    if isinstance(original, dict):
        for key, key_back in zip(original, back):
            if type(key) is not type(key_back) or key != key_back:
                return f"key {key!r} ({type(key).__name__}) comes back as {key_back!r} ({type(key_back).__name__})"
        if len(original) != len(back):
            return f"{len(original)} keys come back as {len(back)}"
        return next((found for key in original if (found := _difference(original[key], back[key])) is not None), None)
    if isinstance(original, (list, tuple)):
        if len(original) != len(back):
            return f"{len(original)} items come back as {len(back)}"
        return next((found for item, item_back in zip(original, back) if (found := _difference(item, item_back)) is not None), None)
    if original != back:
        return f"{original!r} comes back as {back!r}"
    return None


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


_OFFSET_WITH_SECONDS = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?\Z")
_ISO_PARSERS: dict[str, Callable[[str], Any]] = {"datetime": dt.datetime.fromisoformat, "time": dt.time.fromisoformat}


def parse_offset_with_seconds(kind: str, stored: Any) -> Any:
    """A date-time or time stored with a UTC offset that has seconds, parsed; None for anything else.

    Pydantic reads offsets in whole minutes only, while Python's offsets (an old date's
    local mean time in ``zoneinfo``, any ``timezone(timedelta(...))``) can have seconds and
    microseconds. Readers call this only for values Pydantic refused, so normal reads pay
    nothing. The offset is read here, not by ``fromisoformat``, which drops the microseconds
    of an offset under one second.
    """
    parse = _ISO_PARSERS.get(kind)
    match = _OFFSET_WITH_SECONDS.search(stored) if parse is not None and isinstance(stored, str) else None
    if match is None or parse is None:
        return None
    sign, hours, minutes, seconds, fraction = match.groups()
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds), microseconds=int((fraction or "0").ljust(6, "0")))
    try:
        return parse(stored[: match.start()]).replace(tzinfo=dt.timezone(-offset if sign == "-" else offset))
    except ValueError:
        return None


INT64_RANGE = (-(2**63), 2**63 - 1)


def unstorable_reason(stored: Any) -> str | None:
    """Why SQLite cannot take an encoded value exactly (None if it can). Used after the driver
    refused a write, to name the culprit, and on declared defaults."""
    if isinstance(stored, int) and not INT64_RANGE[0] <= stored <= INT64_RANGE[1]:
        return "SQLite integers are 64-bit (-2**63 to 2**63-1); use Decimal, str or a JSON field for larger numbers"
    if isinstance(stored, str):
        try:
            stored.encode("utf-8")
        except UnicodeEncodeError as error:
            return f"text holds a lone surrogate {stored[error.start]!r}, which has no UTF-8 form"
    return None


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
