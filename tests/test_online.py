"""Online rebuilds (``sync_models(..., online=True)``): other connections and processes keep
writing while a table is rebuilt; nothing they write is lost or applied twice, the end state
equals the offline rebuild after the same writes, and a migrator killed anywhere leaves the
original table intact for the next sync to finish the job."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Annotated

import pytest

from pydsqlite import (
    LWW,
    Database,
    DestructiveChangeError,
    ForeignKey,
    Index,
    MigrationError,
    MigrationPlan,
    PlanChangedError,
    PrimaryKey,
    SyncModel,
    Unique,
    UsageError,
    model_migration_plan,
    sync_models,
)
from pydsqlite.migrate.online import pacing
from pydsqlite.migrate.online.claim import CREATE_CLAIM_TABLE
from tests import online_worker
from tests.online_worker import Wide, make_database, replay

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(online_worker.__file__)
WRITER_ROWS = int(os.environ.get("PYDSQLITE_ONLINE_ROWS", online_worker.ROWS))
"""Rows of the table the writer process changes while it is rebuilt (the issue asks for 200k)."""
KILL_ROWS = int(os.environ.get("PYDSQLITE_ONLINE_KILL_ROWS", 20_000))
KILLS = int(os.environ.get("PYDSQLITE_ONLINE_KILLS", 10))
"""How many times the migrator is killed (at a random point of a phase taken in turn)."""


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _start(*args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True, env=_environment(), cwd=ROOT
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


class _Writer:
    """A process that keeps inserting, updating and deleting rows of ``items`` until stopped."""

    def __init__(self, directory: Path, db: Path, seed: int) -> None:
        self.log = directory / f"writes-{seed}.jsonl"
        self.stop_file = directory / f"stop-{seed}"
        self.process = _start("write", str(db), str(self.log), str(self.stop_file), str(seed))

    def writes(self) -> int:
        return self.log.read_text(encoding="utf-8").count("\n") if self.log.exists() else 0

    def wait_for_writes(self, count: int) -> None:
        while self.writes() < count:
            assert self.process.poll() is None, "the writer stopped"
            time.sleep(0.01)

    def stop(self) -> None:
        self.stop_file.touch()
        assert self.process.wait(timeout=120) == 0


def _copy_database(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)


def _rows(conn: sqlite3.Connection, table: str = "items") -> list[tuple]:
    return conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()


def _schema(conn: sqlite3.Connection) -> list[tuple]:
    """Every schema object's SQL; a table name as SQLite's rename writes it ("items"), as pydsqlite
    writes it (`items`) and bare count as the same (the online rebuild creates its indexes before
    the rename, which rewrites the table name in them)."""
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '\\_pydsqlite%' ESCAPE '\\' ORDER BY name")
    return [(kind, name, table, (sql or '').replace(f'"{table}"', table).replace(f"`{table}`", table)) for kind, name, table, sql in rows]


def _leftovers(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '\\_pydsqlite\\_online%' ESCAPE '\\'")]


def _offline_result(before: Path, logs: list[Path], directory: Path) -> sqlite3.Connection:
    """The database as the offline rebuild leaves it after the same writes, replayed from the logs."""
    expected = directory / "expected.db"
    _copy_database(before, expected)
    conn = sqlite3.connect(expected)
    for log in logs:
        replay(conn, str(log))
    sync_models(conn, [Wide])
    return conn


def test_a_writer_process_loses_nothing_while_a_big_table_is_rebuilt_online(tmp_path: Path) -> None:
    db, before = tmp_path / "live.db", tmp_path / "before.db"
    make_database(str(db), WRITER_ROWS)
    _copy_database(db, before)
    writer = _Writer(tmp_path, db, seed=1)
    writes_at: dict[str, list[int]] = {}

    def progress(table: str, done: int, total: int, phase: str) -> None:
        seen = writes_at.setdefault(phase, [])
        if phase == "copy" and len(seen) in (0, 3):  # the writer is writing between chunks, whatever the machine's pace
            writer.wait_for_writes(writer.writes() + 15)
        seen.append(writer.writes())

    try:
        writer.wait_for_writes(50)
        with closing(sqlite3.connect(db, timeout=60)) as conn:
            plan = sync_models(conn, [Wide], online=True, progress=progress)
        writer.wait_for_writes(writes_at["swap"][-1] + 50)  # and writes to the new table after the swap
    finally:
        writer.stop()
    assert "online" in plan.operations[0].description
    assert writes_at["copy"][-1] - writes_at["copy"][0] >= 15, "the writer must write throughout the copy"
    with closing(sqlite3.connect(db)) as live, closing(_offline_result(before, [writer.log], tmp_path)) as expected:
        assert live.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert _rows(live) == _rows(expected)
        assert _schema(live) == _schema(expected)
        assert _leftovers(live) == []


KILL_PHASES = ("ready", "copy", "copy half", "catch-up", "swap", "free")
"""Lines the migrator prints as it reaches each point; the kill follows after a random delay."""


def test_a_migrator_killed_anywhere_leaves_a_usable_table_and_the_next_sync_finishes(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    make_database(str(template), KILL_ROWS)
    rng = random.Random(12)
    for attempt in range(KILLS):
        directory = tmp_path / f"kill{attempt}"
        directory.mkdir()
        db, before = directory / "live.db", directory / "before.db"
        _copy_database(template, db)
        _copy_database(template, before)
        writer = _Writer(directory, db, seed=100 + attempt)
        try:
            migrator = _start("migrate", str(db))
            phase = KILL_PHASES[attempt % len(KILL_PHASES)]
            assert migrator.stdout is not None
            line = "ready"
            while line != phase and line != "done":
                line = migrator.stdout.readline().strip() or "done"
            time.sleep(rng.uniform(0, 0.05))
            migrator.send_signal(signal.SIGKILL)
            migrator.wait()
            writer.wait_for_writes(writer.writes() + 20)  # the writer goes on after the kill
            with closing(sqlite3.connect(db, timeout=60)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] > 0
                sync_models(conn, [Wide], online=True)
                assert _leftovers(conn) == []
        finally:
            writer.stop()
        with closing(sqlite3.connect(db)) as live, closing(_offline_result(before, [writer.log], directory)) as expected:
            assert _rows(live) == _rows(expected), f"killed after {phase!r}"
            assert _schema(live) == _schema(expected)


# --- shapes, dependants and refusals, with writes of another connection during the copy ------


def _plain_models() -> tuple[type[SyncModel], type[SyncModel]]:
    class Before(SyncModel, table="things"):
        id: Annotated[int, PrimaryKey()]
        region: str
        name: str
        size: int

    class After(SyncModel, table="things", indexes=[Index("name")]):
        id: Annotated[int, PrimaryKey()]
        region: str
        name: str
        size: str
        extra: int = 7

    return Before, After


def _autoincrement_models() -> tuple[type[SyncModel], type[SyncModel]]:
    class Before(SyncModel, table="things"):
        id: Annotated[int, PrimaryKey(autoincrement=True)]
        region: str
        name: str
        size: int

    class After(SyncModel, table="things"):
        id: Annotated[int, PrimaryKey(autoincrement=True)]
        region: str
        name: str
        size: str
        extra: int = 7

    return Before, After


def _composite_models(without_rowid: bool) -> Callable[[], tuple[type[SyncModel], type[SyncModel]]]:
    def models() -> tuple[type[SyncModel], type[SyncModel]]:
        class Before(SyncModel, table="things", primary_key=("region", "id"), without_rowid=without_rowid):
            region: str
            id: int
            name: str
            size: int

        class After(SyncModel, table="things", primary_key=("region", "id"), without_rowid=without_rowid):
            region: str
            id: int
            name: str
            size: str
            extra: int = 7

        return Before, After

    return models


SHAPES = {
    "integer key": _plain_models,
    "autoincrement": _autoincrement_models,
    "composite key": _composite_models(without_rowid=False),
    "without rowid": _composite_models(without_rowid=True),
}
ROWS = 3000

WRITES_DURING_COPY = [
    "UPDATE things SET size = -1, name = 'early' WHERE id = 2",  # a row the copy has passed
    f"UPDATE things SET size = -2, name = 'late' WHERE id = {ROWS - 1}",  # a row it has not reached
    "DELETE FROM things WHERE id = 3",
    f"DELETE FROM things WHERE id = {ROWS}",  # the last row (AUTOINCREMENT must not reuse its id)
    "INSERT INTO things (region, id, name, size) VALUES ('r0', 3, 'back again', 33)",
    f"INSERT INTO things (region, id, name, size) VALUES ('r9', {ROWS + 5}, 'new', 55)",
    "UPDATE things SET id = 100000 WHERE id = 10",  # a key that moves past the end
    "INSERT INTO things (region, id, name, size) VALUES ('r9', 200000, 'gone again', 1)",
    "DELETE FROM things WHERE id = 200000",  # AUTOINCREMENT's counter stays above every id left
]


def _hand_made(conn: sqlite3.Connection) -> None:
    """An index, a view, an audit table and a trigger that fills it: none of them in the models."""
    conn.executescript(
        """
        CREATE INDEX by_region ON things (region, size);
        CREATE VIEW big_things AS SELECT id, name FROM things WHERE size > 100;
        CREATE TABLE audit (thing INTEGER, what TEXT);
        CREATE TRIGGER audit_insert AFTER INSERT ON things BEGIN INSERT INTO audit VALUES (NEW.id, 'insert'); END;
        """
    )


def _make_things(path: Path, before: type[SyncModel]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, [before])
        conn.executemany(
            "INSERT INTO things (region, id, name, size) VALUES (?, ?, ?, ?)",
            [(f"r{i % 3}", i, f"thing {i}", i * 10) for i in range(1, ROWS + 1)],
        )
        _hand_made(conn)
        conn.commit()


def _online_with_writes(path: Path, models: list[type[SyncModel]], writes: list[str], **options) -> MigrationPlan:
    """``sync_models(..., online=True)`` with ``writes`` made by another connection once the copy has
    taken its first chunk (each in its own transaction, as an application makes them)."""
    pending = list(writes)
    phases: list[str] = []

    def progress(table: str, done: int, total: int, phase: str = "copy") -> None:
        phases.append(phase)
        if phase == "copy" and done < total and pending:
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("PRAGMA foreign_keys = ON")
                for statement in pending:
                    other.execute(statement)
            pending.clear()

    with closing(sqlite3.connect(path, timeout=10)) as conn:
        plan = sync_models(conn, models, online=True, progress=progress, **options)
    assert not pending, "the writes must happen during the copy"
    assert {"copy", "swap"} <= set(phases)
    return plan


def _offline_with_writes(path: Path, models: list[type[SyncModel]], writes: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    for statement in writes:
        conn.execute(statement)
    conn.commit()
    sync_models(conn, models)
    return conn


def _database_state(conn: sqlite3.Connection) -> dict[str, object]:
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_pydsqlite%' ESCAPE '\\' ORDER BY name")]
    return {
        "schema": _schema(conn),
        **{table: conn.execute(f"SELECT {'' if table == 'sqlite_sequence' or _without_rowid(conn, table) else 'rowid, '}* FROM `{table}` ORDER BY 1, 2").fetchall() for table in tables},
    }


def _without_rowid(conn: sqlite3.Connection, table: str) -> bool:
    return "WITHOUT ROWID" in conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0].upper()


@pytest.mark.parametrize("shape", SHAPES)
def test_an_online_rebuild_equals_the_offline_one_after_the_same_writes(tmp_path: Path, shape: str) -> None:
    before_model, after_model = SHAPES[shape]()
    live, offline = tmp_path / "live.db", tmp_path / "offline.db"
    _make_things(live, before_model)
    _copy_database(live, offline)
    plan = _online_with_writes(live, [after_model], WRITES_DURING_COPY)
    assert "(online, copied in chunks by" in plan.operations[0].description
    with closing(sqlite3.connect(live)) as conn, closing(_offline_with_writes(offline, [after_model], WRITES_DURING_COPY)) as expected:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        state = _database_state(conn)
        assert state == _database_state(expected)
        assert ("trigger", "audit_insert", "things") in [row[:3] for row in state["schema"]]  # type: ignore[union-attr]
        assert ("view", "big_things", "big_things") in [row[:3] for row in state["schema"]]  # type: ignore[union-attr]
        assert ("index", "by_region", "things") in [row[:3] for row in state["schema"]]  # type: ignore[union-attr]
        assert _leftovers(conn) == []
        assert model_migration_plan(conn, [after_model]).is_empty


def test_children_under_on_delete_cascade_survive_the_online_rebuild_of_their_parent(tmp_path: Path) -> None:
    class Owner(SyncModel, table="owners"):
        id: Annotated[int, PrimaryKey()]
        level: int

    class OwnerAfter(SyncModel, table="owners"):
        id: Annotated[int, PrimaryKey()]
        level: str
        title: str = ""

    class Pet(SyncModel, table="pets"):
        id: Annotated[int, PrimaryKey()]
        owner_id: Annotated[int, ForeignKey("owners.id", on_delete="CASCADE")]

    live, offline = tmp_path / "live.db", tmp_path / "offline.db"
    with closing(sqlite3.connect(live)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, [Owner, Pet])
        conn.executemany("INSERT INTO owners VALUES (?, ?)", [(i, i % 5) for i in range(1, ROWS + 1)])
        conn.executemany("INSERT INTO pets VALUES (?, ?)", [(i, i) for i in range(1, ROWS + 1)])
        conn.commit()
    _copy_database(live, offline)
    writes = [
        f"INSERT INTO owners VALUES ({ROWS + 1}, 1)",
        f"INSERT INTO pets VALUES ({ROWS + 1}, {ROWS + 1})",
        "DELETE FROM owners WHERE id = 7",  # the application's own delete cascades, as always
    ]
    with closing(sqlite3.connect(live)) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
    _online_with_writes(live, [OwnerAfter, Pet], writes)
    with closing(sqlite3.connect(live)) as conn, closing(_offline_with_writes(offline, [OwnerAfter, Pet], writes)) as expected:
        assert conn.execute("SELECT COUNT(*) FROM pets").fetchone() == (ROWS,)  # 3000 + 1 - the one cascaded
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert _database_state(conn) == _database_state(expected)


def _things_database(path: Path) -> tuple[type[SyncModel], type[SyncModel]]:
    before, after = _plain_models()
    _make_things(path, before)
    return before, after


def test_online_needs_wal_and_says_so_without_changing_anything(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _, after = _things_database(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        before = _database_state(conn)
        with pytest.raises(MigrationError, match=r"needs the database in WAL mode .*'delete' mode"):
            sync_models(conn, [after], online=True)
        assert _database_state(conn) == before
        preview = model_migration_plan(conn, [after], online=True)
        assert any("WAL mode" in problem for problem in preview.problems)


def test_online_with_nothing_to_do_needs_no_wal_and_memory_databases_are_told_why_not(tmp_path: Path) -> None:
    """An application may pass online=True on every start: when the models match, nothing is
    refused whatever the journal mode. An in-memory database cannot be in WAL mode at all."""
    path = tmp_path / "app.db"
    before, after = _things_database(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        assert sync_models(conn, [before], online=True).is_empty
    memory = sqlite3.connect(":memory:")
    sync_models(memory, [before])
    assert sync_models(memory, [before], online=True).is_empty
    with pytest.raises(MigrationError, match=r"online=True needs a database file in WAL mode, but this database is in memory .*migrate without online=True"):
        sync_models(memory, [after], online=True)
    assert model_migration_plan(memory, [after]).operations  # nothing was changed


def test_the_preview_says_which_tables_go_online_and_why_others_do_not(tmp_path: Path) -> None:
    class Coded(SyncModel, table="coded", primary_key="code", without_rowid=True):
        code: int
        name: str

    class CodedAfter(SyncModel, table="coded", primary_key="code", without_rowid=True):
        code: str  # the key itself is converted
        name: str

    path = tmp_path / "app.db"
    before, after = _things_database(path)
    with closing(sqlite3.connect(path)) as conn:
        sync_models(conn, [before, Coded])
        conn.execute("INSERT INTO coded VALUES (1, 'a')")
        conn.commit()
        plan = model_migration_plan(conn, [after, CodedAfter], online=True)
        descriptions = {operation.table: operation.description for operation in plan.operations}
        assert "(online, copied in chunks by rowid" in descriptions["things"]
        assert "(offline: its key column code is converted or dropped" in descriptions["coded"]
        assert "online" not in model_migration_plan(conn, [after]).operations[0].description
        sync_models(conn, [after, CodedAfter], online=True)
        assert model_migration_plan(conn, [after, CodedAfter]).is_empty
        assert conn.execute("SELECT * FROM coded").fetchall() == [("1", "a")]


def test_a_row_written_during_the_copy_that_breaks_the_new_shape_stops_it_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    before, _ = _things_database(path)

    class After(SyncModel, table="things"):
        id: Annotated[int, PrimaryKey()]
        region: str
        name: Annotated[str, Unique()]
        size: str  # and a rebuild

    with closing(sqlite3.connect(path)) as conn:
        assert not model_migration_plan(conn, [After], online=True).problems  # every name is unique before
    writes = [f"UPDATE things SET name = 'thing 1' WHERE id = {ROWS - 1}"]  # a row the copy has not reached
    with pytest.raises(MigrationError, match=r"things"):
        _online_with_writes(path, [After], writes)
    with closing(sqlite3.connect(path)) as conn:
        assert _leftovers(conn) == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT COUNT(*) FROM things WHERE name = 'thing 1'").fetchone() == (2,)
        assert model_migration_plan(conn, [before]).is_empty  # the original table, as it was


def test_a_unique_value_that_moves_from_a_copied_row_to_one_not_yet_copied_comes_through(tmp_path: Path) -> None:
    """The new table still holds the copied row's old value when the chunk with the row that took it
    over arrives: the copy settles the logged rows first instead of calling that a violation."""
    live, offline = tmp_path / "live.db", tmp_path / "offline.db"
    _things_database(live)
    _copy_database(live, offline)

    class After(SyncModel, table="things"):
        id: Annotated[int, PrimaryKey()]
        region: str
        name: Annotated[str, Unique()]
        size: str

    writes = [
        "UPDATE things SET name = 'moved away' WHERE id = 2",  # copied in the first chunk
        f"UPDATE things SET name = 'thing 2' WHERE id = {ROWS - 1}",  # not copied yet
        f"UPDATE things SET name = 'thing {ROWS - 1}' WHERE id = 3",  # and the other way round
    ]
    _online_with_writes(live, [After], writes)
    with closing(sqlite3.connect(live)) as conn, closing(_offline_with_writes(offline, [After], writes)) as expected:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert _database_state(conn) == _database_state(expected)
        assert conn.execute("SELECT id FROM things WHERE name = 'thing 2'").fetchall() == [(ROWS - 1,)]
        assert _leftovers(conn) == []


@pytest.mark.parametrize("looked_at_every", [4000, 1])
def test_steps_stopped_at_the_time_limit_are_rolled_back_and_taken_again_smaller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, looked_at_every: int
) -> None:
    """A step still running at ``STEP_LIMIT`` is interrupted (the write lock is never held longer):
    nothing of it stays, and the copy goes on in smaller steps to the same end state. Looked at
    after every instruction, every statement runs past the limit: the smallest steps are then
    never stopped, so the copy still ends."""
    from pydsqlite.engines import sqlite as sqlite_engine

    live, offline = tmp_path / "live.db", tmp_path / "offline.db"
    _, after = _things_database(live)
    _copy_database(live, offline)
    monkeypatch.setattr(pacing, "STEP_LIMIT", 0.0)  # every statement long enough to be looked at is stopped
    monkeypatch.setattr(sqlite_engine, "_PROGRESS_EVERY", looked_at_every)
    with caplog.at_level(logging.DEBUG, logger="pydsqlite.migrate.online"):
        _online_with_writes(live, [after], WRITES_DURING_COPY)
    assert any("ran past" in record.message for record in caplog.records)
    with closing(sqlite3.connect(live)) as conn, closing(_offline_with_writes(offline, [after], WRITES_DURING_COPY)) as expected:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert _database_state(conn) == _database_state(expected)
        assert _leftovers(conn) == []


def test_two_migrators_never_run_an_online_migration_at_once(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _, after = _things_database(path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:  # another live process's claim
            other.execute(CREATE_CLAIM_TABLE)
            other.execute(
                "INSERT INTO _pydsqlite_online_claim VALUES (1, 'theirs', ?, ?, ?)", (socket.gethostname(), sleeper.pid, time.time())
            )
        with closing(sqlite3.connect(path)) as conn:
            for online in (True, False):
                with pytest.raises(MigrationError, match=rf"another process \(pid {sleeper.pid} on .*online migration"):
                    sync_models(conn, [after], online=online, busy_timeout=0.3)
                assert "size INTEGER" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'things'").fetchone()[0].replace("`", "")
    finally:
        sleeper.kill()
        sleeper.wait()
    with closing(sqlite3.connect(path)) as conn:  # once that process is gone, its claim counts no more
        sync_models(conn, [after], online=True)
        assert model_migration_plan(conn, [after]).is_empty
        assert _leftovers(conn) == []


class Task(SyncModel, table="tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()]
    size: int = 0
    note: str = ""


class TaskSizeAsText(SyncModel, table="tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()]
    size: str = "0"
    note: str = ""


class TaskNoteTurnedLww(SyncModel, table="tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()]
    size: str = "0"
    note: Annotated[str, LWW()] = ""


class TaskTitleNoLongerLww(SyncModel, table="tasks"):
    id: Annotated[str, PrimaryKey()]
    title: str
    size: str = "0"
    note: Annotated[str, LWW()] = ""


def _sync_state(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Every table's rows but the bookkeeping that follows the wall clock: sequence numbers (a migration
    that folds LWW times renumbers the rows it folded) and the node's row."""
    skipped = ("_pydsqlite_migrations", "_pydsqlite_state", "_pydsqlite_node")
    state = {}
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        if name in skipped:
            continue
        columns = [f"`{column}`" for (column,) in conn.execute("SELECT name FROM pragma_table_info(?)", (name,)) if column not in ("_pydsqlite_seq", "seq")]
        state[name] = conn.execute(f"SELECT {', '.join(columns)} FROM `{name}` ORDER BY 1").fetchall()
    return state


