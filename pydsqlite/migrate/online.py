"""Online migrations (``sync_models(..., online=True)``): tables that need a rebuild are copied
while the application keeps reading and writing them, holding SQLite's write lock only for
short steps.

The migration runs in phases, each step its own short transaction (see ``shadow`` for one
table's machinery):

1. Leftovers of an interrupted run are settled: old tables are freed, a pending index pass
   finished; an interrupted copy is resumed when the new plan copies the same way.
2. The plan is made and checked exactly as offline (same refusals), then every rebuild that
   can go online gets its new table, key log and recorder triggers.
3. Copy: chunks in key order, one statement in one short transaction each, sized to hold the
   write lock for ``STEP_BUDGET``, with a pause after each so that writers waiting in SQLite's
   busy handler (which sleeps in growing steps) get in; catch-up passes over the logged keys
   keep the backlog small.
4. One short final transaction runs the rest of the plan in order, with each online rebuild
   reduced to its last catch-up and the swap, and records the migration.
5. Afterwards the old tables' pages are freed in steps; where the new shape keeps index
   names the old table held, a second copy gives them back.

A claim row names the process running an online migration, so two migrators never run one at
once; it is heartbeaten by every step and taken over only once its process is gone (or silent
for ``STALE_AFTER`` seconds). A killed migrator leaves the original table intact and usable
(the recorder triggers only append to the key log); the next sync settles the rest.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..engines import Engine
from ..errors import MigrationError, UsageError
from ..schema.objects import Index, Schema, fold_name
from ..sql.ddl import parse_index_terms, parse_index_where, tokenize
from ..sql.render import quote_identifier
from .datacheck import any_failing, check_plan_against_data, refuse_unless_applicable
from .execute import ProgressCallback, migration_session, migration_settings, read_snapshot, temporary_triggers
from .introspect import has_object, introspect
from .metadata import ONLINE_PREFIX, ManagedObjects, state_statements
from .metadata import STATE_TABLE as FAST_PATH_TABLE
from .migration import MigrationPlan, Operation
from .shadow import (
    CREATE_STATE_TABLE,
    STATE_TABLE,
    NotOnline,
    ShadowSpec,
    decode_cursor,
    encode_cursor,
    has_rowid,
    index_pass_spec,
    literals,
    log_table_name,
    new_table_name,
    recorder_prefix,
    table_rebuild_spec,
)

logger = logging.getLogger(__name__)

STEP_BUDGET = 0.05
"""Seconds of write lock one step aims for, its commit included (chunks are resized after every
step). A writer that came in as the step began has slept 1+2+5+10+15+20 ms in its busy handler
by 53 ms and wakes next at 78 ms: a step ending by then lets every waiting writer in within
about 80 ms, with room for a step that takes longer than the last one predicted."""
STEP_LIMIT = 0.062
"""Seconds after which a step's statement is interrupted and the step rolled back, to be taken
again in half the size: the hard bound behind ``STEP_BUDGET`` (a commit takes another 10 to
15 ms), where the engine can interrupt a statement."""
MIN_PAUSE = 0.002
"""Shortest pause between two steps."""
_FEWEST_UNITS = 16
"""The smallest step (rows or log entries)."""
CACHE_KIB = 16 * 1024
"""Page cache (KiB) the migrating connection uses at least during an online migration: every
chunk updates the new table's indexes at scattered places, and a cache smaller than their
busy pages makes each chunk read them again. A fixed amount, whatever the table's size."""
BUSY_HANDLER_SLEEPS = (0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.025, 0.025, 0.025, 0.050, 0.050, 0.100)
"""How long SQLite's busy handler sleeps between its tries (sqlite3_busy_timeout), then 100 ms each."""
STALE_AFTER = 60.0
"""Seconds without a heartbeat after which another process's claim counts as abandoned."""
CLAIM_TABLE = f"{ONLINE_PREFIX}_claim"
CREATE_CLAIM_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {CLAIM_TABLE} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat REAL NOT NULL)"
)
_POLL = 0.2
_LOCK_POLL = 0.001
"""Seconds between a step's tries for the write lock."""
_NORMAL = 1
"""``PRAGMA synchronous`` level NORMAL."""

Planner = Callable[[Engine, Schema, bool, bool], tuple[MigrationPlan, ManagedObjects]]
"""Makes the checked plan (introspect → diff → plan → rehearse → check), given ``foreign_keys_on``."""


class _Violation(Exception):
    """Rows written during the copy break the new shape (found by a chunk's checks or constraints)."""

    def __init__(self, spec: ShadowSpec, detail: str) -> None:
        super().__init__(detail)
        self.spec = spec


# --- what goes online -------------------------------------------------------------------------


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


# --- claims -----------------------------------------------------------------------------------


