"""sync_models, previews and Database in every transaction mode of Python's sqlite3.

Modes: legacy with ``isolation_level`` "" (the default), None, "IMMEDIATE", "EXCLUSIVE", and
on Python 3.12+ ``autocommit=True`` and ``autocommit=False`` (PEP 249: a transaction is
always pending). What is committed is checked from a second connection on the same file.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import pytest

from pydsqlite import (
    LWW,
    Database,
    DestructiveChangeError,
    ForeignKey,
    MigrationError,
    PrimaryKey,
    PydsqliteError,
    SyncModel,
    UsageError,
    model_migration_plan,
    sync_models,
)


class ParentV1(SyncModel, table="parents"):
    id: Annotated[int, PrimaryKey()]
    name: str


class ParentV2(SyncModel, table="parents"):  # in place: a new nullable column
    id: Annotated[int, PrimaryKey()]
    name: str
    nickname: Optional[str] = None


class ParentV3(SyncModel, table="parents"):  # a rebuild: name becomes nullable
    id: Annotated[int, PrimaryKey()]
    name: Optional[str] = None


class ParentWithoutName(SyncModel, table="parents"):  # destructive: drops a column holding values
    id: Annotated[int, PrimaryKey()]


class Child(SyncModel, table="children"):
    id: Annotated[int, PrimaryKey()]
    parent_id: Annotated[int, ForeignKey("parents.id", on_delete="cascade")]


MODES = {
    "isolation_level=''": {"isolation_level": ""},
    "isolation_level=None": {"isolation_level": None},
    "isolation_level='IMMEDIATE'": {"isolation_level": "IMMEDIATE"},
    "isolation_level='EXCLUSIVE'": {"isolation_level": "EXCLUSIVE"},
    "autocommit=True": {"autocommit": True},
    "autocommit=False": {"autocommit": False},
}
PEP249 = "autocommit=False"
IMPLICIT_TRANSACTIONS = {"isolation_level=''", "isolation_level='IMMEDIATE'", "isolation_level='EXCLUSIVE'"}
"""Legacy modes in which a data change through ``conn.execute`` opens a transaction the caller commits."""


@pytest.fixture(params=list(MODES))
def mode(request) -> str:
    if "autocommit" in MODES[request.param] and sys.version_info < (3, 12):
        pytest.skip(f"sqlite3 {request.param} needs Python 3.12 or later (running {sys.version.split()[0]})")
    return request.param


def connect(path: Path, mode: str, *, foreign_keys: bool = False) -> sqlite3.Connection:
    """A connection in ``mode``; foreign keys are switched on where the pragma works: outside a transaction."""
    options = MODES[mode]
    if mode == PEP249:
        conn = sqlite3.connect(path, autocommit=True)
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        conn.autocommit = False
        return conn
    conn = sqlite3.connect(path, **options)
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def connection_state(conn: sqlite3.Connection) -> tuple[Any, ...]:
    return (
        conn.in_transaction,
        getattr(conn, "autocommit", None),
        conn.isolation_level,
        conn.execute("PRAGMA foreign_keys").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
    )


def committed(path: Path, sql: str) -> list[tuple]:
    """What another connection reads from the file: only committed data."""
    other = sqlite3.connect(path, timeout=0)
    try:
        return other.execute(sql).fetchall()
    finally:
        other.close()


def committed_meanwhile(path: Path, sql: str, mode: str) -> list[tuple] | None:
    """``committed`` while the connection in ``mode`` keeps a transaction open; None under
    ``EXCLUSIVE``, whose lock keeps every reader out until the commit."""
    if mode == "isolation_level='EXCLUSIVE'":
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            committed(path, sql)
        return None
    return committed(path, sql)


def columns_of(path: Path, table: str) -> list[str]:
    return [row[0] for row in committed(path, f"SELECT name FROM pragma_table_info('{table}')")]


@pytest.fixture
def seeded(db_path: Path, mode: str) -> sqlite3.Connection:
    """Version 1 of the schema with two parents and three children, committed; the connection in ``mode``."""
    setup = sqlite3.connect(db_path)
    sync_models(setup, [ParentV1, Child])
    setup.executemany("INSERT INTO parents VALUES (?, ?)", [(1, "ann"), (2, "bob")])
    setup.executemany("INSERT INTO children VALUES (?, ?)", [(10, 1), (11, 1), (12, 2)])
    setup.commit()
    setup.close()
    conn = connect(db_path, mode, foreign_keys=True)
    yield conn
    conn.close()


# --- sync_models and previews --------------------------------------------------------------


def test_sync_models_creating_tables_commits_them(db_path, mode):
    conn = connect(db_path, mode)
    before = connection_state(conn)
    plan = sync_models(conn, [ParentV1, Child])
    assert [operation.kind for operation in plan.operations] == ["create_table", "create_table"]
    assert committed(db_path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('parents', 'children') ORDER BY name") == [
        ("children",), ("parents",)
    ]
    assert connection_state(conn) == before  # PEP 249: a transaction is pending again, as after conn.commit()
    conn.close()


def test_sync_models_changing_a_table_in_place_commits_it(db_path, seeded):
    before = connection_state(seeded)
    sync_models(seeded, [ParentV2, Child])
    assert "nickname" in columns_of(db_path, "parents")
    assert connection_state(seeded) == before


def test_a_rebuild_with_foreign_keys_on_keeps_every_child_under_on_delete_cascade(db_path, seeded):
    before = connection_state(seeded)
    plan = sync_models(seeded, [ParentV3, Child])
    assert plan.rebuilt_tables == ("parents",)
    assert committed(db_path, "SELECT id, parent_id FROM children ORDER BY id") == [(10, 1), (11, 1), (12, 2)]
    assert committed(db_path, "SELECT \"notnull\" FROM pragma_table_info('parents') WHERE name = 'name'") == [(0,)]
    assert connection_state(seeded) == before and before[3] == 1  # foreign keys back on
    assert committed(db_path, "PRAGMA foreign_key_check") == []


def test_a_refused_destructive_change_changes_nothing(db_path, seeded):
    before = connection_state(seeded)
    file_before = db_path.read_bytes()
    with pytest.raises(DestructiveChangeError, match="drop column parents.name"):
        sync_models(seeded, [ParentWithoutName, Child])
    assert db_path.read_bytes() == file_before
    assert connection_state(seeded) == before
    assert committed(db_path, "SELECT * FROM parents ORDER BY id") == [(1, "ann"), (2, "bob")]


def test_a_preview_leaves_the_connection_and_its_pending_writes_as_they_were(db_path, seeded, mode):
    seeded.execute("INSERT INTO parents VALUES (3, 'pending')")
    before = connection_state(seeded)
    plan = model_migration_plan(seeded, [ParentV3, Child])
    assert plan.rebuilt_tables == ("parents",)
    assert connection_state(seeded) == before
    assert seeded.execute("SELECT name FROM parents WHERE id = 3").fetchall() == [("pending",)]
    pending = mode == PEP249 or mode in IMPLICIT_TRANSACTIONS
    assert committed_meanwhile(db_path, "SELECT count(*) FROM parents", mode) in ([(2 if pending else 3,)], None)


def test_sync_models_after_a_pending_write(db_path, seeded, mode):
    """PEP 249: the pending transaction is committed first, as conn.commit() would. Legacy mode with
    the caller's transaction open: the migration joins it (a savepoint) and the caller commits."""
    seeded.execute("INSERT INTO parents VALUES (3, 'pending')")
    sync_models(seeded, [ParentV2, Child])
    if mode in IMPLICIT_TRANSACTIONS:
        assert seeded.in_transaction
        assert committed_meanwhile(db_path, "SELECT count(*) FROM pragma_table_info('parents') WHERE name = 'nickname'", mode) in ([(0,)], None)
        seeded.commit()
    assert "nickname" in columns_of(db_path, "parents")
    assert committed(db_path, "SELECT name FROM parents WHERE id = 3") == [("pending",)]


