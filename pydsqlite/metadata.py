"""pydsqlite's own bookkeeping tables: which tables and indexes it manages."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import fold_name
from .sqltext import quote_literal

METADATA_PREFIX = "_pydsqlite"
OBJECTS_TABLE = "_pydsqlite_objects"
CREATE_OBJECTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {OBJECTS_TABLE} ("
    "kind TEXT NOT NULL, name TEXT NOT NULL, table_name TEXT NOT NULL, PRIMARY KEY (kind, name)"
    ") WITHOUT ROWID"
)


@dataclass(frozen=True)
class ManagedObjects:
    """Names (case-folded) of the tables and indexes pydsqlite created or adopted."""

    tables: frozenset[str] = frozenset()
    indexes: frozenset[str] = frozenset()

    def manages_table(self, name: str) -> bool:
        return fold_name(name) in self.tables

    def manages_index(self, name: str) -> bool:
        return fold_name(name) in self.indexes


def record_statements(tables: dict[str, list[str]]) -> list[str]:
    """Statements that make the metadata say exactly: these tables, with these indexes, are managed."""
    statements = [CREATE_OBJECTS_TABLE, f"DELETE FROM {OBJECTS_TABLE}"]
    for table, indexes in tables.items():
        statements.append(
            f"INSERT INTO {OBJECTS_TABLE} (kind, name, table_name) VALUES ('table', {quote_literal(table)}, {quote_literal(table)})"
        )
        for index in indexes:
            statements.append(
                f"INSERT INTO {OBJECTS_TABLE} (kind, name, table_name) VALUES ('index', {quote_literal(index)}, {quote_literal(table)})"
            )
    return statements
