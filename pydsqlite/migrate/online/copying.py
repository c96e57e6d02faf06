"""The run of an online migration: each table's pass (setup, copy in chunks, catch-up, swap
statements), the steps' transactions, and the freeing of tables in steps."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, Literal

from ...engines import Engine
from ...errors import MigrationError
from ...schema.objects import Index, fold_name
from ...sql.ddl import parse_index_terms, parse_index_where, tokenize
from ...sql.render import quote_identifier
from ..datacheck import any_failing
from ..execute import ProgressCallback, temporary_triggers
from ..introspect import has_object, introspect
from ..metadata import ONLINE_PREFIX, state_statements
from ..shadow import (
    CREATE_STATE_TABLE,
    STATE_TABLE,
    ShadowSpec,
    decode_cursor,
    encode_cursor,
    forgetter_names,
    has_rowid,
    index_pass_spec,
    is_recorder_of,
    literals,
    log_table_name,
    new_table_name,
    old_table_name,
)
from . import pacing
from .claim import CLAIM_TABLE, Claim
from .leftovers import leftovers, schema_outside_online
from .pacing import MIN_PAUSE, Overran, Pacer, Progress, Refused, Step, busy_handler_sleep

logger = logging.getLogger(__name__)

_LOCK_POLL = 0.001
"""Seconds between a step's tries for the write lock."""
SYNCHRONOUS_NORMAL = 1
"""``PRAGMA synchronous`` level NORMAL."""


class Violation(Exception):
    """Rows written during the copy break the new shape (found by a chunk's checks or constraints)."""

    def __init__(self, spec: ShadowSpec, detail: str) -> None:
        super().__init__(detail)
        self.spec = spec