@dataclass
class _Claim:
    """This process's claim on the database's online migration."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def holder(self, engine: Engine) -> tuple[str, str, int, float] | None:
        """Another process's claim that still counts, if any."""
        if not has_object(engine, CLAIM_TABLE):
            return None
        row = engine.execute(f"SELECT token, host, pid, heartbeat FROM {CLAIM_TABLE}").fetchone()
        if row is None or row[0] == self.token:
            return None
        token, host, pid, heartbeat = row
        if time.time() - heartbeat > STALE_AFTER or (host == self.host and not _process_alive(pid)):
            return None
        return token, host, pid, heartbeat

    def take(self, engine: Engine, busy_timeout: float) -> None:
        """Claim the database, waiting up to ``busy_timeout`` seconds for another migrator to finish."""
        deadline = time.monotonic() + busy_timeout
        while True:
            with engine.unit(immediate=True):
                holder = self.holder(engine)
                if holder is None:
                    engine.execute(CREATE_CLAIM_TABLE)
                    engine.execute(
                        f"INSERT OR REPLACE INTO {CLAIM_TABLE} (id, token, host, pid, heartbeat) VALUES (1, ?, ?, ?, ?)",
                        (self.token, self.host, self.pid, time.time()),
                    )
                    return
            _wait_or_fail(holder, deadline, busy_timeout)

    def heartbeat(self, engine: Engine) -> None:
        """Inside a step's transaction: refresh the claim, or stop if another process took it over."""
        cursor = engine.execute(f"UPDATE {CLAIM_TABLE} SET heartbeat = ? WHERE id = 1 AND token = ?", (time.time(), self.token))
        if cursor.rowcount != 1:
            raise MigrationError("another process took over this online migration (this one was paused too long); it stopped here")


def wait_for_online_migrations(engine: Engine, busy_timeout: float | None) -> None:
    """Before an offline migration: wait (up to ``busy_timeout`` seconds, default 60) until no other
    process runs an online migration of the database, as a migrator waits for the write lock."""
    claim = _Claim()
    timeout = 60.0 if busy_timeout is None else busy_timeout
    deadline = time.monotonic() + timeout
    while (holder := claim.holder(engine)) is not None:
        _wait_or_fail(holder, deadline, timeout)


def _wait_or_fail(holder: tuple[str, str, int, float], deadline: float, busy_timeout: float) -> None:
    if time.monotonic() >= deadline:
        _, host, pid, _ = holder
        raise MigrationError(
            f"another process (pid {pid} on {host}) is running an online migration of this database; waited "
            f"{busy_timeout:g} s for it to finish; nothing was changed"
        )
    time.sleep(_POLL)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


# --- pacing and progress ----------------------------------------------------------------------


class _Pacer:
    """Sizes a kind of step (rows or log entries per transaction) to hold the write lock for about
    ``STEP_BUDGET``. One statement per step: each further statement in a transaction copies every
    page it changes to a statement journal first, and a chunk changes the same index pages as
    the last one, so several small statements cost twice the lock time of one."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.costs: deque[float] = deque(maxlen=4)
        """Seconds of lock per unit in the last few full steps: sized by the slowest, as the time a
        unit takes varies from step to step (the disk, the cache, the writers)."""

    def done(self, units: int, held: float) -> None:
        """After a step that took ``units`` holding the lock for ``held`` seconds."""
        if units >= self.size // 2 and held > 0:
            self.costs.append(held / units)
            self.size = max(_FEWEST_UNITS, min(self.size * 2, round(STEP_BUDGET / max(self.costs))))

    def overran(self) -> None:
        """After a step interrupted at ``STEP_LIMIT``: its units take longer than that."""
        logger.debug("an online migration step of %d units ran past %.0f ms and was rolled back", self.size, STEP_LIMIT * 1000)
        self.costs.append(STEP_LIMIT / self.size)
        self.size = max(_FEWEST_UNITS, self.size // 2)

    @property
    def time_limited(self) -> bool:
        """Whether the next step may be stopped at ``STEP_LIMIT``: not once it is as small as steps
        get (rows that each take that long would otherwise be retried for ever)."""
        return self.size > _FEWEST_UNITS


@dataclass
class _Step:
    """When one step's transaction began, and (once committed) how long it held the write lock."""

    started: float = field(default_factory=time.perf_counter)
    held: float = 0.0


class _Overran(Exception):
    """A step ran into ``STEP_LIMIT`` and was rolled back."""


class _Refused(Exception):
    """A chunk copied without a statement journal left rows out (the new table refused them): the
    step is rolled back and the chunk copied again in a way that names the refusal."""


def _busy_handler_sleep(waited: float) -> float:
    """The sleep SQLite's busy handler is in after a writer has waited ``waited`` seconds: the
    longest a writer that came in during a step can still be asleep when it ends."""
    slept = 0.0
    for sleep in BUSY_HANDLER_SLEEPS:
        if waited < slept + sleep:
            return sleep
        slept += sleep
    return BUSY_HANDLER_SLEEPS[-1]