@pytest.mark.parametrize("TaskAfter", [TaskSizeAsText, TaskNoteTurnedLww, TaskTitleNoLongerLww], ids=["type change", "LWW turned on", "LWW moved"])
def test_lww_clocks_and_tombstones_come_through_an_online_rebuild(tmp_path: Path, TaskAfter: type[SyncModel]) -> None:  # noqa: N803
    """Also when the same change turns LWW on or off for a column: the plan then drops and creates the
    table's delete-capture trigger around the rebuild, which the swap must leave to it."""

    live, offline = tmp_path / "live.db", tmp_path / "offline.db"
    with closing(sqlite3.connect(live)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, [Task])
        db = Database(conn)
        db.insert_many([Task(id=f"t{i:05}", title=f"task {i}", size=i) for i in range(ROWS)])
        db.update(Task, "t00002", title="renamed")
        db.delete(Task, "t00003")
    _copy_database(live, offline)
    with closing(sqlite3.connect(live)) as conn:
        rebuild = next(operation for operation in sync_models(conn, [TaskAfter], online=True).operations if operation.kind == "rebuild_table")
        assert "online" in rebuild.description
        online_state = _sync_state(conn)
        assert Database(conn).get(TaskAfter, "t00002").title == "renamed"  # type: ignore[union-attr]
    with closing(sqlite3.connect(offline)) as conn:
        sync_models(conn, [TaskAfter])
        offline_state = _sync_state(conn)
    assert online_state == offline_state
    assert any("hlc" in name or "tomb" in name for name in online_state), online_state.keys()
    triggers = []
    for path in (live, offline):
        with closing(sqlite3.connect(path)) as conn:
            triggers.append(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name").fetchall())
            assert _leftovers(conn) == []
    assert triggers[0] == triggers[1] and triggers[0]


def test_the_run_after_an_interrupted_copy_takes_one_pass(tmp_path: Path) -> None:
    """The interrupted run's new table holds the new indexes under their final names; the next run
    must not take those names for someone else's (it then copied the table twice, the second time
    only to give the names back)."""
    path = tmp_path / "app.db"
    before, after = _plain_models()
    with closing(sqlite3.connect(path)) as conn:  # no hand-made index: a clean run takes one copy
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, [before])
        conn.executemany("INSERT INTO things VALUES (?, ?, ?, ?)", [(i, f"r{i % 3}", f"thing {i}", i) for i in range(1, ROWS + 1)])
        conn.commit()
    stopped_at: list[int] = []

    def interrupt(table: str, done: int, total: int, phase: str = "copy") -> None:
        if phase == "copy" and done >= ROWS // 3 and not stopped_at:
            stopped_at.append(done)
            raise KeyboardInterrupt

    with closing(sqlite3.connect(path)) as conn:
        assert "second copy" not in model_migration_plan(conn, [after], online=True).operations[0].description
        with pytest.raises(KeyboardInterrupt):
            sync_models(conn, [after], online=True, progress=interrupt)
        assert _leftovers(conn)
        preview = model_migration_plan(conn, [after], online=True).operations[0].description
        assert "online" in preview and "second copy" not in preview
        phases: list[tuple[str, int]] = []
        sync_models(conn, [after], online=True, progress=lambda table, done, total, phase="copy": phases.append((phase, done)))
        copies = [done for phase, done in phases if phase == "copy"]
        assert [phase for phase, _ in phases].count("swap") == 1 and copies.count(ROWS) == 1, phases
        assert _leftovers(conn) == [] and model_migration_plan(conn, [after]).is_empty
        assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == ROWS


