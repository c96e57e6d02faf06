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
import math
import re
import types
import typing
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, Union, get_args, get_origin

import pydantic
import typing_extensions
from pydantic import AliasChoices, BaseModel, Json, SecretBytes, SecretStr, TypeAdapter, ValidationError
from pydantic.types import EncodedBytes, EncodedStr
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
    if annotation in _PYDANTIC_TEMPORAL:
        return _PYDANTIC_TEMPORAL[annotation]
    if annotation in (pydantic.FutureDatetime, pydantic.FutureDate):
        raise UnsupportedType(
            f"{annotation.__name__} is not supported as a column: every row read is validated again, and a value in the "
            "future when written is in the past later, so the row could no longer be read; check it on the model your "
            "API validates input with, and store a datetime / date"
        )
    if issubclass(annotation, enum.Enum):
        return _kind_of_values([member.value for member in annotation], annotation)
    for python_type, kind in _SIMPLE_KINDS:
        if issubclass(annotation, python_type):
            return kind
    if issubclass(annotation, BaseModel):
        return "json"
    raise UnsupportedType(f"type {annotation.__qualname__} is not supported")


_PYDANTIC_TEMPORAL: dict[Any, str] = {
    pydantic.AwareDatetime: "datetime",
    pydantic.NaiveDatetime: "datetime",
    pydantic.PastDatetime: "datetime",
    pydantic.PastDate: "date",
}
"""Pydantic's constrained date and date-time types: classes of their own at run time, whose values are
``datetime`` and ``date`` objects, stored as those are (a past value stays past, so a row stays readable)."""

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
    """JSON text of a value already in its storage form; non-finite floats are refused, since JSON
    has no NaN or Infinity (Python's ``NaN`` token is text SQLite's JSON functions reject)."""
    jsonable = to_jsonable_python(_sets_in_order(value))
    try:
        return json.dumps(jsonable, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        found = _non_finite(jsonable, "")
        if found is None:
            raise
        number, where = found
        raise ValueError(
            f"JSON has no NaN or Infinity ({number!r} at {where or 'the top'}), and SQLite's JSON functions refuse such text; "
            "store a finite number or None, or the number in a float field of its own (a REAL column keeps ±inf)"
        ) from None


def _non_finite(value: Any, where: str) -> tuple[float, str] | None:
    """The first NaN or infinite float in JSON-ready data, with its path (``['a'][0]``)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (value, where)
    if isinstance(value, dict):
        items: Any = ((f"{where}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{position}]", item) for position, item in enumerate(value))
    else:
        return None
    return next((found for path, item in items if (found := _non_finite(item, path)) is not None), None)


def validation_key(model: type[BaseModel], name: str, info: Any) -> str | None:
    """The key ``model``'s validator reads field ``name`` from: the name when the model validates by
    name, else its alias (the first plain choice of ``AliasChoices``); None when only an ``AliasPath``
    names it, which no flat key can feed."""
    config = model.model_config
    if config.get("populate_by_name") or config.get("validate_by_name"):
        return name
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    if alias is None:
        return name
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return next((choice for choice in alias.choices if isinstance(choice, str)), None)
    return None


_model_keys: weakref.WeakKeyDictionary[type[BaseModel], tuple[tuple[str, str], ...]] = weakref.WeakKeyDictionary()


def _keys_of(model: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """(field name, stored key) of each field of a model stored inside JSON, computed once per class."""
    keys = _model_keys.get(model)
    if keys is None:
        keys = _model_keys[model] = tuple((name, validation_key(model, name, info) or name) for name, info in model.model_fields.items())
    return keys


def _storage_form(value: Any) -> Any:
    """``value`` with every model instance, at any depth, replaced by a dict of its fields (and extra
    fields) keyed as its validator reads them.

    A model's serialization settings (field and model serializers, ``exclude``, serialization
    aliases, computed fields, ``ser_json_*``) shape its API output; applied to storage they would
    lose data or make rows unreadable. Stored this way, a nested model is kept like the table
    model's own columns: by its fields' values.
    """
    if isinstance(value, BaseModel):
        if getattr(value, "__pydantic_root_model__", False):
            return _storage_form(value.__dict__["root"])
        data = value.__dict__
        form = {}
        for name, key in _keys_of(type(value)):
            if name not in data:
                raise ValueError(f"{type(value).__qualname__}.{name} has no value (an instance built by model_construct without it)")
            form[key] = _storage_form(data[name])
        for key, item in (value.__pydantic_extra__ or {}).items():
            form[key] = _storage_form(item)
        return form
    if isinstance(value, dict):
        return {key: _storage_form(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_storage_form(item) for item in value), key=_canonical_text)
    if isinstance(value, (list, tuple)):
        return [_storage_form(item) for item in value]
    return value


def _sets_in_order(value: Any) -> Any:
    """``value`` with every set or frozenset in it as a list in one order (by its items' JSON text): a
    set's own order depends on the process's string hashing, so the same set would be stored as other
    text by another process — a change to compare, send and stamp where nothing changed."""
    if isinstance(value, (set, frozenset)):
        return sorted((_sets_in_order(item) for item in value), key=_canonical_text)
    if isinstance(value, dict):
        return {key: _sets_in_order(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sets_in_order(item) for item in value]
    return value


def _canonical_text(item: Any) -> str:
    return json.dumps(to_jsonable_python(item), sort_keys=True, ensure_ascii=False, default=repr)


def _json_text_whole_minute_offsets(value: Any) -> str:
    """JSON text of a value whose type can hold date-times or times, refused when one would come back
    as another moment (see ``_refuse_lossy_temporals``)."""
    _refuse_lossy_temporals(value)
    return _json_text(value)


def _refuse_lossy_temporals(value: Any) -> None:
    """ValueError for a date-time or time JSON cannot carry: pydantic's JSON writes UTC offsets in
    whole minutes (one with seconds would come back as another instant), and a time whose zone has
    no fixed offset (a ``ZoneInfo``) would lose its zone."""
    if isinstance(value, (dt.datetime, dt.time)):
        if isinstance(value, dt.time):
            _refuse_zone_without_offset(value)
        offset = value.utcoffset()
        if offset is not None and (offset.seconds % 60 or offset.microseconds):
            raise ValueError(
                f"UTC offset {offset} has seconds, which JSON (pydantic's format) drops; "
                "convert the value to a whole-minute offset (e.g. UTC) or store it in a datetime field of its own"
            )
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            _refuse_lossy_temporals(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lossy_temporals(key)
            _refuse_lossy_temporals(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _refuse_lossy_temporals(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _refuse_lossy_temporals(getattr(value, field.name))


def _refuse_zone_without_offset(value: dt.time) -> None:
    """ValueError for a time with a zone but no UTC offset: stored, it would lose the zone."""
    if value.tzinfo is not None and value.utcoffset() is None:
        raise ValueError(
            f"time {value} has the time zone {value.tzinfo}, whose UTC offset depends on the date, which a time lacks, "
            "so the zone would be lost; store a datetime, or give the time a fixed offset (datetime.timezone)"
        )


_UNRESOLVED = object()
"""Stands for an annotation that cannot be resolved (a forward reference) in ``_parts``."""


def _parts(annotation: Any) -> Iterator[tuple[Any, str | None]]:
    """Every annotation a value of ``annotation`` can hold, with the ``Model.field`` declaring it
    (None for the column's own annotation): type arguments, and the fields of nested models,
    dataclasses and TypedDicts."""
    seen: set[int] = set()
    stack: list[tuple[Any, str | None]] = [(annotation, None)]
    while stack:
        part, owner = stack.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        yield part, owner
        origin = get_origin(part)
        if isinstance(part, type) and issubclass(part, BaseModel):
            stack.extend((info.annotation, f"{part.__qualname__}.{name}") for name, info in part.model_fields.items())
        elif isinstance(part, type) and (dataclasses.is_dataclass(part) or typing_extensions.is_typeddict(part)):
            try:
                hints = typing.get_type_hints(part, include_extras=True)
            except Exception:  # noqa: BLE001 - unresolvable forward references: the values are checked instead
                stack.append((_UNRESOLVED, part.__qualname__))
                continue
            stack.extend((hint, f"{part.__qualname__}.{name}") for name, hint in hints.items())
        elif origin is typing.Annotated:
            stack.append((get_args(part)[0], owner))
        elif type(part).__name__ == "TypeAliasType":  # ``type B64 = Base64Bytes`` (typing or typing_extensions)
            stack.append((part.__value__, owner))
        elif origin is not Literal:
            stack.extend((arg, owner) for arg in get_args(part) if arg is not Ellipsis)


def _union_members(part: Any) -> list[Any]:
    """The non-None members of a union annotation ([] for anything else)."""
    if get_origin(part) not in (Union, types.UnionType):
        return []
    return [arg for arg in get_args(part) if arg is not NoneType]


def _json_traits(annotation: Any) -> set[str]:
    """What values of a JSON column's annotation can hold: ``loose`` (``Any``, a bare container),
    ``model``, ``union`` (of several types), ``opaque`` (dataclasses, TypedDicts, unresolved names),
    ``temporal`` (date-times or times)."""
    traits = set()
    for part, _ in _parts(annotation):
        if part is Any or part in _BARE_CONTAINERS:
            traits.add("loose")
        elif part is _UNRESOLVED or isinstance(part, (str, typing.ForwardRef)):
            traits.update(("opaque", "temporal"))
        elif isinstance(part, type):
            if issubclass(part, (dt.datetime, dt.time)):
                traits.add("temporal")
            if issubclass(part, BaseModel):
                traits.add("model")
            elif dataclasses.is_dataclass(part) or typing_extensions.is_typeddict(part) or _json_changes(part):
                traits.add("opaque")
        elif isinstance(get_origin(part), type) and _json_changes(get_origin(part)):  # re.Pattern[str]
            traits.add("opaque")
        elif len(_union_members(part)) > 1:
            traits.add("union")
    return traits


def _json_changes(kind: type) -> bool:
    """Whether JSON may not give back a value of ``kind`` that pydantic serializes without complaint:
    a compiled pattern loses its flags (an enum whose values JSON changes is refused at declaration)."""
    return issubclass(kind, re.Pattern)


_JSON_SCALARS = (str, int, float, bool, NoneType)
_SECRET_TYPES: tuple[type, ...] = (SecretStr, SecretBytes, *((pydantic.Secret,) if hasattr(pydantic, "Secret") else ()))


def decoding_problem(metadata: Iterable[Any]) -> str | None:
    """Why a value annotated with ``metadata`` cannot be stored, if one of its items is Pydantic's
    decoding on validation (``Base64Bytes``, ``Json[...]``): rows are validated on every write and
    read, so a value it produced would be decoded again."""
    for item in metadata:
        if item is _JSON or isinstance(item, _JSON):
            return (
                "Json[...] parses JSON text each time it is validated, and rows are validated on every write and read; "
                "declare the parsed type instead (list[int], dict[str, Any], a model): pydsqlite stores it as JSON text itself"
            )
        if isinstance(item, (EncodedBytes, EncodedStr)):
            return (
                "an encoded type (Base64Bytes, Base64Str, EncodedBytes, EncodedStr) decodes its input each time it is "
                "validated, and rows are validated on every write and read, so the value would be decoded twice; declare "
                "the field as bytes (or str) and encode or decode at your API's edge"
            )
    return None


_JSON: Any = Json  # the marker class (type checkers read ``Json`` as a generic alias)


def json_type_problem(annotation: Any) -> tuple[str | None, str] | None:
    """Why values of a JSON column's ``annotation`` cannot round-trip, found at declaration:
    (the nested ``Model.field`` at fault or None, the reason), or None."""
    for part, owner in _parts(annotation):
        nested = decoding_problem(get_args(part)[1:] if get_origin(part) is typing.Annotated else (part,))
        if nested is not None:
            return owner, nested
        kind = get_origin(part) or part
        if isinstance(kind, type) and issubclass(kind, _SECRET_TYPES):
            return owner, (
                f"{getattr(kind, '__name__', kind)} inside a JSON column would be stored masked ('**********'): pydantic "
                "hides secrets when it serializes them; store the secret in a str or bytes column of its own"
            )
        members = list(kind) if isinstance(kind, type) and issubclass(kind, enum.Enum) else []
        members += [arg for arg in get_args(part) if isinstance(arg, enum.Enum)] if kind is Literal else []
        unkept = next((member for member in members if type(member.value) not in _JSON_SCALARS), None)
        if unkept is not None:
            return owner, (
                f"{type(unkept).__name__}.{unkept.name} has the value {unkept.value!r}, which JSON stores as something else "
                f"({type(unkept.value).__name__} becomes a list or text), so it could not be read back as the member; "
                "give the enum str or int values inside a JSON column"
            )
        if isinstance(part, type) and issubclass(part, BaseModel):
            for name, info in part.model_fields.items():
                decoding = decoding_problem(info.metadata)
                if decoding is not None:
                    return f"{part.__qualname__}.{name}", decoding
                if validation_key(part, name, info) is None:
                    alias = info.validation_alias if info.validation_alias is not None else info.alias
                    return (
                        f"{part.__qualname__}.{name}",
                        f"alias {alias!r} is not supported in a model stored as JSON (the stored object is flat); "
                        "use a plain string alias, or populate_by_name=True",
                    )
        members = _union_members(part)
        has_datetime = any(isinstance(member, type) and issubclass(member, dt.datetime) for member in members)
        has_date = any(isinstance(member, type) and issubclass(member, dt.date) and not issubclass(member, dt.datetime) for member in members)
        if has_datetime and has_date:
            return (
                owner,
                f"{part} cannot round-trip through JSON: a date is stored as '2024-05-01' and a datetime at midnight "
                "as '2024-05-01T00:00:00', and reading picks one type for both; use datetime or date alone",
            )
    return None


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


def _time_iso(value: dt.time) -> str:
    """ISO text of a time with its offset; one whose zone has no fixed offset is refused."""
    _refuse_zone_without_offset(value)
    return value.isoformat(timespec="microseconds")


def _json_text_of_any(value: Any) -> str:
    """JSON text of any JSON value (a default, a query parameter), nested models by their fields."""
    return _json_text(_storage_form(value))


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
    "time": _time_iso,
    "json": _json_text_of_any,
}

INLINE_ENCODERS: dict[Callable[[Any], Any], str] = {
    _bool_int: "(1 if {v} else 0)",
    _finite_float: "({v} if {v} == {v} else {f}({v}))",  # only NaN differs from itself: the function refuses it
    _iso_microseconds: "{v}.isoformat(timespec='microseconds')",
    _iso: "{v}.isoformat()",
    _time_iso: "({v}.isoformat(timespec='microseconds') if {v}.tzinfo is None else {f}({v}))",  # a zone needs the check
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
    if kind == "json":
        traits = _json_traits(inner)
        if traits & {"loose", "model", "union", "opaque"}:
            return _json_text_round_trip(inner, traits)
        if "temporal" in traits:
            return _json_text_whole_minute_offsets
        return _json_text  # plain data: its storage form is itself
    return encode


_BARE_CONTAINERS = (dict, list, tuple)


def _json_text_round_trip(annotation: Any, traits: set[str]) -> Callable[[Any], str]:
    """JSON text of a value whose type JSON alone may not restore, refused (ValueError) unless reading
    it back gives the same value with the same types.

    A loose type (``Any``, a bare ``dict``) cannot restore what JSON changes (integer keys become
    text, tuples lists, Decimal, bytes and date-times text); a union may read a member's text as
    another member; a nested model's validators run again on what they returned. Plain data
    (``list[int]``, ``dict[str, datetime]``) never pays for this check: its types restore it.
    """
    adapters: list[TypeAdapter[Any]] = []  # built at the first write, so compiling models stays cheap
    models, temporal = "model" in traits, "temporal" in traits
    if "loose" in traits:
        hint = "use a typed field (e.g. dict[int, str], tuple[int, int], Decimal) or JSON values"
    elif traits & {"model", "union"}:
        hint = "a validator must give back what it returned when run again, and a union's members must differ in JSON"
    else:
        hint = "store what JSON holds exactly (a pattern's text, without flags)"

    def encode(value: Any) -> str:
        if temporal:
            _refuse_lossy_temporals(value)
        text = _json_text(_storage_form(value) if models else value)
        if not adapters:
            adapters.append(TypeAdapter(annotation))
        try:
            back = adapters[0].validate_python(json.loads(text), strict=False)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            where = "".join(f"[{part!r}]" for part in problem["loc"])
            raise ValueError(f"JSON does not keep it: stored as {text[:80]}, it would not validate again ({where or 'value'}: {problem['msg']}); {hint}") from None
        difference = _difference(value, back)
        if difference is not None:
            raise ValueError(f"JSON does not keep it: {difference}; {hint}")
        return text

    return encode


def _difference(original: Any, back: Any) -> str | None:
    """How ``back`` (read back from JSON) differs from ``original``, or None if it is the same value with the same types."""
    if type(original) is not type(back):
        return f"{original!r} ({type(original).__name__}) comes back as {back!r} ({type(back).__name__})"
    if isinstance(original, BaseModel):
        return _difference(original.__dict__, back.__dict__) or _difference(original.__pydantic_extra__, back.__pydantic_extra__)
    if isinstance(original, (dt.datetime, dt.time)):
        # Compared by offset and wall time: == compares instants (another offset would pass), and
        # never matches across zones a time in a zone's gap or fold (PEP 495), kept all the same.
        same_offset = (original.tzinfo is None) == (back.tzinfo is None) and original.utcoffset() == back.utcoffset()
        if not same_offset or original.replace(tzinfo=None) != back.replace(tzinfo=None):
            return f"{original!r} comes back as {back!r}"
        return None
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


_OFFSET_WITH_SECONDS = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?\Z", re.ASCII)
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
        return _json_text_of_any(value)
    return value