def test_a_no_op_sync_after_a_pending_write_treats_it_as_any_sync_does(db_path, seeded, mode):
    """The no-op answers without the engine on a plain connection, yet the pending transaction is
    handled as by a migrating call: PEP 249 commits it, legacy modes leave it to the caller."""
    before = connection_state(seeded)
    seeded.execute("INSERT INTO parents VALUES (3, 'pending')")
    plan = sync_models(seeded, [ParentV1, Child])
    assert plan.is_empty and plan.checked
    if mode == PEP249:
        assert committed(db_path, "SELECT name FROM parents WHERE id = 3") == [("pending",)]
        assert seeded.in_transaction and seeded.autocommit is False
    elif mode in IMPLICIT_TRANSACTIONS:
        assert seeded.in_transaction
        assert committed_meanwhile(db_path, "SELECT count(*) FROM parents", mode) in ([(2,)], None)
        seeded.commit()
    assert committed(db_path, "SELECT name FROM parents WHERE id = 3") == [("pending",)]
    assert connection_state(seeded)[1:] == before[1:]


@pytest.mark.parametrize("models", [[ParentV1, Child], [ParentV2, Child]], ids=["no-op", "migrating"])
def test_a_pep249_sync_whose_first_commit_is_refused_leaves_the_transaction_pending_and_the_mode_as_it_was(db_path, seeded, mode, models):
    """sync_models commits what is pending before it migrates; when another connection's lock
    refuses that commit, the pending writes stay pending on a connection still in PEP 249 mode
    (commit() then writes them), and nothing else was done."""
    if mode != PEP249:
        pytest.skip("only a PEP 249 connection has a transaction of its own to commit first")
    seeded.execute("PRAGMA busy_timeout = 50")
    seeded.execute("INSERT INTO parents VALUES (3, 'pending')")
    reader = sqlite3.connect(db_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM parents").fetchone()
    with pytest.raises(sqlite3.OperationalError, match="could not be committed first.*still pending") as raised:
        sync_models(seeded, models, busy_timeout=0.05)
    assert isinstance(raised.value, PydsqliteError)
    reader.execute("COMMIT")
    reader.close()
    assert seeded.autocommit is False and seeded.in_transaction
    assert ("nickname",) not in seeded.execute("SELECT name FROM pragma_table_info('parents')").fetchall()
    Database(seeded).insert(ParentV1(id=4, name="after"))
    seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,), (4,)]


