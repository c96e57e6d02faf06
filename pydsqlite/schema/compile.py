"""Pipeline stage 1: compile table models into the desired ``Schema``.

Every declaration error is found here, before any database is touched, and raised
as ``SchemaDefinitionError`` naming the model and field.
"""

from __future__ import annotations

import decimal
import hashlib
import math
import numbers
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types
from pydantic import AliasChoices, BaseModel, StringConstraints, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..errors import SchemaDefinitionError, UsageError
from ..migrate.metadata import schema_fingerprint
from ..replica.capture import capture_triggers
from ..replica.hlc import BASELINE
from ..sql.render import quote_identifier, quote_literal
from . import markers
from .codecs import (
    SQL_TYPE_OF_KIND,
    UnsupportedType,
    decoding_problem,
    encode_value,
    json_type_problem,
    split_optional,
    storage_kind,
    unstorable_reason,
    validation_key,
)
from .model import registered_models, registry_version, table_options
from .objects import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, Check, Column, ForeignKey, Index, Schema, Table, fold_name

MAX_INDEX_NAME = 64
RESERVED_COLUMN_NAMES = frozenset({"rowid", "oid", "_rowid_"})
UNSTABLE_DEFAULT_KINDS = frozenset({"datetime", "date", "time", "uuid"})
"""Kinds whose default values are often computed at import time (``datetime.now()``, ``uuid4()``)."""
RESERVED_TABLE_PREFIXES = ("sqlite_", "_pydsqlite")


@dataclass(frozen=True)
class CompiledModels:
    """A compiled desired schema and its fingerprint (what the start-up fast path compares)."""

    schema: Schema
    fingerprint: str


_CACHE_SIZE = 32
_cache: OrderedDict[tuple[Any, ...], CompiledModels] = OrderedDict()


def compile_models(models: Iterable[type[BaseModel]] | None = None) -> Schema:
    """Compile ``models`` (default: every table model defined so far) into a ``Schema``."""
    return compile_cached(models).schema


def compile_cached(models: Iterable[type[BaseModel]] | None = None) -> CompiledModels:
    """``compile_models`` memoised per set of model classes and registry state (apps sync on every start)."""
    chosen = chosen_models(models)
    key = (chosen, registry_version())
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    schema = _compile(chosen)
    compiled = CompiledModels(schema, schema_fingerprint(schema))
    _cache[key] = compiled
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return compiled


def chosen_models(models: Iterable[type[BaseModel]] | None) -> tuple[type[BaseModel], ...]:
    """The table models a call names (default: every table model defined so far)."""
    return tuple(registered_models()) if models is None else _model_list_argument(models)


def _model_list_argument(models: Any) -> tuple[type[BaseModel], ...]:
    """``models`` as a tuple of model classes; ``UsageError`` for a single model, a name or an instance."""
    if isinstance(models, (type, str, bytes, BaseModel)) or not isinstance(models, Iterable):
        if isinstance(models, type):
            shown = f"the class {models.__qualname__}; pass a list: [{models.__name__}]"
        else:
            shown = _describe(models)
        raise UsageError(f"models must be a list of table model classes, not {shown}")
    return tuple(table_model_argument(model) for model in models)


