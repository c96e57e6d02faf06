"""This database's identity as a replica: its node id, its clock and its change sequence.

Kept in ``_pydsqlite_node`` (one row), created on first use: the node id is made once per
database, the clock resumes from the last reading it stored (so a wall clock that went
back across a restart never makes this node stamp below its own past), and every change
takes the next sequence number (the cursor of ``changes_since``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .hlc import HLC, new_node_id

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
        conn: sqlite3.Connection,
        wall_clock: Callable[[], int] | None,
        max_drift_ms: int,
        transaction: Callable,
    ) -> None:
        self.conn = conn
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
        last = self.conn.execute(
            f"UPDATE {NODE_TABLE} SET seq = seq + ?, clock = ? WHERE id = 1 RETURNING seq", (count, str(clock.last))
        ).fetchone()[0]
        return int(last) - count + 1

    def current_seq(self) -> int:
        self.clock  # noqa: B018 - creates the tables on first use
        return int(self.conn.execute(f"SELECT seq FROM {NODE_TABLE} WHERE id = 1").fetchone()[0])

    def _state(self) -> tuple[str, str | None]:
        query = f"SELECT node_id, clock FROM {NODE_TABLE} WHERE id = 1"
        try:
            row = self.conn.execute(query).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is None:
            with self._transaction():
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {NODE_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
                    "node_id TEXT NOT NULL, seq INTEGER NOT NULL DEFAULT 0, clock TEXT)"
                )
                self.conn.execute(f"INSERT OR IGNORE INTO {NODE_TABLE} (id, node_id) VALUES (1, ?)", (new_node_id(),))
                self.conn.execute(CREATE_TOMBSTONES)
            row = self.conn.execute(query).fetchone()
        return row[0], row[1]