# --- Database --------------------------------------------------------------------------------


def test_a_single_write_is_committed_unless_the_connection_keeps_a_transaction_pending(db_path, seeded, mode):
    db = Database(seeded)
    db.insert(ParentV1(id=3, name="cy"))
    db.update(ParentV1, 1, name="ANN")
    db.delete(Child, 12)
    state = committed(db_path, "SELECT id, name FROM parents ORDER BY id"), committed(db_path, "SELECT count(*) FROM children")
    if mode == PEP249:  # joins the pending transaction: the caller commits, as with conn.execute
        assert state == ([(1, "ann"), (2, "bob")], [(3,)]) and seeded.in_transaction
        seeded.commit()
    else:
        assert not seeded.in_transaction
    assert committed(db_path, "SELECT id, name FROM parents ORDER BY id") == [(1, "ANN"), (2, "bob"), (3, "cy")]
    assert committed(db_path, "SELECT count(*) FROM children") == [(2,)]


def test_a_transaction_block_commits_on_success_and_rolls_back_on_error(db_path, seeded, mode):
    db = Database(seeded)
    with db.transaction():
        db.insert(ParentV1(id=3, name="cy"))
        db.insert(Child(id=13, parent_id=3))
    assert committed(db_path, "SELECT count(*) FROM parents") == [(3,)]
    assert seeded.in_transaction == (mode == PEP249)
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.insert(ParentV1(id=4, name="dee"))
            raise RuntimeError("fails")
    assert db.get(ParentV1, 4) is None and committed(db_path, "SELECT count(*) FROM parents") == [(3,)]
    assert seeded.in_transaction == (mode == PEP249)


def test_a_failing_block_on_a_pep249_connection_keeps_the_pending_writes_before_it(db_path, seeded, mode):
    db = Database(seeded)
    db.insert(ParentV1(id=3, name="before the block"))
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.insert(ParentV1(id=4, name="in the block"))
            raise RuntimeError("fails")
    assert [p.id for p in db.select(ParentV1, order_by="id")] == [1, 2, 3]
    if mode == PEP249:
        assert committed(db_path, "SELECT count(*) FROM parents") == [(2,)]
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,)]