def table_model_argument(model: Any) -> type[BaseModel]:
    """``model`` if it is a table model class: ``UsageError`` for other objects,
    ``SchemaDefinitionError`` for a model class that declares no table."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise UsageError(f"expected a table model class, not {_describe(model)}")
    if table_options(model) is None:
        raise SchemaDefinitionError(model.__qualname__, None, "is not a table model (declare table=...)")
    return model


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    if isinstance(value, BaseModel):
        return f"an instance of {type(value).__qualname__} (pass the class {type(value).__name__})"
    if isinstance(value, str):
        return f"the string {value!r} (pass the model class, not a table name)"
    shown = repr(value)
    return f"{type(value).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _compile(chosen: tuple[type[BaseModel], ...]) -> Schema:
    by_table: dict[str, type[BaseModel]] = {}
    for model in chosen:
        options = table_options(model)
        assert options is not None  # checked by _model_list_argument
        key = fold_name(options.table)
        if key in by_table and by_table[key] is not model:
            other = by_table[key]
            named = (f"{model.__module__}.{model.__qualname__}", f"{other.__module__}.{other.__qualname__}")
            if named[0] == named[1]:  # the same class declared again (a module run twice, a class made in a loop)
                named = (f"{named[0]} (id {id(model):#x})", f"{named[1]} (id {id(other):#x})")
            raise SchemaDefinitionError(
                model.__qualname__, None,
                f"table {options.table!r} is declared by two models in this call, {named[1]} and {named[0]}: pass one model per table",
            )
        by_table[key] = model
    known: dict[str, type[BaseModel]] = {fold_name(table_options(m).table): m for m in registered_models()}  # type: ignore[union-attr]
    known.update(by_table)
    for model in by_table.values():
        _ensure_complete(model)
    tables = tuple(_compile_table(model, known) for model in by_table.values())
    _check_index_names(tables)
    return Schema(tables=tables, triggers=capture_triggers(tables))


def _ensure_complete(model: type[BaseModel]) -> None:
    """Resolve forward references Pydantic could not resolve when the class was defined."""
    if getattr(model, "__pydantic_complete__", True):
        return
    try:
        model.model_rebuild()
    except Exception as error:  # pydantic raises several types here; all mean "cannot resolve"
        raise SchemaDefinitionError(model.__qualname__, None, f"annotations cannot be resolved: {error}") from None


class _FieldDeclaration:
    """What one Pydantic field declares: its markers, storage kind and constraints."""

    def __init__(self, model: type[BaseModel], name: str, info: FieldInfo) -> None:
        self.model = model
        self.name = name
        self.info = info
        try:
            inner, self.nullable, inner_metadata = split_optional(info.annotation)
            self.kind = storage_kind(inner)
        except UnsupportedType as error:
            raise SchemaDefinitionError(model.__qualname__, name, str(error)) from None
        self.metadata = [*info.metadata, *inner_metadata]
        decoding = decoding_problem(self.metadata)
        if decoding is not None:
            raise self.error(decoding)
        input_key(model, name, info)
        problem = json_type_problem(inner) if self.kind == "json" else None
        if problem is not None:
            where, reason = problem
            raise self.error(f"{where}: {reason}" if where else reason)

    def markers(self, marker_type: type) -> list[Any]:
        return [item for item in self.metadata if isinstance(item, marker_type)]

    def error(self, message: str) -> SchemaDefinitionError:
        return SchemaDefinitionError(self.model.__qualname__, self.name, message)


def input_key(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    """The key a table model's validator reads field ``name`` from (rows are validated from dicts by
    it): its alias whenever the validator reads aliases, even when it also reads names
    (``populate_by_name``), since pydantic looks an alias up first, and one field's alias may be
    another field's name; ``SchemaDefinitionError`` for an ``AliasPath``, which no column can feed."""
    if model.model_config.get("validate_by_alias", True) is not False:
        alias = info.validation_alias if info.validation_alias is not None else info.alias
        if isinstance(alias, str):
            return alias
        if isinstance(alias, AliasChoices):
            first = next((choice for choice in alias.choices if isinstance(choice, str)), None)
            if first is not None:
                return first
    key = validation_key(model, name, info)
    if key is None:
        alias = info.validation_alias if info.validation_alias is not None else info.alias
        raise SchemaDefinitionError(model.__qualname__, name, f"alias {alias!r} is not supported on a table model; use a plain string alias")
    return key


def compile_table(model: type[BaseModel], known: dict[str, type[BaseModel]]) -> Table:
    """One model's table, foreign keys resolved against ``known`` (models by folded table name)."""
    _ensure_complete(model)
    return _compile_table(model, known)


