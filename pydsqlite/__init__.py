"""pydsqlite: Pydantic models as the single source of truth for a SQLite database."""

from .errors import DestructiveChangeError, MigrationError, PydsqliteError, SchemaDefinitionError
from .markers import LWW, Field, ForeignKey, Index, PrimaryKey, RenamedFrom, Unique
from .model import SyncModel
from .plan import MigrationPlan, Operation
from .sync import model_migration_plan, sync_models

__all__ = [
    "LWW",
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
    "model_migration_plan",
    "sync_models",
]
