"""pydsqlite: Pydantic models as the single source of truth for a SQLite database."""

from .errors import DestructiveChangeError, MigrationError, PydsqliteError, SchemaDefinitionError
from .markers import LWW, Collate, Field, ForeignKey, Index, PrimaryKey, RenamedFrom, Unique
from .metadata import AppliedMigration
from .model import SyncModel
from .plan import MigrationPlan, Operation
from .sync import migration_history, model_migration_plan, sync_models

__all__ = [
    "LWW",
    "AppliedMigration",
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
    "SchemaDefinitionError",
    "SyncModel",
    "Unique",
    "migration_history",
    "model_migration_plan",
    "sync_models",
]