class _Progress:
    """The caller's ``progress(table, done, total)``; a callback that takes a ``phase`` keyword
    also learns the phase (``"copy"``, ``"catch-up"``, ``"swap"``, ``"free"``)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.takes_phase = callback is not None and _accepts_phase(callback)

    def __call__(self, table: str, done: int, total: int, phase: str) -> None:
        if self.callback is None:
            return
        if self.takes_phase:
            self.callback(table, done, total, phase=phase)  # type: ignore[call-arg]
        else:
            self.callback(table, done, total)


def _accepts_phase(callback: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "phase" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


# --- one table's pass -------------------------------------------------------------------------


class _TableCopy:
    """One pass of one table through setup, copy, catch-up and swap."""

    def __init__(self, run: _Run, spec: ShadowSpec) -> None:
        self.run = run
        self.spec = spec
        self.engine = run.engine
        self.cursor: tuple[Any, ...] | None | Literal[False] = False
        """False: nothing copied yet; a key: copied up to it; None: copied to the end."""
        self.copied = 0
        self.total = 0
        self.copy_pacer = _Pacer()
        self.catch_up_pacer = _Pacer()

    def setup(self) -> None:
        """Create the new table, its indexes, the key log and the recorders, or resume the copy an
        interrupted run left when it copies the same way."""
        spec, engine = self.spec, self.engine
        if self._resumable():
            row = engine.execute(f"SELECT cursor, copied FROM {STATE_TABLE} WHERE table_name = ?", (spec.table,)).fetchone()
            self.cursor, self.copied = decode_cursor(row[0]), int(row[1])
            logger.info("online rebuild of %s: resuming after %d copied rows", spec.table, self.copied)
        else:
            self.run.discard_leftovers(spec.table)
            source_sql = engine.scalar("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (spec.source,))
            with engine.unit(immediate=True):
                self.run.claim.heartbeat(engine)
                for statement in spec.setup_statements():
                    engine.execute(statement)
                engine.execute(CREATE_STATE_TABLE)
                engine.execute(
                    f"INSERT OR REPLACE INTO {STATE_TABLE} (table_name, pass, fingerprint, cursor, copied, source_sql, final_indexes) "
                    "VALUES (?, ?, ?, NULL, 0, ?, ?)",
                    (spec.table, spec.pass_number, spec.fingerprint, source_sql, _final_indexes_of(engine, spec)),
                )
        self.total = int(engine.scalar(f"SELECT COUNT(*) FROM {quote_identifier(spec.source)}"))

    def _resumable(self) -> bool:
        spec, engine = self.spec, self.engine
        if not has_object(engine, STATE_TABLE) or not has_object(engine, spec.new) or not has_object(engine, spec.log):
            return False
        row = engine.execute(
            f"SELECT pass, fingerprint, source_sql FROM {STATE_TABLE} WHERE table_name = ?", (spec.table,)
        ).fetchone()
        source_sql = engine.scalar("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (spec.source,))
        return (
            row is not None
            and row[0] == spec.pass_number
            and row[1] == spec.fingerprint
            and row[2] == source_sql
            and all(has_object(engine, name, "trigger") for name in spec.recorder_names)
        )

    @property
    def copy_done(self) -> bool:
        return self.cursor is None

    def copy_step(self) -> None:
        """Copy the next chunk; the one that reaches the last key moves the cursor to the end."""
        strict = False
        while True:
            try:
                self._copy_step(strict=strict)
                return
            except _Refused:
                strict = True
            except _Overran:
                self.copy_pacer.overran()

    def _copy_step(self, *, strict: bool) -> None:
        """The chunk as ``INSERT OR IGNORE`` with no savepoint (no statement journal), checked to
        have taken every row of its range; ``strict``: as a plain ``INSERT`` in a savepoint, so
        that a refused row is settled or named (see ``_guarded``)."""
        spec, engine = self.spec, self.engine
        lower = None if self.cursor is False else literals(self.cursor)  # type: ignore[arg-type]
        size = self.copy_pacer.size
        with self.run.step(limited=self.copy_pacer.time_limited) as step:
            row = engine.execute(spec.bounds_sql(spec.range_condition(lower, None)), (size - 1,)).fetchone()
            condition = spec.range_condition(lower, None if row is None else literals(row))
            if strict:
                copied = self._guarded(lambda: engine.execute(spec.copy_sql(condition)).rowcount)
            else:
                copied = int(engine.execute(spec.copy_sql(condition, or_ignore=True)).rowcount)
                expected = size if row is not None else int(engine.scalar(spec.count_sql(condition)))
                if copied != expected:
                    raise _Refused
            self.run.check(spec, condition)
            cursor = tuple(row) if row is not None else None
            engine.execute(
                f"UPDATE {STATE_TABLE} SET cursor = ?, copied = copied + ? WHERE table_name = ?",
                (encode_cursor(cursor), copied, spec.table),
            )
        self.cursor = cursor
        self.copied += copied
        self.run.progress(spec.table, self.copied, max(self.total, self.copied), "copy")
        self.copy_pacer.done(copied, step.held)

    def backlog(self, limit: int) -> int:
        """Logged keys waiting, counted up to ``limit``."""
        return int(self.engine.scalar(f"SELECT COUNT(*) FROM (SELECT 1 FROM {quote_identifier(self.spec.log)} LIMIT ?)", (limit,)))

    def catch_up_step(self) -> int:
        """Copy the rows of the oldest logged keys again; how many log entries it took."""
        while True:
            try:
                return self._catch_up_step()
            except _Overran:
                self.catch_up_pacer.overran()

    def _catch_up_step(self) -> int:
        spec, engine = self.spec, self.engine
        log = quote_identifier(spec.log)
        with self.run.step(limited=self.catch_up_pacer.time_limited) as step:
            last = engine.scalar(f"SELECT rowid FROM {log} ORDER BY rowid LIMIT 1 OFFSET ?", (self.catch_up_pacer.size - 1,))
            if last is None:
                last = engine.scalar(f"SELECT MAX(rowid) FROM {log}")
            taken = 0 if last is None else self._guarded(lambda: self.catch_up(int(last)))
        self.catch_up_pacer.done(taken, step.held)
        return taken

    def catch_up(self, last: int) -> int:
        """Inside a transaction: the catch-up of log entries up to ``last``, with the chunk checks."""
        spec, engine = self.spec, self.engine
        if self.cursor is False:  # nothing copied yet: every logged row is the copy's to take
            return int(engine.execute(f"DELETE FROM {quote_identifier(spec.log)} WHERE rowid <= ?", (last,)).rowcount)
        cursor = None if self.cursor is None else literals(self.cursor)
        remove_old, copy_again, forget = spec.catch_up_statements(str(last), cursor)
        engine.execute(remove_old)
        engine.execute(copy_again)
        self.run.check(spec, spec.logged_condition(str(last), cursor))
        return int(engine.execute(forget).rowcount)

    def _guarded(self, statement: Callable[[], int]) -> int:
        """Run a statement; if the new table refuses a row (UNIQUE, NOT NULL, CHECK), settle first: a
        row logged but not yet copied again may still hold a value that has since moved on.
        Inside a savepoint, every logged key is copied again and the statement retried; a
        second refusal is a real violation of the new shape."""
        engine = self.engine
        engine.execute("SAVEPOINT pydsqlite_online_step")
        try:
            result = statement()
        except engine.IntegrityError as error:
            engine.execute("ROLLBACK TO pydsqlite_online_step")
            last = engine.scalar(f"SELECT MAX(rowid) FROM {quote_identifier(self.spec.log)}")
            try:
                if last is not None and self.cursor is not False:
                    self.catch_up(int(last))
                result = statement()
            except engine.IntegrityError:
                raise _Violation(self.spec, str(error)) from error
        engine.execute("RELEASE pydsqlite_online_step")
        return result

    def swap_statements(self, recreate_temporary: bool, dropped: Collection[str] = ()) -> list[str]:
        """Inside the final transaction: the last catch-up, then the statements of the swap.
        ``recreate_temporary``: create this connection's temporary triggers on the table again
        (the migration session does that itself for pass 1). ``dropped``: the plan's own ``DROP
        TRIGGER`` statements (folded), which run before the swap: those triggers are not the swap's
        to move (the plan creates their new versions after it)."""
        spec, engine = self.spec, self.engine
        last = engine.scalar(f"SELECT MAX(rowid) FROM {quote_identifier(spec.log)}")
        if last is not None:
            self._guarded(lambda: self.catch_up(int(last)))
        recorders = {fold_name(name) for name in spec.recorder_names}
        triggers = [
            (name, sql)
            for name, sql in engine.execute(
                "SELECT name, sql FROM main.sqlite_master WHERE type = 'trigger' AND tbl_name = ? ORDER BY rowid", (spec.source,)
            ).fetchall()
            if fold_name(name) not in recorders and fold_name(f"DROP TRIGGER {quote_identifier(name)}") not in dropped
        ]
        temporary = temporary_triggers(engine, spec.source)  # this connection's own: they would follow the old table
        drops = [f"DROP TRIGGER temp.{quote_identifier(name)}" for name, _ in temporary]
        again = [sql for _, sql in temporary] if recreate_temporary else []
        return drops + spec.swap_statements(triggers) + again


def _final_indexes_of(engine: Engine, spec: ShadowSpec) -> str | None:
    if spec.final_indexes:
        return json.dumps(list(spec.final_indexes))
    if spec.pass_number == 2:  # keep what pass 1 recorded
        recorded = engine.scalar(f"SELECT final_indexes FROM {STATE_TABLE} WHERE table_name = ?", (spec.table,))
        return None if recorded is None else str(recorded)
    return None


# --- the whole run ----------------------------------------------------------------------------


class _Run:
    """One online migration of one database by this process."""

    def __init__(self, engine: Engine, busy_timeout: float, progress: ProgressCallback | None, allow_destructive: bool) -> None:
        self.engine = engine
        self.busy_timeout = busy_timeout
        self.progress = _Progress(progress)
        self.allow_destructive = allow_destructive
        self.claim = _Claim()
        self.foreign_keys_on = False
        self.synchronous = _NORMAL
        """The connection's own ``PRAGMA synchronous`` level, for the swap."""
        self.free_pacer = _Pacer()

    @contextmanager
    def step(self, *, limited: bool = True) -> Iterator[_Step]:
        """One step's transaction (no savepoint: see ``_Pacer``), then the pause after it. The write
        lock is taken as soon as it is free: polled every millisecond, where SQLite's busy
        handler would sleep up to 100 ms at a time while the application's short writes come
        and go (the pause is the writers' turn). ``limited``: stopped at ``STEP_LIMIT``."""
        engine = self.engine
        deadline = time.monotonic() + self.busy_timeout
        waiting = int(engine.pragma("busy_timeout"))
        engine.set_pragma("busy_timeout", 0)
        try:
            while True:
                try:
                    engine.execute(engine.begin_statement(immediate=True))
                    break
                except engine.Error as error:
                    if not engine.is_busy(error) or time.monotonic() >= deadline:
                        raise
                    time.sleep(_LOCK_POLL)
        finally:
            engine.set_pragma("busy_timeout", waiting)
        step = _Step()
        try:
            with engine.time_limit(step.started + STEP_LIMIT) if limited else nullcontext():
                self.claim.heartbeat(engine)
                yield step
        except BaseException as error:
            if engine.in_transaction:
                engine.execute("ROLLBACK")
            interrupted = isinstance(error, engine.OperationalError) and engine.is_interrupted(error)
            if interrupted or isinstance(error, _Refused):  # taken again at once: the writers' turn first
                self.pause(time.perf_counter() - step.started)
            if interrupted:
                raise _Overran from error
            raise
        try:
            engine.execute("COMMIT")
        except engine.Error:
            if engine.in_transaction:
                engine.execute("ROLLBACK")
            raise
        step.held = time.perf_counter() - step.started
        self.pause(step.held)

    def pause(self, held: float) -> None:
        """After a step that held the write lock for ``held`` seconds: pause for as long as SQLite's
        busy handler sleeps once it has waited that long, so that a writer that came in during
        the step finds the lock free when it next looks (a copier that retook the lock at once
        would starve it). The pause checkpoints the WAL first: that needs no write lock, and
        the run's own steps skip the automatic checkpoint, which would count as lock time."""
        pause = max(MIN_PAUSE, _busy_handler_sleep(held))
        started = time.perf_counter()
        self.engine.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        time.sleep(max(0.0, pause - (time.perf_counter() - started)))

    def check(self, spec: ShadowSpec, condition: str) -> None:
        """The rebuild's row checks on the live rows matching ``condition``."""
        checks = spec.chunk_checks(condition, self.allow_destructive, self.foreign_keys_on)
        if checks and any_failing(self.engine, checks):
            raise _Violation(spec, "rows written while it was copied fail the data checks")

    # --- leftovers ---

    def discard_leftovers(self, table: str) -> None:
        """Drop what an interrupted pass over ``table`` left (recorders, key log, state) and free its
        new table in steps."""
        engine = self.engine
        prefix = fold_name(recorder_prefix(table))
        with engine.unit(immediate=True):
            self.claim.heartbeat(engine)
            for _, name, _ in _leftovers(self.engine)["trigger"]:
                if fold_name(name).startswith(prefix):
                    engine.execute(f"DROP TRIGGER {quote_identifier(name)}")
            if has_object(engine, log_table_name(table)):
                engine.execute(f"DROP TABLE {quote_identifier(log_table_name(table))}")
            if has_object(engine, STATE_TABLE):
                engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ? AND pass = 1", (table,))
        if has_object(engine, new_table_name(table)):
            self.free(new_table_name(table), table)

    def settle_before_planning(self) -> None:
        """Free old tables, and finish the index passes an interrupted run left pending."""
        for _, name, _ in _leftovers(self.engine)["old"]:
            self.free(name, name[len(f"{ONLINE_PREFIX}_old_") :])
        if not has_object(self.engine, STATE_TABLE):
            return
        pending = self.engine.execute(f"SELECT table_name, final_indexes FROM {STATE_TABLE} WHERE pass = 2").fetchall()
        for table, final_indexes in pending:
            self.index_pass(table, json.loads(final_indexes))

    def discard_unplanned(self, specs: Sequence[ShadowSpec]) -> None:
        """Leftovers of copies the new plan does not continue."""
        planned = {fold_name(spec.table) for spec in specs}
        found = _leftovers(self.engine)
        tables = {name[len(f"{ONLINE_PREFIX}_new_") :] for _, name, _ in found["new"]}
        tables |= {name[len(f"{ONLINE_PREFIX}_log_") :] for _, name, _ in found["log"]}
        for table in sorted(tables):
            if fold_name(table) not in planned:
                self.discard_leftovers(table)
        with self.engine.unit(immediate=True):
            for _, name, _ in _leftovers(self.engine)["trigger"]:
                owner = next((spec for spec in specs if fold_name(name).startswith(fold_name(recorder_prefix(spec.table)))), None)
                if owner is None:
                    self.engine.execute(f"DROP TRIGGER {quote_identifier(name)}")

    def free(self, name: str, table: str) -> None:
        """Empty table ``name`` in steps (each its own short transaction), then drop it."""
        engine = self.engine
        sql = engine.scalar("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (name,))
        if sql is None:
            return
        key, key_row = _deletion_key(engine, name, sql)
        quoted = quote_identifier(name)
        total = int(engine.scalar(f"SELECT COUNT(*) FROM {quoted}"))
        freed = 0
        while True:
            try:
                with self.step(limited=self.free_pacer.time_limited) as step:
                    deleted = engine.execute(
                        f"DELETE FROM {quoted} WHERE {key_row} IN (SELECT {key} FROM {quoted} ORDER BY {key} LIMIT ?)",
                        (self.free_pacer.size,),
                    ).rowcount
                    if deleted == 0:
                        engine.execute(f"DROP TABLE {quoted}")
            except _Overran:
                self.free_pacer.overran()
                continue
            freed += deleted
            self.progress(table, freed, max(total, freed), "free")
            if deleted == 0:
                return
            self.free_pacer.done(deleted, step.held)

    # --- passes ---

    def copy(self, copies: Sequence[_TableCopy]) -> None:
        """Copy every table, with catch-up passes whenever a key log grows past a step's worth."""
        for copy in copies:
            while not copy.copy_done:
                copy.copy_step()
                for other in copies:
                    if other.cursor is not False and other.backlog(other.catch_up_pacer.size) >= other.catch_up_pacer.size:
                        other.catch_up_step()
        for copy in copies:
            waiting = copy.backlog(1 << 30)
            done = 0
            for _ in range(10_000):  # a writer faster than the catch-up is met by the swap's last pass
                if copy.backlog(copy.catch_up_pacer.size + 1) <= copy.catch_up_pacer.size:
                    break
                done += copy.catch_up_step()
                self.progress(copy.spec.table, min(done, waiting), max(waiting, done), "catch-up")

    def index_pass(self, table: str, final_indexes: list[str]) -> None:
        """Pass 2: copy ``table`` once more into a table that builds ``final_indexes`` under their own
        names, swap, free the old copy."""
        engine = self.engine
        live = introspect(engine).table(table)
        if live is None:
            raise MigrationError(f"table {table!r} vanished during its online rebuild's index pass")
        unique_indexes = tuple(_parsed_index(table, sql) for sql in final_indexes)
        spec = index_pass_spec(engine, replace(live, indexes=unique_indexes), final_indexes)
        copy = _TableCopy(self, spec)
        copy.setup()
        self.copy([copy])
        legacy = bool(engine.pragma("legacy_alter_table"))
        try:
            with engine.unit(immediate=True):
                self.claim.heartbeat(engine)
                for statement in copy.swap_statements(recreate_temporary=True):
                    engine.execute(statement)
                engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", (table,))
        finally:
            if legacy:
                engine.set_pragma("legacy_alter_table", "ON")
        self.progress(table, 1, 1, "swap")
        self.free(spec.old, table)

    def finish(self, fingerprint: str) -> None:
        """Record the fast path: the next sync to the same shape reads two rows and returns."""
        with self.engine.unit(immediate=True):
            for statement in state_statements(fingerprint):
                self.engine.execute(statement)

    def release(self) -> None:
        """Give up the claim; drop the bookkeeping tables when nothing is left pending."""
        engine = self.engine
        try:
            with engine.unit(immediate=True):
                if has_object(engine, CLAIM_TABLE):
                    engine.execute(f"DELETE FROM {CLAIM_TABLE} WHERE token = ?", (self.claim.token,))
                if has_object(engine, STATE_TABLE) and engine.scalar(f"SELECT COUNT(*) FROM {STATE_TABLE}") == 0:
                    engine.execute(f"DROP TABLE {STATE_TABLE}")
                if not has_object(engine, STATE_TABLE) and has_object(engine, CLAIM_TABLE):
                    if engine.scalar(f"SELECT COUNT(*) FROM {CLAIM_TABLE}") == 0:
                        engine.execute(f"DROP TABLE {CLAIM_TABLE}")
        except self.engine.Error as error:  # the claim goes stale on its own
            logger.warning("could not release the online migration's claim: %s", error)


def _deletion_key(engine: Engine, table: str, sql: str) -> tuple[str, str]:
    """The key a table is emptied by in steps (its rowid under a name no column hides, else its
    primary key), as a column list and as one SQL value."""
    columns = {fold_name(name) for (name,) in engine.execute("SELECT name FROM pragma_table_xinfo(?)", (table,)).fetchall()}
    if has_rowid(sql):
        alias = next((alias for alias in ("rowid", "oid", "_rowid_") if alias not in columns), None)
        if alias is not None:
            return alias, alias
    key = [
        quote_identifier(name)
        for (name,) in engine.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,)).fetchall()
    ]
    return ", ".join(key), key[0] if len(key) == 1 else f"({', '.join(key)})"