def test_nested_blocks_are_savepoints(db_path, seeded):
    db = Database(seeded)
    with db.transaction():
        db.insert(ParentV1(id=3, name="outer"))
        with pytest.raises(RuntimeError):
            with db.transaction():
                db.insert(ParentV1(id=4, name="inner"))
                raise RuntimeError("inner fails")
        with db.transaction():
            db.insert(ParentV1(id=5, name="second inner"))
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,), (5,)]


@pytest.mark.parametrize("mode", sorted(IMPLICIT_TRANSACTIONS))
def test_inside_the_callers_own_transaction_a_block_is_a_savepoint_and_the_caller_commits(db_path, seeded, mode):
    seeded.execute("INSERT INTO parents VALUES (3, 'caller')")
    db = Database(seeded)
    with db.transaction():
        db.insert(ParentV1(id=4, name="block"))
    assert seeded.in_transaction
    assert committed_meanwhile(db_path, "SELECT count(*) FROM parents", mode) in ([(2,)], None)
    seeded.commit()
    assert committed(db_path, "SELECT count(*) FROM parents") == [(4,)]


def end_transaction(conn: sqlite3.Connection, mode: str, statement: str) -> None:
    """What a helper called inside a block might do: ``conn.commit()`` / ``conn.rollback()`` in PEP 249
    mode (which open the next transaction), the statement itself in the others (where, with
    ``autocommit=True``, the methods do nothing)."""
    if mode == PEP249:
        (conn.commit if statement == "COMMIT" else conn.rollback)()
    else:
        conn.execute(statement)


@pytest.mark.parametrize("statement", ["COMMIT", "ROLLBACK"])
def test_a_transaction_ended_inside_a_block_is_refused_and_nothing_written_after_it_stays(db_path, seeded, mode, statement):
    db = Database(seeded)
    with pytest.raises(UsageError, match="ended inside the block") as refused:
        with db.transaction():
            db.insert(ParentV1(id=3, name="before the end"))
            end_transaction(seeded, mode, statement)
            db.insert(ParentV1(id=4, name="after the end"))  # refused here, or when the block ends (PEP 249)
            db.update(ParentV1, 1, name="after the end")
    assert "after that point" in str(refused.value) or "nothing of it was written" in str(refused.value)
    if mode == PEP249:
        seeded.commit()
    expected = [(1, "ann"), (2, "bob")] + ([(3, "before the end")] if statement == "COMMIT" else [])
    assert committed(db_path, "SELECT id, name FROM parents ORDER BY id") == expected
    assert seeded.in_transaction == (mode == PEP249)
    db.insert(ParentV1(id=5, name="next"))  # the connection works on as before
    assert db.get(ParentV1, 5) is not None


def test_an_error_after_a_commit_inside_a_block_says_the_block_was_not_one_transaction(db_path, seeded, mode):
    db = Database(seeded)
    with pytest.raises(UsageError, match="ended inside the block") as refused:
        with db.transaction():
            db.insert(ParentV1(id=3, name="committed halfway"))
            end_transaction(seeded, mode, "COMMIT")
            raise RuntimeError("the block fails")
    assert isinstance(refused.value.__cause__, RuntimeError)
    assert committed(db_path, "SELECT count(*) FROM parents WHERE id = 3") == [(1,)]
    assert seeded.in_transaction == (mode == PEP249)


@pytest.mark.parametrize("mode", sorted(IMPLICIT_TRANSACTIONS))
def test_writes_after_a_commit_inside_a_block_are_rolled_back_when_it_ends(db_path, seeded, mode):
    """After the commit a plain ``conn.execute`` write opens a new transaction (legacy mode), which
    the block would otherwise have committed as if it were its own."""
    db = Database(seeded)
    with pytest.raises(UsageError, match="rolled back"):
        with db.transaction():
            db.insert(ParentV1(id=3, name="committed halfway"))
            seeded.commit()
            seeded.execute("INSERT INTO parents VALUES (4, 'after the commit')")
            db.insert(ParentV1(id=5, name="after the commit"))
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,)]
    assert not seeded.in_transaction


def test_a_transaction_ended_inside_a_nested_block_is_refused_by_both_blocks(db_path, seeded, mode):
    db = Database(seeded)
    with pytest.raises(UsageError, match="ended inside the block"):
        with db.transaction():
            db.insert(ParentV1(id=3, name="outer"))
            with db.transaction():
                db.insert(ParentV1(id=4, name="inner"))
                end_transaction(seeded, mode, "ROLLBACK")
    if mode == PEP249:
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,)]


