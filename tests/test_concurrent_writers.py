"""Several connections writing one file at the same time, each with a busy timeout.

SQLite lets one connection write at a time; the others wait for the lock as long as their busy
timeout allows. A transaction that reads before it writes can only wait if it took the write
lock at ``BEGIN``: pydsqlite's own transactions do, so no call fails with "database is locked"
and no write is lost, in WAL and in rollback-journal mode, sync and async.
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
import threading
from pathlib import Path
from typing import Annotated

import pytest

from pydsqlite import LWW, Database, Field, PrimaryKey, SyncModel, UsageError, sync_models

from .helpers import require

THREADS = 4
ROUNDS = 40
TIMEOUT = 60.0
"""Seconds a connection waits for the lock: far more than any run needs, so only a bug fails."""


class Tally(SyncModel, table="concurrent_tallies"):
    id: int = Field(primary_key=True)
    n: int = 0
    by: str = ""


class Note(SyncModel, table="concurrent_notes"):
    id: Annotated[str, PrimaryKey()]
    text: Annotated[str, LWW()]


def _file(path: Path, journal_mode: str) -> Path:
    setup = sqlite3.connect(path)
    setup.execute(f"PRAGMA journal_mode = {journal_mode}")
    sync_models(setup, [Tally, Note])
    Database(setup).insert_many([Tally(id=shared) for shared in range(THREADS)])
    setup.close()
    return path


def _run_threads(work) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            work(thread)
        except BaseException as error:  # collected: the test asserts there are none
            errors.append(error)

    threads = [threading.Thread(target=run, args=(thread,)) for thread in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
@pytest.mark.parametrize("isolation_level", ["", None])
def test_threads_with_their_own_connections_write_without_errors_or_lost_writes(tmp_path, journal_mode, isolation_level):
    path = _file(tmp_path / "shared.db", journal_mode)

    def work(thread: int) -> None:
        db = Database(sqlite3.connect(path, timeout=TIMEOUT, isolation_level=isolation_level))
        base = 1000 * (thread + 1)
        for step in range(ROUNDS):
            db.insert(Tally(id=base + step, by=f"t{thread}"))
            db.upsert(Tally(id=base + step, n=step, by=f"t{thread}"))  # reads, then updates
            db.update(Tally, base + step, n=step + 1)
            db.upsert(Tally(id=base + ROUNDS + step, n=step, by="upserted"))  # reads, then inserts
            if step % 2:
                db.delete(Tally, base + ROUNDS + step)
            with db.transaction():  # read-modify-write of a row every thread changes
                shared = db.get(Tally, step % THREADS)
                db.update(Tally, step % THREADS, n=shared.n + 1)
        db.conn.close()

    assert _run_threads(work) == []
    check = Database(sqlite3.connect(path))
    for thread in range(THREADS):
        base = 1000 * (thread + 1)
        assert [(row.id, row.n) for row in check.select(Tally, "id >= ? AND id < ?", (base, base + ROUNDS), order_by="id")] == [
            (base + step, step + 1) for step in range(ROUNDS)
        ]
        kept = check.select(Tally, "id >= ? AND id < ?", (base + ROUNDS, base + 2 * ROUNDS), order_by="id")
        assert [row.id for row in kept] == [base + ROUNDS + step for step in range(0, ROUNDS, 2)]
    assert sum(row.n for row in check.select(Tally, "id < ?", (THREADS,))) == THREADS * ROUNDS  # no increment lost
    check.conn.close()


def test_merges_and_writes_from_several_connections_run_without_errors(tmp_path):
    path = _file(tmp_path / "replica.db", "wal")
    source = Database(sqlite3.connect(":memory:"))
    sync_models(source.conn, [Note])
    changesets = []
    for step in range(ROUNDS):
        source.upsert(Note(id=f"remote{step % 5}", text=f"version {step}"))
        changesets.append(source.changes_since(models=[Note]))

    def work(thread: int) -> None:
        db = Database(sqlite3.connect(path, timeout=TIMEOUT))
        for step, changeset in enumerate(changesets):
            if thread % 2:
                db.apply_changes(changeset, [Note])
            else:
                db.upsert(Note(id=f"local{thread}-{step % 5}", text=f"version {step}"))
        db.conn.close()

    assert _run_threads(work) == []
    check = Database(sqlite3.connect(path))
    texts = {note.id: note.text for note in check.select(Note)}
    assert texts == {
        **{f"remote{n}": f"version {ROUNDS - 5 + n}" for n in range(5)},
        **{f"local{thread}-{n}": f"version {ROUNDS - 5 + n}" for thread in range(0, THREADS, 2) for n in range(5)},
    }
    check.conn.close()


def test_async_databases_on_two_connections_write_without_errors_or_lost_writes(tmp_path):
    aiosqlite = require("aiosqlite")
    aio = importlib.import_module("pydsqlite.aio")
    path = _file(tmp_path / "async.db", "wal")

    async def main() -> list[object]:
        connections = [await aiosqlite.connect(path, timeout=TIMEOUT) for _ in range(2)]
        databases = [aio.AsyncDatabase(conn) for conn in connections]

        async def work(db, worker: int) -> None:
            for step in range(ROUNDS):
                await db.upsert(Tally(id=100 + worker * ROUNDS + step, n=step))
                await db.update(Tally, 100 + worker * ROUNDS + step, n=step + 1)
                async with db.transaction():
                    shared = await db.get(Tally, 0)
                    await db.update(Tally, 0, n=shared.n + 1)

        try:
            return await asyncio.gather(*(work(db, worker) for worker, db in enumerate(databases)), return_exceptions=True)
        finally:
            for conn in connections:
                await conn.close()

    assert asyncio.run(main()) == [None, None]
    check = Database(sqlite3.connect(path))
    assert [row.n for row in check.select(Tally, "id >= 100", order_by="id")] == [step + 1 for step in range(ROUNDS)] * 2
    assert check.get(Tally, 0).n == 2 * ROUNDS
    check.conn.close()


def test_a_call_from_another_thread_while_a_transaction_is_open_on_the_connection_is_refused(tmp_path):
    """One connection has one transaction: thread B's write would join thread A's block and be
    rolled back with it after B was told it succeeded. It is refused instead, and nothing of it is written."""
    path = _file(tmp_path / "one_connection.db", "wal")
    db = Database(sqlite3.connect(path, check_same_thread=False))
    inside, tried = threading.Event(), threading.Event()
    outcome: list[BaseException | Tally] = []

    def other_thread() -> None:
        inside.wait()
        try:
            outcome.append(db.insert(Tally(id=7, by="B")))
        except UsageError as error:
            outcome.append(error)
        tried.set()

    thread = threading.Thread(target=other_thread, name="worker B")
    thread.start()
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.insert(Tally(id=6, by="A"))
            inside.set()
            tried.wait()
            raise RuntimeError("A's block fails")
    thread.join()
    [refusal] = outcome
    assert isinstance(refusal, UsageError) and "'worker B'" in str(refusal) and "its own connection" in str(refusal)
    assert db.select(Tally, "id >= ?", (6,)) == []
    handed_over = threading.Thread(target=lambda: db.insert(Tally(id=8, by="B")))  # once A is done, B may write
    handed_over.start()
    handed_over.join()
    assert [row.id for row in Database(sqlite3.connect(path)).select(Tally, "id >= ?", (6,))] == [8]
    db.conn.close()


@pytest.mark.parametrize("reader", ["changes_since", "model_migration_plan"])
def test_a_read_snapshot_on_a_shared_connection_refuses_another_threads_write_instead_of_rolling_it_back(tmp_path, monkeypatch, reader):
    """A feed (or a preview) reads in a transaction of its own, rolled back at its end. A write from another
    thread sharing the connection joined it as a savepoint, returned, and was rolled back with it: lost.
    It is refused now (UsageError, nothing written), as during any transaction of another thread."""
    from pydsqlite import model_migration_plan
    from pydsqlite.migrate import sync as sync_module
    from pydsqlite.replica.replication import Replica

    path = _file(tmp_path / "shared.db", "wal")
    conn = sqlite3.connect(path, check_same_thread=False, timeout=TIMEOUT)
    db = Database(conn)
    inside, release = threading.Event(), threading.Event()

    def holding(original):
        def held(*args, **kwargs):
            inside.set()
            release.wait(TIMEOUT)
            return original(*args, **kwargs)
        return held

    if reader == "changes_since":
        monkeypatch.setattr(Replica, "changes_since", holding(Replica.changes_since))
        work = lambda: db.changes_since()  # noqa: E731
    else:
        monkeypatch.setattr(sync_module, "_plan", holding(sync_module._plan))
        work = lambda: model_migration_plan(conn, [Tally])  # noqa: E731 - not the synced set: planned in full
    thread = threading.Thread(target=work)
    thread.start()
    assert inside.wait(TIMEOUT)
    with pytest.raises(UsageError, match="has a transaction open on the same connection"):
        db.insert(Note(id="during", text="lost before"))
    release.set()
    thread.join()
    db.insert(Note(id="after", text="kept"))
    assert [row for (row,) in sqlite3.connect(path).execute("SELECT id FROM concurrent_notes")] == ["after"]


class IterSource(SyncModel, table="concurrent_iter_source"):
    id: Annotated[int, PrimaryKey()]


class IterOut(SyncModel, table="concurrent_iter_out"):
    id: Annotated[int, PrimaryKey()]


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_write_refused_at_once_during_an_iteration_says_why_not_that_a_timeout_ran_out(tmp_path, journal_mode):
    """While an iter_select is running, another connection writes (WAL) or holds the write lock (rollback
    journal): SQLite refuses the iterating connection's write at once, whatever its busy timeout. The
    error says so (it blamed the busy timeout) and nothing is written."""
    from pydsqlite.errors import SqliteOperationalError

    path = tmp_path / "iter.db"
    conn = sqlite3.connect(path, timeout=TIMEOUT)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    sync_models(conn, [IterSource, IterOut])
    db = Database(conn)
    db.insert_many([IterSource(id=n) for n in range(2000)])
    other = sqlite3.connect(path, timeout=TIMEOUT, isolation_level=None)
    rows = db.iter_select(IterSource)
    next(rows)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO concurrent_iter_out VALUES (99)")
    if journal_mode == "wal":
        other.execute("COMMIT")
    expected = "cannot turn that read into a write" if journal_mode == "wal" else "would deadlock with that writer"
    with pytest.raises(SqliteOperationalError, match=expected):
        db.insert(IterOut(id=1))
    if journal_mode != "wal":
        other.execute("ROLLBACK")
    assert sum(1 for _ in rows) == 1999
    db.insert(IterOut(id=1))
    assert [row.id for row in db.select(IterOut, order_by="id")] == ([1, 99] if journal_mode == "wal" else [1])


def test_a_feed_with_no_deletes_to_record_reads_while_another_connection_writes(tmp_path):
    """In WAL mode a feed reads a snapshot: it takes the write lock only when deletes made by SQL wait
    to be recorded. A polled feed neither waits for each writer nor competes with them for the lock."""
    path = _file(tmp_path / "feed.db", "wal")
    writer_conn = sqlite3.connect(path, timeout=TIMEOUT)
    Database(writer_conn).insert(Note(id="committed", text="a"))
    reader = Database(sqlite3.connect(path, timeout=0.2))
    writer_conn.execute("BEGIN IMMEDIATE")
    writer_conn.execute("INSERT INTO concurrent_notes (id, text) VALUES ('pending', 'b')")
    try:
        feed = reader.changes_since(models=[Note])  # the write lock is held: read anyway, without waiting
        assert [change.key for change in feed.changes] == [("committed",)]
    finally:
        writer_conn.rollback()
    writer_conn.execute("DELETE FROM concurrent_notes WHERE id = 'committed'")
    writer_conn.commit()
    (change,) = reader.changes_since(feed.cursor, models=[Note]).changes  # recorded first, then read
    assert change.key == ("committed",) and not change.alive
