"""The rows API: every write and read validated by the model, exact codecs, transactions, errors."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import sqlite3
import uuid
from typing import Annotated, Any, Literal, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from pydsqlite import (
    LWW,
    ConstraintError,
    Database,
    Field,
    ForeignKey,
    PrimaryKey,
    PydsqliteError,
    RowNotFoundError,
    RowValidationError,
    SchemaMismatchError,
    SyncModel,
    Unique,
    UsageError,
    col,
    sync_models,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    number: int


class Person(SyncModel, table="people"):
    id: int = Field(default=None, primary_key=True)
    name: Annotated[str, Field(max_length=40)]
    email: Annotated[str, Unique()]
    age: Optional[int] = None
    score: float = 0.0
    nickname: Optional[str] = None


class Profile(SyncModel, table="profiles"):
    id: Annotated[uuid.UUID, PrimaryKey()]
    score: Annotated[float, LWW()] = 0.0
    nickname: Annotated[Optional[str], LWW()] = None
    bio: str = ""


class Team(SyncModel, table="teams", primary_key=("org", "slug")):
    org: str
    slug: str
    title: str = ""


class Membership(SyncModel, table="memberships"):
    id: Annotated[int, PrimaryKey()]
    person_id: Annotated[int, ForeignKey("people.id", on_delete="cascade")]


@pytest.fixture
def db(memory_conn):
    sync_models(memory_conn, [Person, Team, Membership, Profile])
    return Database(memory_conn)


def test_insert_assigns_the_key_and_returns_a_validated_instance(db):
    ann = db.insert(Person(name="ann", email="a@x"))
    bob = db.insert(Person(name="bob", email="b@x", age=40))
    assert (ann.id, bob.id) == (1, 2)
    assert db.get(Person, 2) == bob
    assert db.get(Person, 99) is None
    explicit = db.insert(Person(id=10, name="cy", email="c@x"))
    assert explicit.id == 10 and db.count(Person) == 3


def test_every_write_validates_even_instances_built_without_validation(db):
    sneaky = Person.model_construct(id=None, name="x" * 50, email="s@x", score=0.0, nickname=None, age=None)
    with pytest.raises(ValidationError, match="name"):
        db.insert(sneaky)
    valid = db.insert(Person(name="ok", email="ok@x"))
    valid.age = "not a number"  # pydantic does not validate assignment by default
    with pytest.raises(ValidationError, match="age"):
        db.update(valid)
    assert db.count(Person) == 1 and db.get(Person, valid.id).age is None


def test_insert_many_validates_all_first_and_names_the_failing_index(db):
    people = [Person(name=f"p{i}", email=f"{i}@x") for i in range(5)]
    people[3] = Person.model_construct(id=None, name="p3", email=None, score=0.0, nickname=None, age=None)
    with pytest.raises(ValidationError) as raised:
        db.insert_many(people)
    assert raised.value.errors()[0]["loc"][:2] == (3, "email")
    assert db.count(Person) == 0
    assert db.insert_many([Person(name=f"p{i}", email=f"{i}@x") for i in range(5)]) == 5
    assert db.insert_many([]) == 0
    assert [p.name for p in db.select(Person, order_by="id")] == ["p0", "p1", "p2", "p3", "p4"]


def test_a_constraint_violation_in_a_batch_rolls_the_batch_back(db):
    db.insert(Person(name="a", email="dup@x"))
    with pytest.raises(ConstraintError, match=r"table 'people' violates UNIQUE people\.email") as raised:
        db.insert_many([Person(name="b", email="new@x"), Person(name="c", email="dup@x")])
    assert raised.value.table == "people" and raised.value.constraint == "UNIQUE people.email"
    assert db.count(Person) == 1


def test_foreign_key_and_update_violations_become_constraint_errors(db):
    db.conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(ConstraintError, match="FOREIGN KEY") as raised:
        db.insert(Membership(id=1, person_id=42))
    assert raised.value.table == "memberships"
    a = db.insert(Person(name="a", email="a@x"))
    db.insert(Person(name="b", email="b@x"))
    with pytest.raises(ConstraintError, match=r"UNIQUE people\.email"):
        db.update(Person, a.id, email="b@x")
    assert db.get(Person, a.id).email == "a@x" and not db.conn.in_transaction


def test_get_select_count_with_composite_keys_where_params_and_paging(db):
    db.insert_many([Team(org="acme", slug=s, title=s.upper()) for s in ("a", "b", "c")] + [Team(org="init", slug="a")])
    assert db.get(Team, ("acme", "b")).title == "B"
    assert db.get(Team, ("nope", "b")) is None
    with pytest.raises(TypeError, match="2-column key"):
        db.get(Team, "acme")
    assert [t.slug for t in db.select(Team, "org = ?", ("acme",), order_by="-slug")] == ["c", "b", "a"]
    assert [t.slug for t in db.select(Team, order_by=["org", "slug desc"], limit=2, offset=1)] == ["b", "a"]
    assert db.count(Team, (col("org") == "acme") & ~(col("slug") == "a")) == 2
    assert db.count(Team, col("slug").is_in(["a", "c"]) | (col("title") == "B")) == 4
    assert db.select(Team, offset=3, order_by="org") == [Team(org="init", slug="a")]
    with pytest.raises(SchemaMismatchError, match="order_by names 'title; DROP TABLE teams', which is not a field of Team"):
        db.select(Team, order_by="title; DROP TABLE teams")


def test_params_given_by_name_bind_by_name_and_are_encoded_like_positional_ones(db):
    db.insert_many([Person(name=f"p{i}", email=f"{i}@x", age=i) for i in range(6)])
    kinds = [uuid.UUID(int=n) for n in range(3)]
    db.insert_many([Profile(id=kind, bio=f"bio {n}") for n, kind in enumerate(kinds)])
    assert [p.name for p in db.select(Person, "name = :name", {"name": "p2"})] == ["p2"]
    assert db.count(Person, "age >= :low AND age < :high OR name = @name", {"high": 4, "low": 2, "name": "p5"}) == 3
    assert [p.age for p in db.iter_select(Person, "age = $age OR age = :age + 1", {"age": 1}, order_by="age")] == [1, 2]
    assert [p.bio for p in db.select(Profile, "id = :id", {"id": kinds[1]})] == ["bio 1"]  # a UUID, stored as text
    assert db.select(Person, "name = :name", {"name": "p1"}, order_by="id", limit=1, offset=0)[0].age == 1
    assert db.select(Person, "name = ':name'", {}) == []  # inside a string it is no placeholder
    assert db.count(Person, col("age") > 3, {}) == 2


def test_conditions_on_a_nullable_column_follow_sql_and_leave_null_rows_out_unless_asked(db):
    db.insert_many([Person(name="a", email="a@x", age=1), Person(name="b", email="b@x", age=2), Person(name="c", email="c@x")])
    names = lambda condition: sorted(p.name for p in db.select(Person, condition))  # noqa: E731
    assert names(col("age") != 1) == ["b"]
    assert names(~(col("age") == 1)) == ["b"]
    assert names((col("age") != 1) | (col("age") == None)) == ["b", "c"]  # noqa: E711
    assert names(col("age") != None) == ["a", "b"]  # noqa: E711


def test_a_column_compares_with_another_column_of_the_row(db):
    db.insert_many([Person(name="a", email="a@x", age=3, score=3.0), Person(name="b", email="b@x", age=2, score=5.0), Person(name="c", email="c@x")])
    names = lambda condition: sorted(p.name for p in db.select(Person, condition))  # noqa: E731
    assert names(col("age") == col("score")) == ["a"]
    assert names(col("age") < col("score")) == ["b"]
    assert names((col("age") != col("score")) & (col("age") >= 2)) == ["b"]
    with pytest.raises(UsageError, match=r"is_in\(\) takes values, not columns"):
        col("age").is_in([col("score")])


def test_iter_select_streams(db):
    db.insert_many([Person(name=f"p{i}", email=f"{i}@x") for i in range(100)])
    stream = db.iter_select(Person, where=col("id") > 90, order_by="id")
    assert next(stream).id == 91
    assert [p.id for p in stream] == list(range(92, 101))


def test_a_migration_that_drops_a_table_or_index_while_a_stream_reads_is_refused_and_the_stream_goes_on(tmp_path):
    """SQLite drops no table or index while a statement of the same connection is reading ("database
    table is locked"): a rebuild (of the streamed table or any other) failed halfway, and its rollback
    ended the stream too. Such a migration is refused before it changes anything; one that only
    creates and adds runs."""

    class PersonV2(SyncModel, table="people"):
        id: int = Field(default=None, primary_key=True)
        name: Annotated[str, Field(max_length=40)]
        email: Annotated[str, Unique()]
        age: Optional[int] = None
        score: float = 0.0
        nickname: Annotated[Optional[str], Field(max_length=30)] = None  # a CHECK on a column: a rebuild

    class Note(SyncModel, table="notes"):
        id: int = Field(default=None, primary_key=True)
        text: str

    class TeamV2(SyncModel, table="teams", primary_key=("org", "slug")):  # another table rebuilt
        org: str
        slug: str
        title: Annotated[str, Field(max_length=80)] = ""

    path = tmp_path / "people.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Person, Team, Membership, Profile])
    db = Database(conn)
    db.insert_many([Person(name=f"p{i}", email=f"{i}@x") for i in range(1200)])
    before = path.read_bytes()
    seen = []
    for person in db.iter_select(Person, order_by="id"):
        seen.append(person.id)
        if person.id == 700:
            for models in ([PersonV2, Team, Membership, Profile], [Person, TeamV2, Membership, Profile]):
                with pytest.raises(UsageError, match=r"an iter_select of this connection is still reading table 'people'"):
                    sync_models(conn, models)
                assert path.read_bytes() == before
            sync_models(conn, [Person, Team, Membership, Profile, Note])  # creates only: runs
    assert seen == list(range(1, 1201))
    stream = db.iter_select(Person)
    next(stream)
    with pytest.raises(UsageError, match="left without closing the iterator"):
        sync_models(conn, [PersonV2, Team, Membership, Profile, Note])
    stream.close()
    sync_models(conn, [PersonV2, TeamV2, Membership, Profile, Note])
    assert db.count(PersonV2) == 1200


def test_update_and_delete_by_instance_or_key(db):
    ann = db.insert(Person(name="ann", email="a@x"))
    updated = db.update(Person, ann.id, age=31, name="Ann")
    assert (updated.age, updated.name) == (31, "Ann") and db.get(Person, ann.id) == updated
    with pytest.raises(ValidationError):
        db.update(Person, ann.id, age="old")
    with pytest.raises(TypeError, match="no field"):
        db.update(Person, ann.id, nope=1)
    with pytest.raises(RowNotFoundError, match="no row with key 99 in table 'people'"):
        db.update(Person, 99, age=1)
    with pytest.raises(RowNotFoundError):
        db.update(Person(id=77, name="x", email="x@x"))
    assert db.upsert(Person(id=ann.id, name="ANN", email="a@x")).name == "ANN"
    assert db.upsert(Person(id=5, name="new", email="n@x")).id == 5
    assert db.count(Person) == 2
    assert db.delete(db.get(Person, 5)) is True
    assert db.delete(Person, 5) is False
    assert db.delete(Person, ann.id) is True and db.count(Person) == 0


def test_lww_companions_are_stamped_on_insert_and_only_for_changed_columns(db):
    key = uuid.uuid4()
    db.insert(Profile(id=key, nickname="a"))
    stamps = "SELECT score__hlc, nickname__hlc, _pydsqlite_version FROM profiles"
    first = db.conn.execute(stamps).fetchone()
    assert first[0] == first[1] == first[2] and first[0].endswith(db.clock.node_id)
    db.update(Profile, key, score=1.5)
    second = db.conn.execute(stamps).fetchone()
    assert second[0] > first[0] and second[1:] == first[1:]
    db.update(Profile, key, bio="hello")
    third = db.conn.execute(stamps).fetchone()
    assert third[:2] == second[:2] and third[2] > second[2]
    assert "score__hlc" not in db.get(Profile, key).model_dump()
    assert set(Profile.model_json_schema()["properties"]) == {"id", "score", "nickname", "bio"}


OTHER_SPELLINGS = [  # (field type, what another program stored, the value it reads as)
    (dt.datetime, "2024-01-02 10:00:00", dt.datetime(2024, 1, 2, 10)),  # SQLite's datetime()
    (dt.datetime, "2024-01-02T10:00:00Z", dt.datetime(2024, 1, 2, 10, tzinfo=dt.timezone.utc)),
    (uuid.UUID, "A0B1C2D3-0000-4000-8000-00000000000A", uuid.UUID("a0b1c2d3-0000-4000-8000-00000000000a")),
    (dt.time, "10:00", dt.time(10)),
]


@pytest.mark.parametrize("synced", [False, True], ids=["plain", "synced"])
@pytest.mark.parametrize(("kind", "stored", "value"), OTHER_SPELLINGS, ids=[repr(s) for _, s, _ in OTHER_SPELLINGS])
def test_an_update_leaves_the_columns_it_does_not_change_as_stored(tmp_path, kind, stored, value, synced):
    """A value another program stored in another spelling of the same value reads as that value; an
    update of other fields (either form) leaves it exactly as stored, so SQL that orders or compares
    those texts sees no change; on a synced table it gets no new timestamp. Writing the field itself
    stores pydsqlite's form."""
    if synced:
        class Spelled(SyncModel, table="spelled_rows"):
            id: Annotated[int, PrimaryKey()]
            name: Annotated[str, LWW()]
            other: Annotated[Optional[kind], LWW()] = None  # type: ignore[valid-type]
    else:
        class Spelled(SyncModel, table="spelled_rows"):  # type: ignore[no-redef]
            id: Annotated[int, PrimaryKey()]
            name: str
            other: Optional[kind] = None  # type: ignore[valid-type]

    conn = sqlite3.connect(tmp_path / "spelled.db")
    sync_models(conn, [Spelled])
    db = Database(conn)
    db.insert_many([Spelled(id=1, name="a"), Spelled(id=2, name="b", other=value)])
    conn.execute("UPDATE spelled_rows SET other = ? WHERE id = 1", (stored,))  # as another program writes it
    conn.commit()
    select = "SELECT name, other, typeof(other) FROM spelled_rows WHERE id = ?"
    raw = conn.execute(select, (1,)).fetchone()[1:]
    stamp = "SELECT other__hlc FROM spelled_rows WHERE id = 1"
    stamped = conn.execute(stamp).fetchone()[0] if synced else None
    assert db.get(Spelled, 1).other == value

    db.update(Spelled, 1, name="b")
    row = db.get(Spelled, 1)
    row.name = "c"
    db.update(row)
    assert conn.execute(select, (1,)).fetchone() == ("c", *raw)
    if synced:
        assert conn.execute(stamp).fetchone()[0] == stamped
    db.update(Spelled, 1, other=value)
    assert conn.execute(select, (1,)).fetchone()[1:] == conn.execute(select, (2,)).fetchone()[1:]


class City(BaseModel):
    city: str


def test_an_update_putting_right_a_row_the_model_refuses_writes_only_what_it_changes(memory_conn):
    """A synced row written by SQL with a value the model refuses, a date-time in SQLite's spelling and JSON
    with a key the model does not read: updating the refused field writes that field (and its clock) only."""

    class Task(SyncModel, table="refused_tasks"):
        id: Annotated[str, PrimaryKey()]
        kind: Annotated[Literal["a", "b"], LWW()]
        when: Annotated[dt.datetime, LWW()]
        address: Annotated[City, LWW()]

    sync_models(memory_conn, [Task])
    db = Database(memory_conn)
    db.insert(Task(id="x", kind="a", when=dt.datetime(2024, 1, 1), address=City(city="W")))
    memory_conn.execute("""UPDATE refused_tasks SET kind = 'zzz', "when" = '2024-01-02 10:00:00', address = '{"city":"W","zip":"6011"}'""")
    memory_conn.commit()
    columns = 'kind, kind__hlc, "when", when__hlc, address, address__hlc'
    before = memory_conn.execute(f"SELECT {columns} FROM refused_tasks").fetchone()
    with pytest.raises(RowValidationError):
        db.get(Task, "x")
    db.update(Task, "x", kind="b")
    after = memory_conn.execute(f"SELECT {columns} FROM refused_tasks").fetchone()
    assert after[0] == "b" and after[1] > before[1] and after[2:] == before[2:]


def test_an_update_writes_what_a_model_validator_derives_from_fields_changed_elsewhere(memory_conn):
    """A field a model validator derives (a slug from the title) is written when the derivation gives another
    value than the stored one, even if the update names neither field (another program changed the title)."""

    class Post(SyncModel, table="derived_posts"):
        id: Annotated[int, PrimaryKey()]
        title: str
        slug: str = ""
        views: int = 0

        @model_validator(mode="after")
        def derive_slug(self) -> Post:
            self.slug = self.title.lower().replace(" ", "-")
            return self

    sync_models(memory_conn, [Post])
    db = Database(memory_conn)
    db.insert(Post(id=1, title="Hello World"))
    memory_conn.execute("UPDATE derived_posts SET title = 'Bye Now'")
    memory_conn.commit()
    db.update(Post, 1, views=1)
    assert memory_conn.execute("SELECT title, slug, views FROM derived_posts").fetchone() == ("Bye Now", "bye-now", 1)
    assert db.count(Post, col("slug") == "bye-now") == 1


def test_an_update_reads_an_untouched_field_through_its_own_validators_and_the_models_string_settings(memory_conn):
    """A stored value the field's own validators (``@field_validator``, before or after) and the model's
    string settings read as the instance's value is kept with its clock (a release that starts stripping
    names does not re-stamp every row it updates, which would beat other replicas' edits); one they read
    as another value is written (a legacy 'on' that the before-validator reads as False, now True)."""

    class Member(SyncModel, table="validated_members", str_to_lower=True):
        id: Annotated[str, PrimaryKey()]
        name: Annotated[str, LWW()]
        active: Annotated[bool, LWW()] = False
        note: Annotated[str, LWW()] = ""

        @field_validator("name")
        @classmethod
        def stripped(cls, value: str) -> str:
            return value.strip()

        @field_validator("active", mode="before")
        @classmethod
        def legacy_flag(cls, value: object) -> object:
            return value == "Y" if isinstance(value, str) else value

    sync_models(memory_conn, [Member])
    db = Database(memory_conn)
    db.insert(Member(id="k", name="bob"))
    memory_conn.execute("UPDATE validated_members SET name = '  BOB ', active = 'on'")
    memory_conn.commit()
    stamps = "SELECT name, name__hlc, active FROM validated_members"
    before = memory_conn.execute(stamps).fetchone()
    db.update(Member, "k", note="called")
    assert memory_conn.execute(stamps).fetchone() == before  # '  BOB ' reads as 'bob' by the field alone
    member = db.get(Member, "k")
    assert (member.name, member.active) == ("bob", False)
    member.active = True
    db.update(member)
    assert memory_conn.execute(stamps).fetchone()[:3] == ("  BOB ", before[1], 1)


def test_a_set_in_a_json_column_is_stored_in_one_order_so_an_update_of_another_field_keeps_it(memory_conn):
    """A set's iteration order depends on the process's string hashing: stored in the order of its items'
    JSON text, the same set is the same text in every process, and an update of another field leaves a
    set stored in any order as it is, clock included."""

    class Doc(SyncModel, table="set_docs"):
        id: Annotated[str, PrimaryKey()]
        title: Annotated[str, LWW()] = ""
        labels: Annotated[dict[str, frozenset[str]], LWW()] = {}
        tags: Annotated[list[set[int]], LWW()] = []

    sync_models(memory_conn, [Doc])
    db = Database(memory_conn)
    db.insert(Doc(id="d", labels={"k": frozenset({"pear", "apple", "fig"})}, tags=[{3, 1, 2}]))
    assert memory_conn.execute("SELECT labels, tags FROM set_docs").fetchone() == ('{"k":["apple","fig","pear"]}', "[[1,2,3]]")
    memory_conn.execute("""UPDATE set_docs SET labels = '{"k":["pear","fig","apple"]}'""")
    memory_conn.commit()
    before = memory_conn.execute("SELECT labels, labels__hlc FROM set_docs").fetchone()
    db.update(Doc, "d", title="renamed")
    assert memory_conn.execute("SELECT labels, labels__hlc FROM set_docs").fetchone() == before


def test_pydantics_aware_naive_and_past_date_types_are_stored_as_dates_and_future_ones_are_refused(memory_conn):
    """``AwareDatetime`` (the way to refuse naive values), ``NaiveDatetime``, ``PastDatetime`` and ``PastDate``
    are date-times and dates, stored and read back as those; ``FutureDatetime`` / ``FutureDate`` are refused
    when the model compiles: a row read is validated again, and its future value would be past by then."""
    from pydantic import AwareDatetime, FutureDate, FutureDatetime, NaiveDatetime, PastDate, PastDatetime

    from pydsqlite import SchemaDefinitionError

    class Stamp(SyncModel, table="pydantic_dates"):
        id: Annotated[int, PrimaryKey()]
        at: AwareDatetime
        local: Optional[NaiveDatetime] = None
        seen: Optional[PastDatetime] = None
        born: Optional[PastDate] = None

    sync_models(memory_conn, [Stamp])
    db = Database(memory_conn)
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    stamp = Stamp(id=1, at=dt.datetime(2024, 1, 2, 3, 4, tzinfo=india), local=dt.datetime(2024, 1, 1), seen=dt.datetime(2020, 5, 5), born=dt.date(1990, 1, 1))
    db.insert(stamp)
    assert db.get(Stamp, 1) == stamp and db.get(Stamp, 1).at.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert memory_conn.execute("SELECT at, local, born FROM pydantic_dates").fetchone() == (
        "2024-01-02T03:04:00.000000+05:30", "2024-01-01T00:00:00.000000", "1990-01-01",
    )
    assert db.select(Stamp, col("at") == dt.datetime(2024, 1, 2, 3, 4, tzinfo=india)) == [stamp]
    assert sync_models(memory_conn, [Stamp]).is_empty
    with pytest.raises(ValidationError):
        Stamp(id=2, at=dt.datetime(2024, 1, 1))
    for future in (FutureDatetime, FutureDate):
        class Due(SyncModel, table="pydantic_due"):
            id: Annotated[int, PrimaryKey()]
            due: future  # type: ignore[valid-type]

        with pytest.raises(SchemaDefinitionError, match=f"Due.due: {future.__name__} is not supported as a column"):
            sync_models(memory_conn, [Due])


def test_ordering_by_a_json_column_is_refused_as_sql_would_order_its_text(memory_conn):
    """SQLite orders JSON text, not values ('[10]' before '[9]'): order_by and <, <=, >, >= on such a field
    raise UsageError naming model, table and field; == still compares the stored text, as documented."""

    class Scored(SyncModel, table="json_scored"):
        id: Annotated[int, PrimaryKey()]
        scores: list[int] = []

    sync_models(memory_conn, [Scored])
    db = Database(memory_conn)
    db.insert_many([Scored(id=1, scores=[10]), Scored(id=2, scores=[9])])
    for read in (lambda: db.select(Scored, order_by="scores"), lambda: db.select(Scored, col("scores") > [9])):
        with pytest.raises(UsageError, match=r"field 'scores' of .*Scored \(table 'json_scored'\) is stored as JSON text"):
            read()
    assert [row.id for row in db.select(Scored, col("scores") == [9])] == [2]


def test_the_node_id_is_created_once_and_kept_in_the_database(db_path):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Person, Team, Membership, Profile])
    first = Database(conn).clock.node_id
    conn.close()
    again = Database(db_path)
    assert again.clock.node_id == first
    again.close()


