"""Which rebuilds of a plan go online, and the SQL of their phases for the preview."""

from __future__ import annotations

from dataclasses import replace

from ...engines import Engine
from ...errors import MigrationError
from ...schema.objects import fold_name
from ..migration import MigrationPlan, Operation
from ..shadow import (
    NotOnline,
    ShadowSpec,
    new_table_name,
    table_rebuild_spec,
)


def require_wal(engine: Engine) -> None:
    """Online rebuilds need WAL: in rollback-journal mode a reader blocks the writer, so the copy's
    reads would stall the application's writes."""
    mode = str(engine.pragma("journal_mode")).lower()
    main_file = next((row[2] for row in engine.execute("PRAGMA database_list").fetchall() if row[1] == "main"), "")
    if mode != "wal" and not main_file:
        raise MigrationError(
            "online=True needs a database file in WAL mode, but this database is in memory (or temporary): it cannot use "
            "WAL, and no other connection writes to it while it is rebuilt; migrate without online=True. Nothing was changed."
        )
    if mode != "wal":
        raise MigrationError(
            f"online=True needs the database in WAL mode (PRAGMA journal_mode = WAL), but it is in {mode!r} mode: "
            "in rollback-journal mode readers block the writer, so copying while the application writes is not "
            "possible; switch to WAL once (it persists in the file) or migrate without online=True. Nothing was changed."
        )


def online_plan(engine: Engine, plan: MigrationPlan) -> tuple[MigrationPlan, list[ShadowSpec]]:
    """The plan as an online migration runs it: each rebuild that can go online described as such,
    with the SQL of its phases; one that cannot says why and runs inside the final transaction."""
    shadows = fold_name(new_table_name(""))
    live_names = {  # an interrupted run's new table is resumed or dropped: the index names it holds are not taken
        fold_name(name)
        for name, table in engine.execute("SELECT name, tbl_name FROM main.sqlite_master").fetchall()
        if not fold_name(table).startswith(shadows)
    }
    operations, specs = [], []
    for operation in plan.operations:
        if operation.kind != "rebuild_table":
            operations.append(operation)
            continue
        try:
            spec = table_rebuild_spec(engine, operation, live_names)
        except NotOnline as reason:
            operations.append(replace(operation, description=_retitled(operation, f"offline: {reason}")))
            continue
        specs.append(spec)
        how = f"online, copied in chunks by {spec.key.describe()}"
        if spec.final_indexes:
            how += "; its indexes keep their names through a second copy"
        operations.append(
            replace(operation, description=_retitled(operation, how), statements=tuple(_phases(spec)), copy=None, stepped=True)
        )
    return replace(plan, operations=tuple(operations)), specs


def _retitled(operation: Operation, how: str) -> str:
    head = f"rebuild table {operation.table}"
    rest = operation.description[len(head) :] if operation.description.startswith(head) else f": {operation.description}"
    return f"{head} ({how}){rest}"


def _phases(spec: ShadowSpec) -> list[str]:
    """The SQL of an online rebuild, for the plan's script: the setup, one chunk of the copy and
    one catch-up pass (named parameters for the keys and log entries that bound them; both
    repeat until done), the swap (and the table's own triggers dropped and recreated)."""
    after = [f":after{number}" for number in range(spec.key.position)]
    upto = [f":upto{number}" for number in range(spec.key.position)]
    return [
        *spec.setup_statements(),
        spec.copy_sql(spec.range_condition(after, upto)),
        *spec.catch_up_statements(":last_entry", upto),
        *spec.swap_statements([]),
    ]
