"""The plan's data: operations with their SQL, the data checks attached to them, and the plan itself."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class DataCheck:
    """A question for the live data: how many rows are in the way of, or lost by, a step?

    Row checks give a ``source`` (a table or a projection of one) and a ``condition``
    marking offending rows; checks on one source are answered by a single scan.
    Grouped checks (duplicates) give a whole ``count_sql`` instead. ``blocking`` checks
    make the plan impossible; the others mean the step loses data (it needs
    ``allow_destructive=True``).
    """

    table: str
    column: str | None
    problem: str
    blocking: bool
    source: str | None = None
    condition: str | None = None
    count_sql: str | None = None
    sample_sql: str | None = None
    when_foreign_keys_on: bool = False
    """Asked only when the connection enforces foreign keys (orphans matter only then)."""
    utf8_column: str | None = None
    """The column (SQL) whose blobs must decode as UTF-8: engines without SQL functions read those
    blobs and check them in Python instead of running ``condition``."""


@dataclass(frozen=True)
class RowCopy:
    """The row copy of a rebuild, so the executor can report its progress.

    ``statements[index]`` is the plain ``INSERT … SELECT``; ``with_progress`` is the same
    copy calling ``pydsqlite_copy_progress()`` once per row (used only when asked for).
    ``chunk_key`` orders the old rows (its rowid, or the key of a WITHOUT ROWID table; empty
    when neither can) so that an engine without SQL functions copies them in ranges instead.
    """

    index: int
    source: str
    with_progress: str
    chunk_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Replay:
    """What a rebuild recreates after the swap: the triggers and indexes of ``table`` as they stand
    right before it, except ``skip_indexes`` (folded names the rebuild creates itself or drops).
    The rehearsal reads their SQL and appends it to the rebuild's statements."""

    table: str
    skip_indexes: frozenset[str]


@dataclass(frozen=True)
class Operation:
    """One step of a migration: what it does, its SQL, and whether it loses data."""

    kind: str
    table: str
    description: str
    statements: tuple[str, ...]
    destructive: bool = False
    row_count: int | None = None
    """Rows (or non-NULL values) the destructive step discards, once the plan was checked against data."""
    findings: tuple[str, ...] = ()
    """What the data checks found (lossy conversions, rows in the way)."""
    checks: tuple[DataCheck, ...] = field(default=(), repr=False)
    problems: tuple[str, ...] = field(default=(), repr=False)
    """Reasons, known without reading data, why the operation cannot run."""
    copy: RowCopy | None = field(default=None, repr=False)
    replay: Replay | None = field(default=None, repr=False)
    """Set until the rehearsal has appended the statements that recreate the table's dependants."""

    def __str__(self) -> str:
        mark = "DESTRUCTIVE " if self.destructive else ""
        text = f"{mark}{self.description}"
        if self.row_count is not None and self.destructive:
            text += f" [{self.row_count} row{'s' if self.row_count != 1 else ''}]"
        for finding in self.findings:
            text += f"\n    ! {finding}"
        return text


@dataclass(frozen=True)
class MigrationPlan:
    """The ordered operations that bring a database in line with the models.

    ``problems`` lists what makes the plan impossible (``sync_models`` refuses it);
    ``str(plan)`` is a readable summary, ``plan.sql`` the whole SQL script.
    """

    operations: tuple[Operation, ...] = ()
    problems: tuple[str, ...] = ()
    checked: bool = False
    """True once the data checks ran (row counts and findings are filled in)."""
    renames: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    """(table, old column, new column) of every column the plan renames, for the bookkeeping."""
    table_renames: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(old, new) name of every table the plan renames."""

    @property
    def is_empty(self) -> bool:
        return not self.operations

    @property
    def sql(self) -> str:
        return "".join(statement + ";\n" for operation in self.operations for statement in operation.statements)

    @property
    def destructive_operations(self) -> tuple[Operation, ...]:
        return tuple(operation for operation in self.operations if operation.destructive)

    @property
    def rebuilt_tables(self) -> tuple[str, ...]:
        return tuple(operation.table for operation in self.operations if operation.kind == "rebuild_table")

    def __str__(self) -> str:
        if self.is_empty:
            return "Nothing to do: the database matches the desired schema."
        lines = [f"Migration plan ({len(self.operations)} operation{'s' if len(self.operations) != 1 else ''}):"]
        lines.extend(f"  {number}. {operation}" for number, operation in enumerate(self.operations, 1))
        if self.problems:
            lines.append("Cannot be applied:")
            lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)

    def with_operations(self, operations: tuple[Operation, ...], problems: tuple[str, ...]) -> MigrationPlan:
        return replace(self, operations=operations, problems=problems, checked=True)