def test_transactions_commit_roll_back_and_nest_as_savepoints(db):
    with db.transaction():
        db.insert(Person(name="a", email="a@x"))
        with pytest.raises(RuntimeError):
            with db.transaction():
                db.insert(Person(name="b", email="b@x"))
                raise RuntimeError("inner fails")
        db.insert(Person(name="c", email="c@x"))
    assert [p.name for p in db.select(Person, order_by="id")] == ["a", "c"]
    with pytest.raises(ConstraintError):
        with db.transaction():
            db.insert(Person(name="d", email="d@x"))
            db.insert(Person(name="e", email="a@x"))
    assert db.count(Person) == 2 and not db.conn.in_transaction


def test_a_row_that_does_not_validate_names_table_key_and_column(db):
    db.conn.execute("INSERT INTO people (id, name, email, age) VALUES (7, 'x', 'x@x', 'seven')")
    db.conn.commit()
    with pytest.raises(RowValidationError, match=r"row 7 of table 'people' does not validate \(column age\)") as raised:
        db.get(Person, 7)
    assert raised.value.table == "people" and raised.value.key == 7 and raised.value.columns == ["age"]
    assert isinstance(raised.value.validation_error, ValidationError)
    with pytest.raises(RowValidationError):
        db.select(Person)


def test_wrong_argument_types_are_clear(db):
    with pytest.raises(TypeError, match="table model instance"):
        db.insert({"name": "x"})
    with pytest.raises(TypeError, match="expected a Team"):
        db.insert_many([Team(org="a", slug="b"), Person(name="x", email="y")])


