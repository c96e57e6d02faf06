"""The main example: evolve a real SQLite file from v1 to v2 models without losing a row.

    python examples/todo_app.py [todo_example.db]

It creates (or resets) the file, syncs v1 models, inserts rows through the rows API,
then declares v2 models, prints the migration plan, applies it and shows the rows
survived. Models are passed explicitly: v2 redeclares the same tables.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Optional

from pydsqlite import (
    Database,
    Field,
    ForeignKey,
    Index,
    PrimaryKey,
    RenamedFrom,
    SyncModel,
    Unique,
    migration_history,
    model_migration_plan,
    sync_models,
)


# --- version 1 -----------------------------------------------------------------------------


class ProjectV1(SyncModel, table="projects"):
    id: int = Field(default=None, primary_key=True)
    slug: Annotated[str, Unique()]
    title: str


class TodoV1(SyncModel, table="todos"):
    id: int = Field(default=None, primary_key=True)
    project_id: Annotated[int, ForeignKey("projects.id", on_delete="cascade"), Index()]
    text: Annotated[str, Field(max_length=200)]
    done: bool = False
    priority: Optional[int] = None
    note: Optional[str] = None


# --- version 2: rename a column, add a NOT NULL column with a default, tighten a column,
# --- change a type, add a composite index -------------------------------------------------


class ProjectV2(SyncModel, table="projects"):
    id: int = Field(default=None, primary_key=True)
    slug: Annotated[str, Unique()]
    title: str
    archived: bool = False  # new NOT NULL column: existing rows get the default


class TodoV2(SyncModel, table="todos", indexes=[Index("project_id", "done")]):
    id: int = Field(default=None, primary_key=True)
    project_id: Annotated[int, ForeignKey("projects.id", on_delete="cascade"), Index()]
    title: Annotated[str, Field(max_length=200), RenamedFrom("text")]  # renamed: data kept
    done: bool = False
    priority: int = 3  # was Optional: NULLs become the default
    note: Optional[str] = None
    due: Optional[dt.date] = None


def show(conn: sqlite3.Connection, heading: str) -> None:
    print(f"\n{heading}")
    for table in ("projects", "todos"):
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY id")
        names = [d[0] for d in cursor.description]
        print(f"  {table}: {', '.join(names)}")
        for row in cursor:
            print(f"    {row}")


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "todo_example.db")
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")

    v1 = [ProjectV1, TodoV1]
    print("v1:", model_migration_plan(conn, v1))
    sync_models(conn, v1)
    db = Database(conn)
    home = db.insert(ProjectV1(slug="home", title="Home"))
    work = db.insert(ProjectV1(slug="work", title="Work"))
    db.insert_many([
        TodoV1(project_id=home.id, text="water the plants", priority=1),
        TodoV1(project_id=home.id, text="fix the bike", done=True),
        TodoV1(project_id=work.id, text="ship pydsqlite", priority=2, note="before Friday"),
    ])
    show(conn, "Rows under v1:")

    v2 = [ProjectV2, TodoV2]
    plan = model_migration_plan(conn, v2)
    print("\nv2:", plan)
    print("\nSQL that will run:\n" + plan.sql)
    sync_models(conn, v2)  # no drops here, so no allow_destructive needed
    show(conn, "Rows under v2 (same rows, renamed and filled columns):")
    for todo in db.select(TodoV2, order_by="id"):
        print(f"  validated: {todo!r}")
    print("\nSecond plan:", model_migration_plan(conn, v2))
    print(f"Migrations recorded: {len(migration_history(conn))}")
    conn.close()


if __name__ == "__main__":
    main()