_KILLED_MID_COPY = """
import os, signal, sqlite3, sys
from pydsqlite import schema_from_sql, sync_schema
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
def progress(table, done, total, phase="copy"):
    if phase == "copy" and done >= 2000:
        os.kill(os.getpid(), signal.SIGKILL)
sync_schema(conn, schema_from_sql(sys.argv[2]), online=True, progress=progress)
"""


def test_a_copy_by_rowid_killed_and_vacuumed_meanwhile_starts_again_instead_of_resuming(tmp_path: Path) -> None:
    """A table without INTEGER PRIMARY KEY is copied in rowid order; VACUUM renumbers such rowids, so the
    cursor and key log an interrupted run left point at other rows. The next run copies anew."""
    from pydsqlite import schema_from_sql, sync_schema

    path = tmp_path / "app.db"
    before = "CREATE TABLE events (kind TEXT NOT NULL, payload INTEGER NOT NULL)"
    after = "CREATE TABLE events (kind TEXT NOT NULL, payload TEXT NOT NULL); CREATE INDEX ix_events_kind ON events (kind)"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_schema(conn, schema_from_sql(before))
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(f"k{i % 7}", i) for i in range(1, 20001)])
        conn.execute("DELETE FROM events WHERE payload % 2 = 1")  # gaps that VACUUM closes
        killed = subprocess.run([sys.executable, "-c", _KILLED_MID_COPY, str(path), after], env=_environment(), cwd=ROOT)
        assert killed.returncode == -signal.SIGKILL and _leftovers(conn)
        conn.execute("VACUUM")
        conn.execute("UPDATE events SET payload = -payload WHERE payload % 4 = 0")  # rows the copy had taken, too
        expected = sorted((kind, str(payload)) for kind, payload in conn.execute("SELECT kind, payload FROM events"))
        sync_schema(conn, schema_from_sql(after), online=True)
        assert sorted(conn.execute("SELECT kind, payload FROM events")) == expected
        assert _leftovers(conn) == [] and conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


