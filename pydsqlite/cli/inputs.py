"""What a command reads: database files (opened with a lock wait Ctrl-C can interrupt, and named
precisely when SQLite cannot use them), and the models, data steps and schema files it names."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel

from ..engines.sqlite import connect_read_only
from ..errors import DataStepError, PydsqliteError
from ..migrate.execute import DEFAULT_BUSY_TIMEOUT_MS
from ..schema.model import registered_models, table_options
from ..schema.objects import Schema, fold_name
from ..sql.source import schema_from_database, schema_from_sql
from .output import report

READ_BUSY_TIMEOUT = 5.0
"""Seconds inspect, plan and diff wait for another process's lock (the sqlite3 module's default)."""
SYNC_BUSY_TIMEOUT = DEFAULT_BUSY_TIMEOUT_MS / 1000
"""Seconds sync waits for the write lock (as sync_models does)."""
LOCK_POLL_SECONDS = 0.2
"""SQLite's own wait for a lock cannot be interrupted: the command waits in slices this long."""

SQLITE_HEADER = b"SQLite format 3\x00"

T = TypeVar("T")


class CommandError(Exception):
    """A problem with the command line's input (bad path, module, file), printed as its message."""


def lock_wait_seconds(args: argparse.Namespace) -> float:
    """How long a command waits for another process's lock: --busy-timeout, or the command's default."""
    if args.busy_timeout is not None:
        seconds: float = args.busy_timeout
        return seconds
    return SYNC_BUSY_TIMEOUT if args.command == "sync" else READ_BUSY_TIMEOUT


def use_database(path: str, seconds: float, action: Callable[[], T], *, retry: bool = True) -> T:
    """Run ``action`` on the database at ``path``, trying again while another process holds its lock
    (up to ``seconds``), and say what is wrong when SQLite cannot use the file.

    Connections wait only LOCK_POLL_SECONDS inside SQLite, whose wait cannot be interrupted, so
    Ctrl-C works at once and the user is told why nothing happens.
    """
    deadline = time.monotonic() + seconds
    told = False
    while True:
        try:
            return action()
        except DataStepError:
            raise  # the library names the step and what it did (its cause is the authorizer's refusal, not the file's)
        except (PydsqliteError, sqlite3.Error) as error:
            cause = sqlite_cause(error)
            code = cause.sqlite_errorcode & 0xFF if cause is not None else None
            if code == sqlite3.SQLITE_NOTADB:
                raise CommandError(f"{path!r} is not a SQLite database") from error
            if code == sqlite3.SQLITE_CORRUPT:
                raise CommandError(f"database {path!r} is damaged: {cause}") from error
            if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
                raise CommandError(f"cannot open database {path!r}: {cause}") from error
            if code == sqlite3.SQLITE_READONLY:
                raise CommandError(_why_read_only(path, cause)) from error
            if code != sqlite3.SQLITE_BUSY:
                raise
            if not retry or time.monotonic() >= deadline:
                raise CommandError(
                    f"database {path!r} is locked: another process holds its lock (waited {seconds:g} s); "
                    "try again when it is done, or wait longer with --busy-timeout SECONDS"
                ) from error
        if not told:
            report(f"database {path!r} is locked by another process; waiting up to {seconds:g} s (Ctrl-C to stop)")
            told = True