def test_database_opens_a_path_and_values_are_never_formatted_into_sql(tmp_path):
    path = tmp_path / "x.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Person, Team, Membership, Profile])
    conn.close()
    evil = "'); DROP TABLE people; --"
    with Database(path) as db:
        db.insert(Person(name=evil, email="e@x"))
        assert db.select(Person, "name = ?", (evil,))[0].name == evil
        assert db.count(Person, col("name") == evil) == 1
    assert sqlite3.connect(path).execute("SELECT count(*) FROM people").fetchone() == (1,)


# --- codecs: write → read equality for every supported type ------------------------------------


class Everything(SyncModel, table="everything"):
    id: Annotated[int, PrimaryKey()]
    flag: bool
    number: int
    real: float
    text: str
    raw: bytes
    key: uuid.UUID
    moment: dt.datetime
    day: dt.date
    clock: dt.time
    amount: decimal.Decimal
    color: Color
    level: Level
    kind: Literal["a", "b"]
    data: dict[str, Any]
    items: list[int]
    address: Address
    maybe: Optional[dt.datetime] = None


zones = st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
everything = st.builds(
    Everything,
    id=st.integers(-(2**63), 2**63 - 1),
    flag=st.booleans(),
    number=st.integers(-(2**63), 2**63 - 1),
    real=st.floats(allow_nan=False),
    text=st.text(st.characters(blacklist_categories=("Cs",))),
    raw=st.binary(),
    key=st.uuids(),
    moment=st.datetimes(timezones=zones),
    day=st.dates(),
    clock=st.times(),
    amount=st.decimals(allow_nan=False, allow_infinity=False),
    color=st.sampled_from(Color),
    level=st.sampled_from(Level),
    kind=st.sampled_from(["a", "b"]),
    data=st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    items=st.lists(st.integers(-(2**53), 2**53), max_size=4),
    address=st.builds(Address, street=st.text(max_size=5), number=st.integers(-1000, 1000)),
    maybe=st.none() | st.datetimes(timezones=zones),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(row=everything)
def test_every_supported_type_round_trips_exactly(memory_conn, row):
    sync_models(memory_conn, [Everything])
    db = Database(memory_conn)
    memory_conn.execute("DELETE FROM everything")
    db.insert(row)
    back = db.get(Everything, row.id)
    assert back == row
    assert (back.moment.tzinfo is None) == (row.moment.tzinfo is None)
    assert back.moment.utcoffset() == row.moment.utcoffset()
    assert str(back.amount) == str(row.amount)
    stored = memory_conn.execute("SELECT flag, key, amount, color, level, typeof(raw) FROM everything").fetchone()
    assert stored == (int(row.flag), str(row.key), str(row.amount), row.color.value, int(row.level), "blob")


def test_infinities_round_trip_and_nan_is_refused(memory_conn):
    class Floats(SyncModel, table="floats"):
        id: Annotated[int, PrimaryKey()]
        value: float

    sync_models(memory_conn, [Floats])
    db = Database(memory_conn)
    db.insert_many([Floats(id=1, value=math.inf), Floats(id=2, value=-math.inf), Floats(id=3, value=-0.0)])
    assert [f.value for f in db.select(Floats, order_by="id")] == [math.inf, -math.inf, -0.0]
    with pytest.raises(ValueError, match=r"floats\.value: NaN cannot be stored"):
        db.insert(Floats(id=4, value=math.nan))
    assert db.count(Floats) == 3


def test_datetimes_with_one_offset_sort_as_text(memory_conn):
    class Events(SyncModel, table="events"):
        id: Annotated[int, PrimaryKey()]
        at: dt.datetime

    sync_models(memory_conn, [Events])
    db = Database(memory_conn)
    base = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    moments = [base + dt.timedelta(microseconds=m) for m in (1, 0, 999_999, 10, 1_000_000)]
    db.insert_many([Events(id=i, at=m) for i, m in enumerate(moments)])
    assert [e.at for e in db.select(Events, order_by="at")] == sorted(moments)
    assert db.count(Events, col("at") > base) == 4


def test_fields_with_aliases_round_trip_through_every_method(memory_conn):
    from pydantic import Field as PydanticField

    class Account(SyncModel, table="accounts"):
        id: Annotated[int, PrimaryKey()]
        display_name: str = PydanticField(alias="displayName")
        login_count: int = PydanticField(default=0, alias="loginCount")

    sync_models(memory_conn, [Account])
    db = Database(memory_conn)
    db.insert(Account(id=1, displayName="Ann"))
    db.insert_many([Account(id=2, displayName="Bob"), {"id": 3, "displayName": "Cy", "loginCount": 4}], Account)
    assert db.get(Account, 3).login_count == 4
    assert db.update(Account, 1, login_count=2).login_count == 2
    assert [a.display_name for a in db.select(Account, order_by="id")] == ["Ann", "Bob", "Cy"]
    assert memory_conn.execute("SELECT display_name FROM accounts WHERE id = 1").fetchone() == ("Ann",)
    memory_conn.execute("UPDATE accounts SET login_count = 'many' WHERE id = 2")
    with pytest.raises(RowValidationError, match=r"row 2 of table 'accounts' does not validate \(column login_count\)"):
        db.get(Account, 2)


@pytest.mark.parametrize("config", [{"populate_by_name": True}, {"validate_by_name": True, "validate_by_alias": True}])
def test_a_field_whose_alias_is_another_fields_name_keeps_its_own_value_everywhere(tmp_path, config):
    """An API that renamed things: column ``name`` is served as "title", column ``title`` as
    "heading", and the model also takes field names. Each column keeps its own value through every
    write and read, also for rows written by SQL, and through a replica's merge."""
    from pydantic import Field as PydanticField

    class Article(SyncModel, table="alias_swap_articles"):
        model_config = ConfigDict(**config)
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, LWW()] = PydanticField(alias="title")
        title: Annotated[str, LWW()] = PydanticField(alias="heading")

    conn = sqlite3.connect(tmp_path / "articles.db")
    sync_models(conn, [Article])
    db = Database(conn)
    db.insert(Article(id=1, title="slug-1", heading="Heading 1"))
    db.insert_many([Article(id=2, title="slug-2", heading="Heading 2"), {"id": 3, "title": "slug-3", "heading": "Heading 3"}], Article)
    db.upsert(Article(id=4, title="slug-4", heading="Heading 4"))
    conn.execute("INSERT INTO alias_swap_articles (id, name, title) VALUES (5, 'slug-5', 'Heading 5')")
    assert conn.execute("SELECT id, name, title FROM alias_swap_articles WHERE id < 5 ORDER BY id").fetchall() == [
        (n, f"slug-{n}", f"Heading {n}") for n in range(1, 5)
    ]
    assert [(a.id, a.name, a.title) for a in db.select(Article, order_by="id")] == [(n, f"slug-{n}", f"Heading {n}") for n in range(1, 6)]
    assert db.get(Article, 5).name == "slug-5"
    assert (db.update(Article, 2, title="Heading 2b").name, db.get(Article, 2).title) == ("slug-2", "Heading 2b")
    conn.commit()
    replica = Database(sqlite3.connect(tmp_path / "replica.db"))
    sync_models(replica.conn, [Article])
    replica.apply_changes(db.changes_since(), [Article])
    assert [(a.name, a.title) for a in replica.select(Article, order_by="id")] == [(a.name, a.title) for a in db.select(Article, order_by="id")]


