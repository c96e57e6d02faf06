"""Checks a plan against the live data before anything changes.

Runs each operation's checks (read-only; the row checks on one table in a single
scan) and fills in row counts and findings: rows in the way make the plan
impossible, rows that would be lost make the operation destructive.
"""

from __future__ import annotations

from dataclasses import replace

from ..engines import Engine
from ..errors import DestructiveChangeError, MigrationError, PlanChangedError
from ..replica.deleted_rows import deleted_rows_checks
from ..sql.render import quote_literal
from .checks import UTF8_FUNCTION
from .migration import DataCheck, MigrationPlan, Operation
from .rebuild import value_changes


def check_plan_against_data(engine: Engine, plan: MigrationPlan, foreign_keys_on: bool | None = None) -> MigrationPlan:
    """The same plan with row counts, findings and blocking problems filled in.

    ``foreign_keys_on``: whether foreign keys will be enforced after the migration (default:
    as the connection is now; a migration session passes the setting it switched off)."""
    if engine.supports_functions and any(check.utf8_column for operation in plan.operations for check in operation.checks):
        engine.create_function(UTF8_FUNCTION, 1, _is_utf8, deterministic=True)
    if foreign_keys_on is None:
        foreign_keys_on = bool(engine.pragma("foreign_keys"))
    operations = []
    problems: list[str] = []
    for operation in plan.operations:
        if operation.rebuild is not None:
            deleted = deleted_rows_checks(engine, operation.rebuild, value_changes(operation.rebuild))
            operation = replace(operation, checks=(*operation.checks, *deleted)) if deleted else operation
        checked, found = _check_operation(engine, operation, foreign_keys_on)
        operations.append(checked)
        problems.extend(found)
    return plan.with_operations(tuple(operations), tuple(problems))


def refuse_unless_applicable(plan: MigrationPlan, allow_destructive: bool, after_steps: tuple[str, ...] = ()) -> None:
    """Raise what ``sync_models`` raises for a checked plan it cannot apply: ``MigrationError`` for
    its problems, ``DestructiveChangeError`` for steps that lose data unless they are allowed
    (``after_steps``: the data steps that ran before the plan was made, named in the error)."""
    when = f" after data step{'s' if len(after_steps) > 1 else ''} {', '.join(after_steps)}" if after_steps else ""
    if plan.problems:
        raise MigrationError(f"the migration cannot be applied{when}; nothing was changed:\n  - " + "\n  - ".join(plan.problems))
    destructive = plan.destructive_operations
    if destructive and not allow_destructive:
        listing = "\n  - ".join(str(operation) for operation in destructive)
        raise DestructiveChangeError(
            f"the migration would lose data{when}; pass allow_destructive=True to apply it. Destructive steps:\n  - " + listing,
            destructive,
        )


def refuse_unless_expected(plan: MigrationPlan, expected: MigrationPlan | None, *, finished_kept: bool = False) -> None:
    """Raise ``PlanChangedError`` when ``expected`` (a previewed plan) reads otherwise than ``plan``, the
    one made under the write lock: its steps, row counts, findings and problems, as shown to a person,
    and its SQL (a column's type is in the SQL only). ``finished_kept``: the work an interrupted
    online migration left pending (``plan.finished_first``) was committed before this plan was made."""
    if expected is not None and (str(plan) != str(expected) or plan.sql != expected.sql):
        if finished_kept and plan.finished_first:
            changed = (
                "the work an interrupted online migration left pending was finished first and stays (see the plan "
                "below), nothing else was changed; preview again and approve that plan"
            )
        else:
            changed = "nothing was changed"
        raise PlanChangedError(
            "the migration planned now is not the one previewed (expected_plan): the database changed since, or the "
            "preview was made for other models or another database, or on a connection with other settings (foreign "
            f"keys on or off); {changed}. The plan now:\n{plan}",
            plan,
        )


def _check_operation(engine: Engine, operation: Operation, foreign_keys_on: bool) -> tuple[Operation, list[str]]:
    findings: list[str] = []
    problems: list[str] = list(operation.problems)
    destructive = operation.destructive
    asked = tuple(check for check in operation.checks if foreign_keys_on or not check.when_foreign_keys_on)
    if not engine.supports_functions:
        asked = tuple(_utf8_answered(engine, check) if check.utf8_column else check for check in asked)
    counts = count_checks(engine, asked)
    losses: list[tuple[DataCheck, int]] = []
    for check, count in zip(asked, counts, strict=True):
        if not count:
            continue
        message = _message(engine, check, count)
        if check.blocking:
            problems.append(message)
        else:
            destructive = True
            losses.append((check, count))
            findings.append(message)
    row_count = _rows_losing_data(engine, losses) if destructive else None
    checked = replace(operation, destructive=destructive, row_count=row_count, findings=tuple(findings))
    return checked, problems


