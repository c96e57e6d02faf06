"""The same ``sync_models`` and ``Database`` code on a real 3-node dqlite cluster (Raft-replicated SQLite).

Each test gets a database of its own on a cluster started for this module (three
``dqlite-demo`` nodes on free loopback ports, stopped by their process ids); the failover
test starts a cluster of its own. Database names are prefix-free (all of one length): the
demo node confuses two databases whose names are prefixes of each other.

Needs Debian's libdqlite0 and go-dqlite and the dqlite-dbapi client (Python 3.13): skipped
without them, saying how to enable them, except where ``PYDSQLITE_REQUIRE_DQLITE=1`` (set by
tests/run_dqlite_suite.sh, which CI runs): there they fail.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Optional

import pytest
from pydantic import ValidationError

from pydsqlite import (
    LWW,
    ConnectionLostError,
    ConstraintError,
    Database,
    Field,
    ForeignKey,
    Index,
    MigrationError,
    PrimaryKey,
    PydsqliteError,
    RowNotFoundError,
    SchemaMismatchError,
    SyncModel,
    Unique,
    UnstorableValueError,
    UsageError,
    col,
    connect_dqlite,
    migration_history,
    model_migration_plan,
    sync_models,
)
from pydsqlite.engines import engine_for
from pydsqlite.errors import EngineError

from .dqlite_cluster import Cluster, missing

UNAVAILABLE = missing()
if UNAVAILABLE is not None and os.environ.get("PYDSQLITE_REQUIRE_DQLITE") == "1":
    raise RuntimeError(f"the dqlite cluster suite is required here, but {UNAVAILABLE}")
pytestmark = pytest.mark.skipif(
    UNAVAILABLE is not None,
    reason=f"dqlite cluster suite skipped: {UNAVAILABLE}; run it with tests/run_dqlite_suite.sh (README)",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster.start(tmp_path_factory.mktemp("dqlite"))
    yield started
    started.stop()


@pytest.fixture
def database_name() -> str:
    """A fresh database name; every name has the same length, so none is a prefix of another."""
    return "db" + uuid.uuid4().hex[:16]


@pytest.fixture
def conn(cluster: Cluster, database_name: str) -> Iterator:
    connection = connect_dqlite(cluster.addresses, database_name)
    yield connection
    connection.close()


# --- models --------------------------------------------------------------------------------------


class Author(SyncModel, table="authors"):
    id: int = Field(default=None, primary_key=True)
    email: Annotated[str, Unique()]
    name: Annotated[str, Field(max_length=40)]


class Book(SyncModel, table="books"):
    id: int = Field(default=None, primary_key=True)
    author_id: Annotated[int, ForeignKey("authors.id", on_delete="CASCADE")]
    title: str


class Review(SyncModel, table="reviews"):
    id: int = Field(default=None, primary_key=True)
    book_id: Annotated[int, ForeignKey("books.id", on_delete="CASCADE")]
    stars: int


class Shelf(SyncModel, table="shelves"):
    id: int = Field(default=None, primary_key=True)
    author_id: Annotated[Optional[int], ForeignKey("authors.id", on_delete="SET NULL")] = None


class AuthorV2(SyncModel, table="authors"):
    """Authors with a column that needs a rebuild: a tighter bound on ``name`` and a new NOT NULL column."""

    id: int = Field(default=None, primary_key=True)
    email: Annotated[str, Unique()]
    name: Annotated[str, Field(max_length=30)]
    country: str = "NZ"


LIBRARY = [Author, Book, Review, Shelf]
LIBRARY_V2 = [AuthorV2, Book, Review, Shelf]


def fill_library(db: Database, authors: int) -> None:
    db.insert_many([Author(email=f"a{n}@example.com", name=f"Author {n}") for n in range(authors)])
    db.insert_many([Book(author_id=n % authors + 1, title=f"Book {n}") for n in range(2 * authors)])
    db.insert_many([Review(book_id=n % (2 * authors) + 1, stars=n % 5) for n in range(4 * authors)])
    db.insert_many([Shelf(author_id=n + 1) for n in range(authors)])


def snapshot(conn, tables: list[str]) -> dict[str, list[tuple]]:
    return {table: [tuple(row) for row in conn.execute(f"SELECT * FROM `{table}` ORDER BY rowid").fetchall()] for table in tables}


def table_names(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}


def column_names(conn, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"SELECT * FROM pragma_table_info('{table}')").fetchall()]


# --- migrations ----------------------------------------------------------------------------------


def test_create_then_nothing_to_do(conn):
    plan = sync_models(conn, LIBRARY)
    assert [operation.kind for operation in plan.operations] == ["create_table"] * 4
    assert {"authors", "books", "reviews", "shelves"} <= table_names(conn)
    assert sync_models(conn, LIBRARY).is_empty
    assert model_migration_plan(conn, LIBRARY).is_empty
    assert len(migration_history(conn)) == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_schema_of_more_tables_than_one_statement_binds_is_read_whole(conn):
    """dqlite binds at most 255 parameters per statement: introspection reads the tables' PRAGMAs in
    chunks under that, so a schema of 300 tables plans as on a file."""
    from typing import Any

    from pydsqlite.migrate.introspect import forget_tables_read

    models: list[type[SyncModel]] = []
    for number in range(300):
        namespace: dict[str, Any] = {"__annotations__": {"id": Annotated[int, PrimaryKey()], "a": str}}
        models.append(type(SyncModel)(f"Many{number}", (SyncModel,), namespace, table=f"many_{number:03}", indexes=[Index("a")]))
    sync_models(conn, models)
    forget_tables_read()
    assert model_migration_plan(conn, models).is_empty
    conn.execute("DROP INDEX ix_many_299_a")
    forget_tables_read()
    assert [operation.description for operation in model_migration_plan(conn, models).operations] == ["create index ix_many_299_a on many_299 (a)"]


def test_parent_rebuild_keeps_every_child_and_grandchild_row(conn):
    sync_models(conn, LIBRARY)
    db = Database(conn)
    fill_library(db, 300)
    before = snapshot(conn, ["books", "reviews", "shelves"])
    authors_before = snapshot(conn, ["authors"])["authors"]
    reports: list[tuple[str, int, int]] = []

    plan = sync_models(conn, LIBRARY_V2, progress=lambda table, copied, total: reports.append((table, copied, total)))

    assert plan.rebuilt_tables == ("authors",)
    assert snapshot(conn, ["books", "reviews", "shelves"]) == before  # no cascade, no SET NULL: every row as it was
    assert snapshot(conn, ["authors"])["authors"] == [(*row, "NZ") for row in authors_before]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # switched back on after the rebuild
    assert model_migration_plan(conn, LIBRARY_V2).is_empty
    # Without SQL functions, the copy runs in ranges of the rowid and reports after each one.
    assert reports[0] == ("authors", 0, 300) and reports[-1] == ("authors", 300, 300)
    copied = [count for _, count, _ in reports]
    assert len(reports) > 3 and copied == sorted(copied)
    # The parent still enforces its children: deleting an author cascades as declared.
    db.delete(AuthorV2, 1)
    assert db.count(Book, "author_id = ?", (1,)) == 0
    assert db.count(Shelf, "author_id IS NULL") == 1


def test_a_rebuild_that_the_data_refuses_changes_nothing(conn):
    sync_models(conn, LIBRARY)
    db = Database(conn)
    db.insert_many([Author(email="long@example.com", name="A name of thirty-five characters..")])
    tables = snapshot(conn, ["authors"])
    with pytest.raises(MigrationError, match=r"authors\.name: 1 row.*CHECK"):
        sync_models(conn, LIBRARY_V2)
    assert snapshot(conn, ["authors"]) == tables and column_names(conn, "authors") == ["id", "email", "name"]
    assert not conn.in_transaction and conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


class Blob(SyncModel, table="blobs"):
    id: Annotated[int, PrimaryKey()]
    data: bytes


class BlobAsText(SyncModel, table="blobs"):
    id: Annotated[int, PrimaryKey()]
    data: str


def test_utf8_check_runs_without_sql_functions(conn):
    sync_models(conn, [Blob])
    db = Database(conn)
    db.insert_many([Blob(id=1, data="naïve".encode()), Blob(id=2, data=b"\xff\xfe")])
    with pytest.raises(MigrationError, match=r"blobs\.data: 1 row: blob values are not valid UTF-8.*b'\\xff\\xfe'"):
        sync_models(conn, [BlobAsText], allow_destructive=True)
    db.delete(Blob, 2)
    sync_models(conn, [BlobAsText], allow_destructive=True)
    assert db.select(BlobAsText) == [BlobAsText(id=1, data="naïve")]


# --- rows ---------------------------------------------------------------------------------------


def test_validated_bulk_inserts_are_batched_and_all_or_nothing(conn):
    sync_models(conn, LIBRARY)
    db = Database(conn)
    assert db.insert_many([Author(email=f"a{n}@example.com", name=f"Author {n}") for n in range(2500)]) == 2500
    assert db.count(Author) == 2500
    assert db.get(Author, 2500) == Author(id=2500, email="a2499@example.com", name="Author 2499")

    with pytest.raises(ValidationError, match=r"1200"):  # validated first: nothing written
        db.insert_many([{"email": f"b{n}@example.com", "name": "x" * (50 if n == 1200 else 5)} for n in range(2000)], Author)
    duplicate = [Author(email=f"c{n}@example.com", name="c") for n in range(1500)] + [Author(email="a7@example.com", name="dup")]
    with pytest.raises(ConstraintError, match=r"UNIQUE.*authors\.email"):  # the last batch fails: every batch rolled back
        db.insert_many(duplicate)
    assert db.count(Author) == 2500 and not conn.in_transaction


def test_rows_the_cluster_ignores_are_not_counted_and_are_refused_on_a_synced_table(conn):
    """A trigger's RAISE(IGNORE) skips rows inside batched multi-row INSERTs: insert_many says how many
    the cluster wrote; on a synced table nothing is written (an ignored key would come back to life)."""
    sync_models(conn, [*LIBRARY, Card])
    conn.cursor().execute("CREATE TRIGGER skip_spam BEFORE INSERT ON authors WHEN NEW.name = 'spam' BEGIN SELECT RAISE(IGNORE); END")
    conn.cursor().execute("CREATE TRIGGER skip_spam_cards BEFORE INSERT ON lww_cards WHEN NEW.title = 'spam' BEGIN SELECT RAISE(IGNORE); END")
    db = Database(conn)
    authors = [Author(email=f"i{n}@example.com", name="spam" if n % 500 == 7 else "ok") for n in range(2500)]
    assert db.insert_many(authors) == 2495 and db.count(Author) == 2495
    with pytest.raises(ConstraintError, match=r"1 of 1500 rows to table 'lww_cards' were ignored by the database"):
        db.insert_many([Card(id=f"c{n}", title="spam" if n == 1400 else "ok") for n in range(1500)])
    assert db.count(Card) == 0


def test_constraint_and_schema_errors_are_ours(conn):
    sync_models(conn, LIBRARY_V2)  # names of at most 30 characters; Author's model allows 40
    db = Database(conn)
    db.insert(Author(email="ann@example.com", name="Ann"))
    failures = []
    for action in (
        lambda: db.insert(Author(email="ann@example.com", name="Ann again")),
        lambda: db.insert(Book(author_id=999, title="orphan")),
        lambda: db.insert(Author(email="long@example.com", name="x" * 35)),
        lambda: db.select(Blob),
        lambda: db.select(Author, "nope = 1"),
        lambda: db.select(Author, f"id IN ({', '.join('?' * 300)})", list(range(300))),
    ):
        with pytest.raises(PydsqliteError) as raised:
            action()
        failures.append(raised.value)
    unique, foreign_key, check, no_table, no_column, too_many = failures
    assert isinstance(unique, ConstraintError) and unique.constraint == "UNIQUE authors.email"
    assert isinstance(foreign_key, ConstraintError) and foreign_key.constraint.startswith("FOREIGN KEY")
    assert isinstance(no_table, SchemaMismatchError) and no_table.table == "blobs"
    assert isinstance(no_column, SchemaMismatchError) and no_column.column == "nope"
    assert isinstance(too_many, UsageError) and "at most 255 parameters" in str(too_many)
    assert isinstance(check, ConstraintError) and check.constraint.startswith("CHECK")
    assert db.select(Author) == [Author(id=1, email="ann@example.com", name="Ann")] and db.count(Book) == 0


def test_transactions_and_savepoints(conn):
    sync_models(conn, LIBRARY)
    db = Database(conn)
    with db.transaction():
        db.insert(Author(email="kept@example.com", name="Kept"))
        with pytest.raises(ConstraintError):
            with db.transaction():  # a savepoint: only its writes are undone
                db.insert(Author(email="gone@example.com", name="Gone"))
                db.insert(Author(email="kept@example.com", name="Duplicate"))
    assert [author.email for author in db.select(Author)] == ["kept@example.com"]
    assert not conn.in_transaction
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.insert(Author(email="rolled@example.com", name="Back"))
            raise RuntimeError("the caller's error")
    assert db.count(Author) == 1


def test_every_database_method_on_a_connection_from_the_client_itself(cluster, database_name):
    import dqlitedbapi

    conn = dqlitedbapi.connect(cluster.addresses[1], database=database_name)  # not connect_dqlite: the client's own
    sync_models(conn, LIBRARY)
    with Database(conn) as db:
        assert db.insert(Author(email="ann@example.com", name="Ann")).id == 1
        assert db.upsert(Author(email="bob@example.com", name="Bob")).id == 2  # no key: inserted
        db.upsert(Author(id=2, email="bob@example.com", name="Robert"))  # its key exists: updated
        db.upsert(Author(id=7, email="cy@example.com", name="Cy"))  # a new key: inserted
        db.update(Author(id=1, email="ann@example.com", name="Annie"))
        assert db.update(Author, 7, name="Cyrus") == Author(id=7, email="cy@example.com", name="Cyrus")
        db.update(Author, 7, id=3)  # the row moves to a free key
        with pytest.raises(ConstraintError, match=r"authors"):
            db.update(Author, 3, id=1)
        with pytest.raises(RowNotFoundError, match=r"99.*authors"):
            db.update(Author, 99, name="Nobody")
        assert db.get(Author, 99) is None and db.get(Author, 3).name == "Cyrus"
        assert [a.name for a in db.select(Author, order_by="name", limit=2, offset=1)] == ["Cyrus", "Robert"]
        assert db.select(Author, (col("id") >= 2) & (col("name") != "Robert")) == [Author(id=3, email="cy@example.com", name="Cyrus")]
        assert db.count(Author, "name LIKE ?", ("%r%",)) == 2
        db.insert_many([Book(author_id=n % 3 + 1, title=f"Book {n}") for n in range(1200)])
        streamed = db.iter_select(Book, order_by="id")  # more rows than one fetch
        assert [book.id for book in streamed] == list(range(1, 1201))
        assert db.count(Book, col("id").is_in(list(range(1, 256)))) == 255  # the most one statement binds
        assert db.delete(db.get(Book, 1)) and db.delete(Book, 2) and not db.delete(Book, 2)
        with db.transaction() as same:
            same.delete(Author, 3)  # its books cascade
        assert db.count(Book) == 1200 - 2 - 400 and db.get(Author, 3) is None
    assert conn.execute("SELECT COUNT(*) FROM authors").fetchone()[0] == 2  # Database did not close the caller's connection
    conn.close()


def test_pragma_writes_take_effect_and_are_read_back(conn):
    engine = engine_for(conn)
    engine.set_pragma("foreign_keys", "OFF")  # the server answers "not an error"; the read-back decides
    assert engine.pragma("foreign_keys") == 0
    engine.set_pragma("foreign_keys", "ON")
    engine.set_pragma("cache_size", -4096)
    assert engine.pragma("cache_size") == -4096 and engine.pragma("cache_spill") == 0
    with pytest.raises(EngineError, match=r"PRAGMA foreign_keys = OFF did not take effect on the dqlite connection: it reads 1"):
        with engine.unit():  # inside a transaction SQLite ignores it
            engine.set_pragma("foreign_keys", "OFF")
    assert engine.pragma("foreign_keys") == 1 and not engine.in_transaction


def test_a_parent_rebuild_inside_the_callers_transaction_is_refused_and_changes_nothing(conn):
    """Foreign keys cannot be switched off inside a transaction: dropping the old parent would
    cascade into its children, so the rebuild is refused instead of run."""
    sync_models(conn, LIBRARY)
    fill_library(Database(conn), 10)
    before = snapshot(conn, ["authors", "books", "reviews", "shelves"])
    conn.execute("BEGIN")
    with pytest.raises(MigrationError, match=r"cannot rebuild or drop table 'authors' inside an open transaction.*books, shelves reference it"):
        sync_models(conn, LIBRARY_V2)
    conn.execute("COMMIT")
    assert snapshot(conn, ["authors", "books", "reviews", "shelves"]) == before
    assert column_names(conn, "authors") == ["id", "email", "name"]
    sync_models(conn, LIBRARY_V2)  # outside a transaction it runs, keeping every child
    assert snapshot(conn, ["books", "reviews", "shelves"]) == {t: before[t] for t in ("books", "reviews", "shelves")}


def test_a_transaction_takes_the_write_lock_at_its_begin_whatever_the_session_mode(cluster, database_name):
    """pydsqlite sends BEGIN IMMEDIATE itself (the client would make a bare BEGIN deferred in this
    session mode): a transaction that reads first keeps other writers out until it commits, so its
    own write cannot fail with "database is locked"."""
    conn = connect_dqlite(cluster.addresses, database_name, session_mode="deferred")
    sync_models(conn, LIBRARY)
    db = Database(conn)
    other = engine_for(connect_dqlite(cluster.addresses, database_name, busy_timeout=0.3))
    try:
        with db.transaction():
            assert conn.execute("SELECT COUNT(*) FROM authors").fetchone()[0] == 0  # a read comes first
            with pytest.raises(PydsqliteError, match=r"(?i)locked|busy"):
                other.execute("INSERT INTO authors (email, name) VALUES ('other@example.com', 'Other')")
            db.insert(Author(email="mine@example.com", name="Mine"))
        other.execute("INSERT INTO authors (email, name) VALUES ('other@example.com', 'Other')")
        assert [author.email for author in db.select(Author, order_by="id")] == ["mine@example.com", "other@example.com"]
    finally:
        other.connection.close()
        conn.close()


def test_a_transaction_cut_by_a_failover_is_rolled_back_and_says_a_retry_is_safe(cluster, database_name):
    conn = connect_dqlite(cluster.addresses, database_name)
    sync_models(conn, LIBRARY)
    db = Database(conn)
    db.insert(Author(email="before@example.com", name="Before"))
    killed = None
    try:
        with pytest.raises(ConnectionLostError, match=r"rolled back the open transaction, so nothing of it was applied.*a retry is safe") as raised:
            with db.transaction():
                db.insert(Author(email="lost@example.com", name="Lost"))
                killed = cluster.kill_leader(database_name)
                db.insert(Author(email="lost2@example.com", name="Lost too"))
        assert raised.value.outcome_known and killed is not None
        again = connect_dqlite(cluster.addresses, database_name)  # finds the new leader
        assert again.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # a new connection enforces foreign keys
        retry = Database(again)
        assert [author.email for author in retry.select(Author)] == ["before@example.com"]
        with retry.transaction():
            retry.insert(Author(email="lost@example.com", name="Lost"))
            retry.insert(Author(email="lost2@example.com", name="Lost too"))
        assert retry.count(Author) == 3
        again.close()
    finally:
        if killed is not None:
            cluster.restart(killed)


class Counter(SyncModel, table="dqlite_counters"):
    id: int = Field(default=None, primary_key=True)
    n: int = 0


def test_a_value_the_wire_cannot_carry_is_named_as_on_sqlite(conn):
    """An integer beyond 64 bits or text with a lone surrogate: UnstorableValueError naming the column and
    value, as the standard library's sqlite3 gives, in writes, in batches and as a query parameter."""
    sync_models(conn, [Counter])
    db = Database(conn)
    db.insert(Counter(n=1))
    for action in (
        lambda: db.insert(Counter(n=2**63)),
        lambda: db.insert_many([Counter(n=3), Counter(n=-(2**63) - 1)]),
        lambda: db.update(Counter, 1, n=2**64),
        lambda: db.count(Counter, "n < ?", (2**64,)),
    ):
        with pytest.raises(UnstorableValueError, match=r"SQLite integers are 64-bit"):
            action()
    assert [row.n for row in db.select(Counter)] == [1]
    with pytest.raises(UnstorableValueError, match=r"lone surrogate"):
        db.select(Counter, "CAST(n AS TEXT) = ?", ("\ud800",))


