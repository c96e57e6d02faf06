"""A small helper for WHERE clauses: ``(col("age") > 30) & (col("name") == "x")``.

It only ever produces SQL text with ``?`` placeholders plus the bound values; values
are never formatted into the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sql.render import quote_identifier


@dataclass(frozen=True)
class Condition:
    """A WHERE condition: SQL text with ``?`` placeholders and its parameters."""

    sql: str
    params: tuple[Any, ...] = ()

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.sql}) AND ({other.sql})", self.params + other.params)

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.sql}) OR ({other.sql})", self.params + other.params)

    def __invert__(self) -> Condition:
        return Condition(f"NOT ({self.sql})", self.params)

    def __bool__(self) -> bool:
        raise TypeError("combine conditions with & | ~, not 'and', 'or', 'not'")


@dataclass(frozen=True)
class col:  # noqa: N801 - reads as a function in queries
    """A column reference for building conditions."""

    name: str

    def _compare(self, operator: str, value: Any) -> Condition:
        return Condition(f"{quote_identifier(self.name)} {operator} ?", (value,))

    def __eq__(self, value: Any) -> Condition:  # type: ignore[override]
        if value is None:
            return Condition(f"{quote_identifier(self.name)} IS NULL")
        return self._compare("=", value)

    def __ne__(self, value: Any) -> Condition:  # type: ignore[override]
        if value is None:
            return Condition(f"{quote_identifier(self.name)} IS NOT NULL")
        return self._compare("!=", value)

    def __lt__(self, value: Any) -> Condition:
        return self._compare("<", value)

    def __le__(self, value: Any) -> Condition:
        return self._compare("<=", value)

    def __gt__(self, value: Any) -> Condition:
        return self._compare(">", value)

    def __ge__(self, value: Any) -> Condition:
        return self._compare(">=", value)

    def is_in(self, values: list[Any] | tuple[Any, ...]) -> Condition:
        values = tuple(values)
        if not values:
            return Condition("0")
        return Condition(f"{quote_identifier(self.name)} IN ({', '.join('?' * len(values))})", values)

    def like(self, pattern: str) -> Condition:
        return self._compare("LIKE", pattern)

    __hash__ = None  # type: ignore[assignment]