def test_an_error_after_which_sqlite_rolled_back_the_block_is_raised_as_it_is(db_path, seeded, mode):
    """A full disk ends the whole transaction (SQLite rolls it back): that error is the news, not
    a transaction "ended inside the block"."""
    db = Database(seeded)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        with db.transaction():
            db.insert(ParentV1(id=3, name="small"))
            seeded.execute(f"PRAGMA max_page_count = {seeded.execute('PRAGMA page_count').fetchone()[0]}")
            db.insert(ParentV1(id=4, name="x" * 100_000))
    assert committed(db_path, "SELECT count(*) FROM parents") == [(2,)]
    assert seeded.in_transaction == (mode == PEP249)  # PEP 249 mode keeps a transaction pending


def test_a_transaction_block_of_its_own_takes_the_write_lock_at_once(db_path, seeded, mode):
    """So a block that reads before it writes waits for the lock (the busy timeout) instead of
    failing; on a PEP 249 connection the block is a savepoint of the pending deferred transaction."""
    db = Database(seeded)
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    with db.transaction():
        if mode == PEP249:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        else:
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        if mode == "isolation_level='EXCLUSIVE'":  # as asked: readers wait too (rollback journal)
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("SELECT count(*) FROM parents").fetchall()
    other.close()


@pytest.mark.parametrize("refusal", ["a reader's lock", "a deferred foreign key"])
def test_a_block_whose_commit_is_refused_writes_nothing_and_its_retry_writes_once(db_path, seeded, mode, refusal):
    """The block raises, none of its writes stay pending (a retry would write them twice); on a
    PEP 249 connection what was pending before the block stays pending, as any failed block leaves it."""
    seeded.execute("PRAGMA busy_timeout = 50")
    db = Database(seeded)
    if mode == PEP249:
        seeded.execute("INSERT INTO parents VALUES (5, 'pending before')")
    reader = sqlite3.connect(db_path, isolation_level=None)

    def block(child: int, parent: int) -> None:
        with db.transaction():
            if refusal == "a deferred foreign key":
                seeded.execute("PRAGMA defer_foreign_keys = ON")
            db.insert(ParentV1(id=3, name="cy"))
            db.insert(Child(id=child, parent_id=parent))

    if refusal == "a reader's lock":
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM parents").fetchone()  # holds a shared lock: no commit can write
        failing = (3, 1)
    else:
        failing = (13, 99)  # no parent 99: the deferred check refuses the commit
    with pytest.raises((sqlite3.OperationalError, sqlite3.IntegrityError, PydsqliteError)):
        block(*failing)
    if refusal == "a reader's lock":
        reader.execute("COMMIT")
    reader.close()
    assert seeded.execute("SELECT count(*) FROM parents WHERE id = 3").fetchone() == (0,)
    pending = seeded.execute("SELECT count(*) FROM parents WHERE id = 5").fetchone()
    assert pending == ((1,) if mode == PEP249 else (0,))
    block(13, 1)  # the retry
    if seeded.in_transaction and mode != PEP249:
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == ([(1,), (2,), (3,), (5,)] if mode == PEP249 else [(1,), (2,), (3,)])
    assert committed(db_path, "SELECT count(*) FROM children WHERE id = 13") == [(1,)]


def test_a_block_of_a_second_database_on_the_same_connection_nests_in_the_first(db_path, seeded, mode):
    """A helper wrapping the connection in a Database of its own, called inside the app's block:
    its block is a savepoint of the app's, so the app's failing block takes both back."""

    def audit(text: str) -> None:
        helper = Database(seeded)
        with helper.transaction():
            helper.insert(ParentV1(id=4, name=text))

    db = Database(seeded)
    with pytest.raises(RuntimeError, match="credit failed"):
        with db.transaction():
            db.insert(ParentV1(id=3, name="debit"))
            audit("audit")
            raise RuntimeError("credit failed")
    if seeded.in_transaction:
        seeded.rollback() if mode != PEP249 else seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,)]
    with db.transaction():
        db.insert(ParentV1(id=3, name="debit"))
        audit("audit")
    if seeded.in_transaction and mode != PEP249:
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,), (4,)]


