"""A read's SQL from the arguments of ``select``, ``iter_select`` and ``count``: ``where=`` text or a
``Condition``, ``params=`` by position or by name, ``order_by=``, ``limit=`` and ``offset=``; values
always bound, and what would silently read other rows than asked refused with ``UsageError``."""

from __future__ import annotations

import datetime as dt
import numbers
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any

from ..engines import Engine
from ..errors import SchemaMismatchError, UnstorableValueError, UsageError
from ..schema.codecs import encode_param
from ..schema.objects import fold_name
from ..sql.ddl import ends_inside_comment, tokenize
from ..sql.render import double_quotes_as_names, quote_identifier
from .codec import RowCodec
from .query import Condition
from .refusals import NO_COLUMN, described, missing_column

Params = Sequence[Any] | Mapping[str, Any]
def unusable_where(codec: RowCodec, where: str, error: Exception) -> UsageError:
    """The driver's refusal of ``where=`` text (several statements, placeholders and params that do
    not pair up) as a ``UsageError`` naming model and table."""
    tokens = tokenize(where)
    if any(token.text == ";" for token in tokens):
        problem = "it holds more than one statement (a ';'); pass one condition, values as ? parameters"
    elif "bindings" in str(error):
        placeholders = sum(1 for token in tokens if token.kind == "variable")
        problem = f"it has {placeholders} placeholder{'s' if placeholders != 1 else ''}, which params= must match one for one ({error})"
    else:
        problem = str(error)
    return UsageError(f"{codec.model.__qualname__} (table {codec.name!r}): where={where!r} cannot run: {problem}")


def read_query(
    engine: Engine,
    codec: RowCodec,
    head: str,
    where: str | Condition | None,
    params: Params,
    order_by: str | Sequence[str] | None,
    limit: int | None,
    offset: int | None,
) -> tuple[str, list[Any]]:
    sql = head
    bound: list[Any] = []
    if isinstance(params, Mapping):
        where, params = _by_position(codec, where, params)
    if isinstance(where, Condition):
        for name in where.ordered:
            refuse_ordering_stored_text(codec, name, f"col({name!r}) compared with <, <=, > or >=")
        bound.extend(where.params)
    elif where is not None and not isinstance(where, str):
        raise UsageError(f"where= takes SQL text or a condition built with col(), not {type(where).__name__}")
    text = where.sql if isinstance(where, Condition) else where
    if text:
        _refuse_clauses_after_the_condition(codec, text)
        sql += f" WHERE {text}\n"  # a trailing "--" comment ends there, before ORDER BY or LIMIT
    if isinstance(params, (str, bytes)):
        raise UsageError(f"params= takes a sequence of values, not {type(params).__name__} (write ({params!r},))")
    if isinstance(params, Set):
        raise UsageError(
            f"params= takes a sequence of values (or a mapping of names to values), not a {type(params).__name__}, "
            f"whose order is undefined (reading {codec.model.__qualname__}, table {codec.name!r})"
        )
    if not isinstance(params, Iterable):
        raise UsageError(
            f"params= takes a sequence of values (or a mapping of names to values), not {params!r} "
            f"(reading {codec.model.__qualname__}, table {codec.name!r}); write ({params!r},) for one value"
        )
    bound.extend(params)
    if bound and not text:
        raise UsageError(f"{described(codec)}: params={params!r} given without a where= condition that has placeholders for them")
    encoded = query_params(codec, bound)
    if text and '"' in text:
        _refuse_double_quoted_strings(engine, codec, head, text, encoded)
    if order_by:
        sql += " ORDER BY " + ", ".join(_order_term(codec, term) for term in ([order_by] if isinstance(order_by, str) else order_by))
    if limit is not None:
        sql += " LIMIT ?"
        encoded.append(_row_count_argument(codec, "limit", limit))
    if offset is not None:
        if limit is None:
            sql += " LIMIT -1"
        sql += " OFFSET ?"
        encoded.append(_row_count_argument(codec, "offset", offset))
    return sql, encoded