def test_a_write_whose_begin_the_lost_leader_never_answered_says_a_retry_is_safe(cluster, database_name):
    """The leader died while the application was idle: the next write fails on its BEGIN, before any of
    it was sent, and says so (outcome known); so does a read."""
    conn = connect_dqlite(cluster.addresses, database_name)
    sync_models(conn, [Counter])
    db = Database(conn)
    db.insert(Counter(n=1))
    killed = cluster.kill_leader(database_name)
    try:
        with pytest.raises(ConnectionLostError, match=r"lost before BEGIN .*nothing was applied.*a retry is safe") as raised:
            db.insert(Counter(n=2))
        assert raised.value.outcome_known
        again = Database(connect_dqlite(cluster.addresses, database_name))
        assert [row.n for row in again.select(Counter)] == [1]
        again.conn.close()
    finally:
        cluster.restart(killed)
        conn.close()


def test_writes_during_leadership_transfers_fail_only_as_lost_connections_and_lose_no_acknowledged_row(cluster, database_name):
    """Leadership moves between nodes while one connection keeps inserting. A COMMIT a transfer cuts
    (dqlite answers "no more rows available") is a lost connection of unknown outcome like any other,
    not an engine error a retry loop would not catch; every insert that returned is there."""
    import threading

    conn = connect_dqlite(cluster.addresses, database_name)
    sync_models(conn, [Counter])
    done = threading.Event()
    failures: list[BaseException] = []

    def move_leadership() -> None:
        try:
            for _ in range(12):
                time.sleep(0.3)
                cluster.transfer_leadership(database_name)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)
        finally:
            done.set()

    threading.Thread(target=move_leadership, daemon=True).start()
    acknowledged, lost = [], 0
    attempt = 0
    try:
        while not done.is_set():
            attempt += 1
            try:
                Database(conn).insert(Counter(n=attempt))
                acknowledged.append(attempt)
            except ConnectionLostError:
                lost += 1
                conn.close()
                conn = connect_dqlite(cluster.addresses, database_name)
        assert not failures, failures
        stored = {row.n for row in Database(conn).select(Counter)}
        assert set(acknowledged) <= stored and lost >= 1
    finally:
        conn.close()