def _rows_losing_data(engine: Engine, losses: list[tuple[DataCheck, int]]) -> int:
    """How many rows the step's findings touch, each row once: findings over one table (two columns
    losing values in the same rows, a value changing and its row's rowid too) are counted together
    in one more scan; findings counted otherwise (deleted rows, duplicates) add their counts."""
    total = 0
    by_source: dict[str, list[str]] = {}
    for check, count in losses:
        if check.source is not None and (check.condition is not None or check.non_null is not None):
            by_source.setdefault(check.source, []).append(f"({check.non_null}) IS NOT NULL" if check.non_null else f"({check.condition})")
        else:
            total += count
    for source, conditions in by_source.items():
        if len(conditions) == 1:
            total += next(count for check, count in losses if check.source == source)
        else:
            total += int(engine.execute(f"SELECT count(*) FROM {source} WHERE {' OR '.join(conditions)}").fetchone()[0])
    return total


def count_checks(engine: Engine, checks: tuple[DataCheck, ...]) -> list[int]:
    """Offending-row counts of ``checks``: one scan per source for row checks, one query per grouped check."""
    counts = [0] * len(checks)
    by_source: dict[str, list[int]] = {}
    for position, check in enumerate(checks):
        if check.source is not None and check.condition is not None:
            by_source.setdefault(check.source, []).append(position)
        elif check.count_sql is not None:
            counts[position] = int(engine.execute(check.count_sql).fetchone()[0] or 0)
    for source, positions in by_source.items():
        tallies = ", ".join(_tally(checks[p]) for p in positions)
        row = engine.execute(f"SELECT {tallies} FROM {source}").fetchone()
        for position, value in zip(positions, row, strict=True):
            counts[position] = int(value)
    return counts


def _tally(check: DataCheck) -> str:
    """The aggregate counting the rows ``check`` finds. A FILTER clause evaluates its condition as a
    jump, so AND/OR short-circuit (a value-context AND would call the UTF-8 function on every row)."""
    if check.non_null is not None:
        return f"count({check.non_null})"
    return f"count(*) FILTER (WHERE {check.condition})"


def any_failing(engine: Engine, checks: tuple[DataCheck, ...]) -> bool:
    """Whether any row fails any of ``checks``: for row checks a filter that stops at the first
    such row (no per-row aggregate, as a chunk of an online copy checks every row it copies)."""
    by_source: dict[str, list[str]] = {}
    for check in checks:
        if check.source is not None and check.condition is not None:
            by_source.setdefault(check.source, []).append(f"({check.condition})")
        elif check.count_sql is not None and int(engine.execute(check.count_sql).fetchone()[0] or 0):
            return True
    return any(
        engine.execute(f"SELECT 1 FROM {source} WHERE {' OR '.join(conditions)} LIMIT 1").fetchone() is not None
        for source, conditions in by_source.items()
    )


def _message(engine: Engine, check: DataCheck, count: int) -> str:
    where = f"{check.table}.{check.column}" if check.column else check.table
    rows = f"{count} row{'s' if count != 1 else ''}"
    text = f"{where}: {rows}: {check.problem}"
    if check.sample_sql:
        try:
            sample = engine.execute(check.sample_sql).fetchone()
        except engine.OperationalError as error:  # the sample is text that is not UTF-8 (a blob cast to TEXT)
            if "decode" not in str(error):
                raise
            return f"{text} (e.g. a value that is not valid UTF-8 text)"
        if sample is not None and check.sample_key:
            row = f"= {sample[0]}" if check.sample_key.startswith("(") else repr(sample[0])  # several: SQL literals
            where_value = f", where {check.column} is {sample[1]!r}" if len(sample) > 1 else ""
            text += f" (e.g. the row with {check.sample_key} {row}{where_value})"
        elif sample is not None and check.sample_becomes:
            text += f" (e.g. {sample[0]!r} becomes {sample[1]!r})"
        elif sample is not None:
            value = sample[0] if len(sample) == 1 else tuple(sample)
            text += f" (e.g. {value!r})"
    return text


def _utf8_answered(engine: Engine, check: DataCheck) -> DataCheck:
    """The UTF-8 check on an engine without SQL functions: read the column's blobs (the only values
    that can fail it) and decode them here; the check then just states the count and a sample."""
    column = check.utf8_column
    blobs = engine.execute(f"SELECT {column} FROM {check.source} WHERE typeof({column}) = 'blob'").fetchall()
    failing = [value for (value,) in blobs if not _is_utf8(value)]
    return replace(
        check,
        source=None,
        condition=None,
        count_sql=f"SELECT {len(failing)}",
        sample_sql=f"SELECT {quote_literal(failing[0])}" if failing else None,
    )


def _is_utf8(value: object) -> bool:
    """Whether a blob would read back as text."""
    if not isinstance(value, bytes):
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
