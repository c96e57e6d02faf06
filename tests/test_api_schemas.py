"""Models as API schemas: table models' JSON schema equals a plain model's; the FastAPI example runs."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sqlite3
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel
from pydantic import Field as PydanticField

from pydsqlite import LWW, Field, Index, PrimaryKey, RenamedFrom, SyncModel, Unique

from .helpers import require

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "fastapi_app.py"
ASYNC_EXAMPLE = EXAMPLE.with_name("fastapi_async_app.py")


class PlainUser(BaseModel):
    id: int
    email: str = PydanticField(max_length=100)
    name: Optional[str] = None
    karma: float = 0.0
    kind: Literal["admin", "user"] = "user"
    key: uuid.UUID
    joined: dt.datetime
    tags: list[str] = PydanticField(default_factory=list)
    parent: Optional[int] = None


class TableUser(SyncModel, table="api_users", indexes=[Index("name", "karma")], strict=True):
    id: Annotated[int, PrimaryKey()]
    email: Annotated[str, Unique(), PydanticField(max_length=100)]
    name: Annotated[Optional[str], RenamedFrom("full_name"), Index()] = None
    karma: Annotated[float, LWW()] = 0.0
    kind: Literal["admin", "user"] = "user"
    key: uuid.UUID = Field(unique=True)
    joined: dt.datetime = Field(index=True)
    tags: list[str] = PydanticField(default_factory=list)
    parent: Optional[int] = Field(None, foreign_key="api_users.id", on_delete="set null")


def test_json_schema_equals_the_plain_model_field_by_field():
    ours = TableUser.model_json_schema()
    theirs = PlainUser.model_json_schema()
    assert set(ours["properties"]) == set(theirs["properties"])
    for name, schema in theirs["properties"].items():
        assert ours["properties"][name] == schema, name
    assert ours["required"] == theirs["required"]
    assert {k: v for k, v in ours.items() if k not in ("title", "properties")} == {
        k: v for k, v in theirs.items() if k not in ("title", "properties")
    }
    assert TableUser.model_json_schema(mode="serialization")["properties"] == PlainUser.model_json_schema(mode="serialization")["properties"]
    row = dict(id=1, email="a@x", key=uuid.UUID(int=1), joined=dt.datetime(2024, 1, 1))
    assert TableUser(**row).model_dump() == PlainUser(**row).model_dump()


def load_example(path: Path, name: str, monkeypatch):
    """The example module at ``path``, imported afresh (it reads HEROES_DB at import)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def check_hero_crud(client) -> None:
    """What both examples answer: created, validated (422), refused (409), found or not (404)."""
    created = client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30})
    assert created.status_code == 201, created.text
    hero = created.json()
    assert hero == {"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30, "id": 1}
    assert client.post("/heroes", json={"name": "", "secret_name": "x"}).status_code == 422
    assert client.post("/heroes", json={"name": "Copy", "secret_name": "Dive Wilson"}).status_code == 409
    assert client.patch("/heroes/1", json={"age": 31}).json()["age"] == 31
    assert client.patch("/heroes/1", json={"age": -1}).status_code == 422
    for null in ({"name": None}, {"secret_name": None}):  # columns that hold no NULL: 422, not a server error
        assert client.patch("/heroes/1", json=null).status_code == 422
    assert client.patch("/heroes/1", json={"age": None}).json()["age"] is None
    assert client.patch("/heroes/1", json={"age": 31}).json()["age"] == 31
    assert client.get("/heroes/1").json()["age"] == 31
    assert client.get("/heroes/2").status_code == 404
    assert [h["id"] for h in client.get("/heroes").json()] == [1]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "primary_key" not in str(schema) and "unique" not in str(schema).lower()
    update = schema["HeroUpdate"]["properties"]  # what a client may send is what the table can hold
    assert update["name"]["type"] == "string" and update["secret_name"]["type"] == "string" and "anyOf" not in update["name"]
    assert {"type": "null"} in update["age"]["anyOf"]
    assert "required" not in schema["HeroUpdate"]
    assert client.delete("/heroes/1").status_code == 204
    assert client.delete("/heroes/1").status_code == 404


def test_fastapi_example_app(tmp_path, monkeypatch):
    require("fastapi")
    require("httpx")
    from fastapi.testclient import TestClient

    monkeypatch.setenv("HEROES_DB", str(tmp_path / "heroes.db"))
    module = load_example(EXAMPLE, "fastapi_app_example", monkeypatch)
    with TestClient(module.app) as client:
        check_hero_crud(client)


def test_async_fastapi_example_app_keeps_concurrent_requests_apart(tmp_path, monkeypatch):
    require("fastapi")
    require("httpx")
    require("aiosqlite")
    from fastapi.testclient import TestClient

    path = tmp_path / "heroes.db"
    monkeypatch.setenv("HEROES_DB", str(path))
    module = load_example(ASYNC_EXAMPLE, "fastapi_async_app_example", monkeypatch)
    with TestClient(module.app) as client:
        check_hero_crud(client)
        assert client.patch("/heroes/1", json={"age": 1}).status_code == 404  # RowNotFoundError
        rusty = client.post("/heroes", json={"name": "Rusty-Man", "secret_name": "Tommy Sharp"}).json()["id"]
        assert client.patch(f"/heroes/{rusty}", json={"secret_name": "Dive Wilson"}).status_code == 200
        batch = [{"name": f"Hero {n}", "secret_name": f"secret {n}"} for n in range(5)]
        assert client.post("/heroes/batch", json=[*batch, {"name": "Clash", "secret_name": "Dive Wilson"}]).status_code == 409
        assert [h["name"] for h in client.get("/heroes").json()] == ["Rusty-Man"]  # none of the batch
        assert [h["id"] for h in client.post("/heroes/batch", json=batch).json()] == [rusty + n for n in range(1, 6)]

        def request(n: int) -> tuple[int, list[str]]:
            """Batches of three (every other one repeats a secret name inside itself, so it is refused
            whole) and single heroes (every odd one claims the same secret name: one of them gets it)."""
            if n % 4 == 0:
                secrets = ["dup", f"b{n}", "dup"] if n % 8 else [f"b{n}-{k}" for k in range(3)]
                heroes = [{"name": f"Batch {n}-{k}", "secret_name": secret} for k, secret in enumerate(secrets)]
                return client.post("/heroes/batch", json=heroes).status_code, [hero["name"] for hero in heroes]
            secret = "shared" if n % 2 else f"own {n}"
            return client.post("/heroes", json={"name": f"Racer {n}", "secret_name": secret}).status_code, [f"Racer {n}"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(request, range(48)))
        assert [status for n, (status, _) in enumerate(answers) if n % 4 == 0] == [201, 409] * 6
        assert sorted(status for n, (status, _) in enumerate(answers) if n % 2) == [201] + [409] * 23
        answered_created = {name for status, names in answers if status == 201 for name in names}
        assert len(answered_created) == 6 * 3 + 12 + 1
    with sqlite3.connect(path) as reader:  # committed: exactly what the API answered 201 for
        names = {name for (name,) in reader.execute("SELECT name FROM heroes")}
        assert names == answered_created | {"Rusty-Man", *(f"Hero {n}" for n in range(5))}