class _Priced(SyncModel, table="items", indexes=[Index("label")]):
    id: Annotated[int, PrimaryKey()]
    label: str
    amount: int


class _PricedAsText(SyncModel, table="items", indexes=[Index("label")]):  # a rebuild that keeps ix_items_label: two passes
    id: Annotated[int, PrimaryKey()]
    label: str
    amount: str


def _priced_items(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, [_Priced])
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"l{i}", i) for i in range(1, 5001)])
        conn.commit()


def _add_note(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as other:
        other.execute("ALTER TABLE items ADD COLUMN note TEXT")
        other.execute("UPDATE items SET note = 'keep ' || id WHERE id <= 10")


def test_an_online_rebuild_of_a_table_the_same_connection_is_streaming_is_refused_before_it_starts(tmp_path: Path) -> None:
    """Its swap would fail on SQLite's "database table is locked" after the whole copy: refused at
    once, nothing copied or changed, and the stream reads on."""
    path = tmp_path / "app.db"
    _priced_items(path)
    with closing(sqlite3.connect(path)) as conn:
        db = Database(conn)
        seen = 0
        for _ in db.iter_select(_Priced, order_by="id"):
            seen += 1
            if seen == 100:
                with pytest.raises(UsageError, match="an iter_select of this connection is still reading table 'items'"):
                    sync_models(conn, [_PricedAsText], online=True)
                assert _leftovers(conn) == [] and not model_migration_plan(conn, [_PricedAsText]).is_empty
        assert seen == 5000
        sync_models(conn, [_PricedAsText], online=True)
        assert model_migration_plan(conn, [_PricedAsText]).is_empty


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("resumed", ["online", "offline"])
def test_work_an_interrupted_online_migration_left_pending_is_shown_and_reported(tmp_path: Path, resumed: str) -> None:
    """Interrupted during its second copy (which gives kept indexes their names back), an online
    migration leaves that copy pending; the next sync does it before it plans. Preview and sync say
    so, and an approved preview the sync no longer matches is refused saying that this work stays."""
    path = tmp_path / "app.db"
    _priced_items(path)

    def interrupt_second_copy(table: str, done: int, total: int, phase: str = "copy") -> None:
        if phase == "copy" and done and "swapped" in seen:
            raise _Interrupted
        if phase == "swap":
            seen.add("swapped")

    seen: set[str] = set()
    with closing(sqlite3.connect(path)) as conn:
        with pytest.raises(_Interrupted):
            sync_models(conn, [_PricedAsText], online=True, progress=interrupt_second_copy)
        preview = model_migration_plan(conn, [_PricedAsText], online=resumed == "online")
        work = ("copy table items once more, to give its indexes their names back",)
        assert preview.finished_first == work
        assert str(preview).startswith("Left pending by an interrupted online migration, finished first:\n  - copy table items")
        if resumed == "online":
            with pytest.raises(PlanChangedError, match="finished first and stays") as changed:
                sync_models(conn, [_PricedAsText], online=True, expected_plan=preview)
            assert changed.value.plan.finished_first == work and changed.value.plan.operations == ()
        else:
            assert sync_models(conn, [_PricedAsText]).finished_first == work
        assert [row[1] for row in conn.execute("PRAGMA index_list(items)")] == ["ix_items_label"]
        after = model_migration_plan(conn, [_PricedAsText], online=True)
        assert after.is_empty and after.finished_first == () and str(after).startswith("Nothing to do")


@pytest.mark.parametrize("when", ["between planning and setup", "during the copy", "during the second copy"])
def test_a_column_another_connection_adds_during_an_online_rebuild_is_never_lost(tmp_path: Path, when: str) -> None:
    """The copy is made from the table as planned: a schema change by another connection at any point
    before a swap refuses that swap, so the new column and its values stay (the second copy, which gives
    kept indexes their names back, leaves that to the next sync, which then sees the new column)."""
    path = tmp_path / "app.db"
    _priced_items(path)
    phases: list[str] = []

    def progress(table: str, done: int, total: int, phase: str = "copy") -> None:
        phases.append(phase)
        second = "free" in phases
        if phase == "copy" and 0 < done < total and "altered" not in phases and second == (when == "during the second copy"):
            _add_note(path)
            phases.append("altered")

    with closing(sqlite3.connect(path)) as conn:
        if when == "between planning and setup":  # the first statement the setup sends
            conn.set_trace_callback(lambda sql: (_add_note(path), phases.append("altered")) if "altered" not in phases and sql.startswith("SELECT sql FROM main.sqlite_master") else None)
        with pytest.raises(MigrationError, match="the schema changed"):
            sync_models(conn, [_PricedAsText], online=True, progress=None if when == "between planning and setup" else progress)
        conn.set_trace_callback(None)
        assert "altered" in phases
        assert conn.execute("SELECT count(note) FROM items").fetchone() == (10,)
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (5000,)
        with pytest.raises(DestructiveChangeError, match="items.note: 10 rows"):  # the models do not have note
            sync_models(conn, [_PricedAsText], online=True)
        assert conn.execute("SELECT count(note) FROM items").fetchone() == (10,)
        assert "ix_items_label" in {row[1] for row in conn.execute("PRAGMA index_list(items)")}  # a pending second copy is done
        assert _leftovers(conn) == []


def test_an_app_enforcing_foreign_keys_can_delete_a_parent_while_its_children_are_rebuilt_online(tmp_path: Path) -> None:
    """The half-built copy and, after the swap, the old table being freed hold copies of the child rows
    with the child's foreign keys: rows the app deleted or moved must leave them at once, or deleting
    the parent next (one transaction, foreign keys on) fails with FOREIGN KEY constraint failed."""
    from pydsqlite import schema_from_sql, sync_schema

    path = tmp_path / "app.db"
    before = "CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT NOT NULL); CREATE TABLE items (id INTEGER PRIMARY KEY, category_id INTEGER REFERENCES categories (id), amount INTEGER)"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_schema(conn, schema_from_sql(before))
        conn.executemany("INSERT INTO categories VALUES (?, ?)", [(i, f"c{i}") for i in range(1, 101)])
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, 1 + i % 100, i) for i in range(1, 20001)])
    done: list[str] = []

    def app_writes(phase: str) -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as app:
            app.execute("PRAGMA foreign_keys = ON")
            first, second = (7, 8) if phase == "copy" else (17, 18)
            app.execute("BEGIN IMMEDIATE")  # delete a category's items, then the category
            app.execute("DELETE FROM items WHERE category_id = ?", (first,))
            app.execute("DELETE FROM categories WHERE id = ?", (first,))
            app.execute("COMMIT")
            app.execute("BEGIN IMMEDIATE")  # move a category's items elsewhere, then delete it
            app.execute("UPDATE items SET category_id = 1 WHERE category_id = ?", (second,))
            app.execute("DELETE FROM categories WHERE id = ?", (second,))
            app.execute("COMMIT")
        done.append(phase)

    def progress(table: str, copied: int, total: int, phase: str = "copy") -> None:
        if phase in ("copy", "free") and 0 < copied < total and phase not in done:
            app_writes(phase)

    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        sync_schema(conn, schema_from_sql(before.replace("amount INTEGER", "amount TEXT")), online=True, progress=progress)
        assert done == ["copy", "free"]
        assert conn.execute("SELECT count(*) FROM items WHERE category_id IN (7, 8, 17, 18)").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (20000 - 400,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == [] and _leftovers(conn) == []


@pytest.mark.parametrize("enforced", [True, False], ids=["foreign keys on", "foreign keys off"])
@pytest.mark.parametrize("parent", ["created by the same migration", "deleted during the copy"])
def test_an_online_table_gaining_a_foreign_key_is_refused_when_rows_would_reference_nothing(tmp_path: Path, parent: str, enforced: bool) -> None:
    """Rows referencing a parent table this migration creates (empty until the swap) are refused
    before anything runs, as offline; parent rows an application without foreign keys deletes after
    their children were copied are seen in the final transaction."""
    from pydsqlite import schema_from_sql, sync_schema

    path = tmp_path / "app.db"
    cats = "CREATE TABLE cats (id INTEGER PRIMARY KEY, name TEXT);"
    before = ("" if parent.startswith("created") else cats) + "CREATE TABLE items (id INTEGER PRIMARY KEY, cat INTEGER, amount INTEGER)"
    after = cats + "CREATE TABLE items (id INTEGER PRIMARY KEY, cat INTEGER REFERENCES cats (id), amount TEXT)"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_schema(conn, schema_from_sql(before))
        if not parent.startswith("created"):
            conn.executemany("INSERT INTO cats VALUES (?, ?)", [(i, f"c{i}") for i in (1, 2, 3)])
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, None if parent.startswith("created") and i > 3 else 1 + i % 3, i) for i in range(1, 9001)])
        expected = conn.execute("SELECT * FROM items ORDER BY id").fetchall()

    def progress(table: str, copied: int, total: int, phase: str = "copy") -> None:
        if parent.startswith("deleted") and phase == "copy" and copied >= total // 2 and not deleted:
            with closing(sqlite3.connect(path, isolation_level=None)) as app:  # foreign keys off, Python's default
                app.execute("DELETE FROM cats WHERE id = 2")
                expected_cats.remove((2, "c2"))
            deleted.append(True)

    deleted: list[bool] = []
    expected_cats = [(1, "c1"), (2, "c2"), (3, "c3")] if not parent.startswith("created") else []
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if enforced else 'OFF'}")
        if parent.startswith("created"):  # known before anything runs
            refusal = r"items\.cat: 3 rows: rows reference no row of cats through the new foreign key to cats\(id\), a table this migration creates empty"
        elif enforced:
            refusal = r"would leave \d+ row\(s\) violating foreign keys \(items -> cats"
        else:  # with foreign keys off, the new key is still checked in the final transaction
            refusal = r"would leave \d+ row\(s\) of table 'items' violating the foreign key it creates to cats"
        with pytest.raises(MigrationError, match=refusal):
            sync_schema(conn, schema_from_sql(after), online=True, progress=progress)
        assert conn.execute("SELECT * FROM items ORDER BY id").fetchall() == expected
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'cats'").fetchall() == ([] if parent.startswith("created") else [("cats",)])
        if expected_cats:
            assert conn.execute("SELECT * FROM cats ORDER BY id").fetchall() == expected_cats
        assert _leftovers(conn) == []


