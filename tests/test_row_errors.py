"""Wrong arguments, values SQLite cannot store and a database behind its models: precise errors, nothing written."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import sqlite3
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict, create_model

from pydsqlite import (
    LWW,
    ChangeSet,
    Condition,
    ConstraintError,
    Database,
    Field,
    ForeignKey,
    PrimaryKey,
    PydsqliteError,
    RowValidationError,
    SchemaDefinitionError,
    SchemaMismatchError,
    SyncModel,
    Unique,
    UnstorableValueError,
    UsageError,
    col,
    model_migration_plan,
    sync_models,
)
from pydsqlite.schema.compile import compile_models


class Account(SyncModel, table="accounts"):
    id: Annotated[int, PrimaryKey()]
    name: str
    balance: int = 0
    tags: list[str] = []
    blobs: list[bytes] = []


class Note(SyncModel, table="notes"):
    id: Annotated[int, PrimaryKey()]
    body: Annotated[str, LWW()] = ""


class Log(SyncModel, table="logs"):  # no primary key
    line: str


class Plain(BaseModel):
    id: int


def file_state(conn: sqlite3.Connection) -> list[tuple]:
    """The whole schema and every row of every table."""
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    return schema + [(name, sorted(conn.execute(f"SELECT * FROM `{name}`").fetchall(), key=repr)) for name in tables]


@pytest.fixture
def db(conn):
    sync_models(conn, [Account, Note, Log])
    database = Database(conn)
    database.insert_many([Account(id=1, name="ann"), Account(id=2, name="bob")])
    database.insert(Note(id=1, body="n"))
    return database


# --- a database behind its models ---------------------------------------------------------


class AccountAhead(SyncModel, table="accounts"):
    """The next version of Account, not synced yet: one more column."""

    id: Annotated[int, PrimaryKey()]
    name: str
    balance: int = 0
    tags: list[str] = []
    blobs: list[bytes] = []
    email: Optional[str] = None


class NoteAhead(SyncModel, table="notes"):
    """Notes with a second LWW column (and so a second hidden companion) not synced yet."""

    id: Annotated[int, PrimaryKey()]
    body: Annotated[str, LWW()] = ""
    title: Annotated[str, LWW()] = ""


class Missing(SyncModel, table="missing"):
    id: Annotated[int, PrimaryKey()]
    name: str = ""


def calls(model: type[SyncModel], row: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": lambda db: db.get(model, 1),
        "select": lambda db: db.select(model),
        "iter_select": lambda db: list(db.iter_select(model)),
        "count": lambda db: db.count(model),
        "insert": lambda db: db.insert(model(**{**row, "id": 9})),
        "insert_many": lambda db: db.insert_many([model(**{**row, "id": 8}), model(**{**row, "id": 9})]),
        "update_by_key": lambda db: db.update(model, 1, **{k: v for k, v in row.items() if k != "id"}),
        "update_instance": lambda db: db.update(model(**row)),
        "upsert": lambda db: db.upsert(model(**row)),
        "delete_by_key": lambda db: db.delete(model, 1),
        "delete_instance": lambda db: db.delete(model(**row)),
    }


class MemoPlain(SyncModel, table="memos"):
    id: Annotated[int, PrimaryKey()]
    body: str = ""


class MemoSynced(SyncModel, table="memos"):
    """The same columns, now synced: the hidden companion and sync columns are missing."""

    id: Annotated[int, PrimaryKey()]
    body: Annotated[str, LWW()] = ""


CASES = [
    # model, a row of it, the table and column the error names, calls that do not use the column
    (AccountAhead, {"id": 1, "name": "x"}, "accounts", "email", {"count", "delete_by_key", "delete_instance"}),
    (NoteAhead, {"id": 1, "body": "x"}, "notes", "title", {"count"}),
    (MemoSynced, {"id": 1, "body": "x"}, "memos", "body__hlc", {"count", "get", "select", "iter_select"}),
    (Missing, {"id": 1}, "missing", None, set()),
]


@pytest.mark.parametrize(
    ("model", "row", "table", "column", "call"),
    [
        (model, row, table, column, name)
        for model, row, table, column, unaffected in CASES
        for name in calls(model, row)
        if name not in unaffected
    ],
    ids=lambda value: value if isinstance(value, str) else getattr(value, "__name__", None),
)
def test_a_model_ahead_of_its_table_gets_an_error_naming_table_column_and_sync_models(db, model, row, table, column, call):
    sync_models(db.conn, [Account, Note, Log, MemoPlain])
    db.insert(MemoPlain(id=1, body="m"))
    before = file_state(db.conn)
    with pytest.raises(SchemaMismatchError) as raised:
        calls(model, row)[call](db)
    error = raised.value
    assert (error.table, error.column) == (table, column)
    assert "sync_models" in str(error) and repr(table) in str(error)
    if column:
        assert f"has no column {column!r}, which {model.__name__} needs" in str(error)
    else:
        assert f"table {table!r} of {model.__name__} does not exist" in str(error)
    assert file_state(db.conn) == before and not db.conn.in_transaction


@pytest.mark.parametrize(("model", "row", "table", "column", "unaffected"), CASES[:3], ids=["column", "lww", "companion"])
def test_calls_that_do_not_use_the_missing_column_still_work(db, model, row, table, column, unaffected):
    sync_models(db.conn, [Account, Note, Log, MemoPlain])
    db.insert(MemoPlain(id=1, body="m"))
    for name in sorted(unaffected):
        calls(model, row)[name](db)


def test_misspelled_columns_in_conditions_sql_text_and_order_by_name_the_column(db):
    before = file_state(db.conn)
    for call, column in (
        (lambda: db.select(Account, col("nmae") == "ann"), "nmae"),
        (lambda: db.count(Account, (col("id") > 0) & (col("balanse") < 5)), "balanse"),
        (lambda: list(db.iter_select(Account, "blance > ?", (1,))), "blance"),
        (lambda: db.select(Account, order_by="-nmae"), "nmae"),
        (lambda: db.select(Account, order_by=["id", "naem desc"]), "naem"),
    ):
        with pytest.raises(SchemaMismatchError, match=rf"names '{column}', which is not a field of Account \(fields: id, name") as raised:
            call()
        assert (raised.value.table, raised.value.column) == ("accounts", column)
    with pytest.raises(SchemaMismatchError, match="no table 'nowhere'"):
        db.select(Account, "id IN (SELECT id FROM nowhere)")
    assert file_state(db.conn) == before


READS = {
    "select": lambda db, where, params=(): db.select(Account, where, params),
    "iter_select": lambda db, where, params=(): list(db.iter_select(Account, where, params)),
    "count": lambda db, where, params=(): db.count(Account, where, params),
    "select with order and limit": lambda db, where, params=(): db.select(Account, where, params, order_by="-id", limit=5, offset=0),
}

# Double-quoted names that are no column where they stand: SQLite would read each as a string.
DOUBLE_QUOTED_STRINGS = {
    "misspelled column": ('"nmae" = ?', ("nmae",), "nmae"),
    "misspelled, compared with a literal": ("\"nmae\" = 'nmae'", (), "nmae"),
    "intended string": ('name = "ann"', (), "ann"),
    "in a subquery of the same table": ('id IN (SELECT "idd" FROM accounts)', (), "idd"),
    "a column of another table, out of scope": ('id IN (SELECT "body" FROM accounts)', (), "body"),
    "among existing quoted names": ('"name" = ? AND "balance" >= 0 AND "blance" IS NOT NULL', ("ann",), "blance"),
    "inside a function call": ('lower("Name2") = ?', ("ann",), "Name2"),
}


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("case", sorted(DOUBLE_QUOTED_STRINGS))
def test_double_quoted_names_that_are_no_column_are_refused_not_read_as_strings(db, read, case):
    where, params, name = DOUBLE_QUOTED_STRINGS[case]
    before = file_state(db.conn)
    with pytest.raises(SchemaMismatchError, match=rf'names "{name}" in double quotes, which is no column here .*single quotes') as raised:
        READS[read](db, where, params)
    assert (raised.value.table, raised.value.column) == ("accounts", name)
    assert file_state(db.conn) == before


@pytest.mark.parametrize("read", sorted(READS))
def test_double_quoted_names_of_real_columns_and_quotes_inside_strings_still_work(db, read):
    for where, params, expected in (
        ('"name" = ?', ("ann",), 1),
        ('"accounts"."name" = ? OR "id" = 2', ("ann",), 2),
        ('id IN (SELECT "id" FROM "notes" WHERE "body" = \'n\')', (), 1),
        ("name <> 'say \"hi\"'", (), 2),
        ('"NAME" = \'bob\'', (), 1),
    ):
        result = READS[read](db, where, params)
        assert (result if isinstance(result, int) else len(result)) == expected, where


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("value", [2**64, "\udc80"])
def test_a_parameter_sqlite_cannot_bind_is_named_also_beside_double_quoted_names(db, read, value):
    with pytest.raises(UnstorableValueError, match="a query parameter of table 'accounts'"):
        READS[read](db, '"name" = ?', (value,))


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize(
    ("where", "params", "message"),
    [
        ("name = ? AND id = ?", ("x",), "it has 2 placeholders, which params= must match one for one"),
        ("name = ?", ("x", 1), "it has 1 placeholder, which params= must match one for one"),
        ("name = ?", (), "it has 1 placeholder, which params= must match one for one"),
        ("1; DROP TABLE accounts", (), "it holds more than one statement"),
        ("id = 1; DELETE FROM accounts", (), "it holds more than one statement"),
    ],
)
def test_where_text_that_is_not_one_condition_with_its_params_is_a_usage_error(db, read, where, params, message):
    before = file_state(db.conn)
    with pytest.raises(UsageError, match=rf"Account \(table 'accounts'\): where=.* cannot run: {message}"):
        READS[read](db, where, params)
    assert file_state(db.conn) == before


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize(
    ("where", "params", "message"),
    [
        ("name = :name", {"nmae": "ann"}, "has the placeholder ':name', which params= does not name"),
        ("name = :name", {"name": "ann", "id": 1}, "params= names 'id', which where=.* has no placeholder for"),
        ("name = :name AND id = ?", {"name": "ann"}, "mixes '\\?' with params= given by name"),
        ("name = ?1", {"1": "ann"}, "mixes '\\?1' with params= given by name"),
        ("name = ?", {"x": 0}, "mixes '\\?' with params= given by name"),
        ("name = ?", {"ann"}, "params= takes a sequence of values \\(or a mapping of names to values\\), not a set"),
        ("name = ?", frozenset({"ann"}), "not a frozenset, whose order is undefined"),
    ],
)
def test_params_that_do_not_pair_with_the_placeholders_by_name_are_refused(db, read, where, params, message):
    before = file_state(db.conn)
    with pytest.raises(UsageError, match=rf"{message}.*\(reading Account, table 'accounts'\)"):
        READS[read](db, where, params)
    with pytest.raises(UsageError, match="params= as a mapping names the placeholders of SQL text; where= is Condition"):
        READS[read](db, col("name") == "ann", {"name": "ann"})
    assert file_state(db.conn) == before


@pytest.mark.parametrize("read", sorted(READS))
def test_a_named_parameter_sqlite_cannot_bind_is_named(db, read):
    with pytest.raises(UnstorableValueError, match="a query parameter of table 'accounts'"):
        READS[read](db, "id = :id", {"id": 2**64})


@pytest.mark.parametrize("argument", ["limit", "offset"])
@pytest.mark.parametrize("value", ["1; drop table accounts", "2", -1, 1.5, True, None.__class__])
def test_limit_and_offset_take_whole_numbers(db, argument, value):
    with pytest.raises(UsageError, match=rf"{argument}= takes a whole number of rows, 0 or more, not .* \(reading Account, table 'accounts'\)"):
        db.select(Account, **{argument: value})
    assert [row.id for row in db.select(Account, order_by="id", **{argument: 1})] == ([1] if argument == "limit" else [2])


def test_the_happy_path_sends_no_extra_statement(db):
    sent: list[str] = []
    db.conn.set_trace_callback(sent.append)
    db.get(Account, 1)
    db.select(Account, col("name") == "ann", order_by="id")
    db.count(Account)
    db.select(Account, "name = ? AND id IN (SELECT id FROM accounts)", ("ann",))
    assert len(sent) == 4
    sent.clear()
    db.insert(Account(id=3, name="cy"))
    db.update(Account, 3, balance=2)
    assert [statement.split()[0] for statement in sent] == ["BEGIN", "INSERT", "COMMIT", "BEGIN", "SELECT", "UPDATE", "COMMIT"]
    db.conn.set_trace_callback(None)


# --- wrong arguments ----------------------------------------------------------------------


class ParentNotPassed(SyncModel, table="parents_not_passed"):
    id: Annotated[int, PrimaryKey()]


class ChildOfUnpassed(SyncModel, table="children_of_unpassed"):
    id: Annotated[int, PrimaryKey()]
    parent: Annotated[int, ForeignKey(ParentNotPassed)]


@pytest.mark.parametrize("entry", [sync_models, model_migration_plan], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("models", "error", "message"),
    [
        (Account, UsageError, r"models must be a list of table model classes, not the class Account; pass a list: \[Account\]"),
        (Account(id=1, name="x"), UsageError, "not an instance of Account"),
        ("accounts", UsageError, "not the string 'accounts' \\(pass the model class, not a table name\\)"),
        ([Account, "accounts"], UsageError, "expected a table model class, not the string 'accounts'"),
        ([Account, Account(id=1, name="x")], UsageError, "expected a table model class, not an instance of Account"),
        ([Account, None], UsageError, "expected a table model class, not NoneType None"),
        ([Account, Plain], SchemaDefinitionError, "Plain: is not a table model"),
        (42, UsageError, "models must be a list of table model classes, not int 42"),
        ([Account, ChildOfUnpassed], UsageError, "ChildOfUnpassed.parent: the foreign key references table 'parents_not_passed', which is neither among the models passed nor kept in the database"),
    ],
    ids=["class", "instance", "string", "string-in-list", "instance-in-list", "none-in-list", "plain-model", "int", "foreign-key"],
)
def test_wrong_model_arguments_are_refused_before_anything_is_written(db, entry, models, error, message):
    before = file_state(db.conn)
    with pytest.raises(error, match=message):
        entry(db.conn, models)
    assert file_state(db.conn) == before and not db.conn.in_transaction


def test_a_foreign_key_may_reach_a_table_already_in_the_database_but_not_one_a_sync_drops(db):
    class Payment(SyncModel, table="payments"):
        id: Annotated[int, PrimaryKey()]
        account_id: Annotated[int, ForeignKey(Account)]

    assert [operation.kind for operation in sync_models(db.conn, [Account, Note, Log, Payment]).operations] == ["create_table"]
    before = file_state(db.conn)
    with pytest.raises(UsageError, match="Payment.account_id: the foreign key references table 'accounts'"):
        sync_models(db.conn, [Note, Log, Payment], allow_destructive=True)  # would drop accounts
    assert file_state(db.conn) == before


def test_database_methods_refuse_wrong_arguments_naming_model_and_field(db):
    before = file_state(db.conn)
    refused = [
        (lambda: db.get(Log, "x"), "Log \\(table 'logs'\\) has no primary key, so get\\(\\) cannot name a row"),
        (lambda: db.update(Log, "x", line="y"), "has no primary key, so update\\(\\)"),
        (lambda: db.update(Log(line="x")), "has no primary key, so update\\(\\)"),
        (lambda: db.delete(Log, "x"), "has no primary key, so delete\\(\\)"),
        (lambda: db.delete(Log(line="x")), "has no primary key, so delete\\(\\)"),
        (lambda: db.upsert(Log(line="x")), "has no primary key, so upsert\\(\\)"),
        (lambda: db.get(Account, (1, 2)), "get\\(\\): table 'accounts' \\(Account\\) has a 1-column key \\('id',\\); got \\(1, 2\\)"),
        (lambda: db.delete(Account, ()), "delete\\(\\): table 'accounts' \\(Account\\) has a 1-column key"),
        (lambda: db.get(Account, 1.5), "get\\(\\): key 1.5 does not fit Account.id: Input should be a valid integer"),
        (lambda: db.delete(Account, "one"), "delete\\(\\): key 'one' does not fit Account.id"),
        (lambda: db.update(Account, 1, nmae="x", blance=2), "update\\(\\): Account has no field\\(s\\) 'blance', 'nmae' \\(fields: id, name"),
        (lambda: db.update(Account(id=1, name="x"), 1), "update\\(obj\\) takes the instance only"),
        (lambda: db.get("accounts", 1), "expected a table model class, not the string 'accounts'"),
        (lambda: db.select(Account(id=1, name="x")), "expected a table model class, not an instance of Account"),
        (lambda: db.count(dict), "expected a table model class, not the class dict"),
        (lambda: db.insert({"id": 5, "name": "x"}), "insert\\(\\) takes a table model instance, not dict"),
        (lambda: db.insert_many(Account(id=5, name="x")), "insert_many\\(\\) takes an iterable of rows, not Account; use insert\\(\\) for one"),
        (lambda: db.insert_many([{"id": 5, "name": "x"}]), "insert_many\\(\\) without model= takes a table model instance, not dict"),
        (lambda: db.insert_many([Account(id=5, name="x"), Note(id=5)]), "expected a Account \\(table 'accounts'\\), got Note"),
        (lambda: db.upsert(5), "upsert\\(\\) takes a table model instance, not int"),
        (lambda: db.delete("accounts"), "delete\\(\\) takes a table model instance, not str"),
        (lambda: db.select(Account, where={"id": 1}), "where= takes SQL text or a condition built with col\\(\\), not dict"),
        (lambda: db.select(Account, "name = ?", "ann"), "params= takes a sequence of values, not str"),
        (lambda: db.get(Plain, 1), "Plain: is not a table model"),
        (lambda: Database(42), "Database\\(\\) takes a sqlite3.Connection, a dqlitedbapi connection or a path, not int"),
    ]
    for call, message in refused:
        with pytest.raises(PydsqliteError, match=message) as raised:
            call()
        assert isinstance(raised.value, TypeError)  # UsageError and SchemaDefinitionError are TypeErrors too
    assert file_state(db.conn) == before and not db.conn.in_transaction


# --- values SQLite cannot store -----------------------------------------------------------

TOO_BIG = 2**63
TOO_SMALL = -(2**63) - 1
LONE_SURROGATE = "x\ud800y"
UNSTORABLE = [
    ("balance", TOO_BIG, "SQLite integers are 64-bit"),
    ("balance", TOO_SMALL, "SQLite integers are 64-bit"),
    ("balance", 2**200, "SQLite integers are 64-bit"),
    ("name", LONE_SURROGATE, "lone surrogate"),
    ("name", "\udfff", "lone surrogate"),
    ("tags", ["ok", LONE_SURROGATE], "lone surrogate"),
    ("blobs", [b"ok", b"\xff\xfe"], "invalid utf-8"),
]


def writes_of(db: Database, field: str, value: Any) -> dict[str, Any]:
    good = {"id": 1, "name": "ann"}
    return {
        "insert": lambda: db.insert(Account(**{"id": 7, "name": "x", field: value})),
        "insert_many": lambda: db.insert_many([Account(id=5, name="a"), Account(id=6, name="b"), Account(**{"id": 7, "name": "x", field: value})]),
        "insert_many_dicts": lambda: db.insert_many([{"id": 5, "name": "a"}, {"id": 7, "name": "x", field: value}], Account),
        "update_by_key": lambda: db.update(Account, 1, **{field: value}),
        "update_instance": lambda: db.update(Account(**{**good, field: value})),
        "upsert_existing": lambda: db.upsert(Account(**{**good, field: value})),
        "upsert_new": lambda: db.upsert(Account(**{"id": 7, "name": "x", field: value})),
    }


@pytest.mark.parametrize("write", list(writes_of(None, "id", 0)))  # type: ignore[arg-type]
@pytest.mark.parametrize(("field", "value", "reason"), UNSTORABLE, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(UNSTORABLE)])
def test_a_value_sqlite_cannot_store_names_table_field_and_value_and_nothing_is_written(db, write, field, value, reason):
    before = file_state(db.conn)
    with pytest.raises(UnstorableValueError, match=reason) as raised:
        writes_of(db, field, value)[write]()
    error = raised.value
    assert (error.table, error.field) == ("accounts", field) and error.value == value
    assert str(error).startswith(f"accounts.{field}: ") and "nothing was written" in str(error)
    assert isinstance(error, ValueError)
    assert file_state(db.conn) == before and not db.conn.in_transaction


def test_inside_an_open_transaction_a_refused_batch_leaves_the_earlier_work_of_that_transaction(db):
    with db.transaction():
        db.insert(Account(id=10, name="kept"))
        with pytest.raises(UnstorableValueError):
            db.insert_many([Account(id=11, name="a"), Account(id=12, name="b", balance=TOO_BIG)])
    assert [a.id for a in db.select(Account, order_by="id")] == [1, 2, 10]


def test_keys_and_query_parameters_sqlite_cannot_bind_are_named(db):
    with pytest.raises(UnstorableValueError, match=r"accounts\.id: SQLite integers are 64-bit") as raised:
        db.get(Account, TOO_BIG)
    assert raised.value.field == "id" and raised.value.value == TOO_BIG
    with pytest.raises(UnstorableValueError, match=r"accounts\.id"):
        db.delete(Account, TOO_SMALL)
    with pytest.raises(UnstorableValueError, match=r"a query parameter of table 'accounts': SQLite integers are 64-bit") as raised:
        db.count(Account, col("balance") > TOO_BIG)
    assert raised.value.field is None
    with pytest.raises(UnstorableValueError, match="lone surrogate"):
        db.select(Account, "name = ?", (LONE_SURROGATE,))


class Measure(SyncModel, table="measures"):
    id: Annotated[float, PrimaryKey()]
    value: Optional[float] = None


@pytest.mark.parametrize(
    "read",
    [
        lambda db: db.select(Measure, col("value") == math.nan),
        lambda db: db.select(Measure, col("value") != math.nan),
        lambda db: db.count(Measure, "value IS ?", (math.nan,)),
        lambda db: db.select(Measure, "value = :v", {"v": math.nan}),
        lambda db: db.count(Measure, col("value").is_in([1.0, math.nan])),
        lambda db: db.get(Measure, math.nan),
        lambda db: db.delete(Measure, math.nan),
        lambda db: db.update(Measure, math.nan, value=1.0),
    ],
    ids=["==", "!=", "IS ?", "by name", "is_in", "get", "delete", "update"],
)
def test_nan_as_a_key_or_query_parameter_is_refused_not_bound_as_null(memory_conn, read):
    """SQLite binds NaN as NULL: ``x IS ?`` would match the NULL rows and ``x = ?`` nothing, silently."""
    sync_models(memory_conn, [Measure])
    db = Database(memory_conn)
    db.insert_many([Measure(id=1.0), Measure(id=2.0, value=1.0)])
    with pytest.raises(UnstorableValueError, match="NaN") as raised:
        read(db)
    assert raised.value.table == "measures" and math.isnan(raised.value.value)
    assert db.count(Measure) == 2


def test_numbers_of_other_types_are_compared_by_value_and_other_objects_are_refused(memory_conn):
    """A number of another type (a ``Fraction``, an ``int`` or ``float`` subclass, numpy's scalars) is
    bound by its value, which the driver would bind as bytes (matching nothing) or refuse; a value no
    column stores is a ``UsageError`` naming model and table, not the driver's ProgrammingError."""
    import fractions
    import numbers
    import pathlib

    class Count:  # an integer type that is no int, as numpy's integers are
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

        __int__ = __index__

    numbers.Integral.register(Count)
    sync_models(memory_conn, [Measure])
    db = Database(memory_conn)
    db.insert_many([Measure(id=1.0, value=0.5), Measure(id=2.0, value=3.0)])
    assert [m.id for m in db.select(Measure, col("value") == fractions.Fraction(1, 2))] == [1.0]
    assert [m.id for m in db.select(Measure, "id = ?", (Count(2),))] == [2.0]
    assert [m.id for m in db.select(Measure, col("value") > Count(1), limit=Count(5))] == [2.0]
    for bad in (pathlib.Path("x"), (1,), object()):
        with pytest.raises(UsageError, match=r"Measure \(table 'measures'\): the query parameter"):
            db.select(Measure, col("value") == bad)


class Scalar:
    """What a numpy scalar offers: ``.item()`` gives the Python value, ``shape`` is (), ``dtype.kind`` says
    'M' for a datetime64 (whose ``.item()`` is an int when it holds nanoseconds)."""

    shape = ()

    def __init__(self, value: object, kind: str = "i") -> None:
        self.value, self.dtype = value, type("dtype", (), {"kind": kind})()

    def item(self) -> object:
        return self.value


def test_numpy_like_scalars_are_bound_as_the_python_values_they_hold(memory_conn):
    sync_models(memory_conn, [Measure])
    db = Database(memory_conn)
    db.insert_many([Measure(id=1.0, value=0.5), Measure(id=2.0, value=3.0)])
    assert [m.id for m in db.select(Measure, col("value") == Scalar(3.0, "f"))] == [2.0]
    assert db.count(Measure, "id = ?", (Scalar(1, "i"),)) == 1
    with pytest.raises(UnstorableValueError, match="NaN"):
        db.count(Measure, col("value") == Scalar(math.nan, "f"))
    with pytest.raises(UsageError, match="numpy cannot give as a Python datetime"):
        db.count(Measure, col("value") > Scalar(1_704_067_200_000_000_000, "M"))


@pytest.mark.parametrize("params", [{"x": 1}, {1, 2}, 5, "ab"], ids=["mapping", "set", "value", "text"])
def test_a_hand_built_condition_takes_its_values_as_a_sequence(params):
    """A mapping would bind its keys, a set in no order, a bare value or text letter by letter: refused;
    a list is taken as a tuple, so it combines with conditions built by col()."""
    with pytest.raises(UsageError, match="takes its values as a sequence in the order of its \\? placeholders"):
        Condition("a > :x", params)
    assert (Condition("a > ?", [1]) & (col("b") == 2)).params == (1, 2)


def test_is_in_with_none_matches_null_as_eq_none_does(memory_conn):
    sync_models(memory_conn, [Measure])
    db = Database(memory_conn)
    db.insert_many([Measure(id=1.0), Measure(id=2.0, value=1.0), Measure(id=3.0, value=2.0)])
    assert [m.id for m in db.select(Measure, col("value").is_in([None, 2.0]), order_by="id")] == [1.0, 3.0]
    assert [m.id for m in db.select(Measure, col("value").is_in([None]))] == [1.0]
    assert [m.id for m in db.select(Measure, ~col("value").is_in([None, 2.0]))] == [2.0]
    with pytest.raises(UsageError, match="takes a list of values"):
        col("value").is_in("ab")


class Dated(SyncModel, table="dated"):
    id: Annotated[int, PrimaryKey()]
    note: str = ""
    at: Optional[dt.datetime] = None
    day: Optional[dt.date] = None
    clock: Optional[dt.time] = None


NOT_ISO = [1700000000, 1700000000000, 2460311.75, "1700000000", "2460311.5", "2024", "20240102", b"2024-01-02"]
ISO_ELSEWHERE = {  # other programs' ISO 8601 text: read as such
    "at": ("2024-01-02 10:00:00", dt.datetime(2024, 1, 2, 10)),
    "day": ("2024-01-02", dt.date(2024, 1, 2)),
    "clock": ("10:00", dt.time(10)),
}


@pytest.mark.parametrize("field", ["at", "day", "clock"])
@pytest.mark.parametrize("stored", NOT_ISO, ids=[repr(value) for value in NOT_ISO])
def test_a_date_or_time_stored_as_a_number_is_refused_on_read_not_guessed(memory_conn, field, stored):
    """Pydantic reads a number (or its text) as Unix seconds or milliseconds: a Julian day becomes a day in
    January 1970, ``'2024'`` 33 minutes past midnight of 1970-01-01. pydsqlite reads dates, date-times and
    times from ISO 8601 text only and refuses the rest naming table, key, column and value; an update of other
    fields is refused too (it would store the guess), one of that field puts the row right."""
    sync_models(memory_conn, [Dated])
    db = Database(memory_conn)
    db.insert(Dated(id=1))
    memory_conn.execute(f"UPDATE dated SET {field} = ? WHERE id = 1", (stored,))
    memory_conn.execute(f"INSERT INTO dated (id, {field}) VALUES (2, ?)", (ISO_ELSEWHERE[field][0],))
    memory_conn.commit()
    before = file_state(memory_conn)
    for read in (lambda: db.get(Dated, 1), lambda: db.select(Dated), lambda: list(db.iter_select(Dated)),
                 lambda: db.update(Dated, 1, note="changed")):
        with pytest.raises(RowValidationError, match="text in ISO 8601.s extended form") as raised:
            read()
        assert (raised.value.table, raised.value.key, raised.value.columns) == ("dated", 1, [field])
        assert repr(stored) in str(raised.value) and "UPDATE `dated` SET" in str(raised.value)
    assert file_state(memory_conn) == before
    assert getattr(db.get(Dated, 2), field) == ISO_ELSEWHERE[field][1]
    db.update(Dated, 1, **{field: ISO_ELSEWHERE[field][1]})
    assert getattr(db.get(Dated, 1), field) == ISO_ELSEWHERE[field][1]


def test_a_read_refused_names_rows_by_key_and_fields_not_by_place_in_the_batch(memory_conn):
    """Rows are validated a batch at a time; the refusal tells the first failing row by its key, each of its
    fields with the stored value, and the keys of the other failing rows, never their positions in the batch."""
    sync_models(memory_conn, [Measure, Log])
    memory_conn.executemany("INSERT INTO measures VALUES (?, ?)", [(1.0, 1.0), (2.0, "warm"), (3.0, 2.0), (4.0, "cold")])
    memory_conn.execute("INSERT INTO logs VALUES (?)", (b"\xff",))  # bytes that are no UTF-8 text
    db = Database(memory_conn)
    with pytest.raises(RowValidationError) as raised:
        db.select(Measure, order_by="id")
    message = str(raised.value)
    assert message.startswith("row 2.0 of table 'measures' does not validate (column value): value: Input should be a valid number")
    assert "(stored value 'warm')" in message and "1 more row(s) read in the same batch do not validate either (4.0)" in message
    assert "1.value" not in message and "list[" not in message
    assert (raised.value.key, raised.value.columns) == (2.0, ["value"])
    with pytest.raises(RowValidationError, match=r"a row of table 'logs' \(which has no primary key\) does not validate \(column line\)"):
        db.select(Log)


def test_the_sql_a_date_refusal_suggests_converts_unix_seconds(memory_conn):
    """The refusal of a date stored as Unix seconds gives the UPDATE that converts its column; run as given,
    every row reads as the instant those seconds are (dates and times in UTC)."""
    sync_models(memory_conn, [Dated])
    db = Database(memory_conn)
    memory_conn.execute("INSERT INTO dated (id, at, day, clock) VALUES (1, 1704189600, 1704189600, 1704189600), (2, NULL, '2024-05-06', NULL)")
    for _ in Dated.model_fields:
        try:
            rows = db.select(Dated, order_by="id")
            break
        except RowValidationError as error:
            memory_conn.execute(re.search(r"with SQL: (UPDATE .*?)(?: \(a naive field|;)", str(error)).group(1))
    assert [(row.at, row.day, row.clock) for row in rows] == [
        (dt.datetime(2024, 1, 2, 10, tzinfo=dt.timezone.utc), dt.date(2024, 1, 2), dt.time(10)), (None, dt.date(2024, 5, 6), None),
    ]


def test_the_largest_and_smallest_64_bit_integers_and_nan_as_before(db):
    db.insert_many([Account(id=2**63 - 1, name="max", balance=2**63 - 1), Account(id=-(2**63), name="min", balance=-(2**63))])
    assert db.get(Account, 2**63 - 1).balance == 2**63 - 1 and db.get(Account, -(2**63)).balance == -(2**63)

    class Reading(SyncModel, table="readings"):
        id: Annotated[int, PrimaryKey()]
        value: float

    sync_models(db.conn, [Account, Note, Log, Reading])
    with pytest.raises(UnstorableValueError, match=r"readings\.value: NaN cannot be stored") as raised:
        db.insert_many([Reading(id=1, value=1.0), Reading(id=2, value=math.nan)])
    assert raised.value.field == "value" and db.count(Reading) == 0


@pytest.mark.parametrize(
    ("annotation", "default", "message"),
    [
        (int, 2**63, "default 9223372036854775808 cannot be stored: SQLite integers are 64-bit"),
        (int, 2**64, "SQLite integers are 64-bit"),
        (int, -(2**63) - 1, "SQLite integers are 64-bit"),
        (str, "a\ud800", "lone surrogate"),
        (list[str], ["\udc00"], "lone surrogate"),
    ],
)
def test_a_default_sqlite_cannot_store_is_refused_at_declaration(annotation, default, message):
    Counter = create_model(  # noqa: N806 - a model class
        "Counter", __base__=SyncModel, __cls_kwargs__={"table": "counters"}, id=(Annotated[int, PrimaryKey()], ...), value=(annotation, default)
    )
    with pytest.raises(SchemaDefinitionError, match=rf"Counter\.value: .*{message}"):
        compile_models([Counter])


def test_the_extreme_64_bit_defaults_stay_integers(memory_conn):
    class Counter(SyncModel, table="counters"):
        id: Annotated[int, PrimaryKey()]
        high: int = 2**63 - 1
        low: int = Field(default=-(2**63))

    sync_models(memory_conn, [Counter])
    memory_conn.execute("INSERT INTO counters (id) VALUES (1)")
    assert memory_conn.execute("SELECT high, typeof(high), low, typeof(low) FROM counters").fetchone() == (
        2**63 - 1, "integer", -(2**63), "integer",
    )


class Transfer(SyncModel, table="transfers"):
    id: Annotated[int, PrimaryKey()]
    account_id: Annotated[int, ForeignKey(Account)]


def test_a_commit_sqlite_refuses_rolls_the_write_back_and_leaves_no_transaction_open(db):
    sync_models(db.conn, [Account, Note, Log, Transfer])
    db.conn.execute("PRAGMA foreign_keys = ON")
    db.conn.execute("PRAGMA defer_foreign_keys = ON")  # the violation surfaces at COMMIT (and the pragma resets there)
    with pytest.raises(ConstraintError, match="FOREIGN KEY"):
        db.insert(Transfer(id=1, account_id=99))
    assert not db.conn.in_transaction and db.count(Transfer) == 0
    db.conn.execute("PRAGMA defer_foreign_keys = ON")
    with pytest.raises(ConstraintError, match=r"SQLite refused to end the block, so the block was rolled back.*FOREIGN KEY") as raised:
        with db.transaction():
            db.insert(Transfer(id=2, account_id=1))
            db.insert(Transfer(id=3, account_id=99))
    assert raised.value.constraint == "FOREIGN KEY" and isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    assert not db.conn.in_transaction and db.count(Transfer) == 0


class PricedItem(SyncModel, table="decimal_priced_items"):
    id: Annotated[int, PrimaryKey()]
    price: decimal.Decimal
    name: str = ""


@pytest.mark.parametrize(
    "query",
    [
        {"where": col("price") > decimal.Decimal("9")},
        {"where": (col("name") == "a") & ~(col("price") <= 5)},
        {"order_by": "price"},
        {"order_by": ["name", "-price"]},
    ],
    ids=["col >", "combined col <=", "order_by", "order_by list"],
)
def test_ordering_by_a_decimal_field_is_refused_rather_than_answered_in_text_order(query):
    db = Database(sqlite3.connect(":memory:"))
    sync_models(db.conn, [PricedItem])
    db.insert_many([PricedItem(id=1, price=decimal.Decimal("9.5")), PricedItem(id=2, price=decimal.Decimal("10.00"))])
    with pytest.raises(UsageError, match=r"field 'price' of PricedItem \(table 'decimal_priced_items'\) is a Decimal, stored as text"):
        db.select(PricedItem, **query)
    assert [item.price for item in db.select(PricedItem, col("price") == decimal.Decimal("10.00"), order_by="id")] == [decimal.Decimal("10.00")]


class Kinded(SyncModel, table="kinded_rows"):
    id: Annotated[int, PrimaryKey()]
    kind: Literal["a", "b"] = "a"
    note: str = ""


@pytest.mark.parametrize(
    "repair",
    [
        lambda db: db.update(Kinded, 1, kind="b"),
        lambda db: db.update(Kinded(id=1, kind="b", note="bad")),
        lambda db: db.upsert(Kinded(id=1, kind="b", note="bad")),
    ],
    ids=["update(Model, key, kind=...)", "update(obj)", "upsert(obj)"],
)
def test_a_row_the_model_refuses_can_be_put_right_through_the_rows_api(repair):
    """A row written by SQL that the model refuses: reads name it, and an update that gives it
    valid values repairs it (the old row need not validate; the new one must)."""
    db = Database(sqlite3.connect(":memory:"))
    sync_models(db.conn, [Kinded])
    db.conn.execute("INSERT INTO kinded_rows (id, kind, note) VALUES (1, 'zzz', 'bad')")
    db.conn.commit()
    with pytest.raises(RowValidationError, match=r"row 1 of table 'kinded_rows' does not validate \(column kind\)"):
        db.get(Kinded, 1)
    assert repair(db) == Kinded(id=1, kind="b", note="bad")
    assert db.get(Kinded, 1) == Kinded(id=1, kind="b", note="bad")


def test_an_update_that_leaves_a_refused_row_wrong_names_the_stored_row_and_writes_nothing():
    db = Database(sqlite3.connect(":memory:"))
    sync_models(db.conn, [Kinded])
    db.conn.execute("INSERT INTO kinded_rows (id, kind, note) VALUES (1, 'zzz', 'bad')")
    db.conn.commit()
    with pytest.raises(RowValidationError, match=r"row 1 of table 'kinded_rows' does not validate \(column kind\)"):
        db.update(Kinded, 1, note="still bad")
    assert db.conn.execute("SELECT kind, note FROM kinded_rows").fetchall() == [("zzz", "bad")]


class Loose(SyncModel, table="loose"):
    model_config = ConfigDict(extra="allow")
    id: Annotated[int, PrimaryKey()]
    x: int = 0


@pytest.mark.parametrize(
    "write",
    [
        lambda db: db.insert(Loose(id=2, x=1, colour="red")),
        lambda db: db.insert_many([Loose(id=2), {"id": 3, "colour": "red"}], Loose),
        lambda db: db.upsert(Loose(id=1, x=5, colour="red")),
        lambda db: db.update(Loose(id=1, x=5, colour="red")),
    ],
    ids=["insert", "insert_many", "upsert", "update"],
)
def test_extra_fields_no_column_stores_are_refused_not_dropped(conn, write):
    """A model with extra="allow" keeps extras on its instances; writing them would drop them."""
    sync_models(conn, [Loose])
    db = Database(conn)
    db.insert(Loose(id=1, x=1))
    before = list(conn.iterdump())
    with pytest.raises(UnstorableValueError) as raised:
        write(db)
    assert (raised.value.table, raised.value.field) == ("loose", "colour")
    assert "'red'" in str(raised.value) and "no column stores it" in str(raised.value)
    assert list(conn.iterdump()) == before
    assert db.insert(Loose(id=4, x=2)) == Loose(id=4, x=2)  # without extras it is written as ever
    assert db.delete(Loose(id=4, x=2, colour="red"))  # a delete needs the key only


@pytest.mark.parametrize("params", [1, None, 2.5, object()])
def test_params_that_are_not_a_sequence_or_mapping_are_a_usage_error_naming_model_and_table(db, params):
    for read in (lambda: db.count(Account, "id = ?", params), lambda: db.select(Account, "id = ?", params)):
        with pytest.raises(UsageError, match=r"params= takes a sequence of values .*\(reading Account, table 'accounts'\)"):
            read()


class Member(SyncModel, table="members"):
    id: int = Field(default=None, primary_key=True)
    name: str
    role: str = "reader"
    display: str = Field("anonymous", alias="displayName")


class MemberByName(SyncModel, table="members_by_name"):
    model_config = ConfigDict(populate_by_name=True)
    id: int = Field(default=None, primary_key=True)
    display: str = Field("anonymous", alias="displayName")


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({"name": "ann", "rol": "admin"}, "'rol'"),
        ({"name": "ann", "display": "Ann A."}, "'display' is field 'display', which is read from 'displayName'"),
    ],
    ids=["misspelt", "field name of an aliased field"],
)
def test_a_dict_key_the_model_does_not_read_is_refused_not_dropped(memory_conn, row, named):
    """pydantic ignores keys it does not read, so the field's default would be stored instead of the
    value: a row given as a dict must use the keys the model reads, and nothing is written otherwise."""
    sync_models(memory_conn, [Member])
    db = Database(memory_conn)
    with pytest.raises(UsageError, match="does not read") as raised:
        db.insert_many([{"name": "first"}, row], model=Member)
    message = str(raised.value)
    assert named in message and "row 1:" in message and "Member (table 'members')" in message
    assert db.count(Member) == 0


