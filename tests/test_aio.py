"""pydsqlite.aio over real aiosqlite connections (files and :memory:, every transaction mode).

The async API must give exactly what the sync one gives, keep the units of work of many
tasks apart, and undo exactly the work of a cancelled task. Deterministic cancellations
block the connection's thread at a chosen statement (a trace callback) while the task is
cancelled; random ones hit many concurrent tasks at random points.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import decimal
import importlib
import random
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from typing import Annotated, Optional

import pytest
from pydantic import Field as PydanticField
from pydantic import model_validator

from pydsqlite import (
    LWW,
    ConstraintError,
    Database,
    DestructiveChangeError,
    Field,
    PrimaryKey,
    SchemaMismatchError,
    SyncModel,
    Unique,
    UsageError,
    col,
    model_migration_plan,
    schema_from_sql,
    sync_models,
)
from pydsqlite.engines.aiosqlite import LATE_CANCELLATION, LATE_CANCELLATION_IN_TRANSACTION

from .helpers import require

aiosqlite = require("aiosqlite")
aio = importlib.import_module("pydsqlite.aio")


class Item(SyncModel, table="items"):
    id: int = Field(default=None, primary_key=True)
    name: Annotated[str, Unique()]
    size: int = 0
    note: Optional[str] = None


class ItemWithoutNote(SyncModel, table="items"):
    id: int = Field(default=None, primary_key=True)
    name: Annotated[str, Unique()]
    size: int = 0


class Account(SyncModel, table="accounts"):
    id: Annotated[int, PrimaryKey()]
    balance: int


class Entry(SyncModel, table="entries"):
    """Written in order inside each transfer: the ids show whether transactions interleaved."""

    id: int = Field(default=None, primary_key=True)
    task: int
    step: int


class Mark(SyncModel, table="marks"):
    id: int = Field(default=None, primary_key=True)
    task: int


class Note(SyncModel, table="notes"):
    id: Annotated[str, PrimaryKey()]
    text: Annotated[str, LWW()]


MODES = {"isolation_level=''": {}, "isolation_level=None": {"isolation_level": None}}
if sys.version_info >= (3, 12):
    MODES |= {"autocommit=True": {"autocommit": True}, "autocommit=False": {"autocommit": False}}
PLACES = ["file", ":memory:"]


def where(place: str, tmp_path) -> str:
    return str(tmp_path / "app.db") if place == "file" else ":memory:"


class Gate:
    """A trace callback that holds the connection's thread at the ``nth`` statement starting with
    ``prefix`` until ``release()``; ``reached`` is set when it got there."""

    def __init__(self, prefix: str, nth: int = 1) -> None:
        self.prefix = prefix
        self.left = nth
        self.reached = threading.Event()
        self.opened = threading.Event()

    def __call__(self, statement: str) -> None:
        if self.left and statement.startswith(self.prefix):
            self.left -= 1
            if not self.left:
                self.reached.set()
                self.opened.wait(30)

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 30), f"no statement started with {self.prefix!r}"

    def release(self) -> None:
        self.opened.set()


def run(scenario):
    """``asyncio.run`` with a guard: a deadlock fails the test instead of hanging the suite."""
    return asyncio.run(asyncio.wait_for(scenario, 120))


async def cancel_and_let_it_see(task: asyncio.Task) -> None:
    """Cancel ``task`` and give the loop a few turns, so the task has taken the cancellation in."""
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)


async def outcome(task: asyncio.Task) -> str:
    """"done", "cancelled" (its work undone) or "cancelled late" (its work had committed); a
    timeout is a cancellation (``asyncio.timeout`` raises TimeoutError from the CancelledError)."""
    try:
        await task
    except (asyncio.CancelledError, TimeoutError) as error:
        cancelled = error if isinstance(error, asyncio.CancelledError) else error.__cause__
        return "cancelled late" if LATE_CANCELLATION in getattr(cancelled, "__notes__", []) else "cancelled"
    return "done"


# --- the same results as Database --------------------------------------------------------------------


async def every_method(db) -> list:
    """The same calls on a Database (through ``call``) or an AsyncDatabase; what each returned or raised."""
    results: list = []

    async def record(call):
        try:
            value = call()
            if asyncio.iscoroutine(value):
                value = await value
            results.append(value)
        except Exception as error:  # noqa: BLE001 - the error is the result being compared
            results.append((type(error).__name__, str(error)))

    await record(lambda: db.insert(Item(name="a", size=1)))
    await record(lambda: db.insert_many([Item(name=f"n{i}", size=i) for i in range(5)]))
    await record(lambda: db.insert_many([{"name": "d1"}, {"name": "d2", "size": 7}], Item))
    await record(lambda: db.insert(Item(name="a")))
    await record(lambda: db.insert_many(Item(name="single")))
    await record(lambda: db.upsert(Item(id=1, name="a", size=10)))
    await record(lambda: db.upsert(Item(id=50, name="fifty")))
    await record(lambda: db.update(Item(id=2, name="n0", size=100, note="x")))
    await record(lambda: db.update(Item, 3, size=33))
    await record(lambda: db.update(Item, 999, size=1))
    await record(lambda: db.update(Item, 3, name="a"))
    await record(lambda: db.delete(Item(id=4, name="n2")))
    await record(lambda: db.delete(Item, 5))
    await record(lambda: db.delete(Item, 5))
    await record(lambda: db.touch(Item, 1))  # not synced: UsageError
    await record(lambda: db.get(Item, 1))
    await record(lambda: db.get(Item, 404))
    await record(lambda: db.select(Item))
    await record(lambda: db.select(Item, "size > ?", (2,), order_by="-size", limit=3, offset=1))
    await record(lambda: db.select(Item, col("name").startswith("n"), order_by=["size desc", "id"]))
    await record(lambda: db.select(Item, order_by="nope"))
    await record(lambda: db.select(Item, "missing = 1"))
    await record(lambda: db.select(Item, '"nmae" = ?', ("nmae",)))
    await record(lambda: db.count(Item, 'id IN (SELECT "idd" FROM items)'))
    await record(lambda: db.select(Item, '"name" = ?', ("a",)))
    await record(lambda: db.select(Item, "name = ? AND id = ?", ("a",)))
    await record(lambda: db.count(Item, "1; DROP TABLE items"))
    await record(lambda: db.select(Item, limit="1; DROP TABLE items"))
    await record(lambda: db.count(Item))
    await record(lambda: db.count(Item, col("size") >= 3))
    await record(lambda: db.get(Account, 1))
    for where in ("", '"nmae" = ?', '"nmae" != ?'):  # a misspelt name in double quotes is refused, not read as text
        try:
            stream = db.iter_select(Item, where, ("a",) if where else (), order_by="name")
            results.append([row async for row in stream] if hasattr(stream, "__aiter__") else list(stream))
        except Exception as error:  # noqa: BLE001 - compared with what the other API raised
            results.append((type(error).__name__, str(error)))
    return results


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("place", PLACES)
def test_every_method_returns_and_raises_what_database_does(place, mode, tmp_path):
    sync_conn = sqlite3.connect(tmp_path / "sync.db" if place == "file" else ":memory:", **MODES[mode])
    sync_models(sync_conn, [Item])
    expected = run(every_method(Database(sync_conn)))
    sync_rows = sync_conn.execute("SELECT * FROM items ORDER BY id").fetchall()

    async def scenario():
        async with aiosqlite.connect(where(place, tmp_path), **MODES[mode]) as conn:
            await aio.sync_models(conn, [Item])
            got = await every_method(aio.AsyncDatabase(conn))
            rows = await conn.execute_fetchall("SELECT * FROM items ORDER BY id")
            return got, [tuple(row) for row in rows], conn.in_transaction and mode != "autocommit=False"

    got, rows, left_open = run(scenario())
    assert got == expected
    assert rows == sync_rows
    assert not left_open
    kinds = {type(item).__name__ if not isinstance(item, tuple) else item[0] for item in expected}
    assert {"ConstraintError", "RowNotFoundError", "UsageError", "SchemaMismatchError", "NoneType", "Item", "list"} <= kinds


def test_a_connection_converting_the_declared_types_is_refused_before_its_first_job(tmp_path):
    """As on the sync face: an aiosqlite connection opened with detect_types while a converter is registered
    for a type pydsqlite declares would read other values than SQLite stores; the first call refuses it."""
    sqlite3.register_converter("INTEGER", lambda raw: int(raw) * 100)
    try:
        async def converting():
            async with aiosqlite.connect(tmp_path / "converted.db", detect_types=sqlite3.PARSE_DECLTYPES) as conn:
                for call in (lambda: aio.sync_models(conn, [Item]), lambda: aio.AsyncDatabase(conn).count(Item)):
                    with pytest.raises(UsageError, match="converters registered for INTEGER"):
                        await call()
                return await conn.execute_fetchall("SELECT name FROM sqlite_master")

        assert [tuple(row) for row in run(converting())] == []
    finally:
        del sqlite3.converters["INTEGER"]


def test_transactions_commit_roll_back_and_nest_as_savepoints(tmp_path):
    path = tmp_path / "app.db"

    async def scenario():
        async with aiosqlite.connect(path) as conn:
            await aio.sync_models(conn, [Item])
            db = aio.AsyncDatabase(conn)
            async with db.transaction() as tx:
                assert tx is db
                await db.insert(Item(name="kept"))
                with contextlib.suppress(ValueError):
                    async with db.transaction():
                        await db.insert(Item(name="inner, rolled back"))
                        raise ValueError
                await db.insert(Item(name="kept too"))
            with pytest.raises(ConstraintError):
                async with db.transaction():
                    await db.insert(Item(name="gone"))
                    await db.insert(Item(name="kept"))
            assert not conn.in_transaction

    run(scenario())
    with sqlite3.connect(path) as reader:
        assert [name for (name,) in reader.execute("SELECT name FROM items ORDER BY id")] == ["kept", "kept too"]


def test_a_task_whose_async_generator_held_a_block_is_outside_it_once_the_generator_is_closed_elsewhere(tmp_path):
    """An async generator streaming rows inside db.transaction(), left with break (no aclosing):
    asyncio closes it later from another context, which rolls its block back. The consumer task
    then writes as a task outside any block (it was refused for good, as if started inside one)."""
    path = tmp_path / "app.db"

    async def upper_cased(db):
        async with db.transaction():
            async for item in db.iter_select(Item, order_by="id"):
                await db.update(Item, item.id, name=item.name.upper())
                yield item

    async def scenario():
        async with aiosqlite.connect(path) as conn:
            await aio.sync_models(conn, [Item])
            db = aio.AsyncDatabase(conn)
            await db.insert_many([Item(name="a"), Item(name="b")])
            stream = upper_cased(db)
            async for _ in stream:
                break
            del stream
            deadline = time.monotonic() + 10  # the event loop's finalizer closes the generator in a task of its own
            for _ in range(20):
                await asyncio.sleep(0.01)
            while conn.in_transaction and time.monotonic() < deadline:  # later on a loaded machine
                await asyncio.sleep(0.01)
            assert not conn.in_transaction
            assert await db.count(Item) == 2
            await db.insert(Item(name="later"))

            async def child() -> int:
                return await db.count(Item)

            assert await asyncio.create_task(child()) == 3

    run(scenario())
    with sqlite3.connect(path) as reader:
        assert [name for (name,) in reader.execute("SELECT name FROM items ORDER BY id")] == ["a", "b", "later"]


# --- the pipeline's entry points -------------------------------------------------------------------


def test_pipeline_entry_points_give_what_the_sync_ones_give(tmp_path):
    sync_conn = sqlite3.connect(tmp_path / "sync.db")
    sync_models(sync_conn, [Item])
    Database(sync_conn).insert(Item(name="a", note="kept?"))
    expected_plan = str(model_migration_plan(sync_conn, [ItemWithoutNote]))
    desired = schema_from_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0, note TEXT, extra TEXT);")

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            created = await aio.sync_models(conn, [Item])
            assert [operation.kind for operation in created.operations] == ["create_table"]
            await db.insert(Item(name="a", note="kept?"))
            plan = await aio.model_migration_plan(db, [ItemWithoutNote])
            assert str(plan) == expected_plan
            with pytest.raises(DestructiveChangeError):
                await aio.sync_models(conn, [ItemWithoutNote])
            assert (await db.get(Item, 1)).note == "kept?"
            with contextlib.suppress(ZeroDivisionError):
                async with db.transaction():  # inside a transaction the migration is part of it
                    await aio.sync_models(conn, [Item, Mark])
                    await db.insert(Mark(task=1))
                    raise ZeroDivisionError
            with pytest.raises(SchemaMismatchError):
                await db.count(Mark)
            assert str(await aio.schema_migration_plan(conn, desired)).startswith("Migration plan")
            applied = await aio.sync_schema(conn, desired, allow_destructive=True)
            assert "extra" in str(applied)
            history = await aio.migration_history(db)
            assert [entry.description.splitlines()[0] for entry in history] == [
                "Migration plan (1 operation):",
                str(applied).splitlines()[0],
            ]
            with pytest.raises(UsageError, match="aiosqlite connection or an AsyncDatabase"):
                await aio.sync_models(sync_conn, [Item])

    run(scenario())


def test_replica_functions_converge_between_async_and_sync_replicas(tmp_path):
    sync_conn = sqlite3.connect(tmp_path / "sync.db")
    sync_models(sync_conn, [Note])
    sync_db = Database(sync_conn)
    sync_db.insert(Note(id="s", text="from sync"))

    async def scenario():
        async with aiosqlite.connect(tmp_path / "one.db") as one, aiosqlite.connect(tmp_path / "two.db") as two:
            for conn in (one, two):
                await aio.sync_models(conn, [Note])
            first, second = aio.AsyncDatabase(one), aio.AsyncDatabase(two)
            await first.insert(Note(id="a", text="one"))
            await second.insert(Note(id="b", text="two"))
            await second.update(Note, "b", text="two, edited")
            assert await second.apply_changes(await first.changes_since(models=[Note]), [Note]) == 1
            assert await first.apply_changes(await second.changes_since(None, [Note]), [Note]) == 1
            cursor = (await first.changes_since(models=[Note])).cursor
            assert await first.touch(Note, "a") == Note(id="a", text="one")  # stamped anew: goes out again
            assert [change.key for change in (await first.changes_since(cursor, [Note])).changes] == [("a",)]
            assert await first.apply_changes(sync_db.changes_since(models=[Note]), [Note]) == 1
            sync_db.apply_changes(await first.changes_since(models=[Note]), [Note])
            assert (await first.clock()).node_id != (await second.clock()).node_id
            return await first.select(Note, order_by="id"), await second.select(Note, order_by="id")

    first_rows, second_rows = run(scenario())
    assert [note.text for note in first_rows] == ["one", "two, edited", "from sync"]
    assert second_rows == first_rows[:2]
    assert sync_db.select(Note, order_by="id") == first_rows


@pytest.mark.parametrize("model", [Note, Mark])
def test_writes_work_after_the_app_set_a_pragma_through_the_aiosqlite_connection(tmp_path, model):
    """``await conn.execute("PRAGMA journal_mode = wal")``: aiosqlite's thread keeps that cursor, and
    so its statement open, until a job ends well, and SQLite refuses to commit meanwhile. A call
    checks that before it starts (nothing of it has run: a generator of rows is read once) and
    frees the cursor first: every write lands once, the migration included."""

    def rows(first: int):
        for number in range(first, first + 3):
            yield Note(id=f"n{number}", text="x") if model is Note else Mark(id=number, task=number)

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            await conn.execute("PRAGMA journal_mode = wal")
            await aio.sync_models(conn, [model])
            db = aio.AsyncDatabase(conn)
            await conn.execute("PRAGMA journal_mode = wal")
            await db.insert_many(rows(1))
            await conn.execute("PRAGMA journal_mode = wal")
            async with db.transaction():
                await db.insert_many(rows(4))
            await conn.execute("PRAGMA journal_mode = wal")
            await db.insert(next(rows(7)))
            return await db.count(model)

    assert run(scenario()) == 7


def test_a_write_joins_the_apps_open_transaction_after_its_insert_returning(tmp_path):
    """In sqlite3's default mode the app's ``INSERT ... RETURNING`` opens a transaction and its cursor
    stays alive on aiosqlite's thread: the write waits for it to be freed, then joins that
    transaction, and the app's commit keeps both rows."""

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            await aio.sync_models(conn, [Mark])
            await conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT)")
            await conn.commit()
            db = aio.AsyncDatabase(conn)
            await conn.execute("INSERT INTO audit (what) VALUES ('x') RETURNING id")
            await db.insert(Mark(id=1, task=1))
            await conn.commit()
        with sqlite3.connect(tmp_path / "app.db") as reader:
            return reader.execute("SELECT count(*) FROM audit").fetchone()[0], reader.execute("SELECT count(*) FROM marks").fetchone()[0]

    assert run(scenario()) == (1, 1)