def _leftovers(engine: Engine) -> dict[str, list[tuple[str, str, str]]]:
    """(type, name, table) of the objects online rebuilds left: ``new`` and ``old`` tables, key
    ``log`` tables, ``trigger`` (the recorders) and ``index`` (temporarily named indexes)."""
    rows = engine.execute(
        "SELECT type, name, tbl_name FROM main.sqlite_master WHERE name LIKE ? ESCAPE '\\' ORDER BY rowid",
        (ONLINE_PREFIX.replace("_", "\\_") + "\\_%",),
    ).fetchall()
    found: dict[str, list[tuple[str, str, str]]] = {"new": [], "old": [], "log": [], "trigger": [], "index": []}
    for kind, name, table in rows:
        if kind in ("trigger", "index"):
            found[kind].append((kind, name, table))
            continue
        for label in ("new", "old", "log"):
            if kind == "table" and fold_name(name).startswith(fold_name(f"{ONLINE_PREFIX}_{label}_")):
                found[label].append((kind, name, table))
    return found


def settle_offline(engine: Engine) -> None:
    """Inside an offline migration's transaction (which holds the lock anyway): drop everything
    interrupted online migrations left, and give pending indexes their names back."""
    claim = _Claim()
    holder = claim.holder(engine)
    if holder is not None:
        raise MigrationError(
            f"another process (pid {holder[2]} on {holder[1]}) started an online migration of this database; "
            "nothing was changed: try again when it is done"
        )
    found = _leftovers(engine)
    for _, name, _ in found["trigger"]:
        engine.execute(f"DROP TRIGGER {quote_identifier(name)}")
    for label in ("log", "new", "old"):
        for _, name, _ in found[label]:
            engine.execute(f"DROP TABLE {quote_identifier(name)}")
    if has_object(engine, STATE_TABLE):
        for table, final_indexes in engine.execute(f"SELECT table_name, final_indexes FROM {STATE_TABLE} WHERE pass = 2").fetchall():
            for _, name, owner in found["index"]:
                if fold_name(owner) == fold_name(table):
                    engine.execute(f"DROP INDEX {quote_identifier(name)}")
            for statement in json.loads(final_indexes):
                engine.execute(statement)
        engine.execute(f"DROP TABLE {STATE_TABLE}")
    engine.execute(f"DROP TABLE IF EXISTS {CLAIM_TABLE}")


