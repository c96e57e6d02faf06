"""A small helper for WHERE clauses: ``(col("age") > 30) & (col("name") == "x")``.

It only ever produces SQL text with ``?`` placeholders plus the bound values; values
are never formatted into the SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..sql.render import quote_identifier


@dataclass(frozen=True)
class Condition:
    """A WHERE condition: SQL text with ``?`` placeholders and its parameters. Built with
    ``col``, combined with ``&``, ``|`` and ``~``; or written by hand.

    Examples:
        >>> from pydsqlite import Condition, col
        >>> (col("age") >= 18) & ~col("email").like("%@example.com")
        Condition(sql='(`age` >= ?) AND (NOT (`email` LIKE ?))', params=(18, '%@example.com'))
        >>> Condition("length(name) > ?", (3,))
        Condition(sql='length(name) > ?', params=(3,))
    """

    sql: str
    params: tuple[Any, ...] = ()
    ordered: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Columns the condition compares by order (``<``, ``<=``, ``>``, ``>=``): a query refuses a
    Decimal column among them, which SQLite would compare as text."""

    def __post_init__(self) -> None:
        params = self.params
        if isinstance(params, (str, bytes, Mapping, Set)) or not isinstance(params, Iterable):
            raise UsageError(
                f"Condition({self.sql!r}, ...) takes its values as a sequence in the order of its ? placeholders, not "
                f"{type(params).__name__} {params!r}; for values by name, pass the text as where= and a mapping as params="
            )
        if type(params) is not tuple:
            object.__setattr__(self, "params", tuple(params))  # a list given by hand combines like the rest

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.sql}) AND ({other.sql})", self.params + other.params, self.ordered + other.ordered)

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.sql}) OR ({other.sql})", self.params + other.params, self.ordered + other.ordered)

    def __invert__(self) -> Condition:
        return Condition(f"NOT ({self.sql})", self.params, self.ordered)

    def __bool__(self) -> bool:
        raise TypeError("combine conditions with & | ~, not 'and', 'or', 'not'")


@dataclass(frozen=True)
class col:  # noqa: N801 - reads as a function in queries
    """A column reference for building conditions: compare it with ``==``, ``!=``, ``<``,
    ``<=``, ``>``, ``>=`` (``== None`` is ``IS NULL``), or use ``is_in`` and ``like``.
    Values are always bound as parameters, never formatted into the SQL.

    Examples:
        >>> import sqlite3
        >>> from typing import Optional
        >>> from pydsqlite import Database, SyncModel, col, sync_models
        >>> class Guest(SyncModel, table="guests"):
        ...     name: str
        ...     age: Optional[int] = None
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Guest])
        >>> db = Database(conn)
        >>> _ = db.insert_many([Guest(name="Ann", age=34), Guest(name="Bob"), Guest(name="Cy", age=12)])
        >>> db.select(Guest, (col("age") >= 18) | (col("age") == None), order_by="name")
        [Guest(name='Ann', age=34), Guest(name='Bob', age=None)]
        >>> db.count(Guest, col("name").is_in(["Ann", "Cy"]))
        2
    """

    name: str

    def _compare(self, operator: str, value: Any) -> Condition:
        if isinstance(value, col):  # another column of the row
            return Condition(f"{quote_identifier(self.name)} {operator} {quote_identifier(value.name)}")
        return Condition(f"{quote_identifier(self.name)} {operator} ?", (value,))

    def __eq__(self, value: Any) -> Condition:  # type: ignore[override]
        if value is None:
            return Condition(f"{quote_identifier(self.name)} IS NULL")
        return self._compare("=", value)

    def __ne__(self, value: Any) -> Condition:  # type: ignore[override]
        if value is None:
            return Condition(f"{quote_identifier(self.name)} IS NOT NULL")
        return self._compare("!=", value)

    def _order(self, operator: str, value: Any) -> Condition:
        if isinstance(value, col):
            return Condition(f"{quote_identifier(self.name)} {operator} {quote_identifier(value.name)}", (), (self.name, value.name))
        return Condition(f"{quote_identifier(self.name)} {operator} ?", (value,), (self.name,))

    def __lt__(self, value: Any) -> Condition:
        return self._order("<", value)

    def __le__(self, value: Any) -> Condition:
        return self._order("<=", value)

    def __gt__(self, value: Any) -> Condition:
        return self._order(">", value)

    def __ge__(self, value: Any) -> Condition:
        return self._order(">=", value)

    def is_in(self, values: Iterable[Any]) -> Condition:
        """The column's value is one of ``values`` (no values: matches no row); a ``None`` among them
        matches NULL, as ``== None`` does."""
        if isinstance(values, (str, bytes)):
            raise UsageError(f"col({self.name!r}).is_in() takes a list of values, not {type(values).__name__} {values!r} (write [{values!r}])")
        values = tuple(values)
        if any(isinstance(value, col) for value in values):
            raise UsageError(f"col({self.name!r}).is_in() takes values, not columns; compare columns with == instead")
        present = tuple(value for value in values if value is not None)
        condition = Condition(f"{quote_identifier(self.name)} IN ({', '.join('?' * len(present))})", present) if present else Condition("0")
        if len(present) < len(values):
            return self.__eq__(None) if not present else condition | self.__eq__(None)
        return condition

    def like(self, pattern: str) -> Condition:
        """SQLite's ``LIKE``: ``%`` matches any text, ``_`` one character, ASCII letters in any case."""
        return self._compare("LIKE", pattern)

    __hash__ = None  # type: ignore[assignment]
