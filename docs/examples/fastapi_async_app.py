"""The heroes API again, async: every endpoint a coroutine, one AsyncDatabase shared by all requests.

Run it with ``uvicorn docs.examples.fastapi_async_app:app`` (set HEROES_DB to choose the file;
needs ``pip install 'pydsqlite[aio,fastapi]'``). The lifespan opens the database and migrates it
before the first request; concurrent requests share the connection, and pydsqlite keeps each
request's writes apart. Bad input is answered 422 by FastAPI's own validation, a write SQLite
refuses (a taken secret name) 409, a missing hero 404.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

import pydsqlite
from pydsqlite import ConstraintError, RowNotFoundError, SyncModel, Unique, aio
from pydsqlite.aio import AsyncDatabase

DATABASE = os.environ.get("HEROES_DB", "heroes.db")


class HeroBase(BaseModel):
    """Fields shared by the API models and the table."""

    name: str = Field(min_length=1, max_length=50)
    secret_name: str
    age: Optional[int] = Field(default=None, ge=0)


class HeroCreate(HeroBase):
    """What a client sends to create a hero."""


def offered_without_null(schema: dict[str, Any]) -> None:
    """A field's JSON schema without its null alternative (the validator below refuses null)."""
    schema.update(next(option for option in schema.pop("anyOf") if option != {"type": "null"}))


class HeroUpdate(BaseModel):
    """A partial update: send only the fields to change; of those, only age may be null (the table
    holds no null name or secret name, so a null is answered 422 like any invalid value, and the
    schema does not offer it: the default None only means "left out")."""

    name: Optional[str] = Field(default=None, min_length=1, max_length=50, json_schema_extra=offered_without_null)
    secret_name: Optional[str] = Field(default=None, json_schema_extra=offered_without_null)
    age: Optional[int] = Field(default=None, ge=0)

    @field_validator("name", "secret_name")
    @classmethod
    def not_null(cls, value: Optional[str]) -> str:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class HeroRead(HeroBase):
    """What the API returns."""

    id: int


class Hero(HeroBase, SyncModel, table="heroes"):
    """The table: the shared fields plus a key assigned by SQLite and a unique index."""

    id: int = pydsqlite.Field(default=None, primary_key=True)
    secret_name: Annotated[str, Unique()]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncDatabase(DATABASE) as db:  # one connection for the app's life, closed at shutdown
        await aio.sync_models(db, [Hero])  # near-free when nothing changed
        app.state.db = db
        yield


app = FastAPI(lifespan=lifespan)


@app.exception_handler(ConstraintError)
async def constraint_refused(request: Request, error: ConstraintError) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(error)})


@app.exception_handler(RowNotFoundError)
async def row_not_found(request: Request, error: RowNotFoundError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": "hero not found"})


def get_db(request: Request) -> AsyncDatabase:
    return request.app.state.db  # type: ignore[no-any-return]


Db = Annotated[AsyncDatabase, Depends(get_db)]


@app.post("/heroes", response_model=HeroRead, status_code=201)
async def create_hero(hero: HeroCreate, db: Db) -> Hero:
    return await db.insert(Hero(**hero.model_dump()))


@app.post("/heroes/batch", response_model=list[HeroRead], status_code=201)
async def create_heroes(heroes: list[HeroCreate], db: Db) -> list[Hero]:
    """All or none: one refused hero (409) leaves every other one unwritten."""
    async with db.transaction():
        return [await db.insert(Hero(**hero.model_dump())) for hero in heroes]


@app.get("/heroes/{hero_id}", response_model=HeroRead)
async def read_hero(hero_id: int, db: Db) -> Hero:
    hero = await db.get(Hero, hero_id)
    if hero is None:
        raise HTTPException(status_code=404, detail="hero not found")
    return hero


@app.get("/heroes", response_model=list[HeroRead])
async def list_heroes(db: Db, offset: int = 0, limit: int = 100) -> list[Hero]:
    return await db.select(Hero, order_by="id", limit=limit, offset=offset)


@app.patch("/heroes/{hero_id}", response_model=HeroRead)
async def update_hero(hero_id: int, changes: HeroUpdate, db: Db) -> Hero:
    return await db.update(Hero, hero_id, **changes.model_dump(exclude_unset=True))  # type: ignore[no-any-return]


@app.delete("/heroes/{hero_id}", status_code=204)
async def delete_hero(hero_id: int, db: Db) -> None:
    if not await db.delete(Hero, hero_id):
        raise HTTPException(status_code=404, detail="hero not found")
