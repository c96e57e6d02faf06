"""Replicas with foreign keys on and off converge: deletes of any kind travel, and a replica that
enforces foreign keys settles what a merge leaves violated (docs/sync.md, "Foreign keys")."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Annotated, Optional

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from pydsqlite import LWW, ChangeSet, ConstraintError, Database, ForeignKey, PrimaryKey, SyncError, SyncModel, Unique, sync_models
from pydsqlite.replica.hlc import successor


class Owner(SyncModel, table="fk_owners"):
    id: Annotated[str, PrimaryKey()]
    name: Annotated[str, LWW()] = ""
    rank: int = 0


class Item(SyncModel, table="fk_items"):
    """CASCADE, the key column in the row's group register."""

    id: Annotated[str, PrimaryKey()]
    owner: Annotated[str, ForeignKey(Owner, on_delete="CASCADE")]
    label: Annotated[str, LWW()] = ""


class Tag(SyncModel, table="fk_tags"):
    """SET NULL, the key column an LWW column of its own."""

    id: Annotated[str, PrimaryKey()]
    owner: Annotated[Optional[str], ForeignKey(Owner, on_delete="SET NULL"), LWW()] = None
    label: str = ""


class Memo(SyncModel, table="fk_memos"):
    """NO ACTION: a memo keeps its owner alive."""

    id: Annotated[str, PrimaryKey()]
    owner: Annotated[str, ForeignKey(Owner)]
    text: Annotated[str, LWW()] = ""


MODELS = [Owner, Item, Tag, Memo]
CHILDREN = {"fk_items": Item, "fk_tags": Tag, "fk_memos": Memo}
TABLES = {"fk_owners": Owner, **CHILDREN}
VISIBLE = {
    "fk_owners": "id, name, rank",
    "fk_items": "id, owner, label",
    "fk_tags": "id, owner, label",
    "fk_memos": "id, owner, text",
}
STAMPS = {
    "fk_owners": "id, name__hlc, _pydsqlite_version",
    "fk_items": "id, label__hlc, _pydsqlite_version",
    "fk_tags": "id, owner__hlc, _pydsqlite_version",
    "fk_memos": "id, text__hlc, _pydsqlite_version",
}


class FakeClock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


_template: sqlite3.Connection | None = None


def replica(foreign_keys: bool, start: int = 1_700_000_000_000, clock: FakeClock | None = None) -> Database:
    """A fresh replica (a copy of one synced empty database: each gets its own node id on first use)."""
    global _template
    if _template is None:
        _template = sqlite3.connect(":memory:")
        sync_models(_template, MODELS)
    conn = sqlite3.connect(":memory:")
    _template.backup(conn)
    conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return Database(conn, wall_clock=clock or FakeClock(start))


def enforces(db: Database) -> bool:
    return bool(db.conn.execute("PRAGMA foreign_keys").fetchone()[0])


def visible(db: Database) -> dict[str, list[tuple]]:
    return {table: db.conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall() for table, columns in VISIBLE.items()}


def sync_state(db: Database) -> tuple:
    stamps = {table: db.conn.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall() for table, columns in STAMPS.items()}
    tombstones = db.conn.execute("SELECT table_name, key, deleted, state FROM _pydsqlite_tombstones ORDER BY 1, 2").fetchall()
    return visible(db), stamps, tombstones


def full_exchange(dbs: list[Database], rounds: int = 10) -> int:
    """Full changesets between every ordered pair, repeated until a round changes nothing; returns the rounds used."""
    for number in range(1, rounds + 1):
        changed = 0
        for source in dbs:
            for target in dbs:
                if source is not target:
                    changed += target.apply_changes(ChangeSet.from_json(source.changes_since().to_json()))
        if changed == 0:
            return number
    raise AssertionError(f"replicas still changing after {rounds} full exchange rounds")


def assert_converged(dbs: list[Database]) -> None:
    first = sync_state(dbs[0])
    for db in dbs[1:]:
        assert sync_state(db) == first
    for db in dbs:
        if enforces(db):
            assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []


# --- the property: any mix of replicas, writes, deletes and exchanges converges --------------------

OWNERS = ["o0", "o1", "o2"]
CHILD_KEYS = ["c0", "c1"]
words = st.sampled_from(["", "a", "b"])


