"""Models as API schemas: table models' JSON schema equals a plain model's; the FastAPI example runs."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel
from pydantic import Field as PydanticField

from pydsqlite import LWW, Field, Index, PrimaryKey, RenamedFrom, SyncModel, Unique

from .helpers import require

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "fastapi_app.py"


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


def test_fastapi_example_app(tmp_path, monkeypatch):
    require("fastapi")
    require("httpx")
    from fastapi.testclient import TestClient

    monkeypatch.setenv("HEROES_DB", str(tmp_path / "heroes.db"))
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastapi_app_example"] = module
    try:
        spec.loader.exec_module(module)
        with TestClient(module.app) as client:
            created = client.post("/heroes", json={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30})
            assert created.status_code == 201, created.text
            hero = created.json()
            assert hero == {"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30, "id": 1}
            assert client.post("/heroes", json={"name": "", "secret_name": "x"}).status_code == 422
            assert client.post("/heroes", json={"name": "Copy", "secret_name": "Dive Wilson"}).status_code == 409
            assert client.patch("/heroes/1", json={"age": 31}).json()["age"] == 31
            assert client.patch("/heroes/1", json={"age": -1}).status_code == 422
            assert client.get("/heroes/1").json()["age"] == 31
            assert client.get("/heroes/2").status_code == 404
            assert [h["id"] for h in client.get("/heroes").json()] == [1]
            schema = client.get("/openapi.json").json()["components"]["schemas"]
            assert "primary_key" not in str(schema) and "unique" not in str(schema).lower()
            assert client.delete("/heroes/1").status_code == 204
            assert client.delete("/heroes/1").status_code == 404
    finally:
        sys.modules.pop("fastapi_app_example", None)