def _parsed_index(table: str, sql: str) -> Index:
    words = [token.upper for token in tokenize(sql)[:3]]
    return Index(name="", table=table, columns=tuple(parse_index_terms(sql)), unique="UNIQUE" in words, where=parse_index_where(sql), sql=sql)


# --- entry points -----------------------------------------------------------------------------


def migrate(
    engine: Engine,
    desired: Schema,
    fingerprint: str,
    planner: Planner,
    *,
    manage_all: bool,
    allow_destructive: bool,
    busy_timeout: float | None,
    progress: ProgressCallback | None,
) -> MigrationPlan:
    """``apply_schema(..., online=True)`` from the plan on; returns the plan as it was applied."""
    if engine.in_transaction:
        raise UsageError("online=True needs a connection without an open transaction: it commits many short ones of its own")
    with migration_settings(engine, busy_timeout) as foreign_keys, _step_settings(engine) as synchronous:
        run = _Run(engine, busy_timeout if busy_timeout is not None else int(engine.pragma("busy_timeout")) / 1000, progress, allow_destructive)
        run.foreign_keys_on = foreign_keys.enforced_before
        run.synchronous = synchronous
        run.claim.take(engine, run.busy_timeout)
        try:
            applied = _migrate(run, desired, fingerprint, planner, manage_all)
        finally:
            run.release()
        run.finish(fingerprint)  # after the release: dropping the bookkeeping changes the schema
        return applied