def _why_read_only(path: str, cause: sqlite3.Error | None) -> str:
    """What "attempt to write a readonly database" means for ``path``: SQLite writes even to read
    when a crashed writer left a rollback journal (it must roll it back first) or, in WAL mode,
    to create the shared-memory file beside the database."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path + "-journal"):
        return (
            f"database {path!r} was left mid-write by a process that stopped: its rollback journal {path + '-journal'!r} "
            "must be rolled back before the database can be read, which a read-only command cannot do; open it once "
            "for writing (pydsqlite plan, or any sqlite3 connection that may write), which restores it"
        )
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError:
        header = b""
    if len(header) == 20 and header[18] == 2 and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"cannot read database {path!r}: it is in WAL mode, and SQLite must create {path + '-shm'!r} beside it "
            f"even to read it, but folder {folder!r} is not writable"
        )
    return f"cannot write to database {path!r}: {cause} (the file or its folder is read-only)"


def sqlite_cause(error: BaseException | None) -> sqlite3.Error | None:
    """The SQLite error behind ``error`` (our errors keep it as their cause)."""
    while error is not None and not isinstance(error, sqlite3.Error):
        error = error.__cause__ or error.__context__
    return error


def open_database(path: str, *, create: bool = False, read_only: bool = False) -> sqlite3.Connection:
    """A connection to an existing database file (or a new one with ``create``); whether it is a
    database at all shows at its first read, in ``use_database``."""
    if create and not os.path.exists(path):
        return sqlite3.connect(path, timeout=LOCK_POLL_SECONDS)
    file_header(path, "database")
    if not read_only:
        return sqlite3.connect(path, timeout=LOCK_POLL_SECONDS)
    conn = connect_read_only(path)
    conn.execute(f"PRAGMA busy_timeout = {round(LOCK_POLL_SECONDS * 1000)}")
    return conn


def file_header(path: str, what: str) -> bytes:
    """The first bytes of the file; a path that is missing, a folder or unreadable is named as such."""
    try:
        with open(path, "rb") as file:
            return file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise CommandError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise CommandError(f"{what} {path!r} is a folder, not a file") from None
    except PermissionError:
        raise CommandError(f"cannot read {what} {path!r}: permission denied") from None


def check_writable(path: str) -> None:
    """SQLite opens a file it may not write as read-only and fails only at the first write: say so before planning."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot create database {path!r}: folder {folder!r} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CommandError(f"cannot write to database {path!r}: the file is read-only")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(
            f"cannot write to database {path!r}: folder {folder!r} is read-only (SQLite writes its journal next to the database)"
        )


def remove_if_empty(path: str) -> None:
    """Undo ``--create`` when nothing was applied: an empty file is left only if it was asked for."""
    try:
        if os.path.getsize(path) == 0:
            os.remove(path)
    except OSError:
        pass


def _table_models_by_name(module: ModuleType) -> dict[str, type[BaseModel]]:
    """The table models a module exposes by name, its own or imported."""
    return {
        name: value for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseModel) and table_options(value) is not None
    }


