"""A FastAPI app whose request and response schemas share fields with the table model.

Run it with ``uvicorn docs.examples.fastapi_app:app`` (set HEROES_DB to choose the file).
The table model adds only storage details (key, unique index); FastAPI sees plain
Pydantic models, and nothing of the database leaks into the OpenAPI schema.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field, field_validator

import pydsqlite
from pydsqlite import ConstraintError, Database, SyncModel, Unique

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
async def lifespan(app: FastAPI):
    pydsqlite.sync_models(DATABASE, [Hero])  # near-free when nothing changed
    yield


app = FastAPI(lifespan=lifespan)


def get_db() -> Iterator[Database]:
    with Database(sqlite3.connect(DATABASE, check_same_thread=False)) as db:
        try:
            yield db
        finally:
            db.conn.close()


@app.post("/heroes", response_model=HeroRead, status_code=201)
def create_hero(hero: HeroCreate, db: Database = Depends(get_db)) -> Hero:
    try:
        return db.insert(Hero(**hero.model_dump()))
    except ConstraintError as error:
        raise HTTPException(status_code=409, detail=str(error)) from error


@app.get("/heroes/{hero_id}", response_model=HeroRead)
def read_hero(hero_id: int, db: Database = Depends(get_db)) -> Hero:
    hero = db.get(Hero, hero_id)
    if hero is None:
        raise HTTPException(status_code=404, detail="hero not found")
    return hero


@app.get("/heroes", response_model=list[HeroRead])
def list_heroes(offset: int = 0, limit: int = 100, db: Database = Depends(get_db)) -> list[Hero]:
    return db.select(Hero, order_by="id", limit=limit, offset=offset)


@app.patch("/heroes/{hero_id}", response_model=HeroRead)
def update_hero(hero_id: int, changes: HeroUpdate, db: Database = Depends(get_db)) -> Hero:
    try:
        return db.update(Hero, hero_id, **changes.model_dump(exclude_unset=True))
    except pydsqlite.RowNotFoundError as error:
        raise HTTPException(status_code=404, detail="hero not found") from error


@app.delete("/heroes/{hero_id}", status_code=204)
def delete_hero(hero_id: int, db: Database = Depends(get_db)) -> None:
    if not db.delete(Hero, hero_id):
        raise HTTPException(status_code=404, detail="hero not found")