class StrictEvent(SyncModel, table="strict_events"):
    model_config = ConfigDict(strict=True)

    id: Annotated[uuid.UUID, PrimaryKey()]
    at: dt.datetime
    done: bool
    tags: list[str]
    title: Annotated[str, LWW()] = ""
    score: Annotated[float, Field(strict=True)] = 0.0


def test_a_pydantic_strict_model_reads_its_own_rows_and_still_refuses_loose_input(tmp_path):
    """Strict mode is for what the application writes; SQLite's stored forms (a datetime as text, a
    bool as 0 or 1, a UUID as text) are read back in lax mode, also when a replica merges them."""
    conn = sqlite3.connect(tmp_path / "strict.db")
    sync_models(conn, [StrictEvent])
    db = Database(conn)
    event = StrictEvent(id=uuid.UUID(int=1), at=dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc), done=True, tags=["a"], score=1.5)
    db.insert(event)
    db.insert_many([StrictEvent(id=uuid.UUID(int=n), at=event.at, done=False, tags=[], title=f"e{n}") for n in range(2, 5)])
    assert db.get(StrictEvent, uuid.UUID(int=1)) == event
    assert len(db.select(StrictEvent)) == 4 and sum(1 for _ in db.iter_select(StrictEvent)) == 4
    assert db.update(StrictEvent, uuid.UUID(int=2), title="changed").title == "changed"
    with pytest.raises(ValidationError):
        db.insert_many([{"id": uuid.UUID(int=9), "at": "2024-05-01T12:00:00+00:00", "done": True, "tags": []}], StrictEvent)
    with pytest.raises(ValidationError):
        db.update(StrictEvent, uuid.UUID(int=2), done=1)
    replica = Database(sqlite3.connect(tmp_path / "replica.db"))
    sync_models(replica.conn, [StrictEvent])
    assert replica.apply_changes(db.changes_since(models=[StrictEvent]), [StrictEvent]) == 4
    assert replica.select(StrictEvent, order_by="id") == db.select(StrictEvent, order_by="id")