# --- cancellation, one task at a time ---------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("place", PLACES)
def test_a_call_cancelled_before_its_commit_is_rolled_back_and_the_database_stays_usable(place, mode, tmp_path):
    async def scenario():
        async with aiosqlite.connect(where(place, tmp_path), **MODES[mode]) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            for call in (lambda: db.insert(Item(name="x")), lambda: db.insert_many([Item(name="y"), Item(name="z")])):
                gate = Gate("INSERT INTO `items`")
                await conn.set_trace_callback(gate)
                task = asyncio.create_task(call())
                await gate.wait_reached()
                await cancel_and_let_it_see(task)
                gate.release()
                assert await outcome(task) == "cancelled"
                assert await db.count(Item) == 0
            await conn.set_trace_callback(None)
            assert (await db.insert(Item(name="after"))).id == 1
            assert [item.name for item in await db.select(Item)] == ["after"]

    run(scenario())


def in_its_own_transaction(db, form: str):
    """One insert as a call of its own, or inside ``db.transaction()``."""
    if form == "call":
        return db.insert(Item(name="x"))

    async def transaction():
        async with db.transaction():
            await db.insert(Item(name="x"))

    return transaction()


def committed_names(path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as reader:
        return [name for (name,) in reader.execute("SELECT name FROM items ORDER BY id")]


@pytest.mark.parametrize("form", ["call", "transaction"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_cancellation_that_arrives_during_the_commit_keeps_the_work_and_says_so(mode, form, tmp_path):
    if mode == "autocommit=False" and form == "call":
        pytest.skip("on a PEP 249 connection a call outside transaction() leaves its work pending, as Database does")

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db", **MODES[mode]) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            gate = Gate("COMMIT")
            await conn.set_trace_callback(gate)
            task = asyncio.create_task(in_its_own_transaction(db, form))
            await gate.wait_reached()
            await cancel_and_let_it_see(task)
            gate.release()
            assert await outcome(task) == "cancelled late"
            await conn.set_trace_callback(None)

    run(scenario())
    assert committed_names(tmp_path / "app.db") == ["x"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit=False (PEP 249) needs Python 3.12")
def test_on_a_pep249_connection_a_cancellation_after_the_release_still_stops_the_commit(tmp_path):
    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db", autocommit=False) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            gate = Gate("RELEASE pydsqlite_sp0")  # the transaction's own savepoint; conn.commit() comes next
            await conn.set_trace_callback(gate)
            task = asyncio.create_task(in_its_own_transaction(db, "transaction"))
            await gate.wait_reached()
            await cancel_and_let_it_see(task)
            gate.release()
            assert await outcome(task) == "cancelled"
            await conn.set_trace_callback(None)
            assert await db.select(Item) == []

    run(scenario())
    assert committed_names(tmp_path / "app.db") == []


def test_on_a_pep249_connection_a_block_cancelled_before_its_commit_keeps_what_was_pending_before_it(tmp_path):
    """The writes pending before the block (another task's calls, which returned) stay pending: the
    cancelled block rolls back only itself, and the next commit writes them."""
    if sys.version_info < (3, 12):
        pytest.skip("autocommit= needs Python 3.12")

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db", autocommit=False) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            await db.insert(Item(name="pending before the block"))
            gate = Gate("RELEASE pydsqlite_sp0")
            await conn.set_trace_callback(gate)
            task = asyncio.create_task(in_its_own_transaction(db, "transaction"))
            await gate.wait_reached()
            await cancel_and_let_it_see(task)
            gate.release()
            assert await outcome(task) == "cancelled"
            await conn.set_trace_callback(None)
            assert [item.name for item in await db.select(Item)] == ["pending before the block"]
            await conn.commit()

    run(scenario())
    assert committed_names(tmp_path / "app.db") == ["pending before the block"]


def test_a_cancelled_call_inside_a_transaction_undoes_its_own_savepoint(tmp_path):
    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            gate = Gate("INSERT INTO `items`", nth=2)

            async def writer():
                async with db.transaction():
                    await db.insert(Item(name="first"))
                    try:
                        await db.insert(Item(name="second"))
                    except asyncio.CancelledError:  # a block that carries on after a cancellation
                        asyncio.current_task().uncancel()
                    await db.insert(Item(name="third"))

            await conn.set_trace_callback(gate)
            task = asyncio.create_task(writer())
            await gate.wait_reached()
            await cancel_and_let_it_see(task)
            gate.release()
            assert await outcome(task) == "done"
            return [item.name for item in await db.select(Item)]

    assert run(scenario()) == ["first", "third"]


@pytest.mark.parametrize("place", PLACES)
def test_a_transaction_cancelled_while_its_commit_waits_is_rolled_back(place, tmp_path):
    async def scenario():
        async with aiosqlite.connect(where(place, tmp_path)) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            inside, may_finish = asyncio.Event(), asyncio.Event()

            async def writer():
                async with db.transaction():
                    await db.insert(Item(name="a"))
                    await db.insert(Item(name="b"))
                    inside.set()
                    await may_finish.wait()

            async def hold():
                await conn.execute("SELECT 'hold'")  # straight to aiosqlite: a job of someone else's on the thread

            task = asyncio.create_task(writer())
            await inside.wait()
            gate = Gate("SELECT 'hold'")
            await conn.set_trace_callback(gate)
            held = asyncio.create_task(hold())
            await gate.wait_reached()
            may_finish.set()
            for _ in range(5):
                await asyncio.sleep(0)  # the block has ended; its commit is queued behind the held job
            await cancel_and_let_it_see(task)
            gate.release()
            await held
            assert await outcome(task) == "cancelled"
            return await db.select(Item), conn.in_transaction

    rows, left_open = run(scenario())
    assert rows == [] and not left_open


@pytest.mark.parametrize("place", PLACES)
def test_a_task_cancelled_inside_its_transaction_rolls_back_only_that_transaction(place, tmp_path):
    async def scenario():
        async with aiosqlite.connect(where(place, tmp_path)) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item, Mark])
            inside = asyncio.Event()

            async def first():
                async with db.transaction():
                    await db.insert(Item(name="first"))
                    await db.insert_many([Mark(task=1), Mark(task=1)])
                    inside.set()
                    await asyncio.Event().wait()  # parked inside the transaction until cancelled

            async def second():
                async with db.transaction():
                    await db.insert(Item(name="second"))
                    await db.insert(Mark(task=2))

            one = asyncio.create_task(first())
            await inside.wait()
            two = asyncio.create_task(second())
            reader = asyncio.create_task(db.count(Item, col("name") == "first"))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not two.done() and not reader.done()  # both wait for the first transaction
            await cancel_and_let_it_see(one)
            assert await outcome(one) == "cancelled"
            assert await reader == 0  # it ran after the rollback, not inside the transaction
            await two
            return [item.name for item in await db.select(Item)], [mark.task for mark in await db.select(Mark)]

    assert run(scenario()) == (["second"], [2])


def test_tasks_started_inside_a_transaction_are_part_of_it(tmp_path):
    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item, Mark])
            began = asyncio.Event()

            async def from_outside():  # started before the transaction, through another AsyncDatabase
                await began.wait()
                await aio.AsyncDatabase(conn).insert(Item(name="outside"))

            outside = asyncio.create_task(from_outside())
            with contextlib.suppress(ZeroDivisionError):
                async with db.transaction():
                    began.set()
                    await asyncio.gather(*(db.insert(Mark(task=n)) for n in range(10)))
                    async with asyncio.TaskGroup() as group:
                        for n in range(3):
                            group.create_task(nested(db, n))
                    assert await db.count(Mark) == 13 and not outside.done()
                    raise ZeroDivisionError
            await outside
            return await db.count(Mark), [item.name for item in await db.select(Item)]

    async def nested(db, n):
        async with db.transaction():
            await db.insert(Mark(task=100 + n))
            await asyncio.sleep(0)

    assert run(scenario()) == (0, ["outside"])


