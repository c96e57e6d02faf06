"""Run every benchmark and write the table to docs/benchmarks.md: ``python -m benchmarks [--quick]``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from . import aio_cases, dqlite_cases, online_cases, rebuild_cases, rows_cases, schema_cases, sync_cases
from .harness import Report, environment

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (a smoke test, not for the docs)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--dqlite", action="store_true", help="only the dqlite cases (Python 3.13, a 3-node cluster on loopback)")
    args = parser.parse_args()
    report = Report()
    print(environment())
    if args.dqlite:
        dqlite_cases.run(report, quick=args.quick)
        _print(report)
        if not args.no_write and not args.quick:
            _write_docs(report.table(), report.notes, DQLITE_MARKER, DQLITE_END)
        return
    schema_cases.run(report, sizes=(20, 200) if args.quick else (20, 200, 2000), quick=args.quick)
    rebuild_cases.run(report, sizes=(20_000, 100_000) if args.quick else (100_000, 1_000_000), quick=args.quick)
    online_cases.run(report, rows=50_000 if args.quick else 1_000_000, quick=args.quick)
    rows_cases.run(report, sizes=(10_000, 50_000) if args.quick else (100_000, 1_000_000), quick=args.quick)
    sync_cases.run(report, sizes=(5_000, 50_000) if args.quick else (50_000, 500_000), quick=args.quick)
    aio_cases.run(report, rows=2_000 if args.quick else 10_000, quick=args.quick)
    _print(report)
    if not args.no_write and not args.quick:
        _write_docs(report.table(), report.notes, RESULTS_MARKER, DQLITE_HEADING)


RESULTS_MARKER = "<!-- benchmark results -->"
DQLITE_HEADING = "## dqlite"
DQLITE_MARKER = "<!-- dqlite results -->"
DQLITE_END = "<!-- end of dqlite results -->"


def _print(report: Report) -> None:
    print()
    print(report.table())
    for note in report.notes:
        print(f"- {note}")


def _write_docs(table: str, notes: list[str], marker: str, end: str) -> None:
    """Replace the results between ``marker`` and ``end`` (kept), or to the end of the page."""
    text = DOCS.read_text() if DOCS.exists() else _DOCS_HEAD
    body = (
        f"{marker}\n\nMeasured {dt.date.today().isoformat()} on: {environment()}\n\n{table}\n\n"
        + "".join(f"- {note}\n" for note in notes)
    )
    head, _, rest = text.partition(marker) if marker in text else (text, "", "")
    tail = rest[rest.index(end) :] if end in rest else (end + "\n" if end == DQLITE_END else "")
    DOCS.write_text(head.rstrip() + "\n\n" + body + ("\n" + tail if tail else ""))
    print(f"\nwrote {DOCS}")


_DOCS_HEAD = """# Benchmarks

`python -m benchmarks` (after `pip install -e '.[bench]'`) runs every case against its
reference in the same process and rewrites the table below. Each figure is a median of
several runs; ratios are against the case's reference row. Timings never appear as
asserts in the test suite.
"""


if __name__ == "__main__":
    main()