# --- replica sync ---------------------------------------------------------------------------------


class Card(SyncModel, table="lww_cards"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()] = ""
    votes: Annotated[int, LWW()] = 0


def test_lww_changes_between_dqlite_and_a_local_file_converge(conn, tmp_path):
    local = sqlite3.connect(tmp_path / "local.db")
    sync_models(conn, [Card])
    sync_models(local, [Card])
    cluster_db, file_db = Database(conn), Database(local)
    ids = [f"card-{n:04d}" for n in range(300)]  # more keys than one statement may bind on dqlite
    cluster_db.insert_many([Card(id=key, title=f"cluster {key}") for key in ids[:200]])
    file_db.insert_many([Card(id=key, title=f"file {key}") for key in ids[100:]])
    cluster_db.update(Card, ids[0], votes=7)
    file_db.update(Card, ids[150], title="edited on the file")
    file_db.delete(Card, ids[299])
    for key in ids[100:140]:  # rows both hold: the cluster deletes them in chunks of keys
        file_db.delete(Card, key)

    to_file = cluster_db.changes_since()
    to_cluster = file_db.changes_since()
    file_db.apply_changes(to_file)
    cluster_db.apply_changes(to_cluster)
    assert cluster_db.apply_changes(file_db.changes_since()) == 0  # nothing new: already converged
    cluster_rows, file_rows = cluster_db.select(Card, order_by="id"), file_db.select(Card, order_by="id")
    assert cluster_rows == file_rows
    assert len(cluster_rows) == 259 and not {ids[299], *ids[100:140]} & {card.id for card in cluster_rows}
    by_id = {card.id: card for card in cluster_rows}
    assert by_id[ids[0]].votes == 7 and by_id[ids[150]].title == "edited on the file"
    local.close()