def query_params(codec: RowCodec, values: Iterable[Any]) -> list[Any]:
    """Query parameters as the columns store them (``encode_param``). A numpy scalar is taken as the
    Python value it holds (``.item()``), a number of another type (a ``Fraction``) by its value: the
    driver would bind them as bytes or refuse them. NaN, which the driver binds as NULL (``x = ?``
    matching nothing, ``x IS ?`` the NULLs), raises ``UnstorableValueError``, however it comes (a float
    subclass, an enum's value, numpy's); a value no column stores, ``UsageError``."""
    bound = []
    for value in values:
        param = encode_param(value)
        if param is not None and type(param) not in (str, bytes, int, float):
            item = getattr(param, "item", None)
            if callable(item) and getattr(param, "shape", None) == ():  # a numpy scalar
                held = item()
                if getattr(getattr(param, "dtype", None), "kind", "") in ("M", "m") and not isinstance(held, (dt.date, dt.timedelta)):
                    raise UsageError(  # nanoseconds: numpy gives an int, which SQLite would compare as a number
                        f"{described(codec)}: the query parameter {value!r} holds a time numpy cannot give as a Python "
                        "datetime (nanoseconds, or out of its range); convert it first, e.g. value.astype('datetime64[us]').item()"
                    )
                param = encode_param(held)
            if isinstance(param, numbers.Integral):
                param = int(param)
            elif isinstance(param, numbers.Real):
                param = float(param)
            elif isinstance(param, (str, bytes, bytearray, memoryview)) or (type(param), sqlite3.PrepareProtocol) in sqlite3.adapters:
                pass
            elif param is not None:
                raise UsageError(
                    f"{described(codec)}: the query parameter {value!r} ({type(value).__name__}) is no value a column stores; "
                    "pass the type the field holds (str, int, float, bytes, bool, UUID, Decimal, date-times, Enum, JSON values)"
                )
        if isinstance(param, float) and param != param:
            raise UnstorableValueError(
                codec.name, None, value, "NaN is no value SQLite stores (it binds NaN as NULL)", model=codec.model.__qualname__
            )
        bound.append(param)
    return bound


_CLAUSES_AFTER_WHERE = frozenset({"GROUP", "HAVING", "ORDER", "LIMIT", "UNION", "INTERSECT", "EXCEPT"})
def _refuse_clauses_after_the_condition(codec: RowCodec, where: str) -> None:
    """``UsageError`` for ``where=`` text going on past its condition (``GROUP BY``, ``ORDER BY``,
    ``LIMIT``, a compound ``UNION``…, outside parentheses): ``count`` would count the first group
    only, and ``select`` would take clauses its own arguments (``order_by``, ``limit``) are for."""
    if ends_inside_comment(where):
        raise UsageError(
            f"{described(codec)}: where={where!r} ends inside a /* comment, which would swallow what the query adds after "
            "the condition (order_by=, limit=): close it with */"
        )
    depth = 0
    for token in tokenize(where):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.upper in _CLAUSES_AFTER_WHERE:
            raise UsageError(
                f"{described(codec)}: where={where!r} goes on past one condition ({token.upper} …): pass the condition "
                "only, and order_by=, limit=, offset= for the rest (a subquery in parentheses may hold any clause)"
            )


def _by_position(codec: RowCodec, where: str | Condition | None, params: Mapping[str, Any]) -> tuple[str | Condition | None, list[Any]]:
    """SQL text with named placeholders (``:name``, ``@name``, ``$name``) and a mapping, as ``?``
    placeholders and the values in their order, so that every engine binds them and every value is
    encoded as a positional one. A name without a value, a value without a placeholder, or ``?``
    placeholders among named ones raise ``UsageError``."""
    where_of = f"(reading {codec.model.__qualname__}, table {codec.name!r})"
    if not isinstance(where, str):
        if not params:
            return where, []
        raise UsageError(f"params= as a mapping names the placeholders of SQL text; where= is {type(where).__name__} {where_of}")
    pieces, values, used, position = [], [], set(), 0
    for token in tokenize(where):
        if token.kind != "variable":
            continue
        name = token.text[1:]
        if token.text[0] == "?" or not name:
            raise UsageError(
                f"where={where!r} mixes {token.text!r} with params= given by name: use :name placeholders only "
                f"(or a sequence of values for ? placeholders) {where_of}"
            )
        if name not in params:
            raise UsageError(f"where={where!r} has the placeholder {token.text!r}, which params= does not name {where_of}")
        pieces.append(where[position : token.start] + "?")
        values.append(params[name])
        used.add(name)
        position = token.end
    unused = sorted(map(str, set(params) - used))
    if unused:
        raise UsageError(f"params= names {', '.join(map(repr, unused))}, which where={where!r} has no placeholder for {where_of}")
    pieces.append(where[position:])
    return "".join(pieces), values