class ForeignKeyReplicas(RuleBasedStateMachine):
    """2-4 replicas, each with foreign keys on or off, insert, update and delete owners and their
    CASCADE / SET NULL / NO ACTION children (through pydsqlite and by raw SQL), exchange partial,
    reordered and duplicated changesets, and end identical with no violation where keys are enforced."""

    changesets = Bundle("changesets")

    @initialize(enforcing=st.lists(st.booleans(), min_size=2, max_size=4), skews=st.lists(st.integers(-3_000, 3_000), min_size=4, max_size=4))
    def start(self, enforcing, skews):
        self.dbs = [replica(on, 1_700_000_000_000 + skews[number]) for number, on in enumerate(enforcing)]
        event(f"{sum(enforcing)} of {len(enforcing)} replicas enforce foreign keys")

    def pick(self, r: int) -> Database:
        return self.dbs[r % len(self.dbs)]

    @rule(r=st.integers(0, 3), key=st.sampled_from(OWNERS), name=words, rank=st.integers(0, 2))
    def insert_owner(self, r, key, name, rank):
        db = self.pick(r)
        if db.get(Owner, key) is None:
            db.insert(Owner(id=key, name=name, rank=rank))

    @rule(r=st.integers(0, 3), table=st.sampled_from(sorted(CHILDREN)), key=st.sampled_from(CHILD_KEYS), owner=st.sampled_from(OWNERS), label=words)
    def insert_child(self, r, table, key, owner, label):
        db, model = self.pick(r), CHILDREN[table]
        if db.get(model, key) is not None:
            return
        row = {"fk_items": dict(label=label), "fk_tags": dict(label=label), "fk_memos": dict(text=label)}[table]
        try:
            db.insert(model(id=key, owner=owner, **row))
        except ConstraintError:
            assert enforces(db)  # the owner is missing here: SQLite refuses, as it should

    @rule(r=st.integers(0, 3), table=st.sampled_from(sorted(TABLES)), key=st.sampled_from(OWNERS + CHILD_KEYS), value=st.integers(0, 2))
    def update(self, r, table, key, value):
        db, model = self.pick(r), TABLES[table]
        if db.get(model, key) is None:
            return
        changes = {
            "fk_owners": {"name": ["", "a", "b"][value]} if value else {"rank": value},
            "fk_items": {"label": ["", "a", "b"][value]},
            "fk_tags": {"owner": OWNERS[value] if value else None},
            "fk_memos": {"owner": OWNERS[value]} if value else {"text": "edited"},
        }[table]
        try:
            db.update(model, key, **changes)
        except ConstraintError:
            assert enforces(db)

    @rule(r=st.integers(0, 3), table=st.sampled_from(sorted(TABLES)), key=st.sampled_from(OWNERS + CHILD_KEYS), raw=st.booleans())
    def delete(self, r, table, key, raw):
        db = self.pick(r)
        try:
            if raw:  # the application's own SQL, outside pydsqlite
                db.conn.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
                db.conn.commit()
            else:
                db.delete(TABLES[table], key)
        except (ConstraintError, sqlite3.IntegrityError):
            assert enforces(db)  # a memo still references the owner
            if db.conn.in_transaction:
                db.conn.rollback()

    @rule(r=st.integers(0, 3), step=st.integers(-2_000, 2_000))
    def move_clock(self, r, step):
        self.pick(r).clock.wall_clock.now += step

    @rule(target=changesets, r=st.integers(0, 3), partial=st.booleans())
    def read_feed(self, r, partial):
        db = self.pick(r)
        cursor = db.changes_since().cursor // 2 if partial else None
        return ChangeSet.from_json(db.changes_since(cursor).to_json())

    @rule(changeset=changesets, r=st.integers(0, 3))
    def deliver(self, changeset, r):
        self.pick(r).apply_changes(changeset)  # never refused, whatever either side's foreign-key setting

    @invariant()
    def enforcing_replicas_hold_no_violation(self):
        for db in getattr(self, "dbs", []):
            assert not db.conn.in_transaction
            if enforces(db):
                assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []

    def teardown(self):
        if not hasattr(self, "dbs"):
            return
        rounds = full_exchange(self.dbs)
        event(f"quiescent after {rounds} full rounds")
        assert_converged(self.dbs)
        rows = visible(self.dbs[0])
        event(f"{sum(map(len, rows.values()))} visible rows at the end")