class Folder(SyncModel, table="lww_folders"):
    id: Annotated[str, PrimaryKey()]
    name: Annotated[str, LWW()] = ""


class Doc(SyncModel, table="lww_docs"):
    id: Annotated[str, PrimaryKey()]
    folder: Annotated[str, ForeignKey(Folder, on_delete="CASCADE")]
    text: Annotated[str, LWW()] = ""


def test_lww_changes_with_foreign_keys_merge_into_the_cluster(conn, tmp_path):
    """The cluster enforces foreign keys, so a merge defers them to its commit (a pragma written and
    read back inside the merge's transaction) and settles what a deleted parent cascades."""
    local = sqlite3.connect(tmp_path / "local.db")
    local.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [Folder, Doc])
    sync_models(local, [Folder, Doc])
    cluster_db, file_db = Database(conn), Database(local)
    file_db.insert_many([Folder(id=f"f{n}", name=f"folder {n}") for n in range(3)])
    file_db.insert_many([Doc(id=f"d{n:03d}", folder=f"f{n % 3}", text=f"doc {n}") for n in range(300)])
    assert cluster_db.apply_changes(file_db.changes_since()) == 303
    file_db.delete(Folder, "f0")  # cascades to its 100 docs
    cluster_db.apply_changes(file_db.changes_since())
    file_db.apply_changes(cluster_db.changes_since())
    assert cluster_db.select(Doc, order_by="id") == file_db.select(Doc, order_by="id")
    assert cluster_db.count(Doc) == 200 and cluster_db.count(Folder) == 2
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == [] and conn.execute("PRAGMA defer_foreign_keys").fetchone()[0] == 0
    local.close()