def test_dict_rows_may_use_every_key_the_model_reads(memory_conn):
    sync_models(memory_conn, [Member, MemberByName])
    db = Database(memory_conn)
    db.insert_many([{"name": "ann", "role": "admin", "displayName": "Ann A."}], model=Member)
    db.insert_many([{"display": "by name"}, {"displayName": "by alias"}], model=MemberByName)
    assert [(m.role, m.display) for m in db.select(Member)] == [("admin", "Ann A.")]
    assert [m.display for m in db.select(MemberByName, order_by="id")] == ["by name", "by alias"]


class Admin(Member):
    level: int = 1


class Moderator(Member):  # adds no field: stored through Member like a Member
    pass


def test_a_subclass_row_with_fields_of_its_own_is_refused_by_its_base_model(memory_conn):
    """``Admin(Member)`` shares the table and adds ``level``: written through Member (the first row of a
    batch, or ``model=Member``) its level would be dropped; refused, naming the field and the row."""
    sync_models(memory_conn, [Admin])
    db = Database(memory_conn)
    with pytest.raises(UsageError, match=r"row 1: a Admin has field\(s\) 'level' that Member \(table 'members'\) does not store"):
        db.insert_many([Member(name="u"), Admin(name="boss", level=7)])
    with pytest.raises(UsageError, match="'level'"):
        db.insert_many([Admin(name="boss", level=5)], model=Member)
    assert db.count(Member) == 0
    db.insert_many([Member(name="u"), Moderator(name="mod")])
    db.insert_many([Admin(name="boss", level=7)])
    assert memory_conn.execute("SELECT name, level FROM members ORDER BY id").fetchall() == [("u", 1), ("mod", 1), ("boss", 7)]


