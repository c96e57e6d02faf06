"""The ``pydsqlite`` command: inspect a database, plan or apply a migration, diff two schemas.

Exit codes: 0 nothing to do (or done), 2 changes pending (``plan`` and ``diff``), 1 error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel

from .errors import PydsqliteError
from .introspect import introspect
from .migration import MigrationPlan
from .model import registered_models, table_options
from .schema import Schema
from .sql_source import connect_read_only, schema_from_database, schema_from_sql
from .sync import model_migration_plan, schema_migration_plan, sync_models, sync_schema

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2


class CommandError(Exception):
    """A problem with the command line's input (bad path, module, file): printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CommandError, PydsqliteError, sqlite3.Error, OSError) as error:
        if args.verbose:
            traceback.print_exc()
        print(f"pydsqlite: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pydsqlite: interrupted; nothing was changed", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pydsqlite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="print the live schema as SQL or JSON")
    inspect.add_argument("database")
    inspect.add_argument("--json", action="store_true", help="JSON instead of SQL")
    inspect.set_defaults(handler=_inspect)

    for name, helptext in (("plan", "show the migration that would be applied"), ("sync", "apply the migration")):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("database")
        source = command.add_mutually_exclusive_group(required=True)
        source.add_argument("--models", metavar="MODULE[:NAME,...]", help="table models from an importable module")
        source.add_argument("--to", metavar="SCHEMA", help="desired schema: a .sql file or another SQLite database")
        if name == "plan":
            output = command.add_mutually_exclusive_group()
            output.add_argument("--sql", action="store_true", help="print the SQL script only")
            output.add_argument("--json", action="store_true", help="print the plan as JSON")
            command.set_defaults(handler=_plan)
        else:
            command.add_argument("--allow-destructive", action="store_true", help="apply drops and lossy conversions")
            command.add_argument("--yes", action="store_true", help="do not ask for confirmation")
            command.add_argument("--create", action="store_true", help="create the database file if it does not exist")
            command.set_defaults(handler=_sync)

    diff = commands.add_parser("diff", help="the plan that turns schema A into schema B (each a .sql file or a database)")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument("--sql", action="store_true", help="print the SQL script only")
    diff.set_defaults(handler=_diff)
    return parser


def _inspect(args: argparse.Namespace) -> int:
    with closing(_open_database(args.database)) as conn:
        if args.json:
            print(json.dumps(schema_to_json(introspect(conn)), indent=2))
        else:
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "AND tbl_name NOT LIKE '\\_pydsqlite%' ESCAPE '\\' ORDER BY rowid"
            ):
                print(f"{sql};")
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    with closing(_open_database(args.database)) as conn:
        plan = _preview(conn, args)
    if args.json:
        print(json.dumps(plan_to_json(plan), indent=2))
    elif args.sql:
        print(plan.sql, end="")
    else:
        print(plan)
    return EXIT_PENDING if not plan.is_empty else EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    if not args.create and not os.path.exists(args.database):
        raise CommandError(f"database {args.database!r} does not exist (pass --create to start one)")
    with closing(_open_database(args.database, create=args.create)) as conn:
        plan = _preview(conn, args)
        print(plan)
        if plan.is_empty:
            return EXIT_OK
        if not args.yes and sys.stdin.isatty() and not _confirm("Apply this migration?"):
            print("Nothing was changed.")
            return EXIT_PENDING
        reporter = ProgressReporter(sys.stderr)
        if args.models:
            applied = sync_models(conn, _load_models(args.models), allow_destructive=args.allow_destructive, progress=reporter)
        else:
            applied = sync_schema(conn, _load_schema(args.to), allow_destructive=args.allow_destructive, progress=reporter)
        reporter.finish()
        print(f"Applied {len(applied.operations)} operation{'s' if len(applied.operations) != 1 else ''}.")
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    source = _load_schema(args.a)
    with closing(sqlite3.connect(":memory:")) as scratch:
        _materialize(scratch, args.a, source)
        plan = schema_migration_plan(scratch, _load_schema(args.b))
    print(plan.sql if args.sql else plan, end="" if args.sql else "\n")
    return EXIT_PENDING if not plan.is_empty else EXIT_OK


def _preview(conn: sqlite3.Connection, args: argparse.Namespace) -> MigrationPlan:
    if args.models:
        return model_migration_plan(conn, _load_models(args.models))
    return schema_migration_plan(conn, _load_schema(args.to))


def _open_database(path: str, *, create: bool = False) -> sqlite3.Connection:
    if not os.path.exists(path) and not create:
        raise CommandError(f"database {path!r} does not exist")
    conn = sqlite3.connect(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        conn.close()
        raise CommandError(f"{path!r} is not a SQLite database ({error})") from None
    return conn


def _load_models(spec: str) -> list[type[BaseModel]]:
    """``package.module`` (every table model it defines) or ``package.module:Name,Other``."""
    module_name, _, names = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import models module {module_name!r}: {error}") from None
    if names:
        models = []
        for name in names.split(","):
            model = getattr(module, name.strip(), None)
            if not (isinstance(model, type) and issubclass(model, BaseModel) and table_options(model)):
                raise CommandError(f"{module_name}:{name.strip()} is not a table model")
            models.append(model)
        return models
    models = [model for model in registered_models() if model.__module__ == module.__name__]
    if not models:
        raise CommandError(f"module {module_name!r} defines no table models")
    return models


def _load_schema(path: str) -> Schema:
    if not os.path.exists(path):
        raise CommandError(f"schema {path!r} does not exist")
    if path.endswith(".sql"):
        return schema_from_sql(Path(path).read_text(encoding="utf-8"))
    with closing(_open_database(path)):
        pass
    return schema_from_database(path)


def _materialize(scratch: sqlite3.Connection, path: str, schema: Schema) -> None:
    """Load schema A into the scratch database: the SQL as written, or a copy of the database's schema."""
    if path.endswith(".sql"):
        scratch.executescript(Path(path).read_text(encoding="utf-8"))
        return
    with closing(connect_read_only(path)) as source:
        for (sql,) in source.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY type = 'table' DESC, rowid"
        ):
            scratch.execute(sql)


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class ProgressReporter:
    """Rows copied per rebuilt table: a bar on a terminal, a plain line per 10% otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_tenth: dict[str, int] = {}
        self.open_bar = False

    def __call__(self, table: str, copied: int, total: int) -> None:
        fraction = copied / total if total else 1.0
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r{table}: [{'#' * filled}{'.' * (30 - filled)}] {copied}/{total} rows")
            self.open_bar = copied < total
            if not self.open_bar:
                self.stream.write("\n")
        else:
            tenth = int(fraction * 10)
            if self.last_tenth.get(table) != tenth:
                self.last_tenth[table] = tenth
                self.stream.write(f"{table}: copied {copied} of {total} rows\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.open_bar:
            self.stream.write("\n")
            self.open_bar = False


def schema_to_json(schema: Schema) -> dict:
    """The schema as plain JSON data (tables with columns, keys, indexes; views; triggers)."""
    def clean(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
        if isinstance(value, (tuple, list)):
            return [clean(item) for item in value]
        return value

    return clean(schema)  # type: ignore[return-value]


def plan_to_json(plan: MigrationPlan) -> dict:
    return {
        "is_empty": plan.is_empty,
        "problems": list(plan.problems),
        "operations": [
            {
                "kind": op.kind,
                "table": op.table,
                "description": op.description,
                "destructive": op.destructive,
                "row_count": op.row_count,
                "findings": list(op.findings),
                "statements": list(op.statements),
            }
            for op in plan.operations
        ],
    }