@contextmanager
def _step_settings(engine: Engine) -> Iterator[int]:
    """The migrating connection's settings for the steps, restored afterwards. ``PRAGMA synchronous
    = NORMAL`` (yields the connection's own level, which the swap uses): in WAL mode a step then
    commits without waiting for the disk, and a step lost to a power cut is only redone by the
    next sync; the swap keeps the connection's durability. No automatic checkpoint (the pauses
    between steps checkpoint), and a page cache of at least ``CACHE_KIB``."""
    level = int(engine.pragma("synchronous"))
    checkpoint_every = int(engine.pragma("wal_autocheckpoint"))
    cache_size = int(engine.pragma("cache_size"))
    cache_kib = -cache_size if cache_size < 0 else cache_size * int(engine.pragma("page_size")) // 1024
    if level > _NORMAL:
        engine.set_pragma("synchronous", _NORMAL)
    engine.set_pragma("wal_autocheckpoint", 0)
    if cache_kib < CACHE_KIB:
        engine.set_pragma("cache_size", -CACHE_KIB)
    try:
        yield level
    finally:
        engine.set_pragma("cache_size", cache_size)
        engine.set_pragma("wal_autocheckpoint", checkpoint_every)
        if level > _NORMAL:
            engine.set_pragma("synchronous", level)


