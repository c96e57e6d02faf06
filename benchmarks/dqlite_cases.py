"""dqlite cases, on a throwaway 3-node cluster on loopback (``python -m benchmarks --dqlite``, Python 3.13).

- ``insert_many`` of 10k validated rows against the floor: the same rows, already tuples, as
  hand-batched multi-row ``INSERT … VALUES`` statements in one transaction (``executemany`` in
  one transaction shown too).
- A rebuild of a 100k-row parent with 100k children (``ON DELETE CASCADE``) against the same
  recipe hand-written: foreign keys off, one transaction, copy, drop, rename, index,
  ``foreign_key_check``.

Skipped, with the reason, when dqlite or the dqlite-dbapi client is missing.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from pydsqlite import Database, Field, ForeignKey, Index, SyncModel, connect_dqlite, sync_models
from pydsqlite.engines.dqlite import MAX_PARAMETERS

from .harness import Measurement, Report, median_time


class Reading(SyncModel, table="readings"):
    id: int = Field(default=None, primary_key=True)
    sensor: Annotated[str, Field(max_length=20)]
    value: float
    ok: bool = True


class Owner(SyncModel, table="owners"):
    id: int = Field(default=None, primary_key=True)
    name: str


class Pet(SyncModel, table="pets", indexes=[Index("owner_id")]):
    id: int = Field(default=None, primary_key=True)
    owner_id: Annotated[int, ForeignKey("owners.id", on_delete="CASCADE")]
    name: str


class OwnerV2(SyncModel, table="owners"):
    id: int = Field(default=None, primary_key=True)
    name: Annotated[str, Field(max_length=60)]
    city: str = "Wellington"


def _multi_row(conn: Any, head: str, rows: list[tuple]) -> None:
    """The floor's batching: as many rows per statement as dqlite's 255 parameters allow."""
    per = MAX_PARAMETERS // len(rows[0])
    group = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        conn.execute(f"{head} VALUES {', '.join([group] * len(part))}", [value for row in part for value in row])


def _transaction(conn: Any, work: Any) -> None:
    conn.execute("BEGIN IMMEDIATE")
    work()
    conn.execute("COMMIT")


def run(report: Report, quick: bool) -> None:
    from tests.dqlite_cluster import Cluster, missing

    reason = missing()
    if reason is not None:
        report.notes.append(f"dqlite cases skipped: {reason}")
        print(f"  (dqlite cases skipped: {reason})")
        return
    cluster = Cluster.start(Path(tempfile.mkdtemp(prefix="pydsqlite-dqlite-bench-")))
    try:
        _inserts(report, cluster, rows=2_000 if quick else 10_000, runs=3 if quick else 5)
        _rebuild(report, cluster, rows=10_000 if quick else 100_000, runs=2 if quick else 5)
    finally:
        cluster.stop()


def _fresh(cluster: Any) -> Any:
    return connect_dqlite(cluster.addresses, "bench" + uuid.uuid4().hex[:16])


def _inserts(report: Report, cluster: Any, rows: int, runs: int) -> None:
    case = f"dqlite insert_many {rows:,} rows"
    data = [{"sensor": f"sensor-{n % 50}", "value": n * 0.5, "ok": n % 7 != 0} for n in range(rows)]
    tuples = [(item["sensor"], item["value"], int(item["ok"])) for item in data]
    head = "INSERT INTO readings (sensor, value, ok)"
    state: dict[str, Any] = {}

    def setup() -> None:
        if "conn" in state:
            state["conn"].close()
        state["conn"] = conn = _fresh(cluster)
        sync_models(conn, [Reading])

    floor = median_time(lambda: _transaction(state["conn"], lambda: _multi_row(state["conn"], head, tuples)), runs, setup)
    report.add(Measurement(case, "multi-row VALUES in one transaction (floor)", floor, runs), reference=True)
    many = median_time(
        lambda: _transaction(state["conn"], lambda: state["conn"].executemany(f"{head} VALUES (?, ?, ?)", tuples)), runs, setup
    )
    report.add(Measurement(case, "executemany in one transaction", many, runs))
    ours = median_time(lambda: Database(state["conn"]).insert_many(data, Reading), runs, setup)
    report.add(Measurement(case, "pydsqlite insert_many (validated)", ours, runs))
    state["conn"].close()


def _rebuild(report: Report, cluster: Any, rows: int, runs: int) -> None:
    case = f"dqlite rebuild, {rows:,} parents + {rows:,} children"
    state: dict[str, Any] = {}

    def setup() -> None:
        if "conn" in state:
            state["conn"].close()
        state["conn"] = conn = _fresh(cluster)
        sync_models(conn, [Owner, Pet])
        _transaction(conn, lambda: _multi_row(conn, "INSERT INTO owners (id, name)", [(n + 1, f"owner {n}") for n in range(rows)]))
        _transaction(conn, lambda: _multi_row(conn, "INSERT INTO pets (owner_id, name)", [(n + 1, f"pet {n}") for n in range(rows)]))
        time.sleep(1)  # let the leader finish applying and checkpointing the fill before the timed run
        conn.execute("SELECT 1")

    def hand_written() -> None:
        conn = state["conn"]
        for pragma in ("cache_spill = OFF", "foreign_keys = OFF"):  # without the first, "disk I/O error" (docs/dqlite.md)
            try:
                conn.execute(f"PRAGMA {pragma}")
            except Exception as error:  # dqlite answers a pragma write with "not an error" although it applied it
                assert "not an error" in str(error), error
        _transaction(conn, lambda: [
            conn.execute(
                "CREATE TABLE owners_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL CHECK (length(name) <= 60), "
                "city TEXT NOT NULL DEFAULT 'Wellington')"
            ),
            conn.execute("INSERT INTO owners_new (id, name) SELECT id, name FROM owners"),
            conn.execute("DROP TABLE owners"),
            conn.execute("ALTER TABLE owners_new RENAME TO owners"),
            conn.execute("PRAGMA foreign_key_check").fetchall(),
        ])
        try:
            conn.execute("PRAGMA foreign_keys = ON")
        except Exception as error:
            assert "not an error" in str(error), error
        assert conn.execute("SELECT count(*) FROM pets").fetchone()[0] == rows

    def with_pydsqlite() -> None:
        plan = sync_models(state["conn"], [OwnerV2, Pet])
        assert plan.rebuilt_tables == ("owners",), plan
        assert state["conn"].execute("SELECT count(*) FROM pets").fetchone()[0] == rows

    report.add(Measurement(case, "hand-written recipe (floor)", median_time(hand_written, runs, setup), runs), reference=True)
    report.add(Measurement(case, "pydsqlite sync_models", median_time(with_pydsqlite, runs, setup), runs))
    state["conn"].close()