# --- connecting and failover --------------------------------------------------------------------------


def test_connect_skips_nodes_that_do_not_answer(cluster, database_name):
    dead = "127.0.0.1:1"
    connection = connect_dqlite([dead, *cluster.addresses], database_name)
    assert connection.execute("SELECT 1").fetchone()[0] == 1
    connection.close()
    with pytest.raises(ConnectionLostError, match=r"no dqlite node answered: 127\.0\.0\.1:1: .*127\.0\.0\.2:1: "):
        connect_dqlite(f"{dead}, 127.0.0.2:1", database_name, wait=0.5)
    with pytest.raises(UsageError, match=r"connect_dqlite\(\) cannot use 'node-one' with these options: .*host:port"):
        connect_dqlite(["node-one", *cluster.addresses], database_name)


def test_leader_killed_mid_migration(tmp_path, database_name):
    cluster = Cluster.start(tmp_path / "cluster")
    try:
        conn = connect_dqlite(cluster.addresses, database_name)
        sync_models(conn, LIBRARY)
        fill_library(Database(conn), 400)
        rows_before = snapshot(conn, ["authors", "books", "reviews", "shelves"])
        killed = []

        def kill_the_leader(table: str, copied: int, total: int) -> None:
            if 0 < copied < total and not killed:
                killed.append(cluster.kill_leader(database_name))

        engine_for(conn).set_pragma("legacy_alter_table", "ON")  # the migration switches it back after itself
        with pytest.raises(ConnectionLostError, match=r"lost during the migration.*rolled the migration back.*Retrying .* is safe"):
            sync_models(conn, LIBRARY_V2, progress=kill_the_leader)
        assert killed

        again = connect_dqlite(cluster.addresses, database_name)  # the dead node is skipped
        assert again.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # ON again on a connection after the failover
        assert snapshot(again, ["authors", "books", "reviews", "shelves"]) == rows_before  # nothing lost
        assert column_names(again, "authors") == ["id", "email", "name"]  # wholly the old schema
        assert not any(name.startswith("_pydsqlite_new_") for name in table_names(again))
        sync_models(again, LIBRARY_V2)  # the retry completes
        assert column_names(again, "authors") == ["id", "email", "name", "country"]
        assert again.execute("PRAGMA foreign_key_check").fetchall() == []
        again.close()

        restarted = killed[0]
        cluster.restart(restarted)
        _make_leader(cluster, restarted, database_name)
        final = connect_dqlite([restarted.db], database_name)
        assert cluster.leader(database_name) == restarted.db  # reads below come from the restarted node
        assert column_names(final, "authors") == ["id", "email", "name", "country"]
        after = snapshot(final, ["books", "reviews", "shelves"])
        assert after == {table: rows for table, rows in rows_before.items() if table != "authors"}
        assert Database(final).count(AuthorV2) == 401  # the write made while it was the only follower
        final.close()
    finally:
        cluster.stop()


