"""Async cases: what the trip to aiosqlite's thread costs, AsyncDatabase against Database on the same work.

Each async figure runs inside one event loop over one aiosqlite connection; the reference is the
same call of the sync ``Database`` on a ``sqlite3`` connection to a file of its own. Both files are
in WAL mode with ``synchronous = NORMAL``, so a commit's cost is not the disk's fsync.
``python -m benchmarks.aio_cases`` runs these cases alone.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydsqlite import Database

from .harness import Measurement, Report, environment, median_time, median_time_batched
from .rows_cases import Record, fresh_database, make_rows

WAL = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")


def async_median(
    loop: asyncio.AbstractEventLoop, action: Callable[[], Awaitable[object]], runs: int, batch: int = 1,
    setup: Callable[[], object] | None = None,
) -> float:
    """Median per-call time of ``await action()`` over ``runs`` batches of ``batch`` calls, timed inside the loop."""

    async def timed() -> float:
        started = time.perf_counter()
        for _ in range(batch):
            await action()
        return (time.perf_counter() - started) / batch

    samples = []
    for _ in range(runs):
        if setup is not None:
            setup()
        samples.append(loop.run_until_complete(timed()))
    return statistics.median(samples)


def run(report: Report, rows: int, quick: bool) -> None:
    try:
        import aiosqlite

        from pydsqlite.aio import AsyncDatabase
    except ImportError:
        print("  (aiosqlite not installed: pip install -e '.[bench]')")
        return
    folder = Path(tempfile.mkdtemp(prefix="pydsqlite-bench-aio-"))
    data = make_rows(rows)
    runs = 3 if quick else 5
    calls = 300 if quick else 2000
    conn = fresh_database(folder / "sync.db")
    fresh_database(folder / "async.db").close()
    db = Database(conn)
    loop = asyncio.new_event_loop()
    aconn = loop.run_until_complete(aiosqlite.connect(folder / "async.db"))
    adb = AsyncDatabase(aconn)
    for pragma in WAL:  # commits without an fsync each, or the disk's fsync time would swamp the differences
        conn.execute(pragma)
        loop.run_until_complete(aconn.execute(pragma))

    def clear() -> None:
        conn.execute("DELETE FROM records")
        conn.commit()

    def clear_async() -> None:
        loop.run_until_complete(aconn.execute("DELETE FROM records"))
        loop.run_until_complete(aconn.commit())

    case = f"insert_many {rows:,} rows, async"
    report.add(Measurement(case, "Database.insert_many", median_time(lambda: db.insert_many(data, Record), runs, clear), runs), reference=True)
    report.add(Measurement(case, "AsyncDatabase.insert_many", async_median(loop, lambda: adb.insert_many(data, Record), runs, setup=clear_async), runs))

    case = f"select {rows:,} rows, async"
    clear()
    clear_async()
    db.insert_many(data, Record)
    loop.run_until_complete(adb.insert_many(data, Record))

    async def stream_all() -> int:
        return sum([1 async for _ in adb.iter_select(Record)])

    report.add(Measurement(case, "Database.select", median_time(lambda: db.select(Record), runs), runs), reference=True)
    report.add(Measurement(case, "AsyncDatabase.select", async_median(loop, lambda: adb.select(Record), runs), runs))
    report.add(Measurement(case, "Database.iter_select", median_time(lambda: sum(1 for _ in db.iter_select(Record)), runs), runs))
    report.add(Measurement(case, "AsyncDatabase.iter_select", async_median(loop, stream_all, runs), runs))

    case = "get one row by key, async"
    key = data[rows // 2]["id"]
    report.add(Measurement(case, "Database.get", median_time_batched(lambda: db.get(Record, key), runs, calls), runs), reference=True)
    report.add(Measurement(case, "AsyncDatabase.get", async_median(loop, lambda: adb.get(Record, key), runs, calls), runs))

    async def gets_from_tasks() -> None:
        await asyncio.gather(*(adb.get(Record, key) for _ in range(100)))

    report.add(Measurement(case, "AsyncDatabase.get, 100 tasks at once", async_median(loop, gets_from_tasks, runs, calls // 100) / 100, runs))

    case = "insert one row (own transaction), async"
    clear()
    clear_async()
    one = [Record(**row) for row in make_rows(calls)]
    sync_rows, async_rows = iter(one), iter(one)
    report.add(Measurement(case, "Database.insert", median_time_batched(lambda: db.insert(next(sync_rows)), runs, calls // runs), runs), reference=True)
    report.add(Measurement(case, "AsyncDatabase.insert", async_median(loop, lambda: adb.insert(next(async_rows)), runs, calls // runs), runs))

    loop.run_until_complete(aconn.close())
    loop.close()
    conn.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=10_000)
    arguments = parser.parse_args()
    result = Report()
    print(environment())
    run(result, arguments.rows, arguments.quick)
    print()
    print(result.table())
