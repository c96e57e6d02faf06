"""How one model's rows travel: validation, per-column encoding and decoding, built once per model.

Reads and writes both go through the model's own Pydantic validator, so a row is
never written or returned without being validated (SQLModel's table models skip this).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Annotated, Any, cast

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    PydanticUserError,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    create_model,
    field_validator,
)
from pydantic.fields import FieldInfo

from ..errors import RowValidationError, UnstorableValueError, UsageError
from ..schema.codecs import (
    INLINE_ENCODERS,
    decoder_for,
    encoder_for,
    parse_offset_with_seconds,
    split_optional,
    storage_kind,
    unstorable_reason,
)
from ..schema.compile import compile_cached, input_key, table_model_argument
from ..schema.objects import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, Table, fold_name
from ..sql.render import quote_identifier

_codecs: dict[type[BaseModel], RowCodec] = {}


def _declared_type(info: FieldInfo) -> Any:
    """A field's annotation with the constraints Pydantic moved out of it (``StringConstraints``, ``Gt``...)."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def key_model(model: type[BaseModel], key: tuple[str, ...]) -> type[BaseModel]:
    """A model of ``model``'s key fields alone, validating them as ``model`` does: the same field
    declarations (types, constraints, aliases), configuration and field validators. Model
    validators are left out: they need the whole row."""
    validators: dict[str, Any] = {}
    for name, decorator in model.__pydantic_decorators__.field_validators.items():
        names = [field for field in decorator.info.fields if field in key or field == "*"]
        if names:
            function: Any = staticmethod(decorator.func)  # bound to ``model``: its helpers and ClassVars stay in reach
            mode: Any = decorator.info.mode
            wrap: Any = field_validator(*names, mode=mode, check_fields=False)
            validators[name] = wrap(function)
    fields: dict[str, Any] = {name: (model.model_fields[name].annotation, model.model_fields[name]) for name in key}
    return create_model(
        f"{model.__name__}Key", __config__=model.model_config, __validators__=validators, __module__=model.__module__, **fields
    )


def codec_for(model: Any) -> RowCodec:
    """The (cached) codec of a table model; ``UsageError`` for anything that is not a table model class."""
    try:
        return _codecs[model]
    except (KeyError, TypeError):  # TypeError: unhashable, so not a model class
        pass
    codec = _codecs[model] = RowCodec(table_model_argument(model))
    return codec


def _keys_read(model: type[BaseModel]) -> frozenset[str] | None:
    """The keys ``model``'s validator reads its fields from: aliases (every choice of an
    ``AliasChoices``, the first key of an ``AliasPath``) unless it validates by name only, and field
    names where it accepts them; computed fields' keys too (pydantic computes them again, nothing is
    lost). None when a model validator sees the raw input first: it may read any key."""
    decorators = model.__pydantic_decorators__.model_validators.values()
    if any(decorator.info.mode in ("before", "wrap") for decorator in decorators):
        return None
    config = model.model_config
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    by_alias = config.get("validate_by_alias", True) is not False
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.validation_alias if info.validation_alias is not None else info.alias
        if alias is None or by_name or not by_alias:
            keys.add(name)
        if not by_alias:
            continue
        for choice in alias.choices if isinstance(alias, AliasChoices) else [alias]:
            if isinstance(choice, str):
                keys.add(choice)
            elif isinstance(choice, AliasPath) and choice.path and isinstance(choice.path[0], str):
                keys.add(choice.path[0])
    for name, computed in model.model_computed_fields.items():
        keys.update(key for key in (name, computed.alias) if key)
    return frozenset(keys)


