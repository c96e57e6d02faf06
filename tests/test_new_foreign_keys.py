"""A new foreign key whose parent table the same release creates or renames, or whose referenced
column it renames: the rows are checked against the parent as it is when the checks run (a new
table is empty), whatever ``PRAGMA foreign_keys`` says, and a refused migration changes nothing."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Optional

import pytest

from pydsqlite import (
    ForeignKey,
    MigrationError,
    PrimaryKey,
    RenamedFrom,
    SyncModel,
    Unique,
    model_migration_plan,
    schema_from_sql,
    schema_migration_plan,
    sync_models,
    sync_schema,
)


class Member(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org: Optional[str] = None


class Org(SyncModel, table="orgs"):
    code: Annotated[str, PrimaryKey()]


class LinkedMember(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org: Annotated[Optional[str], ForeignKey(Org)] = None


class RenamedOrg(SyncModel, table="companies", renamed_from="orgs"):
    code: Annotated[str, PrimaryKey()]


class MemberOfRenamed(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org: Annotated[Optional[str], ForeignKey(RenamedOrg)] = None


class OrgWithRenamedKey(SyncModel, table="orgs"):
    slug: Annotated[str, PrimaryKey(), RenamedFrom("code")]


class MemberOfRenamedKey(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org: Annotated[Optional[str], ForeignKey(OrgWithRenamedKey)] = None


class RenamedOrgWithRenamedKey(SyncModel, table="companies", renamed_from="orgs"):
    slug: Annotated[str, PrimaryKey(), RenamedFrom("code")]


class MemberOfBothRenamed(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org: Annotated[Optional[str], ForeignKey(RenamedOrgWithRenamedKey)] = None


class RenamedMember(SyncModel, table="people", renamed_from="members"):
    id: Annotated[int, PrimaryKey()]
    org: Annotated[Optional[str], ForeignKey(RenamedOrg)] = None


class MemberWithDefault(SyncModel, table="members"):
    id: Annotated[int, PrimaryKey()]
    org: Optional[str] = None
    team: Annotated[str, ForeignKey(Org)] = "core"


class Node(SyncModel, table="nodes"):
    id: Annotated[int, PrimaryKey()]
    parent: Optional[int] = None


class Tree(SyncModel, table="trees", renamed_from="nodes"):
    id: Annotated[int, PrimaryKey()]
    parent: Annotated[Optional[int], ForeignKey("trees.id")] = None


# (before, after, child table and column as the plan names them, parent as the message names it)
CASES = {
    "parent created": ([Member], [Org, LinkedMember], "members.org", "orgs(code), a table this migration creates empty"),
    "parent renamed": ([Org, Member], [RenamedOrg, MemberOfRenamed], "members.org", "companies(code)"),
    "parent's key renamed": ([Org, Member], [OrgWithRenamedKey, MemberOfRenamedKey], "members.org", "orgs(slug)"),
    "parent and its key renamed": ([Org, Member], [RenamedOrgWithRenamedKey, MemberOfBothRenamed], "members.org", "companies(slug)"),
    "child and parent renamed": ([Org, Member], [RenamedOrg, RenamedMember], "people.org", "companies(code)"),
}


def seed(conn: sqlite3.Connection, before: list[type[SyncModel]], references: list[Optional[str]]) -> None:
    sync_models(conn, before)
    if any(model.__name__ == "Org" for model in before):
        conn.execute("INSERT INTO orgs VALUES ('acme')")
    conn.executemany("INSERT INTO members VALUES (?, ?)", list(enumerate(references, start=1)))
    conn.commit()


@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
@pytest.mark.parametrize("case", list(CASES))
def test_rows_referencing_no_row_of_a_parent_the_release_creates_or_renames_are_refused_before_anything_runs(conn, db_path, case, enforced):
    before, after, column, parent = CASES[case]
    orphans = ["ghost", "ghost", None] if case == "parent created" else ["acme", "ghost", "ghost", None]
    seed(conn, before, orphans)
    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    saved = db_path.read_bytes()
    plan = model_migration_plan(conn, after)
    assert plan.problems == (f"{column}: 2 rows: rows reference no row of {parent.split('(')[0]} through the new foreign key to {parent} (e.g. 'ghost')",)
    with pytest.raises(MigrationError, match=rf"{column}: 2 rows: rows reference no row of"):
        sync_models(conn, after)
    assert db_path.read_bytes() == saved
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (int(enforced),)


@pytest.mark.parametrize("case", list(CASES))
def test_rows_that_find_their_parent_migrate_with_every_reference_kept(conn, case):
    before, after, column, _ = CASES[case]
    references = [None, None] if case == "parent created" else ["acme", None, "acme"]
    seed(conn, before, references)
    assert model_migration_plan(conn, after).problems == ()
    sync_models(conn, after)
    child = column.split(".")[0]
    assert conn.execute(f"SELECT org FROM {child} ORDER BY id").fetchall() == [(value,) for value in references]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute(f"SELECT count(*) FROM pragma_foreign_key_list('{child}')").fetchone() == (1,)
    assert model_migration_plan(conn, after).is_empty


def test_a_created_parent_filled_by_a_data_step_takes_the_new_foreign_key(conn):
    seed(conn, [Member], ["acme", "initech", None, "acme"])

    def orgs_from_members(db) -> None:
        db.conn.execute("INSERT INTO orgs SELECT DISTINCT org FROM members WHERE org IS NOT NULL")

    sync_models(conn, [Org, LinkedMember], data_steps={"001 orgs": orgs_from_members})
    assert conn.execute("SELECT code FROM orgs ORDER BY code").fetchall() == [("acme",), ("initech",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT count(*) FROM pragma_foreign_key_list('members')").fetchone() == (1,)


@pytest.mark.parametrize("parent_exists", [True, False], ids=["parent exists", "parent created"])
def test_a_new_column_whose_default_references_no_parent_row_is_refused(conn, db_path, parent_exists):
    seed(conn, [Org, Member] if parent_exists else [Member], [None])
    saved = db_path.read_bytes()
    plan = model_migration_plan(conn, [Org, MemberWithDefault])
    created = "" if parent_exists else ", a table this migration creates empty"
    assert plan.problems == (f"members.team: 1 row: rows reference no row of orgs through the new foreign key to orgs(code){created} (e.g. 'core')",)
    with pytest.raises(MigrationError, match="members.team: 1 row"):
        sync_models(conn, [Org, MemberWithDefault])
    assert db_path.read_bytes() == saved


def test_a_table_renamed_with_a_new_foreign_key_to_itself_checks_its_own_rows(conn, db_path):
    sync_models(conn, [Node])
    conn.executemany("INSERT INTO nodes VALUES (?, ?)", [(1, None), (2, 1), (3, 9)])
    conn.commit()
    saved = db_path.read_bytes()
    assert model_migration_plan(conn, [Tree]).problems == (
        "trees.parent: 1 row: rows reference no row of trees through the new foreign key to trees(id) (e.g. 9)",
    )
    with pytest.raises(MigrationError, match="trees.parent: 1 row"):
        sync_models(conn, [Tree])
    assert db_path.read_bytes() == saved


def test_parent_rows_deleted_while_the_migration_runs_leave_no_broken_new_foreign_key(conn, db_path):
    """With foreign keys off, the rows are checked once more after the statements ran: code of the
    application running inside the migration (a ``progress`` callback) may have changed them."""
    seed(conn, [Org, Member], ["acme", None])
    saved = db_path.read_bytes()

    def delete_the_parents(table: str, copied: int, total: int) -> None:
        conn.execute("DELETE FROM orgs")

    with pytest.raises(MigrationError, match=r"1 row\(s\) of table 'members' violating the foreign key it creates to orgs .*'acme'"):
        sync_models(conn, [Org, LinkedMember], progress=delete_the_parents)
    assert db_path.read_bytes() == saved
    assert conn.execute("SELECT * FROM orgs").fetchall() == [("acme",)]


class Parent(SyncModel, table="p"):
    id: Annotated[int, PrimaryKey()]


class Child(SyncModel, table="c"):
    id: Annotated[int, PrimaryKey()]
    p_id: Annotated[Optional[int], ForeignKey(Parent)] = None


class Archive(SyncModel, table="archive", renamed_from="p"):
    id: Annotated[int, PrimaryKey()]


class NewParent(SyncModel, table="p"):
    id: Annotated[int, PrimaryKey()]
    name: str = ""


@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_child_keeps_referencing_a_name_its_parent_gives_up_to_a_new_table(conn, db_path, enforced):
    """SQLite's rename of the parent rewrites the child's REFERENCES to follow it; the child's model
    still names the old name, now a new (empty) table: the plan rebuilds the child to reference
    that table, and its rows that reference something are refused, before anything runs."""
    sync_models(conn, [Parent, Child])
    conn.executemany("INSERT INTO p VALUES (?)", [(1,), (2,)])
    conn.executemany("INSERT INTO c VALUES (?, ?)", [(1, 1), (2, None)])
    conn.commit()
    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    saved = db_path.read_bytes()
    plan = model_migration_plan(conn, [Archive, NewParent, Child])
    assert "rebuild table c: add foreign key (p_id) -> p(id); drop foreign key (p_id) -> archive(id)" in str(plan)
    assert plan.problems == ("c.p_id: 1 row: rows reference no row of p through the new foreign key to p(id), a table this migration creates empty (e.g. 1)",)
    with pytest.raises(MigrationError, match="c.p_id: 1 row"):
        sync_models(conn, [Archive, NewParent, Child])
    assert db_path.read_bytes() == saved

    conn.execute("UPDATE c SET p_id = NULL")
    conn.commit()
    sync_models(conn, [Archive, NewParent, Child])
    assert conn.execute('SELECT "table", "to" FROM pragma_foreign_key_list(\'c\')').fetchall() == [("p", "id")]
    assert conn.execute("SELECT id FROM archive ORDER BY id").fetchall() == [(1,), (2,)]
    assert model_migration_plan(conn, [Archive, NewParent, Child]).is_empty


class Pair(SyncModel, table="pairs"):
    a: Annotated[str, PrimaryKey()]
    b: Annotated[str, Unique()]


class PairUser(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    pair: Annotated[str, ForeignKey("pairs.a")]


class SwappedPair(SyncModel, table="pairs"):
    a: Annotated[str, PrimaryKey(), RenamedFrom("b")]
    b: Annotated[str, Unique(), RenamedFrom("a")]


@pytest.mark.parametrize("values_follow", [True, False], ids=["values found under the new a", "values only under the old a"])
def test_a_child_referencing_a_column_the_release_swaps_references_the_column_its_model_names(conn, db_path, values_follow):
    """SQLite's column renames rewrite the child's REFERENCES pairs(a) to pairs(b); the model says
    pairs.a, which is now the other column: the child is rebuilt to reference it, its rows checked
    against that column's values."""
    sync_models(conn, [Pair, PairUser])
    conn.executemany("INSERT INTO pairs VALUES (?, ?)", [("x", "y"), ("y", "x")] if values_follow else [("x", "q"), ("y", "r")])
    conn.executemany("INSERT INTO users VALUES (?, ?)", [(1, "x"), (2, "y")])
    conn.commit()
    plan = model_migration_plan(conn, [SwappedPair, PairUser])
    assert "rebuild table users" in str(plan)
    if values_follow:
        assert plan.problems == ()
        sync_models(conn, [SwappedPair, PairUser])
        assert conn.execute('SELECT "table", "to" FROM pragma_foreign_key_list(\'users\')').fetchall() == [("pairs", "a")]
        assert conn.execute("SELECT * FROM users ORDER BY id").fetchall() == [(1, "x"), (2, "y")]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert model_migration_plan(conn, [SwappedPair, PairUser]).is_empty
    else:
        assert plan.problems == ("users.pair: 2 rows: rows reference no row of pairs through the new foreign key to pairs(a) (e.g. 'x')",)
        saved = db_path.read_bytes()
        with pytest.raises(MigrationError, match="users.pair: 2 rows"):
            sync_models(conn, [SwappedPair, PairUser])
        assert db_path.read_bytes() == saved


