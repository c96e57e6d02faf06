"""The plan's data: operations with their SQL, the data checks attached to them, and the plan itself."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .diff import TableDiff


@dataclass(frozen=True)
class ValueChange:
    """What a rebuild's copy does to the values of one column: the CAST it applies, and the
    default (SQL) it gives NULLs of a column that becomes NOT NULL."""

    table: str
    column: str
    cast: str | None
    null_default: str | None

    def applied_to(self, expression: str) -> str:
        """``expression`` (SQL for the old value) as the copy turns it: the CAST, then the default for NULLs."""
        if self.cast is not None:
            expression = f"CAST({expression} AS {self.cast})"
        return expression if self.null_default is None else f"IFNULL({expression}, {self.null_default})"


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
    drops: bool = False
    """Counts what a drop deletes: the values of ``column``, or the rows of ``table`` when
    ``column`` is None (a data step may declare them moved, see ``steps``)."""
    non_null: str | None = None
    """The column (SQL) whose non-NULL values the check counts (what a dropped column deletes):
    answered by SQLite's own ``count(column)``, cheaper than testing ``condition`` per row."""
    sample_key: str | None = None
    """How the key ``sample_sql`` reads first is named (``id``, ``(a, b)``): the sample is then a
    row, named by its key, with the value of ``column`` after it when the query reads that too."""
    utf8_column: str | None = None
    """The column (SQL) whose blobs must decode as UTF-8: engines without SQL functions read those
    blobs and check them in Python instead of running ``condition``."""
    sample_becomes: bool = False
    """``sample_sql`` reads a value and what the step makes of it (a conversion's sample)."""


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
    """One step of a migration: what it does, its SQL, and whether it loses data.

    ``row_count`` and ``findings`` are filled in once the plan was checked against the data;
    ``after_data_steps`` marks the steps that run after the migration's data steps.

    Examples:
        >>> import sqlite3
        >>> from typing import Optional
        >>> from pydsqlite import SyncModel, model_migration_plan, sync_models
        >>> class Film(SyncModel, table="films"):
        ...     title: str
        ...     rating: Optional[str] = None
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Film])
        >>> _ = conn.execute("INSERT INTO films VALUES ('Alien', 'R')")
        >>> class Film(SyncModel, table="films"):
        ...     title: str
        >>> (operation,) = model_migration_plan(conn, [Film]).operations
        >>> operation.kind, operation.table, operation.destructive, operation.row_count
        ('drop_column', 'films', True, 1)
        >>> operation.statements
        ('ALTER TABLE `films` DROP COLUMN `rating`',)
        >>> operation.findings
        ('films.rating: 1 row: values would be deleted with the column',)
    """

    kind: str
    table: str
    description: str
    statements: tuple[str, ...]
    destructive: bool = False
    row_count: int | None = None
    """Rows the destructive step loses data of, each counted once however many of its values it loses
    (the findings count per column), once the plan was checked against data."""
    findings: tuple[str, ...] = ()
    """What the data checks found (lossy conversions, rows in the way)."""
    checks: tuple[DataCheck, ...] = field(default=(), repr=False)
    problems: tuple[str, ...] = field(default=(), repr=False)
    """Reasons, known without reading data, why the operation cannot run."""
    copy: RowCopy | None = field(default=None, repr=False)
    replay: Replay | None = field(default=None, repr=False)
    """Set until the rehearsal has appended the statements that recreate the table's dependants."""
    rebuild: TableDiff | None = field(default=None, repr=False, compare=False)
    """For a rebuild: the table change as the live table reads before any renames (what an
    online rebuild copies from, see ``online``)."""
    after_data_steps: bool = field(default=False, repr=False)
    """Runs after the plan's data steps (the contract phase, see ``steps``)."""
    stepped: bool = field(default=False, repr=False)
    """The statements are phases pydsqlite runs in steps, binding each chunk's bounds (an online
    rebuild): the plan's script shows them as comments, so that running it by hand cannot run
    them with unbound (NULL) bounds, which would copy no rows."""
    functions: tuple[str, ...] = field(default=(), repr=False)
    """SQL functions the statements call that SQLite does not define itself (the application
    registers them): found by the rehearsal, checked against the migrating connection."""

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
    ``str(plan)`` is a readable summary, ``plan.sql`` the whole SQL script. ``data_steps``
    names the data steps the migration runs, in order, between the operations that add
    (before them) and those marked ``after_data_steps``.

    Examples:
        >>> import sqlite3
        >>> from pydsqlite import SyncModel, model_migration_plan
        >>> class Tag(SyncModel, table="tags"):
        ...     name: str
        >>> plan = model_migration_plan(sqlite3.connect(":memory:"), [Tag])
        >>> print(plan)
        Migration plan (1 operation):
          1. create table tags (1 column)
        >>> plan.is_empty, plan.destructive_operations, plan.problems
        (False, (), ())
    """

    operations: tuple[Operation, ...] = ()
    problems: tuple[str, ...] = ()
    checked: bool = False
    """True once the data checks ran (row counts and findings are filled in)."""
    renames: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    """(table, old column, new column) of every column the plan renames, for the bookkeeping."""
    table_renames: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(old, new) name of every table the plan renames."""
    value_changes: tuple[ValueChange, ...] = field(default=(), repr=False)
    """How the plan's rebuilds change the values they copy (for the stored states of deleted rows)."""
    data_steps: tuple[str, ...] = ()
    """Names of the data steps not yet applied, in the order they run."""
    data_steps_skipped: bool = False
    """A new database (no tables yet) has no data to move or fill: its data steps are recorded
    as applied without running."""
    finished_first: tuple[str, ...] = ()
    """Work an interrupted online migration left pending, which a sync finishes before it plans the
    rest (a preview plans the database as it is: the sync's plan may then be shorter)."""

    @property
    def is_empty(self) -> bool:
        """Nothing to do: no operation and no data step."""
        return not self.operations and not self.data_steps

    @property
    def sql(self) -> str:
        """The whole SQL script; the data steps, and an online rebuild's phases, appear as comments where they run."""
        parts: list[str] = []
        if any(operation.stepped for operation in self.operations):
            parts.append("-- an online migration: pydsqlite runs the commented rebuilds below in steps (sync --online); this script does not\n")
        for position, operation in enumerate(self.operations):
            if position == self._data_steps_position:
                parts.extend(f"-- {line}\n" for line in self._data_step_lines)
            if operation.stepped:
                parts.append(f"-- {operation.description}:\n")
                parts.extend(f"--   {line}\n" for statement in operation.statements for line in f"{statement};".splitlines())
            else:
                parts.extend(statement + ";\n" for statement in operation.statements)
        if self._data_steps_position == len(self.operations):
            parts.extend(f"-- {line}\n" for line in self._data_step_lines)
        return "".join(parts)

    @property
    def _data_step_lines(self) -> list[str]:
        note = " (not run: a new database has no data to move)" if self.data_steps_skipped else ""
        return [f"data step {name}{note}" for name in self.data_steps]

    @property
    def _data_steps_position(self) -> int | None:
        """Where the data steps run: before the first operation marked ``after_data_steps``."""
        if not self.data_steps:
            return None
        return next((n for n, op in enumerate(self.operations) if op.after_data_steps), len(self.operations))

    @property
    def destructive_operations(self) -> tuple[Operation, ...]:
        """The operations that lose data (``sync_models`` needs ``allow_destructive=True`` for them)."""
        return tuple(operation for operation in self.operations if operation.destructive)

    @property
    def operations_before_data_steps(self) -> tuple[Operation, ...]:
        """The operations that run before the data steps (all of them when there are none)."""
        return tuple(operation for operation in self.operations if not operation.after_data_steps)

    @property
    def rebuilt_tables(self) -> tuple[str, ...]:
        """Names of the tables the plan rebuilds (copies into a new shape)."""
        return tuple(operation.table for operation in self.operations if operation.kind == "rebuild_table")

    def __str__(self) -> str:
        finished = (
            ["Left pending by an interrupted online migration, finished first:", *(f"  - {work}" for work in self.finished_first)]
            if self.finished_first
            else []
        )
        if self.is_empty:
            return "\n".join([*finished, "Nothing to do: the database matches the desired schema."])
        return "\n".join([*finished, self._described()])

    def _described(self) -> str:
        counted = f"{len(self.operations)} operation{'s' if len(self.operations) != 1 else ''}"
        if self.data_steps:
            counted += f", {len(self.data_steps)} data step{'s' if len(self.data_steps) != 1 else ''}"
        lines = [f"Migration plan ({counted}):"]
        for number, operation in enumerate(self.operations, 1):
            if number - 1 == self._data_steps_position:
                lines.extend(f"  {line}" for line in self._data_step_lines)
            lines.append(f"  {number}. {operation}")
        if self._data_steps_position == len(self.operations):
            lines.extend(f"  {line}" for line in self._data_step_lines)
        if self.problems:
            lines.append("Cannot be applied:")
            lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)

    def with_operations(self, operations: tuple[Operation, ...], problems: tuple[str, ...]) -> MigrationPlan:
        return replace(self, operations=operations, problems=problems, checked=True)

    def followed_by(self, contract: MigrationPlan) -> MigrationPlan:
        """This plan's operations before the data steps, then ``contract``'s after them."""
        after = tuple(replace(operation, after_data_steps=True) for operation in contract.operations)
        return replace(
            self,
            operations=(*self.operations_before_data_steps, *after),
            problems=(*self.problems, *contract.problems),
            renames=(*self.renames, *contract.renames),
            table_renames=(*self.table_renames, *contract.table_renames),
            value_changes=(*self.value_changes, *contract.value_changes),
        )
