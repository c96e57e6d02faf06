"""pydsqlite drops without ceremony only what it knows it created itself; every other column
holding data, whatever its name, is a destructive change."""

from __future__ import annotations

import sqlite3
from typing import Annotated

import pytest

from pydsqlite import LWW, DestructiveChangeError, PrimaryKey, SchemaDefinitionError, SyncModel, model_migration_plan, sync_models
from pydsqlite.migrate.sync import apply_schema
from pydsqlite.sql.source import schema_from_sql

LOOKALIKES = ["note__hlc", "NOTE__HLC", "_pydsqlite_version", "_pydsqlite_seq", "_pydsqlite_mine", "_PYDSQLITE_VERSION"]


class Notes(SyncModel, table="notes"):
    id: Annotated[int, PrimaryKey()]
    note: str = ""


@pytest.mark.parametrize("name", LOOKALIKES)
def test_a_user_column_named_like_a_hidden_one_is_dropped_only_as_a_destructive_step(memory_conn, name):
    memory_conn.execute(f'CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL DEFAULT "", `{name}` TEXT)')
    memory_conn.execute("INSERT INTO notes VALUES (1, 'a', 'precious')")
    memory_conn.commit()
    plan = model_migration_plan(memory_conn, [Notes])
    assert [op.row_count for op in plan.destructive_operations] == [1], plan
    with pytest.raises(DestructiveChangeError, match=rf"notes\.{name}: 1 row: values would be deleted"):
        sync_models(memory_conn, [Notes])
    assert memory_conn.execute(f"SELECT `{name}` FROM notes").fetchall() == [("precious",)]
    sync_models(memory_conn, [Notes], allow_destructive=True)
    assert name not in {row[1] for row in memory_conn.execute("PRAGMA table_info(notes)")}


@pytest.mark.parametrize("name", LOOKALIKES)
def test_the_same_holds_for_a_desired_schema_given_as_sql(memory_conn, name):
    memory_conn.execute(f"CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT, `{name}` TEXT)")
    memory_conn.execute("INSERT INTO notes VALUES (1, 'a', 'precious')")
    with pytest.raises(DestructiveChangeError):
        apply_schema(memory_conn, schema_from_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT)"), manage_all=True)


@pytest.mark.parametrize("name", ["x__hlc", "X__Hlc", "rowid", "OID", "RowId"])
def test_reserved_column_names_are_refused_at_declaration(name):
    # (names with a leading underscore, like pydsqlite's own _pydsqlite_*, are never fields in Pydantic)
    model = type(SyncModel)("Reserved", (SyncModel,), {"__annotations__": {"id": int, name: str}}, table="reserved")
    with pytest.raises(SchemaDefinitionError, match=rf"Reserved\.{name}: .*reserved"):
        sync_models(sqlite3.connect(":memory:"), [model])


def test_turning_lww_off_drops_only_the_hidden_columns_pydsqlite_made(memory_conn):
    class Synced(SyncModel, table="notes"):
        id: Annotated[int, PrimaryKey()]
        note: Annotated[str, LWW()] = ""

    sync_models(memory_conn, [Synced])
    memory_conn.execute("INSERT INTO notes (id, note) VALUES (1, 'a')")
    plan = sync_models(memory_conn, [Notes])  # not destructive: note__hlc, version and sequence are pydsqlite's
    assert not plan.destructive_operations and {op.kind for op in plan.operations} >= {"disable_lww"}
    assert [row[1] for row in memory_conn.execute("PRAGMA table_info(notes)")] == ["id", "note"]


def test_a_database_synced_before_columns_were_recorded_adopts_its_hidden_columns(memory_conn):
    class Synced(SyncModel, table="notes"):
        id: Annotated[int, PrimaryKey()]
        note: Annotated[str, LWW()] = ""

    sync_models(memory_conn, [Synced])
    memory_conn.execute("DELETE FROM _pydsqlite_objects WHERE kind = 'column'")  # as an older version left it
    memory_conn.execute("UPDATE _pydsqlite_state SET fingerprint = 'older format'")
    memory_conn.commit()
    assert sync_models(memory_conn, [Synced]).is_empty  # nothing to migrate; records what it created
    assert not sync_models(memory_conn, [Notes]).destructive_operations