def test_a_locked_database_is_an_engine_error_naming_the_table_and_still_the_drivers_error(tmp_path):
    """Another connection holding the lock past the busy timeout: reads and writes raise EngineError
    (our hierarchy, naming model and table, with SQLite's code) that is also sqlite3.OperationalError,
    so existing ``except sqlite3.OperationalError`` retries keep working; nothing is written."""
    from pydsqlite import EngineError

    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, timeout=0)
    sync_models(conn, [Member])
    db = Database(conn)
    db.insert(Member(name="ann"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    for call in (lambda: db.insert(Member(name="bob")), lambda: db.select(Member), lambda: db.count(Member, "name = ?", ("ann",))):
        with pytest.raises(EngineError, match=r"Member \(table 'members'\): database is locked; another connection holds the lock") as raised:
            call()
        assert isinstance(raised.value, sqlite3.OperationalError) and isinstance(raised.value, PydsqliteError)
        assert raised.value.code == 5
    other.execute("ROLLBACK")
    assert [member.name for member in db.select(Member)] == ["ann"]


@pytest.mark.parametrize(("where", "problem"), [("name >", "incomplete input"), ("nosuchfn(name) = 1", "no such function: nosuchfn")])
def test_where_text_that_does_not_compile_is_a_usage_error_naming_model_table_and_text(memory_conn, where, problem):
    sync_models(memory_conn, [Member])
    db = Database(memory_conn)
    for call in (db.select, db.count, lambda model, text: list(db.iter_select(model, text))):
        with pytest.raises(UsageError, match=re.escape(f"Member (table 'members'): where={where!r} cannot run: {problem}")):
            call(Member, where)


class Setting(SyncModel, table="settings"):
    key: Annotated[str, PrimaryKey()]
    value: str


def test_update_by_key_sets_a_field_named_key(memory_conn):
    """``update(Model, key, **changes)`` takes the model and key by position only, so a field named
    ``key`` can be changed like any other (the row moves to the new key)."""
    sync_models(memory_conn, [Setting])
    db = Database(memory_conn)
    db.insert(Setting(key="theme", value="dark"))
    assert db.update(Setting, "theme", key="mode") == Setting(key="mode", value="dark")
    assert [setting.key for setting in db.select(Setting)] == ["mode"]


def test_dict_rows_pydantic_reads_otherwise_are_accepted(memory_conn):
    """What the key check must not refuse: a key a before-validator maps (it may read any key), the first
    key of an AliasPath choice, and a computed field's key in a dump (pydantic computes it again)."""
    from pydantic import AliasChoices, AliasPath, computed_field, model_validator

    class Legacy(SyncModel, table="legacy"):
        id: int = Field(default=None, primary_key=True)
        name: str

        @model_validator(mode="before")
        @classmethod
        def old_key(cls, data: Any) -> Any:
            if isinstance(data, dict) and "full_name" in data:
                data = {**data, "name": data.pop("full_name")}
            return data

    class Tagged(SyncModel, table="tagged"):
        id: int = Field(default=None, primary_key=True)
        tag: str = Field(validation_alias=AliasChoices("tag", AliasPath("tags", 0)))

    class Priced(SyncModel, table="priced"):
        id: int = Field(default=None, primary_key=True)
        price: int
        count: int

        @computed_field
        @property
        def total(self) -> int:
            return self.price * self.count

    sync_models(memory_conn, [Legacy, Tagged, Priced])
    db = Database(memory_conn)
    db.insert_many([{"full_name": "Ann"}], model=Legacy)
    db.insert_many([{"tags": ["red", "blue"]}, {"tag": "green"}], model=Tagged)
    db.insert_many([Priced(price=2, count=3).model_dump()], model=Priced)
    assert [row.name for row in db.select(Legacy)] == ["Ann"]
    assert [row.tag for row in db.select(Tagged, order_by="id")] == ["red", "green"]
    assert [row.total for row in db.select(Priced)] == [6]


def test_an_alias_is_refused_where_the_model_validates_by_name_only(memory_conn):
    class ByName(SyncModel, table="by_name"):
        model_config = ConfigDict(validate_by_alias=False, validate_by_name=True)
        id: int = Field(default=None, primary_key=True)
        full_name: str = Field("?", alias="fullName")

    sync_models(memory_conn, [ByName])
    db = Database(memory_conn)
    with pytest.raises(UsageError, match="'fullName'"):
        db.insert_many([{"fullName": "Ann"}], model=ByName)
    db.insert_many([{"full_name": "Ann"}], model=ByName)
    assert [row.full_name for row in db.select(ByName)] == ["Ann"]


class LooseMember(Member):
    model_config = ConfigDict(extra="allow")


def test_a_subclass_row_carrying_extra_fields_is_refused_in_a_batch_as_alone(memory_conn):
    sync_models(memory_conn, [Member])
    db = Database(memory_conn)
    with pytest.raises(UnstorableValueError, match="extra field"):
        db.insert_many([Member(name="a"), LooseMember(name="f", note="kept?")])
    assert db.count(Member) == 0
    db.insert_many([Member(name="a"), LooseMember(name="g")])
    assert db.count(Member) == 2


def test_an_engine_refusal_keeps_what_drivers_errors_carry_and_travels_between_processes(tmp_path):
    """The refusal is an EngineError with SQLite's primary code, also the driver's OperationalError with
    its sqlite_errorcode / sqlite_errorname, and it pickles (a process pool hands it back whole);
    an engine's own EngineError (dqlite's) keeps its class."""
    import pickle

    from pydsqlite.engines.dqlite import DqliteOperationalError
    from pydsqlite.errors import EngineError, SqliteOperationalError
    from pydsqlite.rows.refusals import engine_refusal

    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, timeout=0)
    sync_models(conn, [Member])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(SqliteOperationalError) as raised:
        Database(conn).insert(Member(name="bob"))
    other.execute("ROLLBACK")
    error = raised.value
    assert (error.code, error.sqlite_errorcode, error.sqlite_errorname) == (5, 5, "SQLITE_BUSY")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is SqliteOperationalError and str(back) == str(error) and back.code == 5
    remote = engine_refusal("Member (table 'members')", DqliteOperationalError("database is locked", 5))
    assert type(remote) is DqliteOperationalError and isinstance(remote, EngineError) and remote.code == 5
    assert "Member (table 'members'): database is locked" in str(remote)


def test_a_where_naming_a_collation_the_connection_lacks_is_a_usage_error(memory_conn):
    sync_models(memory_conn, [Member])
    with pytest.raises(UsageError, match="no such collation sequence: nosuch"):
        Database(memory_conn).select(Member, "name = 'a' COLLATE nosuch")


class Doc(SyncModel, table="docs"):
    id: int = Field(default=None, primary_key=True)
    data: str


def test_a_where_that_compiles_but_fails_on_a_rows_data_is_an_engine_error_however_it_is_read(memory_conn):
    """json_extract on text that is not JSON fails while rows are read (first or later): SQLite refused
    the data, the text compiled, so every method raises the same EngineError, never a UsageError."""
    from pydsqlite.errors import SqliteOperationalError

    sync_models(memory_conn, [Doc])
    db = Database(memory_conn)
    db.insert_many([Doc(data='{"a": 1}')] * 600 + [Doc(data="not json")])
    where = "json_extract(data, '$.a') = 1"
    calls = {
        "count": lambda: db.count(Doc, where),
        "select": lambda: db.select(Doc, where),
        "select, newest first": lambda: db.select(Doc, where, order_by="-id"),
        "iter_select": lambda: list(db.iter_select(Doc, where)),
    }
    for name, call in calls.items():
        with pytest.raises(SqliteOperationalError, match=r"Doc \(table 'docs'\): malformed JSON"):
            call()
            pytest.fail(f"{name} raised nothing")


class Memo(SyncModel, table="undecodable_memos"):
    id: Annotated[int, PrimaryKey()]
    kind: str = "a"
    body: str = ""


@pytest.mark.parametrize("call", ["select", "iter_select", "get", "update", "upsert", "count is fine"])
def test_text_that_is_not_utf8_names_its_row_and_column_and_how_to_repair_it(tmp_path, call):
    """Text another program wrote as bytes that are not UTF-8: the driver cannot read it, and the
    error names the row, the column and the SQL that repairs it; nothing is written."""
    path = tmp_path / "memos.db"
    conn = sqlite3.connect(path)
    sync_models(conn, [Memo])
    conn.executemany("INSERT INTO undecodable_memos (id, body) VALUES (?, ?)", [(1, "fine"), (3, "fine too")])
    conn.execute("INSERT INTO undecodable_memos (id, body) VALUES (0, CAST(x'ff' AS TEXT))")  # another bad row, not the one read
    conn.execute("INSERT INTO undecodable_memos (id, body) VALUES (2, CAST(x'6869ff' AS TEXT))")
    conn.commit()
    before = path.read_bytes()
    db = Database(conn)
    actions = {
        "select": lambda: db.select(Memo, col("id") >= 1),
        "iter_select": lambda: list(db.iter_select(Memo, col("id") >= 1)),
        "get": lambda: db.get(Memo, 2),
        "update": lambda: db.update(Memo, 2, body="fixed"),
        "upsert": lambda: db.upsert(Memo(id=2, body="fixed")),
    }
    if call == "count is fine":
        assert db.count(Memo) == 4 and db.get(Memo, 1).body == "fine"
        return
    with pytest.raises(RowValidationError) as raised:
        actions[call]()
    assert (raised.value.table, raised.value.key, raised.value.columns) == ("undecodable_memos", 2, ["body"])
    assert "not valid UTF-8 (b'hi\\xff')" in str(raised.value) and "WHERE `id` = 2" in str(raised.value)
    conn.rollback()
    assert path.read_bytes() == before
    conn.execute("UPDATE undecodable_memos SET body = 'repaired' WHERE id = 2")  # the repair the message names
    assert db.get(Memo, 2).body == "repaired"


CALLS_ON_A_CLOSED_CONNECTION = {
    "insert": lambda db: db.insert(Account(id=2, name="b")),
    "insert_many": lambda db: db.insert_many([Account(id=2, name="b")]),
    "upsert": lambda db: db.upsert(Account(id=1, name="b")),
    "update": lambda db: db.update(Account, 1, name="b"),
    "delete": lambda db: db.delete(Account, 1),
    "get": lambda db: db.get(Account, 1),
    "select": lambda db: db.select(Account),
    "select where": lambda db: db.select(Account, where="name = ?", params=("a",)),
    "iter_select": lambda db: list(db.iter_select(Account)),
    "count": lambda db: db.count(Account),
    "transaction": lambda db: db.transaction().__enter__(),
    "changes_since": lambda db: db.changes_since(None, [Note]),
    "apply_changes": lambda db: db.apply_changes(ChangeSet((), 0, "elsewhere"), [Note]),
    "sync_models": lambda db: sync_models(db.conn, [Account, Note]),
    "model_migration_plan": lambda db: model_migration_plan(db.conn, [Account, Note]),
}


@pytest.mark.parametrize("call", list(CALLS_ON_A_CLOSED_CONNECTION))
def test_a_call_on_a_closed_connection_says_the_connection_is_closed(db_path, call):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Account, Note])
    db = Database(conn)
    db.insert(Account(id=1, name="a"))
    conn.close()
    with pytest.raises(UsageError, match="the connection is closed") as raised:
        CALLS_ON_A_CLOSED_CONNECTION[call](db)
    if call not in ("transaction", "changes_since", "apply_changes", "sync_models", "model_migration_plan"):
        assert "Account (table 'accounts')" in str(raised.value)
    with sqlite3.connect(db_path) as again:
        assert again.execute("SELECT id, name FROM accounts").fetchall() == [(1, "a")]


