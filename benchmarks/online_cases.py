"""Online rebuild case: the rebuild case's table (type change, dropped column, new index) while
another process writes one small row every 2 ms.

For the offline and the online rebuild: the longest single write wait of that process (p50,
p99, max), the time until the new shape is live (for the online rebuild: the swap; freeing
the old table's pages continues after it), and the peak memory of the migrating process.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydsqlite import sync_models

from .harness import Measurement, Report, peak_rss_kb
from .rebuild_cases import BigV2, make_template

ROOT = Path(__file__).resolve().parent.parent
WRITE_EVERY = 0.002


def writer(path: str, stop: str, out: str) -> None:
    """Until ``stop`` exists: every 2 ms one UPDATE of a random row in its own transaction (as an
    application in WAL mode commits, with ``synchronous = NORMAL``); writes
    each one's duration (the wait for the lock included) to ``out``, one per line."""
    import random

    rng = random.Random(7)
    conn = sqlite3.connect(path, timeout=600, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL's usual setting: with FULL each write waits for the disk holding the lock
    top = conn.execute("SELECT MAX(id) FROM big").fetchone()[0]
    waits = []
    print("ready", flush=True)
    while not Path(stop).exists():
        started = time.perf_counter()
        conn.execute("UPDATE big SET label = ? WHERE id = ?", (f"label {rng.randint(0, 999)}", rng.randint(0, top)))
        waits.append(time.perf_counter() - started)
        time.sleep(max(0.0, WRITE_EVERY - (time.perf_counter() - started)))
    Path(out).write_text("\n".join(f"{wait:.6f}" for wait in waits))


def migrate(path: str, online: str) -> None:
    """Rebuild in this process; prints the seconds until the new shape was live, the total, and the peak RSS (KB)."""
    conn = sqlite3.connect(path, timeout=600)
    started = time.perf_counter()
    live_at: list[float] = []

    def progress(table: str, done: int, total: int, phase: str = "copy") -> None:
        if phase == "swap" and not live_at:
            live_at.append(time.perf_counter() - started)

    sync_models(conn, [BigV2], allow_destructive=True, online=online == "online", progress=progress)
    total = time.perf_counter() - started
    print(live_at[0] if live_at else total, total, peak_rss_kb())


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _one(template: Path, folder: Path, how: str) -> tuple[float, float, float, list[float]]:
    db = folder / f"{how}.db"
    shutil.copyfile(template, db)
    stop, out = folder / f"{how}.stop", folder / f"{how}.waits"
    stop.unlink(missing_ok=True)  # left by the previous run: the writer would stop at once
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.online_cases"]
    process = subprocess.Popen([*command, "writer", str(db), str(stop), str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    result = subprocess.run([*command, "migrate", str(db), how], cwd=ROOT, check=True, capture_output=True, text=True)
    time.sleep(0.2)
    stop.touch()
    process.wait()
    live, total, rss = (float(value) for value in result.stdout.split())
    waits = [float(line) for line in out.read_text().split()]
    if len(waits) < 50:  # it writes for 0.2 s before and after the rebuild alone
        raise RuntimeError(f"the writer made only {len(waits)} writes around a {total:.1f} s {how} rebuild: it did not run alongside")
    return live, total, rss / 1024, waits


def run(report: Report, rows: int, quick: bool) -> None:
    """Offline and online rebuilds taken in turn (five of each, one when ``quick``): medians of the
    time until the new shape is live, the write waits of all runs together. Taken in turn because
    the machine's disk speed varies from minute to minute, and the online rebuild (a commit and a
    checkpoint per step) feels that more than the offline one."""
    folder = Path(tempfile.mkdtemp(prefix="pydsqlite-bench-online-"))
    template = folder / "template.db"
    make_template(template, rows)
    with sqlite3.connect(template) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    case = f"rebuild {rows:,} rows, a write every 2 ms"
    runs = 1 if quick else 5
    results: dict[str, list[tuple[float, float, float, list[float]]]] = {"offline": [], "online": []}
    for _ in range(runs):
        for how in results:
            results[how].append(_one(template, folder, how))
    for how, label in (("offline", "offline rebuild: new shape live"), ("online", "online rebuild: new shape live")):
        live = statistics.median(result[0] for result in results[how])
        total = statistics.median(result[1] for result in results[how])
        rss = max(result[2] for result in results[how])
        waits = [wait for result in results[how] for wait in result[3]]
        report.add(Measurement(case, label, live, runs), reference=how == "offline")
        report.notes.append(
            f"{case}, {how}: single write waits p50 {statistics.median(waits) * 1000:.1f} ms, "
            f"p99 {_percentile(waits, 0.99) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms over {len(waits):,} writes in {runs} run(s); "
            f"new shape live after {live:.2f} s, done (old pages freed) after {total:.2f} s (medians); peak RSS {rss:.1f} MB"
        )
    if not quick:
        small = folder / "small.db"
        make_template(small, rows // 4)
        with sqlite3.connect(small) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
        rss_small = _one(small, folder, "online")[2]
        rss_large = max(result[2] for result in results["online"])
        report.notes.append(f"peak RSS of the online rebuild: {rss_small:.1f} MB for {rows // 4:,} rows, {rss_large:.1f} MB for {rows:,}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        migrate(sys.argv[2], sys.argv[3])
