"""Property test: hand-made views, triggers (writing to another table whose columns share the
names) and indexes around a table that random edits rename, retype, rebuild or shrink.

Either the migration is refused (only ever because a dependant uses a column the models drop)
and the file is byte-for-byte unchanged, or it is applied, the next plan is empty, and every
dependant still works on the columns it followed through the renames.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import Annotated, Any, Optional

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from pydsqlite import PrimaryKey, PydsqliteError, RenamedFrom, SyncModel, model_migration_plan, sync_models

NAMES = ["a", "b", "c", "d", "e"]
KINDS = {"int": int, "str": str, "float": float}


@dataclass(frozen=True)
class Col:
    name: str
    kind: str
    origin: str
    """The name the column had in the first schema (renames carry it; new columns have their own)."""
    renamed_from: tuple[str, ...] = ()


@st.composite
def first_columns(draw) -> tuple[Col, ...]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True))
    return tuple(Col(name, draw(st.sampled_from(sorted(KINDS))), name) for name in names)


@st.composite
def edited(draw, columns: tuple[Col, ...]) -> tuple[Col, ...]:
    cols = [replace(column, renamed_from=()) for column in columns]
    original = {column.name for column in columns}
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["rename", "swap", "type", "drop", "add"]))
        free = [name for name in NAMES if name not in {column.name for column in cols}]
        # (a rename onto the name of a column dropped in the same release is ambiguous without history:
        # tests/test_renames.py covers how it is refused or read)
        unused = [name for name in free if name not in original]
        # (one column's values move to one column only: two hints naming one column are refused)
        moving = {old for column in cols for old in column.renamed_from}
        if edit == "rename" and unused and cols:
            index = draw(st.integers(0, len(cols) - 1))
            if not cols[index].renamed_from and cols[index].name not in moving:
                cols[index] = replace(cols[index], name=draw(st.sampled_from(unused)), renamed_from=(cols[index].name,))
        elif edit == "swap" and len(cols) >= 2:
            i, j = draw(st.lists(st.integers(0, len(cols) - 1), min_size=2, max_size=2, unique=True))
            if not cols[i].renamed_from and not cols[j].renamed_from and not {cols[i].name, cols[j].name} & moving:
                cols[i], cols[j] = (
                    replace(cols[i], name=cols[j].name, renamed_from=(cols[i].name,)),
                    replace(cols[j], name=cols[i].name, renamed_from=(cols[j].name,)),
                )
        elif edit == "type" and cols:
            index = draw(st.integers(0, len(cols) - 1))
            cols[index] = replace(cols[index], kind=draw(st.sampled_from(sorted(KINDS))))
        elif edit == "drop" and len(cols) > 1:
            cols.pop(draw(st.integers(0, len(cols) - 1)))
        elif edit == "add" and free:
            name = draw(st.sampled_from(free))
            # columns match by name: re-adding a dropped column's name keeps that column
            same = name in original and name not in {column.origin for column in cols}
            cols.append(Col(name, draw(st.sampled_from(sorted(KINDS))), name if same else f"new {name}"))
    # a column holding new data under an original name (added while that column lived on under another
    # name, or given a hint from a column that never reached the database) matches the live column of
    # its name once nothing else claims it: a hint naming no live column is no hint
    kept = {column.origin for column in cols}
    return tuple(
        replace(column, origin=column.name)
        if column.origin.startswith("new ") and column.name in original and column.name not in kept
        else column
        for column in cols
    )


def model(columns: tuple[Col, ...]) -> type[SyncModel]:
    annotations: dict[str, Any] = {"id": Annotated[int, PrimaryKey()]}
    namespace: dict[str, Any] = {}
    for column in columns:
        kind = Optional[KINDS[column.kind]]
        annotations[column.name] = Annotated[kind, RenamedFrom(*column.renamed_from)] if column.renamed_from else kind
        namespace[column.name] = None
    namespace["__annotations__"] = annotations
    return type(SyncModel)("Items", (SyncModel,), namespace, table="items")


VALUE = {"int": 7, "str": "seven", "float": 7.5}


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_dependants_follow_their_columns_through_any_edit_or_the_edit_is_refused(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("deps") / "d.db"
    before = data.draw(first_columns())
    watched = data.draw(st.lists(st.sampled_from([c.name for c in before]), min_size=1, max_size=2, unique=True))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")  # a real file, without waiting for the disk 500 times
    try:
        sync_models(conn, [model(before)])
        # audit's columns carry the same names as items' (a trigger writing there must keep them)
        conn.execute(f"CREATE TABLE audit ({', '.join(watched)})")
        listed = ", ".join(watched)
        conn.executescript(
            f"""
            CREATE VIEW watched AS SELECT id, {listed} FROM items;
            CREATE TRIGGER items_insert AFTER INSERT ON items BEGIN
                INSERT INTO audit ({listed}) VALUES ({', '.join(f'new.{name}' for name in watched)});
            END;
            CREATE TRIGGER items_update AFTER UPDATE ON items BEGIN
                UPDATE audit SET {watched[0]} = new.{watched[0]} WHERE {watched[0]} = old.{watched[0]};
            END;
            CREATE INDEX items_watched ON items ({watched[0]});
            """
        )
        conn.executemany(
            f"INSERT INTO items (id, {', '.join(c.name for c in before)}) VALUES ({', '.join('?' * (len(before) + 1))})",
            [(i, *(VALUE[c.kind] for c in before)) for i in range(3)],
        )
        conn.commit()
        after = data.draw(edited(before))
        file_before = path.read_bytes()
        surviving = {column.origin for column in after}
        needed_gone = [name for name in watched if name not in surviving]
        # a hint onto a column that stays: refused, or (old name wanted again) read as already applied
        moved_away = {old for column in after for old in column.renamed_from}
        after_names = {column.name for column in after}
        live_names = {b.name for b in before}
        onto_staying = [  # (a hint naming no live column is no hint)
            c
            for c in after
            if any(old in live_names for old in c.renamed_from) and c.name in live_names and c.name not in moved_away
        ]
        assume(not any(c.renamed_from[0] in after_names for c in onto_staying))  # ambiguous: tests/test_renames.py
        try:
            sync_models(conn, [model(after)], allow_destructive=True)
        except PydsqliteError as error:
            event("refused")
            assert needed_gone or (onto_staying and "cannot be renamed" in str(error)), str(error)
            assert path.read_bytes() == file_before
            return
        event("applied")
        assert not needed_gone and not onto_staying, "a dependant's column was dropped, or a rename guessed, and nothing refused it"
        assert model_migration_plan(conn, [model(after)]).is_empty
        now = {column.origin: column for column in after}
        followed = [now[name].name for name in watched]  # where each watched column lives now
        assert conn.execute(f"SELECT id, {', '.join(followed)} FROM items ORDER BY id").fetchall() == conn.execute(
            "SELECT * FROM watched ORDER BY id"
        ).fetchall()
        conn.execute("DELETE FROM audit")
        values = {column.name: VALUE[column.kind] for column in after}
        conn.execute(
            f"INSERT INTO items (id, {', '.join(values)}) VALUES (99, {', '.join('?' * len(values))})", tuple(values.values())
        )
        assert conn.execute(f"SELECT {listed} FROM audit").fetchall() == [tuple(values[name] for name in followed)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'items_watched'").fetchone() is not None
        assert [row[1] for row in conn.execute("PRAGMA table_info(audit)")] == watched  # never renamed
        conn.execute(f"UPDATE items SET {followed[0]} = {followed[0]} WHERE id = 99")
    finally:
        conn.close()