def test_a_generator_holding_a_block_closed_inside_a_later_block_leaves_nothing_behind(db_path, seeded, mode):
    """A generator that holds db.transaction() open, closed while a block opened later is still open:
    its rollback ends that block's transaction too (the later block says so), and afterwards every
    block and write commits as usual, on this connection and on a new one (no nesting left over)."""
    db = Database(seeded)

    def streaming():
        with db.transaction():
            db.insert(ParentV1(id=3, name="streamed"))
            yield

    stream = streaming()
    next(stream)
    with pytest.raises(UsageError, match="ended by a block that enclosed it and ended first"):
        with db.transaction():
            db.insert(ParentV1(id=4, name="later"))
            stream.close()
            with pytest.raises(UsageError, match="this call was refused, nothing of it was written"):
                db.insert(ParentV1(id=8, name="inside the ended block"))
    with db.transaction():
        db.insert(ParentV1(id=5, name="after"))
    db.insert(ParentV1(id=6, name="single"))
    if seeded.in_transaction and mode != PEP249:
        seeded.commit()
    if mode == PEP249:
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (5,), (6,)]
    seeded.close()
    fresh = connect(db_path, mode)
    with Database(fresh).transaction():
        Database(fresh).insert(ParentV1(id=7, name="new connection"))
    assert committed(db_path, "SELECT count(*) FROM parents WHERE id = 7") == [(1,)]
    fresh.close()


def test_a_block_left_open_inside_a_generator_whose_enclosing_block_ended_refuses_new_work_until_closed(db_path, seeded, mode):
    """Two generators each holding a block, the first closed before the second: the second's block
    went with the first's transaction. A block opened then would have been taken for one nested in
    it (in PEP 249 mode it never committed, and the second generator's rollback took it along):
    it is refused, nothing written, until that generator is closed; then blocks commit as usual."""
    db = Database(seeded)

    def holding(name: str, key: int):
        with db.transaction():
            db.insert(ParentV1(id=key, name=name))
            yield

    first, second = holding("first", 3), holding("second", 4)
    next(first)
    next(second)
    first.close()
    with pytest.raises(UsageError, match="this call was refused, nothing of it was written"):
        with db.transaction():
            db.insert(ParentV1(id=5, name="refused"))
    second.close()
    with db.transaction():
        db.insert(ParentV1(id=6, name="after"))
    if seeded.in_transaction:
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents WHERE id >= 5 ORDER BY id") == [(6,)]


# --- sync_models inside a transaction block ---------------------------------------------------


class Tag(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: str = ""


def test_sync_models_inside_a_failing_block_is_rolled_back_with_it(db_path, seeded, mode):
    """In every mode the migration joins the block (a savepoint): the block's error undoes the
    block's writes and the migration; nothing is committed halfway, nothing raw is raised."""
    db = Database(seeded)
    with pytest.raises(RuntimeError, match="abort the block"):
        with db.transaction():
            db.insert(ParentV1(id=3, name="before the migration"))
            sync_models(seeded, [ParentV2, Child, Tag])
            db.insert(Tag(id=1, label="after the migration"))
            raise RuntimeError("abort the block")
    if seeded.in_transaction:
        seeded.rollback()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,)]
    assert committed(db_path, "SELECT name FROM sqlite_master WHERE name = 'tags'") == []
    assert "nickname" not in columns_of(db_path, "parents")
    assert committed(db_path, "PRAGMA foreign_keys") == [(0,)] and seeded.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_sync_models_inside_a_block_commits_with_the_block(db_path, seeded, mode):
    db = Database(seeded)
    with db.transaction():
        db.insert(ParentV1(id=3, name="before the migration"))
        plan = sync_models(seeded, [ParentV2, Child, Tag])
        assert sorted(operation.kind for operation in plan.operations) == ["add_column", "create_table"]
        db.insert(Tag(id=1, label="after the migration"))
        assert committed_meanwhile(db_path, "SELECT name FROM sqlite_master WHERE name = 'tags'", mode) in ([], None)
    if seeded.in_transaction and mode != PEP249:  # legacy mode: the block joined the caller's transaction
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,)]
    assert committed(db_path, "SELECT id, label FROM tags") == [(1, "after the migration")]
    assert "nickname" in columns_of(db_path, "parents")
    assert sync_models(seeded, [ParentV2, Child, Tag]).is_empty