def _compile_table(model: type[BaseModel], known: dict[str, type[BaseModel]]) -> Table:
    options = table_options(model)
    assert options is not None
    qualname = model.__qualname__
    if options.table.lower().startswith(RESERVED_TABLE_PREFIXES):
        raise SchemaDefinitionError(qualname, None, f"table name {options.table!r} is reserved (sqlite_*, _pydsqlite*)")
    if not model.model_fields:
        raise SchemaDefinitionError(qualname, None, "a table model needs at least one field")
    fields = [_FieldDeclaration(model, name, info) for name, info in model.model_fields.items()]
    names: dict[str, str] = {}
    for field in fields:
        folded = fold_name(field.name)
        if folded in names:
            raise field.error(f"column names are case-insensitive in SQLite: {field.name!r} clashes with {names[folded]!r}")
        names[folded] = field.name
        if folded in RESERVED_COLUMN_NAMES:
            raise field.error(f"column name {field.name!r} is reserved by SQLite (rowid aliases)")
        if folded.endswith(LWW_SUFFIX):
            raise field.error(f"names ending in {LWW_SUFFIX!r} are reserved for LWW companion columns")
    primary_key = _primary_key(model, fields, options.primary_key)
    columns: list[Column] = []
    indexes: list[Index] = []
    foreign_keys: list[ForeignKey] = []
    renamed_by: dict[str, str] = {}  # folded old column name -> the field that takes its values
    for field in fields:
        lww = bool(field.markers(markers.LWW))
        if field.name in primary_key and lww:
            raise field.error("a primary key column cannot be LWW")
        for old in (name for marker in field.markers(markers.RenamedFrom) for name in marker.names):
            other = renamed_by.setdefault(fold_name(old), field.name)
            if other != field.name:
                raise field.error(
                    f"RenamedFrom({old!r}) is declared by field {other!r} too: one column's values can move to one column only"
                )
        default = _default(field, auto_key=primary_key == (field.name,) and field.kind == "int")
        columns.append(
            Column(
                name=field.name,
                type=SQL_TYPE_OF_KIND[field.kind],
                not_null=not field.nullable,
                default=default,
                stable_default=default is None or field.kind not in UNSTABLE_DEFAULT_KINDS,  # "no DEFAULT" is compared
                checks=_checks(field),
                collate=_collation(field),
                lww=lww,
                renamed_from=tuple(name for marker in field.markers(markers.RenamedFrom) for name in marker.names),
            )
        )
        if lww:
            columns.append(Column(name=field.name + LWW_SUFFIX, type="TEXT", default=quote_literal(BASELINE), hidden=True))
        for marker in field.markers(markers.Index):
            if marker.columns:
                raise field.error("Index() on a field takes no column names; use the indexes= class keyword")
            indexes.append(_index(options.table, (field.name,), marker.unique, marker.name))
        for marker in field.markers(markers.Unique):
            indexes.append(_index(options.table, (field.name,), True, marker.name))
        for marker in field.markers(markers.ForeignKey):
            foreign_keys.append(_foreign_key(field, marker, known))
    for marker in options.indexes:
        if not isinstance(marker, markers.Index):
            raise SchemaDefinitionError(qualname, None, f"indexes= takes Index(...) objects, not {marker!r}")
        if not marker.columns:
            raise SchemaDefinitionError(qualname, None, "Index() in indexes= needs at least one column name")
        for column in marker.columns:
            if fold_name(column) not in names:
                raise SchemaDefinitionError(qualname, column, f"index names unknown column {column!r}")
        indexes.append(_index(options.table, marker.columns, marker.unique, marker.name))
    if options.without_rowid and not primary_key:
        raise SchemaDefinitionError(qualname, None, "without_rowid=True needs a primary key")
    if primary_key and any(column.lww for column in columns):  # a synced table: see replication.py
        columns.append(Column(name=VERSION_COLUMN, type="TEXT", default=quote_literal(BASELINE), hidden=True))
        columns.append(Column(name=SEQ_COLUMN, type="INTEGER", default="0", hidden=True))
        indexes.append(_index(options.table, (SEQ_COLUMN,), False, None))
    return Table(
        name=options.table,
        columns=tuple(columns),
        primary_key=primary_key,
        autoincrement=_autoincrement(model, fields, primary_key, options.without_rowid),
        without_rowid=options.without_rowid,
        foreign_keys=tuple(foreign_keys),
        strict=options.strict,
        indexes=tuple(_deduplicate(indexes)),
        renamed_from=options.renamed_from,
        model=qualname,
    )


def _primary_key(model: type[BaseModel], fields: list[_FieldDeclaration], declared: tuple[str, ...] | None) -> tuple[str, ...]:
    marked = tuple(field.name for field in fields if field.markers(markers.PrimaryKey))
    if declared is not None and marked:
        raise SchemaDefinitionError(
            model.__qualname__, marked[0], "primary key declared both with PrimaryKey() and primary_key=...; use one"
        )
    key = declared if declared is not None else marked
    by_name = {fold_name(field.name): field for field in fields}
    for name in key:
        field = by_name.get(fold_name(name))
        if field is None:
            raise SchemaDefinitionError(model.__qualname__, name, "primary_key names an unknown field")
        if field.nullable:
            raise field.error("a primary key column cannot be Optional")
    if len({fold_name(name) for name in key}) != len(key):
        raise SchemaDefinitionError(model.__qualname__, None, f"primary key {key!r} repeats a column")
    return tuple(by_name[fold_name(name)].name for name in key)


def _autoincrement(model: type[BaseModel], fields: list[_FieldDeclaration], key: tuple[str, ...], without_rowid: bool) -> bool:
    for field in fields:
        if any(marker.autoincrement for marker in field.markers(markers.PrimaryKey)):
            if len(key) != 1 or field.kind != "int" or without_rowid:
                raise field.error("autoincrement needs a single int primary key in a rowid table")
            return True
    return False


_COLLATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _collation(field: _FieldDeclaration) -> str | None:
    names = [marker.name for marker in field.markers(markers.Collate)]
    if not names:
        return None
    if len(set(names)) > 1:
        raise field.error(f"several collations declared: {names}")
    if not isinstance(names[0], str) or not _COLLATION_NAME.match(names[0]):
        raise field.error(f"collation {names[0]!r} is not a plain name")
    if field.kind not in ("str", "uuid", "datetime", "date", "time", "decimal", "json"):
        raise field.error("a collation applies to text columns only")
    return names[0].upper() if names[0].upper() in ("BINARY", "NOCASE", "RTRIM") else names[0]


def _default(field: _FieldDeclaration, *, auto_key: bool = False) -> str | None:
    """The SQL DEFAULT of a field with a constant default (validated through the field's type).

    ``default=None`` on a single int primary key means "SQLite assigns it" (the rowid).
    """
    info = field.info
    if info.default is PydanticUndefined or info.default_factory is not None:
        return None
    if auto_key and info.default is None:
        return None
    try:
        value = _validated_default(field)
    except ValidationError as error:
        message = error.errors()[0]["msg"]
        raise field.error(f"invalid default {info.default!r}: {message}") from None
    except Exception as error:  # a validator of the field's own that raised something pydantic does not wrap
        raise field.error(f"invalid default {info.default!r}: validating it raised {type(error).__name__}: {error}") from error
    if value is None:
        return None
    try:
        stored = encode_value(field.kind, value)
        literal = quote_literal(stored)
    except ValueError as error:
        raise field.error(f"default {info.default!r} cannot be an SQL DEFAULT: {error}") from None
    reason = unstorable_reason(stored)
    if reason is not None:
        raise field.error(f"default {info.default!r} cannot be stored: {reason}")
    return literal


def _validated_default(field: _FieldDeclaration) -> Any:
    """The field's default as the model would hold it. Fast path: validate it as an assignment to
    that one field of a blank instance (the model's validator already exists; building a
    ``TypeAdapter`` per field was most of compile's cost). Models whose validators need other
    fields (or refuse the blank instance) take the ``TypeAdapter`` path, which also gives the error."""
    model, info = field.model, field.info
    blank = model.__new__(model)
    for name, value in (("__dict__", {}), ("__pydantic_fields_set__", set()), ("__pydantic_extra__", None), ("__pydantic_private__", None)):
        object.__setattr__(blank, name, value)
    try:
        model.__pydantic_validator__.validate_assignment(blank, field.name, info.default)
        return blank.__dict__[field.name]
    except Exception:  # noqa: BLE001 - any refusal here is re-decided by the exact path below
        annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        return TypeAdapter(annotation).validate_python(info.default)


def _checks(field: _FieldDeclaration) -> tuple[Check, ...]:
    """CHECK expressions for annotated-types bounds: lengths on text/bytes, bounds on numbers."""
    column = quote_identifier(field.name)
    checks: list[str] = []
    for item in field.metadata:
        bounds = _bounds(item)
        for bound, value in bounds:
            if value is None:
                continue
            if bound in ("min_length", "max_length"):
                if field.kind not in ("str", "bytes"):
                    continue
                operator = ">=" if bound == "min_length" else "<="
                checks.append(f"length({column}) {operator} {int(value)}")
            elif field.kind in ("int", "float") and isinstance(value, (numbers.Real, decimal.Decimal)) and not isinstance(value, bool):
                operator = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[bound]
                if not isinstance(value, (int, float)):  # a Decimal or Fraction bound: compared as pydantic compares it
                    whole = math.floor(value)  # exact: an int field's bound is whole (pydantic refuses others)
                    value = whole if field.kind == "int" and whole == value else float(value)
                if field.kind == "int" and isinstance(value, float) and value.is_integer():
                    value = int(value)  # the same bound for integers; and typing's cache hands Annotated[int, Gt(0)] the Gt(0.0) of an earlier alias
                checks.append(f"{column} {operator} {quote_literal(value)}")
    return tuple(Check(text) for text in checks)


def _bounds(item: object) -> list[tuple[str, Any]]:
    if isinstance(item, StringConstraints):
        return [("min_length", item.min_length), ("max_length", item.max_length)]
    if isinstance(item, annotated_types.MinLen):
        return [("min_length", item.min_length)]
    if isinstance(item, annotated_types.MaxLen):
        return [("max_length", item.max_length)]
    if isinstance(item, annotated_types.Len):
        return [("min_length", item.min_length), ("max_length", item.max_length)]
    if isinstance(item, annotated_types.Interval):
        return [("gt", item.gt), ("ge", item.ge), ("lt", item.lt), ("le", item.le)]
    for name in ("gt", "ge", "lt", "le"):
        cls = getattr(annotated_types, name.capitalize())
        if isinstance(item, cls):
            return [(name, getattr(item, name))]
    return []


