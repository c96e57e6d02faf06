"""Rows cases: bulk insert and full select of a 6-column model against the hand-written floor and SQLModel."""

from __future__ import annotations

import datetime as dt
import gc
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, TypeAdapter

from pydsqlite import Database, PrimaryKey, SyncModel, sync_models

from .harness import Measurement, Report, median_time, median_times

COLUMNS = ("id", "name", "count", "ratio", "active", "created")


class Record(SyncModel, table="records"):
    id: Annotated[uuid.UUID, PrimaryKey()]
    name: str
    count: int
    ratio: float
    active: bool
    created: dt.datetime


class PlainRecord(BaseModel):
    id: uuid.UUID
    name: str
    count: int
    ratio: float
    active: bool
    created: dt.datetime


def make_rows(count: int) -> list[dict]:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return [
        {"id": uuid.UUID(int=i + 1), "name": f"name {i}", "count": i, "ratio": i / 7, "active": i % 2 == 0,
         "created": base + dt.timedelta(seconds=i)}
        for i in range(count)
    ]


def fresh_database(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    sync_models(conn, [Record])
    return conn


RECORDS = TypeAdapter(list[PlainRecord])


def floor_insert(conn: sqlite3.Connection, rows: list[dict]) -> None:
    """The practical floor: validate with a TypeAdapter, encode by hand, executemany; the garbage
    collector paused meanwhile, as pydsqlite pauses it."""
    with collector_paused():
        records = RECORDS.validate_python(rows)
        conn.executemany(
            "INSERT INTO records (id, name, count, ratio, active, created) VALUES (?, ?, ?, ?, ?, ?)",
            [(str(r.id), r.name, r.count, r.ratio, int(r.active), r.created.isoformat(timespec="microseconds")) for r in records],
        )
        conn.commit()


def floor_select(conn: sqlite3.Connection) -> list[PlainRecord]:
    """``fetchall`` and validation with the collector paused (as pydsqlite's ``select``)."""
    with collector_paused():
        rows = conn.execute("SELECT id, name, count, ratio, active, created FROM records").fetchall()
        return RECORDS.validate_python([dict(zip(COLUMNS, row)) for row in rows])


def floor_stream(conn: sqlite3.Connection) -> int:
    """Batches of 512 rows fetched, validated and dropped (as ``iter_select`` streams them)."""
    cursor = conn.execute("SELECT id, name, count, ratio, active, created FROM records")
    count = 0
    while rows := cursor.fetchmany(512):
        count += sum(1 for _ in RECORDS.validate_python([dict(zip(COLUMNS, row)) for row in rows]))
    return count


class collector_paused:  # noqa: N801 - used like contextlib's lower-case managers
    """Pause the garbage collector for the block (restored after)."""

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc.enable()


def sqlmodel_setup(path: Path):
    from sqlalchemy import create_engine
    from sqlmodel import Field, Session, SQLModel, select

    class SQLRecord(SQLModel, table=True):
        __tablename__ = "sqlmodel_records"
        id: uuid.UUID = Field(primary_key=True)
        name: str
        count: int
        ratio: float
        active: bool
        created: dt.datetime

    engine = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine)

    def insert(rows: list[dict]) -> None:
        with Session(engine) as session:
            session.add_all([SQLRecord(**row) for row in rows])
            session.commit()

    def select_all() -> list:
        with Session(engine) as session:
            return session.exec(select(SQLRecord)).all()

    def clear() -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM sqlmodel_records")

    return insert, select_all, clear, engine


def run(report: Report, sizes: tuple[int, ...], quick: bool) -> None:
    """Every size; SQLModel (an order of magnitude slower) only at the smallest."""
    folder = Path(tempfile.mkdtemp(prefix="pydsqlite-bench-"))
    for rows in sizes:
        _run_size(report, folder / f"rows-{rows}.db", rows, quick, with_sqlmodel=rows == sizes[0])
    report.notes.append(_stream_memory(folder / "stream.db", 100_000 if quick else 1_000_000))
    shutil.rmtree(folder, ignore_errors=True)


def _run_size(report: Report, path: Path, rows: int, quick: bool, with_sqlmodel: bool) -> None:
    data = make_rows(rows)
    runs = 3 if quick or rows >= 1_000_000 else 5
    conn = fresh_database(path)

    def clear() -> None:
        conn.execute("DELETE FROM records")
        conn.commit()

    db = Database(conn)
    case = f"insert_many {rows:,} rows"
    instances = [Record(**row) for row in data]
    floor = "TypeAdapter + executemany, collector paused (floor)"
    inserts = median_times(
        {
            floor: lambda: floor_insert(conn, data),
            "pydsqlite insert_many (dicts)": lambda: db.insert_many(data, Record),
            "pydsqlite insert_many (instances)": lambda: db.insert_many(instances),
        },
        runs, clear,
    )
    report.add_medians(case, inserts, runs, reference=floor)
    instances.clear()
    insert = None
    if with_sqlmodel:
        try:
            insert, select_all, clear_sqlmodel, engine = sqlmodel_setup(path)
        except ImportError:
            print("  (sqlmodel not installed: pip install -e '.[bench]')")
    if insert is not None:
        report.add(Measurement(case, "SQLModel add_all + commit", median_time(lambda: insert(data), runs, clear_sqlmodel), runs))

    case = f"select {rows:,} rows"
    clear()
    db.insert_many(data, Record)
    floor = "fetchall + TypeAdapter, collector paused (floor)"
    selects = median_times({floor: lambda: floor_select(conn), "pydsqlite select": lambda: db.select(Record)}, runs)
    report.add_medians(case, selects, runs, reference=floor)
    if insert is not None:
        clear_sqlmodel()
        insert(make_rows(rows))
        report.add(Measurement(case, "SQLModel session.exec(select).all()", median_time(select_all, runs), runs))
        engine.dispose()
    case = f"iter_select {rows:,} rows"
    floor = "fetchmany batches + TypeAdapter, dropped (floor)"
    streams = median_times(
        {floor: lambda: floor_stream(conn), "pydsqlite iter_select": lambda: sum(1 for _ in db.iter_select(Record))}, runs
    )
    report.add_medians(case, streams, runs, reference=floor)
    conn.close()


def _stream_memory(path: Path, rows: int) -> str:
    """Peak Python memory while iter_select streams every row (a fresh process, tracemalloc)."""
    code = f"""
import tracemalloc, sqlite3
from pathlib import Path
from benchmarks.rows_cases import Record, fresh_database, make_rows
from pydsqlite import Database
conn = fresh_database(Path({str(path)!r}))
for start in range(0, {rows}, 50_000):
    Database(conn).insert_many([dict(r, id=__import__('uuid').UUID(int=start + i + 1)) for i, r in enumerate(make_rows(min(50_000, {rows} - start)))], Record)
db = Database(conn)
tracemalloc.start()
count = sum(1 for _ in db.iter_select(Record))
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(count, peak)
"""
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    ).stdout.split()
    return f"peak Python memory while iter_select streams {int(output[0]):,} rows: {int(output[1]) / 1024:.0f} KiB (tracemalloc)"