def test_a_call_inside_a_transaction_cancelled_after_its_savepoint_was_released_says_its_work_stands(tmp_path):
    """A task started in the block, cancelled on its own while its call's savepoint is being
    released: the call's work is part of the transaction (which commits here), and the
    CancelledError carries the note that says so."""

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            gate = Gate("RELEASE pydsqlite_sp1")
            async with db.transaction():
                await conn.set_trace_callback(gate)
                inner = asyncio.create_task(db.insert(Item(name="inside")))
                await gate.wait_reached()
                await cancel_and_let_it_see(inner)
                gate.release()
                with pytest.raises(asyncio.CancelledError) as cancelled:
                    await inner
                await conn.set_trace_callback(None)
            return cancelled.value.__notes__

    assert run(scenario()) == [LATE_CANCELLATION_IN_TRANSACTION]
    assert committed_names(tmp_path / "app.db") == ["inside"]


def test_calls_of_tasks_that_outlive_their_transaction_are_refused_not_run_on_their_own(tmp_path):
    """``asyncio.gather`` raises the first failure at once and leaves the other calls waiting: the block
    rolls back, and those calls, belonging to it, must not then run as units of their own (they
    would write what the block rolled back). Each raises UsageError and writes nothing."""

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            await db.insert(Item(id=1, name="taken"))
            tasks: list[asyncio.Task] = []
            with pytest.raises(ConstraintError):
                async with db.transaction():
                    tasks.extend(asyncio.create_task(db.insert(Item(id=n, name=name))) for n, name in [(2, "a"), (1, "clash"), (3, "b"), (4, "c")])
                    await asyncio.gather(*tasks)
            await asyncio.wait(tasks)
            late = [task.exception() for task in tasks if isinstance(task.exception(), UsageError)]
            assert late and all("that transaction was rolled back before the call ran" in str(error) for error in late)
            await asyncio.sleep(0.05)
            return [item.name for item in await db.select(Item)]

    assert run(scenario()) == ["taken"]


