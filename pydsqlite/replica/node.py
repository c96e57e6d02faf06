"""This database's identity as a replica: its node id, its clock and its change sequence.

Kept in ``_pydsqlite_node`` (one row), created on first use: the node id is made once per
database, the clock resumes from the last reading it stored (so a wall clock that went
back across a restart never makes this node stamp below its own past), and every change
takes the next sequence number (the cursor of ``changes_since``), never below the latest time any
clock can have read (the wall clock plus the largest drift a clock may accept from peers) times
``SEQ_PER_MILLISECOND``: a file restored from a backup goes on numbering past every cursor a peer
kept before the restore, instead of reusing numbers it skips. Several ``Database``
objects (connections, processes) may serve one file: each write unit first catches its
clock up with the reading the file stored, so no writer stamps below what another wrote
or merged.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..engines import Engine
from .hlc import HLC, new_node_id, wall_millis

_SEQ_DRIFT_LIMIT_MS = 366 * 24 * 3600 * 1000
"""How far ahead of the wall clock sequence numbers run: past the largest drift a clock may accept (a
larger ``max_drift_ms`` counts as this much), whatever drift the writing clock accepts, and small
enough that numbers stay below 2**53 until the 23rd century."""

SEQ_PER_MILLISECOND = 1000
"""Sequence numbers run at least this fast with the clock: a thousand changes a millisecond before they
run ahead of it, and numbers stay below 2**53 (exact in JSON readers that hold them as doubles)."""

NODE_TABLE = "_pydsqlite_node"
TOMBSTONES = "_pydsqlite_tombstones"
CREATE_TOMBSTONES = (
    f"CREATE TABLE IF NOT EXISTS {TOMBSTONES} ("
    "table_name TEXT NOT NULL, key TEXT NOT NULL, deleted TEXT NOT NULL, state TEXT, seq INTEGER NOT NULL, "
    "PRIMARY KEY (table_name, key)) WITHOUT ROWID"
)


class Node:
    """Node id, clock and sequence numbers of one database, read or created lazily."""

    def __init__(
        self,
        engine: Engine,
        wall_clock: Callable[[], int] | None,
        max_drift_ms: int,
        transaction: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self.engine = engine
        self._wall_clock = wall_clock
        self._max_drift_ms = max_drift_ms
        self._transaction = transaction
        self._clock: HLC | None = None

    @property
    def clock(self) -> HLC:
        if self._clock is None:
            node, last = self._state()
            clock = HLC(node, self._wall_clock, max_drift_ms=self._max_drift_ms)
            if last:
                clock.restore(last)
            self._clock = clock
        return self._clock

    def allocate_seq(self, count: int) -> int:
        """Reserve ``count`` consecutive sequence numbers (inside the caller's write); returns the first.
        The clock's latest reading is stored with them."""
        clock = self.clock
        # the largest drift any writer of this file may accept, not this clock's: a writer with a smaller
        # max_drift_ms (another Database, or this one after a restart) must still number past them all
        horizon = max(clock.last.millis, wall_millis(clock.wall_clock) + _SEQ_DRIFT_LIMIT_MS)
        floor = horizon * SEQ_PER_MILLISECOND + count  # no reading a clock gave or took is later, even a peer's
        query = f"UPDATE {NODE_TABLE} SET seq = MAX(seq + ?, ?), clock = ? WHERE id = 1 RETURNING seq"
        row = self._read(query, (count, floor, str(clock.last)))
        return int(row[0]) - count + 1

    def catch_up(self) -> None:
        """Move the clock past the last reading stored in the file (inside a write unit, so the read
        and the writes that follow see one snapshot): another connection may have written or merged
        later timestamps since this clock last looked."""
        stored = self._read(f"SELECT clock FROM {NODE_TABLE} WHERE id = 1")[0]
        if stored:
            self.clock.restore(stored)

    def current_seq(self) -> int:
        self.clock  # noqa: B018 - creates the tables on first use
        return int(self._read(f"SELECT seq FROM {NODE_TABLE} WHERE id = 1")[0])

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        """One row of the node table. Its tables are created again, with this clock's node id, when the
        transaction that first created them was rolled back (a write that failed) after the clock was read."""
        row: tuple[Any, ...]
        try:
            row = self.engine.execute(query, params).fetchone()
            return row
        except self.engine.OperationalError as error:
            if "no such table" not in str(error):
                raise
        self._create(self.clock.node_id)
        row = self.engine.execute(query, params).fetchone()
        return row

    def _state(self) -> tuple[str, str | None]:
        query = f"SELECT node_id, clock FROM {NODE_TABLE} WHERE id = 1"
        try:
            row = self.engine.execute(query).fetchone()
        except self.engine.OperationalError:
            row = None
        if row is None:
            self._create(new_node_id())
            row = self.engine.execute(query).fetchone()
        return row[0], row[1]

    def _create(self, node_id: str) -> None:
        with self._transaction():
            self.engine.execute(
                f"CREATE TABLE IF NOT EXISTS {NODE_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
                "node_id TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0, clock TEXT)"
            )
            self.engine.execute(f"INSERT OR IGNORE INTO {NODE_TABLE} (id, node_id) VALUES (1, ?)", (node_id,))
            self.engine.execute(CREATE_TOMBSTONES)
