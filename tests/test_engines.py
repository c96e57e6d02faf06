"""The engine seam's generic routes, on real SQLite: what an engine like dqlite needs everywhere.

An engine may bind few parameters per statement, write many rows per statement, and lack
SQL functions written in Python. These tests drive real SQLite connections through engines
configured that way, with SQLite's own limit on bound parameters lowered to the engine's
(``setlimit``), so a statement over the limit is refused by SQLite itself.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import Annotated

import pytest

from pydsqlite import LWW, Database, Field, ForeignKey, MigrationError, PrimaryKey, SyncModel, UsageError, sync_models
from pydsqlite.engines import SqliteEngine, engine_for

LIMIT = 12


class FewParameters(SqliteEngine):
    """SQLite driven like dqlite: few parameters per statement, many rows per statement, no Python functions."""

    max_parameters = LIMIT
    batch_rows = True
    supports_functions = False

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, LIMIT)


@pytest.fixture
def engine(conn):
    return FewParameters(conn)


def statements_run(conn: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


class Item(SyncModel, table="items"):
    id: int = Field(default=None, primary_key=True)
    name: str
    size: int = 0


def test_insert_many_writes_few_statements_within_the_limit(engine, conn):
    sync_models(engine, [Item])
    db = Database(engine)
    seen = statements_run(conn)
    rows = [Item(name=f"item {n}", size=n) for n in range(25)] + [Item(id=100 + n, name=f"keyed {n}") for n in range(5)]
    assert db.insert_many(rows) == 30
    inserts = [sql for sql in seen if sql.startswith("INSERT INTO `items`")]
    assert len(inserts) == 5 + 2  # 25 rows of 2 parameters, 6 per statement; 5 rows of 3, 4 per statement
    assert db.count(Item) == 30
    assert [(item.name, item.size) for item in db.select(Item, order_by="id")][:3] == [("item 0", 0), ("item 1", 1), ("item 2", 2)]
    assert db.get(Item, 104) == Item(id=104, name="keyed 4", size=0)
    assert db.insert(Item(name="one more")).id == 105  # a single row still reports its key


def test_the_default_engine_keeps_executemany(conn):
    sync_models(conn, [Item])
    seen = statements_run(conn)
    Database(conn).insert_many([Item(name=f"item {n}") for n in range(10)])
    assert len([sql for sql in seen if sql.startswith("INSERT INTO `items`")]) == 10


class Card(SyncModel, table="merge_cards"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""
    votes: Annotated[int, LWW()] = 0


def test_replica_merges_stay_within_the_limit(engine, tmp_path):
    other = sqlite3.connect(tmp_path / "other.db")
    sync_models(engine, [Card])
    sync_models(other, [Card])
    few, plain = Database(engine), Database(other)
    plain.insert_many([Card(id=f"c{n:03d}", title=f"plain {n}") for n in range(40)])
    few.insert_many([Card(id=f"c{n:03d}", title=f"few {n}", votes=n) for n in range(20, 60)])
    few.apply_changes(plain.changes_since())
    for n in range(20, 40):  # rows both replicas hold, deleted on one
        plain.delete(Card, f"c{n:03d}")
    seen = statements_run(engine.connection)
    few.apply_changes(plain.changes_since())
    plain.apply_changes(few.changes_since())
    assert few.select(Card, order_by="id") == plain.select(Card, order_by="id")
    assert len(few.select(Card)) == 40
    deletes = {sql for sql in seen if sql.startswith("DELETE FROM `merge_cards`")}  # (the trace may list one statement more than once)
    assert 0 < len(deletes) <= 20 // LIMIT + 1  # the 20 deletes in chunks of keys, not one statement each


def test_a_statement_over_the_limit_is_refused_by_sqlite(engine):
    """The limit is real in these tests: SQLite refuses more than LIMIT parameters."""
    with pytest.raises(sqlite3.OperationalError, match="too many SQL variables"):
        engine.execute(f"SELECT {', '.join('?' * (LIMIT + 1))}", list(range(LIMIT + 1)))


class Wide(SyncModel, table="wide"):
    id: Annotated[int, PrimaryKey()]
    v: int | None = None


class Narrow(SyncModel, table="wide"):
    id: Annotated[int, PrimaryKey()]
    v: int = 0


class Pair(SyncModel, table="pairs", without_rowid=True, primary_key=("a", "b")):
    a: str
    b: int
    note: str | None = None


class PairNoted(SyncModel, table="pairs", without_rowid=True, primary_key=("a", "b")):
    a: str
    b: int
    note: str = ""


@pytest.mark.parametrize("rows", [0, 1, 99, 100, 1000, 1234])
def test_rebuild_progress_without_functions_copies_in_ranges(engine, conn, rows):
    sync_models(engine, [Wide, Pair])
    conn.executemany("INSERT INTO wide VALUES (?, ?)", [(n * 3, None if n % 2 else n) for n in range(rows)])
    conn.executemany("INSERT INTO pairs VALUES (?, ?, NULL)", [(f"k{n % 7}", n) for n in range(rows)])
    conn.commit()
    calls: list[tuple[str, int, int]] = []
    sync_models(engine, [Narrow, PairNoted], progress=lambda *call: calls.append(call))
    for table in ("wide", "pairs"):
        reported = [call for call in calls if call[0] == table]
        assert reported[0] == (table, 0, rows) and reported[-1] == (table, rows, rows)
        counts = [copied for _, copied, _ in reported]
        assert counts == sorted(counts)
        assert len(reported) >= min(rows, 100) // 2
    assert conn.execute("SELECT count(*), sum(v) FROM wide").fetchone() == (rows, sum(n for n in range(rows) if n % 2 == 0) if rows else None)
    assert conn.execute("SELECT count(*) FROM pairs WHERE note = ''").fetchone()[0] == rows


def test_rebuild_progress_without_functions_can_cancel(engine, conn):
    sync_models(engine, [Wide])
    conn.executemany("INSERT INTO wide VALUES (?, NULL)", [(n,) for n in range(500)])
    conn.commit()

    def stop_halfway(table: str, copied: int, total: int) -> None:
        if copied >= total // 2:
            raise KeyboardInterrupt("user cancelled")

    with pytest.raises(KeyboardInterrupt):
        sync_models(engine, [Narrow], progress=stop_halfway)
    assert conn.execute("SELECT count(*) FROM wide WHERE v IS NULL").fetchone()[0] == 500 and not conn.in_transaction


class Blob(SyncModel, table="blobs"):
    id: Annotated[int, PrimaryKey()]
    data: bytes


class BlobAsText(SyncModel, table="blobs"):
    id: Annotated[int, PrimaryKey()]
    data: str


def test_utf8_check_without_functions(engine, conn):
    sync_models(engine, [Blob])
    Database(engine).insert_many([Blob(id=1, data="naïve".encode()), Blob(id=2, data=b"\xc3\x28"), Blob(id=3, data=b"\xff")])
    with pytest.raises(MigrationError, match=r"blobs\.data: 2 rows: blob values are not valid UTF-8.*b'\\xc3\('"):
        sync_models(engine, [BlobAsText], allow_destructive=True)
    assert conn.execute("SELECT typeof(data) FROM blobs").fetchall() == [("blob",)] * 3
    conn.execute("DELETE FROM blobs WHERE id > 1")
    conn.commit()
    sync_models(engine, [BlobAsText], allow_destructive=True)
    assert Database(engine).select(BlobAsText) == [BlobAsText(id=1, data="naïve")]


def test_engine_for_recognises_dqlite_without_importing_its_client():
    """engine_for recognises a dqlite connection by its class, without importing the client."""
    code = (
        "import sqlite3, sys, pydsqlite\n"
        "from pydsqlite.engines import engine_for\n"
        "engine_for(sqlite3.connect(':memory:'))\n"
        "print('dqlitedbapi' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    with pytest.raises(UsageError, match="pass a sqlite3.Connection or a dqlitedbapi connection"):
        engine_for(object())


class ForeignKeysStayOn(SqliteEngine):
    """SQLite driven like a driver that drops pragma writes without an error (as dqlite's client
    could): ``PRAGMA foreign_keys = OFF`` never reaches the connection."""

    def set_pragma(self, name: str, value: int | str) -> None:
        if name != "foreign_keys":
            super().set_pragma(name, value)


class Parent(SyncModel, table="parents"):
    id: Annotated[int, PrimaryKey()]
    name: str


class ParentRenamed(SyncModel, table="parents"):
    id: Annotated[int, PrimaryKey()]
    name: Annotated[str, Field(max_length=20)]


class Child(SyncModel, table="children"):
    id: Annotated[int, PrimaryKey()]
    parent_id: Annotated[int, ForeignKey("parents.id", on_delete="CASCADE")]
    note: str | None = None


class ChildNoted(SyncModel, table="children"):
    id: Annotated[int, PrimaryKey()]
    parent_id: Annotated[int, ForeignKey("parents.id", on_delete="CASCADE")]
    note: Annotated[str | None, Field(max_length=20)] = None


def test_a_parent_is_never_rebuilt_while_foreign_keys_read_on(conn):
    """Where foreign keys cannot be verified off inside the migration's transaction, the plain recipe
    (whose DROP of the old parent would cascade into every child) never runs: a refusal instead."""
    conn.execute("PRAGMA foreign_keys = ON")
    engine = ForeignKeysStayOn(conn)
    sync_models(engine, [Parent, Child])
    Database(engine).insert_many([Parent(id=n, name=f"p{n}") for n in range(5)])
    Database(engine).insert_many([Child(id=n, parent_id=n % 5) for n in range(20)])
    with pytest.raises(MigrationError, match=r"cannot rebuild or drop table 'parents' because foreign keys could not be switched off.*children references it.*nothing was changed"):
        sync_models(engine, [ParentRenamed, Child])
    assert conn.execute("SELECT count(*) FROM children").fetchone()[0] == 20
    assert "CHECK" not in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'parents'").fetchone()[0]
    assert not conn.in_transaction and conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    plan = sync_models(engine, [Parent, ChildNoted])  # a table no other table references is rebuilt as usual
    assert plan.rebuilt_tables == ("children",) and conn.execute("SELECT count(*) FROM children").fetchone()[0] == 20