@pytest.mark.parametrize("outcome", ["rolled back", "committed"])
def test_a_task_left_inside_a_block_of_its_own_after_its_transaction_ended_holds_up_no_other_task(tmp_path, outcome):
    """A task started inside a transaction is still inside a nested block of its own when the
    transaction ends (a gather sibling when another failed, or a task nobody awaited): that block's
    savepoint went with the transaction. The task's calls are refused, saying why, and write nothing;
    every other task's writes and blocks go on as usual meanwhile (they were refused until the
    orphaned block ended)."""

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            inside, release = asyncio.Event(), asyncio.Event()
            refused: list[BaseException] = []

            async def nested_block_outliving_its_transaction():
                with contextlib.suppress(UsageError):
                    async with db.transaction():
                        await db.insert(Item(name="nested"))
                        inside.set()
                        await release.wait()
                        try:
                            await db.insert(Item(name="after the end"))
                        except UsageError as error:
                            refused.append(error)
                            raise

            async def request():
                async with db.transaction():
                    await db.insert(Item(name="outer"))
                    task = asyncio.create_task(nested_block_outliving_its_transaction())
                    await inside.wait()
                    if outcome == "rolled back":
                        raise RuntimeError("the request failed")
                return task

            if outcome == "rolled back":
                with pytest.raises(RuntimeError):
                    await request()
                orphan = next(task for task in asyncio.all_tasks() if task.get_coro().__name__ == "nested_block_outliving_its_transaction")
            else:
                orphan = await request()
            await db.insert(Item(name="other task"))
            async with db.transaction():
                await db.insert(Item(name="other block"))
            release.set()
            await orphan
            await db.insert(Item(name="after"))
            assert len(refused) == 1 and f"that transaction {outcome if outcome == 'committed' else 'was rolled back'} while the task" in str(refused[0])
            return sorted(item.name for item in await db.select(Item))

    kept = ["after", "other block", "other task"]
    assert run(scenario()) == (kept if outcome == "rolled back" else sorted([*kept, "nested", "outer"]))


