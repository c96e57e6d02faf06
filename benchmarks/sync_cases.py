"""Sync cases: merging 100k column changes from another replica, and the local-write overhead of LWW tables."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Annotated

from pydsqlite import LWW, Database, PrimaryKey, SyncModel, sync_models

from .harness import Measurement, Report, median_time


class SyncedItem(SyncModel, table="synced_items"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW()]
    price: Annotated[float, LWW()]


class PlainItem(SyncModel, table="plain_items"):
    id: Annotated[str, PrimaryKey()]
    label: str
    price: float


def fresh(models: list[type[SyncModel]]) -> Database:
    conn = sqlite3.connect(":memory:")
    sync_models(conn, models)
    return Database(conn)


def items(count: int, model: type[SyncModel]) -> list[SyncModel]:
    return [model(id=str(uuid.UUID(int=i + 1)), label=f"item {i}", price=i / 4) for i in range(count)]


def run(report: Report, rows: int, quick: bool) -> None:
    runs = 3 if quick else 5
    source = fresh([SyncedItem])
    source.insert_many(items(rows, SyncedItem))
    changeset = source.changes_since()
    columns = sum(len(change.columns) for change in changeset.changes)
    plain_rows = [(c.key[0], c.columns["label"][1], c.columns["price"][1]) for c in changeset.changes]

    targets: dict[str, Database] = {}

    def new_target() -> None:
        targets["db"] = fresh([SyncedItem, PlainItem])

    case = f"apply {columns:,} column changes ({rows:,} rows)"

    def replace_rows() -> None:
        conn = targets["db"].conn
        conn.executemany("INSERT OR REPLACE INTO plain_items (id, label, price) VALUES (?, ?, ?)", plain_rows)
        conn.commit()

    report.add(Measurement(case, "INSERT OR REPLACE of the rows (reference)", median_time(replace_rows, runs, new_target), runs), reference=True)

    def validate_and_replace() -> None:
        checked = PlainItem.__pydantic_validator__  # the same model validation a merge performs
        rows_ = [checked.validate_python({"id": k, "label": label, "price": price}) for k, label, price in plain_rows]
        conn = targets["db"].conn
        conn.executemany("INSERT OR REPLACE INTO plain_items (id, label, price) VALUES (?, ?, ?)", [(r.id, r.label, r.price) for r in rows_])
        conn.commit()

    report.add(Measurement(case, "validation + INSERT OR REPLACE", median_time(validate_and_replace, runs, new_target), runs))
    report.add(Measurement(case, "pydsqlite apply_changes", median_time(lambda: targets["db"].apply_changes(changeset, [SyncedItem]), runs, new_target), runs))

    case = f"local inserts, {rows:,} rows"
    report.add(Measurement(case, "plain table insert_many (reference)", median_time(lambda: targets["db"].insert_many(items(rows, PlainItem)), runs, new_target), runs), reference=True)
    report.add(Measurement(case, "LWW table insert_many", median_time(lambda: targets["db"].insert_many(items(rows, SyncedItem)), runs, new_target), runs))
