"""Views, triggers and hand-made indexes around tables that are renamed, rebuilt or lose
columns: they keep working, or the migration is refused naming them, before anything changes."""

from __future__ import annotations

import re
import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import MigrationError, PrimaryKey, RenamedFrom, SyncModel, Unique, model_migration_plan, sync_models
from pydsqlite.engines import SqliteEngine
from pydsqlite.migrate.diff import diff_schemas
from pydsqlite.migrate.execute import migration_session
from pydsqlite.migrate.introspect import introspect, read_managed_objects
from pydsqlite.migrate.plan import build_plan
from pydsqlite.migrate.rehearse import rehearse
from pydsqlite.schema.compile import compile_models


class People(SyncModel, table="people"):
    id: Annotated[int, PrimaryKey()]
    name: str
    age: Optional[int] = None


def seeded(conn: sqlite3.Connection) -> sqlite3.Connection:
    sync_models(conn, [People])
    conn.executemany("INSERT INTO people VALUES (?, ?, ?)", [(1, "ann", 30), (2, "bob", None)])
    conn.execute("CREATE TABLE audit (name TEXT, age INTEGER, note TEXT)")
    conn.commit()
    return conn


class Renamed(SyncModel, table="people"):  # rename name -> full_name, and a type change: a rebuild
    id: Annotated[int, PrimaryKey()]
    full_name: Annotated[str, RenamedFrom("name")]
    age: Optional[str] = None


def test_renaming_a_column_rewrites_only_references_to_it_not_same_named_columns_of_other_tables(memory_conn):
    conn = seeded(memory_conn)
    conn.executescript(
        """
        CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN
            INSERT INTO audit (name, age, note) VALUES (new.name, new.age, 'ins');
        END;
        CREATE TRIGGER people_upd AFTER UPDATE ON people BEGIN
            UPDATE audit SET name = new.name, note = 'upd' WHERE name = old.name;
        END;
        CREATE VIEW names AS SELECT p.name AS who, a.name AS audited FROM people AS p LEFT JOIN audit AS a ON a.name = p.name;
        CREATE INDEX people_by_name ON people (name);
        """
    )
    plan = sync_models(conn, [Renamed])
    assert plan.rebuilt_tables == ("people",)
    conn.execute("INSERT INTO people VALUES (3, 'cy', '41')")
    conn.execute("UPDATE people SET full_name = 'cyd' WHERE id = 3")
    assert conn.execute("SELECT name, age, note FROM audit").fetchall() == [("cyd", 41, "upd")]
    assert conn.execute("SELECT who, audited FROM names WHERE who = 'cyd'").fetchall() == [("cyd", "cyd")]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'people_by_name'").fetchone() is not None
    assert model_migration_plan(conn, [Renamed]).is_empty
    assert [column for (column,) in conn.execute("SELECT name FROM pragma_table_info('audit')")] == ["name", "age", "note"]


def test_renaming_a_table_that_a_trigger_of_a_rebuilt_table_writes_to(memory_conn):
    conn = seeded(memory_conn)
    conn.execute("CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN INSERT INTO audit (name) VALUES (new.name); END")

    class Audit(SyncModel, table="audit_log", renamed_from="audit"):
        name: Annotated[str, PrimaryKey()]
        age: Optional[int] = None
        note: Optional[str] = None

    class PeopleV2(SyncModel, table="people"):
        id: Annotated[int, PrimaryKey()]
        name: str
        age: Optional[str] = None

    sync_models(conn, [Audit, People])
    plan = sync_models(conn, [Audit, PeopleV2])
    assert plan.rebuilt_tables == ("people",)
    conn.execute("INSERT INTO people VALUES (3, 'cy', NULL)")
    assert conn.execute("SELECT name FROM audit_log").fetchall() == [("cy",)]


class DropsAge(SyncModel, table="people"):
    id: Annotated[int, PrimaryKey()]
    name: str
    nick: Optional[str] = None  # with the drop: in place, or (with a type change below) a rebuild


class DropsAgeRebuilt(SyncModel, table="people"):
    id: Annotated[int, PrimaryKey()]
    name: Optional[str] = None