@pytest.mark.parametrize("keys", ["text holding NUL", "text that is not UTF-8"])
def test_text_keys_a_literal_cannot_hold_are_copied_online_or_refused_naming_the_table(tmp_path: Path, keys: str) -> None:
    """The copy carries each chunk's last key to the next as SQL: text holding NUL goes as its bytes;
    text that is not valid UTF-8 (written by another program) cannot reach Python at all, so the
    online rebuild is refused naming the table and the remedy (offline), with nothing left behind."""
    from pydsqlite import schema_from_sql, sync_schema

    path = tmp_path / "app.db"
    before = "CREATE TABLE tags (name TEXT NOT NULL PRIMARY KEY, hits INTEGER NOT NULL) WITHOUT ROWID"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_schema(conn, schema_from_sql(before))
        if keys == "text holding NUL":
            conn.executemany("INSERT INTO tags VALUES (?, ?)", [(f"tag\x00{i:06}", i) for i in range(5000)])
        else:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 4999) "
                "INSERT INTO tags SELECT CAST(X'FF' || CAST(printf('%06d', i) AS BLOB) AS TEXT), i FROM n"
            )
        after = schema_from_sql(before.replace("hits INTEGER", "hits TEXT"))
        if keys == "text holding NUL":
            sync_schema(conn, after, online=True)
            assert conn.execute("SELECT count(*), count(DISTINCT name), typeof(hits) FROM tags").fetchone() == (5000, 5000, "text")
            assert conn.execute("SELECT name FROM tags ORDER BY name LIMIT 1").fetchone() == ("tag\x00000000",)
        else:
            with pytest.raises(MigrationError, match="table 'tags' cannot be rebuilt online: .* not valid UTF-8.*online=False"):
                sync_schema(conn, after, online=True)
            assert conn.execute("SELECT typeof(hits) FROM tags LIMIT 1").fetchone() == ("integer",)
            sync_schema(conn, after)
            assert conn.execute("SELECT count(*), typeof(hits) FROM tags").fetchone() == (5000, "text")
        assert _leftovers(conn) == []


