"""What the command prints: messages on stderr, rebuild progress, plans and schemas as JSON;
a reader that goes away (``| head``) stops the printing, never the work."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, TextIO

from ..migrate.migration import MigrationPlan
from ..schema.objects import Schema


def report(message: str) -> None:
    """A message on stderr, after what is already on stdout (so a log shows them in order)."""
    flush_stdout()
    try:
        print(f"pydsqlite: {message}", file=sys.stderr, flush=True)
    except BrokenPipeError:
        discard_output(sys.stderr)


def flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_output(sys.stdout)


def discard_output(*streams: TextIO) -> None:
    """After the reader of a stream went away: send what is left to /dev/null, so that neither
    this process nor the interpreter's flush at exit reports the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


_PHASE_VERBS = {"copy": "copied", "catch-up": "caught up", "free": "freed"}
"""How the plain progress lines name each phase of a rebuild."""


class ProgressReporter:
    """Rows copied per rebuilt table: a bar on a terminal, a plain line per 10% otherwise; an
    online rebuild's phases (copy, catch-up, swap, free) each get their own.

    A closed output stops the reporting, not the migration."""

    def __init__(self, stream: TextIO) -> None:
        self.stream: TextIO | None = stream
        self.tty = stream.isatty()
        self.last_tenth: dict[str, int] = {}
        self.open_bar = False

    def __call__(self, table: str, copied: int, total: int, phase: str = "copy") -> None:
        if phase == "swap":  # one step, no rows to count
            self.finish()
            self._write(f"{table}: the new table is in place\n")
            return
        fraction = copied / total if total else 1.0
        rows = "row" if total == 1 else "rows"
        verb = _PHASE_VERBS.get(phase, phase)
        label = table if phase == "copy" else f"{table} ({phase})"
        if self.tty:
            filled = int(fraction * 30)
            self._write(f"\r{label}: [{'#' * filled}{'.' * (30 - filled)}] {copied}/{total} {rows}")
            self.open_bar = copied < total
            if not self.open_bar:
                self._write("\n")
        else:
            tenth = int(fraction * 10)
            if self.last_tenth.get(label) != tenth:
                self.last_tenth[label] = tenth
                self._write(f"{table}: {verb} {copied} of {total} {rows}\n")

    def finish(self) -> None:
        if self.open_bar:
            self._write("\n")
            self.open_bar = False

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            discard_output(self.stream)
            self.stream = None


def schema_to_json(schema: Schema) -> dict[str, Any]:
    """The schema as plain JSON data (tables with columns, keys, indexes; views; triggers)."""
    def clean(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
        if isinstance(value, (tuple, list)):
            return [clean(item) for item in value]
        return value

    return clean(schema)  # type: ignore[return-value]


def plan_to_json(plan: MigrationPlan) -> dict[str, Any]:
    return {
        "is_empty": plan.is_empty,
        "problems": list(plan.problems),
        "operations": [
            {
                "kind": op.kind,
                "table": op.table,
                "description": op.description,
                "destructive": op.destructive,
                "row_count": op.row_count,
                "findings": list(op.findings),
                "statements": list(op.statements),
                "after_data_steps": op.after_data_steps,
            }
            for op in plan.operations
        ],
        "data_steps": list(plan.data_steps),
        "finished_first": list(plan.finished_first),
    }
