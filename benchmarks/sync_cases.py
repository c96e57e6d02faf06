"""Sync cases: merging column changes from another replica into an empty replica and into one holding
older states of the same rows, and the local-write overhead of LWW tables."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

from pydantic import TypeAdapter

from pydsqlite import LWW, Database, PrimaryKey, RowChange, SyncModel, sync_models

from .harness import Measurement, Report, median_time, median_times
from .rows_cases import collector_paused


class SyncedItem(SyncModel, table="synced_items"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW()]
    price: Annotated[float, LWW()]


class PlainItem(SyncModel, table="plain_items"):
    id: Annotated[str, PrimaryKey()]
    label: str
    price: float


PLAIN_ITEMS = TypeAdapter(list[PlainItem])


def fresh(models: list[type[SyncModel]], path: Path | str = ":memory:") -> Database:
    conn = sqlite3.connect(path)
    sync_models(conn, models)
    return Database(conn)


def items(count: int, model: type[SyncModel], label: str = "item") -> list[SyncModel]:
    return [model(id=str(uuid.UUID(int=i + 1)), label=f"{label} {i}", price=i / 4) for i in range(count)]


STAMPED_TABLE = """
CREATE TABLE stamped_items (id TEXT NOT NULL PRIMARY KEY, label TEXT NOT NULL, label__hlc TEXT, price REAL NOT NULL,
                            price__hlc TEXT, version TEXT, seq INTEGER);
CREATE INDEX ix_stamped_items_seq ON stamped_items (seq);
"""
STAMPED_INSERT = "INSERT OR REPLACE INTO stamped_items VALUES (?, ?, ?, ?, ?, ?, ?)"

COMPACT_TABLE = """
CREATE TABLE compact_items (id TEXT NOT NULL PRIMARY KEY, label TEXT NOT NULL, label__hlc INTEGER, label__node INTEGER,
                            price REAL NOT NULL, price__hlc INTEGER, price__node INTEGER, version INTEGER,
                            version__node INTEGER, seq INTEGER);
CREATE INDEX ix_compact_items_seq ON compact_items (seq);
"""
COMPACT_INSERT = "INSERT OR REPLACE INTO compact_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def stamped(changes: list[RowChange]) -> list[tuple[object, ...]]:
    """The rows a replica stores for ``changes``: values, their clocks, version and sequence number."""
    return [
        (c.key[0], c.columns["label"][1], c.columns["label"][0], c.columns["price"][1], c.columns["price"][0], c.version, seq)
        for seq, c in enumerate(changes, 1)
    ]


def compact(changes: list[RowChange]) -> list[tuple[object, ...]]:
    """The same rows with each timestamp as two integers (time and counter in one, the node as a small
    number), the most compact encoding a replica could store: an encoding not used, measured to see
    what the stored clocks' text costs."""
    def pair(stamp: str) -> tuple[int, int]:
        millis, counter, _ = stamp.split(":")
        return int(millis) << 20 | min(int(counter), 2**20 - 1), 1

    return [
        (c.key[0], c.columns["label"][1], *pair(c.columns["label"][0]), c.columns["price"][1], *pair(c.columns["price"][0]), *pair(c.version), seq)
        for seq, c in enumerate(changes, 1)
    ]