@pytest.mark.parametrize("enabled", [True, False])
def test_bulk_calls_leave_the_garbage_collector_as_they_found_it_even_when_they_fail(db, enabled):
    """insert_many and select pause the collector while they build many objects: an
    application that turned it off keeps it off, one that runs it gets it back, error or not."""
    import gc

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        db.insert_many([{"name": "ann", "email": "a@x"}], Person)
        assert len(db.select(Person)) == 1
        assert gc.isenabled() is enabled
        with pytest.raises(ValidationError):
            db.insert_many([{"name": "bob", "email": "b@x"}, {"name": "x" * 41, "email": "c@x"}], Person)
        assert gc.isenabled() is enabled
        with pytest.raises(SchemaMismatchError):
            db.select(Person, where="no_such_column = 1")
        assert gc.isenabled() is enabled
        assert [p.name for p in db.select(Person)] == ["ann"]
    finally:
        gc.enable() if was else gc.disable()


def test_a_table_whose_only_column_is_an_assigned_key_takes_every_write(tmp_path):
    """A ticket or sequence table: nothing to give but the row itself (DEFAULT VALUES)."""

    class Ticket(SyncModel, table="only_key_tickets"):
        id: Annotated[int, PrimaryKey()] = None

    conn = sqlite3.connect(tmp_path / "tickets.db")
    sync_models(conn, [Ticket])
    db = Database(conn)
    assert db.insert(Ticket()).id == 1
    assert db.insert_many([Ticket(), Ticket(), {}], Ticket) == 3
    assert db.upsert(Ticket()).id == 5
    assert db.upsert(Ticket(id=2)).id == 2 and db.insert(Ticket(id=9)).id == 9
    assert [t.id for t in db.select(Ticket, order_by="id")] == [1, 2, 3, 4, 5, 9]
    assert db.delete(Ticket, 9) and db.get(Ticket, 9) is None