CURRENT_USER: contextvars.ContextVar[str] = contextvars.ContextVar("current_user", default="anonymous")


class Owned(SyncModel, table="owned"):
    id: int = Field(default=None, primary_key=True)
    owner: str = PydanticField(default_factory=CURRENT_USER.get)
    share: decimal.Decimal = decimal.Decimal(0)

    @model_validator(mode="after")
    def thirds(self) -> Owned:
        self.share = decimal.Decimal(1) / decimal.Decimal(3)
        return self


def test_validation_sees_the_calling_tasks_context_variables_as_the_sync_api_does(tmp_path):
    """Validators and default factories run on the connection's thread, but in the calling task's
    context: a request's current user, a decimal context set for the task."""

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Owned])
            CURRENT_USER.set("bob")
            with decimal.localcontext() as context:
                context.prec = 40
                await db.insert_many([{}], model=Owned)
                stored = await db.get(Owned, 1)
            return stored.owner, stored.share

    owner, share = run(scenario())
    assert owner == "bob" and str(share) == "0." + "3" * 40


class Options(SyncModel, table="options"):
    id: Annotated[int, PrimaryKey()]
    key: str = ""
    function: str = ""
    settle: str = ""
    fresh: str = ""
    outermost: str = ""
    model: str = ""


@pytest.mark.parametrize("field", ["key", "function", "settle", "fresh", "outermost", "model"])
def test_async_update_sets_fields_named_like_its_own_parameters(tmp_path, field):
    async def scenario():
        async with aio.AsyncDatabase(tmp_path / "app.db") as db:
            await aio.sync_models(db, [Options])
            await db.insert(Options(id=1))
            returned = await db.update(Options, 1, **{field: "new"})
            return getattr(returned, field), getattr(await db.get(Options, 1), field)

    assert run(scenario()) == ("new", "new")