def _migrate(run: _Run, desired: Schema, fingerprint: str, planner: Planner, manage_all: bool) -> MigrationPlan:
    engine = run.engine
    run.settle_before_planning()
    with read_snapshot(engine):
        plan, managed = planner(engine, desired, manage_all, run.foreign_keys_on)
        plan, specs = online_plan(engine, plan)
    refuse_unless_applicable(plan, run.allow_destructive)
    run.discard_unplanned(specs)
    copies = [_TableCopy(run, spec) for spec in specs]
    try:
        for copy in copies:
            copy.setup()
        schema_version = engine.pragma("schema_version")
        run.copy(copies)
        with _connection_durability(run):
            applied = _swap(run, plan, copies, desired, fingerprint, managed, schema_version)
    except _Violation as violation:
        _abandon(run, copies)
        _refuse_violation(run, violation)
        raise AssertionError("unreachable") from violation
    except MigrationError:  # refused (the schema changed meanwhile, a step failed): the copies are of no use
        _abandon(run, copies)
        raise
    except engine.Error as error:
        gone = [copy.spec.source for copy in copies if not has_object(engine, copy.spec.source)]
        if not gone:
            _abandon(run, copies, free=False)
            raise
        _abandon(run, copies)
        raise MigrationError(
            f"table {gone[0]!r} was dropped or renamed by another connection during its online rebuild, so the "
            f"rebuild stopped ({error}); its copy was freed and nothing else was changed: run sync_models again"
        ) from error
    except BaseException:  # interrupted: leave the freeing to the next sync
        _abandon(run, copies, free=False)
        raise
    for copy in copies:
        run.progress(copy.spec.table, 1, 1, "swap")
        run.free(copy.spec.old, copy.spec.table)
    for copy in copies:
        if copy.spec.final_indexes:
            run.index_pass(copy.spec.table, list(copy.spec.final_indexes))
    return applied


