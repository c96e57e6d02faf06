"""pydsqlite's own bookkeeping tables: which tables and indexes it manages, and an audit
trail of every migration it applied."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .schema import Schema, fold_name
from .sqltext import quote_literal, render_create_index, render_create_table

METADATA_PREFIX = "_pydsqlite"
OBJECTS_TABLE = "_pydsqlite_objects"
CREATE_OBJECTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {OBJECTS_TABLE} ("
    "kind TEXT NOT NULL, name TEXT NOT NULL, table_name TEXT NOT NULL, PRIMARY KEY (kind, name)"
    ") WITHOUT ROWID"
)

MIGRATIONS_TABLE = "_pydsqlite_migrations"
CREATE_MIGRATIONS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
    "id INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, fingerprint TEXT NOT NULL, "
    "description TEXT NOT NULL, sql TEXT NOT NULL)"
)

STATE_TABLE = "_pydsqlite_state"
CREATE_STATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL, schema_version INTEGER NOT NULL)"
)


def state_statements(fingerprint: str) -> list[str]:
    """Remember that the schema now matches ``fingerprint`` at the current ``PRAGMA schema_version``.

    SQLite bumps ``schema_version`` on every schema change, so a later sync that finds
    both values unchanged can skip introspection entirely (issue: start-up cost).
    """
    return [
        CREATE_STATE_TABLE,
        f"INSERT OR REPLACE INTO {STATE_TABLE} (id, fingerprint, schema_version) "
        f"SELECT 1, {quote_literal(fingerprint)}, schema_version FROM pragma_schema_version",
    ]


@dataclass(frozen=True)
class AppliedMigration:
    """One entry of the audit trail: when a plan was applied, for which models, and its SQL."""

    id: int
    applied_at: str
    """UTC time in ISO 8601."""
    fingerprint: str
    """``schema_fingerprint`` of the models the database was migrated to."""
    description: str
    sql: str


def schema_fingerprint(schema: Schema) -> str:
    """A stable hash of a desired schema: the SQL that would create it, table by table."""
    digest = hashlib.sha256()
    for table in sorted(schema.tables, key=lambda table: fold_name(table.name)):
        digest.update(render_create_table(table).encode("utf-8"))
        for index in sorted(table.indexes, key=lambda index: fold_name(index.name)):
            digest.update(render_create_index(index).encode("utf-8"))
    return digest.hexdigest()


def audit_statements(applied_at: str, fingerprint: str, description: str, sql: str) -> list[str]:
    """Statements that append one entry to the audit trail."""
    values = ", ".join(quote_literal(value) for value in (applied_at, fingerprint, description, sql))
    return [
        CREATE_MIGRATIONS_TABLE,
        f"INSERT INTO {MIGRATIONS_TABLE} (applied_at, fingerprint, description, sql) VALUES ({values})",
    ]


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