def test_inside_a_block_a_rebuild_of_a_referenced_table_is_refused_with_foreign_keys_on(db_path, seeded, mode):
    """Foreign keys cannot be switched off inside a transaction: the rebuild of a parent is
    refused (MigrationError), in every mode, and the block's writes stay as the block decides."""
    db = Database(seeded)
    with db.transaction():
        db.insert(ParentV1(id=3, name="kept"))
        with pytest.raises(MigrationError, match="parents"):
            sync_models(seeded, [ParentV3, Child])
    if seeded.in_transaction and mode != PEP249:
        seeded.commit()
    assert committed(db_path, "SELECT id FROM parents ORDER BY id") == [(1,), (2,), (3,)]
    assert committed(db_path, "SELECT \"notnull\" FROM pragma_table_info('parents') WHERE name = 'name'") == [(1,)]
    assert committed(db_path, "SELECT id, parent_id FROM children ORDER BY id") == [(10, 1), (11, 1), (12, 2)]


# --- the application's text_factory ---------------------------------------------------------


class Labelled(SyncModel, table="labelled"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW()]
    note: Optional[str] = None


class LabelledV2(SyncModel, table="labelled"):  # a rebuild whose data check reads a sample value
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW()]
    note: int = 0


@pytest.mark.parametrize(
    "factory", [bytes, lambda raw: raw.decode("utf-8").upper()], ids=["bytes", "decoding function"],
)
def test_a_connection_with_its_own_text_factory_syncs_reads_and_merges_like_any_other(db_path, factory):
    """pydsqlite's own statements read TEXT as str whatever ``text_factory`` the application set
    (introspection, plans and their samples, rows, changesets); the application's reads keep it."""
    conn = sqlite3.connect(db_path)
    conn.text_factory = factory
    assert "create table labelled" in str(sync_models(conn, [Labelled]))
    db = Database(conn)
    db.insert_many([Labelled(id="a", label="first", note="12"), Labelled(id="b", label="second", note="n/a")])
    db.update(Labelled, "a", label="changed")
    assert db.select(Labelled, order_by="id") == [
        Labelled(id="a", label="changed", note="12"), Labelled(id="b", label="second", note="n/a"),
    ]
    assert [row.id for row in db.iter_select(Labelled, where="label = ?", params=["second"])] == ["b"]
    assert sync_models(conn, [Labelled]).is_empty  # the live schema reads back as it was written
    plan = model_migration_plan(conn, [LabelledV2])
    assert "'n/a'" in str(plan)  # the data check's sample, read as text
    with pytest.raises(DestructiveChangeError, match="'n/a'"):
        sync_models(conn, [LabelledV2])

    other = Database(sqlite3.connect(":memory:"))
    sync_models(other.conn, [Labelled])
    other.apply_changes(db.changes_since(models=[Labelled]), [Labelled])
    db.apply_changes(other.changes_since(models=[Labelled]), [Labelled])
    assert other.select(Labelled, order_by="id") == db.select(Labelled, order_by="id")
    assert conn.text_factory is factory
    assert conn.execute("SELECT label FROM labelled WHERE id = 'a'").fetchone()[0] == factory(b"changed")
    conn.close()


