"""One fresh-process measurement: ``python -m benchmarks.startup_worker MODE TABLES PATH`` prints seconds.

Modes: ``define-base`` / ``define-sync`` (defining the models as plain ``BaseModel`` subclasses,
respectively as ``SyncModel`` table models, each in a process of its own), ``first-floor`` / ``first-sync`` / ``first-alembic`` (the first no-op
check against an already-synced database), ``cold-floor`` / ``cold-plan`` (the first full
introspection, respectively plan). Everything but the measured call (imports, defining the
models, compiling for the cold plan, opening the connection) happens before the clock starts.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path


def main() -> None:
    mode, tables, path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    from pydantic import BaseModel

    from pydsqlite import SyncModel, sync_models
    from pydsqlite.migrate.sync import preview_schema
    from pydsqlite.schema.compile import compile_models

    from .harness import clock
    from .schema_cases import make_metadata, make_models, pragma_floor

    if mode.startswith("define"):
        base = BaseModel if mode == "define-base" else SyncModel
        make_models(1, BaseModel), make_models(1)  # the first class of each kind pays one-off set-up
        started = clock()
        make_models(tables, base)
        print(clock() - started)
        return
    names = [f"bench_{number}" for number in range(tables)]
    if mode == "first-alembic":
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext
        from sqlalchemy import create_engine

        metadata = make_metadata(tables)
        engine = create_engine(f"sqlite:///{path}")
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"include_name": lambda name, kind, parent: not (name or "").startswith("_pydsqlite")}
            )
            started = clock()
            compare_metadata(context, metadata)
            print(clock() - started)
        return
    models = make_models(tables)
    desired = compile_models(models) if mode == "cold-plan" else None
    conn = sqlite3.connect(path)
    actions = {
        "first-floor": lambda: (conn.execute("PRAGMA schema_version").fetchone(), conn.execute(f"SELECT 1 FROM {names[0]} LIMIT 1").fetchall()),
        "first-sync": lambda: sync_models(conn, models),
        "cold-floor": lambda: pragma_floor(conn, names),
        "cold-plan": lambda: preview_schema(conn, desired),  # type: ignore[arg-type]
    }
    started = clock()
    actions[mode]()
    print(clock() - started)


if __name__ == "__main__":
    main()
