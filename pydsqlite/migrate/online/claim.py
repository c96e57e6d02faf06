"""One online migrator per database: a claim row names the process running it, heartbeaten by
every step and taken over only once that process is gone (or silent for ``STALE_AFTER`` seconds)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from ...engines import Engine
from ...errors import MigrationError
from ..introspect import has_object
from ..metadata import ONLINE_PREFIX

STALE_AFTER = 60.0
"""Seconds without a heartbeat after which another process's claim counts as abandoned."""
CLAIM_TABLE = f"{ONLINE_PREFIX}_claim"
CREATE_CLAIM_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {CLAIM_TABLE} ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, heartbeat REAL NOT NULL)"
)
_POLL = 0.2
TAKEN_OVER = "another process took over this online migration (this one was paused too long); it stopped here"
"""The error of a migrator that lost its claim."""
_PROCESS = uuid.uuid4().hex
"""This interpreter's identity, the first part of each of its claims' tokens: a process restarted in
place (a container's PID 1, an ``exec``) has the pid of the one before it, whose claim is then dead."""


@dataclass
class Claim:
    """This process's claim on the database's online migration."""

    token: str = field(default_factory=lambda: f"{_PROCESS}:{uuid.uuid4().hex}")
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
        if host == self.host and pid == self.pid and not token.startswith(f"{_PROCESS}:"):
            return None  # the claim of the process this one replaced under the same pid
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

    def held(self, engine: Engine) -> bool:
        """Whether the claim is still this process's (inside a unit: another process cannot take it meanwhile)."""
        if not has_object(engine, CLAIM_TABLE):
            return False
        return engine.execute(f"SELECT 1 FROM {CLAIM_TABLE} WHERE id = 1 AND token = ?", (self.token,)).fetchone() is not None

    def heartbeat(self, engine: Engine) -> None:
        """Inside a step's transaction: refresh the claim, or stop if another process took it over."""
        cursor = engine.execute(f"UPDATE {CLAIM_TABLE} SET heartbeat = ? WHERE id = 1 AND token = ?", (time.time(), self.token))
        if cursor.rowcount != 1:
            raise MigrationError(TAKEN_OVER)


def wait_for_online_migrations(engine: Engine, busy_timeout: float | None) -> None:
    """Before an offline migration: wait (up to ``busy_timeout`` seconds, default 60) until no other
    process runs an online migration of the database, as a migrator waits for the write lock."""
    claim = Claim()
    timeout = 60.0 if busy_timeout is None else busy_timeout
    deadline = time.monotonic() + timeout
    while (holder := claim.holder(engine)) is not None:
        _wait_or_fail(holder, deadline, timeout)


def _wait_or_fail(holder: tuple[str, str, int, float], deadline: float, busy_timeout: float) -> None:
    if time.monotonic() >= deadline:
        _, host, pid, _ = holder
        who = f"another process (pid {pid} on {host})"
        if pid == os.getpid() and host == socket.gethostname():
            who = f"another thread or connection of this process (pid {pid} on {host})"
        raise MigrationError(f"{who} is running an online migration of this database; waited {busy_timeout:g} s for it to finish; nothing was changed")
    time.sleep(_POLL)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
