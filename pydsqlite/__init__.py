"""pydsqlite: Pydantic models as the single source of truth for a SQLite database."""

from .database import Database
from .errors import (
    ConstraintError,
    DestructiveChangeError,
    MigrationError,
    PydsqliteError,
    RowNotFoundError,
    RowValidationError,
    SchemaDefinitionError,
    SchemaMismatchError,
    UnstorableValueError,
    UsageError,
)
from .hlc import HLC, ClockError, Timestamp
from .markers import LWW, Collate, Field, ForeignKey, Index, PrimaryKey, RenamedFrom, Unique
from .metadata import AppliedMigration
from .migration import MigrationPlan, Operation
from .model import SyncModel
from .query import Condition, col
from .replication import ChangeSet, RowChange, SyncError
from .schema import Schema
from .sql_source import schema_from_database, schema_from_sql
from .sync import migration_history, model_migration_plan, schema_migration_plan, sync_models, sync_schema

__all__ = [
    "AppliedMigration",
    "ChangeSet",
    "ClockError",
    "Collate",
    "Condition",
    "ConstraintError",
    "Database",
    "DestructiveChangeError",
    "Field",
    "ForeignKey",
    "HLC",
    "Index",
    "LWW",
    "MigrationError",
    "MigrationPlan",
    "Operation",
    "PrimaryKey",
    "PydsqliteError",
    "RenamedFrom",
    "RowChange",
    "RowNotFoundError",
    "RowValidationError",
    "Schema",
    "SchemaDefinitionError",
    "SchemaMismatchError",
    "SyncError",
    "SyncModel",
    "Timestamp",
    "Unique",
    "UnstorableValueError",
    "UsageError",
    "col",
    "migration_history",
    "model_migration_plan",
    "schema_from_database",
    "schema_from_sql",
    "schema_migration_plan",
    "sync_models",
    "sync_schema",
]