def load_models(spec: str) -> list[type[BaseModel]]:
    """``package.module`` (every table model it defines) or ``package.module:Name,Other``."""
    module_name, colon, names = spec.partition(":")
    module = import_module(module_name, "--models", "models")
    if colon:
        models: list[type[BaseModel]] = []
        for name in (name.strip() for name in names.split(",")):
            if not name:
                raise CommandError(f"--models {spec!r}: a model name is missing after ':' or ','")
            model = getattr(module, name, None)
            if model is None:
                defined = sorted(_table_models_by_name(module))
                close = difflib.get_close_matches(name, defined, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise CommandError(
                    f"{module_name}:{name}: module {module_name} defines no {name!r} ({hint}its table models: {', '.join(defined) or 'none'})"
                )
            if not (isinstance(model, type) and issubclass(model, BaseModel) and table_options(model)):
                raise CommandError(f"{module_name}:{name} is not a table model (a {type(model).__name__})")
            models.append(model)
        return models
    # every table model the module exposes by name, its own or imported (a package's __init__ re-exporting
    # its submodules' models: leaving those out would plan their tables' drop), and the ones it defines
    # without a module-level name (in a function)
    named = list(_table_models_by_name(module).values())
    unnamed = [model for model in registered_models() if model.__module__ == module.__name__]
    models = list(dict.fromkeys([*named, *unnamed]))
    if not models:
        raise CommandError(
            f"module {module_name!r} defines no table models (a table model is a SyncModel subclass, like class Item(SyncModel, table=\"items\"))"
        )
    exposed = {id(value): name for name, value in vars(module).items() if isinstance(value, type)}
    by_table: dict[str, tuple[str, list[str]]] = {}
    for model in models:
        options = table_options(model)
        assert options is not None
        by_table.setdefault(fold_name(options.table), (options.table, []))[1].append(exposed.get(id(model), model.__qualname__))
    for table, declared in by_table.values():
        if len(declared) > 1:
            raise CommandError(
                f"module {module_name!r} declares table {table!r} with several models ({', '.join(declared)}); name the "
                f"ones to use, as in --models {module_name}:{declared[-1]}"
            )
    return models


def load_data_steps(spec: str | None) -> Mapping[str, Any] | None:
    """``package.module:NAME``, a dict of data steps (checked by ``sync_models`` like any)."""
    if spec is None:
        return None
    module_name, _, name = spec.partition(":")
    if not name.strip():
        raise CommandError(f"--data-steps {spec!r}: name the dict of data steps in the module, as in {module_name}:DATA_STEPS")
    steps = getattr(import_module(module_name, "--data-steps", "data steps"), name.strip(), None)
    if isinstance(steps, Mapping):
        return steps
    if steps is None:
        found = "nothing"
    elif isinstance(steps, type):
        found = f"class {steps.__name__}"
    else:
        found = f"a {type(steps).__name__}"
    raise CommandError(f"{module_name}:{name.strip()} is {found}, not a dict of data steps (name -> function)")


def import_module(module_name: str, option: str, what: str) -> ModuleType:
    """The module named after ``option``, imported from the current folder or the Python path."""
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module_path = Path(module_name).with_suffix("") if module_name.endswith(".py") else Path(module_name)
        hint = f" such as {'.'.join(module_path.parts)!r}" if not module_path.is_absolute() else ""
        raise CommandError(f"{option} takes a module name{hint}, importable from the current folder, not a file path")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise CommandError(
                f"cannot import {what} module {module_name!r}: no such module in the current folder or on the Python path"
            ) from error
        raise CommandError(f"cannot import {what} module {module_name!r}: {error}") from error
    except Exception as error:  # the module's own code failed: say what and where
        raise CommandError(f"cannot import {what} module {module_name!r}: {failure(error)}") from error


def failure(error: Exception) -> str:
    """``Type at file, line N: message``, the place being the last one in the user's code
    (not in Python, an installed package or pydsqlite)."""
    if isinstance(error, SyntaxError):  # it names its place itself
        return f"{type(error).__name__}: {error}"
    elsewhere = ("<", sys.prefix, sys.base_prefix, str(Path(__file__).parents[1]))
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith(elsewhere)]
    if not frames:
        return f"{type(error).__name__}: {error}"
    filename = Path(frames[-1].filename)
    if filename.is_relative_to(Path.cwd()):
        filename = filename.relative_to(Path.cwd())
    return f"{type(error).__name__} at {filename}, line {frames[-1].lineno}: {error}"


def load_schema(path: str, args: argparse.Namespace) -> Schema:
    """The desired schema in a .sql file or a SQLite database."""
    if schema_kind(path) == "sql":
        try:
            return schema_from_sql(read_sql(path))
        except PydsqliteError as error:
            raise CommandError(f"schema {path!r} does not load: {sqlite_cause(error) or error}") from error
    with closing(open_database(path, read_only=True)) as conn:
        return use_database(path, lock_wait_seconds(args), lambda: schema_from_database(conn))


def schema_kind(path: str) -> str:
    """"database" or "sql", told apart by the file's first bytes (an empty file is an empty database)."""
    header = file_header(path, "schema")
    if header.startswith(SQLITE_HEADER) or (not header and not path.lower().endswith(".sql")):
        return "database"
    if path.lower().endswith(".sql"):
        return "sql"
    raise CommandError(f"schema {path!r} is neither a SQLite database nor a .sql file")


def read_sql(path: str) -> str:
    """A schema file's text; a byte-order mark some editors write at the start is not part of it."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CommandError(f"schema {path!r} is not UTF-8 text: {error}") from None