DEPENDANTS = {
    "a view": ("CREATE VIEW adults AS SELECT name FROM people WHERE age >= 18", "view adults"),
    "a view on a view": (
        "CREATE VIEW named AS SELECT name, age FROM people; CREATE VIEW grown AS SELECT name FROM named WHERE age > 1",
        "view",
    ),
    "another table's trigger": (
        "CREATE TRIGGER audit_ins AFTER INSERT ON audit BEGIN UPDATE people SET age = new.age WHERE name = new.name; END",
        "trigger audit_ins",
    ),
    "its own trigger": (
        "CREATE TRIGGER people_del BEFORE DELETE ON people BEGIN INSERT INTO audit (age) VALUES (old.age); END",
        "trigger people_del",
    ),
    "a trigger's WHEN": (
        "CREATE TRIGGER people_when AFTER UPDATE OF name ON people WHEN new.age > 3 BEGIN SELECT 1; END",
        "trigger people_when",
    ),
}


@pytest.mark.parametrize("model", [DropsAge, DropsAgeRebuilt], ids=["in place", "rebuild"])
@pytest.mark.parametrize("dependant", sorted(DEPENDANTS))
def test_dropping_a_column_a_view_or_trigger_uses_is_refused_in_the_preview_naming_it(db_path, model, dependant):
    conn = seeded(sqlite3.connect(db_path))
    sql, named = DEPENDANTS[dependant]
    conn.executescript(sql)
    before = db_path.read_bytes()
    plan = model_migration_plan(conn, [model])
    assert plan.problems and named in "\n".join(plan.problems), plan
    with pytest.raises(MigrationError, match=named):
        sync_models(conn, [model], allow_destructive=True)
    assert db_path.read_bytes() == before
    conn.close()


def test_objects_broken_before_the_migration_do_not_block_it(memory_conn):
    conn = seeded(memory_conn)
    conn.execute("CREATE VIEW stale AS SELECT gone FROM people")  # already broken
    conn.execute("CREATE TRIGGER stale_trigger AFTER INSERT ON audit BEGIN INSERT INTO nowhere VALUES (1); END")
    assert sync_models(conn, [DropsAgeRebuilt], allow_destructive=True).rebuilt_tables == ("people",)


def test_the_executor_itself_refuses_to_commit_a_broken_view(db_path):
    """Defence in depth: a plan that was not rehearsed still cannot leave a broken view behind."""
    conn = seeded(sqlite3.connect(db_path))
    conn.execute("CREATE VIEW adults AS SELECT name FROM people WHERE age >= 18")
    conn.commit()
    before = db_path.read_bytes()
    engine = SqliteEngine(conn)
    live = introspect(engine)
    plan = build_plan(diff_schemas(compile_models([DropsAgeRebuilt]), live, read_managed_objects(engine)), live)
    plan = rehearse(plan, live)
    unchecked = plan.with_operations(plan.operations, ())  # pretend the rehearsal found nothing
    with pytest.raises(MigrationError, match="view adults: no such column: age"):
        with migration_session(engine) as session:
            session.apply(unchecked, compile_models([DropsAgeRebuilt]), "x", read_managed_objects(engine))
    assert db_path.read_bytes() == before
    conn.close()


def test_a_plan_that_was_not_rehearsed_is_never_applied(memory_conn):
    conn = seeded(memory_conn)
    engine = SqliteEngine(conn)
    live = introspect(engine)
    plan = build_plan(diff_schemas(compile_models([DropsAgeRebuilt]), live, read_managed_objects(engine)), live)
    with pytest.raises(MigrationError, match="not rehearsed"):
        with migration_session(engine) as session:
            session.apply(plan, compile_models([DropsAgeRebuilt]), "x", read_managed_objects(engine))
    assert conn.execute("SELECT count(*) FROM people").fetchone() == (2,)


def test_a_callers_legacy_alter_table_setting_is_restored_and_renames_still_rewrite_views(memory_conn):
    conn = seeded(memory_conn)
    conn.execute("CREATE VIEW named AS SELECT name FROM people")
    conn.execute("PRAGMA legacy_alter_table = ON")
    sync_models(conn, [Renamed])
    assert conn.execute("PRAGMA legacy_alter_table").fetchone() == (1,)
    assert conn.execute("SELECT * FROM named ORDER BY 1").fetchall() == [("ann",), ("bob",)]
    conn.execute("PRAGMA legacy_alter_table = OFF")