@pytest.mark.parametrize("inside", ["your transaction", "a db.transaction() block", "nothing"])
def test_a_write_whose_trigger_rolls_back_the_whole_transaction_says_so(tmp_path, inside):
    """A trigger's RAISE(ROLLBACK) ends the transaction the write joined, not just the write: the
    error says the writes pending before it are gone too (the caller must not carry on and commit
    half a batch); alone, the write is just rolled back."""

    class Entry(SyncModel, table="raise_rollback_entries"):
        id: Annotated[int, PrimaryKey()] = None
        name: str

    conn = sqlite3.connect(tmp_path / "entries.db")
    sync_models(conn, [Entry])
    conn.execute(
        "CREATE TRIGGER no_banned BEFORE INSERT ON raise_rollback_entries WHEN NEW.name = 'banned' "
        "BEGIN SELECT RAISE(ROLLBACK, 'banned name'); END"
    )
    conn.commit()
    db = Database(conn)
    whole = "SQLite rolled back the whole transaction it was part of, so the writes pending before it"
    if inside == "nothing":
        with pytest.raises(ConstraintError) as raised:
            db.insert(Entry(name="banned"))
        assert whole not in str(raised.value) and "rolled back (banned name)" in str(raised.value)
        return
    with pytest.raises(PydsqliteError) as raised:
        if inside == "your transaction":
            conn.execute("INSERT INTO raise_rollback_entries (name) VALUES ('pending')")
            db.insert(Entry(name="banned"))
        else:
            with db.transaction():
                db.insert(Entry(name="pending"))
                db.insert(Entry(name="banned"))
    assert isinstance(raised.value, ConstraintError) and whole in str(raised.value)  # what a refused write raises, in a block too
    conn.commit()
    assert conn.execute("SELECT count(*) FROM raise_rollback_entries").fetchone() == (0,)


