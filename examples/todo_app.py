"""The main example: evolve a real SQLite file from v1 to v2 models without losing a row.

    python examples/todo_app.py [todo_example.db]

It creates (or resets) the file, syncs the v1 models, inserts rows, then declares the v2
models, prints the migration plan and its SQL, applies it, shows that every row survived,
and shows that a second plan is empty.

Models are passed to ``sync_models`` explicitly: v2 redeclares the same table names, and a
later declaration of a table replaces the earlier one in pydsqlite's global registry (the
one ``sync_models(conn)`` without a list would use).
"""

from __future__ import annotations

import sqlite3
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Optional

from pydsqlite import (
    LWW,
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

# --- version 1 ------------------------------------------------------------------------------


class ProjectV1(SyncModel, table="projects"):
    id: int = Field(default=None, primary_key=True)  # default None: SQLite assigns the key
    slug: Annotated[str, Unique()]  # unique index uq_projects_slug
    title: str
    budget: Optional[int] = None  # whole dollars; nullable


class TodoV1(SyncModel, table="todos"):
    id: Annotated[int, PrimaryKey()]  # chosen by the app, not SQLite: replicas of a table with LWW columns share keys
    project_id: Annotated[int, ForeignKey(ProjectV1, on_delete="cascade"), Index()]
    text: Annotated[str, Field(max_length=200)]  # max_length becomes CHECK (length("text") <= 200)
    done: Annotated[bool, LWW()] = False  # last-write-wins: hidden done__hlc column holds its timestamp
    priority: Optional[int] = None
    note: Optional[str] = None


# --- version 2 ------------------------------------------------------------------------------


class ProjectV2(SyncModel, table="projects"):
    id: int = Field(default=None, primary_key=True)
    slug: Annotated[str, Unique()]
    title: str
    budget: Optional[Decimal] = None  # type change INTEGER -> TEXT (exact decimal text): 1500 -> '1500'
    archived: bool = False  # new NOT NULL column with a default: existing rows get 0


class TodoV2(SyncModel, table="todos", indexes=[Index("project_id", "done")]):  # new composite index
    id: Annotated[int, PrimaryKey()]
    project_id: Annotated[int, ForeignKey(ProjectV2, on_delete="cascade"), Index()]
    title: Annotated[str, Field(max_length=200), RenamedFrom("text")]  # renamed: the values move along
    done: Annotated[bool, LWW()] = False
    priority: int = 3  # was Optional: NOT NULL now, NULLs become the default 3
    note: Optional[str] = None


def show(conn: sqlite3.Connection, heading: str) -> None:
    """Print both tables with plain sqlite3 (the hidden sync columns of LWW tables are named, not shown)."""
    print(f"\n{heading}")
    for table in ("projects", "todos"):
        names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        hidden = [name for name in names if name.endswith("__hlc") or name.startswith("_pydsqlite")]
        shown = [name for name in names if name not in hidden]
        print(f"  {table}: {', '.join(shown)}" + (f"  (hidden: {', '.join(hidden)})" if hidden else ""))
        for row in conn.execute(f"SELECT {', '.join(shown)} FROM {table} ORDER BY id"):
            print(f"    {row}")


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "todo_example.db")
    for suffix in ("", "-journal", "-wal", "-shm"):  # start from an empty file every run
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")  # as a real app would; rebuilds keep the children anyway

    v1 = [ProjectV1, TodoV1]
    print("v1:", model_migration_plan(conn, v1))
    sync_models(conn, v1)

    # Plain sqlite3 works on the tables as on any others...
    conn.executemany(
        "INSERT INTO projects (id, slug, title, budget) VALUES (?, ?, ?, ?)",
        [(1, "home", "Home", None), (2, "work", "Work", 1500)],
    )
    conn.commit()
    # ...and the rows API validates through the models and stamps LWW columns with the clock.
    db = Database(conn)
    db.insert_many([
        TodoV1(id=1, project_id=1, text="water the plants", priority=1),
        TodoV1(id=2, project_id=1, text="fix the bike", done=True),
        TodoV1(id=3, project_id=2, text="ship pydsqlite", priority=2, note="before Friday"),
    ])
    show(conn, "Rows under v1:")

    v2 = [ProjectV2, TodoV2]
    plan = model_migration_plan(conn, v2)  # a preview: changes nothing
    print("\nv2:", plan)
    print("\nSQL that will run:\n" + plan.sql)
    # No allow_destructive: the plan drops nothing and its data checks found no value that
    # INTEGER -> TEXT would alter. Had v2 dropped a column or table, or had a conversion
    # changed a value, sync_models would raise DestructiveChangeError and change nothing;
    # allow_destructive=True is how you accept such a loss, knowingly.
    sync_models(conn, v2)
    show(conn, "Rows under v2 (same rows: renamed, converted and filled columns):")
    for project in db.select(ProjectV2, order_by="id"):
        print(f"  validated: {project!r}")
    for todo in db.select(TodoV2, order_by="id"):
        print(f"  validated: {todo!r}")

    print("\nSecond plan:", model_migration_plan(conn, v2))
    print(f"Migrations recorded: {len(migration_history(conn))}")
    conn.close()


if __name__ == "__main__":
    main()
