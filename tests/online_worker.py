"""Separate processes for the online-rebuild tests: a writer that keeps changing a table, and a
migrator that rebuilds it online (and may be killed at any moment).

Usage:
  python online_worker.py write DB_PATH LOG_PATH STOP_PATH SEED   mixes inserts, updates and deletes
      of rows across the whole key range until STOP_PATH exists; appends each committed write
      to LOG_PATH as one JSON line, so a test can replay them.
  python online_worker.py migrate DB_PATH   runs sync_models(..., online=True) to ``Wide``;
      prints each progress phase as it starts (and "copy half" halfway through the copy), then "done".
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from typing import Annotated, Optional

from pydsqlite import Index, PrimaryKey, SyncModel, sync_models

ROWS = 200_000
PAUSE = 0.001
"""Seconds the writer waits between writes: an application's pace, not a loop that never lets go
of the write lock (SQLite's lock is not fair; a writer that retakes it at once starves the copy)."""


class Narrow(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    label: str
    amount: int
    note: Optional[str] = None


class Wide(SyncModel, table="items", indexes=[Index("label")]):
    """A type change, a new column with a default, a new index: a rebuild."""

    id: Annotated[int, PrimaryKey()]
    label: str
    amount: str
    note: Optional[str] = None
    flag: int = 0


def initial_rows(count: int) -> list[tuple]:
    return [(i, f"label {i % 997}", i * 3, None if i % 4 else f"note {i}") for i in range(1, count + 1)]


def make_database(path: str, count: int = ROWS) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    sync_models(conn, [Narrow])
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", initial_rows(count))
    conn.commit()
    conn.close()


WRITES = {
    "insert": "INSERT INTO items (id, label, amount, note) VALUES (?, ?, ?, ?)",
    "update": "UPDATE items SET amount = ?, label = ? WHERE id = ?",
    "delete": "DELETE FROM items WHERE id = ?",
}


def write(path: str, log_path: str, stop_path: str, seed: int) -> None:
    """Random writes across the whole table (rows the copy has passed and rows it has not),
    each its own transaction, logged once committed."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    top = conn.execute("SELECT MAX(id) FROM items").fetchone()[0]
    with open(log_path, "a", encoding="utf-8") as log:
        print("ready", flush=True)
        while not os.path.exists(stop_path):
            kind = rng.choice(("insert", "insert", "update", "update", "update", "delete"))
            if kind == "insert":
                top += 1
                target = top if rng.random() < 0.7 else rng.randint(1, top)  # new rows, and gaps left by deletes
                params = [target, f"label {rng.randint(0, 996)}", rng.randint(-10**6, 10**6), rng.choice((None, "n"))]
            elif kind == "update":
                params = [rng.randint(-10**6, 10**6), f"label {rng.randint(0, 996)}", rng.randint(1, top)]
            else:
                params = [rng.randint(1, top)]
            try:
                changed = conn.execute(WRITES[kind], params).rowcount
            except sqlite3.IntegrityError:  # an insert into a key that exists: nothing was written
                continue
            log.write(json.dumps([kind, params, changed]) + "\n")
            log.flush()
            time.sleep(PAUSE)


def replay(conn: sqlite3.Connection, log_path: str) -> int:
    """Apply a writer's log to ``conn``; the number of writes."""
    count = 0
    with open(log_path, encoding="utf-8") as log:
        for line in log:
            kind, params, changed = json.loads(line)
            assert conn.execute(WRITES[kind], params).rowcount == changed, (kind, params)
            count += 1
    conn.commit()
    return count


def migrate(path: str) -> None:
    conn = sqlite3.connect(path, timeout=60)
    seen: set[str] = set()

    def progress(table: str, done: int, total: int, phase: str) -> None:
        if phase == "copy" and done * 2 >= total and "copy half" not in seen:
            seen.add("copy half")
            print("copy half", flush=True)
        if phase not in seen:
            seen.add(phase)
            print(phase, flush=True)

    print("ready", flush=True)
    sync_models(conn, [Wide], online=True, progress=progress)
    print("done", flush=True)
    conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        migrate(sys.argv[2])