def test_stand_ins_let_the_rehearsal_load_custom_collations_and_functions(memory_conn):
    conn = seeded(memory_conn)
    conn.create_collation("reverse", lambda a, b: (b > a) - (b < a))
    conn.create_function("shout", 1, lambda text: text and text.upper(), deterministic=True)
    conn.executescript(
        """
        CREATE TABLE tags (t TEXT COLLATE reverse, loud TEXT GENERATED ALWAYS AS (shout(t)) VIRTUAL);
        CREATE INDEX tags_loud ON tags (shout(t));
        CREATE VIEW shouted AS SELECT shout(name) AS n FROM people;
        """
    )
    assert sync_models(conn, [Renamed]).rebuilt_tables == ("people",)
    assert conn.execute("SELECT n FROM shouted ORDER BY n").fetchall() == [("ANN",), ("BOB",)]


def test_a_desired_schema_whose_views_or_triggers_do_not_compile_is_refused_when_loaded():
    from pydsqlite import SchemaDefinitionError, schema_from_sql

    with pytest.raises(SchemaDefinitionError, match="view v: no such column: a"):
        schema_from_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, b TEXT); CREATE VIEW v AS SELECT a FROM t;")
    with pytest.raises(SchemaDefinitionError, match="trigger tr on t: no such column: new.a"):
        schema_from_sql("CREATE TABLE t (b TEXT); CREATE TABLE u (x); CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (new.a); END;")
    # functions your own connection registers cannot be known here: not an error
    assert schema_from_sql("CREATE TABLE t (b TEXT); CREATE VIEW v AS SELECT my_function(b) FROM t;").views


DOUBLE_QUOTED = {
    "a view's WHERE": ('CREATE VIEW adults AS SELECT name FROM people WHERE "age" >= 18', "view adults"),
    "a view's select list": ('CREATE VIEW ages AS SELECT "age" + 1 AS next FROM people', "view ages"),
    "its own trigger": (
        'CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN INSERT INTO audit (note) SELECT "age" FROM people WHERE id = new.id; END',
        "trigger people_ins",
    ),
    "another table's trigger": (
        'CREATE TRIGGER audit_ins AFTER INSERT ON audit BEGIN UPDATE people SET name = "age" WHERE id = 0; END',
        "trigger audit_ins",
    ),
    "an index": ('CREATE INDEX people_age ON people ("age")', "index people_age"),
    "a unique index": ('CREATE UNIQUE INDEX people_age_u ON people (id, "age")', "index people_age_u"),
    "a partial index": ('CREATE INDEX people_aged ON people (id) WHERE "age" IS NOT NULL', "index people_aged"),
    "a temporary view": ('CREATE TEMP VIEW recent AS SELECT "age" FROM main.people', "view temp.recent"),
}


@pytest.mark.parametrize("model", [DropsAge, DropsAgeRebuilt], ids=["in place", "rebuild"])
@pytest.mark.parametrize("dependant", sorted(DOUBLE_QUOTED))
def test_a_double_quoted_name_that_would_turn_into_a_string_is_refused_naming_the_object(db_path, model, dependant):
    """SQLite reads a double-quoted name that matches no column as a string literal: dropping the column
    would silently change what the object reads (an index on a constant rejects every second row)."""
    conn = seeded(sqlite3.connect(db_path))
    sql, named = DOUBLE_QUOTED[dependant]
    conn.executescript(sql)
    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match=f'{named}.* would read "age" as the text'):
        sync_models(conn, [model], allow_destructive=True)
    assert db_path.read_bytes() == before
    assert conn.execute("SELECT count(*) FROM temp.sqlite_master").fetchone()[0] == sql.count("TEMP")
    conn.close()


def test_double_quoted_text_that_never_named_a_column_does_not_block_a_migration(memory_conn):
    """A name that was already read as text before the migration (SQLite's legacy spelling of a string)
    is not the migration's doing."""
    conn = seeded(memory_conn)
    conn.executescript(
        """
        CREATE VIEW labelled AS SELECT name, "adult" AS kind FROM people;
        CREATE INDEX people_kind ON people (id) WHERE name <> "nobody";
        CREATE TRIGGER people_note AFTER INSERT ON people BEGIN INSERT INTO audit (note) VALUES ("added"); END;
        """
    )
    assert sync_models(conn, [DropsAgeRebuilt], allow_destructive=True).rebuilt_tables == ("people",)
    assert conn.execute("SELECT kind FROM labelled WHERE name = 'ann'").fetchall() == [("adult",)]


def test_a_double_quoted_column_that_is_renamed_follows_the_rename(memory_conn):
    conn = seeded(memory_conn)
    conn.executescript('CREATE VIEW names AS SELECT "name" AS who FROM people; CREATE INDEX people_name ON people ("name")')
    sync_models(conn, [Renamed])
    assert conn.execute("SELECT who FROM names ORDER BY who").fetchall() == [("ann",), ("bob",)]
    assert '"full_name"' in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'people_name'").fetchone()[0]


