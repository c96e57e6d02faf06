"""``Database``: typed reads and writes of table models, every row validated by its model.

A thin layer over one ``sqlite3.Connection``: SQL comes from the model's ``RowCodec``,
values are always bound parameters, and each write runs in its own transaction
unless it is inside ``db.transaction()`` (nested use gives savepoints).
"""

from __future__ import annotations

import gc
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel

from .codecs import encode_param
from .errors import ConstraintError, RowNotFoundError
from .hlc import DEFAULT_MAX_DRIFT_MS, HLC
from .node import Node
from .query import Condition
from .replication import ChangeSet, Replica
from .rowcodec import RowCodec, codec_for
from .schema import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN
from .sqltext import quote_identifier

M = TypeVar("M", bound=BaseModel)

_BATCH = 512
"""Rows fetched and validated per call while streaming: bounded memory, few validator calls."""


class Database:
    """Typed CRUD over a connection (or a path, opened and owned by this object)."""

    def __init__(
        self,
        conn: sqlite3.Connection | str | os.PathLike,
        *,
        wall_clock: Callable[[], int] | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        self._owns = not isinstance(conn, sqlite3.Connection)
        self.conn = conn if isinstance(conn, sqlite3.Connection) else sqlite3.connect(os.fspath(conn))
        self._depth = 0
        self._node = Node(self.conn, wall_clock, max_drift_ms, self.transaction)
        self._replica = Replica(self.conn, self._node, self.transaction)

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
        """Commit on success, roll back on error; nested (or inside the caller's transaction) uses a savepoint."""
        if self._depth == 0 and not self.conn.in_transaction:
            self.conn.execute("BEGIN")
            begin, commit, rollback = None, "COMMIT", "ROLLBACK"
        else:
            name = f"pydsqlite_sp{self._depth}"
            self.conn.execute(f"SAVEPOINT {name}")
            begin, commit, rollback = name, f"RELEASE {name}", f"ROLLBACK TO {name}"
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self.conn.in_transaction:
                self.conn.execute(rollback)
                if begin is not None:
                    self.conn.execute(f"RELEASE {begin}")
            raise
        self._depth -= 1
        try:
            self.conn.execute(commit)
        except sqlite3.Error:  # a deferred foreign key fails the COMMIT and leaves the transaction open
            if begin is None and self.conn.in_transaction:
                self.conn.execute(rollback)
            raise

    # --- the clock ---------------------------------------------------------------------------

    @property
    def clock(self) -> HLC:
        """This replica's hybrid logical clock; its node id is created once and stored in the database."""
        return self._node.clock

    def _next_seq(self) -> int:
        return self._node.allocate_seq(1)

    # --- replica sync -------------------------------------------------------------------------

    def changes_since(self, cursor: int | None = None, models: Iterable[type[BaseModel]] | None = None) -> ChangeSet:
        """Every change this replica knows (its own writes and merged ones) after ``cursor``
        (None: everything), as whole row states of its synced tables plus tombstones."""
        return self._replica.feed(cursor, models)

    def apply_changes(self, changeset: ChangeSet, models: Iterable[type[BaseModel]] | None = None) -> int:
        """Merge a changeset from another replica in one transaction; returns how many rows changed.

        Everything is checked first (tables, keys, values, timestamps, clock drift): a changeset
        this replica cannot hold is refused whole with ``SyncError`` (or ``ClockError``). With
        foreign keys enforced, what the merge leaves violated is then settled as local writes.
        """
        return self._replica.merge(changeset, models)

    # --- writes ----------------------------------------------------------------------------

    def insert(self, obj: M) -> M:
        """Validate and insert one row; returns the validated instance (with its key if SQLite assigned it)."""
        codec = codec_for(type(obj)) if isinstance(obj, BaseModel) else _needs_model(obj)
        instance = codec.validate(obj)
        with self._writing(codec):
            return self._insert_one(codec, instance)

    def insert_many(self, objs: Iterable[M], model: type[M] | None = None) -> int:
        """Validate every object first (a ValidationError names the failing index and writes nothing),
        then insert them all in one transaction with ``executemany``; returns the number inserted."""
        items = list(objs)
        if not items:
            return 0
        model = model or type(items[0])
        codec = codec_for(model)
        with _collector_paused():
            instances = codec.validate_many(items)
        with self._writing(codec):
            self._insert_rows(codec, instances)
        return len(instances)

    def upsert(self, obj: M) -> M:
        """Insert the row, or update it when its primary key exists."""
        codec = codec_for(type(obj))
        instance = codec.validate(obj)
        with self._writing(codec):
            if codec.auto_key and getattr(instance, codec.auto_key) is None:
                return self._insert_one(codec, instance)
            current = self._fetch(codec, codec.key_of(instance))
            if current is None:
                return self._insert_one(codec, instance)
            self._update_row(codec, instance, current)
            return instance  # type: ignore[return-value]

    def update(self, obj_or_model: Any, key: Any = None, **changes: Any) -> Any:
        """``update(obj)`` writes every field of ``obj``; ``update(Model, key, field=value, ...)`` changes
        some fields of a stored row. The merged row is validated; returns it."""
        if isinstance(obj_or_model, type):
            codec = codec_for(obj_or_model)
            with self._writing(codec):
                current = self._fetch(codec, codec.key_params(key))
                if current is None:
                    raise RowNotFoundError(f"no row with key {key!r} in table {codec.name!r}")
                unknown = set(changes) - set(codec.fields)
                if unknown:
                    raise TypeError(f"{codec.model.__name__} has no field(s) {sorted(unknown)}")
                instance = codec.validate_fields({**current.__dict__, **changes})
                self._update_row(codec, instance, current)
                return instance
        codec = codec_for(type(obj_or_model))
        instance = codec.validate(obj_or_model)
        with self._writing(codec):
            current = self._fetch(codec, codec.key_of(instance))
            if current is None:
                raise RowNotFoundError(f"no row with key {codec.key_of(instance)!r} in table {codec.name!r}")
            self._update_row(codec, instance, current)
        return instance

    def delete(self, obj_or_model: Any, key: Any = None) -> bool:
        """Delete one row by instance or by ``(Model, key)``; returns whether a row was deleted."""
        if isinstance(obj_or_model, type):
            codec = codec_for(obj_or_model)
            params = codec.key_params(key)
        else:
            codec = codec_for(type(obj_or_model))
            params = codec.key_of(codec.validate(obj_or_model))
        with self._writing(codec):
            if codec.synced:
                return self._replica.delete(codec, params)
            cursor = self.conn.execute(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()}", params)
        return cursor.rowcount > 0

    # --- reads -----------------------------------------------------------------------------

    def get(self, model: type[M], key: Any) -> M | None:
        """The row with primary key ``key`` (a tuple for composite keys), or None."""
        codec = codec_for(model)
        return self._fetch(codec, codec.key_params(key))  # type: ignore[return-value]

    def select(
        self,
        model: type[M],
        where: str | Condition | None = None,
        params: Sequence[Any] = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[M]:
        """Validated instances of the rows matching ``where`` (SQL text with ``?`` placeholders, or a Condition)."""
        with _collector_paused():
            return list(self.iter_select(model, where, params, order_by, limit, offset))

    def iter_select(
        self,
        model: type[M],
        where: str | Condition | None = None,
        params: Sequence[Any] = (),
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[M]:
        """Like ``select`` but streams rows from the cursor, so memory stays flat for any result size."""
        codec = codec_for(model)
        sql, bound = _query(codec, codec.select_sql, where, params, order_by, limit, offset)
        cursor = self.conn.execute(sql, bound)
        while rows := cursor.fetchmany(_BATCH):
            yield from codec.decode_many(rows)  # type: ignore[misc]

    def count(self, model: type[BaseModel], where: str | Condition | None = None, params: Sequence[Any] = ()) -> int:
        codec = codec_for(model)
        sql, bound = _query(codec, f"SELECT COUNT(*) FROM {codec.quoted_table}", where, params, None, None, None)
        return int(self.conn.execute(sql, bound).fetchone()[0])

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _writing(self, codec: RowCodec) -> Iterator[None]:
        """A write in its own transaction (or savepoint); SQLite constraint failures become ConstraintError."""
        try:
            with self.transaction():
                if codec.synced:
                    self._replica.settle_captured()  # deletes made outside pydsqlite come first, in order
                yield
        except sqlite3.IntegrityError as error:
            raise _constraint_error(codec, error) from error

    def _insert_rows(self, codec: RowCodec, instances: list[Any]) -> sqlite3.Cursor:
        """INSERT validated instances with ``executemany``. Rows of a synced table are one write
        event: every timestamp of the batch is one ``now()``, each row gets its own sequence number."""
        stamp = str(self.clock.now()) if codec.lww else ""
        first_seq = self._node.allocate_seq(len(instances)) if codec.synced else 0
        stamps = [stamp] * len(codec.lww)
        groups: dict[str, list[list[Any]]] = {}
        keys: list[tuple[Any, ...]] = []
        for position, instance in enumerate(instances):
            values = codec.values(instance)
            if codec.synced:
                keys.append(tuple(values[p] for p in codec.key_positions))
            auto = codec.auto_key is not None and values[codec.auto_position] is None
            if auto:
                del values[codec.auto_position]
            values.extend(stamps)
            if codec.synced:
                values.extend((stamp, first_seq + position))
            groups.setdefault(codec.insert_sql[auto], []).append(values)
        cursor = None
        for sql, rows in groups.items():
            cursor = self.conn.executemany(sql, rows) if len(rows) > 1 else self.conn.execute(sql, rows[0])
        if codec.synced:
            self._replica.revive(keys, codec, first_seq)
        assert cursor is not None
        return cursor

    def _insert_one(self, codec: RowCodec, instance: Any) -> Any:
        cursor = self._insert_rows(codec, [instance])
        if codec.auto_key is not None and getattr(instance, codec.auto_key) is None:
            instance = instance.model_copy(update={codec.auto_key: cursor.lastrowid})
        return instance

    def _fetch(self, codec: RowCodec, key_params: tuple[Any, ...]) -> BaseModel | None:
        row = self.conn.execute(f"{codec.select_sql} WHERE {codec.key_where()}", key_params).fetchone()
        return None if row is None else codec.decode(row)

    def _update_row(self, codec: RowCodec, instance: BaseModel, current: BaseModel) -> None:
        """Write every non-key field; stamp the companions of LWW fields whose value changed."""
        values = codec.values(instance)
        assignments = []
        params = []
        for name, value in zip(codec.fields, values, strict=True):
            if name not in codec.key:
                assignments.append(f"{quote_identifier(name)} = ?")
                params.append(value)
        if codec.synced:
            changed = [name for name in codec.lww if getattr(instance, name) != getattr(current, name)]
            group_changed = any(getattr(instance, name) != getattr(current, name) for name in codec.group)
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
        params.extend(codec.key_of(instance))
        self.conn.execute(f"UPDATE {codec.quoted_table} SET {', '.join(assignments)} WHERE {codec.key_where()}", params)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building a large list of new objects triggers repeated full garbage collections that
    find nothing to free (the objects are all reachable); pausing the collector meanwhile
    halves the cost of a big select. It is restored even on error."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _needs_model(obj: Any) -> RowCodec:
    raise TypeError(f"insert() takes a table model instance, not {type(obj).__name__}")


def _query(
    codec: RowCodec,
    head: str,
    where: str | Condition | None,
    params: Sequence[Any],
    order_by: str | Sequence[str] | None,
    limit: int | None,
    offset: int | None,
) -> tuple[str, list[Any]]:
    sql = head
    bound: list[Any] = []
    if isinstance(where, Condition):
        sql += f" WHERE {where.sql}"
        bound.extend(where.params)
    elif where:
        sql += f" WHERE {where}"
    bound.extend(params)
    if order_by:
        sql += " ORDER BY " + ", ".join(_order_term(codec, term) for term in ([order_by] if isinstance(order_by, str) else order_by))
    if limit is not None:
        sql += " LIMIT ?"
        bound.append(int(limit))
    if offset is not None:
        if limit is None:
            sql += " LIMIT -1"
        sql += " OFFSET ?"
        bound.append(int(offset))
    return sql, [encode_param(value) for value in bound]


def _order_term(codec: RowCodec, term: str) -> str:
    """``"name"``, ``"-name"`` or ``"name desc"``: field names only, so nothing but identifiers reaches SQL."""
    text = term.strip()
    descending = text.startswith("-")
    text = text.lstrip("-").strip()
    match = re.fullmatch(r"(.+?)(?:\s+(asc|desc))?", text, re.IGNORECASE)
    assert match is not None
    name, direction = match.group(1), (match.group(2) or "").upper()
    if name not in codec.fields:
        raise ValueError(f"cannot order {codec.model.__name__} by {name!r}: not a field (fields: {', '.join(codec.fields)})")
    return f"{quote_identifier(name)} {'DESC' if descending or direction == 'DESC' else 'ASC'}"


_CONSTRAINT = re.compile(r"(UNIQUE|NOT NULL|CHECK|FOREIGN KEY|PRIMARY KEY) constraint failed(?::\s*(.*))?", re.IGNORECASE)


def _constraint_error(codec: RowCodec, error: sqlite3.IntegrityError) -> ConstraintError:
    match = _CONSTRAINT.search(str(error))
    kind = match.group(1).upper() if match else "constraint"
    detail = (match.group(2) or "").strip() if match else ""
    constraint = f"{kind} {detail}".strip()
    return ConstraintError(codec.name, constraint, f"write to table {codec.name!r} violates {constraint}; rolled back ({error})")
