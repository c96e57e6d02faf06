"""Replica sync of tables with LWW columns: a change feed and a merge that converges.

The state of a key is its registers and its tombstone time (see ``changeset``); a row
is visible when some register is newer than its tombstone. Merging is commutative,
associative and idempotent, so replicas that have seen the same changes hold the same
rows in any order of exchange.

Every local write or merge that changes a row gives it this replica's next sequence
number (``_pydsqlite_seq``); ``changes_since(cursor)`` returns the rows and tombstones with a
higher number, so merged changes travel on (relays) without being re-stamped as local edits.

Deletes are seen by SQLite triggers whatever caused them (``delete_capture``): the
replica turns what they captured into tombstones and stamped writes before any other
operation (``settle_captured``), so local events keep their order. On a replica that
enforces foreign keys, a merge then settles the violations it left (``references``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..engines import Engine
from ..errors import SchemaMismatchError, UsageError
from ..errors import SyncError as SyncError  # re-exported: its historical home
from ..migrate.introspect import introspect
from ..rows.codec import RowCodec, codec_for
from ..schema.model import registered_models, table_options
from ..schema.objects import LWW_SUFFIX, SEQ_COLUMN, VERSION_COLUMN, fold_name
from ..sql.render import quote_identifier
from .capture import CAPTURED, DELETE_TRIGGER_PREFIX, CapturedEvent, take_captured
from .changeset import (
    ChangeSet,
    RowChange,
    TableShape,
    check_changes,
    key_from_text,
    key_text,
    merge_states,
    ties_on_different_values,
)
from .hlc import BASELINE, HLC, SETTLED_NODE, successor
from .node import CREATE_TOMBSTONES, NODE_TABLE, TOMBSTONES, Node
from .references import ReferenceGraph, ReferenceRepair, Revival, execute_in, select_in
from .states import (
    captured_state,
    local_state,
    row_state,
    state_columns,
    state_from_json,
    state_select,
    state_to_json,
    with_deleted,
)
from .stored_rows import canonical, require_storable, stamp_builder, stored_rows

__all__ = ["ChangeSet", "Replica", "RowChange", "Settled", "SyncError"]


@dataclass
class Settled:
    """What ``settle_captured`` recorded: the tombstones of deleted rows and the (table, key) of stamped writes."""

    deleted: list[RowChange] = field(default_factory=list)
    written: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class Replica:
    """Reads and writes the sync state of one database for ``Database``: its feed and its merges."""

    def __init__(self, engine: Engine, node: Node, transaction: Callable[[], AbstractContextManager[None]]) -> None:
        self.engine = engine
        self.node = node
        self.transaction = transaction
        self._graph: tuple[int, ReferenceGraph] | None = None
        self._settling = False
        """Whether a merge is running: see ``settling``."""

    @property
    def clock(self) -> HLC:
        return self.node.clock

    def allocate_seq(self, count: int) -> int:
        return self.node.allocate_seq(count)

    def next_seq(self) -> int:
        return self.node.allocate_seq(1)

    # --- the public feed and merge -------------------------------------------------------------

    def feed(self, cursor: int | None, models: Iterable[type[BaseModel]] | None) -> ChangeSet:
        """The changes after ``cursor``, read in one snapshot (deletes captured so far are recorded first).

        Refused inside an open transaction (but the one a PEP 249 connection always keeps): its writes
        may still roll back, and then the feed would carry rows that never were, with a cursor past
        sequence numbers the next writes reuse."""
        if self.engine.unit_open or (self.engine.in_transaction and not self.engine.pep249_mode):
            raise UsageError(
                "changes_since() reads committed changes only, and a transaction is open on this connection: its "
                "writes may still roll back, so the changeset would carry rows that never were and its cursor would "
                "skip the writes that reuse their sequence numbers; call it after the transaction ends"
            )
        if cursor is not None and (type(cursor) is not int or cursor < 0):
            raise UsageError(f"changes_since() takes a cursor from an earlier changeset of this replica (a non-negative int) or None, not {cursor!r}")
        codecs = self.synced_codecs(models)
        with self._writes_needed_by_the_feed():
            seq = self.node.current_seq()  # creates the node and tombstone tables before the read-only snapshot
        if cursor is not None and cursor > seq:
            raise SyncError(
                f"changes_since() was given cursor {cursor}, beyond this replica's feed (its last change is number {seq}): "
                "the cursor came from another replica's changeset, or this database was replaced or restored from a backup "
                "since; read everything once with changes_since(None) (merging it again is harmless) and keep its cursor"
            )
        if self.engine.pep249_mode and self._committed_seq(seq) not in (None, seq):
            raise UsageError(
                "changes_since() reads committed changes only, and this autocommit=False connection holds writes to "
                "synced tables that are not committed yet: call conn.commit() first (a rollback would leave the "
                "changeset carrying rows that never were, and its cursor skipping the writes that reuse their numbers)"
            )
        if self._deletes_captured():  # only then does the feed write (and wait for the write lock) first
            with self._writes_needed_by_the_feed(), self.transaction():
                self.begin_writes()
        with self.engine.read_snapshot():
            cursor_now = self.node.current_seq()
            changes = self.changes_since(list(codecs.values()), cursor)
        return ChangeSet(tuple(changes), cursor_now, self.clock.node_id)

    def _deletes_captured(self) -> bool:
        """Whether deletes made by SQL wait to be recorded as tombstones. A feed polled often takes
        the write lock only then: otherwise it would compete with the writers for it on every call
        (and could starve them: SQLite's lock is not fair), and would wait for each of them."""
        try:
            return self.engine.execute(f"SELECT 1 FROM {CAPTURED} LIMIT 1").fetchone() is not None
        except self.engine.OperationalError as error:
            if "no such table" in str(error):
                return False
            raise

    @contextmanager
    def _writes_needed_by_the_feed(self) -> Iterator[None]:
        """The feed first records as tombstones the deletes SQL made since the last pydsqlite call (and
        creates the replica's tables once): a read-only connection is told so, not SQLite's bare refusal."""
        try:
            yield
        except self.engine.OperationalError as error:
            code = getattr(error, "sqlite_errorcode", 0)
            if code == _SQLITE_BUSY_SNAPSHOT and self.engine.pep249_mode:
                raise UsageError(
                    "changes_since() must first write (it records, as tombstones, the deletes made by SQL, and creates "
                    "the replica's tables on first use), and this autocommit=False connection's transaction began before "
                    "another connection's writes, so SQLite cannot turn it into a write: call conn.commit() (or "
                    "conn.rollback()) first. Nothing was read"
                ) from error
            if code & 0xFF != _SQLITE_READONLY:
                raise
            raise UsageError(
                "changes_since() first records, as tombstones, the deletes made by SQL since the last pydsqlite call "
                "(so that the feed carries them), and creates the replica's tables on first use: both write, and this "
                "connection is read-only; read the feed through a connection that may write. Nothing was read"
            ) from error

    def _committed_seq(self, seq: int) -> int | None:
        """The sequence number the database file holds committed (0 before any sync write was committed);
        None where it cannot be read apart from this connection (an in-memory database). When the file
        cannot be read apart from it at all (this connection's refused commit keeps readers out), its
        own ``seq`` cannot be told committed: ``UsageError``."""
        try:
            created = self.engine.committed_scalar(f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{NODE_TABLE}'")
            if created is None:
                return None
            if not created:
                return 0
            committed = self.engine.committed_scalar(f"SELECT seq FROM {NODE_TABLE} WHERE id = 1")
        except self.engine.Error as error:
            raise UsageError(
                f"changes_since() reads committed changes only, and the committed state of the file cannot be read apart from "
                f"this autocommit=False connection's open transaction ({error}; a commit SQLite refused keeps other readers "
                f"out): call conn.commit() or conn.rollback() first (this connection's feed is at {seq}). Nothing was read"
            ) from error
        return None if committed is None else int(committed)

    def merge(self, changeset: ChangeSet, models: Iterable[type[BaseModel]] | None) -> int:
        """Check the whole changeset, advance the clock past it, then merge it table by table in one
        transaction; a replica that enforces foreign keys then settles what the merge left violated."""
        shapes = {name: TableShape.of(codec) for name, codec in self.synced_codecs(models).items()}
        stamps = check_changes(changeset.changes, shapes)
        self.node.current_seq()  # creates the node and tombstone tables
        with self.transaction():  # deletes made before the merge are stamped before what it receives
            self.begin_writes()
        if stamps:
            self.clock.receive(max(stamps))
        by_table: dict[str, list[RowChange]] = {}
        for change in changeset.changes:
            by_table.setdefault(fold_name(change.table), []).append(change)
        deletes_tried_first = False
        while True:
            joined: list[_TableMerge] = []
            repair: ReferenceRepair | None = None
            try:
                with self.transaction():
                    self.begin_writes()
                    repair = self._repair(shapes) if self._enforces_foreign_keys() else None
                    with _foreign_keys_deferred(self.engine, repair is not None), self.settling():
                        joined = [self._join(shapes[table], changes) for table, changes in by_table.items()]
                        changed = self._merge_tables(joined, repair, try_deletes_first=deletes_tried_first)
                        if repair is not None:
                            repair.bring_back_followers([(merge.codec.name, merge.revived) for merge in joined if merge.revived])
                            repair.run()
                return changed
            except self.engine.IntegrityError as error:  # a unique index, a deferred foreign key at commit: nothing was applied
                gone = {(fold_name(merge.codec.name), key_text(change.key)): merge.deleted for merge in joined for change in merge.gone}
                written = [change for merge in joined for change in merge.alive] if joined else list(changeset.changes)
                refusal, freed_by_delete = self._unique_refusal(
                    error, written, gone, deletes_tried_first=deletes_tried_first, revivals=repair.revivals if repair else ()
                )
                if freed_by_delete and not deletes_tried_first:
                    deletes_tried_first = True  # once more, deleting first where that reaches no written row
                    continue
                raise refusal or SyncError(f"the merged changeset violates a constraint: {error}; nothing was applied") from error

    def _unique_refusal(
        self,
        error: Exception,
        changes: Iterable[RowChange],
        gone: dict[tuple[str, str], str | None],
        *,
        deletes_tried_first: bool,
        revivals: Sequence[Revival] = (),
    ) -> tuple[SyncError | None, bool]:
        """A merge refused by a unique index (not the key) as ``SyncError`` naming the table, the
        incoming row (``changes``: the rows the merge wrote, as merged) and the row that holds its
        value here (read after the rollback); None for other
        constraints. SQLite checks unique indexes row by row, so values swapped between rows, or one
        value given to different keys on two replicas, cannot merge until a write settles them.
        Also says whether the holder is a row the merge deletes (``gone``: table and key text of
        each), a value freed and given again: the merge is then tried once more with deletes first
        (``deletes_tried_first``: it was)."""
        match = _UNIQUE_FAILED.search(str(error))
        if match is None or "." not in match.group(1):
            return None, False
        names = [name.strip().rsplit(".", 1) for name in match.group(1).split(",")]
        table, columns = names[0][0], [column for _, column in names]
        incoming = [change for change in changes if fold_name(change.table) == fold_name(table) and change.alive]
        advice = (
            "SQLite checks a unique index row by row, so rows that swapped values, or one value given to different keys "
            "by two replicas, cannot merge: update one of the rows (here or on the sender) to a value no other row holds, "
            "then exchange again (see 'Unique indexes on synced tables' in the sync guide); nothing was applied"
        )
        key_columns = [name for (name,) in self.engine.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (table,))]
        clashes: list[tuple[RowChange, tuple[Any, ...], str]] = []  # (incoming row, the row holding its value here, shown)
        for change in incoming:
            values = [change.columns[name][1] if name in change.columns else change.values.get(name) for name in columns]
            if any(value is None for value in values):
                continue
            where = " AND ".join(f"{quote_identifier(name)} = ?" for name in columns)
            shown = ", ".join(f"{name} = {value!r}" for name, value in zip(columns, values, strict=True))
            for row in self.engine.execute(
                f"SELECT {', '.join(quote_identifier(name) for name in key_columns)} FROM {quote_identifier(table)} WHERE {where}", values
            ):
                if key_text(tuple(row)) != key_text(change.key):
                    clashes.append((change, tuple(row), shown))
        # a holder the merge deletes is the cause only when nothing else clashes (the rollback brought it back
        # here), and one it deleted first only when a reference can have kept it
        kept_possible = self._enforces_foreign_keys()
        ranked = sorted(
            (clash for clash in clashes if kept_possible or gone.get((fold_name(table), key_text(clash[1]))) != _DELETED_FIRST),
            key=lambda clash: (fold_name(table), key_text(clash[1])) in gone,
        )
        for change, holder, shown in ranked[:1]:
            held = f"the merged changeset violates the unique index on {table}({', '.join(columns)}): it gives {shown} to the row with key {change.key!r}, which the row with key {holder!r} holds here"
            if (fold_name(table), key_text(holder)) in gone:
                if gone[(fold_name(table), key_text(holder))] in (_DELETED_FIRST, _RESTRICTED):  # a reference keeps it: a conflict
                    return SyncError(
                        f"{held}: the changeset deletes that row, but rows here reference it, and a reference beats a "
                        "concurrent delete (NO ACTION and RESTRICT keep the row), so two rows want one value. "
                        f"Settle it: give one of the two rows another value (here or on the sender), or remove the references "
                        f"to the row with key {holder!r} here, then exchange again; nothing was applied",
                        table=table, key=change.key,
                    ), False
                return SyncError(
                    f"{held} until the changeset deletes it: that delete has to wait for the rows the changeset writes, "
                    "as its ON DELETE actions reach them, so the value is still taken when the new row is written. "
                    f"Settle it on the sender: give the row with key {change.key!r} a value no other row holds, exchange, "
                    "then set the value again (updating the deleted row here would bring it back); nothing was applied",
                    table=table, key=change.key,
                ), not deletes_tried_first
            swapped = any(key_text(other.key) == key_text(holder) for other in incoming)
            return SyncError(
                held + (" (the changeset gives that row another value: the values were swapped)" if swapped else "") + f"; {advice}",
                table=table, key=change.key,
            ), False
        for revival in revivals:
            refusal = self._revival_refusal(revival, table, columns, key_columns)
            if refusal is not None:
                return refusal, False
        return SyncError(f"the merged changeset violates the unique index on {table}({', '.join(columns)}) ({error}); {advice}", table=table), False

    def _revival_refusal(self, revival: Revival, table: str, columns: list[str], key_columns: list[str]) -> SyncError | None:
        """The refusal of a merge whose settling brought back a deleted row (an incoming row references
        it, and a reference beats a delete) whose unique value another row took here meanwhile."""
        state = revival.state
        if fold_name(state.table) != fold_name(table):
            return None
        values = [state.columns[name][1] if name in state.columns else state.values.get(name) for name in columns]
        if any(value is None for value in values):
            return None
        where = " AND ".join(f"{quote_identifier(name)} = ?" for name in columns)
        holders = self.engine.execute(
            f"SELECT {', '.join(quote_identifier(name) for name in key_columns)} FROM {quote_identifier(table)} WHERE {where}", values
        ).fetchall()
        holder = next((tuple(row) for row in holders if key_text(tuple(row)) != key_text(state.key)), None)
        if holder is None:
            return None
        shown = ", ".join(f"{name} = {value!r}" for name, value in zip(columns, values, strict=True))
        return SyncError(
            f"the merged changeset's row with key {revival.child_key!r} of table {revival.child_table!r} references the row "
            f"with key {state.key!r} of {table}, which was deleted here; a reference beats a concurrent delete, so the merge "
            f"brings that row back, but its value ({shown}) is now held by the row with key {holder!r} (the unique index on "
            f"{table}({', '.join(columns)})). Settle it: remove that reference (delete the row with key {revival.child_key!r}, "
            "or point it at another row, on the sender), or give one of the two rows another value, then exchange again; "
            "nothing was applied",
            table=revival.child_table, key=revival.child_key,
        )

    def begin_writes(self) -> None:
        """What every write unit does first: catch the clock up with the file (another connection may
        have stamped later), then record the deletes made by SQL since the last unit."""
        self.node.catch_up()
        self.settle_captured()

    def synced_codecs(self, models: Iterable[type[BaseModel]] | None) -> dict[str, RowCodec]:
        """Codecs of the synced tables (models with LWW columns) that exist in this database."""
        codecs = self._present_synced(models)
        for codec in codecs.values():
            if codec.auto_key is not None:
                raise SyncError(
                    f"table {codec.name!r} cannot sync: its key {codec.auto_key!r} is assigned by SQLite, so two "
                    "replicas would give the same id to different rows; use a key the writer chooses (a UUID)"
                )
            for name in codec.key:
                collate = codec.table.column(name).collate  # type: ignore[union-attr]
                if collate is not None and collate.upper() != "BINARY":
                    raise SyncError(
                        f"table {codec.name!r} cannot sync: its key column {name!r} compares with COLLATE {collate}, so "
                        "keys such as 'abc' and 'ABC' would be one row to SQLite but two rows to the replicas, which "
                        "then never agree; drop the collation from the key column (store a normalised key instead)"
                    )
        return codecs

    def _present_synced(self, models: Iterable[type[BaseModel]] | None) -> dict[str, RowCodec]:
        """Codecs of the chosen models (the registry's latest per table when None) whose tables exist.

        A model and a table that disagree on whether the table syncs are refused rather than left out:
        leaving the table out would make every changeset silently miss its rows. So is a synced model
        the caller names whose table is missing (a mistyped path opens a new, empty file).
        """
        synced_here = {
            fold_name(name): sql is not None and SEQ_COLUMN in sql
            for name, sql in self.engine.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        }
        chosen = registered_models() if models is None else list(models)
        codecs = {}
        for model in chosen:
            options = table_options(model)
            if options is None:
                continue
            if fold_name(options.table) not in synced_here:
                if models is not None and codec_for(model).synced:  # named by the caller: not some other database's model
                    raise SchemaMismatchError(
                        options.table, None,
                        f"table {options.table!r} of {model.__qualname__} does not exist in this database (is it the right "
                        "file?): run sync_models(conn, [...]) with the model first. Nothing was read or written",
                    )
                continue
            codec = codec_for(model)
            if codec.synced != synced_here[fold_name(options.table)]:
                raise _sync_state_mismatch(model, codec, from_registry=models is None)
            if codec.synced:
                codecs[fold_name(codec.name)] = codec
        return codecs

    # --- foreign keys --------------------------------------------------------------------------

    def _enforces_foreign_keys(self) -> bool:
        return bool(self.engine.execute("PRAGMA foreign_keys").fetchone()[0])

    def _repair(self, shapes: dict[str, TableShape]) -> ReferenceRepair | None:
        """The settling of one merge: the foreign keys of the live schema (re-read only after a schema
        change) and every synced table a model here describes; None when there are no foreign keys."""
        version = self.engine.execute("PRAGMA schema_version").fetchone()[0]
        if self._graph is None or self._graph[0] != version:
            self._graph = (version, ReferenceGraph(introspect(self.engine)))
        if not self._graph[1].outgoing:
            return None
        codecs = {name: codec for name, codec in self._present_synced(None).items() if codec.auto_key is None}
        codecs.update({name: shape.codec for name, shape in shapes.items()})
        return ReferenceRepair(self, self._graph[1], codecs)

    # --- local writes ----------------------------------------------------------------------

    def ensure_tables(self) -> None:
        self.engine.execute(CREATE_TOMBSTONES)

    def revive(self, keys: list[tuple[Any, ...]], codec: RowCodec, first_seq: int) -> None:
        """Local inserts of deleted keys make them visible again (their registers are all newer than the
        tombstone): the tombstones keep their time but no longer hold the row."""
        dead = self.engine.execute(
            f"SELECT 1 FROM {TOMBSTONES} WHERE table_name = ? AND state IS NOT NULL LIMIT 1", (codec.name,)
        ).fetchone()
        if dead is None:
            return
        self.engine.executemany(
            f"UPDATE {TOMBSTONES} SET state = NULL, seq = ? WHERE table_name = ? AND key = ? AND state IS NOT NULL",
            [(first_seq + position, codec.name, key_text(key)) for position, key in enumerate(keys)],
        )

    def touch_deleted(self, codec: RowCodec, key: tuple[Any, ...], lww: Collection[str], *, version: bool) -> bool:
        """Stamp the ``lww`` registers (and the row version when ``version``) that the deleted row
        ``key`` keeps, then its deletion, anew: this replica's kept values and its deletion win the
        next merge, and the row stays deleted. False when no deleted row of that key is known. Inside a
        write unit, which has settled deletes made by SQL into tombstones first."""
        found = self.engine.execute(
            f"SELECT deleted, state FROM {TOMBSTONES} WHERE table_name = ? AND key = ? AND state IS NOT NULL",
            (codec.name, key_text(key)),
        ).fetchone()
        if found is None:
            return False
        kept = state_from_json(codec, key, found[1], found[0])
        registers = str(self.clock.now())
        deleted = str(self.clock.now())  # after the registers: they do not revive the row
        state = RowChange(
            codec.name, key,
            {name: (registers, value) if name in lww else (stamp, value) for name, (stamp, value) in kept.columns.items()},
            registers if version else kept.version, kept.values, deleted,
        )
        self.engine.execute(
            f"UPDATE {TOMBSTONES} SET deleted = ?, state = ?, seq = ? WHERE table_name = ? AND key = ?",
            (deleted, state_to_json(state), self.node.allocate_seq(1), codec.name, key_text(key)),
        )
        return True

    def delete(self, codec: RowCodec, key: tuple[Any, ...]) -> bool:
        """Delete one row; its capture trigger records it, and it becomes a tombstone stamped now
        (with whatever its foreign keys' actions did to other rows)."""
        settled = self.delete_row(codec, key)
        if settled is None:
            return False
        if not any(fold_name(state.table) == fold_name(codec.name) for state in settled.deleted):
            raise SyncError(
                f"table {codec.name!r} has no delete capture trigger ({DELETE_TRIGGER_PREFIX}{codec.name}); it was synced "
                "by an older pydsqlite: run sync_models so that deletes sync"
            )
        return True

    def delete_row(self, codec: RowCodec, key: tuple[Any, ...]) -> Settled | None:
        """DELETE one row by key and record what that did; None when no row had that key. The row's
        registers are RETURNed only so that a table behind its model fails (no such column) before
        anything is deleted."""
        registers = ", ".join(quote_identifier(name) for name in (*codec.fields, *(name + LWW_SUFFIX for name in codec.lww), VERSION_COLUMN))
        deleted = self.engine.execute(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()} RETURNING {registers}", key).fetchall()
        return self.settle_captured(own_statement=True) if deleted else None

    def restore_rows(self, codec: RowCodec, states: list[RowChange], *, after_tombstone: bool = False) -> None:
        """Make dead rows visible again with their last values (a local write). Only the row version is
        stamped now, which outlives the tombstone: the LWW registers keep their times, so an older
        edit of them that arrives after the revival still wins where it is newer, as it would have
        before it (the group of plain columns shares the version, so it is taken as it is now).
        ``after_tombstone``: the version is the successor of the tombstone instead, as a settlement's
        stamp (every replica undoing the same settlement stamps alike)."""
        now = str(self.clock.now())
        first = self.allocate_seq(len(states))
        restored = [
            RowChange(s.table, s.key, dict(s.columns), successor(s.deleted) if after_tombstone and s.deleted else now, s.values, s.deleted)
            for s in states
        ]
        self._write_rows(codec, restored, first)
        self._write_tombstones([(state, first + n, False) for n, state in enumerate(restored)])

    def set_columns(self, codec: RowCodec, key: tuple[Any, ...], assignments: dict[str, str]) -> None:
        """Set columns of one row to SQL expressions (NULL, a default): a merge's settlement of a foreign
        key, each register stamped just after the one it replaces (``settling``)."""
        lww = {fold_name(name) for name in codec.lww}
        stamped = _stamp_columns(assignments, lambda name: fold_name(name) in lww)
        stamps = self._successors(codec.name, codec.key, key, stamped)
        self._stamp_row(codec.name, codec.key, key, dict(zip(stamped, stamps, strict=True)), self.next_seq(), assignments)

    def _stamp_row(
        self,
        table: str,
        key_columns: Iterable[str],
        key: tuple[Any, ...],
        stamps: dict[str, str],
        seq: int,
        assignments: dict[str, str] | None = None,
    ) -> None:
        """UPDATE one row: ``assignments`` (SQL expressions), its timestamp columns to ``stamps``, its sequence number."""
        terms = [f"{quote_identifier(name)} = {expression}" for name, expression in (assignments or {}).items()]
        terms += [f"{quote_identifier(name)} = ?" for name in (*stamps, SEQ_COLUMN)]
        where = " AND ".join(f"{quote_identifier(name)} = ?" for name in key_columns)
        self.engine.execute(f"UPDATE {quote_identifier(table)} SET {', '.join(terms)} WHERE {where}", [*stamps.values(), seq, *key])

    def dead_states(self, codec: RowCodec, key: tuple[Any, ...] | None = None, *, settled_only: bool = False) -> list[RowChange]:
        """The registers of the table's deleted rows (of one key, if given; only those a settlement
        deleted, stamped under ``hlc.SETTLED_NODE``, if ``settled_only``)."""
        query = f"SELECT key, deleted, state FROM {TOMBSTONES} WHERE table_name = ? AND state IS NOT NULL"
        params: tuple[Any, ...] = (codec.name,)
        if key is not None:
            query += " AND key = ?"
            params += (key_text(key),)
        if settled_only:
            query += f" AND substr(deleted, -{len(SETTLED_NODE)}) = ?"
            params += (SETTLED_NODE,)
        return [state_from_json(codec, key_from_text(text), state, deleted) for text, deleted, state in self.engine.execute(query, params)]

    # --- deletes and writes the capture triggers saw -------------------------------------------

    def settle_captured(self, exclude: Collection[tuple[str, str]] = (), *, own_statement: bool = False) -> Settled:
        """Turn what the capture triggers recorded into local events stamped now: a tombstone per deleted
        row (with the registers it held), stamped registers for foreign-key columns an action changed.

        ``exclude`` holds (folded table, key text) of deletes a merge made itself: they carry the
        merged tombstone instead. A row deleted and then inserted again by the application before
        this ran counts as deleted, then written anew; ``own_statement`` says the events come from a
        statement pydsqlite just ran, so no row can have been written again since."""
        events = take_captured(self.engine)
        deletes: dict[tuple[str, str], RowChange] = {}
        writes: dict[tuple[str, str], tuple[CapturedEvent, set[str]]] = {}
        for event in events:
            ident = (fold_name(event.table), key_text(event.key))
            if ident in exclude:
                continue
            if event.kind == "delete":
                deletes[ident] = merge_states(deletes.get(ident), captured_state(event))
            else:
                writes.setdefault(ident, (event, set()))[1].update(
                    name for name, (role, _, _) in event.columns.items() if role != "key"
                )
        if not deletes and not writes:
            return Settled()
        now = str(self.clock.now())
        first = self.allocate_seq(len(deletes) + len(writes))
        if self._settling:
            dead = [with_deleted(state, successor(max(state.timestamps()))) for state in deletes.values()]
        else:
            dead = [with_deleted(state, now) for state in deletes.values()]
        self._write_tombstones([(state, first + n, True) for n, state in enumerate(dead)])
        if not own_statement:
            self._restamp_rows_written_again(dead, {fold_name(event.table): event.key_columns for event in events})
        for seq, (event, columns) in enumerate(writes.values(), start=first + len(dead)):
            stamped = _stamp_columns(columns, lambda name: event.columns[name][0] == "lww")  # noqa: B023 - called at once
            stamps = self._successors(event.table, event.key_columns, event.key, stamped) if self._settling else [now] * len(stamped)
            self._stamp_row(event.table, event.key_columns, event.key, dict(zip(stamped, stamps, strict=True)), seq)
        return Settled(dead, [(event.table, event.key) for event, _ in writes.values()])

    @contextmanager
    def settling(self) -> Iterator[None]:
        """While a merge runs: what its deletes' foreign-key actions do, and how it settles the
        violations it left, are stamped just after the state of the row they change (``successor``),
        not at the time of the merge. A write made after seeing that state, such as a move of the
        child to a live parent, then wins whichever of the two a replica receives first."""
        self._settling = True
        try:
            yield
        finally:
            self._settling = False

    def _successors(self, table: str, key_columns: Iterable[str], key: tuple[Any, ...], stamped: list[str]) -> list[str]:
        """The successor of each of the row's timestamp columns ``stamped`` as it holds them now."""
        where = " AND ".join(f"{quote_identifier(name)} = ?" for name in key_columns)
        row = self.engine.execute(
            f"SELECT {', '.join(quote_identifier(name) for name in stamped)} FROM {quote_identifier(table)} WHERE {where}", key
        ).fetchone()
        return [successor(stamp if isinstance(stamp, str) else BASELINE) for stamp in (row or [None] * len(stamped))]

    def _restamp_rows_written_again(self, dead: list[RowChange], key_columns: dict[str, tuple[str, ...]]) -> None:
        by_table: dict[str, list[RowChange]] = {}
        for state in dead:
            by_table.setdefault(fold_name(state.table), []).append(state)
        again: list[RowChange] = []
        for table, states in by_table.items():
            names = key_columns[table]
            present = {
                key_text(tuple(row))
                for row in _rows_with_keys(self.engine, quote_identifier(states[0].table), names, [s.key for s in states], names)
            }
            again.extend(state for state in states if key_text(state.key) in present)
        if not again:
            return
        now = str(self.clock.now())
        first = self.allocate_seq(len(again))
        for seq, state in enumerate(again, start=first):
            stamped = [name + LWW_SUFFIX for name in state.columns] + [VERSION_COLUMN]
            self._stamp_row(state.table, key_columns[fold_name(state.table)], state.key, dict.fromkeys(stamped, now), seq)
        self._write_tombstones([(state, first + n, False) for n, state in enumerate(again)])

    # --- the feed --------------------------------------------------------------------------

    def changes_since(self, codecs: list[RowCodec], cursor: int | None) -> list[RowChange]:
        after = -1 if cursor is None else cursor
        changes: list[RowChange] = []
        for codec in codecs:
            deleted_at = dict(
                self.engine.execute(f"SELECT key, deleted FROM {TOMBSTONES} WHERE table_name = ?", (codec.name,)).fetchall()
            )
            for row in self.engine.execute(f"{state_select(codec)} WHERE {quote_identifier(SEQ_COLUMN)} > ?", (after,)):
                state = row_state(codec, row, None)
                changes.append(with_deleted(state, deleted_at.get(key_text(state.key))))
            for key, deleted, state in self.engine.execute(
                f"SELECT key, deleted, state FROM {TOMBSTONES} WHERE table_name = ? AND seq > ? AND state IS NOT NULL",
                (codec.name, after),
            ):
                changes.append(state_from_json(codec, key_from_text(key), state, deleted))
        return changes

    # --- merging ---------------------------------------------------------------------------

    def _join(self, shape: TableShape, remotes: list[RowChange]) -> _TableMerge:
        """Join the remote states of one table with the local ones (read in bulk); nothing is written yet.

        A local row whose every register is older than the incoming state's (or newer, with no
        incoming tombstone) is settled from its stored tuple, without building its state: the
        common case of a merge, where one side simply happened later."""
        codec = shape.codec
        identity = _key_identity(shape)
        incoming: dict[Any, RowChange] = {}
        for remote in remotes:
            if remote.table != codec.name:  # another spelling of the name (SQLite's names ignore ASCII case)
                remote = RowChange(codec.name, remote.key, remote.columns, remote.version, remote.values, remote.deleted)
            name = identity(remote.key)
            earlier = incoming.get(name)
            incoming[name] = remote if earlier is None else merge_states(earlier, remote)
        live = self._read_rows(codec, [change.key for change in incoming.values()], identity)
        tombstones = self._read_tombstones(codec)
        by_text = identity is key_text
        compare = _RegisterOrder(codec)
        merge = _TableMerge(codec)
        for name, remote in incoming.items():
            row = live.get(name)
            tombstone = (tombstones.get(name if by_text else key_text(remote.key)) if tombstones else None)
            if tombstone is None:
                order = _REMOTE_NEWER if row is None else compare(row, remote)  # a key new here joins as it came
            else:
                order = _MIXED
            if order is _REMOTE_OLDER and remote.deleted is None:
                continue  # the local row wins every register: the join is the local state
            if order is _REMOTE_NEWER:
                merged = remote  # every register is the remote one, and so is the tombstone time
            else:
                local = local_state(None if row is None else row_state(codec, row, None), tombstone, codec, remote.key)
                if local is not None and local.alive and remote.alive and ties_on_different_values(local, remote):
                    merged = merge_states(canonical(codec, local), canonical(codec, remote))
                else:
                    merged = merge_states(local, remote)
                if local is not None and merged == local:
                    continue
            if merged.alive:
                merge.alive.append(merged)
                if row is None and tombstone is not None and tombstone[1] is not None and tombstone[0].endswith(SETTLED_NODE):
                    merge.revived.append(merged)
            else:
                merge.dead.append(merged)
                if row is not None:
                    merge.gone.append(merged)
        return merge

    def _merge_tables(self, merges: list[_TableMerge], repair: ReferenceRepair | None, *, try_deletes_first: bool = False) -> int:
        """Write every table's joined rows and tombstones, then delete the rows that died: ON DELETE
        actions then reach rows as merged, and only what they do to rows the merge does not delete
        itself is a local event. Rows of a table whose actions can reach no row the merge writes (no
        table referencing it, directly or through others, gets merged rows) die first instead, so a
        unique value the sender freed by a delete and gave to a new row is free here too.
        ``try_deletes_first``: the other tables' rows die first as well where their actions, tried,
        reach none of the rows the merge writes (the order then changes nothing else). Returns how
        many keys changed."""
        changed = sum(len(merge.alive) + len(merge.dead) for merge in merges)
        if not changed:
            return 0
        own = {(fold_name(merge.codec.name), key_text(change.key)) for merge in merges for change in merge.dead}
        written = {fold_name(merge.codec.name) for merge in merges if merge.alive}
        first = {
            id(merge) for merge in merges
            if merge.gone and (repair is None or not _descendants(repair.graph, merge.codec.name) & written)
        }
        for merge in merges:
            if id(merge) in first:
                self._delete_gone(merge, own, repair)
                merge.deleted = _DELETED_FIRST
        if try_deletes_first:
            writes = {(fold_name(merge.codec.name), key_text(change.key)) for merge in merges for change in merge.alive}
            first.update(
                id(merge) for merge in merges
                if merge.gone and id(merge) not in first and self._delete_gone_unless_reaching(merge, own, writes, repair)
            )
        seq = self.allocate_seq(changed)
        for merge in merges:
            codec, alive, dead = merge.codec, merge.alive, merge.dead
            if dead:  # kept in tombstones, they come back when a later write revives the row
                require_storable(codec, dead, stored_rows(codec, dead, "deleted row", dates_checked=False))
            self._write_rows(codec, alive, seq)
            marks = [(change, seq + n, False) for n, change in enumerate(alive) if change.deleted is not None]
            marks += [(change, seq + len(alive) + n, True) for n, change in enumerate(dead)]
            self._write_tombstones(marks)
            seq += len(alive) + len(dead)
            if repair is not None:
                repair.note_written(codec.name, [change.key for change in alive])
        for merge in merges:
            if merge.gone and id(merge) not in first:
                self._delete_gone(merge, own, repair)
        return changed

    def _delete_gone(self, merge: _TableMerge, own: set[tuple[str, str]], repair: ReferenceRepair | None) -> None:
        """Delete the rows of one table that the merge found dead; what their ON DELETE actions and
        triggers do to other rows (``own``: the merge's own dead keys excepted) is a local event."""
        self._note_deleted(merge, self._delete_rows(merge, own), repair)

    def _delete_gone_unless_reaching(
        self, merge: _TableMerge, own: set[tuple[str, str]], writes: set[tuple[str, str]], repair: ReferenceRepair | None
    ) -> bool:
        """Delete the merge's dead rows of one table now, before the rows it writes, unless their ON
        DELETE actions reach one of those rows (``writes``: table and key text of each) or a RESTRICT
        refuses: then the deletes are undone (a savepoint) and wait. Whether they were made."""
        try:
            with self.transaction():
                settled = self._delete_rows(merge, own)
                reached = [(fold_name(state.table), key_text(state.key)) for state in settled.deleted]
                reached += [(fold_name(table), key_text(key)) for table, key in settled.written]
                if any(pair in writes for pair in reached):
                    raise _ReachesMergedRows
        except _ReachesMergedRows:
            merge.deleted = _REACHES_MERGED_ROWS
            return False
        except self.engine.IntegrityError:
            merge.deleted = _RESTRICTED
            return False
        self._note_deleted(merge, settled, repair)
        merge.deleted = _DELETED_FIRST
        return True

    def _delete_rows(self, merge: _TableMerge, own: set[tuple[str, str]]) -> Settled:
        """The DELETE statements of ``_delete_gone`` and what the capture triggers saw them do."""
        codec = merge.codec
        if self.engine.batch_rows:  # a statement per chunk of keys, not per key
            key = ", ".join(quote_identifier(name) for name in codec.key)
            execute_in(self.engine, f"DELETE FROM {codec.quoted_table} WHERE ({key}) IN", len(codec.key), [tuple(change.key) for change in merge.gone])
        else:
            self.engine.executemany(f"DELETE FROM {codec.quoted_table} WHERE {codec.key_where()}", [change.key for change in merge.gone])
        return self.settle_captured(exclude=own)

    @staticmethod
    def _note_deleted(merge: _TableMerge, settled: Settled, repair: ReferenceRepair | None) -> None:
        if repair is not None:
            repair.note_deleted(merge.codec.name, merge.gone)
            repair.note_settled(settled)

    def _read_rows(self, codec: RowCodec, keys: list[tuple[Any, ...]], identity: Callable[[tuple[Any, ...]], Any]) -> dict[Any, tuple[Any, ...]]:
        """The stored rows with these keys in ``state_select``'s column order, by their key's
        ``identity``: chunked ``IN (VALUES …)`` lookups, or one scan of the table when the keys are
        at least half its rows (a scan reads a row in about the time a lookup finds one)."""
        width = len(codec.key)
        if identity is _same_key and len(keys) >= _SCAN_FROM_KEYS and self._rows_at_most(codec, 2 * len(keys)):
            wanted = set(keys)
            return {key: row for row in self.engine.execute(state_select(codec)) if (key := row[:width]) in wanted}
        return {identity(row[:width]): row for row in _rows_with_keys(self.engine, codec.quoted_table, codec.key, keys, state_columns(codec))}

    def _rows_at_most(self, codec: RowCodec, count: int) -> bool:
        """Whether the table surely holds at most ``count`` rows: the span of its rowids says so in two
        index steps (gaps only make it wider); a table without rowids never says so."""
        table = codec.quoted_table
        try:
            largest, smallest = self.engine.execute(f"SELECT (SELECT max(_rowid_) FROM {table}), (SELECT min(_rowid_) FROM {table})").fetchone()
        except self.engine.OperationalError:  # WITHOUT ROWID
            return False
        if largest is None:
            return True
        return isinstance(largest, int) and isinstance(smallest, int) and largest - smallest < count

    def _read_tombstones(self, codec: RowCodec) -> dict[str, tuple[str, str | None]]:
        rows = self.engine.execute(f"SELECT key, deleted, state FROM {TOMBSTONES} WHERE table_name = ?", (codec.name,))
        return {key: (deleted, state) for key, deleted, state in rows}

    def _write_rows(self, codec: RowCodec, states: list[RowChange], first_seq: int) -> None:
        """Validate the visible merged rows through the model, then upsert them."""
        if not states:
            return
        rows = stored_rows(codec, states, "merged row")
        stamp_builder(tuple(codec.lww))(rows, states, first_seq)
        names = [*codec.fields, *(name + LWW_SUFFIX for name in codec.lww), VERSION_COLUMN, SEQ_COLUMN]
        updates = ", ".join(f"{quote_identifier(n)} = excluded.{quote_identifier(n)}" for n in names if n not in codec.key)
        self.engine.insert_rows(
            f"INSERT INTO {codec.quoted_table} ({', '.join(quote_identifier(n) for n in names)})",
            rows,
            f" ON CONFLICT ({', '.join(quote_identifier(n) for n in codec.key)}) DO UPDATE SET {updates}",
        )

    def _write_tombstones(self, marks: list[tuple[RowChange, int, bool]]) -> None:
        """Record tombstone times; a dead row's registers go with it, a visible row's stay in its table."""
        if not marks:
            return
        self.ensure_tables()
        self.engine.insert_rows(
            f"INSERT OR REPLACE INTO {TOMBSTONES} (table_name, key, deleted, state, seq)",
            [
                (change.table, key_text(change.key), change.deleted, state_to_json(change) if keep else None, seq)
                for change, seq, keep in marks
            ],
        )


def _descendants(graph: ReferenceGraph, table: str) -> set[str]:
    """The tables (folded names) that reference ``table``, directly or through other tables."""
    found: set[str] = set()
    pending = [fold_name(table)]
    while pending:
        for link in graph.incoming.get(pending.pop(), ()):
            child = fold_name(link.child.name)
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


@dataclass
class _TableMerge:
    """One table's part of a merge: joined states that are visible, that are dead, and the dead ones
    that are still rows here (to delete)."""

    codec: RowCodec
    alive: list[RowChange] = field(default_factory=list)
    dead: list[RowChange] = field(default_factory=list)
    gone: list[RowChange] = field(default_factory=list)
    revived: list[RowChange] = field(default_factory=list)
    """Rows a settlement had deleted here that the merge brings back (a later write beats it)."""
    deleted: str | None = None
    """How the gone rows fared before the writes: deleted first, or why not (for a refusal's message)."""


_DELETED_FIRST = "deleted first"
_REACHES_MERGED_ROWS = "its ON DELETE actions reach rows the changeset writes"
_RESTRICTED = "a RESTRICT refused it"


class _ReachesMergedRows(Exception):
    """Undoes a delete tried before the merge's writes whose ON DELETE actions reached one of them."""


@contextmanager
def _foreign_keys_deferred(engine: Engine, enabled: bool) -> Iterator[None]:
    """Check foreign keys at commit instead of per statement while a merge runs (the caller's
    setting is restored after): a merge writes rows whose parents it settles afterwards.
    Deferred, SQLite still runs CASCADE and SET NULL / SET DEFAULT actions at once."""
    if not enabled:
        yield
        return
    before = engine.pragma("defer_foreign_keys")
    engine.set_pragma("defer_foreign_keys", "ON")
    try:
        yield
    finally:
        if not engine.connection_lost:  # a lost connection has nothing to restore
            engine.set_pragma("defer_foreign_keys", "ON" if before else "OFF")


def _rows_with_keys(
    engine: Engine, quoted_table: str, key: Iterable[str], keys: list[tuple[Any, ...]], columns: Iterable[str]
) -> Iterator[tuple[Any, ...]]:
    """``columns`` of the rows whose ``key`` columns hold one of ``keys``."""
    key = list(key)
    head = f"SELECT {', '.join(quote_identifier(n) for n in columns)} FROM {quoted_table} WHERE ({', '.join(quote_identifier(n) for n in key)}) IN"
    return select_in(engine, head, len(key), keys)


def _key_identity(shape: TableShape) -> Callable[[tuple[Any, ...]], Any]:
    """What tells this table's keys apart in a merge: the key tuple itself when every key column
    holds ints or strs (the changeset check pins the types, and they read back as the same values),
    else the key text (``1``, ``1.0`` and ``True`` are equal tuples but different keys)."""
    key_types = shape.key_types
    if key_types is not None and all(kind is int or kind is str for kind in key_types):
        return _same_key
    return key_text


def _same_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return key


_UNIQUE_FAILED = re.compile(r"UNIQUE constraint failed: (.+)")

_SQLITE_READONLY = 8
"""SQLite's primary result code for a write on a read-only connection or file."""
_SQLITE_BUSY_SNAPSHOT = 517
"""A read transaction that another connection's write has overtaken cannot become a write (WAL)."""

_SCAN_FROM_KEYS = 2000
"""A merge of fewer keys always looks them up: a scan would pay off only on a tiny table anyway."""

_REMOTE_NEWER, _REMOTE_OLDER, _MIXED = "remote newer", "remote older", "mixed"


class _RegisterOrder:
    """Compares an incoming state with a stored row (``state_select`` order) by timestamps alone:
    ``_REMOTE_NEWER`` when each incoming register is strictly later, ``_REMOTE_OLDER`` when each is
    strictly earlier, else ``_MIXED`` (ties and splits take the full join)."""

    def __init__(self, codec: RowCodec) -> None:
        width, count = len(codec.key), len(codec.lww)
        self.stamps = list(zip(codec.lww, range(width + count, width + 2 * count)))

    def __call__(self, row: tuple[Any, ...], remote: RowChange) -> str:
        try:
            later = remote.version > row[-1]
            if not later and not remote.version < row[-1]:
                return _MIXED
            columns = remote.columns
            for name, position in self.stamps:
                stamp = columns[name][0]
                if (stamp > row[position]) if later else (stamp < row[position]):
                    continue
                return _MIXED
        except TypeError:  # a stamp that is not text: the full join says what is wrong
            return _MIXED
        return _REMOTE_NEWER if later else _REMOTE_OLDER


def _stamp_columns(changed: Iterable[str], is_lww: Callable[[str], bool]) -> list[str]:
    """The timestamp columns a write to ``changed`` moves: each LWW column's own, the row version for the others."""
    changed = list(changed)
    stamped = [name + LWW_SUFFIX for name in changed if is_lww(name)]
    return stamped + ([VERSION_COLUMN] if len(stamped) < len(changed) else [])


def _sync_state_mismatch(model: type[BaseModel], codec: RowCodec, *, from_registry: bool) -> SchemaMismatchError:
    """The error for a model that marks LWW fields on a table the database does not sync, or the reverse."""
    chosen = (
        f"the latest model declared for it, {model.__qualname__}," if from_registry else f"the model {model.__qualname__}"
    )
    if codec.synced:
        message = (
            f"table {codec.name!r} does not sync in this database, but {chosen} marks LWW fields: the database is "
            "behind the model; run sync_models(conn, [...]) with it first"
        )
    else:
        message = (
            f"table {codec.name!r} syncs in this database (it has LWW columns), but {chosen} marks no LWW field, so "
            "its rows would be left out of the exchange"
        )
    if from_registry:
        message += "; pass models=[...] naming the models this database uses"
    return SchemaMismatchError(codec.name, None, message)