class Doc(SyncModel, table="docs"):
    id: Annotated[int, PrimaryKey()]
    body: str = ""
    extra: int = 0


class DocRenamedBody(SyncModel, table="docs"):
    id: Annotated[int, PrimaryKey()]
    text: Annotated[str, RenamedFrom("body")] = ""
    extra: int = 0


class DocRenamedTable(SyncModel, table="documents", renamed_from="docs"):
    id: Annotated[int, PrimaryKey()]
    body: str = ""
    extra: int = 0


class DocWithoutBody(SyncModel, table="docs"):
    id: Annotated[int, PrimaryKey()]
    extra: float = 0.0


class DocRetyped(SyncModel, table="docs"):
    id: Annotated[int, PrimaryKey()]
    body: str = ""
    extra: float = 0.0


@pytest.mark.parametrize("model", [DocRenamedBody, DocRenamedTable, DocWithoutBody], ids=["rename column", "rename table", "drop column"])
def test_an_external_content_full_text_table_that_would_lose_its_source_is_refused_naming_it(db_path, model):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Doc])
    conn.execute("CREATE VIRTUAL TABLE docs_fts USING fts5(body, content='docs', content_rowid='id')")
    conn.execute("INSERT INTO docs VALUES (1, 'hello world', 0)")
    conn.execute("INSERT INTO docs_fts (rowid, body) VALUES (1, 'hello world')")
    conn.commit()
    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match="virtual table docs_fts"):
        sync_models(conn, [model], allow_destructive=True)
    assert db_path.read_bytes() == before
    sync_models(conn, [DocRetyped])  # a rebuild that keeps what it reads is fine
    assert conn.execute("SELECT body FROM docs_fts WHERE docs_fts MATCH 'hello'").fetchall() == [("hello world",)]
    conn.close()


def test_temporary_triggers_on_a_rebuilt_table_are_kept(memory_conn):
    conn = seeded(memory_conn)
    conn.execute("CREATE TEMP TRIGGER people_audit AFTER INSERT ON main.people BEGIN INSERT INTO audit (name) VALUES (new.name); END")
    sync_models(conn, [DropsAgeRebuilt], allow_destructive=True)
    conn.execute("INSERT INTO people (id, name) VALUES (3, 'cy')")
    assert conn.execute("SELECT name FROM audit").fetchall() == [("cy",)]
    assert conn.execute("SELECT name FROM temp.sqlite_master WHERE type = 'trigger'").fetchall() == [("people_audit",)]


def test_a_temporary_trigger_that_would_break_is_refused(db_path):
    conn = seeded(sqlite3.connect(db_path))
    conn.execute("CREATE TEMP TRIGGER people_age AFTER INSERT ON main.people BEGIN INSERT INTO audit (age) VALUES (new.age); END")
    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match="people_age"):
        sync_models(conn, [DropsAgeRebuilt], allow_destructive=True)
    assert db_path.read_bytes() == before
    conn.execute("INSERT INTO people (id, name, age) VALUES (3, 'cy', 4)")
    assert conn.execute("SELECT age FROM audit").fetchall() == [(4,)]
    conn.close()