def index_name(table: str, columns: tuple[str, ...], unique: bool) -> str:
    """Deterministic index name; names past ``MAX_INDEX_NAME`` keep a prefix plus a hash of the whole."""
    name = ("uq_" if unique else "ix_") + table + "_" + "_".join(columns)
    if len(name) <= MAX_INDEX_NAME:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]
    return name[: MAX_INDEX_NAME - len(digest) - 1] + "_" + digest


def _index(table: str, columns: tuple[str, ...], unique: bool, name: str | None) -> Index:
    return Index(name=name or index_name(table, columns, unique), table=table, columns=tuple(columns), unique=unique)


def _deduplicate(indexes: list[Index]) -> list[Index]:
    seen: dict[str, Index] = {}
    for index in indexes:
        seen.setdefault(fold_name(index.name), index)
    return list(seen.values())


def _check_index_names(tables: tuple[Table, ...]) -> None:
    owners: dict[str, str] = {}
    table_names = {fold_name(table.name) for table in tables}
    for table in tables:
        for index in table.indexes:
            key = fold_name(index.name)
            if key in owners and owners[key] != table.name:
                raise SchemaDefinitionError(table.model or table.name, None, f"index name {index.name!r} is also used on table {owners[key]!r}")
            if key in table_names:
                raise SchemaDefinitionError(table.model or table.name, None, f"index name {index.name!r} is also a table name")
            owners[key] = table.name


def _foreign_key(field: _FieldDeclaration, marker: markers.ForeignKey, known: dict[str, type[BaseModel]]) -> ForeignKey:
    target = marker.target
    if isinstance(target, type) and issubclass(target, BaseModel):
        options = table_options(target)
        if options is None:
            raise field.error(f"foreign key target {target.__qualname__} is not a table model")
        table_name, column_name = options.table, None
    elif isinstance(target, str) and target:
        table_name, _, column_name = target.partition(".")
        column_name = column_name or None
    else:
        raise field.error(f"foreign key target must be 'table.column' or a table model, not {target!r}")
    parent = known.get(fold_name(table_name))
    if parent is None:
        raise field.error(f"foreign key references unknown table {table_name!r}")
    parent_options = table_options(parent)
    assert parent_options is not None
    _ensure_complete(parent)
    parent_fields = {fold_name(name): name for name in parent.model_fields}
    parent_key = _declared_key(parent)
    if column_name is None:
        if len(parent_key) != 1:
            raise field.error(f"table {table_name!r} has no single-column primary key; name the column ('{table_name}.column')")
        column_name = parent_key[0]
    if fold_name(column_name) not in parent_fields:
        raise field.error(f"foreign key references unknown column {table_name}.{column_name}")
    column_name = parent_fields[fold_name(column_name)]
    if (column_name,) != parent_key and not _is_unique_field(parent, column_name):
        raise field.error(
            f"foreign key target {table_name}.{column_name} is neither the primary key nor unique; SQLite requires one"
        )
    for action in (marker.on_delete, marker.on_update):
        if action == "SET NULL" and not field.nullable:
            raise field.error(f"ON ... {action} on a NOT NULL column: SQLite would refuse the parent's change; make it Optional")
    return ForeignKey(
        columns=(field.name,),
        ref_table=parent_options.table,
        ref_columns=(column_name,),
        on_delete=marker.on_delete,
        on_update=marker.on_update,
        deferred=marker.deferred,
    )


def _declared_key(model: type[BaseModel]) -> tuple[str, ...]:
    options = table_options(model)
    if options is not None and options.primary_key is not None:
        return options.primary_key
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(isinstance(item, markers.PrimaryKey) for item in _all_metadata(info))
    )


def _is_unique_field(model: type[BaseModel], name: str) -> bool:
    info = model.model_fields[name]
    if any(isinstance(item, markers.Unique) or (isinstance(item, markers.Index) and item.unique) for item in _all_metadata(info)):
        return True
    options = table_options(model)
    return any(index.unique and index.columns == (name,) for index in (options.indexes if options else ()))


def _all_metadata(info: FieldInfo) -> list[Any]:
    try:
        _, _, inner = split_optional(info.annotation)
    except UnsupportedType:
        inner = []
    return [*info.metadata, *inner]
