"""Start-up cases: a no-op sync and a cold plan on schemas of 20, 200 and 2000 tables, against Alembic and
bare PRAGMA floors, warm (repeated in one process) and as the first call of a fresh process."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel

from pydsqlite import Index, PrimaryKey, RenamedFrom, SyncModel, sync_models
from pydsqlite.migrate.introspect import forget_tables_read
from pydsqlite.migrate.sync import preview_schema
from pydsqlite.schema.compile import compile_models

from .harness import Measurement, Report, median_time, median_time_batched, median_times

COLUMN_TYPES: list[Any] = [str, int, float, Optional[str], Optional[int], bool, str, Optional[float], bytes]


def make_models(
    tables: int, base: type[BaseModel] = SyncModel, *, first: str = "c1", renamed_from: str | None = None
) -> list[type[BaseModel]]:
    """``tables`` models of 10 columns (an integer key and nine others) with 2 indexes each
    (``base=BaseModel``: the same classes as plain Pydantic models, for the class-definition floor).
    ``first`` names the first of the nine, ``renamed_from`` the name it is renamed from."""
    models = []
    for number in range(tables):
        annotations: dict[str, Any] = {"id": Annotated[int, PrimaryKey()]}
        namespace: dict[str, Any] = {}
        for position, python_type in enumerate(COLUMN_TYPES, 1):
            annotations[first if position == 1 else f"c{position}"] = python_type
            if position in (4, 5, 8):
                namespace[f"c{position}"] = None
        if renamed_from is not None:
            annotations[first] = Annotated[annotations[first], RenamedFrom(renamed_from)]
        namespace["__annotations__"] = annotations
        keywords = {"table": f"bench_{number}", "indexes": [Index(first), Index("c2", "c3")]} if base is SyncModel else {}
        models.append(type(base)(f"Bench{number}", (base,), namespace, **keywords))
    return models


def make_metadata(tables: int):
    """The same schema as SQLAlchemy metadata, for Alembic's autogenerate comparison."""
    from sqlalchemy import Boolean, Column, Float, Integer, LargeBinary, MetaData, Table, Text
    from sqlalchemy import Index as SAIndex

    sa_types = [Text, Integer, Float, Text, Integer, Boolean, Text, Float, LargeBinary]
    metadata = MetaData()
    for number in range(tables):
        columns = [Column("id", Integer, primary_key=True)]
        for position, sa_type in enumerate(sa_types, 1):
            columns.append(Column(f"c{position}", sa_type, nullable=position in (4, 5, 8)))
        table = Table(f"bench_{number}", metadata, *columns)
        SAIndex(f"ix_bench_{number}_c1", table.c.c1)
        SAIndex(f"ix_bench_{number}_c2_c3", table.c.c2, table.c.c3)
    return metadata


def pragma_floor(conn: sqlite3.Connection, names: list[str]) -> None:
    """The PRAGMA reads any introspection of these tables needs, and nothing else."""
    conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    for name in names:
        conn.execute("SELECT * FROM pragma_table_xinfo(?)", (name,)).fetchall()
        for index in conn.execute("SELECT name FROM pragma_index_list(?)", (name,)).fetchall():
            conn.execute("SELECT * FROM pragma_index_xinfo(?)", (index[0],)).fetchall()
        conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,)).fetchall()


def run(report: Report, sizes: tuple[int, ...], quick: bool) -> None:
    for tables in sizes:
        _run_size(report, tables, quick)