@pytest.mark.parametrize("foreign_keys", ["OFF", "ON"])
@pytest.mark.parametrize("change", ["unique dropped", "table rebuilt without it"])
def test_a_hand_made_foreign_key_whose_parent_key_would_lose_its_unique_index_is_refused(db_path, foreign_keys, change):
    """SQLite needs a foreign key's parent columns to be the primary key or under a unique index;
    without it every write to the child and delete from the parent fails with "foreign key mismatch"."""

    class User(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        email: Annotated[str, Unique()]
        name: str = ""

    class UserPlain(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        email: str
        name: str = ""

    class UserRebuilt(SyncModel, table="users"):
        id: Annotated[int, PrimaryKey()]
        email: str
        name: Optional[str] = None

    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA foreign_keys = {foreign_keys}")
    sync_models(conn, [User])
    conn.executescript(
        "INSERT INTO users VALUES (1, 'a@x', 'a');"
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, user_email TEXT REFERENCES users(email));"
        "INSERT INTO audit VALUES (1, 'a@x');"
    )
    before = db_path.read_bytes()
    model = UserPlain if change == "unique dropped" else UserRebuilt
    plan = model_migration_plan(conn, [model])
    assert len(plan.problems) == 1 and "table audit's foreign key would no longer find its parent key" in plan.problems[0]
    with pytest.raises(MigrationError, match='foreign key mismatch - "audit" referencing "users"'):
        sync_models(conn, [model])
    assert db_path.read_bytes() == before
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO audit VALUES (2, 'a@x')")  # the schema still works
    conn.execute("DROP TABLE audit")
    conn.commit()
    sync_models(conn, [model])  # without the hand-made child the change goes through


def test_a_new_child_whose_parent_key_the_same_migration_makes_is_not_refused_with_or_without_data_steps(tmp_path):
    """With data steps, the phase before them creates the child while its parent key is still the old
    one; only what the whole migration leaves counts."""
    from pydsqlite import ForeignKey

    class Item(SyncModel, table="items", primary_key=("id", "alpha")):
        id: int
        alpha: int

    class ItemV2(SyncModel, table="items"):
        id: Annotated[int, PrimaryKey()]

    class Child(SyncModel, table="children"):
        id: Annotated[int, PrimaryKey()]
        parent_id: Annotated[Optional[int], ForeignKey("items.id")] = None

    for steps in (None, {"001_noop": lambda db: None}):
        conn = sqlite3.connect(tmp_path / f"{bool(steps)}.db")
        sync_models(conn, [Item])
        conn.execute("INSERT INTO items VALUES (1, 2)")
        conn.commit()
        plan = sync_models(conn, [ItemV2, Child], allow_destructive=True, data_steps=steps)
        assert "create_table" in {operation.kind for operation in plan.operations}
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("INSERT INTO children VALUES (1, 1)")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


class GainsOpen(SyncModel, table="tasks"):
    id: Annotated[int, PrimaryKey()]
    title: str
    state: str
    open: bool = False


class GainsOpenRebuilt(SyncModel, table="tasks"):  # the same new column, with a type change: a rebuild
    id: Annotated[int, PrimaryKey()]
    title: str
    state: Optional[str] = None
    open: bool = False


class StateRenamedOpen(SyncModel, table="tasks"):  # an existing column renamed to the quoted name
    id: Annotated[int, PrimaryKey()]
    title: str
    open: Annotated[str, RenamedFrom("state")]


class StateRenamedOpenRebuilt(SyncModel, table="tasks"):
    id: Annotated[int, PrimaryKey()]
    title: Optional[str] = None
    open: Annotated[str, RenamedFrom("state")]


QUOTED_TEXT = {
    "a partial index": ('CREATE INDEX open_titles ON tasks (title) WHERE state = "open"', "index open_titles on tasks"),
    "an expression index": ('CREATE INDEX titles_open ON tasks (title || "open")', "index titles_open on tasks"),
    "a view": ('CREATE VIEW open_tasks AS SELECT id, title FROM tasks WHERE state = "open"', "view open_tasks"),
    "a trigger": (
        'CREATE TRIGGER reopen AFTER UPDATE OF title ON tasks BEGIN UPDATE tasks SET state = "open" WHERE id = new.id; END',
        "trigger reopen on tasks",
    ),
    "a temporary view": ('CREATE TEMP VIEW open_ids AS SELECT id FROM main.tasks WHERE state = "open"', "view temp.open_ids"),
    "an upsert in a trigger": (  # its DO UPDATE sees the target table's columns
        'CREATE TRIGGER copy_title AFTER UPDATE OF title ON tasks BEGIN INSERT INTO tasks (id, title, state) VALUES (new.id, new.title, '
        "'closed') ON CONFLICT (id) DO UPDATE SET state = \"open\"; END",
        "trigger copy_title on tasks",
    ),
}


def _tasks(path, dependant: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, state TEXT NOT NULL);
        INSERT INTO tasks VALUES (1, 'write', 'closed'), (2, 'test', 'open');
        """
    )
    conn.executescript(QUOTED_TEXT[dependant][0])
    return conn


@pytest.mark.parametrize("model", [GainsOpen, GainsOpenRebuilt], ids=["in place", "rebuild"])
@pytest.mark.parametrize("dependant", sorted(QUOTED_TEXT))
def test_text_in_double_quotes_that_a_new_column_would_turn_into_a_column_is_refused(db_path, model, dependant):
    """``state = "open"`` reads the text 'open' while no column is named open: an added column of that
    name would silently make it compare two columns, and an index whose WHERE or expression changes
    meaning without being rebuilt is corrupt. Refused in the preview and the sync."""
    conn = _tasks(db_path, dependant)
    named = QUOTED_TEXT[dependant][1]
    before = db_path.read_bytes()
    expected = f'{named} reads "open" as the text \'open\'.*would read the new column open'
    if "temporary" not in dependant:  # the preview rehearses the database's schema, not this connection's TEMP objects
        assert any(re.search(expected, problem) for problem in model_migration_plan(conn, [model]).problems)
    with pytest.raises(MigrationError, match=expected):
        sync_models(conn, [model], allow_destructive=True)
    assert db_path.read_bytes() == before
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


@pytest.mark.parametrize("model", [StateRenamedOpen, StateRenamedOpenRebuilt], ids=["in place", "rebuild"])
@pytest.mark.parametrize("dependant", sorted(QUOTED_TEXT))
def test_text_in_double_quotes_stays_text_when_a_column_is_renamed_to_its_name(db_path, model, dependant):
    """Renaming ``state`` to ``open`` makes SQLite spell the object's text 'open' (and the renamed
    column "open"): the object reads what it read before, so nothing is refused."""
    conn = _tasks(db_path, dependant)
    sync_models(conn, [model])
    schema = "temp" if "temporary" in dependant else "main"
    name = QUOTED_TEXT[dependant][1].split()[1].removeprefix("temp.")
    sql = conn.execute(f"SELECT sql FROM {schema}.sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    assert "'open'" in sql and "= \"open\"" not in sql and "|| \"open\"" not in sql
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    if "view" in dependant:
        view = f"{schema}.{name}"
        assert conn.execute(f"SELECT * FROM {view}").fetchall() == [(2,)] if "temporary" in dependant else [(2, "test")]
    conn.close()


def test_a_double_quoted_name_that_already_names_a_column_may_get_company(memory_conn):
    """Only a change of meaning counts: a quoted column name that stays a column does not block adding
    others, and text whose name no new column takes stays text."""
    conn = memory_conn
    conn.executescript(
        """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, state TEXT NOT NULL);
        CREATE INDEX by_state ON tasks ("state") WHERE state <> "done";
        INSERT INTO tasks VALUES (1, 'write', 'done'), (2, 'test', 'open');
        """
    )
    sync_models(conn, [GainsOpen])
    assert conn.execute("SELECT id FROM tasks INDEXED BY by_state WHERE state <> 'done' AND state = 'open'").fetchall() == [(2,)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


class ParentKeyedByCode(SyncModel, table="parent"):
    id: Annotated[int, Unique()]
    code: Annotated[str, PrimaryKey()]


class ParentRebuiltKeepingId(SyncModel, table="parent"):
    id: Annotated[int, PrimaryKey()]
    code: Optional[str] = None


@pytest.mark.parametrize("foreign_keys", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_hand_made_reference_to_the_parents_implicit_key_is_not_moved_to_a_new_key(db_path, foreign_keys):
    """``REFERENCES parent`` (no column) reaches the parent's primary key as it is at each moment:
    moving that key to another column would silently make the child's values point at codes.
    A problem in the preview and the sync, whatever PRAGMA foreign_keys says."""
    conn = sqlite3.connect(db_path)
    conn.executescript(
        """
        CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent ON DELETE CASCADE);
        INSERT INTO parent VALUES (1, 'a'), (2, 'b');
        INSERT INTO child VALUES (10, 1), (11, 2);
        """
    )
    conn.execute(f"PRAGMA foreign_keys = {int(foreign_keys)}")
    before = db_path.read_bytes()
    expected = r"table child's foreign key \(parent_id\) names no column of parent \(name the columns .*\(id\) now and \(code\)"
    assert any(re.search(expected, problem) for problem in model_migration_plan(conn, [ParentKeyedByCode]).problems)
    with pytest.raises(MigrationError, match=expected):
        sync_models(conn, [ParentKeyedByCode])
    assert db_path.read_bytes() == before
    conn.execute("PRAGMA foreign_keys = OFF")  # the remedy the message names: the child says which column it means
    conn.executescript(
        """
        PRAGMA writable_schema = ON;
        UPDATE sqlite_master SET sql = replace(sql, 'REFERENCES parent ', 'REFERENCES parent(id) ') WHERE name = 'child';
        PRAGMA writable_schema = OFF;
        """
    )
    conn.close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, [ParentKeyedByCode])
    conn.execute("DELETE FROM parent WHERE id = 1")
    assert conn.execute("SELECT id FROM child").fetchall() == [(11,)]
    conn.close()


def test_a_rebuild_that_keeps_the_parent_key_leaves_implicit_references_alone(memory_conn):
    conn = memory_conn
    conn.executescript(
        """
        CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT NOT NULL);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent);
        INSERT INTO parent VALUES (1, 'a');
        INSERT INTO child VALUES (10, 1);
        """
    )
    assert sync_models(conn, [ParentRebuiltKeepingId]).rebuilt_tables == ("parent",)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.parametrize(
    "sql",
    [
        'CREATE INDEX "ix_items_val" ON items (val)',
        'CREATE UNIQUE INDEX IF NOT EXISTS "main"."ix_items_val" ON "items" ("val")',
        'CREATE VIEW "doubled" ("id", "twice") AS SELECT id, val * 2 FROM items',
    ],
    ids=["index name", "qualified index name", "view and column names"],
)
def test_an_objects_own_name_in_double_quotes_is_not_read_as_text(memory_conn, sql):
    """The name of an index or view (and a view's column names) may be written in double quotes: they
    name the object, they read nothing, so nothing is refused."""
    from pydsqlite import schema_from_sql, sync_schema

    sync_schema(memory_conn, schema_from_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, val INTEGER)"))
    sync_schema(memory_conn, schema_from_sql(f"CREATE TABLE items (id INTEGER PRIMARY KEY, val INTEGER); {sql}"))
    names = {name for (name,) in memory_conn.execute("SELECT name FROM sqlite_master WHERE type IN ('index', 'view')")}
    assert names & {"ix_items_val", "doubled"}


def test_a_new_view_reads_double_quoted_text_as_its_sql_says(memory_conn):
    """The double-quote checks guard what existing objects read; a view the migration creates (a
    database made from `pydsqlite inspect` output, say) reads what its SQL says, as SQLite does."""
    from pydsqlite import schema_from_sql, sync_schema

    sql = 'CREATE TABLE tasks (id INTEGER PRIMARY KEY, state TEXT); CREATE VIEW open_tasks AS SELECT id FROM tasks WHERE state = "open"'
    sync_schema(memory_conn, schema_from_sql(sql))
    memory_conn.executemany("INSERT INTO tasks VALUES (?, ?)", [(1, "open"), (2, "closed")])
    assert memory_conn.execute("SELECT id FROM open_tasks").fetchall() == [(1,)]


@pytest.mark.parametrize(
    "sql",
    [
        'CREATE VIEW summary AS SELECT count(*) AS "open" FROM tasks',
        'CREATE VIEW summary AS SELECT "open" FROM (SELECT count(*) AS open FROM tasks)',
        'CREATE VIEW summary AS WITH x AS (SELECT id AS open FROM tasks) SELECT "open" FROM x',
        'CREATE VIEW summary AS SELECT "open".id FROM tasks AS "open"',
        'CREATE VIEW summary AS SELECT id FROM tasks ORDER BY title COLLATE "nocase"',
        'CREATE VIEW summary AS SELECT id * 2 "open" FROM tasks',
        'CREATE VIEW summary AS SELECT "open" FROM (SELECT count(*) "open" FROM tasks)',
        'CREATE VIEW summary AS SELECT row_number() OVER "open" FROM tasks WINDOW "open" AS (ORDER BY id)',
        'CREATE VIEW summary AS WITH x ("open") AS (SELECT id FROM tasks) SELECT "open" FROM x',
    ],
    ids=["alias", "subquery column", "CTE column", "table alias", "collation", "alias without AS", "subquery alias without AS",
         "window", "CTE column list"],
)
def test_names_a_view_defines_itself_are_not_text_a_new_column_would_change(memory_conn, sql):
    """A double-quoted alias, a subquery's or CTE's column, a table alias or a collation name is no
    string: adding a column of that name changes nothing the view reads, and is not refused."""
    conn = memory_conn
    conn.executescript(f"CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, state TEXT NOT NULL); {sql};")
    conn.execute("INSERT INTO tasks VALUES (1, 'a', 'open')")
    before = conn.execute("SELECT * FROM summary").fetchall()

    class Gains(SyncModel, table="tasks"):
        id: Annotated[int, PrimaryKey()]
        title: str
        state: str
        open: Optional[int] = None
        nocase: Optional[int] = None

    sync_models(conn, [Gains])
    assert conn.execute("SELECT * FROM summary").fetchall() == before


def test_text_in_a_triggers_when_clause_that_a_new_column_would_take_is_refused(db_path):
    conn = sqlite3.connect(db_path)
    conn.executescript(
        """
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, state TEXT NOT NULL);
        CREATE TABLE log (id INTEGER);
        CREATE TRIGGER noted AFTER INSERT ON tasks WHEN EXISTS (SELECT 1 FROM tasks WHERE state = "open")
        BEGIN INSERT INTO log VALUES (new.id); END;
        """
    )
    with pytest.raises(MigrationError, match='trigger noted on tasks reads "open" as the text'):
        sync_models(conn, [GainsOpen])
    conn.close()


@pytest.mark.parametrize("rename_table", [False, True], ids=["column renamed", "table and column renamed"])
def test_an_implicit_reference_follows_its_parent_key_column_when_the_plan_renames_it(memory_conn, rename_table):
    """Renaming the parent's key column keeps the same column: ``REFERENCES parent`` still reaches it."""
    conn = memory_conn
    conn.executescript(
        """
        CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent ON DELETE CASCADE);
        INSERT INTO parent VALUES (1, 'a'), (2, 'b');
        INSERT INTO child VALUES (10, 1), (11, 2);
        """
    )
    conn.execute("PRAGMA foreign_keys = ON")
    namespace = {"__annotations__": {"parent_id": Annotated[int, PrimaryKey(), RenamedFrom("id")], "code": Optional[str]}, "code": None}
    options = {"table": "renamed_parents", "renamed_from": "parent"} if rename_table else {"table": "parent"}
    Parent = type(SyncModel)("Parent", (SyncModel,), namespace, **options)
    sync_models(conn, [Parent])
    conn.execute(f"DELETE FROM {'renamed_parents' if rename_table else 'parent'} WHERE parent_id = 1")
    assert conn.execute("SELECT id FROM child").fetchall() == [(11,)]