TestForeignKeyConvergence = ForeignKeyReplicas.TestCase
TestForeignKeyConvergence.settings = settings(
    max_examples=max(500, settings().max_examples), stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- the rule, action by action --------------------------------------------------------------------


def pair() -> tuple[Database, Database]:
    """A replica without foreign keys and one that enforces them, both holding owner o with one child of each kind."""
    off, on = replica(False), replica(True, start=1_700_000_000_500)
    on.insert(Owner(id="o", name="owner", rank=1))
    on.insert_many([Item(id="i", owner="o", label="item")])
    on.insert(Tag(id="t", owner="o", label="tag"))
    on.insert(Memo(id="m", owner="o", text="memo"))
    off.apply_changes(on.changes_since())
    return off, on


def test_a_full_changeset_from_a_replica_without_foreign_keys_is_never_refused_and_converges():
    off, on = pair()
    off.delete(Owner, "o")  # no foreign keys here: the children stay, orphaned
    off.insert(Owner(id="unrelated", name="new"))
    on.insert(Memo(id="m2", owner="o", text="written concurrently"))
    assert on.apply_changes(off.changes_since()) > 0  # used to fail whole with a FOREIGN KEY SyncError
    assert on.get(Owner, "unrelated") == Owner(id="unrelated", name="new")
    full_exchange([off, on])
    assert_converged([off, on])


def test_an_incoming_parent_delete_cascades_sets_null_and_loses_to_a_no_action_reference():
    off, on = pair()
    owner_stamp = on.conn.execute("SELECT name__hlc FROM fk_owners").fetchone()[0]
    item_stamps = on.conn.execute("SELECT label__hlc, _pydsqlite_version FROM fk_items").fetchone()
    tag_owner_stamp = on.conn.execute("SELECT owner__hlc FROM fk_tags").fetchone()[0]
    off.delete(Owner, "o")
    on.apply_changes(off.changes_since())
    # the actions are settlements: each stamped just after the state it changed, not at the merge's time
    assert on.get(Item, "i") is None  # CASCADE
    item_tombstone = on.conn.execute("SELECT deleted FROM _pydsqlite_tombstones WHERE table_name = 'fk_items'").fetchone()[0]
    assert item_tombstone == successor(max(item_stamps))
    assert on.get(Tag, "t") == Tag(id="t", owner=None, label="tag")  # SET NULL
    assert on.conn.execute("SELECT owner__hlc FROM fk_tags").fetchone()[0] == successor(tag_owner_stamp)
    assert on.get(Memo, "m") == Memo(id="m", owner="o", text="memo")  # NO ACTION: the memo keeps its owner...
    assert on.get(Owner, "o") == Owner(id="o", name="owner", rank=1)  # ...revived with its last values:
    name_stamp, version = on.conn.execute("SELECT name__hlc, _pydsqlite_version FROM fk_owners").fetchone()
    assert name_stamp == owner_stamp and version > owner_stamp  # the version stamped now, the registers kept
    full_exchange([off, on])
    assert_converged([off, on])
    assert off.get(Owner, "o") is not None and off.get(Item, "i") is None and off.get(Tag, "t").owner is None


def test_a_revival_keeps_the_registers_times_so_an_earlier_edit_arriving_after_it_still_wins_in_any_order():
    """A deletes the owner, B adds a memo that keeps it (NO ACTION), C renamed it before the delete.
    Merged in either order, A ends with C's name: the revival stamps only the row version."""
    outcomes = []
    for order in ("C then B", "B then C"):
        clocks = [FakeClock(1_700_000_000_000) for _ in range(3)]
        a, b, c = (replica(True, clock=clock) for clock in clocks)
        a.insert(Owner(id="p", name="old"))
        base = a.changes_since()
        b.apply_changes(base)
        c.apply_changes(base)
        for clock, later in zip(clocks, (2_000, 3_000, 1_000)):  # C renames, then A deletes, then B refers
            clock.now += later
        c.update(Owner, "p", name="new (C)")
        a.delete(Owner, "p")
        b.insert(Memo(id="m", owner="p", text="comment"))
        from_b, from_c = b.changes_since(), c.changes_since()
        for changeset in ((from_c, from_b) if order == "C then B" else (from_b, from_c)):
            a.apply_changes(changeset)
        full_exchange([a, b, c])
        assert_converged([a, b, c])
        outcomes.append(visible(a))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["fk_owners"] == [("p", "new (C)", 0)] and outcomes[0]["fk_memos"] == [("m", "p", "comment")]


@pytest.mark.parametrize("kind", ["CASCADE", "SET NULL"])
@pytest.mark.parametrize("orphaned_by", ["the child arrives after its owner's delete", "the owner's delete arrives"])
def test_a_settlement_loses_to_a_later_move_of_the_child_whatever_the_delivery_order(kind, orphaned_by):
    """A child's newest write moves it to a live owner; an enforcing replica that first sees it still on
    its deleted owner settles it (deletes it, or clears its key) but stamps that settlement just after
    the state it settled, not at the time of the merge. So the move, made after that state, wins, and
    every delivery order ends alike: the child kept, on its new owner (it was deleted everywhere, or
    cleared, when the settlement happened to arrive first)."""
    model = Item if kind == "CASCADE" else Tag
    outcomes = []
    for order in ("move first", "move last"):
        clocks = [FakeClock(1_700_000_000_000) for _ in range(3)]
        deleting_enforces = orphaned_by == "the child arrives after its owner's delete"
        a, b, c = replica(deleting_enforces, clock=clocks[0]), replica(True, clock=clocks[1]), replica(True, clock=clocks[2])
        a.insert_many([Owner(id="gone"), Owner(id="kept")])
        if orphaned_by == "the owner's delete arrives":
            a.insert(model(id="c", owner="gone", label="precious"))
        full_exchange([a, b, c])
        for clock in clocks:
            clock.now += 1_000
        a.delete(Owner, "gone")  # A does not enforce foreign keys in the second case: the child stays there, orphaned
        if orphaned_by == "the child arrives after its owner's delete":
            b.insert(model(id="c", owner="gone", label="precious"))  # concurrently with the delete
            c.apply_changes(b.changes_since())
        for clock in clocks:
            clock.now += 1_000
        c.update(model, "c", owner="kept")  # the newest write to the child, made after seeing it
        settling = a if orphaned_by == "the child arrives after its owner's delete" else b
        orphaning = b.changes_since() if settling is a else a.changes_since()
        moving = c.changes_since()
        for changeset in ((moving, orphaning) if order == "move first" else (orphaning, moving)):
            settling.apply_changes(ChangeSet.from_json(changeset.to_json()))
        full_exchange([a, b, c])
        assert_converged([a, b, c])
        outcomes.append(visible(a))
    assert outcomes[0] == outcomes[1]
    table = "fk_items" if kind == "CASCADE" else "fk_tags"
    assert outcomes[0][table] == [("c", "kept", "precious")]


class Medal(SyncModel, table="fk_medals"):
    id: Annotated[str, PrimaryKey()]
    label: Annotated[str, LWW(), Unique()]


class Prize(SyncModel, table="fk_prizes"):
    id: Annotated[str, PrimaryKey()]
    medal: Annotated[str, ForeignKey(Medal)]  # NO ACTION: the reference keeps the medal
    note: Annotated[str, LWW()] = ""


def test_a_revival_refused_by_a_unique_value_taken_meanwhile_names_the_rows_and_how_to_settle():
    """A deletes medal m1 and gives its label to m2; B concurrently awards m1. Merging the prize revives
    m1 (a reference beats a delete), whose label m2 now holds: refused, naming the incoming prize, the
    revived medal and the medal holding the value; removing the prize on B settles it."""
    models = [Medal, Prize]
    a, b = (Database(sqlite3.connect(":memory:")) for _ in range(2))
    for db in (a, b):
        db.conn.execute("PRAGMA foreign_keys = ON")
        sync_models(db.conn, models)
    a.insert(Medal(id="m1", label="gold"))
    b.apply_changes(a.changes_since(models=models), models)
    a.delete(Medal, "m1")
    a.insert(Medal(id="m2", label="gold"))
    b.insert(Prize(id="w", medal="m1"))
    before = visible_medals(a)
    with pytest.raises(SyncError) as refused:
        a.apply_changes(b.changes_since(b.changes_since(models=models).cursor - 1, models=models), models)
    message = str(refused.value)
    assert (refused.value.table, refused.value.key) == ("fk_prizes", ("w",))
    assert "row with key ('m1',) of fk_medals, which was deleted here" in message
    assert "(label = 'gold') is now held by the row with key ('m2',)" in message and "remove that reference" in message
    assert visible_medals(a) == before
    b.delete(Prize, "w")
    for _ in range(2):
        b.apply_changes(a.changes_since(models=models), models)
        a.apply_changes(b.changes_since(models=models), models)
    assert visible_medals(a) == visible_medals(b) == [("m2", "gold")]
    assert a.select(Prize) == b.select(Prize) == []


def visible_medals(db: Database) -> list[tuple]:
    return db.conn.execute("SELECT id, label FROM fk_medals ORDER BY id").fetchall()


class Trunk(SyncModel, table="fk_trunks"):
    id: Annotated[str, PrimaryKey()]
    name: Annotated[str, LWW()] = ""


class Branch(SyncModel, table="fk_branches"):
    id: Annotated[str, PrimaryKey()]
    trunk: Annotated[str, LWW(), ForeignKey(Trunk, on_delete="CASCADE")]


class Leaf(SyncModel, table="fk_leaves"):
    id: Annotated[str, PrimaryKey()]
    branch: Annotated[str, LWW(), ForeignKey(Branch, on_delete="CASCADE")]
    text: Annotated[str, LWW()] = ""


def tree_replica(models: list[type[SyncModel]], foreign_keys: bool) -> Database:
    """A replica in memory with foreign keys on or off, synced to ``models``."""
    db = Database(sqlite3.connect(":memory:"))
    db.conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    sync_models(db.conn, models)
    return db


def sent(models: list[type[SyncModel]]) -> Callable[[Database, Database], None]:
    """A function sending the changes of ``models`` from one replica to another, through their JSON."""

    def send(source: Database, target: Database) -> None:
        target.apply_changes(ChangeSet.from_json(source.changes_since(models=models).to_json()), models)

    return send


@pytest.mark.parametrize("order", ["move first", "delete first"])
def test_rows_a_settlement_cascaded_to_come_back_with_the_child_a_later_move_brings_back(order):
    """A replica without foreign keys deletes trunk t1; another moves branch b (with its leaves) to the
    live trunk t2 after seeing it. Where the delete reaches the enforcing server first, b's settlement
    cascades to its leaves; the move brings b back, and with it the leaves that settlement took (a leaf
    deleted by a write of its own stays deleted). Every order ends with the same rows."""
    models = [Trunk, Branch, Leaf]
    send = sent(models)

    server, mover, deleter = (tree_replica(models, foreign_keys) for foreign_keys in (True, True, False))
    server.insert_many([Trunk(id="t1"), Trunk(id="t2")])
    server.insert(Branch(id="b", trunk="t1"))
    server.insert_many([Leaf(id="kept", branch="b", text="keep me"), Leaf(id="removed", branch="b")])
    for other in (mover, deleter):
        send(server, other)
    mover.delete(Leaf, "removed")  # a delete of its own, before the move: it must stay deleted
    deleter.delete(Trunk, "t1")
    mover.update(Branch, "b", trunk="t2")
    for source in ((mover, deleter) if order == "move first" else (deleter, mover)):
        send(source, server)
    for _ in range(3):
        for source in (server, mover, deleter):
            for target in (server, mover, deleter):
                if source is not target:
                    send(source, target)
    for db in (server, mover, deleter):
        assert [(trunk.id) for trunk in db.select(Trunk)] == ["t2"]
        assert [(branch.id, branch.trunk) for branch in db.select(Branch)] == [("b", "t2")]
        assert [(leaf.id, leaf.text) for leaf in db.select(Leaf)] == [("kept", "keep me")]
    assert server.conn.execute("PRAGMA foreign_key_check").fetchall() == []


class Splice(SyncModel, table="fk_splices"):
    id: Annotated[str, PrimaryKey()]
    left: Annotated[str, LWW(), ForeignKey(Branch, on_delete="CASCADE")]
    right: Annotated[str, LWW(), ForeignKey(Branch, on_delete="CASCADE")]


def test_a_mass_move_brings_back_every_row_the_settlements_cascaded_to_once():
    """A thousand branches moved off a trunk another replica deleted, delete first at the enforcing
    server: every branch comes back, with its leaf and the splices joining two moved branches
    (found through both of their keys, restored once); the server's feed then carries them all."""
    models = [Trunk, Branch, Leaf, Splice]
    send = sent(models)
    count = 1000

    server, mover, deleter, newcomer = (tree_replica(models, foreign_keys) for foreign_keys in (True, True, False, True))
    server.insert_many([Trunk(id="t1"), Trunk(id="t2")])
    server.insert_many([Branch(id=f"b{n:04}", trunk="t1") for n in range(count)])
    server.insert_many([Leaf(id=f"l{n:04}", branch=f"b{n:04}", text=f"leaf {n}") for n in range(count)])
    server.insert_many([Splice(id=f"s{n:04}", left=f"b{n:04}", right=f"b{(n + 1) % count:04}") for n in range(0, count, 2)])
    for other in (mover, deleter):
        send(server, other)
    deleter.delete(Trunk, "t1")
    with mover.transaction():
        for n in range(count):
            mover.update(Branch, f"b{n:04}", trunk="t2")
    send(deleter, server)
    assert server.select(Leaf) == []  # the settlement cascaded through every level
    send(mover, server)
    send(server, newcomer)
    for db in (server, newcomer):
        assert {branch.trunk for branch in db.select(Branch)} == {"t2"} and len(db.select(Branch)) == count
        assert [(leaf.id, leaf.text) for leaf in db.select(Leaf)] == [(f"l{n:04}", f"leaf {n}") for n in range(count)]
        assert len(db.select(Splice)) == count // 2
        assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_incoming_rows_referencing_a_parent_deleted_here_are_settled_by_their_key():
    off, on = pair()
    on.delete(Memo, "m")
    on.delete(Owner, "o")  # foreign keys on: the item cascades, the tag is cleared
    off.insert(Item(id="i2", owner="o", label="late"))
    off.insert(Tag(id="t2", owner="o", label="late"))
    off.update(Memo, "m", text="edited while deleted elsewhere")
    on.apply_changes(off.changes_since())
    # the memo revives its owner first, so the late item and tag simply keep it
    assert on.get(Memo, "m") is not None and on.get(Owner, "o") == Owner(id="o", name="owner", rank=1)
    assert on.get(Item, "i2").owner == on.get(Tag, "t2").owner == "o"
    off.delete(Memo, "m")
    full_exchange([off, on])
    on.delete(Memo, "m")
    on.delete(Owner, "o")
    off.insert(Item(id="i3", owner="o", label="later"))
    off.insert(Tag(id="t3", owner="o", label="later"))
    on.apply_changes(off.changes_since())  # nothing keeps the owner now: the item goes, the tag is cleared
    assert on.get(Item, "i3") is None and on.get(Tag, "t3") == Tag(id="t3", owner=None, label="later")
    full_exchange([off, on])
    assert_converged([off, on])


def test_rows_referencing_a_parent_never_seen_are_settled_without_inventing_it():
    off, on = replica(False), replica(True)
    off.insert(Item(id="i", owner="ghost"))
    off.insert(Tag(id="t", owner="ghost"))
    off.insert(Memo(id="m", owner="ghost"))
    off.insert(Owner(id="real"))
    on.apply_changes(off.changes_since())
    assert visible(on) == {
        "fk_owners": [("real", "", 0)], "fk_items": [], "fk_tags": [("t", None, "")], "fk_memos": [],
    }
    full_exchange([off, on])
    assert_converged([off, on])


def test_two_enforcing_replicas_settling_the_same_conflict_concurrently_converge():
    off, first = pair()
    second = replica(True, start=1_700_000_000_900)
    second.apply_changes(first.changes_since())
    off.delete(Owner, "o")
    deletion = off.changes_since()
    first.apply_changes(deletion)
    second.apply_changes(deletion)  # both cascade, clear and revive, each with its own timestamps
    assert visible(first) == visible(second)
    assert full_exchange([off, first, second]) <= 3
    assert_converged([off, first, second])


class Crate(SyncModel, table="fk_crates"):
    id: Annotated[str, PrimaryKey()]
    owner: Annotated[str, ForeignKey(Owner, on_delete="RESTRICT")]
    label: Annotated[str, LWW()] = ""


class Badge(SyncModel, table="fk_badges"):
    id: Annotated[str, PrimaryKey()]
    owner: Annotated[str, ForeignKey(Owner, on_delete="SET DEFAULT")] = "root"
    label: Annotated[str, LWW()] = ""


class Part(SyncModel, table="fk_parts"):
    """NO ACTION on an item, which itself cascades from its owner."""

    id: Annotated[str, PrimaryKey()]
    item: Annotated[str, ForeignKey(Item)]
    label: Annotated[str, LWW()] = ""


class Ledger(SyncModel, table="fk_ledger"):
    """Not synced (no LWW column), referencing a synced owner."""

    id: Annotated[str, PrimaryKey()]
    owner: Annotated[str, ForeignKey(Owner)]


class Shelf(SyncModel, table="fk_shelves"):
    id: Annotated[str, PrimaryKey()]


class Slot(SyncModel, table="fk_slots"):
    """Synced, referencing an unsynced table."""

    id: Annotated[str, PrimaryKey()]
    shelf: Annotated[str, ForeignKey(Shelf)]
    label: Annotated[str, LWW()] = ""


EXTRA = [Owner, Item, Crate, Badge, Part, Ledger, Shelf, Slot]


def extra_replica(foreign_keys: bool, start: int = 1_700_000_000_000) -> Database:
    conn = sqlite3.connect(":memory:")
    sync_models(conn, EXTRA)
    conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return Database(conn, wall_clock=FakeClock(start))


def dump(db: Database) -> list[str]:
    return list(db.conn.iterdump())


def test_restrict_keeps_the_parent_set_default_moves_to_the_default_and_chains_keep_what_is_referenced():
    off, on = extra_replica(False), extra_replica(True, start=1_700_000_000_500)
    on.insert_many([Owner(id="root"), Owner(id="o", name="owner"), Owner(id="q", name="chained")])
    on.insert(Crate(id="c", owner="o"))
    on.insert(Badge(id="b", owner="o"))
    on.insert(Item(id="i", owner="q"))
    on.insert(Part(id="p", item="i"))
    off.apply_changes(on.changes_since())
    for owner in ("o", "q", "root"):
        off.delete(Owner, owner)
    on.apply_changes(off.changes_since())
    # RESTRICT (deferred while merging, like NO ACTION) revives o; SET DEFAULT moved the badge to
    # 'root', deleted as well: root is revived. q's item cascaded away, but the part references it
    # (NO ACTION): the item is revived and kept, so its own missing owner q is revived too.
    assert {owner.id for owner in on.select(Owner)} == {"o", "q", "root"}
    assert on.get(Crate, "c") is not None and on.get(Badge, "b").owner == "root"
    assert on.get(Item, "i") == Item(id="i", owner="q") and on.get(Part, "p") is not None
    assert on.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    full_exchange([off, on])
    assert all_rows(off) == all_rows(on)


def test_rows_chained_to_a_parent_never_seen_go_with_it():
    off, on = extra_replica(False), extra_replica(True)
    off.insert(Item(id="i", owner="ghost"))
    off.insert(Part(id="p", item="i"))  # references the item, which references nothing that exists
    on.apply_changes(off.changes_since())
    assert on.count(Item) == on.count(Part) == 0
    full_exchange([off, on])
    assert all_rows(off) == all_rows(on)


def all_rows(db: Database) -> dict[str, list]:
    return {model.__name__: db.select(model, order_by="id") for model in (Owner, Item, Crate, Badge, Part)}


def test_violations_involving_an_unsynced_table_are_refused_whole_and_named():
    off, on = extra_replica(False), extra_replica(True, start=1_700_000_000_500)
    on.insert(Owner(id="o"))
    off.apply_changes(on.changes_since())
    on.insert(Ledger(id="l", owner="o"))  # a local, unsynced row references the owner
    off.delete(Owner, "o")
    off.insert(Owner(id="unrelated"))
    before = dump(on)
    try:
        on.apply_changes(off.changes_since())
    except SyncError as error:
        message = str(error)
    assert "fk_ledger" in message and "('l',)" in message and "fk_owners" in message and "'o'" in message
    assert dump(on) == before and not on.conn.in_transaction
    off.insert(Slot(id="s", shelf="nowhere"))  # a synced row whose unsynced parent is missing here
    on.delete(Ledger, "l")
    before = dump(on)
    try:
        on.apply_changes(off.changes_since())
    except SyncError as error:
        message, named = str(error), (error.table, error.key)
    assert "fk_slots" in message and "('s',)" in message and "fk_shelves" in message and "'nowhere'" in message
    assert named == ("fk_slots", ("s",))  # the row, for an application to settle (create the parent)
    assert dump(on) == before


def test_a_commit_refused_by_a_deferred_foreign_key_leaves_no_transaction_open():
    db = replica(True)
    db.conn.execute("PRAGMA defer_foreign_keys = ON")
    with pytest.raises(ConstraintError, match="FOREIGN KEY"):
        with db.transaction():
            db.insert(Memo(id="m", owner="missing"))
    assert not db.conn.in_transaction and db.count(Memo) == 0