@pytest.mark.parametrize("ignored_by", ["a trigger's RAISE(IGNORE)", "ON CONFLICT IGNORE"])
def test_an_insert_the_database_ignores_raises_instead_of_handing_out_another_rows_key(tmp_path, ignored_by):
    """The ignored row does not exist: insert() returning it with the connection's previous rowid
    (another row's key) let the next update(obj) overwrite that other row."""

    class Tagged(SyncModel, table="ignored_inserts"):
        id: Annotated[int, PrimaryKey()] = None
        name: str

    conn = sqlite3.connect(tmp_path / "ignored.db")
    if ignored_by == "ON CONFLICT IGNORE":  # a hand-made table (a sync would rebuild it without the clause)
        conn.execute("CREATE TABLE ignored_inserts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE ON CONFLICT IGNORE)")
    else:
        sync_models(conn, [Tagged])
        conn.execute("CREATE TRIGGER skip BEFORE INSERT ON ignored_inserts WHEN NEW.name = 'spam' BEGIN SELECT RAISE(IGNORE); END")
    conn.commit()
    db = Database(conn)
    ann = db.insert(Tagged(name="ann"))
    name = "spam" if ignored_by != "ON CONFLICT IGNORE" else "ann"
    with pytest.raises(ConstraintError, match="was ignored by the database"):
        db.insert(Tagged(name=name))
    assert db.select(Tagged) == [ann]