@pytest.mark.parametrize(
    ("hand_made", "same"),
    [
        ("CREATE UNIQUE INDEX uq_members_email ON members (lower(email))", False),
        ("CREATE INDEX uq_members_email ON members (email)", False),  # not unique
        ("CREATE UNIQUE INDEX uq_members_email ON members (email) WHERE email != ''", False),
        ("CREATE UNIQUE INDEX uq_members_email ON members (email)", True),  # the model's index exactly: adopted
    ],
)
def test_a_hand_made_index_holding_the_name_of_a_models_index_is_never_dropped_for_it(tmp_path, hand_made, same):
    from pydsqlite import MigrationError, Unique

    class Member(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        email: str

    class UniqueMember(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        email: Annotated[str, Unique()]

    path = tmp_path / "members.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Member])
    conn.execute(hand_made)
    conn.execute("INSERT INTO members VALUES (1, 'Ann@x.org')")
    conn.commit()
    if same:
        assert model_migration_plan(conn, [UniqueMember]).is_empty
        return
    before = path.read_bytes()
    plan = model_migration_plan(conn, [UniqueMember])
    assert "index uq_members_email on members was not made by pydsqlite and differs from the model's index" in plan.problems[0]
    with pytest.raises(MigrationError, match="drop or rename it, or give the model's index another name"):
        sync_models(conn, [UniqueMember])
    assert path.read_bytes() == before

    class NamedMember(SyncModel, table="members"):
        id: Annotated[int, PrimaryKey()]
        email: Annotated[str, Unique(name="members_email_unique")]

    sync_models(conn, [NamedMember])
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"uq_members_email", "members_email_unique"} <= names


def test_a_hand_made_index_whose_explicit_collation_differs_from_the_columns_is_not_taken_for_the_models(tmp_path):
    """On a NOCASE column, Unique() compares without case; a hand-made index of that name with
    COLLATE BINARY does not, so adopting it would leave 'a' and 'A' both accepted."""
    from pydsqlite import Collate, MigrationError, Unique

    class Name(SyncModel, table="names"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, Collate("NOCASE")]

    class UniqueName(SyncModel, table="names"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, Collate("NOCASE"), Unique()]

    conn = sqlite3.connect(tmp_path / "names.db")
    sync_models(conn, [Name])
    conn.execute("CREATE UNIQUE INDEX uq_names_name ON names (name COLLATE BINARY)")
    conn.commit()
    with pytest.raises(MigrationError, match="index uq_names_name on names was not made by pydsqlite and differs"):
        sync_models(conn, [UniqueName])
    conn.execute("DROP INDEX uq_names_name")
    conn.execute("CREATE UNIQUE INDEX uq_names_name ON names (name COLLATE NOCASE)")  # the same as the model's
    conn.commit()
    assert model_migration_plan(conn, [UniqueName]).is_empty
    conn.execute("INSERT INTO names VALUES (1, 'a')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO names VALUES (2, 'A')")


@pytest.mark.parametrize("model_table", ["existing", "new"])
def test_a_hand_made_index_of_another_table_holding_the_models_index_name_is_a_named_problem(tmp_path, model_table):
    """Index names are one namespace: a hand-made index on another table that holds the name of the
    model's index is named as the problem (with the table holding it and the way out), in the
    preview and the sync, and the file is left as it was."""
    from pydsqlite import Index, MigrationError

    class Tagged(SyncModel, table="tagged"):
        id: Annotated[int, PrimaryKey()]
        tag: Annotated[str, Index()]

    path = tmp_path / "tagged.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE legacy (x TEXT)")
    conn.execute("CREATE INDEX ix_tagged_tag ON legacy (x)")
    if model_table == "existing":
        conn.execute('CREATE TABLE tagged ("id" INTEGER NOT NULL PRIMARY KEY, "tag" TEXT NOT NULL)')
    conn.commit()
    before = path.read_bytes()
    expected = "index ix_tagged_tag on legacy was not made by pydsqlite and holds the name of the model's index on tagged (tag)"
    assert expected in model_migration_plan(conn, [Tagged]).problems[0]
    with pytest.raises(MigrationError, match="give the model's index another name") as refused:
        sync_models(conn, [Tagged])
    assert expected in str(refused.value)
    assert path.read_bytes() == before

    class Renamed(SyncModel, table="tagged"):
        id: Annotated[int, PrimaryKey()]
        tag: Annotated[str, Index(name="ix_tagged_tag_2")]

    sync_models(conn, [Renamed])
    assert {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")} == {"ix_tagged_tag", "ix_tagged_tag_2"}


@pytest.mark.parametrize(
    ("look_alikes", "values"),
    [("title__hlc TEXT", "'my own data, not a clock'"), ("_pydsqlite_version TEXT, _pydsqlite_seq INTEGER", "'v-user', 99999")],
)
def test_a_users_column_named_like_a_sync_column_is_never_taken_for_sync_state(tmp_path, look_alikes, values):
    """A hand-made table adopted with LWW columns: its own column named like one of pydsqlite's hidden
    columns is the user's data, not a clock. Dropping it is destructive (counted); allowed, the
    sync columns are made anew with the baseline timestamp, and the changeset merges elsewhere."""
    from pydsqlite import Database

    class Note(SyncModel, table="notes"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()]

    path = tmp_path / "notes.db"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE notes (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, {look_alikes})")
    conn.execute(f"INSERT INTO notes VALUES ('k1', 'hi', {values})")
    conn.commit()
    before = path.read_bytes()
    plan = model_migration_plan(conn, [Note])
    dropped = look_alikes.split()[0]
    assert [f"notes.{dropped}: 1 row: values would be deleted with the column"] == [
        finding for operation in plan.destructive_operations for finding in operation.findings if dropped in finding
    ]
    with pytest.raises(DestructiveChangeError, match=rf"notes\.{dropped}: 1 row"):
        sync_models(conn, [Note])
    assert path.read_bytes() == before
    sync_models(conn, [Note], allow_destructive=True)
    assert model_migration_plan(conn, [Note]).is_empty
    feed = Database(conn).changes_since()
    (change,) = feed.changes
    assert change.columns["title"][1] == "hi" and change.version != "v-user"
    other = sqlite3.connect(tmp_path / "other.db")
    sync_models(other, [Note])
    Database(other).apply_changes(feed)
    assert Database(other).select(Note) == [Note(id="k1", title="hi")]
    Database(other).update(Note, "k1", title="edited elsewhere")
    Database(conn).apply_changes(Database(other).changes_since())
    assert Database(conn).get(Note, "k1") == Note(id="k1", title="edited elsewhere")  # a real edit beats the baseline


def test_a_look_alike_column_added_by_hand_to_a_table_synced_by_an_older_release_is_still_the_users(memory_conn):
    """Bookkeeping from before the marker row records no hidden column of a table without LWW: the
    hidden columns it adopts by name are those made exactly as pydsqlite makes them (its type and
    baseline default), so a hand-added ``title__hlc`` holding text is the user's, not a clock."""

    class Plain(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]
        title: str

    class Synced(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]
        title: Annotated[str, LWW()]

    sync_models(memory_conn, [Plain])
    memory_conn.execute("DELETE FROM _pydsqlite_objects WHERE kind = 'format'")  # as the previous release left it
    memory_conn.execute("ALTER TABLE items ADD COLUMN title__hlc TEXT")
    memory_conn.execute("INSERT INTO items VALUES (1, 'a', 'my note, not a clock')")
    memory_conn.commit()
    with pytest.raises(DestructiveChangeError, match=r"items\.title__hlc: 1 row: values would be deleted"):
        sync_models(memory_conn, [Synced])
    sync_models(memory_conn, [Synced], allow_destructive=True)
    assert memory_conn.execute("SELECT title__hlc FROM items").fetchone() != ("my note, not a clock",)
