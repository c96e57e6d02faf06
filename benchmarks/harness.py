"""Timing and reporting: medians of repeated runs, ratios against a reference, a Markdown table."""

from __future__ import annotations

import gc
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Measurement:
    """The median of several timed runs of one contender in one case."""

    case: str
    contender: str
    median_s: float
    runs: int
    note: str = ""


@dataclass
class Report:
    """All measurements of one benchmark run, printable as a table with ratios to each case's reference."""

    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)

    def add(self, measurement: Measurement, *, reference: bool = False) -> Measurement:
        self.measurements.append(measurement)
        if reference:
            self.references[measurement.case] = measurement.contender
        print(f"  {measurement.case:<40} {measurement.contender:<38} {format_seconds(measurement.median_s):>10}", flush=True)
        return measurement

    def add_medians(self, case: str, medians: dict[str, float], runs: int, reference: str) -> None:
        """Report each contender of ``case`` from ``median_times``, ``reference`` as the case's reference."""
        for contender, median in medians.items():
            self.add(Measurement(case, contender, median, runs), reference=contender == reference)

    def table(self) -> str:
        lines = [
            "| case | contender | median | runs | vs reference |",
            "|---|---|---:|---:|---:|",
        ]
        for item in self.measurements:
            reference_name = self.references.get(item.case)
            reference = next(
                (m for m in self.measurements if m.case == item.case and m.contender == reference_name), None
            )
            ratio = "reference" if reference is item else (
                f"{item.median_s / reference.median_s:.2f}x" if reference and reference.median_s > 0 else ""
            )
            note = f" ({item.note})" if item.note else ""
            lines.append(f"| {item.case} | {item.contender}{note} | {format_seconds(item.median_s)} | {item.runs} | {ratio} |")
        return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


clock = time.process_time
"""Every figure is the CPU time of the process running the contender (its threads included):
on a shared machine wall time measures the neighbours as much as the code. Waits outside the
CPU (a commit's fsync) are left out of both sides of every ratio alike."""


def median_time(action: Callable[[], object], runs: int, setup: Callable[[], object] | None = None) -> float:
    """Median CPU time of ``action`` over ``runs`` runs; ``setup`` runs untimed before each, then a
    full collection, so no run pays a collection that the objects of an earlier run made due."""
    samples = []
    for _ in range(runs):
        if setup is not None:
            setup()
        gc.collect()
        started = clock()
        action()
        samples.append(clock() - started)
    return statistics.median(samples)


def median_times(actions: dict[str, Callable[[], object]], runs: int, setup: Callable[[], object] | None = None) -> dict[str, float]:
    """Median CPU time of each of ``actions`` over ``runs`` rounds that run them in turn (``setup``
    untimed before each): a floor and its contenders then see the same drift of the machine and of
    the process (its heap, its caches), which one block of runs after another does not."""
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            if setup is not None:
                setup()
            gc.collect()
            started = clock()
            action()
            samples[name].append(clock() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def median_time_batched(action: Callable[[], object], runs: int, batch: int) -> float:
    """Median per-call time of ``action`` over ``runs`` batches of ``batch`` calls (for microsecond work)."""
    samples = []
    for _ in range(runs):
        started = clock()
        for _ in range(batch):
            action()
        samples.append((clock() - started) / batch)
    return statistics.median(samples)


def peak_rss_kb() -> int:
    """This process's peak resident memory in KB. Linux's ``VmHWM`` counts only since the process
    started its program: ``ru_maxrss`` also counts the parent it was forked from (a benchmark
    parent holding a million rows made every child report that parent's size)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def environment() -> str:
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()} {platform.system()} {platform.release()}, {_cpu_count()} CPUs; argv: {' '.join(sys.argv[1:]) or '(full run)'}"
    )


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1