def test_tasks_of_a_committed_block_run_in_the_transaction_around_it_or_on_their_own(tmp_path):
    """Only a rolled-back block refuses its late tasks: a task started in an inner block and awaited by
    the outer one joins the outer transaction; a worker started in a committed block keeps working."""

    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            started = asyncio.Event()
            work: asyncio.Queue = asyncio.Queue()

            async def worker():
                started.set()
                while (name := await work.get()) is not None:
                    await db.insert(Item(name=name))

            with contextlib.suppress(ZeroDivisionError):
                async with db.transaction():
                    async with db.transaction():
                        late = asyncio.create_task(db.insert(Item(name="inner's task")))
                    await late  # the inner block committed: part of the outer transaction
                    assert await db.count(Item) == 1
                    raise ZeroDivisionError  # so it is rolled back with the outer one
            assert await db.count(Item) == 0
            async with db.transaction():
                background = asyncio.create_task(worker())
                await started.wait()
            await work.put("after the block")
            await work.put(None)
            await background
            return [item.name for item in await db.select(Item)]

    assert run(scenario()) == ["after the block"]


@pytest.mark.parametrize("own_context", [True, False], ids=["own context", "the block's context"])
def test_a_worker_started_in_a_rolled_back_block_works_only_with_a_context_of_its_own(tmp_path, own_context):
    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item])
            work: asyncio.Queue = asyncio.Queue()

            async def worker():
                while (name := await work.get()) is not None:
                    await db.insert(Item(name=name))

            with contextlib.suppress(ZeroDivisionError):
                async with db.transaction():
                    background = asyncio.create_task(worker(), **({"context": contextvars.Context()} if own_context else {}))
                    raise ZeroDivisionError
            await work.put("later")
            await work.put(None)
            await asyncio.wait([background])
            return background.exception(), [item.name for item in await db.select(Item)]

    error, names = run(scenario())
    if own_context:
        assert error is None and names == ["later"]
    else:
        assert isinstance(error, UsageError) and "context=contextvars.Context()" in str(error) and names == []


# --- many tasks, random cancellations -------------------------------------------------------------------


ACCOUNTS = 8
OPENING_BALANCE = 100


