"""Data steps: your code that moves or fills data inside a migration, once per database.

With steps pending, a migration runs in two phases inside its one transaction. The expand
phase only adds (``plan.expand_diff``): new tables and columns, renames, a new NOT NULL
column without a default still nullable. Then the steps run, in name order, each given a
``Database`` bound to the transaction. The contract phase is then planned from the database
as the steps left it, exactly like a migration without steps: its data checks count what
the steps left behind (NULLs under a new NOT NULL, duplicates under a new unique index,
values a drop deletes), and a refusal rolls everything back. Values a step declares moved
(``DataStep(fn, moves=[...])``) and that are found where it moved them are not counted as
lost. Each applied step is recorded, so it never runs twice on the same database.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..engines import Engine
from ..errors import DataStepError, UsageError
from ..rows.database import Database
from ..schema.objects import Schema, Table, fold_name
from ..sql.render import quote_identifier
from .checks import row_check
from .introspect import applied_data_steps
from .migration import DataCheck, MigrationPlan
from .rebuild import key_term, rowid_name

logger = logging.getLogger(__name__)

CHECKED_AFTER_STEPS = "checked against the data after the data steps"


@dataclass(frozen=True)
class DataStep:
    """A data step that declares which data it moves, so dropping the old copy is not a loss.

    ``fn(db)`` gets a ``Database`` bound to the migration's transaction (``db.conn`` is the
    connection). Each entry of ``moves`` reads ``"table.column -> table.column"``: values of the
    first column, which the migration drops, that are found in the second after the steps
    ran are not counted as lost, so that drop needs no ``allow_destructive``: each value as many
    times as the target holds it (50 rows holding 'dark' need 50 'dark' there), or once when the
    entry ends with ``(distinct)`` (values moved into a lookup table of unique names). Values not
    found there still count (with their number and a sample). For a table the migration drops,
    declare the columns whose values matter: a row counts as lost when one of them holds a
    value found at none of its targets.

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated, Optional
        >>> from pydsqlite import DataStep, ForeignKey, PrimaryKey, SyncModel, sync_models
        >>> class Customer(SyncModel, table="customers"):
        ...     id: Annotated[int, PrimaryKey()]
        ...     city: Optional[str] = None
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Customer])
        >>> _ = conn.executemany("INSERT INTO customers VALUES (?, ?)", [(1, "Oslo"), (2, None)])
        >>> class Customer(SyncModel, table="customers"):  # the city moves to an address table
        ...     id: Annotated[int, PrimaryKey()]
        >>> class Address(SyncModel, table="addresses"):
        ...     customer_id: Annotated[int, ForeignKey("customers.id")]
        ...     city: str
        >>> def move_cities(db):
        ...     db.conn.execute("INSERT INTO addresses SELECT id, city FROM customers WHERE city IS NOT NULL")
        >>> step = DataStep(move_cities, moves=["customers.city -> addresses.city"])
        >>> print(sync_models(conn, [Customer, Address], data_steps={"001_addresses": step}))
        Migration plan (2 operations, 1 data step):
          1. create table addresses (2 columns)
          data step 001_addresses
          2. drop column customers.city
        >>> conn.execute("SELECT * FROM addresses").fetchall()
        [(1, 'Oslo')]
    """

    fn: Callable[[Database], object]
    moves: tuple[str, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise UsageError(f"DataStep takes a function of one argument (the Database), not {type(self.fn).__name__}")
        if inspect.iscoroutinefunction(self.fn):
            raise UsageError(_ASYNC_STEP.format(what=f"{getattr(self.fn, '__name__', 'the function')} is an async function"))
        if isinstance(self.moves, str):
            raise UsageError(f"DataStep moves= takes a list of 'table.column -> table.column', not the text {self.moves!r}")
        object.__setattr__(self, "moves", tuple(self.moves))
        for text in self.moves:
            _parse_move(text)


@dataclass(frozen=True)
class _Move:
    step: str
    text: str
    source: tuple[str, str]
    target: tuple[str, str]
    distinct: bool = False
    """``(distinct)``: the target holds each distinct value once (a lookup table), not once per row."""


_DISTINCT = "(distinct)"


def _parse_move(text: object, step: str = "") -> _Move:
    declared = text.strip() if isinstance(text, str) else ""
    distinct = declared.lower().endswith(_DISTINCT)
    sides = declared[: -len(_DISTINCT)].split("->") if distinct else declared.split("->")
    names = [side.strip().split(".") for side in sides]
    if len(names) != 2 or any(len(pair) != 2 or not all(part.strip() for part in pair) for pair in names):
        raise UsageError(f"DataStep moves= entry {text!r} must read 'table.column -> table.column' (optionally followed by '(distinct)')")
    (source_table, source_column), (target_table, target_column) = ((a.strip(), b.strip()) for a, b in names)
    return _Move(step, str(text), (source_table, source_column), (target_table, target_column), distinct)


_ASYNC_STEP = (
    "{what}, but a data step is a plain function: it runs inside the migration, on the connection's "
    "thread with pydsqlite.aio too, and gets a Database (not an AsyncDatabase)"
)

PendingSteps = tuple[tuple[str, DataStep], ...]
"""(name, step) in the order they run."""


def steps_from(data_steps: Mapping[str, DataStep | Callable[[Database], Any]] | None) -> PendingSteps:
    """The ``data_steps=`` argument, checked, in name order."""
    if data_steps is None:
        return ()
    if not isinstance(data_steps, Mapping):
        raise UsageError(f"data_steps= takes a dict of name -> function or DataStep, not {type(data_steps).__name__}")
    steps = []
    for name, step in data_steps.items():
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"data_steps= names must be non-empty text, not {name!r}")
        if not isinstance(step, DataStep):
            if not callable(step):
                raise UsageError(f"data step {name!r} must be a function of the Database or a DataStep, not {type(step).__name__}")
            try:
                step = DataStep(step)
            except UsageError as error:
                raise UsageError(f"data step {name!r}: {error}") from None
        steps.append((name, step))
    return tuple(sorted(steps, key=lambda item: item[0]))


def pending_steps(engine: Engine, steps: PendingSteps) -> PendingSteps:
    """The steps not yet applied to this database (no query when there are none)."""
    if not steps:
        return ()
    applied = applied_data_steps(engine)
    return tuple((name, step) for name, step in steps if name not in applied)


def run_data_steps(engine: Engine, steps: PendingSteps) -> None:
    """Run each step with a ``Database`` on the migration's transaction; a step that raises, or
    tries to commit or roll back that transaction, stops the migration with ``DataStepError``
    naming it. An exception that is not an ``Exception`` (``KeyboardInterrupt``) goes through as it is."""
    database = Database(engine)
    with engine.refusing_transaction_control() as refused:
        for name, step in steps:
            logger.info("data step %s", name)
            try:
                result = step.fn(database)
                if inspect.isawaitable(result):
                    getattr(result, "close", lambda: None)()  # never awaited: no "coroutine was never awaited" warning
                    raise DataStepError(name, f"data step {name!r}: " + _ASYNC_STEP.format(what="it returned an awaitable") + "; nothing was changed")
            except DataStepError:
                raise
            except Exception as error:
                if refused:
                    raise _ended_transaction(name, refused[0]) from error
                raise DataStepError(
                    name, f"data step {name!r} failed: {type(error).__name__}: {error}; nothing was changed"
                ) from error
            if refused:
                raise _ended_transaction(name, refused[0])
            if not engine.in_transaction:
                raise DataStepError(
                    name,
                    f"data step {name!r} ended the migration's transaction (it committed or rolled back); the migration "
                    "stopped, and what was committed stays. Leave transactions to sync_models inside a step",
                )


def _ended_transaction(name: str, statement: str) -> DataStepError:
    return DataStepError(
        name,
        f"data step {name!r} tried to end the migration's transaction ({statement}), which was refused: a step runs "
        "inside it, and sync_models commits or rolls back everything at once; nothing was changed",
    )


def count_moves(plan: MigrationPlan, steps: PendingSteps, live: Schema, desired: Schema) -> MigrationPlan:
    """``plan`` (made from ``live``, the database while the steps run) with the drops the steps
    declare moved counting only the values not found where they were moved; a drop whose
    data is all declared moved is no longer destructive by itself."""
    moves = [_parse_move(text, name) for name, step in steps for text in step.moves]
    if not moves:
        return plan
    for move in moves:
        _check_names(move, live, desired)
    used: set[str] = set()
    operations = []
    for operation in plan.operations:
        checks: list[DataCheck] = []
        notes: list[str] = []
        whole = any(check.drops for check in operation.checks)
        for check in operation.checks:
            moved = [move for move in moves if check.drops and _covers(move, check)]
            if not moved:
                whole = whole and not check.drops
                checks.append(check)
                continue
            used.update(move.text for move in moved)
            checks.append(_moved_check(check, moved, live, desired, moves))
            notes.extend(
                f"values of {'.'.join(move.source)} found in {'.'.join(move.target)} after data step {move.step} "
                f"({'each distinct value once' if move.distinct else 'as often as they were dropped'}) are not counted as lost"
                for move in moved
            )
        operations.append(
            replace(
                operation, checks=tuple(checks), destructive=operation.destructive and not whole,
                findings=(*operation.findings, *notes),
            )
        )
    for move in moves:
        if move.text not in used:
            table, column = move.source
            raise UsageError(
                f"data step {move.step!r} declares {move.text!r}, but this migration drops neither {table}.{column} "
                f"nor table {table}: declare a move in the release whose models drop it"
            )
    return replace(plan, operations=tuple(operations))


def _check_names(move: _Move, live: Schema, desired: Schema) -> None:
    table = live.table(move.source[0])
    if table is None or table.column(move.source[1]) is None:
        raise UsageError(
            f"data step {move.step!r} declares {move.text!r}, but the database has no column {'.'.join(move.source)} "
            "while the steps run"
        )
    target = desired.table(move.target[0])
    if target is None or target.column(move.target[1]) is None:
        raise UsageError(f"data step {move.step!r} declares {move.text!r}, but the models have no column {'.'.join(move.target)}")


def _covers(move: _Move, check: DataCheck) -> bool:
    table, column = (fold_name(name) for name in move.source)
    return fold_name(check.table) == table and (check.column is None or fold_name(check.column) == column)


def _moved_check(check: DataCheck, moved: list[_Move], live: Schema, desired: Schema, moves: list[_Move]) -> DataCheck:
    """The drop check counting only the values its steps did not move. A value counts as moved as
    many times as its target holds it, compared as the target stores values (its affinity applied,
    then byte for byte: 'A' is not 'a' even in a NOCASE column), and shared by every move into that
    target (two dropped columns both holding 'Paris' need 'Paris' twice there); once for a
    ``(distinct)`` target. ``moves``: every declared move, whose order decides which of the
    values a short target lacks count as lost (the later ones). ``live``: the database while the
    steps run; ``desired``: after the migration (a target column it converts is compared as it
    will store values)."""
    by_column: dict[str, list[_Move]] = {}
    for move in moved:
        by_column.setdefault(move.source[1], []).append(move)
    identity = _row_identity(live.table(check.table))
    missing = []
    for column, column_moves in by_column.items():
        quoted = quote_identifier(column)
        absent = []
        for move in column_moves:
            absent.append(f"({', '.join(identity)}) IN ({_lost_rows(move, moves, identity, live, desired)})")
        missing.append(f"({quoted} IS NOT NULL AND {' AND '.join(absent)})")
    steps = ", ".join(sorted({move.step for move in moved}))
    where = " and ".join(
        f"{column} to {', '.join('.'.join(move.target) for move in column_moves)}" for column, column_moves in by_column.items()
    )
    if check.column is not None:
        problem = (
            f"values would be deleted with the column: data step {steps} moved them to "
            f"{', '.join('.'.join(move.target) for move in moved)}, but these are not there as many times as here"
        )
    else:
        problem = f"rows would be deleted with the table: data step {steps} moved their {where}, but these are not there as many times as here"
    sample = ", ".join(quote_identifier(column) for column in by_column)
    lost = row_check(check.table, check.column, problem, check.source or "", " OR ".join(missing), blocking=False, sample=sample)
    return replace(lost, drops=True)


def _row_identity(table: Table | None) -> list[str]:
    """SQL naming a row of ``table``: its rowid, else its primary key columns."""
    rowid = rowid_name(table) if table is not None else "rowid"
    if rowid is not None or table is None or not table.primary_key:
        return [key_term(rowid or "rowid")]
    return [quote_identifier(name) for name in table.primary_key]


def _lost_rows(move: _Move, moves: list[_Move], identity: list[str], live: Schema, desired: Schema) -> str:
    """A query of the rows (by ``identity``) whose value of ``move``'s source column its target does
    not hold: as often as every counted move into that target together gave it, or at all for a
    ``(distinct)`` move. Values are compared as the target column stores them once the migration
    is done (its affinity: a number as its text in a TEXT column, a REAL only where that text reads
    back as the same number; numeric text as a number in a numeric column, which the comparison
    applies), then byte for byte; each move's values are numbered per value the target holds, in
    the order of the declared moves and then of the rows; a number above the target's count is a
    value lost."""
    target_table, target = (quote_identifier(name) for name in move.target)
    now = live.table(move.target[0])
    now_column = now.column(move.target[1]) if now is not None else None
    then = desired.table(move.target[0])
    then_column = then.column(move.target[1]) if then is not None else now_column
    affinity = (then_column or now_column).affinity if (then_column or now_column) is not None else "BLOB"  # type: ignore[union-attr]
    held_term = target
    if now_column is not None and now_column.affinity != affinity and affinity != "BLOB":
        held_term = f"CAST({target} AS {affinity})"  # the column the migration converts, as it will hold its values
    sharing = [move] if move.distinct else [other for other in moves if not other.distinct and _same_column(other.target, move.target)]
    own = sharing.index(move)
    keys = [f"k{position}" for position in range(len(identity))]

    def stored(source: str) -> str:
        if affinity != "TEXT":
            return source
        return (
            f"CASE typeof({source}) WHEN 'integer' THEN CAST({source} AS TEXT) "
            f"WHEN 'real' THEN CASE WHEN CAST(CAST({source} AS TEXT) AS REAL) = {source} THEN CAST({source} AS TEXT) END "
            f"ELSE {source} END"
        )

    items = " UNION ALL ".join(
        f"SELECT {number} AS source, "
        + ", ".join(f"{term if other is move else 'NULL'} AS {key}" for term, key in zip(identity, keys, strict=True))
        + f", {stored(quote_identifier(other.source[1]))} AS value FROM {quote_identifier(other.source[0])} "
        f"WHERE {quote_identifier(other.source[1])} IS NOT NULL"
        for number, other in enumerate(sharing)
    )
    held = (
        f"SELECT {held_term} AS held_value, count(*) AS times FROM {target_table} WHERE {target} IS NOT NULL "
        f"GROUP BY {held_term} COLLATE BINARY"
    )
    ranked = (
        f"SELECT item.source AS source, {', '.join(f'item.{key} AS {key}' for key in keys)}, held.times AS times, "
        f"row_number() OVER (PARTITION BY held.held_value COLLATE BINARY ORDER BY item.source, {', '.join(f'item.{key}' for key in keys)}) AS nth "
        f"FROM ({items}) AS item LEFT JOIN ({held}) AS held ON held.held_value = item.value COLLATE BINARY"
    )
    lost = "times IS NULL" if move.distinct else "(times IS NULL OR nth > times)"
    return f"SELECT {', '.join(keys)} FROM ({ranked}) WHERE source = {own} AND {lost}"


def _same_column(first: tuple[str, str], second: tuple[str, str]) -> bool:
    return tuple(map(fold_name, first)) == tuple(map(fold_name, second))


def with_steps(expand: MigrationPlan, contract: MigrationPlan, steps: PendingSteps) -> MigrationPlan:
    """The preview: ``expand`` (checked against the data), the steps, then ``contract`` (not
    checked yet: that happens after the steps ran). Problems ``contract`` knows without data count."""
    noted = tuple(
        replace(operation, findings=(*operation.findings, CHECKED_AFTER_STEPS)) if operation.checks else operation
        for operation in contract.operations
    )
    known = tuple(problem for operation in contract.operations for problem in operation.problems)
    joined = expand.followed_by(replace(contract, operations=noted, problems=known))
    return replace(joined, data_steps=tuple(name for name, _ in steps))
