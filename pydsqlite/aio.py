"""The async face of pydsqlite, over an ``aiosqlite`` connection (``pip install 'pydsqlite[aio]'``).

``AsyncDatabase`` has ``Database``'s methods as coroutines, and the pipeline's entry points are
here as coroutines too. Nothing is implemented twice: each call runs the sync method or function
unchanged, as one job on the aiosqlite connection's own thread (``engines/aiosqlite.py`` says
how units of work from many tasks are kept apart and what cancellation does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from itertools import islice
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

from pydantic import BaseModel

from .engines.aiosqlite import AiosqliteEngine, engine_of
from .errors import UsageError
from .migrate import sync as _sync
from .replica.hlc import DEFAULT_MAX_DRIFT_MS, HLC
from .replica.replication import ChangeSet
from .rows.database import _BATCH, Database
from .rows.query import Condition
from .rows.read_query import Params
from .rows.refusals import unopenable

try:
    import aiosqlite
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("pydsqlite.aio needs aiosqlite: pip install 'pydsqlite[aio]'") from error

__all__ = [
    "AsyncDatabase",
    "migration_history",
    "model_migration_plan",
    "schema_migration_plan",
    "sync_models",
    "sync_schema",
]

M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
R = TypeVar("R")


class AsyncDatabase:
    """``Database`` for asyncio: the same methods, awaited, over one aiosqlite connection.

    Pass an open ``aiosqlite.Connection`` (the caller closes it), or a path (opened on first
    use and closed by ``close()`` or ``async with``). Any number of tasks may share one
    ``AsyncDatabase``: each call is one unit of work, ``async with db.transaction()`` holds
    the connection for its block, and no task's call ever runs inside another task's
    transaction. A task cancelled mid-call or mid-transaction has exactly its own work rolled
    back. ``wall_clock`` and ``max_drift_ms`` are ``Database``'s (and run on the connection's thread).

    Examples:
        >>> import asyncio
        >>> from pydsqlite import SyncModel, col
        >>> from pydsqlite.aio import AsyncDatabase, sync_models
        >>> class Pet(SyncModel, table="pets"):
        ...     name: str
        ...     age: int = 0
        >>> async def main():
        ...     async with AsyncDatabase("pets.db") as db:
        ...         _ = await sync_models(db, [Pet])
        ...         async with db.transaction():  # both rows or neither
        ...             await db.insert(Pet(name="Rex", age=3))
        ...             await db.insert(Pet(name="Tom"))
        ...         print(await db.select(Pet, where=col("age") > 1))
        ...         async for pet in db.iter_select(Pet, order_by="name"):
        ...             print(pet.name)
        >>> asyncio.run(main())
        [Pet(name='Rex', age=3)]
        Rex
        Tom
    """

    def __init__(
        self,
        conn: aiosqlite.Connection | str | os.PathLike[str],
        *,
        wall_clock: Callable[[], int] | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        if isinstance(conn, aiosqlite.Connection):
            self._owns = False
        elif isinstance(conn, (str, os.PathLike)):
            self._path = os.fspath(conn)
            conn = aiosqlite.connect(self._path)
            self._owns = True
        else:
            raise UsageError(
                f"AsyncDatabase() takes an aiosqlite connection or a path, not {type(conn).__name__}"
                + ("; for a sqlite3 connection use Database" if type(conn).__module__ == "sqlite3" else "")
            )
        self.conn: aiosqlite.Connection = conn
        """The aiosqlite connection this object works on."""
        self._wall_clock = wall_clock
        self._max_drift_ms = max_drift_ms
        self._bound: tuple[AiosqliteEngine, Database] | None = None if self._owns else self._bind()
        self._opening = asyncio.Lock()
        self._connecting: asyncio.Future[None] | None = None

    def _bind(self) -> tuple[AiosqliteEngine, Database]:
        engine = engine_of(self.conn)
        return engine, Database(engine, wall_clock=self._wall_clock, max_drift_ms=self._max_drift_ms)

    async def _open(self) -> tuple[AiosqliteEngine, Database]:
        """Connect an owned connection on first use (once, however many tasks get here at the same time).
        The connecting goes on when the task that started it is cancelled (aiosqlite starts its thread
        once: an opening cut short could never be taken up again), and the next call finds it done."""
        async with self._opening:
            if self._bound is None:
                if self._connecting is None:
                    self._connecting = asyncio.ensure_future(self._connect())
                await asyncio.shield(self._connecting)
        assert self._bound is not None
        return self._bound

    async def _connect(self) -> None:
        try:
            await self.conn
        except sqlite3.OperationalError as error:  # the file of the path given
            raise unopenable(f"AsyncDatabase({self._path!r})", error) from error
        self._bound = self._bind()

    async def close(self) -> None:
        """Close the connection if this object opened it, once the unit of work in progress has ended."""
        if self._owns and self._bound is None and self._connecting is not None:  # an opening a cancelled call left
            with contextlib.suppress(Exception):
                await asyncio.shield(self._connecting)
        if self._owns and self._bound is not None:
            await self._bound[0].close()

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- transactions ----------------------------------------------------------------------

    def transaction(self) -> AbstractAsyncContextManager[AsyncDatabase]:
        """``async with db.transaction():`` commit on success, roll back on any exception (a
        cancellation too); nested blocks are savepoints. Other tasks' calls wait until the block
        ends; calls inside it, by this task or by tasks it starts inside the block, are part of it."""
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncDatabase]:
        engine, database = self._bound or await self._open()
        async with engine.transaction(database.transaction):
            yield self

    # --- the clock and replica sync -----------------------------------------------------------

    async def clock(self) -> HLC:
        """This replica's hybrid logical clock (``Database.clock``; created and stored on first use)."""
        engine, database = self._bound or await self._open()
        return await engine.call(getattr, database, "clock")

    async def changes_since(self, cursor: int | None = None, models: Iterable[type[BaseModel]] | None = None) -> ChangeSet:
        """``Database.changes_since``: every change after ``cursor`` (None: everything)."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.changes_since, cursor, models)

    async def apply_changes(self, changeset: ChangeSet, models: Iterable[type[BaseModel]] | None = None) -> int:
        """``Database.apply_changes``: merge a changeset in one transaction; returns how many rows changed."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.apply_changes, changeset, models)

    # --- writes ----------------------------------------------------------------------------

    async def insert(self, obj: M) -> M:
        """``Database.insert``: validate and insert one row; returns the validated instance."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.insert, obj)  # pyright: ignore[reportReturnType] - a generic method through Callable[..., T]

    async def insert_many(self, objs: Iterable[M], model: type[M] | None = None) -> int:
        """``Database.insert_many``: validate every object, then insert them all in one transaction."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.insert_many, objs, model)

    async def upsert(self, obj: M) -> M:
        """``Database.upsert``: insert the row, or update the row with its primary key."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.upsert, obj)  # pyright: ignore[reportReturnType] - a generic method through Callable[..., T]

    @overload
    async def update(self, obj_or_model: M, /) -> M: ...

    @overload
    async def update(self, obj_or_model: type[M], key: Any, /, **changes: Any) -> M: ...

    async def update(self, obj_or_model: Any, key: Any = None, /, **changes: Any) -> Any:
        """``Database.update``: ``update(obj)``, or ``update(Model, key, field=value, ...)``; returns the validated row."""
        engine, database = self._bound or await self._open()
        # bound here: a field may be named like a parameter of ``call`` (function, settle, ...)
        return await engine.call(functools.partial(database.update, obj_or_model, key, **changes))

    @overload
    async def delete(self, obj_or_model: BaseModel) -> bool: ...

    @overload
    async def delete(self, obj_or_model: type[BaseModel], key: Any) -> bool: ...

    async def delete(self, obj_or_model: Any, key: Any = None) -> bool:
        """``Database.delete``: delete one row by instance or by ``(Model, key)``; returns whether one was deleted."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.delete, obj_or_model, key)

    async def touch(self, model: type[M], key: Any, *fields: str) -> M | None:
        """``Database.touch``: stamp ``fields`` of the synced row (every non-key field when none are named), keeping their values;
        None for a deleted row (its kept values and its deletion are stamped)."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.touch, model, key, *fields)  # pyright: ignore[reportReturnType] - a generic method through Callable[..., T]

    # --- reads -----------------------------------------------------------------------------

    async def get(self, model: type[M], key: Any) -> M | None:
        """``Database.get``: the row with primary key ``key``, or None."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.get, model, key)

    async def select(
        self,
        model: type[M],
        where: str | Condition | None = None,
        params: Params = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[M]:
        """``Database.select``: validated instances of the rows matching ``where``."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.select, model, where, params, order_by, limit, offset)

    async def iter_select(
        self,
        model: type[M],
        where: str | Condition | None = None,
        params: Params = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> AsyncIterator[M]:
        """``async for row in db.iter_select(...)``: ``Database.iter_select``'s stream, fetched a batch
        per job. Other tasks' units of work may run between batches (they never run inside one);
        iterate inside ``db.transaction()`` to keep them out until the end. Breaking off early
        releases the cursor when the iterator is closed (``contextlib.aclosing`` makes that immediate)."""
        engine, database = self._bound or await self._open()
        # built on the connection's thread: checking the query compiles a statement there
        rows = cast(Generator[M, None, None], await engine.call(database.iter_select, model, where, params, order_by, limit, offset))
        try:
            while batch := await engine.call(_next_batch, rows):
                for row in batch:
                    yield row  # pyright: ignore[reportReturnType] - as in insert
        finally:
            with contextlib.suppress(UsageError):  # a closed connection has dropped the cursor already
                await engine.run(rows.close, settle=True)

    async def count(self, model: type[BaseModel], where: str | Condition | None = None, params: Params = ()) -> int:
        """``Database.count``: the number of rows matching ``where``."""
        engine, database = self._bound or await self._open()
        return await engine.call(database.count, model, where, params)


def _next_batch(rows: Iterator[M]) -> list[M]:
    return list(islice(rows, _BATCH))


AsyncConnectable = aiosqlite.Connection | AsyncDatabase
"""What the async entry points take: an open aiosqlite connection, or an ``AsyncDatabase``."""


def _awaitable(
    function: Callable[Concatenate[Any, P], R], example: str
) -> Callable[Concatenate[AsyncConnectable, P], Coroutine[Any, Any, R]]:
    """The pipeline entry point ``function`` as a coroutine over an aiosqlite connection: the same
    arguments after the connection, run as one unit of work on the connection's thread.
    Documented by ``function``'s text and ``example`` (its own ``Examples:`` section)."""

    @functools.wraps(function)
    async def on_connection(conn: AsyncConnectable, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if isinstance(conn, AsyncDatabase):
            engine = (conn._bound or await conn._open())[0]
        elif isinstance(conn, aiosqlite.Connection):
            engine = engine_of(conn)
        else:
            raise UsageError(f"pydsqlite.aio.{function.__name__}() takes an aiosqlite connection or an AsyncDatabase, not {type(conn).__name__}")
        return await engine.call(function, engine, *args, **kwargs)

    text = (function.__doc__ or "").partition("    Examples:")[0].rstrip()
    on_connection.__doc__ = (
        f"Awaitable ``pydsqlite.{function.__name__}`` on an aiosqlite connection or an ``AsyncDatabase``.\n\n"
        f"    {text}\n\n    Examples:\n{example}"
    )
    return on_connection


sync_models = _awaitable(_sync.sync_models, """\
        >>> import asyncio, aiosqlite
        >>> from pydsqlite import SyncModel
        >>> from pydsqlite import aio
        >>> class Plant(SyncModel, table="plants"):
        ...     name: str
        >>> async def main():
        ...     async with aiosqlite.connect(":memory:") as conn:
        ...         print(await aio.sync_models(conn, [Plant]))
        >>> asyncio.run(main())
        Migration plan (1 operation):
          1. create table plants (1 column)
""")
model_migration_plan = _awaitable(_sync.model_migration_plan, """\
        >>> import asyncio, aiosqlite
        >>> from pydsqlite import SyncModel
        >>> from pydsqlite import aio
        >>> class Plant(SyncModel, table="plants"):
        ...     name: str
        >>> async def main():
        ...     async with aiosqlite.connect(":memory:") as conn:
        ...         plan = await aio.model_migration_plan(conn, [Plant])
        ...         print(plan, plan.is_empty)
        >>> asyncio.run(main())
        Migration plan (1 operation):
          1. create table plants (1 column) False
""")
sync_schema = _awaitable(_sync.sync_schema, """\
        >>> import asyncio, aiosqlite
        >>> from pydsqlite import schema_from_sql
        >>> from pydsqlite import aio
        >>> async def main():
        ...     async with aiosqlite.connect(":memory:") as conn:
        ...         print(await aio.sync_schema(conn, schema_from_sql("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")))
        >>> asyncio.run(main())
        Migration plan (1 operation):
          1. create table kv (2 columns)
""")
schema_migration_plan = _awaitable(_sync.schema_migration_plan, """\
        >>> import asyncio, aiosqlite
        >>> from pydsqlite import schema_from_sql
        >>> from pydsqlite import aio
        >>> async def main():
        ...     async with aiosqlite.connect(":memory:") as conn:
        ...         await conn.execute("CREATE TABLE scratch (x)")
        ...         print(await aio.schema_migration_plan(conn, schema_from_sql("CREATE TABLE kept (id INTEGER PRIMARY KEY)")))
        >>> asyncio.run(main())
        Migration plan (2 operations):
          1. create table kept (1 column)
          2. DESTRUCTIVE drop table scratch [0 rows]
""")
migration_history = _awaitable(_sync.migration_history, """\
        >>> import asyncio, aiosqlite
        >>> from pydsqlite import SyncModel
        >>> from pydsqlite import aio
        >>> class Plant(SyncModel, table="plants"):
        ...     name: str
        >>> async def main():
        ...     async with aiosqlite.connect(":memory:") as conn:
        ...         await aio.sync_models(conn, [Plant])
        ...         (entry,) = await aio.migration_history(conn)
        ...         print(entry.id, entry.description)
        >>> asyncio.run(main())
        1 Migration plan (1 operation):
          1. create table plants (1 column)
""")