class TableCopy:
    """One pass of one table through setup, copy, catch-up and swap."""

    def __init__(self, run: Run, spec: ShadowSpec) -> None:
        self.run = run
        self.spec = spec
        self.engine = run.engine
        self.cursor: tuple[Any, ...] | None | Literal[False] = False
        """False: nothing copied yet; a key: copied up to it; None: copied to the end."""
        self.copied = 0
        self.total = 0
        self.copy_pacer = Pacer()
        self.catch_up_pacer = Pacer()

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
            source_sql = engine.scalar("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (spec.source,))
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
        if not spec.keys_stable:
            return False
        if not has_object(engine, STATE_TABLE) or not has_object(engine, spec.new) or not has_object(engine, spec.log):
            return False
        row = engine.execute(
            f"SELECT pass, fingerprint, source_sql FROM {STATE_TABLE} WHERE table_name = ?", (spec.table,)
        ).fetchone()
        source_sql = engine.scalar("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (spec.source,))
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
            except Refused:
                strict = True
            except Overran:
                self.copy_pacer.overran()

    def _copy_step(self, *, strict: bool) -> None:
        """The chunk as ``INSERT OR IGNORE`` with no savepoint (no statement journal), checked to
        have taken every row of its range; ``strict``: as a plain ``INSERT`` in a savepoint, so
        that a refused row is settled or named (see ``_guarded``)."""
        spec, engine = self.spec, self.engine
        lower = None if self.cursor is False else literals(self.cursor)  # type: ignore[arg-type]
        size = self.copy_pacer.size
        with self.run.step(limited=self.copy_pacer.time_limited) as step:
            try:
                row = engine.execute(spec.bounds_sql(spec.range_condition(lower, None)), (size - 1,)).fetchone()
            except engine.OperationalError as error:
                if "decode" not in str(error):
                    raise
                raise MigrationError(
                    f"table {spec.source!r} cannot be rebuilt online: a key of it holds text that is not valid UTF-8, which the "
                    "copy cannot carry from chunk to chunk; rebuild it offline (online=False), which copies it in one statement"
                ) from None
            condition = spec.range_condition(lower, None if row is None else literals(row))
            if strict:
                copied = self._guarded(lambda: engine.execute(spec.copy_sql(condition)).rowcount)
            else:
                copied = int(engine.execute(spec.copy_sql(condition, or_ignore=True)).rowcount)
                expected = size if row is not None else int(engine.scalar(spec.count_sql(condition)))
                if copied != expected:
                    raise Refused
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
            except Overran:
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
                raise Violation(self.spec, str(error)) from error
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
                "SELECT name, sql FROM main.sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE ORDER BY rowid", (spec.source,)
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


class Run:
    """One online migration of one database by this process."""

    def __init__(self, engine: Engine, busy_timeout: float, progress: ProgressCallback | None, allow_destructive: bool) -> None:
        self.engine = engine
        self.busy_timeout = busy_timeout
        self.progress = Progress(progress)
        self.allow_destructive = allow_destructive
        self.claim = Claim()
        self.foreign_keys_on = False
        self.synchronous = SYNCHRONOUS_NORMAL
        """The connection's own ``PRAGMA synchronous`` level, for the swap."""
        self.free_pacer = Pacer()

    @contextmanager
    def step(self, *, limited: bool = True) -> Iterator[Step]:
        """One step's transaction (no savepoint: see ``Pacer``), then the pause after it. The write
        lock is taken as soon as it is free: polled every millisecond, where SQLite's busy
        handler would sleep up to 100 ms at a time while the application's short writes come
        and go (the pause is the writers' turn). ``limited``: stopped at ``pacing.STEP_LIMIT``."""
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
        step = Step()
        try:
            with engine.time_limit(step.started + pacing.STEP_LIMIT) if limited else nullcontext():
                self.claim.heartbeat(engine)
                yield step
        except BaseException as error:
            if engine.in_transaction:
                engine.execute("ROLLBACK")
            interrupted = isinstance(error, engine.OperationalError) and engine.is_interrupted(error)
            if interrupted or isinstance(error, Refused):  # taken again at once: the writers' turn first
                self.pause(time.perf_counter() - step.started)
            if interrupted:
                raise Overran from error
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
        pause = max(MIN_PAUSE, busy_handler_sleep(held))
        started = time.perf_counter()
        self.engine.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        time.sleep(max(0.0, pause - (time.perf_counter() - started)))

    def check(self, spec: ShadowSpec, condition: str) -> None:
        """The rebuild's row checks on the live rows matching ``condition``."""
        checks = spec.chunk_checks(condition, self.allow_destructive, self.foreign_keys_on)
        if checks and any_failing(self.engine, checks):
            raise Violation(spec, "rows written while it was copied fail the data checks")

    # --- leftovers ---

    def discard_leftovers(self, table: str) -> None:
        """Drop what an interrupted pass over ``table`` left (recorders, key log, state) and free its
        new table in steps."""
        engine = self.engine
        with engine.unit(immediate=True):
            self.claim.heartbeat(engine)
            for _, name, _ in leftovers(self.engine)["trigger"]:
                if is_recorder_of(name, table):
                    engine.execute(f"DROP TRIGGER {quote_identifier(name)}")
            if has_object(engine, log_table_name(table)):
                engine.execute(f"DROP TABLE {quote_identifier(log_table_name(table))}")
            if has_object(engine, STATE_TABLE):
                engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ? AND pass = 1", (table,))
        if has_object(engine, new_table_name(table)):
            self.free(new_table_name(table), table)

    def settle_before_planning(self) -> None:
        """Free old tables, and finish the index passes an interrupted run left pending."""
        for _, name, _ in leftovers(self.engine)["old"]:
            self.free(name, name[len(f"{ONLINE_PREFIX}_old_") :])
        if not has_object(self.engine, STATE_TABLE):
            return
        pending = self.engine.execute(f"SELECT table_name, final_indexes FROM {STATE_TABLE} WHERE pass = 2").fetchall()
        for table, final_indexes in pending:
            self.index_pass(table, json.loads(final_indexes))

    def discard_unplanned(self, specs: Sequence[ShadowSpec]) -> None:
        """Leftovers of copies the new plan does not continue."""
        planned = {fold_name(spec.table) for spec in specs}
        found = leftovers(self.engine)
        tables = {name[len(f"{ONLINE_PREFIX}_new_") :] for _, name, _ in found["new"]}
        tables |= {name[len(f"{ONLINE_PREFIX}_log_") :] for _, name, _ in found["log"]}
        for table in sorted(tables):
            if fold_name(table) not in planned:
                self.discard_leftovers(table)
        with self.engine.unit(immediate=True):
            for _, name, _ in leftovers(self.engine)["trigger"]:
                owner = next((spec for spec in specs if is_recorder_of(name, spec.table)), None)
                if owner is None:
                    self.engine.execute(f"DROP TRIGGER {quote_identifier(name)}")

    def free(self, name: str, table: str) -> None:
        """Empty table ``name`` in steps (each its own short transaction), then drop it."""
        engine = self.engine
        sql = engine.scalar("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE", (name,))
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
                        if fold_name(name) == fold_name(old_table_name(table)):  # in one transaction: they name it
                            for trigger in forgetter_names(table):
                                engine.execute(f"DROP TRIGGER IF EXISTS {quote_identifier(trigger)}")
                        engine.execute(f"DROP TABLE {quoted}")
            except Overran:
                self.free_pacer.overran()
                continue
            freed += deleted
            self.progress(table, freed, max(total, freed), "free")
            if deleted == 0:
                return
            self.free_pacer.done(deleted, step.held)

    # --- passes ---

    def copy(self, copies: Sequence[TableCopy]) -> None:
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
        with engine.read_snapshot():
            live = introspect(engine).table(table)
            planned_on = schema_outside_online(engine)
        if live is None:
            raise MigrationError(f"table {table!r} vanished during its online rebuild's index pass")
        unique_indexes = tuple(_parsed_index(table, sql) for sql in final_indexes)
        spec = index_pass_spec(engine, replace(live, indexes=unique_indexes), final_indexes)
        copy = TableCopy(self, spec)
        copy.setup()
        self.copy([copy])
        legacy = bool(engine.pragma("legacy_alter_table"))
        try:
            with engine.unit(immediate=True):
                self.claim.heartbeat(engine)
                changed = schema_outside_online(engine) != planned_on
                if not changed:
                    for statement in copy.swap_statements(recreate_temporary=True):
                        engine.execute(statement)
                    engine.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name = ?", (table,))
        finally:
            if legacy:
                engine.set_pragma("legacy_alter_table", "ON")
        if changed:  # the copy was made from the table as it was: a column added meanwhile would be lost
            self.discard_leftovers(table)
            raise MigrationError(
                f"the schema changed (by another connection) while the online migration gave the indexes of table {table!r} "
                "their names back; the table has its new shape, and its indexes keep temporary names until the next "
                "sync_models, which finishes this"
            )
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


def _parsed_index(table: str, sql: str) -> Index:
    words = [token.upper for token in tokenize(sql)[:3]]
    return Index(name="", table=table, columns=tuple(parse_index_terms(sql)), unique="UNIQUE" in words, where=parse_index_where(sql), sql=sql)