def _run_size(report: Report, tables: int, quick: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pydsqlite-bench-"))
    path = folder / "schema.db"
    models = make_models(tables)
    conn = sqlite3.connect(path)
    sync_models(conn, models)
    names = [f"bench_{number}" for number in range(tables)]
    runs = 3 if quick or tables >= 2000 else 5
    fresh_runs = 3 if quick else 5

    case = f"class definition, {tables} models"
    plain, synced = [], []
    for _ in range(fresh_runs):  # alternated, each in a fresh process, so both kinds see the same machine
        plain.append(_fresh(path, "define-base", tables)[0])
        synced.append(_fresh(path, "define-sync", tables)[0])
    report.add(Measurement(case, "pydantic BaseModel subclasses (floor)", _median(plain), fresh_runs), reference=True)
    report.add(Measurement(case, "SyncModel table models", _median(synced), fresh_runs))

    case = f"first sync in a fresh process, {tables} tables"
    report.add(Measurement(case, "schema_version + first table read (floor)",
                           _median([_fresh(path, "first-floor", tables)[0] for _ in range(fresh_runs)]), fresh_runs), reference=True)
    report.add(Measurement(case, "pydsqlite sync_models (no-op)",
                           _median([_fresh(path, "first-sync", tables)[0] for _ in range(fresh_runs)]), fresh_runs))
    if _has_alembic():
        report.add(Measurement(case, "Alembic compare_metadata (first call)",
                               _median([_fresh(path, "first-alembic", tables)[0] for _ in range(runs)]), runs))

    case = f"no-op sync, {tables} tables"
    report.add(
        Measurement(case, "PRAGMA schema_version read (floor)",
                    median_time_batched(lambda: conn.execute("PRAGMA schema_version").fetchone(), 21, 2000), 21),
        reference=True,
    )
    report.add(Measurement(case, "pydsqlite sync_models", median_time_batched(lambda: sync_models(conn, models), 21, 200), 21))
    if _has_alembic():
        report.add(Measurement(case, "Alembic compare_metadata", _alembic_compare(path, tables, runs), runs))

    cold = f"cold plan, {tables} tables"
    desired = compile_models(models)
    plan_runs = 5 if tables >= 2000 else 15
    timings = median_times(
        {
            "floor": lambda: pragma_floor(conn, names),
            "afresh": lambda: preview_schema(conn, desired),
        },
        plan_runs,
        forget_tables_read,
    )
    report.add(Measurement(cold, "bare PRAGMA introspection (floor)", timings["floor"], plan_runs), reference=True)
    report.add(Measurement(cold, "pydsqlite plan (fast path off, every table read afresh)", timings["afresh"], plan_runs))
    preview_schema(conn, desired)  # the tables are kept from this read on
    report.add(Measurement(cold, "pydsqlite plan (fast path off, tables kept from an earlier read)", median_time(lambda: preview_schema(conn, desired), plan_runs), plan_runs))
    if _has_alembic():
        report.add(Measurement(cold, "Alembic compare_metadata", _alembic_compare(path, tables, runs), runs))

    cold = f"cold plan, {tables} tables, each with a renamed column"
    renamed = sqlite3.connect(folder / "renamed.db")  # SQLite writes a renamed column as "c1" in the CREATE text
    sync_models(renamed, make_models(tables, first="c0"))
    sync_models(renamed, make_models(tables, renamed_from="c0"))
    timings = median_times(
        {"floor": lambda: pragma_floor(renamed, names), "afresh": lambda: preview_schema(renamed, desired)}, plan_runs, forget_tables_read
    )
    report.add(Measurement(cold, "bare PRAGMA introspection (floor)", timings["floor"], plan_runs), reference=True)
    report.add(Measurement(cold, "pydsqlite plan (fast path off, every table read afresh)", timings["afresh"], plan_runs))
    renamed.close()

    cold = f"cold plan, first call in a fresh process, {tables} tables"
    report.add(Measurement(cold, "bare PRAGMA introspection (floor)",
                           _median([_fresh(path, "cold-floor", tables)[0] for _ in range(fresh_runs)]), fresh_runs), reference=True)
    report.add(Measurement(cold, "pydsqlite plan (fast path off)",
                           _median([_fresh(path, "cold-plan", tables)[0] for _ in range(fresh_runs)]), fresh_runs))
    conn.close()
    shutil.rmtree(folder, ignore_errors=True)


def _median(samples: list[float]) -> float:
    import statistics

    return statistics.median(samples)


def _has_alembic() -> bool:
    try:
        import alembic  # noqa: F401
    except ImportError:
        print("  (alembic/sqlalchemy not installed: pip install -e '.[bench]')")
        return False
    return True


def _fresh(path: Path, mode: str, tables: int) -> list[float]:
    """Seconds a fresh interpreter spends on ``mode`` (see ``startup_worker``), models defined untimed."""
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.startup_worker", mode, str(tables), str(path)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    return [float(value) for value in output.stdout.split()]


def _alembic_compare(path: Path, tables: int, runs: int) -> float:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    metadata = make_metadata(tables)
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": lambda name, kind, parent: not (name or "").startswith("_pydsqlite")}
        )

        def compare() -> None:
            differences = compare_metadata(context, metadata)
            assert not [d for d in differences if d[0] in ("add_table", "remove_table")], differences[:3]

        result = median_time(compare, runs)
    engine.dispose()
    return result