async def bank(db, seed: int, tasks: int = 80) -> tuple[dict[int, str], dict[int, tuple], list[int]]:
    """Transfers (transactions that log two entries), batch writers and readers, all on one
    connection, with random cancellations: a third of the tasks are cancelled at a random turn of
    the loop (waiting for the connection, or inside a transaction's block), and some run under a
    timeout of a few milliseconds, which fires while the loop waits for a job on the connection's
    thread. Readers check that no transfer is seen half done."""
    rng = random.Random(seed)
    plans: dict[int, tuple] = {}
    sums_seen: list[int] = []

    async def transfer(number: int, source: int, target: int, amount: int, children: bool) -> None:
        async with db.transaction():
            payer = await db.get(Account, source)
            await db.update(Account, source, balance=payer.balance - amount)
            await asyncio.sleep(0)
            if children:
                first = asyncio.create_task(db.insert(Entry(task=number, step=1)))
                await first
            else:
                await db.insert(Entry(task=number, step=1))
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            payee = await db.get(Account, target)
            await db.update(Account, target, balance=payee.balance + amount)
            await db.insert(Entry(task=number, step=2))

    async def batch(number: int, size: int) -> None:
        await db.insert_many([Mark(task=number) for _ in range(size)])

    async def read(number: int) -> None:
        for _ in range(3):
            if number % 2:
                sums_seen.append(sum([account.balance async for account in db.iter_select(Account)]))
            else:
                sums_seen.append(sum(account.balance for account in await db.select(Account)))
            await asyncio.sleep(0)

    async def within(seconds: float | None, work) -> None:
        async with asyncio.timeout(seconds):
            await work

    running: dict[int, asyncio.Task] = {}
    for number in range(tasks):
        kind = rng.choice(["transfer", "transfer", "batch", "read"])
        if kind == "transfer":
            source, target = rng.sample(range(ACCOUNTS), 2)
            plans[number] = ("transfer", source, target, rng.randrange(1, 30))
            work = transfer(number, source, target, plans[number][3], rng.random() < 0.3)
        elif kind == "batch":
            plans[number] = ("batch", rng.randrange(1, 500))
            work = batch(number, plans[number][1])
        else:
            plans[number] = ("read",)
            work = read(number)
        running[number] = asyncio.create_task(within(rng.uniform(0, 0.02) if rng.random() < 0.4 else None, work))
        if rng.random() < 0.3:
            await asyncio.sleep(0)

    for _ in range(tasks // 3):  # cancel a third of them, each at a random moment
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        victim = running[rng.randrange(tasks)]
        victim.cancel()
    outcomes = {number: await outcome(task) for number, task in running.items()}
    return outcomes, plans, sums_seen


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("place", PLACES)
def test_concurrent_units_never_interleave_and_cancelled_ones_leave_nothing(place, mode, seed, tmp_path):
    async def scenario():
        async with aiosqlite.connect(where(place, tmp_path), **MODES[mode]) as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Account, Entry, Mark])
            await db.insert_many([Account(id=n, balance=OPENING_BALANCE) for n in range(ACCOUNTS)])
            outcomes, plans, sums_seen = await bank(db, seed)
            entries = await db.select(Entry, order_by="id")
            marks = await db.select(Mark)
            balances = {account.id: account.balance for account in await db.select(Account)}
            await db.insert(Mark(task=-1))  # still usable
            return outcomes, plans, sums_seen, entries, marks, balances, conn.in_transaction and mode != "autocommit=False"

    outcomes, plans, sums_seen, entries, marks, balances, left_open = run(scenario())
    assert not left_open
    assert set(outcomes.values()) <= {"done", "cancelled", "cancelled late"}
    assert "cancelled" in outcomes.values() and "done" in outcomes.values()
    assert sums_seen and set(sums_seen) == {ACCOUNTS * OPENING_BALANCE}, "a reader saw a transfer half done"

    steps_by_task = defaultdict(list)
    for entry in entries:
        steps_by_task[entry.task].append(entry.step)
    marks_by_task = defaultdict(int)
    for mark in marks:
        marks_by_task[mark.task] += 1
    expected_balances = dict.fromkeys(range(ACCOUNTS), OPENING_BALANCE)
    for number, plan in plans.items():
        kept = outcomes[number] in ("done", "cancelled late")
        if plan[0] == "transfer":
            assert steps_by_task.get(number, []) == ([1, 2] if kept else []), (number, outcomes[number])
            if kept:
                expected_balances[plan[1]] -= plan[3]
                expected_balances[plan[2]] += plan[3]
        elif plan[0] == "batch":
            assert marks_by_task.get(number, 0) == (plan[1] if kept else 0), (number, outcomes[number])
    assert balances == expected_balances
    owners = [entry.task for entry in entries]
    assert all(owners[i] == owners[i + 1] for i in range(0, len(owners), 2)), "two transfers' entries interleave"


# --- streaming, opening and closing, misuse ------------------------------------------------------------


def test_iter_select_streams_while_other_units_run_and_releases_its_cursor(tmp_path):
    async def scenario():
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(conn, [Item, Mark])
            await db.insert_many([Item(name=f"n{i:04}", size=i) for i in range(1500)])
            seen = []
            async for item in db.iter_select(Item, order_by="size"):
                seen.append(item.size)
                if item.size % 500 == 0:
                    await db.insert(Mark(task=item.size))  # a unit of work between two batches
            assert seen == list(range(1500)) and await db.count(Mark) == 3
            async with contextlib.aclosing(db.iter_select(Item)) as stream:
                async for _ in stream:
                    break
            await conn.execute("DROP TABLE items")  # refused ("table is locked") while a cursor reads it
            with pytest.raises(SchemaMismatchError):
                [item async for item in db.iter_select(Item)]

    run(scenario())


