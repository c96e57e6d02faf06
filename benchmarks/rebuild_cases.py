"""Rebuild case: a 1M-row table gets a type change, a dropped column and a new index.

pydsqlite against the same recipe hand-written in plain SQL (the floor) and against
sqlite-utils' ``table.transform()``, each on a fresh copy of the same file.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

from pydsqlite import Index, PrimaryKey, SyncModel, sync_models

from .harness import Report, median_times


class BigV1(SyncModel, table="big"):
    id: Annotated[int, PrimaryKey()]
    label: str
    amount: int
    extra: Optional[str] = None


class BigV2(SyncModel, table="big", indexes=[Index("label")]):
    id: Annotated[int, PrimaryKey()]
    label: str
    amount: str


def make_template(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    sync_models(conn, [BigV1])
    conn.executemany(
        "INSERT INTO big VALUES (?, ?, ?, ?)",
        ((i, f"label {i % 1000}", i * 3, None if i % 3 else f"extra {i}") for i in range(rows)),
    )
    conn.commit()
    conn.close()


def hand_written(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        """
        BEGIN IMMEDIATE;
        CREATE TABLE big_new ("id" INTEGER NOT NULL, "label" TEXT NOT NULL, "amount" TEXT NOT NULL, PRIMARY KEY ("id"));
        INSERT INTO big_new ("id", "label", "amount") SELECT "id", "label", CAST("amount" AS TEXT) FROM big;
        DROP TABLE big;
        ALTER TABLE big_new RENAME TO big;
        CREATE INDEX ix_big_label ON big (label);
        COMMIT;
        """
    )
    conn.close()


def with_pydsqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    plan = sync_models(conn, [BigV2], allow_destructive=True)
    assert plan.rebuilt_tables == ("big",), plan
    conn.close()


def with_sqlite_utils(path: Path) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(path)
    db["big"].transform(types={"amount": str}, drop={"extra"})
    db["big"].create_index(["label"])
    db.close()


def peak_rss_mb(template: Path, scratch: Path) -> float:
    """Peak resident memory (MB) of a fresh process that runs the pydsqlite rebuild."""
    shutil.copyfile(template, scratch)
    code = (
        "import sys; from pathlib import Path; from benchmarks.harness import peak_rss_kb; "
        "from benchmarks.rebuild_cases import with_pydsqlite; with_pydsqlite(Path(sys.argv[1])); print(peak_rss_kb())"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(scratch)], check=True, capture_output=True, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return int(output.stdout.split()[-1]) / 1024


def run(report: Report, sizes: tuple[int, ...], quick: bool) -> None:
    for rows in sizes:
        _run_size(report, rows, quick, memory=rows == sizes[-1])


def _run_size(report: Report, rows: int, quick: bool, memory: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pydsqlite-bench-"))
    template = folder / "template.db"
    scratch = folder / "scratch.db"
    make_template(template, rows)
    runs = 3 if quick else 5

    def fresh_copy() -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(scratch) + suffix).unlink(missing_ok=True)
        shutil.copyfile(template, scratch)

    case = f"rebuild {rows:,} rows"
    floor = "hand-written SQL recipe (floor)"
    contenders = {floor: lambda: hand_written(scratch), "pydsqlite sync_models": lambda: with_pydsqlite(scratch)}
    try:
        import sqlite_utils  # noqa: F401
    except ImportError:
        print("  (sqlite-utils not installed: pip install -e '.[bench]')")
    else:
        contenders["sqlite-utils transform + create_index"] = lambda: with_sqlite_utils(scratch)
    report.add_medians(case, median_times(contenders, runs, fresh_copy), runs, reference=floor)
    for size in ([rows // 4, rows] if memory and not quick else []):
        sized = folder / f"rss-{size}.db"
        make_template(sized, size)
        report.notes.append(f"peak RSS of a process running the pydsqlite rebuild of {size:,} rows: {peak_rss_mb(sized, scratch):.1f} MB")
        sized.unlink()
    shutil.rmtree(folder, ignore_errors=True)