class _Parent(SyncModel, table="p"):
    id: Annotated[int, PrimaryKey()]


class _Coded(SyncModel, table="t"):
    id: Annotated[int, PrimaryKey()]
    pid: Annotated[int, ForeignKey(_Parent)]
    code: Annotated[str, Unique()]
    amount: int = 0


class _CodedAsText(SyncModel, table="t"):
    id: Annotated[int, PrimaryKey()]
    pid: Annotated[int, ForeignKey(_Parent)]
    code: Annotated[str, Unique()]
    amount: str = "0"


def test_a_row_replace_removes_during_the_copy_leaves_the_half_built_table_at_once(tmp_path: Path) -> None:
    """INSERT OR REPLACE deletes the row holding the same unique value without a delete trigger: its
    copy must go at once too, or its parent cannot be deleted next by a connection enforcing foreign keys."""
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, [_Parent, _Coded])
        conn.executemany("INSERT INTO p VALUES (?)", [(1,), (2,), (3,)])
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i, 1 if i == 1 else 3, f"c{i}", i) for i in range(1, 10001)])
    done: list[bool] = []

    def progress(table: str, copied: int, total: int, phase: str = "copy") -> None:
        if phase == "copy" and 0 < copied < total and not done:
            with closing(sqlite3.connect(path, isolation_level=None)) as app:
                app.execute("PRAGMA foreign_keys = ON")
                app.execute("BEGIN IMMEDIATE")
                app.execute("INSERT OR REPLACE INTO t (id, pid, code, amount) VALUES (99999, 2, 'c1', 5)")  # replaces row 1
                app.execute("DELETE FROM p WHERE id = 1")  # its only child is gone
                app.execute("COMMIT")
            done.append(True)

    with closing(sqlite3.connect(path)) as conn:
        sync_models(conn, [_Parent, _CodedAsText], online=True, progress=progress)
        assert done
        assert conn.execute("SELECT id, pid, code, amount FROM t WHERE code = 'c1'").fetchall() == [(99999, 2, "c1", "5")]
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10000,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == [] and _leftovers(conn) == []