def run(report: Report, sizes: tuple[int, ...], quick: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pydsqlite-bench-"))
    for rows in sizes:
        _run_size(report, folder, rows, quick)
    shutil.rmtree(folder, ignore_errors=True)


def _run_size(report: Report, folder: Path, rows: int, quick: bool) -> None:
    runs = 3 if quick or rows >= 500_000 else 5
    older = fresh([SyncedItem])
    older.insert_many(items(rows, SyncedItem, "old"))
    older_changes = older.changes_since()
    source = fresh([SyncedItem])  # another replica writing the same keys later: every register is newer
    source.insert_many(items(rows, SyncedItem))
    changeset = source.changes_since()
    columns = sum(len(change.columns) for change in changeset.changes)
    plain_rows = [(c.key[0], c.columns["label"][1], c.columns["price"][1]) for c in changeset.changes]
    older_rows = [(c.key[0], c.columns["label"][1], c.columns["price"][1]) for c in older_changes.changes]
    stamped_rows, older_stamped = stamped(changeset.changes), stamped(older_changes.changes)
    compact_rows, older_compact = compact(changeset.changes), compact(older_changes.changes)

    empty, holding = folder / f"empty-{rows}.db", folder / f"holding-{rows}.db"
    template = fresh([SyncedItem, PlainItem], empty)
    template.conn.executescript(STAMPED_TABLE + COMPACT_TABLE)
    template.conn.close()
    template = fresh([SyncedItem, PlainItem], holding)
    template.apply_changes(older_changes, [SyncedItem])
    template.conn.executemany("INSERT INTO plain_items (id, label, price) VALUES (?, ?, ?)", older_rows)
    template.conn.executescript(STAMPED_TABLE + COMPACT_TABLE)
    template.conn.executemany(STAMPED_INSERT, older_stamped)
    template.conn.executemany(COMPACT_INSERT, older_compact)
    template.conn.commit()
    template.conn.close()
    scratch = folder / "scratch.db"
    targets: dict[str, Database] = {}

    def target_from(template_path: Path):
        def setup() -> None:
            if "db" in targets:
                targets.pop("db").conn.close()
            for suffix in ("", "-journal", "-wal"):
                Path(str(scratch) + suffix).unlink(missing_ok=True)
            shutil.copyfile(template_path, scratch)
            targets["db"] = Database(sqlite3.connect(scratch))
        return setup

    def replace_rows() -> None:
        conn = targets["db"].conn
        conn.executemany("INSERT OR REPLACE INTO plain_items (id, label, price) VALUES (?, ?, ?)", plain_rows)
        conn.commit()

    def validate_and_replace() -> None:
        """The same model validation a merge performs, as a hand-written bulk write does it: one
        TypeAdapter call over the batch, the collector paused (as pydsqlite pauses it)."""
        with collector_paused():
            checked = PLAIN_ITEMS.validate_python([{"id": k, "label": label, "price": price} for k, label, price in plain_rows])
            conn = targets["db"].conn
            conn.executemany("INSERT OR REPLACE INTO plain_items (id, label, price) VALUES (?, ?, ?)", [(r.id, r.label, r.price) for r in checked])
            conn.commit()

    def validate_and_replace_stamped() -> None:
        """The same, writing what a replica stores: each value with its clock, the row's version
        and sequence number (indexed), as pydsqlite stores them. The gap between this and the
        plain floor is the cost of the stored sync metadata, not of the merge."""
        with collector_paused():
            PLAIN_ITEMS.validate_python([{"id": k, "label": label, "price": price} for k, label, price in plain_rows])
            conn = targets["db"].conn
            conn.executemany(STAMPED_INSERT, stamped_rows)
            conn.commit()

    def validate_and_replace_compact() -> None:
        """The same with the clocks as integers (``compact``)."""
        with collector_paused():
            PLAIN_ITEMS.validate_python([{"id": k, "label": label, "price": price} for k, label, price in plain_rows])
            conn = targets["db"].conn
            conn.executemany(COMPACT_INSERT, compact_rows)
            conn.commit()

    reference = "validation + INSERT OR REPLACE (reference)"
    for where, template_path in (("an empty replica", empty), ("a replica holding older states", holding)):
        case = f"apply {columns:,} column changes ({rows:,} rows) into {where}"
        contenders = {
            "INSERT OR REPLACE of the rows": replace_rows,
            reference: validate_and_replace,
            "validation + INSERT OR REPLACE of the rows with their clocks": validate_and_replace_stamped,
            "the same with the clocks as integers (not used)": validate_and_replace_compact,
            "pydsqlite apply_changes": lambda: targets["db"].apply_changes(changeset, [SyncedItem]),
        }
        report.add_medians(case, median_times(contenders, runs, target_from(template_path)), runs, reference=reference)

    case = f"local inserts, {rows:,} rows"
    setup = target_from(empty)
    plain, synced = items(rows, PlainItem), items(rows, SyncedItem)  # built once: only the inserts are timed
    report.add(Measurement(case, "plain table insert_many (reference)", median_time(lambda: targets["db"].insert_many(plain), runs, setup), runs), reference=True)
    report.add(Measurement(case, "LWW table insert_many", median_time(lambda: targets["db"].insert_many(synced), runs, setup), runs))
    targets.pop("db").conn.close()