def test_insert_many_counts_only_the_rows_written_and_refuses_ignored_rows_of_a_synced_table(tmp_path):
    """A trigger's RAISE(IGNORE) skips a row: insert_many says how many were written; on a synced
    table an ignored row would have ended its key's deletion for the replicas, so nothing is written."""

    class Plain(SyncModel, table="ignored_many_plain"):
        id: Annotated[int, PrimaryKey()]
        name: str

    class Shared(SyncModel, table="ignored_many_shared"):
        id: Annotated[int, PrimaryKey()]
        name: Annotated[str, LWW()]

    conn = sqlite3.connect(tmp_path / "many.db")
    sync_models(conn, [Plain, Shared])
    for table in ("ignored_many_plain", "ignored_many_shared"):
        conn.execute(f"CREATE TRIGGER skip_{table} BEFORE INSERT ON {table} WHEN NEW.name = 'spam' BEGIN SELECT RAISE(IGNORE); END")
    conn.commit()
    db = Database(conn)
    assert db.insert_many([Plain(id=1, name="a"), Plain(id=2, name="spam"), Plain(id=3, name="c")]) == 2
    assert db.insert_many([Plain(id=4, name="spam")]) == 0

    class Ticket(SyncModel, table="ignored_many_tickets"):  # a key SQLite assigns and nothing else: DEFAULT VALUES
        id: Annotated[int, PrimaryKey()] = None

    sync_models(conn, [Plain, Shared, Ticket])
    conn.execute("CREATE TRIGGER one_ticket BEFORE INSERT ON ignored_many_tickets "
                 "WHEN EXISTS (SELECT 1 FROM ignored_many_tickets) BEGIN SELECT RAISE(IGNORE); END")
    conn.commit()
    assert db.insert_many([Ticket(), Ticket(), Ticket()]) == 1
    assert conn.execute("SELECT count(*) FROM ignored_many_tickets").fetchone() == (1,)
    db.insert(Shared(id=1, name="one"))
    db.delete(Shared, 1)
    deleted = db.changes_since()
    with pytest.raises(ConstraintError, match=r"1 of 2 rows to table 'ignored_many_shared' were ignored by the database"):
        db.insert_many([Shared(id=1, name="spam"), Shared(id=2, name="two")])
    assert db.select(Shared) == [] and db.changes_since(deleted.cursor).changes == ()
    replica = Database(sqlite3.connect(tmp_path / "replica.db"))
    sync_models(replica.conn, [Shared])
    replica.apply_changes(db.changes_since(), [Shared])
    assert replica.select(Shared) == []