def _row_count_argument(codec: RowCodec, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise UsageError(f"{name}= takes a whole number of rows, 0 or more, not {value!r} (reading {codec.model.__qualname__}, table {codec.name!r})")
    return int(value)


def _refuse_double_quoted_strings(engine: Engine, codec: RowCodec, head: str, where: str, bound: list[Any]) -> None:
    """SQLite reads a double-quoted name that resolves to no column as a string literal, so a
    misspelled ``"nmae" = ?`` would compare a constant. The condition is compiled (EXPLAIN, nothing
    runs) with every double-quoted name in grave accents, which SQLite never takes for a string:
    a name that then resolves to nothing raises ``SchemaMismatchError``."""
    tokens = [token for token in tokenize(where) if token.kind == "quoted" and token.text.startswith('"')]
    if not tokens:
        return
    try:
        engine.execute(f"EXPLAIN {head} WHERE {double_quotes_as_names(where)}\n", bound).fetchall()
    except (OverflowError, UnicodeEncodeError):
        return  # a parameter SQLite cannot bind: the query itself names it
    except engine.Error as error:
        missing = NO_COLUMN.match(str(error))
        names = {fold_name(token.identifier): token.identifier for token in tokens}
        column = (missing.group(1) or "").rsplit(".", 1)[-1] if missing else ""
        if fold_name(column) not in names:
            return  # some other trouble: the query itself reports it
        name = names[fold_name(column)]
        raise SchemaMismatchError(
            codec.name,
            name,
            f'the query names "{name}" in double quotes, which is no column here (of {codec.model.__qualname__}, table {codec.name!r}, '
            f"fields: {', '.join(codec.fields)}): SQLite would read it as the string {name!r}; write strings in single quotes "
            f"('{name}') and names bare or in grave accents",
        ) from None


def _order_term(codec: RowCodec, term: str) -> str:
    """``"name"``, ``"-name"`` or ``"name desc"``: field names only, so nothing but identifiers reaches SQL."""
    text = term.strip()
    descending = text.startswith("-")
    text = text.lstrip("-").strip()
    match = re.fullmatch(r"(.+?)(?:\s+(asc|desc))?", text, re.IGNORECASE)
    assert match is not None
    written, direction = match.group(1), (match.group(2) or "").upper()
    name = codec.field_named(written)  # SQLite's names ignore case, as order_by does
    if name is None:
        raise missing_column(codec, written, "order_by")
    refuse_ordering_stored_text(codec, name, f"order_by={term!r}")
    return f"{quote_identifier(name)} {'DESC' if descending or direction == 'DESC' else 'ASC'}"


def refuse_ordering_stored_text(codec: RowCodec, name: str, what: str) -> None:
    """A Decimal or JSON column is text to SQLite ('10.00' sorts before '9.5', '[10]' before '[9]'): ordering by
    it would be wrong without a word. ``name`` as written: SQLite's names ignore case."""
    name = codec.field_named(name) or name
    if name in codec.json_fields:
        raise UsageError(
            f"{what}: field {name!r} of {codec.model.__qualname__} (table {codec.name!r}) is stored as JSON text, so "
            "SQLite would compare and order its text ('[10]' before '[9]'), not its values. Order by a column of "
            "its own, or by an expression on the value in SQL text (where='json_extract(...) > ?')"
        )
    if name in codec.decimal_fields:
        raise UsageError(
            f"{what}: field {name!r} of {codec.model.__qualname__} (table {codec.name!r}) is a Decimal, stored as text to "
            "keep every digit, so SQLite would compare and order it as text ('10.00' before '9.5'). Sort or filter such "
            "values in Python, or store them as an int of the smallest unit (cents) or a float to order them in SQL"
        )