@pytest.mark.parametrize(
    ("sql", "model", "named"),
    [
        ('CREATE VIEW v AS SELECT id, upper("state") AS "state" FROM tasks', "drops state", 'view v would read "state" as the text'),
        ('CREATE VIEW v AS SELECT id, CASE WHEN state IN ("open", "new") THEN 1 ELSE 0 END AS "open" FROM tasks', "adds open",
         'view v reads "open" as the text'),
        ("CREATE TABLE log (id INTEGER); CREATE TRIGGER seen AFTER INSERT ON log BEGIN SELECT 'x' AS \"open\"; "
         'UPDATE tasks SET state = \'seen\' WHERE state = "open"; END', "adds open", 'trigger seen on log reads "open" as the text'),
    ],
    ids=["alias reusing the column's name", "alias named like the text", "alias in another statement of a trigger"],
)
def test_a_name_used_as_an_alias_somewhere_is_still_checked_where_it_is_read(db_path, sql, model, named):
    """An alias named like a column (or like the text) does not make every other use of the name an alias."""
    conn = sqlite3.connect(db_path)
    conn.executescript(f"CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, state TEXT NOT NULL); {sql};")

    class DropsState(SyncModel, table="tasks"):
        id: Annotated[int, PrimaryKey()]
        title: str

    before = db_path.read_bytes()
    with pytest.raises(MigrationError, match=re.escape(named)):
        sync_models(conn, [DropsState if model == "drops state" else GainsOpen], allow_destructive=True)
    assert db_path.read_bytes() == before
    conn.close()


@pytest.mark.parametrize(
    "body",
    [
        'INSERT INTO audit ("id", "changed_at") VALUES (new.id, 1)',
        'INSERT INTO audit ("id", "changed_at") SELECT id, 1 FROM tasks WHERE id = new.id ON CONFLICT ("id") DO UPDATE SET "changed_at" = excluded."changed_at"',
    ],
    ids=["INSERT column list", "UPSERT target and SET"],
)
def test_column_names_a_trigger_writes_are_no_text(memory_conn, body):
    conn = memory_conn
    conn.executescript(
        f"""
        CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, state TEXT NOT NULL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, changed_at INTEGER);
        CREATE TRIGGER noted AFTER UPDATE ON tasks BEGIN {body}; END;
        """
    )

    class GainsChangedAt(SyncModel, table="tasks"):
        id: Annotated[int, PrimaryKey()]
        title: str
        state: str
        changed_at: Optional[int] = None

    sync_models(conn, [GainsChangedAt])