class RowCodec:
    """Column order, encoders, decoders, validators and SQL of one table model."""

    def __init__(self, model: type[BaseModel]) -> None:
        table = compile_cached((model,)).schema.tables[0]
        self.model = model
        self.table: Table = table
        self.name = table.name
        self.quoted_table = quote_identifier(table.name)
        self.fields = list(model.model_fields)
        self.input_keys = [input_key(model, name, info) for name, info in model.model_fields.items()]
        """The key each field is validated from (its alias, unless the model populates by name)."""
        self.aliased = self.input_keys != self.fields
        self._fields_folded = {fold_name(name): name for name in self.fields}
        self.field_of_key = dict(zip(self.input_keys, self.fields, strict=True))
        self.encoders: list[Callable[[Any], Any] | None] = [encoder_for(info.annotation) for info in model.model_fields.values()]
        self.decoders = [
            (position, decoder)
            for position, info in enumerate(model.model_fields.values())
            if (decoder := decoder_for(info.annotation)) is not None
        ]
        kinds = [storage_kind(split_optional(info.annotation)[0]) for info in model.model_fields.values()]
        self.temporal_kinds = {key: kind for key, kind in zip(self.input_keys, kinds, strict=True) if kind in ("datetime", "time")}
        """Date-time and time fields by input key: the values a stored UTC offset with seconds can affect."""
        self.dated = tuple((position, name, kind) for position, (name, kind) in enumerate(zip(self.fields, kinds, strict=True)) if kind in _ISO_SHAPE)
        """Date, date-time and time fields (position, name, kind): a stored value not in ISO 8601's shape is
        refused on read (``unreadable_date``) rather than guessed at."""
        self._first_unreadable_date = _date_screen(self.dated)
        self._decoder_at = dict(self.decoders)
        self._field_adapters: dict[int, TypeAdapter[Any]] = {}
        """Per field position, a validator of that field alone (``field_reads_as``), made on first use."""
        self.decimal_fields = frozenset(name for name, kind in zip(self.fields, kinds, strict=True) if kind == "decimal")
        """Decimal fields: stored as text to keep every digit, so SQL compares and orders them as text."""
        self.json_fields = frozenset(name for name, kind in zip(self.fields, kinds, strict=True) if kind == "json")
        """JSON fields (lists, dicts, nested models): SQL compares and orders their text, not their values."""
        self.validator = model.__pydantic_validator__
        self.keeps_extras = model.model_config.get("extra") == "allow"
        """``extra="allow"``: an instance can carry fields no column stores, which a write must refuse."""
        self.dict_keys = _keys_read(model) if model.model_config.get("extra") in (None, "ignore") else None
        """Every key a row given as a dict may hold: pydantic would drop any other without a word (None:
        the model refuses or keeps unknown keys itself)."""
        self._subclasses_fitting: dict[type, bool] = {}
        self.many = TypeAdapter(list[model])  # type: ignore[valid-type]
        self.key = table.primary_key
        self.key_positions = [self.fields.index(name) for name in self.key]
        self.key_validator: type[BaseModel] | None = key_model(model, self.key) if self.key else None
        """Validates a caller's key parts as the model validates those fields (``"7"`` for an int key is
        7, ``1.5`` is refused, a lower-casing validator lower-cases), so the key a row was written with
        finds it again."""
        self.key_inputs = [self.input_keys[position] for position in self.key_positions]
        key_types: Any = tuple[tuple(_declared_type(model.model_fields[name]) for name in self.key)]  # type: ignore[misc]
        self.key_types: TypeAdapter[tuple[Any, ...]] | None = TypeAdapter(key_types) if self.key else None
        """The key fields' declared types alone: what validates a key when a field validator needs the
        rest of the row (``info.data``) and so cannot run on a key by itself."""
        self.lww = [column.name for column in table.columns if column.lww]
        self.synced = bool(self.lww) and bool(self.key)
        """A table with LWW columns and a primary key syncs between replicas (row version and sequence too)."""
        self.group = [name for name in self.fields if name not in self.key and name not in self.lww]
        """Non-key, non-LWW fields: in a synced table they share the row version's timestamp."""
        self.lww_positions = [(name, self.fields.index(name)) for name in self.lww]
        self.group_positions = [self.fields.index(name) for name in self.group]
        """Where the LWW fields and the other non-key fields sit in a row (field order)."""
        self.auto_key = self._auto_key(model)
        self.auto_key_input = self.input_keys[self.fields.index(self.auto_key)] if self.auto_key else None
        columns = ", ".join(quote_identifier(name) for name in self.fields)
        self.select_sql = f"SELECT {columns} FROM {self.quoted_table}"
        self._encode_row = _row_encoder(self.fields, self.encoders)
        self.auto_position = self.fields.index(self.auto_key) if self.auto_key else -1
        self.insert_head = {auto: self._insert_head(auto) for auto in (False, True)}
        """``INSERT INTO table (columns)`` with every column (False) or leaving out a None auto-assigned
        key (True); ``Engine.insert_rows`` adds the VALUES."""

    def _auto_key(self, model: type[BaseModel]) -> str | None:
        """A single INTEGER key declared with ``default=None`` is assigned by SQLite on insert."""
        if len(self.key) != 1 or self.table.rowid_alias is None:
            return None
        info = model.model_fields[self.key[0]]
        return self.key[0] if info.default is None and info.default_factory is None else None

    def _insert_head(self, without_key: bool) -> str:
        names = [name for name in self.fields if not (without_key and name == self.auto_key)]
        names += [name + LWW_SUFFIX for name in self.lww]
        if self.synced:
            names += [VERSION_COLUMN, SEQ_COLUMN]
        if not names:  # only a key SQLite assigns: ``Engine.insert_rows`` writes DEFAULT VALUES
            return f"INSERT INTO {self.quoted_table}"
        columns = ", ".join(quote_identifier(name) for name in names)
        return f"INSERT INTO {self.quoted_table} ({columns})"

    # --- writing -------------------------------------------------------------------------

    def prepare(self, obj: Any) -> Mapping[str, Any]:
        """The raw field values to validate: an instance's fields, or a mapping as given (not copied
        unless a None auto-assigned key has to be left out)."""
        if isinstance(obj, self.model):
            if type(obj) is not self.model:
                self._require_fitting_subclass(obj)
            data = self.by_input_key(obj.__dict__) if self.aliased else obj.__dict__
        elif isinstance(obj, dict):
            data = obj
            if self.dict_keys is not None and not self.dict_keys.issuperset(data):
                raise self._unknown_keys(data)
        elif isinstance(obj, BaseModel):
            raise UsageError(f"expected a {self.model.__name__} (table {self.name!r}), got {type(obj).__name__}")
        else:
            raise UsageError(f"expected a {self.model.__name__} or a dict, got {type(obj).__name__}")
        key = self.auto_key_input
        if key is not None and key in data and data[key] is None:
            data = {name: value for name, value in data.items() if name != key}
        return data

    def _require_fitting_subclass(self, obj: BaseModel) -> None:
        """A subclass instance is stored through this model only if it has no field of its own, which no
        column of this model's would take (it would be dropped without a word), nor extra fields."""
        kind = type(obj)
        if obj.__pydantic_extra__:
            self._without_extras([obj], [obj])
        fits = self._subclasses_fitting.get(kind)
        if fits is None:
            fits = self._subclasses_fitting[kind] = set(kind.model_fields) <= set(self.fields)
        if not fits:
            own = ", ".join(repr(name) for name in kind.model_fields if name not in self.fields)
            raise UsageError(
                f"a {kind.__qualname__} has field(s) {own} that {self.model.__qualname__} (table {self.name!r}) does not "
                f"store; write {kind.__qualname__} rows as {kind.__qualname__} (insert_many(rows, model={kind.__qualname__}), "
                "one model per call)"
            )

    def _unknown_keys(self, data: Mapping[str, Any]) -> UsageError:
        unknown = sorted(map(str, data.keys() - self.dict_keys)) if self.dict_keys is not None else []
        hints = [
            f"{key!r} is field {key!r}, which is read from {self.input_keys[self.fields.index(key)]!r}"
            for key in unknown if key in self.fields
        ]
        return UsageError(
            f"a row given as a dict has key(s) {', '.join(map(repr, unknown))} that {self.model.__qualname__} (table "
            f"{self.name!r}) does not read, so their values would be dropped; keys it reads: {', '.join(sorted(self.dict_keys or ()))}"
            + (f" ({'; '.join(hints)})" if hints else "")
        )

    def by_input_key(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Field values keyed as the validator expects them (aliases)."""
        return {key: values[name] for name, key in zip(self.fields, self.input_keys, strict=True) if name in values}

    def validate_fields(self, values: dict[str, Any]) -> Any:
        """Validate values keyed by field name (whatever the aliases)."""
        return self.validate(self.by_input_key(values))

    def validate(self, obj: Any, *, storing: bool = True) -> Any:
        """An instance of this codec's model, validated from ``obj`` (an instance, or a dict by field name);
        ``storing``: it is to be written, so extra fields no column stores are refused."""
        if self.keeps_extras and storing:
            return self._without_extras([obj], [self.validator.validate_python(self.prepare(obj))])[0]
        return self.validator.validate_python(self.prepare(obj))

    def validate_many(self, objs: Iterable[Any]) -> list[BaseModel]:
        """Validate a batch; a failure raises Pydantic's ValidationError located by the object's index
        (a row this model cannot take as given, ``UsageError`` naming its index)."""
        objs = objs if isinstance(objs, list) else list(objs)
        try:
            prepared = [self.prepare(obj) for obj in objs]
        except UsageError:
            for position, obj in enumerate(objs):
                try:
                    self.prepare(obj)
                except UsageError as error:
                    raise UsageError(f"row {position}: {error}") from None
            raise
        if self.keeps_extras:
            return self._without_extras(objs, self.many.validate_python(prepared))
        return self.many.validate_python(prepared)

    def _without_extras(self, given: list[Any], instances: list[Any]) -> list[Any]:
        """``instances`` unchanged, unless one of them (or the instance it came from) carries extra fields
        (``extra="allow"``): no column stores them, so writing would drop them without a word."""
        for source, instance in zip(given, instances, strict=True):
            extra = getattr(source, "__pydantic_extra__", None) or instance.__pydantic_extra__
            if extra:
                name, value = next(iter(extra.items()))
                raise UnstorableValueError(
                    self.name, name, value,
                    f"it is an extra field (the model allows extra fields), and no column stores it; declare it as a "
                    f"field of {self.model.__qualname__} (a JSON field such as dict[str, Any] for free-form data) or leave it out",
                    model=self.model.__qualname__,
                )
        return instances

    def values(self, instance: BaseModel) -> list[Any]:
        """The SQLite values of an instance, in field order; ``UnstorableValueError`` names a value no encoder can take."""
        try:
            return self._encode_row(instance.__dict__)
        except (ValueError, TypeError) as error:  # NaN, a JSON value pydantic cannot serialise...
            culprit = self._encoding_error(instance)
            if culprit is None:
                raise
            raise culprit from error

    def values_of_many(self, instances: list[Any]) -> list[list[Any]]:
        """``values`` of each instance, in one pass (the errors are ``values``' own)."""
        encode = self._encode_row
        try:
            return [encode(instance.__dict__) for instance in instances]
        except (ValueError, TypeError):
            return [self.values(instance) for instance in instances]

    def _encoding_error(self, instance: BaseModel) -> UnstorableValueError | None:
        for name, encode in zip(self.fields, self.encoders, strict=True):
            value = instance.__dict__[name]
            try:
                if encode is not None and value is not None:
                    encode(value)
            except (ValueError, TypeError) as error:
                return UnstorableValueError(self.name, name, value, str(error), model=self.model.__qualname__)
        return None

    def unstorable(self, instance: BaseModel) -> UnstorableValueError | None:
        """The first value of ``instance`` SQLite cannot bind (an integer beyond 64 bits, a lone
        surrogate), or None; looked for only after the driver refused a write."""
        for name, stored in zip(self.fields, self.values(instance), strict=True):
            reason = unstorable_reason(stored)
            if reason is not None:
                return UnstorableValueError(self.name, name, instance.__dict__[name], reason, model=self.model.__qualname__)
        return None

    def key_of(self, instance: BaseModel) -> tuple[Any, ...]:
        """The encoded primary key of an instance (SQL parameters for ``key_where``)."""
        values = self.values(instance)
        return tuple(values[position] for position in self.key_positions)

    def require_key(self, action: str) -> None:
        """``UsageError`` unless the table has a primary key: ``action`` names a row by it."""
        if not self.key:
            raise UsageError(
                f"{self.model.__qualname__} (table {self.name!r}) has no primary key, so {action} cannot name a row; "
                "declare one, or use select()/count() with a condition"
            )

    def key_params(self, key: Any, action: str) -> tuple[Any, ...]:
        """A caller's key (a value, or a tuple for composite keys), validated by the key fields' types
        and encoded as SQL parameters; ``UsageError`` for a key of the wrong arity or type."""
        self.require_key(action)
        assert self.key_validator is not None
        parts = key if isinstance(key, tuple) else (key,)
        if len(parts) != len(self.key):
            raise UsageError(
                f"{action}: table {self.name!r} ({self.model.__qualname__}) has a {len(self.key)}-column key "
                f"{self.key}; got {key!r}" + (" (pass a tuple)" if len(self.key) > 1 else "")
            )
        assert self.key_types is not None
        try:
            try:
                validated = self.key_validator.model_validate(dict(zip(self.key_inputs, parts, strict=True)))
            except ValidationError:
                raise
            except Exception:  # noqa: BLE001 - a field validator reading other fields (info.data): the types alone
                parts = self.key_types.validate_python(parts)
            else:
                parts = tuple(validated.__dict__[name] for name in self.key)
        except ValidationError as error:
            problem = error.errors()[0]
            given = problem["loc"][0] if problem["loc"] else 0
            position = self.key_inputs.index(given) if given in self.key_inputs else given if isinstance(given, int) else 0
            raise UsageError(f"{action}: key {key!r} does not fit {self.model.__qualname__}.{self.key[position]}: {problem['msg']}") from None
        encoded = []
        for position, part in zip(self.key_positions, parts, strict=True):
            encode = self.encoders[position]
            try:
                encoded.append(encode(part) if encode is not None and part is not None else part)
            except ValueError as error:  # NaN: SQLite would bind it as NULL
                raise UnstorableValueError(self.name, self.fields[position], part, str(error), model=self.model.__qualname__) from None
        return tuple(encoded)

    def key_where(self) -> str:
        return " AND ".join(f"{quote_identifier(name)} = ?" for name in self.key)

    # --- reading -------------------------------------------------------------------------

    def decode(self, row: tuple[Any, ...]) -> BaseModel:
        """A validated instance from a row selected with ``select_sql``."""
        return self.decode_many([row])[0]

    def decode_many(self, rows: list[tuple[Any, ...]]) -> list[BaseModel]:
        """Validated instances of a batch of rows, validated in one call (the fast path of selects)."""
        if self.dated:
            suspect = self._first_unreadable_date(rows)
            refusal = self.unreadable_date(suspect) if suspect is not None else None
            if refusal is not None:
                raise refusal
        keys = self.input_keys
        if self.decoders:
            dicts = [self._decoded(row) for row in rows]
        else:
            dicts = [dict(zip(keys, row)) for row in rows]
        try:
            return self.validate_stored(dicts)
        except ValidationError as error:
            raise self._batch_error(rows, error) from None

    def _batch_error(self, rows: list[tuple[Any, ...]], error: ValidationError) -> RowValidationError:
        """The refusal of the first row of ``rows`` that does not validate, told by its key and fields (not by
        its place in the batch), with the keys of the others that fail too; ``validation_error`` is the
        whole batch's Pydantic error."""
        items = error.errors()
        failing = sorted({item["loc"][0] for item in items if item["loc"] and isinstance(item["loc"][0], int)}) or [0]
        position = failing[0]
        columns, detail = self._described([{**item, "loc": item["loc"][1:]} for item in items if item["loc"] and item["loc"][0] == position], "stored value")
        if len(failing) > 1:
            detail += f"; {len(failing) - 1} more row(s) read in the same batch do not validate either"
            if self.key:
                more = f", and {len(failing) - 6} more" if len(failing) > 6 else ""
                detail += f" ({', '.join(repr(self._key_of_row(rows[other])) for other in failing[1:6])}{more})"
        return self._row_error(rows[position], error, columns, detail=detail)

    def refusal(self, stored: tuple[Any, ...], error: ValidationError) -> RowValidationError:
        """The refusal of one row (the stored row an update changes, named by its stored key) as Pydantic
        refused its values: each field with its message and value."""
        columns, detail = self._described(error.errors(), "value")
        return self._row_error(stored, error, columns, detail=detail)

    def _described(self, items: list[Any], value_is: str) -> tuple[list[str], str]:
        """The fields Pydantic's error items (locations starting at a field's input key) name, and a line
        telling each: ``field: message (stored value …)``; a model validator's refusal names no field."""
        problems, columns = [], set()
        for item in items:
            location = item["loc"]
            if not location:  # a model validator's refusal
                problems.append(item["msg"])
                continue
            field = self.field_of_key.get(str(location[0]), str(location[0]))
            columns.add(field)
            value = f" ({value_is} {item['input']!r})" if len(location) == 1 else ""
            problems.append(f"{'.'.join([field, *map(str, location[1:])])}: {item['msg']}{value}")
        return sorted(columns), "; ".join(problems)

    def validate_stored(self, dicts: list[dict[str, Any]]) -> list[BaseModel]:
        """Validate stored rows (keyed as the validator expects) in one call.

        Always in lax mode, whatever the model's ``strict`` setting: stored values are SQLite's
        forms (a datetime as text, a bool as 0 or 1), which strict mode would refuse, so a strict
        model could not read its own rows. Pydantic reads UTC offsets in whole minutes only:
        values it refuses that were stored with an offset in seconds are parsed here and the
        batch validated again. Only the error path pays for this.
        """
        while True:
            try:
                return self.many.validate_python(dicts, strict=False)
            except ValidationError as error:
                if not self._parse_offsets_with_seconds(dicts, error):
                    raise

    def _parse_offsets_with_seconds(self, dicts: list[dict[str, Any]], error: ValidationError) -> bool:
        parsed_any = False
        for item in error.errors():
            location = item["loc"]
            if len(location) < 2 or not isinstance(location[0], int) or location[1] not in self.temporal_kinds:
                continue
            row, key = dicts[location[0]], str(location[1])
            parsed = parse_offset_with_seconds(self.temporal_kinds[key], row[key])
            if parsed is not None:
                row[key] = parsed
                parsed_any = True
        return parsed_any

    def decode_values(self, data: dict[str, Any]) -> dict[str, Any]:
        """Stored values by field name, made ready for validation (JSON parsed, keyed as the validator expects)."""
        decoded = dict(data)
        for position, decode in self.decoders:
            name = self.fields[position]
            decoded[name] = decode(decoded[name])
        return self.by_input_key(decoded) if self.aliased else decoded

    def field_named(self, name: str) -> str | None:
        """The field a name written in any case names (SQLite's names ignore case), or None."""
        return self._fields_folded.get(fold_name(name))

    def field_reads_as(self, position: int, stored: Any) -> Any:
        """The value one field's stored value reads as by the field alone: its type and constraints, its
        field validators and the model's string settings, but no model validator (which may derive it
        from other fields); ``ValueError`` (a ``ValidationError`` too) when it does not read that way,
        or is a date not in ISO 8601's shape."""
        if stored is None:
            return None
        kind = next((kind for at, _, kind in self.dated if at == position), None)
        if kind is not None and not _iso_shaped(kind, stored):
            raise ValueError(f"{stored!r} is not ISO 8601 text")
        adapter = self._field_adapters.get(position)
        if adapter is None:
            adapter = self._field_adapters[position] = _field_adapter(self.model, self.fields[position])
        decode = self._decoder_at.get(position)
        value = decode(stored) if decode is not None else stored
        try:
            return adapter.validate_python(value, strict=False)
        except ValidationError:
            parsed = parse_offset_with_seconds(kind, value) if kind in ("datetime", "time") else None
            if parsed is None:
                raise
            return parsed

    def _decoded(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self.input_keys, self.stored_values(row)))

    def stored_values(self, row: tuple[Any, ...]) -> list[Any]:
        """A stored row's values in field order as Pydantic reads them (JSON text parsed), not validated."""
        values = list(row)
        for position, decode in self.decoders:
            try:
                values[position] = decode(values[position])
            except (json.JSONDecodeError, TypeError, ValueError) as error:
                stored = repr(row[position])
                shown = stored if len(stored) <= 80 else stored[:77] + "..."
                problem = ValueError(f"its stored value {shown} cannot be read as JSON: {error}")
                raise self._row_error(row, problem, [self.fields[position]]) from None
        return values

    def date_not_iso(self, data: Mapping[str, Any]) -> tuple[str, Any] | None:
        """The first date, date-time or time field of ``data`` (keyed as the validator reads it) whose value
        is not ISO 8601 text, with that value: what ``unreadable_date`` refuses, for rows from elsewhere."""
        for position, name, kind in self.dated:
            value = data.get(self.input_keys[position])
            if value is not None and not _iso_shaped(kind, value):
                return name, value
        return None

    def unreadable_date(self, row: tuple[Any, ...], skip: Collection[str] = ()) -> RowValidationError | None:
        """The refusal of a row (field order) whose date, date-time or time field other than ``skip`` holds
        something other than ISO 8601 text: Pydantic would read a number, or the text of one, as Unix
        seconds or milliseconds (a Julian day such as ``2460311.5`` becomes a day in January 1970, the
        text ``'2024'`` 33 minutes after 1970 began), a guess pydsqlite does not make."""
        for position, name, kind in self.dated:
            value = row[position]
            if value is None or name in skip or _iso_shaped(kind, value):
                continue
            quoted = quote_identifier(name)
            at, mark = _ISO_SHAPE[kind]
            fix = {"datetime": f"strftime('%Y-%m-%dT%H:%M:%S+00:00', {quoted}, 'unixepoch')"}.get(kind, f"{kind}({quoted}, 'unixepoch')")
            problem = ValueError(
                f"its stored value {value!r} ({_storage_class(value)}) is not {kind} text in ISO 8601's extended form "
                f"({_ISO_EXAMPLE[kind]}), the only form pydsqlite reads a {kind} from: a number, or the text of one, could "
                "be Unix seconds or milliseconds, or a Julian day, so it is not guessed. If the column holds Unix seconds, "
                f"convert it once with SQL: UPDATE {self.quoted_table} SET {quoted} = {fix} WHERE {quoted} IS NOT NULL AND "
                f"substr({quoted}, {at + 1}, 1) <> '{mark}'" + (" (a naive field: leave out +00:00)" if kind == "datetime" else "")
                + "; or write the field through the model"
            )
            return self._row_error(row, problem, [name])
        return None

    def _key_of_row(self, row: tuple[Any, ...]) -> Any:
        """The primary key of a row (field order): its value, a tuple for a composite key, None without a key."""
        key = tuple(row[position] for position in self.key_positions) if self.key else None
        return key[0] if key is not None and len(key) == 1 else key

    def _row_error(self, row: tuple[Any, ...], error: Exception, columns: list[str], detail: str | None = None) -> RowValidationError:
        return RowValidationError(self.name, self._key_of_row(row), columns, error, detail=detail)


_ISO_SHAPE = {"datetime": (4, "-"), "date": (4, "-"), "time": (2, ":")}
"""Where ISO 8601 text of each kind has its first separator (``2024-…``, ``10:…``), which no number has."""
_ISO_EXAMPLE = {"datetime": "2024-01-02T10:00:00", "date": "2024-01-02", "time": "10:00:00"}


def _date_screen(dated: tuple[tuple[int, str, str], ...]) -> Callable[[list[tuple[Any, ...]]], tuple[Any, ...] | None]:
    """A function finding the first row whose date, date-time or time field is not ISO 8601 text, generated
    once per model: one condition per such field, so a select pays no per-cell loop for the check."""
    terms = []
    for position, _, kind in dated:
        at, mark = _ISO_SHAPE[kind]
        value = f"v{position}"
        terms.append(f"(({value} := row[{position}]) is not None and ({value}.__class__ is not str or {value}[{at}:{at + 1}] != {mark!r}))")
    source = "def first(rows):\n    for row in rows:\n        if " + (" or ".join(terms) or "False") + ":\n            return row\n    return None\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - positions and separators only, no names
    first: Callable[[list[tuple[Any, ...]]], tuple[Any, ...] | None] = namespace["first"]
    return first


_FIELD_SETTINGS = ("str_strip_whitespace", "str_to_lower", "str_to_upper", "str_min_length", "str_max_length", "coerce_numbers_to_str")
"""The model settings that change how one field's value reads (``field_reads_as``)."""
_VALIDATOR_OF_MODE = {"before": BeforeValidator, "after": AfterValidator, "wrap": WrapValidator, "plain": PlainValidator}


def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """A validator of one field alone: its annotation and constraints, then its ``@field_validator``s in
    the order the model applies them, under the model's string settings."""
    info = model.model_fields[name]
    metadata = list(info.metadata)
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if name in decorator.info.fields or "*" in decorator.info.fields:
            metadata.append(_VALIDATOR_OF_MODE[decorator.info.mode](decorator.func))
    annotation: Any = Annotated[info.annotation, *metadata] if metadata else info.annotation
    configured: dict[str, Any] = dict(model.model_config)  # read by names held in a tuple
    settings = {key: configured[key] for key in _FIELD_SETTINGS if key in configured}
    try:
        return TypeAdapter(annotation, config=cast(ConfigDict, settings) if settings else None)
    except PydanticUserError:  # a model type takes no config of another's: its own settings apply to it
        return TypeAdapter(annotation)


def _iso_shaped(kind: str, value: Any) -> bool:
    """Whether a stored date, date-time or time value is text with ISO 8601's first separator where it goes."""
    at, mark = _ISO_SHAPE[kind]
    return type(value) is str and value[at : at + 1] == mark


def _storage_class(value: Any) -> str:
    return {int: "an integer", float: "a real", bytes: "a blob"}.get(type(value), "text")


def _row_encoder(fields: list[str], encoders: list[Callable[[Any], Any] | None]) -> Callable[[Mapping[str, Any]], list[Any]]:
    """A function turning an instance's field dict into its SQLite values, generated once per model:
    one expression per column, so bulk writes pay no per-cell loop or dispatch."""
    namespace: dict[str, Any] = {}
    terms = []
    for position, (name, encode) in enumerate(zip(fields, encoders, strict=True)):
        value = f"data[{name!r}]"
        if encode is None:
            terms.append(value)
        else:
            namespace[f"encode{position}"] = encode
            inline = INLINE_ENCODERS.get(encode, "{f}({v})")
            terms.append(f"(None if (v{position} := {value}) is None else {inline.format(v=f'v{position}', f=f'encode{position}')})")
    source = "def encode_row(data):\n    return [" + ", ".join(terms) + "]\n"
    exec(source, namespace)  # noqa: S102 - field names enter only as repr() string literals
    encode_row: Callable[[Mapping[str, Any]], list[Any]] = namespace["encode_row"]
    return encode_row