def test_a_database_file_that_cannot_be_opened_is_named(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "app.db"
    with pytest.raises(PydsqliteError, match=re.escape(f"Database({str(missing)!r}): cannot open the database file")) as raised:
        Database(missing)
    assert isinstance(raised.value, sqlite3.OperationalError)


class Shop(SyncModel, table="shops"):
    id: Annotated[int, PrimaryKey()]


class Item(SyncModel, table="items"):
    id: int = Field(default=None, primary_key=True)
    shop_id: Annotated[int, ForeignKey(Shop)]


class Category(SyncModel, table="categories"):
    id: Annotated[int, PrimaryKey()]
    parent: Annotated[Optional[int], ForeignKey("categories.id")] = None


def enforcing(db_path, models: list[type[SyncModel]], *rows: SyncModel) -> Database:
    """A database of ``models`` enforcing foreign keys, holding ``rows``."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA foreign_keys = ON")
    sync_models(conn, models)
    db = Database(conn)
    for row in rows:
        db.insert(row)
    return db


FOREIGN_KEY_REFUSALS = {
    "insert": (lambda db: db.insert(Item(shop_id=998)), "a new row has shop_id = 998, which no row of shops(id) holds"),
    "insert_many": (
        lambda db: db.insert_many([Item(id=5, shop_id=1), Item(id=6, shop_id=7)]),
        "the row with key (6,) has shop_id = 7, which no row of shops(id) holds",
    ),
    "insert_many of a tree": (
        lambda db: db.insert_many([Category(id=2, parent=1), Category(id=3, parent=2), Category(id=4, parent=9)]),
        "the row with key (4,) has parent = 9, which no row of categories(id) holds",
    ),
    "upsert": (lambda db: db.upsert(Item(id=1, shop_id=3)), "the row with key (1,) has shop_id = 3, which no row of shops(id) holds"),
    "update(obj)": (lambda db: db.update(Item(id=1, shop_id=4)), "the row with key (1,) has shop_id = 4, which no row of shops(id) holds"),
    "update(Model, key)": (lambda db: db.update(Item, 1, shop_id=5), "the row with key (1,) has shop_id = 5, which no row of shops(id) holds"),
    "delete": (lambda db: db.delete(Shop, 1), "rows of items (shop_id) reference the row with key (1,)"),
}


@pytest.mark.parametrize("write", list(FOREIGN_KEY_REFUSALS))
def test_a_foreign_key_refusal_names_the_row_column_and_value(db_path, write):
    db = enforcing(db_path, [Shop, Item, Category], Shop(id=1), Item(id=1, shop_id=1), Category(id=1))
    conn = db.conn
    before = file_state(conn)
    call, named = FOREIGN_KEY_REFUSALS[write]
    with pytest.raises(ConstraintError, match=re.escape(named)) as raised:
        call(db)
    assert raised.value.constraint == "FOREIGN KEY"
    assert file_state(conn) == before


class Coded(SyncModel, table="coded"):
    id: Annotated[int, PrimaryKey()]
    code: Annotated[str, Unique()]
    parent_code: Annotated[Optional[str], ForeignKey("coded.code")] = None


class Owner(SyncModel, table="owners"):
    id: Annotated[int, PrimaryKey()]


class Pet(SyncModel, table="pets"):  # goes with its owner
    id: Annotated[int, PrimaryKey()]
    owner: Annotated[int, ForeignKey(Owner, on_delete="CASCADE")]


class Car(SyncModel, table="cars"):  # keeps its owner
    id: Annotated[int, PrimaryKey()]
    owner: Annotated[int, ForeignKey(Owner)]


def test_a_row_of_the_batch_referencing_another_by_a_unique_column_is_not_taken_for_the_culprit(db_path):
    db = enforcing(db_path, [Coded])
    conn = db.conn
    with pytest.raises(ConstraintError, match=re.escape("the row with key (3,) has parent_code = 'zzz', which no row of coded(code) holds")):
        db.insert_many([Coded(id=1, code="a"), Coded(id=2, code="b", parent_code="a"), Coded(id=3, code="c", parent_code="zzz")])
    assert conn.execute("SELECT count(*) FROM coded").fetchone() == (0,)


def test_a_refused_delete_names_only_the_tables_whose_rows_keep_it(db_path):
    db = enforcing(db_path, [Owner, Pet, Car], Owner(id=1), Pet(id=1, owner=1), Car(id=1, owner=1))
    conn = db.conn
    with pytest.raises(ConstraintError) as raised:
        db.delete(Owner, 1)
    assert "rows of cars (owner) reference the row with key (1,)" in str(raised.value)
    assert "pets" not in str(raised.value)
    assert conn.execute("SELECT count(*) FROM pets").fetchone() == (1,)


@pytest.mark.parametrize("call", ["changes_since", "apply_changes"])
def test_models_given_as_a_generator_name_the_column_the_database_lacks(db_path, call):
    conn = sqlite3.connect(db_path)
    sync_models(conn, [Note])
    ahead = type(SyncModel)(
        "Note", (SyncModel,), {"__annotations__": {"id": Annotated[int, PrimaryKey()], "body": Annotated[str, LWW()], "title": Annotated[str, LWW()]}},
        table="notes",
    )
    db = Database(conn)
    with pytest.raises(SchemaMismatchError, match="'title'"):
        if call == "changes_since":
            db.changes_since(None, (model for model in [ahead]))
        else:
            source = Database(sqlite3.connect(db_path.with_name("source.db")))
            sync_models(source.conn, [ahead])
            source.insert(ahead(id=1, body="b", title="t"))
            db.apply_changes(source.changes_since(None, [ahead]), (model for model in [ahead]))


class Account2(SyncModel, table="accounts2"):
    id: Annotated[int, PrimaryKey()]


class Branch(SyncModel, table="branches"):
    id: Annotated[int, PrimaryKey()]


class Ledger(SyncModel, table="ledgers"):
    id: Annotated[int, PrimaryKey()]
    account: Annotated[int, ForeignKey(Account2, deferred=True)]
    branch: Annotated[int, ForeignKey(Branch)]


def test_inside_a_transaction_a_deferred_key_is_not_taken_for_the_statements_culprit(db_path):
    """A row breaking only a deferred key is legal until COMMIT: the statement failed on the row
    breaking the immediate one."""
    db = enforcing(db_path, [Account2, Branch, Ledger], Account2(id=1), Branch(id=1))
    conn = db.conn
    with pytest.raises(ConstraintError, match=re.escape("the row with key (2,) has branch = 9, which no row of branches(id) holds")):
        with db.transaction():
            db.insert_many([Ledger(id=1, account=9, branch=1), Ledger(id=2, account=1, branch=9)])
    assert conn.execute("SELECT count(*) FROM ledgers").fetchone() == (0,)
