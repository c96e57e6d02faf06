"""A separate process that syncs a database file, for the concurrency and crash tests.

Usage: python sync_worker.py DB_PATH {concurrent|rebuild}
Prints the number of operations it applied.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Annotated, Optional

from pydsqlite import Index, PrimaryKey, SyncModel, sync_models


class EventsV2(SyncModel, table="events", indexes=[Index("kind", "payload")]):
    id: Annotated[int, PrimaryKey()]
    kind: str
    payload: Optional[str] = None
    weight: float = 1.0


class Extra(SyncModel, table="extra"):
    id: Annotated[int, PrimaryKey()]


class BigV2(SyncModel, table="big", indexes=[Index("label")]):
    id: Annotated[int, PrimaryKey()]
    label: str
    amount: str
    flag: int = 0


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(path, timeout=0.1)
    print("ready", flush=True)
    if mode == "concurrent":
        plan = sync_models(conn, [EventsV2, Extra], busy_timeout=60)
    else:
        plan = sync_models(conn, [BigV2], allow_destructive=True)
    print(len(plan.operations), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
