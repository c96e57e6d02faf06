"""``Database``: typed reads and writes of table models, every row validated by its model.

A thin layer over one connection's ``Engine``: SQL comes from the model's ``RowCodec``,
values are always bound parameters, and each write is one unit: its own transaction, or a
savepoint inside a transaction already open (``db.transaction()``, the caller's own, or the
one a PEP 249 connection always has). SQLite's refusals become errors of our hierarchy.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from ..collector import collector_paused
from ..engines import Cursor, Engine, SqliteEngine, engine_for, is_connection
from ..errors import (
    ConstraintError,
    PydsqliteError,
    RowNotFoundError,
    RowValidationError,
    SchemaMismatchError,
    SyncError,
    UnstorableValueError,
    UsageError,
)
from ..replica.changeset import unstorable_change
from ..replica.hlc import DEFAULT_MAX_DRIFT_MS, HLC, checked_clock_arguments
from ..replica.node import Node
from ..replica.replication import ChangeSet, Replica
from ..schema.codecs import unstorable_reason
from ..schema.objects import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, fold_name
from ..sql.render import quote_identifier, quote_literal
from .codec import RowCodec, codec_for
from .query import Condition
from .read_query import Params, read_query, unusable_where
from .refusals import (
    closed_connection,
    constraint_error,
    constraint_named,
    described,
    engine_refusal,
    missing_column,
    references_to,
    refused_commit,
    result_code,
    row_without_parent,
    schema_error,
    unopenable,
)

M = TypeVar("M", bound=BaseModel)

"""Values for the placeholders of SQL text: in order for ``?``, by name for ``:name``, ``@name`` and ``$name``."""

_BATCH = 512
"""Rows fetched and validated per call while streaming: bounded memory, few validator calls."""


class Database:
    """Typed reads and writes of table models over a connection (or a path, opened and owned
    by this object): every row written is validated by its model, every row read is
    validated into one. Each write is its own transaction, or a savepoint inside one that is
    open (``transaction()``, or yours). ``wall_clock`` (milliseconds) and ``max_drift_ms``
    set up the replica clock of ``LWW()`` tables (see ``HLC``).

    Examples:
        >>> import sqlite3
        >>> from typing import Annotated
        >>> from pydsqlite import Database, Field, SyncModel, col, sync_models
        >>> class Book(SyncModel, table="books"):
        ...     id: int = Field(default=None, primary_key=True)  # None: SQLite assigns the key
        ...     title: str
        ...     pages: int = 0
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = sync_models(conn, [Book])
        >>> db = Database(conn)
        >>> db.insert(Book(title="Dune", pages=412))
        Book(id=1, title='Dune', pages=412)
        >>> db.insert_many([Book(title="Emma"), Book(title="Ulysses", pages=730)])
        2
        >>> db.get(Book, 1)
        Book(id=1, title='Dune', pages=412)
        >>> db.update(Book, 2, pages=474)
        Book(id=2, title='Emma', pages=474)
        >>> [book.title for book in db.select(Book, col("pages") > 450, order_by="-pages")]
        ['Ulysses', 'Emma']
        >>> with db.transaction():  # both or neither
        ...     _ = db.delete(Book, 3)
        ...     _ = db.upsert(Book(id=1, title="Dune", pages=500))
        >>> db.count(Book), db.get(Book, 3)
        (2, None)
    """

    def __init__(
        self,
        conn: Any,
        *,
        wall_clock: Callable[[], int] | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        if not is_connection(conn) and not isinstance(conn, (str, os.PathLike)):
            raise UsageError(f"Database() takes a sqlite3.Connection, a dqlitedbapi connection or a path, not {type(conn).__name__}")
        checked_clock_arguments(wall_clock, max_drift_ms)  # the clock itself is made at first use
        self._owns = not is_connection(conn)
        self.engine: Engine = engine_for(conn) if is_connection(conn) else SqliteEngine(_opened(os.fspath(conn)))
        self.conn = self.engine.connection
        """The driver's connection this object works on."""
        self._node = Node(self.engine, wall_clock, max_drift_ms, self._atomic)
        self._replica = Replica(self.engine, self._node, self._atomic)

    def close(self) -> None:
        """Close the connection if this object opened it."""
        if self._owns:
            self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Commit on success, roll back on error; a nested block is a savepoint.

        The outermost block runs its own ``BEGIN IMMEDIATE`` (``BEGIN EXCLUSIVE`` when the
        connection's ``isolation_level`` asks for it) … ``COMMIT`` — unless a transaction is
        already open: inside the caller's own (legacy mode) it is a savepoint and the caller
        commits; on a PEP 249 connection (``autocommit=False``) it is a savepoint of the pending
        transaction and success commits that transaction, as ``conn.commit()`` does. A commit
        SQLite refuses (another connection's lock, a deferred foreign key) rolls the block back and
        raises ``ConstraintError`` or an ``EngineError`` saying so.
        """
        ended = False
        with _closed_said(self.engine, "db.transaction()"):
            try:
                with self._atomic(block=True):
                    yield self
                    ended = True
            except (self.engine.IntegrityError, self.engine.OperationalError) as error:
                if not ended or isinstance(error, PydsqliteError):
                    raise
                raise refused_commit(error) from error

    def _atomic(self, *, block: bool = False) -> AbstractContextManager[None]:
        """One unit of writes: its own transaction when none is open, else a savepoint
        (``Engine.unit``). Its own transaction takes the write lock at ``BEGIN``: a deferred one
        that reads first (an upsert, a merge) cannot wait for the lock once another connection
        has committed meanwhile, and SQLite fails it at once with "database is locked" whatever
        the busy timeout. ``block``: the unit runs the caller's code (see ``Engine.unit``)."""
        return self.engine.unit(immediate=True, block=block)

    # --- the clock ---------------------------------------------------------------------------

    @property
    def clock(self) -> HLC:
        """This replica's hybrid logical clock; its node id is created once and stored in the database."""
        with _closed_said(self.engine, "Database.clock"):
            return self._node.clock

    def _next_seq(self) -> int:
        return self._node.allocate_seq(1)

    # --- replica sync -------------------------------------------------------------------------

    def changes_since(self, cursor: int | None = None, models: Iterable[type[BaseModel]] | None = None) -> ChangeSet:
        """Every change this replica knows (its own writes and merged ones) after ``cursor``
        (None: everything), as whole row states of its synced tables plus tombstones."""
        models = None if models is None else list(models)  # read twice when the database is behind them
        with _closed_said(self.engine, "changes_since()"):
            try:
                return self._replica.feed(cursor, models)
            except self.engine.OperationalError as error:
                behind = self._behind_models(models)
                if behind is None:
                    raise
                raise behind from error

    def apply_changes(self, changeset: ChangeSet, models: Iterable[type[BaseModel]] | None = None) -> int:
        """Merge a changeset from another replica in one transaction; returns how many rows changed.

        Everything is checked first (tables, keys, values, timestamps, clock drift): a changeset
        this replica cannot hold is refused whole with ``SyncError`` (or ``ClockError``). With
        foreign keys enforced, what the merge leaves violated is then settled as local writes.
        """
        if not isinstance(changeset, ChangeSet):
            hint = " (ChangeSet.from_json(text) reads to_json() output)" if isinstance(changeset, (str, bytes)) else ""
            raise UsageError(f"apply_changes takes a ChangeSet, not {type(changeset).__name__}{hint}")
        models = None if models is None else list(models)  # read twice when the database is behind them
        with _closed_said(self.engine, "apply_changes()"):
            try:
                with collector_paused():  # the joined states, validated rows and encoded values all stay reachable
                    return self._replica.merge(changeset, models)
            except (SyncError, self.engine.OperationalError) as error:
                behind = self._behind_models(models)
                if behind is None:
                    raise
                raise behind from error
            except (OverflowError, UnicodeEncodeError) as error:  # SQLite cannot bind it: nothing was written
                names = {fold_name(name): codec.name for name, codec in self._replica.synced_codecs(models).items()}
                raise unstorable_change(changeset.changes, names) from error

    def _behind_models(self, models: Iterable[type[BaseModel]] | None) -> SchemaMismatchError | None:
        """When a sync call fails: a synced table here that lacks a column its model declares (the
        database is behind the model), as ``SchemaMismatchError``; None when every table is in line."""
        for codec in self._replica.synced_codecs(models).values():
            present = {fold_name(row[0]) for row in self.engine.execute("SELECT name FROM pragma_table_xinfo(?)", (codec.name,))}
            for column in sorted(codec.table.columns, key=lambda column: column.hidden):  # fields first
                if fold_name(column.name) not in present:
                    return missing_column(codec, column.name, "the replica's feed")
        return None

    # --- writes ----------------------------------------------------------------------------

    def insert(self, obj: M) -> M:
        """Validate and insert one row; returns the validated instance (with its key if SQLite assigned it)."""
        codec = _codec_of_instance(obj, "insert()")
        instance: M = codec.validate(obj)
        with self._writing(codec, [instance]):
            return self._insert_one(codec, instance)

    def insert_many(self, objs: Iterable[M], model: type[M] | None = None) -> int:
        """Validate every object first (a ValidationError names the failing index and writes nothing),
        then insert them all in one transaction (``executemany``, or multi-row statements on an engine
        where each statement costs a network round); returns the number inserted (rows the database ignores,
        by a trigger's ``RAISE(IGNORE)`` or ``ON CONFLICT IGNORE``, are not; on a synced table they are a
        ``ConstraintError`` and nothing is written)."""
        if isinstance(objs, (BaseModel, str, bytes, dict)):
            raise UsageError(f"insert_many() takes an iterable of rows, not {type(objs).__name__}; use insert() for one")
        items = list(objs)
        if not items:
            return 0
        if model is None:
            codec = _codec_of_instance(items[0], "insert_many() without model=")
        else:
            codec = codec_for(model)
        with collector_paused():  # validation and encoding make many objects that all stay reachable
            return self._validate_and_insert(codec, items)

    def _validate_and_insert(self, codec: RowCodec, items: list[Any]) -> int:
        """``insert_many``'s work; the validated instances go with this call, so the collector resumes
        without them (its first collection would otherwise walk every one of them)."""
        instances = codec.validate_many(items)
        with self._writing(codec, instances):
            _, written = self._insert_rows(codec, instances)
        return written

    def upsert(self, obj: M) -> M:
        """Insert the row, or update the row with its primary key (never another row)."""
        codec = _codec_of_instance(obj, "upsert()")
        codec.require_key("upsert()")
        instance: M = codec.validate(obj)
        with self._writing(codec, [instance]):
            if codec.auto_key and getattr(instance, codec.auto_key) is None:
                return self._insert_one(codec, instance)
            stored = self._fetch_stored(codec, codec.key_of(instance))
            if stored is None:
                return self._insert_one(codec, instance)
            self._update_row(codec, instance, stored)
            return instance

    @overload
    def update(self, obj_or_model: M, /) -> M: ...

    @overload
    def update(self, obj_or_model: type[M], key: Any, /, **changes: Any) -> M: ...

    def update(self, obj_or_model: Any, key: Any = None, /, **changes: Any) -> Any:
        """``update(obj)`` writes every field of ``obj`` to the row with its key; ``update(Model, key,
        field=value, ...)`` changes some fields of the row with ``key``, which may include key fields:
        the row then moves to the new key (``ConstraintError`` if that key is taken; refused on
        synced tables, whose rows are known to replicas by their key). Returns the validated row."""
        if isinstance(obj_or_model, type):
            codec = codec_for(obj_or_model)
            params = codec.key_params(key, "update()")
            unknown = sorted(set(changes) - set(codec.fields))
            if unknown:
                raise UsageError(
                    f"update(): {codec.model.__qualname__} has no field(s) {', '.join(map(repr, unknown))} "
                    f"(fields: {', '.join(codec.fields)})"
                )
            written: list[BaseModel] = []  # filled once validated, for naming a foreign key it breaks
            with self._writing(codec, written):
                stored = self._fetch_stored(codec, params)
                if stored is None:
                    raise RowNotFoundError(f"no row with key {key!r} in table {codec.name!r}")
                current, refused = _current_values(codec, stored)
                unreadable = codec.unreadable_date(stored, skip=changes) if refused is not None else None
                if unreadable is not None:  # the changes leave it: Pydantic would guess at it, and the write store the guess
                    raise unreadable
                try:
                    instance = codec.validate_fields({**current, **changes})
                except ValidationError as error:
                    if refused is None:
                        raise
                    raise codec.refusal(stored, error) from None  # the stored row is wrong, and the changes leave it wrong
                written.append(instance)
                keep = _kept_as_stored(codec, instance, stored, changes)
                self._update_row(codec, instance, stored, move_key=any(name in changes for name in codec.key), keep=keep)
                return instance
        if changes or key is not None:
            raise UsageError("update(obj) takes the instance only; to change some fields use update(Model, key, field=value)")
        codec = _codec_of_instance(obj_or_model, "update()")
        codec.require_key("update()")
        instance = codec.validate(obj_or_model)
        with self._writing(codec, [instance]):
            stored = self._fetch_stored(codec, codec.key_of(instance))
            if stored is None:
                raise RowNotFoundError(f"no row with key {codec.key_of(instance)!r} in table {codec.name!r}")
            self._update_row(codec, instance, stored, keep=_kept_as_stored(codec, instance, stored, {}))
        return instance

    @overload
    def delete(self, obj_or_model: BaseModel) -> bool: ...

    @overload
    def delete(self, obj_or_model: type[BaseModel], key: Any) -> bool: ...

    def delete(self, obj_or_model: Any, key: Any = None) -> bool:
        """Delete one row by instance or by ``(Model, key)``; returns whether a row was deleted."""
        if isinstance(obj_or_model, type):
            codec = codec_for(obj_or_model)
            params = codec.key_params(key, "delete()")
        else:
            codec = _codec_of_instance(obj_or_model, "delete()")
            codec.require_key("delete()")
            params = codec.key_of(codec.validate(obj_or_model, storing=False))
        with self._writing(codec, deleted_key=params), _binding(lambda: _unstorable_param(codec, params, codec.key)):
            if codec.synced:
                return self._replica.delete(codec, params)
            cursor = self.engine.execute(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()}", params)
            _check_one_row(codec, params, cursor.rowcount)
        return cursor.rowcount > 0

    def touch(self, model: type[M], key: Any, *fields: str) -> M | None:
        """Stamp ``fields`` of the synced row with ``key`` (every non-key field when none are named)
        with this replica's clock, keeping their values: later merges prefer them over every state
        this replica has seen. Settles a row that two replicas' concurrent edits merge into a row the
        model refuses (``SyncError`` names it). Returns the row.

        A field without LWW shares the row version's timestamp with every other such field, so
        naming one stamps them all. On a deleted row, the values its tombstone keeps are stamped,
        and then its deletion, so the row stays deleted everywhere (returns None);
        ``RowNotFoundError`` when this replica never knew the key.

        Examples:
            >>> import sqlite3
            >>> from typing import Annotated
            >>> from pydsqlite import LWW, Database, PrimaryKey, SyncModel, sync_models
            >>> class Setting(SyncModel, table="touched_settings"):
            ...     key: Annotated[str, PrimaryKey()]
            ...     value: Annotated[str, LWW()]
            >>> conn = sqlite3.connect(":memory:")
            >>> _ = sync_models(conn, [Setting])
            >>> db = Database(conn)
            >>> _ = db.insert(Setting(key="theme", value="dark"))
            >>> cursor = db.changes_since().cursor
            >>> db.touch(Setting, "theme", "value")
            Setting(key='theme', value='dark')
            >>> [change.key for change in db.changes_since(cursor).changes]  # goes out again, newly stamped
            [('theme',)]
        """
        codec = codec_for(model)
        params = codec.key_params(key, "touch()")
        if not codec.synced:
            raise UsageError(
                f"touch(): table {codec.name!r} is not synced (no LWW field), so its rows carry no timestamps to stamp"
            )
        names = fields or tuple(name for name in codec.fields if name not in codec.key)
        unknown = [name for name in names if name not in codec.fields]
        if unknown:
            raise UsageError(
                f"touch(): {codec.model.__qualname__} has no field(s) {', '.join(map(repr, unknown))} (fields: {', '.join(codec.fields)})"
            )
        keys = [name for name in names if name in codec.key]
        if keys:
            raise UsageError(f"touch(): {', '.join(map(repr, keys))} of table {codec.name!r} is the row's key, which has no timestamp")
        lww = [name for name in codec.lww if name in names]
        version = any(name in codec.group for name in names)
        stamped = [name + LWW_SUFFIX for name in lww] + ([VERSION_COLUMN] if version else [])
        with self._writing(codec):
            current = self._fetch(codec, params)
            if current is None:
                if self._replica.touch_deleted(codec, params, lww, version=version):
                    return None
                raise RowNotFoundError(f"no row with key {key!r} in table {codec.name!r}, deleted or not")
            now = str(self.clock.now())
            assignments = [f"{quote_identifier(name)} = ?" for name in (*stamped, SEQ_COLUMN)]
            cursor = self.engine.execute(
                f"UPDATE OR ABORT {codec.quoted_table} SET {', '.join(assignments)} WHERE {codec.key_where()}",
                [*([now] * len(stamped)), self._next_seq(), *params],
            )
            _check_one_row(codec, params, cursor.rowcount)
        return current  # type: ignore[return-value]

    # --- reads -----------------------------------------------------------------------------

    def get(self, model: type[M], key: Any) -> M | None:
        """The row with primary key ``key`` (a tuple for composite keys), or None."""
        codec = codec_for(model)
        params = codec.key_params(key, "get()")
        with _reading(self.engine, codec):
            return self._fetch(codec, params)  # type: ignore[return-value]

    def select(
        self,
        model: type[M],
        where: str | Condition | None = None,
        params: Params = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[M]:
        """Validated instances of the rows matching ``where`` (SQL text with ``?`` placeholders and a sequence of
        ``params``, or ``:name`` placeholders and a mapping; or a Condition)."""
        with collector_paused():
            return list(self.iter_select(model, where, params, order_by, limit, offset))

    def iter_select(
        self,
        model: type[M],
        where: str | Condition | None = None,
        params: Params = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[M]:
        """Like ``select`` but streams rows from the cursor, so memory stays flat for any result size."""
        codec = codec_for(model)
        sql, bound = read_query(self.engine, codec, codec.select_sql, where, params, order_by, limit, offset)
        return self._stream(codec, sql, bound, where)  # type: ignore[return-value]

    def _stream(self, codec: RowCodec, sql: str, bound: list[Any], where: object) -> Iterator[BaseModel]:
        with self.engine.streaming(codec.name):
            with _reading(self.engine, codec, bound, where, sql):
                cursor = self.engine.execute(sql, bound)
            while True:
                with _reading(self.engine, codec, bound, where, rows_of=sql):
                    rows = cursor.fetchmany(_BATCH)
                if not rows:
                    return
                yield from codec.decode_many(rows)

    def count(self, model: type[BaseModel], where: str | Condition | None = None, params: Params = ()) -> int:
        """The number of rows matching ``where`` (all rows without one)."""
        codec = codec_for(model)
        sql, bound = read_query(self.engine, codec, f"SELECT COUNT(*) FROM {codec.quoted_table}", where, params, None, None, None)
        with _reading(self.engine, codec, bound, where, sql):
            return int(self.engine.execute(sql, bound).fetchone()[0])

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _writing(self, codec: RowCodec, rows: Sequence[BaseModel] = (), deleted_key: tuple[Any, ...] | None = None) -> Iterator[None]:
        """A write as one unit (see ``_atomic``): SQLite refusing it raises ``ConstraintError``, a table or
        column it lacks ``SchemaMismatchError``; either way the unit is rolled back. A foreign key refusing
        one of the ``rows`` written is named with the row, its column and the value no parent row holds;
        one refusing the delete of the row with ``deleted_key``, with the tables whose rows reference it."""
        try:
            with self._atomic():
                if codec.synced:
                    self._replica.begin_writes()  # later stamps by other connections, deletes made by SQL come first
                yield
        except self.engine.IntegrityError as error:
            culprit = None
            if constraint_named(error) == "FOREIGN KEY":
                culprit = row_without_parent(self.engine, codec, rows) if rows else references_to(self.engine, codec, deleted_key)
            raise constraint_error(codec, error, culprit) from error
        except self.engine.OperationalError as error:
            raise (schema_error(codec, error) or _undecodable_row(self.engine, codec, error) or engine_refusal(described(codec), error)) from error
        except self.engine.Error as error:
            if self.engine.closed:
                raise closed_connection(described(codec)) from error
            if result_code(error) == _SQLITE_NOTADB:
                raise engine_refusal(described(codec), error) from error
            raise

    def _insert_rows(self, codec: RowCodec, instances: list[Any], *, one: bool = False) -> tuple[Cursor, int]:
        """INSERT validated instances (``Engine.insert_rows``); the last cursor and how many rows were
        written. Rows of a synced table are one write event: every timestamp of the batch is one
        ``now()``, each row gets its own sequence number. Rows the database ignores (a trigger's
        ``RAISE(IGNORE)``, ``ON CONFLICT IGNORE``) are not counted; for ``one`` row (``insert``,
        which hands it back), or any row of a synced table, they are a ``ConstraintError``."""
        stamp = str(self.clock.now()) if codec.lww else ""
        first_seq = self._node.allocate_seq(len(instances)) if codec.synced else 0
        stamps = [stamp] * len(codec.lww)
        groups: dict[str, list[list[Any]]] = {}
        keys: list[tuple[Any, ...]] = []
        if not codec.synced and codec.auto_key is None:  # rows as encoded, nothing added: one pass
            groups[codec.insert_head[False]] = codec.values_of_many(instances)
            instances_left: list[Any] = []
        else:
            instances_left = instances
        for position, instance in enumerate(instances_left):
            values = codec.values(instance)
            if codec.synced:
                keys.append(tuple(values[p] for p in codec.key_positions))
            auto = codec.auto_key is not None and values[codec.auto_position] is None
            if auto:
                del values[codec.auto_position]
            values.extend(stamps)
            if codec.synced:
                values.extend((stamp, first_seq + position))
            groups.setdefault(codec.insert_head[auto], []).append(values)
        cursor = None
        written = 0
        with _binding(lambda: next(filter(None, map(codec.unstorable, instances)), None)):
            for head, rows in groups.items():
                cursor, changed = self.engine.insert_rows(head, rows)
                written += len(rows) if changed is None else changed
        assert cursor is not None
        if written < len(instances) and (codec.synced or one):
            # the caller would be handed a row that does not exist (with another row's lastrowid), or a
            # synced key would count as alive again, ending its deletion for the replicas
            why = "ignored by the database (a trigger's RAISE(IGNORE), or a constraint declared ON CONFLICT IGNORE)"
            if len(instances) == 1:
                message = f"a write to table {codec.name!r} was {why}: no row was written"
            else:
                message = f"{len(instances) - written} of {len(instances)} rows to table {codec.name!r} were {why}: nothing was written"
            raise ConstraintError(codec.name, "ignored", message)
        if codec.synced:
            self._replica.revive(keys, codec, first_seq)
        return cursor, written

    def _insert_one(self, codec: RowCodec, instance: M) -> M:
        cursor, _ = self._insert_rows(codec, [instance], one=True)
        if codec.auto_key is not None and getattr(instance, codec.auto_key) is None:
            instance = instance.model_copy(update={codec.auto_key: cursor.lastrowid})
        return instance

    def _fetch(self, codec: RowCodec, key_params: tuple[Any, ...]) -> BaseModel | None:
        row = self._fetch_stored(codec, key_params)
        return None if row is None else codec.decode(row)

    def _fetch_stored(self, codec: RowCodec, key_params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The row with this key as stored (field order), or None."""
        sql = f"{codec.select_sql} WHERE {codec.key_where()}"
        try:
            with _binding(lambda: _unstorable_param(codec, key_params, codec.key)):
                row: tuple[Any, ...] | None = self.engine.execute(sql, key_params).fetchone()
        except self.engine.OperationalError as error:
            undecodable = _undecodable_row(self.engine, codec, error, (sql, key_params))
            if undecodable is None:
                raise
            raise undecodable from error
        return row

    def _update_row(
        self, codec: RowCodec, instance: BaseModel, stored: tuple[Any, ...], *, move_key: bool = False, keep: Collection[str] = ()
    ) -> None:
        """Write the fields of ``instance`` to the row read as ``stored`` (the values as stored, which
        need not validate: an update is how a row written badly by SQL is put right): every non-key
        field but those in ``keep`` (see ``_kept_as_stored``), and the key fields too when ``move_key``.
        Stamps the companions of LWW fields whose stored value changes: values equal in Python but
        stored differently (``Decimal("1.5")`` over ``"1.50"``, one instant in another UTC offset)
        are changes the replicas must receive."""
        values = codec.values(instance)
        if keep:
            values = [stored[position] if name in keep else value for position, (name, value) in enumerate(zip(codec.fields, values, strict=True))]
        old_key = tuple(stored[position] for position in codec.key_positions)
        moving = move_key and tuple(values[position] for position in codec.key_positions) != old_key
        if moving and codec.synced:
            raise UsageError(
                f"update(): table {codec.name!r} is synced, so a row's identity is its primary key {codec.key} "
                f"(replicas know it by {old_key!r}); the key cannot change. Delete the row and insert it under the new key"
            )
        assignments = []
        params = []
        for name, value in zip(codec.fields, values, strict=True):
            if (moving or name not in codec.key) and name not in keep:
                assignments.append(f"{quote_identifier(name)} = ?")
                params.append(value)
        if codec.synced:
            changed = [name for name, position in codec.lww_positions if _stored_differently(values[position], stored[position])]
            group_changed = any(_stored_differently(values[position], stored[position]) for position in codec.group_positions)
            if not changed and not group_changed:
                return
            now = str(self.clock.now())
            stamped = [name + LWW_SUFFIX for name in changed] + ([VERSION_COLUMN] if group_changed else [])
            for name in stamped:
                assignments.append(f"{quote_identifier(name)} = ?")
                params.append(now)
            assignments.append(f"{quote_identifier(SEQ_COLUMN)} = ?")
            params.append(self._next_seq())
        if not assignments:
            return
        params.extend(old_key)
        with _binding(lambda: codec.unstorable(instance)):
            cursor = self.engine.execute(
                f"UPDATE OR ABORT {codec.quoted_table} SET {', '.join(assignments)} WHERE {codec.key_where()}", params
            )
        _check_one_row(codec, old_key, cursor.rowcount)


def _current_values(codec: RowCodec, stored: tuple[Any, ...]) -> tuple[dict[str, Any], RowValidationError | None]:
    """The fields of a stored row by name, for ``update(Model, key, **changes)`` to change some of
    them: validated when the row validates, else as stored (JSON parsed) with the refusal, so that
    the changes can put right a row the model refuses; the whole row is validated after them."""
    try:
        return dict(codec.decode(stored).__dict__), None
    except RowValidationError as refused:
        return dict(zip(codec.fields, codec.stored_values(stored), strict=True)), refused


def _kept_as_stored(codec: RowCodec, instance: BaseModel, stored: tuple[Any, ...], changes: Mapping[str, Any]) -> frozenset[str]:
    """The fields an update leaves as stored: those not in ``changes`` whose value encodes as their stored
    value reads by the field alone (``RowCodec.field_reads_as``: its type, field validators and the
    model's string settings, not a model validator, which may derive the field from others that changed). The stored form may be another spelling of
    that value (``2024-01-02 10:00:00`` from SQLite's ``datetime()``, an upper-case UUID) or JSON holding
    keys the model does not read; writing it back would change what other programs, SQL and the other
    replicas see, though nothing about it changed. Holds for a stored row the model refuses too (an
    update is how such a row is put right): only what the update changes is written."""
    kept = set()
    for position, (name, encode) in enumerate(zip(codec.fields, codec.encoders, strict=True)):
        if name in changes:
            continue
        try:
            old = codec.field_reads_as(position, stored[position])
            new = getattr(instance, name)
            if encode is not None:
                old, new = (encode(old) if old is not None else None), (encode(new) if new is not None else None)
        except Exception:  # noqa: BLE001 - it does not read alone (a validator reading other fields...): written from the instance
            continue
        if type(old) is type(new) and (old == new or old != old and new != new):  # 1 == 1.0 == True; NaN != NaN
            kept.add(name)
    return frozenset(kept)


def _opened(path: str) -> sqlite3.Connection:
    """A connection to the database file ``path``; a file SQLite cannot open is named."""
    try:
        return sqlite3.connect(path)
    except sqlite3.OperationalError as error:
        raise unopenable(f"Database({path!r})", error) from error


def _stored_differently(new: Any, old: Any) -> bool:
    """Whether SQLite would hold ``new`` differently from ``old``: Python's ``==`` calls ``1``,
    ``1.0`` and ``True`` equal, and ``0.0`` and ``-0.0``, which SQLite may store apart."""
    if type(new) is not type(old) or new != old:
        return True
    return type(new) is float and new == 0.0 and math.copysign(1.0, new) != math.copysign(1.0, old)


def _codec_of_instance(obj: Any, action: str) -> RowCodec:
    if not isinstance(obj, BaseModel):
        raise UsageError(f"{action} takes a table model instance, not {type(obj).__name__}")
    return codec_for(type(obj))


def _check_one_row(codec: RowCodec, key: tuple[Any, ...], rowcount: int) -> None:
    """A write by primary key changes at most one row; more means the table's key is not the model's
    (the write is then rolled back)."""
    if rowcount > 1:
        raise SchemaMismatchError(
            codec.name,
            None,
            f"key {key!r} names {rowcount} rows of table {codec.name!r}: its primary key is not the model's "
            f"{codec.key}; nothing was written. Run sync_models(conn, [...]) to migrate it",
        )


@contextmanager
def _binding(locate: Callable[[], UnstorableValueError | None]) -> Iterator[None]:
    """The driver refuses to bind an integer beyond 64 bits or text with a lone surrogate; ``locate``
    (run only then, so the happy path checks nothing) names the value."""
    try:
        yield
    except (OverflowError, UnicodeEncodeError) as error:
        culprit = locate()
        if culprit is None:
            raise
        raise culprit from error


def _unstorable_param(codec: RowCodec, params: Sequence[Any], names: Sequence[str] | None = None) -> UnstorableValueError | None:
    for position, value in enumerate(params):
        reason = unstorable_reason(value)
        if reason is not None:
            return UnstorableValueError(codec.name, names[position] if names else None, value, reason, model=codec.model.__qualname__)
    return None


@contextmanager
def _closed_said(engine: Engine, where: str) -> Iterator[None]:
    """A call on a connection the application closed raises ``UsageError`` saying so (``where``),
    not the driver's error."""
    try:
        yield
    except engine.Error as error:
        if engine.closed:
            raise closed_connection(where) from error
        raise


@contextmanager
def _reading(
    engine: Engine, codec: RowCodec, params: Sequence[Any] = (), where: object = None, sql: str | None = None,
    *, rows_of: str | None = None,
) -> Iterator[None]:
    """A read: a table or column the database lacks raises ``SchemaMismatchError``, a query
    parameter SQLite cannot bind ``UnstorableValueError``, SQL text that cannot run as one
    condition with its parameters ``UsageError``; a row whose text is not UTF-8 ``RowValidationError``;
    what the engine refuses while it runs (a lock, a function failing on a row's data, an interrupt)
    ``EngineError``. ``sql``: the statement, whose compiling tells the two apart (None: it has
    compiled already, the rows are being read, those of ``rows_of``)."""
    text = where.sql if isinstance(where, Condition) else where
    try:
        with _binding(lambda: _unstorable_param(codec, params)):
            yield
    except engine.OperationalError as error:
        mismatch = schema_error(codec, error)
        if mismatch is not None:
            raise mismatch from error
        if isinstance(text, str) and sql is not None and result_code(error) in (_SQLITE_ERROR, None) and not _compiles(engine, sql, params):
            raise unusable_where(codec, text, error) from error  # SQL text that does not compile (a syntax error...)
        query = sql or rows_of
        raise (_undecodable_row(engine, codec, error, (query, params) if query else None) or engine_refusal(described(codec), error)) from error
    except engine.Error as error:
        if engine.closed:
            raise closed_connection(described(codec)) from error
        if result_code(error) == _SQLITE_NOTADB:
            raise engine_refusal(described(codec), error) from error
        if not isinstance(text, str):
            raise
        raise unusable_where(codec, text, error) from error


_SQLITE_ERROR = 1
"""SQLite's generic result code, which a statement that does not compile gets (busy is 5, locked 6)."""
_SQLITE_NOTADB = 26
"""The file is not a database (or is encrypted): said naming where, as other refusals of the engine are."""
_UNDECODABLE = re.compile(r"Could not decode to UTF-8 column '(.*)' with text")


def _undecodable_row(
    engine: Engine, codec: RowCodec, error: Exception, query: tuple[str, Sequence[Any]] | None = None
) -> RowValidationError | None:
    """``RowValidationError`` naming the row whose TEXT is not valid UTF-8 (written by another program,
    or by SQL casting bytes), which the driver refuses to read without saying which row it was; found
    by reading that column's text as bytes from the rows ``query`` (SQL, parameters) reads (else the
    table's), on this error only. None for any other error."""
    match = _UNDECODABLE.search(str(error))
    if match is None or codec.table.column(match.group(1)) is None:
        return None
    column = codec.table.column(match.group(1))
    assert column is not None
    quoted = quote_identifier(column.name)
    if codec.key and query is not None:  # the rows the failing read reads, which hold the key's columns
        key_terms, source, params = ", ".join(map(quote_identifier, codec.key)), f"({query[0]})", query[1]
    else:
        key_terms, source, params = ", ".join(map(quote_identifier, codec.key)) or "_rowid_", codec.quoted_table, ()
    rows = engine.execute(f"SELECT CAST({quoted} AS BLOB), {key_terms} FROM {source} WHERE typeof({quoted}) = 'text'", params)
    for raw, *key in rows:
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            where = " AND ".join(f"{quote_identifier(name)} = {quote_literal(value)}" for name, value in zip(codec.key or ("rowid",), key, strict=True))
            problem = ValueError(
                f"it holds text that is not valid UTF-8 ({bytes(raw)[:40]!r}), which cannot be read (nor the row updated "
                f"through the model); repair it with SQL: UPDATE {codec.quoted_table} SET {quoted} = '…' WHERE {where}"
            )
            return RowValidationError(codec.name, key[0] if len(key) == 1 else tuple(key), [column.name], problem)
    return None


def _compiles(engine: Engine, sql: str, params: Sequence[Any]) -> bool:
    """Whether ``sql`` compiles (EXPLAIN runs nothing): an error it raised came from the rows it read."""
    try:
        engine.execute(f"EXPLAIN {sql}", params).fetchall()
    except engine.Error:
        return False
    return True


"""SQLITE_BUSY_SNAPSHOT: a WAL read transaction cannot become a write, another connection wrote since it began."""


"""Keywords that start a clause after WHERE; OFFSET and WINDOW may also name a column (OFFSET follows a
LIMIT, caught here; a WINDOW clause alone changes no rows)."""