@pytest.mark.parametrize("declared", ["INTEGER", "TEXT", "REAL", "BLOB"])
def test_a_connection_converting_the_declared_types_is_refused_and_one_converting_others_works(db_path, declared):
    """``detect_types`` with a converter for a type pydsqlite declares would read other values than
    SQLite stores (a key read so matches no row: an update would change nothing, an upsert insert a
    second row): refused with ``UsageError`` before anything is read or written. Converters for other
    names (an application's ``CENTS``, the standard library's ``DATE``) change nothing for pydsqlite."""
    setup = sqlite3.connect(db_path)
    sync_models(setup, [Labelled])
    Database(setup).insert(Labelled(id="a", label="x"))
    setup.close()
    sqlite3.register_converter(declared, lambda raw: b"converted " + raw)
    try:
        conn = sqlite3.connect(db_path, detect_types=sqlite3.PARSE_DECLTYPES)
        for call in (lambda: sync_models(conn, [Labelled]), lambda: Database(conn)):
            with pytest.raises(UsageError, match=f"converters registered for {declared}"):
                call()
        conn.close()
        fresh = sqlite3.connect(db_path.with_name("fresh.db"), detect_types=sqlite3.PARSE_DECLTYPES)  # no column of that type yet
        with pytest.raises(UsageError, match=f"converters registered for {declared}"):
            Database(fresh)
        assert fresh.execute("SELECT name FROM temp.sqlite_master").fetchall() == [] and not fresh.in_transaction
        fresh.close()
        plain = sqlite3.connect(db_path)  # the same converter, a connection that does not run it
        assert Database(plain).get(Labelled, "a") == Labelled(id="a", label="x") and sync_models(plain, [Labelled]).is_empty
        assert plain.execute("SELECT name FROM temp.sqlite_master").fetchall() == []
        plain.close()
    finally:
        del sqlite3.converters[declared]
    dated = sqlite3.connect(db_path, detect_types=sqlite3.PARSE_DECLTYPES)
    sqlite3.register_converter("CENTS", lambda raw: int(raw) * 100)
    try:
        assert Database(dated).get(Labelled, "a") == Labelled(id="a", label="x")
    finally:
        del sqlite3.converters["CENTS"]
        dated.close()


class Task(SyncModel, table="mode_tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""


def test_the_feed_carries_committed_writes_only_in_every_mode(db_path, mode):
    """Where a write is left pending (PEP 249), the feed is refused until it is committed: a rollback
    would leave a shipped changeset carrying a row that never was, and a cursor past reused numbers."""
    setup = sqlite3.connect(db_path)
    sync_models(setup, [Task])
    setup.close()
    conn = connect(db_path, mode)
    db = Database(conn)
    db.insert(Task(id="t1", title="first"))
    if mode == PEP249:
        with pytest.raises(UsageError, match=r"not committed yet: call conn.commit\(\) first"):
            db.changes_since(models=[Task])
        conn.rollback()
        assert db.changes_since(models=[Task]).changes == ()
        db.insert(Task(id="t1", title="first"))
        conn.commit()
    feed = db.changes_since(models=[Task])
    assert [change.key for change in feed.changes] == [("t1",)]
    db.insert(Task(id="t2", title="second"))
    if mode == PEP249:
        conn.commit()
    assert [change.key for change in db.changes_since(feed.cursor, models=[Task]).changes] == [("t2",)]
    conn.close()


@pytest.mark.parametrize("function", [sync_models, model_migration_plan])
@pytest.mark.parametrize("given", ["a cursor", "a number", "None"])
def test_something_other_than_a_connection_or_a_path_is_a_usage_error(tmp_path: Path, function: Any, given: str) -> None:
    conn = sqlite3.connect(tmp_path / "app.db")
    value = {"a cursor": conn.cursor(), "a number": 3, "None": None}[given]
    with pytest.raises(UsageError, match="expected a database connection or a file path") as refused:
        function(value, [ParentV1])
    assert ("cursor.connection" in str(refused.value)) == (given == "a cursor")
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_a_block_ended_with_a_statement_of_yours_still_running_is_rolled_back_and_says_why(db_path, seeded, mode):
    """SQLite refuses to release the block's savepoint while a cursor of the caller's is unfinished:
    the block is rolled back for real (a retry writes once) and the error names the cursor."""
    db = Database(seeded)
    attempts = []
    for attempt in range(2):
        try:
            with db.transaction():
                db.insert(ParentV1(id=3, name="block"))
                cursor = seeded.execute("INSERT INTO parents VALUES (?, 'returning') RETURNING id", (10 + attempt,))
                if attempt:
                    cursor.fetchall()
            attempts.append("committed")
        except PydsqliteError as error:
            attempts.append("refused")
            assert "a statement of yours is still running on this connection" in str(error)
            cursor.close()
    if seeded.in_transaction:
        seeded.commit()
    names = committed(db_path, "SELECT name FROM parents WHERE id >= 3 ORDER BY id")
    assert attempts == ["refused", "committed"] and names == [("block",), ("returning",)]