def _make_leader(cluster: Cluster, node, database: str) -> None:
    """Make ``node`` the leader by Raft's own rules, writing one author on the way: with a third node
    down, the write needs ``node``'s acknowledgement (so it holds the whole log); the old leader
    then stops and the third node comes back behind ``node``'s log, so only ``node`` can win."""
    leader = cluster.node(cluster.leader(database))
    if leader is node:
        Database(writer := connect_dqlite([node.db], database)).insert(AuthorV2(email="after-restart@example.com", name="Late"))
        writer.close()
        return
    third = next(other for other in cluster.nodes if other is not node and other is not leader)
    third.stop()
    writer = connect_dqlite([leader.db], database)
    Database(writer).insert(AuthorV2(email="after-restart@example.com", name="Late"))
    writer.close()
    leader.stop()
    cluster.restart(third)
    cluster.wait_ready()


# --- what the engine works around ------------------------------------------------------------------


class AuthorV3(SyncModel, table="authors"):
    id: int = Field(default=None, primary_key=True)
    email: Annotated[str, Unique()]
    name: Annotated[str, Field(max_length=30)]
    country: Annotated[str, Field(max_length=2)] = "NZ"


def test_large_rebuilds_after_a_checkpoint_do_not_fail_with_disk_io_errors(conn):
    """A rebuild dirtying more pages than SQLite's cache, right after dqlite truncated its log at a
    checkpoint, read its own spilled pages back from an empty log ("disk I/O error") until the
    engine switched cache_spill off; the second large rebuild in a database did the same."""
    sync_models(conn, [Author])
    Database(conn).insert_many([Author(email=f"reader{n:06d}@example.com", name=f"Reader number {n}") for n in range(40_000)])
    sync_models(conn, [AuthorV2])
    sync_models(conn, [AuthorV3])
    assert Database(conn).count(AuthorV3) == 40_000
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_in_transaction_is_asked_of_the_server_when_the_client_only_guesses(conn):
    """After the outermost savepoint is released the client still believes a transaction is open;
    pydsqlite asks the server, so the migration still runs in a transaction of its own with
    foreign keys off (a parent with children rebuilt) instead of refusing as if inside the caller's."""
    sync_models(conn, LIBRARY)
    fill_library(Database(conn), 20)
    conn.execute("SAVEPOINT callers")
    conn.execute("RELEASE callers")
    assert conn.in_transaction  # the client's guess
    sync_models(conn, LIBRARY_V2)
    assert Database(conn).count(Review) == 80 and not conn.in_transaction


def test_a_write_with_returning_outside_a_transaction_leaves_the_leader_up(cluster, conn):
    """dqlite 1.11's leader aborts on INSERT … RETURNING sent outside a transaction; the engine wraps it in one."""
    leader = cluster.leader()
    engine = engine_for(conn)
    engine.execute("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    assert engine.execute("INSERT INTO counters (n) VALUES (1) RETURNING id").fetchall() == [(1,)]
    assert engine.execute("UPDATE counters SET n = n + 1 RETURNING n").fetchall() == [(2,)]
    assert cluster.node(leader).running and engine.scalar("SELECT n FROM counters") == 2
    assert not conn.in_transaction


def test_the_dqlite_page_examples_run(cluster, database_name, tmp_path, monkeypatch):
    """docs/dqlite.md's python examples, against this cluster (its addresses and a fresh database)."""
    from .test_docs import ROOT, run_python_examples

    documented = '["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]'
    monkeypatch.chdir(tmp_path)
    run_python_examples(
        ROOT / "docs" / "dqlite.md",
        lambda code: code.replace(documented, repr(cluster.addresses)).replace('"league"', repr(database_name)),
    )