def test_the_migrating_connections_temporary_triggers_follow_the_new_table(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _, after = _things_database(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TEMP TABLE seen (thing INTEGER)")
        conn.execute("CREATE TEMP TRIGGER seen_insert AFTER INSERT ON things BEGIN INSERT INTO seen VALUES (NEW.id); END")
        conn.commit()
        sync_models(conn, [after], online=True)
        conn.execute("INSERT INTO things (id, region, name, size) VALUES (99999, 'r', 'n', '1')")
        assert conn.execute("SELECT thing FROM seen").fetchall() == [(99999,)]  # the old table's deletes never fired it


def test_a_trigger_naming_the_table_in_another_letter_case_moves_to_the_new_table(tmp_path: Path) -> None:
    """``ON DOCS`` names the table ``docs`` as SQLite reads names (ASCII case ignored): the swap
    must move that trigger too, and it keeps firing on the rebuilt table."""
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            """
            PRAGMA journal_mode = WAL;
            CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT, n INT);
            CREATE TABLE log (m TEXT);
            CREATE TRIGGER docs_ai AFTER INSERT ON DOCS BEGIN INSERT INTO log VALUES ('ins ' || new.id); END;
            INSERT INTO docs (body, n) VALUES ('a', 1), ('b', 2);
            """
        )

        class Doc(SyncModel, table="docs"):
            id: Annotated[int, PrimaryKey()]
            body: str | None = None
            n: int = 0

        assert sync_models(conn, [Doc], online=True).rebuilt_tables == ("docs",)
        conn.execute("INSERT INTO docs (id, body) VALUES (3, 'c')")
        assert conn.execute("SELECT m FROM log").fetchall() == [("ins 1",), ("ins 2",), ("ins 3",)]
        assert _leftovers(conn) == [] and model_migration_plan(conn, [Doc]).is_empty


def test_writes_to_a_table_whose_name_extends_another_rebuilt_tables_are_recorded(tmp_path: Path) -> None:
    """``user`` and ``user_role`` rebuilt online in one sync (``user_role`` first): setting up the copy
    of ``user`` must not take ``user_role``'s recorder triggers for its own leftovers (their names
    begin alike), or writes to ``user_role`` during its copy are lost."""
    path = tmp_path / "app.db"

    def models(score: type, level: type) -> tuple[type[SyncModel], type[SyncModel]]:
        user = type(SyncModel)("User", (SyncModel,), {"__annotations__": {"id": Annotated[int, PrimaryKey()], "score": score}}, table="user")
        role = type(SyncModel)("UserRole", (SyncModel,), {"__annotations__": {"id": Annotated[int, PrimaryKey()], "level": level}}, table="user_role")
        return user, role

    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        sync_models(conn, list(models(int, int)))
        conn.executemany("INSERT INTO user VALUES (?, ?)", [(i, i) for i in range(1, 3001)])
        conn.executemany("INSERT INTO user_role VALUES (?, ?)", [(i, i) for i in range(1, 3001)])
        conn.commit()
    written = []

    def progress(table: str, done: int, total: int, phase: str = "copy") -> None:
        if table == "user_role" and phase == "copy" and 0 < done < total and not written:
            with closing(sqlite3.connect(path, isolation_level=None)) as app:
                app.execute("UPDATE user_role SET level = -1 WHERE id = 1")
                app.execute("DELETE FROM user_role WHERE id = 2")
            written.append(True)

    user, role = models(str, str)
    with closing(sqlite3.connect(path)) as conn:
        sync_models(conn, [role, user], online=True, progress=progress)
        assert written
        assert conn.execute("SELECT id, level FROM user_role WHERE id IN (1, 2)").fetchall() == [(1, "-1")]
        assert conn.execute("SELECT count(*) FROM user_role").fetchone() == (2999,)
        assert _leftovers(conn) == []


@pytest.mark.parametrize("outcome", ["applied", "refused"])
def test_the_migrating_connection_gets_its_own_settings_back(tmp_path: Path, outcome: str) -> None:
    """For its steps the migrator commits with synchronous = NORMAL, checkpoints itself, uses a
    bigger page cache and a time limit per statement; afterwards (also after a refusal) the
    connection is as the caller set it."""
    path = tmp_path / "app.db"
    _, after = _things_database(path)
    settings = {"synchronous": 3, "wal_autocheckpoint": 250, "cache_size": -1000, "busy_timeout": 4321}
    with closing(sqlite3.connect(path)) as conn:
        for name, value in settings.items():
            conn.execute(f"PRAGMA {name} = {value}")
        if outcome == "applied":
            sync_models(conn, [after], online=True)
        else:
            conn.execute("UPDATE things SET name = 'thing 1' WHERE id = 2")
            conn.commit()

            class UniqueNames(SyncModel, table="things"):
                id: Annotated[int, PrimaryKey()]
                region: str
                name: Annotated[str, Unique()]
                size: str

            with pytest.raises(MigrationError, match="things"):
                sync_models(conn, [UniqueNames], online=True)
        assert {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in settings} == settings
        long_statement = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000) SELECT COUNT(*) FROM n"
        assert conn.execute(long_statement).fetchone() == (100000,)  # no time limit left behind to interrupt it


