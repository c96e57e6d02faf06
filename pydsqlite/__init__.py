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
)
from .hlc import HLC, ClockError, Timestamp
from .markers import LWW, Collate, Field, ForeignKey, Index, PrimaryKey, RenamedFrom, Unique
from .metadata import AppliedMigration
from .model import SyncModel
from .plan import MigrationPlan, Operation
from .query import Condition, col
from .schema import Schema
from .sql_source import schema_from_database, schema_from_sql
from .sync import migration_history, model_migration_plan, schema_migration_plan, sync_models, sync_schema

__all__ = [
    "LWW",
    "AppliedMigration",
    "ClockError",
    "Condition",
    "ConstraintError",
    "Database",
    "HLC",
    "Collate",
    "DestructiveChangeError",
    "Field",
    "ForeignKey",
    "Index",
    "MigrationError",
    "MigrationPlan",
    "Operation",
    "PrimaryKey",
    "PydsqliteError",
    "RenamedFrom",
    "RowNotFoundError",
    "RowValidationError",
    "Schema",
    "SchemaDefinitionError",
    "SyncModel",
    "Timestamp",
    "Unique",
    "col",
    "migration_history",
    "model_migration_plan",
    "schema_from_database",
    "schema_from_sql",
    "schema_migration_plan",
    "sync_models",
    "sync_schema",
]
