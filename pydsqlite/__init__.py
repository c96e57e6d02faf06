"""pydsqlite: Pydantic models as the single source of truth for a SQLite database."""

from .engines.dqlite import connect_dqlite
from .errors import (
    ConnectionLostError,
    ConstraintError,
    DataStepError,
    DestructiveChangeError,
    EngineError,
    MigrationError,
    PlanChangedError,
    PydsqliteError,
    RowNotFoundError,
    RowValidationError,
    SchemaDefinitionError,
    SchemaMismatchError,
    UnstorableValueError,
    UsageError,
)
from .migrate.metadata import AppliedMigration
from .migrate.migration import MigrationPlan, Operation
from .migrate.steps import DataStep
from .migrate.sync import migration_history, model_migration_plan, schema_migration_plan, sync_models, sync_schema
from .replica.hlc import HLC, ClockError, Timestamp
from .replica.replication import ChangeSet, RowChange, SyncError
from .rows.database import Database
from .rows.query import Condition, col
from .schema.markers import LWW, Collate, Field, ForeignKey, Index, PrimaryKey, RenamedFrom, Unique
from .schema.model import SyncModel
from .schema.objects import Schema
from .sql.source import schema_from_database, schema_from_sql

__all__ = [
    "AppliedMigration",
    "ChangeSet",
    "ClockError",
    "Collate",
    "Condition",
    "ConnectionLostError",
    "ConstraintError",
    "DataStep",
    "DataStepError",
    "Database",
    "DestructiveChangeError",
    "PlanChangedError",
    "EngineError",
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
    "connect_dqlite",
    "migration_history",
    "model_migration_plan",
    "schema_from_database",
    "schema_from_sql",
    "schema_migration_plan",
    "sync_models",
    "sync_schema",
]
