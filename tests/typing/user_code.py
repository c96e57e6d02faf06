"""User code in the docs' style (sync and async) that must type-check clean under mypy (with the pydantic plugin)
and pyright; ``assert_type`` pins the types the API promises. tests/test_typing.py checks it
with both and also runs it, so it stays working code."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Optional

import aiosqlite
from typing_extensions import assert_type

from pydsqlite import (
    HLC,
    LWW,
    AppliedMigration,
    ChangeSet,
    Collate,
    Database,
    Field,
    ForeignKey,
    Index,
    MigrationPlan,
    PrimaryKey,
    RenamedFrom,
    Schema,
    SyncModel,
    Timestamp,
    Unique,
    aio,
    col,
    migration_history,
    model_migration_plan,
    schema_from_sql,
    schema_migration_plan,
    sync_models,
)
from pydsqlite.aio import AsyncDatabase


class Author(SyncModel, table="authors"):
    id: Annotated[int, PrimaryKey()]
    name: Annotated[str, Collate("NOCASE"), Field(max_length=100)]
    email: Annotated[str, Unique()]
    joined: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


class Post(SyncModel, table="posts", indexes=[Index("author_id", "published")]):
    id: int = Field(default=None, primary_key=True)  # None: SQLite assigns the key
    author_id: Annotated[int, ForeignKey(Author, on_delete="cascade")]
    title: Annotated[str, RenamedFrom("headline")]
    published: bool = False
    slug: str = Field(default="", index=True)
    body: Annotated[str, LWW()] = ""


class Tag(SyncModel, table="tags", primary_key=("post_id", "name"), strict=True, without_rowid=True):
    post_id: int = Field(foreign_key="posts.id", on_delete="cascade")
    name: str = Field(renamed_from=("label", "tag"), collate="NOCASE")


class Counter(SyncModel, table=True, renamed_from="counters_v1"):
    id: Annotated[int, PrimaryKey(autoincrement=True)]
    total: int = Field(default=0, ge=0, lww=True)
    note: Optional[str] = Field(default=None, unique=True)


class Task(SyncModel, table="tasks"):
    id: Annotated[str, PrimaryKey()]
    title: Annotated[str, LWW()]
    done: Annotated[bool, LWW()] = False


MODELS: list[type[SyncModel]] = [Author, Post, Tag, Counter, Task]


def migrate(conn: sqlite3.Connection) -> MigrationPlan:
    plan = model_migration_plan(conn, MODELS)
    assert_type(plan.sql, str)
    assert_type(plan.is_empty, bool)
    sync_models(conn, MODELS)
    assert sync_models(conn, MODELS, allow_destructive=False, busy_timeout=5.0).is_empty
    history = migration_history(conn)
    assert_type(history, list[AppliedMigration])
    return plan


def desired_from_sql(conn: sqlite3.Connection) -> MigrationPlan:
    desired = schema_from_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);")
    assert_type(desired, Schema)
    return schema_migration_plan(conn, desired)


def rows(db: Database) -> None:
    ann = db.insert(Author(id=1, name="Ann", email="ann@example.com"))
    assert_type(ann, Author)
    post = db.insert(Post(author_id=ann.id, title="Hello"))
    assert_type(post, Post)
    assert_type(post.id, int)
    assert_type(db.insert_many([Post(author_id=1, title=f"p{n}") for n in range(3)]), int)
    assert_type(db.upsert(Tag(post_id=post.id, name="intro")), Tag)

    found = db.get(Post, post.id)
    assert_type(found, Optional[Post])
    if found is not None:
        assert_type(found.title, str)
    assert_type(db.get(Tag, (post.id, "intro")), Optional[Tag])

    posts = db.select(Post, "published = ?", (False,), order_by="-id", limit=10)
    assert_type(posts, list[Post])
    titles: list[str] = [p.title for p in db.select(Post, (col("author_id") == 1) & ~(col("title") == "x"))]
    assert titles
    streamed = db.iter_select(Author, order_by="name")
    assert_type(streamed, Iterator[Author])
    assert_type(db.count(Post, col("title").like("p%")), int)

    assert_type(db.update(Post, post.id, published=True), Post)
    post.body = "changed"
    assert_type(db.update(post), Post)
    assert_type(db.delete(Tag, (post.id, "intro")), bool)
    assert_type(db.delete(post), bool)

    with db.transaction() as tx:
        assert_type(tx, Database)
        tx.insert(Counter(id=1))
        with tx.transaction():
            tx.update(Counter, 1, total=2)


def replicas(phone: Database, laptop: Database) -> None:
    key = str(uuid.uuid4())
    phone.insert(Task(id=key, title="buy milk"))
    changes = phone.changes_since()
    assert_type(changes, ChangeSet)
    assert_type(laptop.apply_changes(ChangeSet.from_json(changes.to_json())), int)
    assert_type(changes.cursor, int)
    clock = laptop.clock
    assert_type(clock, HLC)
    assert_type(clock.now(), Timestamp)
    laptop.apply_changes(phone.changes_since(None, [Task]), models=[Task])


async def async_rows() -> None:
    async with aiosqlite.connect(":memory:") as conn:
        assert_type(await aio.model_migration_plan(conn, [Author, Post]), MigrationPlan)
        await aio.sync_models(conn, [Author, Post])
        db = AsyncDatabase(conn)
        ann = await db.insert(Author(id=1, name="Ann", email="ann@example.com"))
        assert_type(ann, Author)
        post = await db.insert(Post(author_id=ann.id, title="Hello"))
        assert_type(await db.get(Post, post.id), Optional[Post])
        assert_type(await db.select(Post, order_by="id"), list[Post])
        assert_type(await db.update(Post, post.id, published=True), Post)
        assert_type(await db.upsert(post), Post)
        async with db.transaction() as tx:
            assert_type(tx, AsyncDatabase)
            assert_type(await tx.delete(Post, post.id), bool)
        rows = db.iter_select(Author)
        assert_type(rows, AsyncIterator[Author])
        assert [author.name async for author in rows] == ["Ann"]
        assert_type(await db.clock(), HLC)


def main() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    assert desired_from_sql(sqlite3.connect(":memory:")).sql
    with Database(conn) as db:
        rows(db)
    phone, laptop = Database(sqlite3.connect(":memory:")), Database(sqlite3.connect(":memory:"))
    for replica in (phone, laptop):
        sync_models(replica.conn, [Task])
    replicas(phone, laptop)
    asyncio.run(async_rows())
    print("ok")


if __name__ == "__main__":
    main()