@contextmanager
def _connection_durability(run: _Run) -> Iterator[None]:
    """The connection's own ``PRAGMA synchronous`` level for the final transaction (the steps run
    with NORMAL, see ``_step_settings``)."""
    relaxed = run.synchronous > _NORMAL
    if relaxed:
        run.engine.set_pragma("synchronous", run.synchronous)
    try:
        yield
    finally:
        if relaxed:
            run.engine.set_pragma("synchronous", _NORMAL)


def _swap(
    run: _Run,
    plan: MigrationPlan,
    copies: Sequence[_TableCopy],
    desired: Schema,
    fingerprint: str,
    managed: ManagedObjects,
    schema_version: int,
) -> MigrationPlan:
    """The final transaction: last catch-ups, the rest of the plan in order with each online rebuild
    reduced to its swap, the migration's records."""
    engine = run.engine
    with migration_session(engine, run.busy_timeout) as session:
        run.claim.heartbeat(engine)
        if engine.pragma("schema_version") != schema_version:
            raise MigrationError(
                "the schema changed (by another connection) while the online migration copied rows; nothing was "
                "changed: run the migration again"
            )
        session.check_foreign_keys = run.foreign_keys_on
        session.foreign_key_tables = _foreign_key_tables(engine, plan, {copy.spec.table for copy in copies})
        dropped = {fold_name(sql) for operation in plan.operations if operation.kind == "drop_trigger" for sql in operation.statements}
        swaps = {fold_name(copy.spec.table): copy.swap_statements(recreate_temporary=False, dropped=dropped) for copy in copies}
        operations = tuple(
            replace(operation, statements=tuple(swaps[fold_name(operation.table)]))
            if operation.kind == "rebuild_table" and fold_name(operation.table) in swaps
            else operation
            for operation in plan.operations
        )
        session.apply(replace(plan, operations=operations), desired, fingerprint, managed, run.progress.callback)
        for copy in copies:
            if copy.spec.final_indexes:
                engine.execute(
                    f"UPDATE {STATE_TABLE} SET pass = 2, fingerprint = '', cursor = NULL, copied = 0 WHERE table_name = ?",
                    (copy.spec.table,),
                )
            else:
                engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", (copy.spec.table,))
        if copies:  # the old tables are freed next: the next sync must not take the fast path before that
            engine.execute(f"DELETE FROM {FAST_PATH_TABLE}")
    return plan


def _foreign_key_tables(engine: Engine, plan: MigrationPlan, online: set[str]) -> tuple[str, ...]:
    """The tables whose foreign keys the final transaction checks: those rebuilt inside it or
    dropped, and the tables referencing them (an online table's rows were checked chunk by chunk)."""
    touched = {
        operation.table
        for operation in plan.operations
        if operation.kind in ("rebuild_table", "drop_table") and operation.table not in online
    }
    children = {
        name
        for table in touched
        for (name,) in engine.execute(
            "SELECT DISTINCT m.name FROM main.sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
            "WHERE m.type = 'table' AND f.\"table\" = ? COLLATE NOCASE",
            (table,),
        ).fetchall()
    }
    return tuple(sorted(touched | children))


def _abandon(run: _Run, copies: Sequence[_TableCopy], *, free: bool = True) -> None:
    """After a failure before the swap committed: drop the recorders and key logs at once (the
    original tables are untouched), then free the new tables in steps (left to the next sync
    when the run was interrupted)."""
    engine = run.engine
    try:
        with engine.unit(immediate=True):
            for copy in copies:
                spec = copy.spec
                for name in spec.recorder_names:
                    engine.execute(f"DROP TRIGGER IF EXISTS {quote_identifier(name)}")
                engine.execute(f"DROP TABLE IF EXISTS {quote_identifier(spec.log)}")
                if has_object(engine, STATE_TABLE):  # a pending index pass stays pending
                    engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ? AND pass = 1", (spec.table,))
        if free:
            for copy in copies:
                run.free(copy.spec.new, copy.spec.table)
    except engine.Error as error:  # the next sync settles what is left
        logger.warning("could not clean up after the online migration failed: %s", error)


def _refuse_violation(run: _Run, violation: _Violation) -> None:
    """Raise what the offline migration raises for the data as it is now (the same refusals), or
    say what the new table refused when the rows have changed again since."""
    spec = violation.spec
    if spec.operation is not None:
        with read_snapshot(run.engine):
            checked = check_plan_against_data(run.engine, MigrationPlan(operations=(spec.operation,)), run.foreign_keys_on)
        refuse_unless_applicable(checked, run.allow_destructive)
    raise MigrationError(
        f"the online rebuild of table {spec.table!r} stopped: rows written while it copied do not fit the new "
        f"table ({violation}); nothing was changed"
    )