def test_a_migration_between_two_batches_of_a_stream_is_refused_if_it_would_change_the_streamed_table(tmp_path):
    """Another task's sync_models runs between two batches of an iter_select: a rebuild of the table
    being read is refused before it changes anything (it failed halfway, and its rollback ended the
    stream); the stream reads every row."""

    class ItemChecked(SyncModel, table="items"):
        id: int = Field(default=None, primary_key=True)
        name: Annotated[str, Unique()]
        size: int = PydanticField(default=0, ge=0)  # a CHECK: a rebuild
        note: Optional[str] = None

    async def scenario():
        async with aio.AsyncDatabase(tmp_path / "app.db") as db:
            await aio.sync_models(db, [Item])
            await db.insert_many([Item(name=f"n{i:04}", size=i) for i in range(1500)])
            seen: list[int] = []

            async def read():
                async for item in db.iter_select(Item, order_by="size"):
                    seen.append(item.size)
                    if item.size % 400 == 0:
                        await asyncio.sleep(0.01)

            async def migrate():
                await asyncio.sleep(0.005)
                await aio.sync_models(db, [ItemChecked])

            results = await asyncio.gather(read(), migrate(), return_exceptions=True)
            assert results[0] is None and isinstance(results[1], UsageError) and "still reading table 'items'" in str(results[1])
            assert seen == list(range(1500))
            await aio.sync_models(db, [ItemChecked])
            return await db.count(ItemChecked)

    assert run(scenario()) == 1500


def test_one_database_serves_one_event_loop_after_another(tmp_path):
    """A module-level AsyncDatabase used by one event loop and then another (asyncio.run twice, a test
    client per test): concurrent blocks in the second loop wait their turn as in the first (they
    failed on asyncio's "bound to a different event loop")."""
    db = aio.AsyncDatabase(tmp_path / "app.db")

    async def requests(tag: str) -> list[object]:
        await aio.sync_models(db, [Item])

        async def block(number: int) -> None:
            async with db.transaction():
                await db.insert(Item(name=f"{tag}{number}"))
                await asyncio.sleep(0.005)

        return await asyncio.gather(*(block(number) for number in range(5)), return_exceptions=True)

    assert asyncio.run(requests("first")) == [None] * 5
    assert asyncio.run(requests("second")) == [None] * 5
    assert asyncio.run(db.count(Item)) == 10
    asyncio.run(db.close())


def test_a_path_is_opened_once_on_first_use_and_closed_with_the_database(tmp_path):
    path = tmp_path / "owned.db"
    sync_models(str(path), [Item])

    async def scenario():
        async with aio.AsyncDatabase(path) as db:
            created = await asyncio.gather(*(db.insert(Item(name=f"n{i}")) for i in range(20)))
            assert sorted(item.id for item in created) == list(range(1, 21))
        with pytest.raises(UsageError, match="closed"):
            await db.count(Item)

    run(scenario())
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT COUNT(*) FROM items").fetchone() == (20,)


@pytest.mark.parametrize("then", ["call again", "close"])
def test_a_first_call_cancelled_while_it_opens_the_path_leaves_the_database_usable(tmp_path, then):
    """aiosqlite starts its connection's thread once: the opening goes on when the call that started
    it is cancelled, so the next call (or the close) finds it done instead of failing for ever."""
    path = tmp_path / "owned.db"
    sync_models(str(path), [Item])

    async def scenario():
        db = aio.AsyncDatabase(path)
        first = asyncio.create_task(db.insert(Item(name="never")))
        await asyncio.sleep(0)  # the task is now waiting for the connection to open
        await cancel_and_let_it_see(first)
        assert await outcome(first) == "cancelled"
        if then == "call again":
            await db.insert(Item(name="second"))
        await db.close()
        with pytest.raises(UsageError, match="closed"):
            await db.count(Item)

    run(scenario())
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT name FROM items").fetchall() == ([("second",)] if then == "call again" else [])


def test_wrong_connections_are_refused_clearly(tmp_path):
    with pytest.raises(UsageError, match="for a sqlite3 connection use Database"):
        aio.AsyncDatabase(sqlite3.connect(":memory:"))

    async def scenario():
        with pytest.raises(UsageError, match="not open"):
            aio.AsyncDatabase(aiosqlite.connect(":memory:"))
        async with aiosqlite.connect(tmp_path / "app.db") as conn:
            with pytest.raises(UsageError, match="use pydsqlite.aio"):
                sync_models(conn, [Item])
            db = aio.AsyncDatabase(conn)
            await aio.sync_models(db, [Item])
        with pytest.raises(UsageError, match="closed"):
            await db.insert(Item(name="late"))
        async with aio.AsyncDatabase(tmp_path / "owned.db") as owned:
            async with owned.transaction():
                with pytest.raises(UsageError, match="inside a transaction"):
                    await owned.close()

    run(scenario())


def test_a_database_file_that_cannot_be_opened_is_named_on_first_use(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "app.db"

    async def scenario() -> None:
        db = aio.AsyncDatabase(missing)
        with pytest.raises(sqlite3.OperationalError, match=f"AsyncDatabase\\({str(missing)!r}\\): cannot open the database file") as raised:
            await db.count(Item)
        assert type(raised.value).__name__ == "SqliteOperationalError"
        await db.close()

    run(scenario())