def test_a_schema_change_during_the_copy_refuses_the_swap_and_frees_the_copy(tmp_path: Path) -> None:
    """Another connection changing the schema mid-copy makes the swap refuse (the plan may no longer
    hold); nothing is changed, and the copy made so far is freed at once rather than left on disk."""
    path = tmp_path / "app.db"
    before, after = _things_database(path)
    with closing(sqlite3.connect(path)) as conn:
        expected = _database_state(conn)
    with pytest.raises(MigrationError, match=r"the schema changed \(by another connection\) while the online migration copied rows; nothing was changed"):
        _online_with_writes(path, [after], ["CREATE TABLE unrelated (x)"])
    with closing(sqlite3.connect(path)) as conn:
        state = _database_state(conn)
        assert state.pop("unrelated") == []
        state["schema"] = [row for row in state["schema"] if row[1] != "unrelated"]  # type: ignore[union-attr]
        assert state == expected and _leftovers(conn) == []
        sync_models(conn, [after], online=True)
        assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == ROWS


@pytest.mark.parametrize("statement", ["DROP TABLE things", "ALTER TABLE things RENAME TO things_kept"])
def test_a_table_dropped_or_renamed_during_its_copy_stops_the_rebuild_with_a_clear_error(tmp_path: Path, statement: str) -> None:
    """Another connection dropping or renaming the table being copied stops the rebuild with a
    MigrationError naming the table (not the engine's bare "no such table"), frees the copy, and
    leaves what the other connection did; the next sync brings the schema in line."""
    path = tmp_path / "app.db"
    _, after = _things_database(path)
    with pytest.raises(MigrationError, match=r"table 'things' was dropped or renamed by another connection during its online rebuild"):
        _online_with_writes(path, [after], [statement])
    with closing(sqlite3.connect(path)) as conn:
        assert _leftovers(conn) == []
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "things" not in names and ("things_kept" in names) == statement.startswith("ALTER")
        sync_models(conn, [after], online=True)
        assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == 0


def test_an_online_plans_script_shows_the_phases_as_comments_so_running_it_by_hand_loses_nothing(tmp_path: Path) -> None:
    """The phases of an online rebuild bind each chunk's bounds as pydsqlite runs them: as a script
    (``plan.sql``, ``pydsqlite plan --online --sql``) they are comments, and the rest of the plan
    stays runnable. Run by hand, the script used to copy no rows (unbound bounds are NULL) and swap
    in the empty table."""
    path = tmp_path / "app.db"
    before, after = _things_database(path)
    with closing(sqlite3.connect(path)) as conn:
        plan = model_migration_plan(conn, [after], online=True)
        script = plan.sql
        assert script.startswith("-- an online migration")
        assert ":after0" in script and all(
            line.startswith("--") for line in script.splitlines() if ":after0" in line or "RENAME TO" in line
        )
        expected = _database_state(conn)
        conn.executescript(script)  # the plan is this one rebuild: nothing runs
        assert _database_state(conn) == expected
        sync_models(conn, [after], online=True)
        assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == ROWS


def test_a_migrator_another_process_took_over_from_leaves_the_takers_tables_alone(tmp_path: Path) -> None:
    """A migrator paused past ``STALE_AFTER`` (a suspended VM, a debugger) loses its claim to a second
    one. When it resumes it stops at its next step, and leaves the recorders, key log and new table,
    whose names are fixed, to the migrator that took over, which finishes the migration."""
    import threading

    path = tmp_path / "app.db"
    make_database(str(path), 20_000)
    paused, resume, first_done = threading.Event(), threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def first_progress(table: str, copied: int, total: int, phase: str = "copy") -> None:
        if phase == "copy" and copied and not paused.is_set():
            paused.set()
            resume.wait(30)

    def second_progress(table: str, copied: int, total: int, phase: str = "copy") -> None:
        if phase == "copy" and copied and not resume.is_set():
            resume.set()
            first_done.wait(30)

    def migrate(name: str, progress: Callable[..., None]) -> None:
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            try:
                sync_models(conn, [Wide], online=True, progress=progress, busy_timeout=30)
                outcome[name] = "done"
            except MigrationError as error:
                outcome[name] = str(error)
            finally:
                if name == "first":
                    first_done.set()

    first = threading.Thread(target=migrate, args=("first", first_progress))
    first.start()
    assert paused.wait(30)
    with closing(sqlite3.connect(path, isolation_level=None)) as clock:  # its heartbeat grows old
        clock.execute("UPDATE _pydsqlite_online_claim SET heartbeat = heartbeat - 3600")
    second = threading.Thread(target=migrate, args=("second", second_progress))
    second.start()
    first.join(60)
    second.join(60)
    assert "another process took over this online migration" in str(outcome["first"])
    assert outcome["second"] == "done"
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*), sum(CAST(amount AS INTEGER)) FROM items").fetchone() == (20_000, 3 * 20_000 * 20_001 // 2)
        assert model_migration_plan(conn, [Wide]).is_empty
        assert _leftovers(conn) == []


@pytest.mark.parametrize("holder", ["the process this one replaced", "this process, another thread"])
def test_a_claim_under_this_processs_pid_counts_only_when_this_process_made_it(tmp_path: Path, holder: str) -> None:
    """A process restarted in place (a container's PID 1, an exec) has its predecessor's pid: the
    claim that one left is dead, and taken over at once; a claim of another thread of this very
    process is alive, and waited for."""
    from pydsqlite.migrate.online.claim import Claim

    path = tmp_path / "app.db"
    _, after = _things_database(path)
    token = "0123456789abcdef:earlier" if holder.startswith("the process") else Claim().token
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute(CREATE_CLAIM_TABLE)
        other.execute("INSERT INTO _pydsqlite_online_claim VALUES (1, ?, ?, ?, ?)", (token, socket.gethostname(), os.getpid(), time.time()))
    with closing(sqlite3.connect(path)) as conn:
        if holder.startswith("the process"):
            sync_models(conn, [after], online=True, busy_timeout=0.3)
            assert model_migration_plan(conn, [after]).is_empty
            assert _leftovers(conn) == []
        else:
            with pytest.raises(MigrationError, match=rf"another thread or connection of this process \(pid {os.getpid()} on .*online migration"):
                sync_models(conn, [after], online=True, busy_timeout=0.3)