LIVE_CODES = "CREATE TABLE p (id INTEGER PRIMARY KEY, code TEXT {collate} UNIQUE); CREATE TABLE c (id INTEGER PRIMARY KEY, code {child_type});"
WANTED_CODES = "CREATE TABLE p (id INTEGER PRIMARY KEY, code TEXT {collate} UNIQUE); CREATE TABLE c (id INTEGER PRIMARY KEY, code {child_type} REFERENCES p (code));"


@pytest.mark.parametrize(
    ("live_collate", "wanted_collate", "child_type", "parent_value", "child_value", "fits"),
    [
        ("", "COLLATE NOCASE", "TEXT", "x", "X", True),  # the parent gains NOCASE in the same release
        ("COLLATE NOCASE", "", "TEXT", "x", "X", False),  # it loses it
        ("COLLATE NOCASE", "COLLATE NOCASE", "TEXT", "x", "X", True),
        ("", "", "INTEGER", "01", 1, False),  # the TEXT parent's affinity: 1 becomes '1', not '01'
        ("", "", "INTEGER", "1", 1, True),
    ],
    ids=["parent gains NOCASE", "parent loses NOCASE", "parent keeps NOCASE", "TEXT parent '01', INTEGER child 1", "TEXT parent '1', INTEGER child 1"],
)
@pytest.mark.parametrize("enforced", [False, True], ids=["foreign keys off", "foreign keys on"])
def test_a_new_foreign_key_finds_parents_as_the_key_will_compare_them(
    tmp_path, live_collate, wanted_collate, child_type, parent_value, child_value, fits, enforced
):
    """The check compares as the foreign key will: with the collation the parent column gets in the
    migration and with the parent's affinity; what it lets through, a fresh database accepts too."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(LIVE_CODES.format(collate=live_collate, child_type=child_type))
    conn.execute("INSERT INTO p VALUES (1, ?)", (parent_value,))
    conn.execute("INSERT INTO c VALUES (1, ?)", (child_value,))
    if enforced:
        conn.execute("PRAGMA foreign_keys = ON")
    wanted = schema_from_sql(WANTED_CODES.format(collate=wanted_collate, child_type=child_type))
    fresh = sqlite3.connect(":memory:", isolation_level=None)
    fresh.executescript(WANTED_CODES.format(collate=wanted_collate, child_type=child_type))
    fresh.execute("INSERT INTO p VALUES (1, ?)", (parent_value,))
    fresh.execute("INSERT INTO c VALUES (1, ?)", (child_value,))
    assert (fresh.execute("PRAGMA foreign_key_check").fetchall() == []) is fits
    plan = schema_migration_plan(conn, wanted)
    if fits:
        assert plan.problems == ()
        sync_schema(conn, wanted)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT code FROM c").fetchall() == [(child_value,)]
    else:
        assert plan.problems == (f"c.code: 1 row: rows reference no row of p through the new foreign key to p(code) (e.g. {child_value!r})",)
        saved = path.read_bytes()
        with pytest.raises(MigrationError, match="c.code: 1 row"):
            sync_schema(conn, wanted)
        assert path.read_bytes() == saved
