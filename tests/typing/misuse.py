"""Mistakes a type checker must report: every line marked ``# error`` is an error under mypy (with
the pydantic plugin) and under pyright, and no other line is (tests/test_typing.py checks both)."""

from __future__ import annotations

import sqlite3
from typing import Annotated

from pydsqlite import Database, Field, PrimaryKey, SyncModel
from pydsqlite.aio import AsyncDatabase


class User(SyncModel, table="users"):
    id: Annotated[int, PrimaryKey()]
    name: str
    karma: int = Field(default=0, lww=True)


class Post(SyncModel, table="posts"):
    id: int = Field(default=None, primary_key=True)
    title: str


db = Database(sqlite3.connect(":memory:"))
user = db.insert(User(id=1, name="ann"))
print(user.nickname)  # error
print(db.get(User, 1).name)  # error
db.get(User)  # error
users: list[User] = db.select(Post)  # error
for row in db.iter_select(User):
    print(row.email)  # error
print(db.update(User, 1, name="bob").age)  # error
print(db.upsert(Post(title="x")).karma)  # error
db.delete(User)  # error
User(id=1)  # error
User(id=1, name=["ann"])  # error
Post(title="x", body="y")  # error
with db.transaction() as tx:
    tx.commit()  # error


async def async_misuse(adb: AsyncDatabase) -> None:
    print((await adb.get(User, 1)).name)  # error
    print((await adb.update(User, 1, name="bob")).age)  # error
    await adb.delete(User)  # error
    print(adb.insert(User(id=2, name="cy")).id)  # error
