"""The pydsqlite command: inspect a SQLite database, plan or apply a migration to table models
or to a desired schema, and diff two schemas.

Exit codes: 0 nothing to do (or done), 2 changes pending (plan, diff, or sync answered no),
1 error, 130 interrupted (Ctrl-C), 141 output closed early (as in "pydsqlite plan ... | head").
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import sqlite3
import sys
import tomllib
import traceback
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel

from ..engines import engine_for
from ..errors import PlanChangedError, PydsqliteError
from ..migrate.introspect import introspect, shadow_tables
from ..migrate.migration import MigrationPlan
from ..migrate.sync import model_migration_plan, schema_migration_plan, sync_models, sync_schema
from ..schema.objects import Schema, fold_name
from ..sql.source import create_capture_triggers, load_schema_sql
from .inputs import (
    READ_BUSY_TIMEOUT,
    SYNC_BUSY_TIMEOUT,
    CommandError,
    check_writable,
    load_data_steps,
    load_models,
    load_schema,
    lock_wait_seconds,
    open_database,
    read_sql,
    remove_if_empty,
    schema_kind,
    sqlite_cause,
    use_database,
)
from .output import ProgressReporter, count, discard_output, flush_stdout, plan_to_json, report, schema_to_json

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for a Unix tool whose reader went away

EXAMPLES = """\
examples:
  pydsqlite plan app.db --models app.models         what would change (exit code 2 if anything)
  pydsqlite sync app.db --models app.models --yes   apply it
  pydsqlite diff old.sql new.sql --sql              the SQL that turns one schema into the other
"""

def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status: int = args.handler(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        discard_output(sys.stdout, sys.stderr)
        return EXIT_OUTPUT_CLOSED
    except KeyboardInterrupt:
        report("interrupted; nothing was changed")
        return EXIT_INTERRUPTED
    except (CommandError, PydsqliteError, sqlite3.Error, OSError) as error:
        if args.verbose:
            flush_stdout()
            traceback.print_exc()
        report(f"error: {_describe(error)}")
        return EXIT_ERROR


class _ArgumentParser(argparse.ArgumentParser):
    """Usage mistakes exit with 1, an error: argparse's own 2 means "changes pending" here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="pydsqlite", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print the version and exit")
    _add_shared_options(parser, defaults=True)
    # The same options after the command name (pydsqlite plan ... --verbose); SUPPRESS keeps the
    # subcommand from resetting a value given before the command name.
    shared = _ArgumentParser(add_help=False)
    _add_shared_options(shared, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=description, parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter
        )

    inspect = command("inspect", "print the live schema as SQL or JSON", "Print the schema of DATABASE (without pydsqlite's own tables).")
    inspect.add_argument("database", metavar="DATABASE", help="a SQLite database file")
    inspect.add_argument("--json", action="store_true", help="JSON instead of SQL")
    inspect.set_defaults(handler=_inspect)

    plan = command(
        "plan", "show the migration that would be applied",
        "Show the migration that would bring DATABASE in line with the models or the schema,\n"
        "checked against its rows. Changes nothing. Exit code 2 when a migration is pending.",
    )
    sync = command(
        "sync", "apply the migration",
        "Show the migration, ask for confirmation on a terminal, and apply it in one transaction.\n"
        "Steps that lose data are refused unless --allow-destructive is given.",
    )
    for subcommand in (plan, sync):
        subcommand.add_argument("database", metavar="DATABASE", help="the SQLite database file to migrate")
        source = subcommand.add_mutually_exclusive_group(required=True)
        source.add_argument("--models", metavar="MODULE[:NAME,...]", help="table models from an importable module")
        source.add_argument("--to", metavar="SCHEMA", help="desired schema: a .sql file or another SQLite database")
        subcommand.add_argument(
            "--data-steps", metavar="MODULE:NAME", help="the dict of data steps (name -> function) of an importable module"
        )
        subcommand.add_argument(
            "--online", action="store_true",
            help="rebuild tables while other connections keep writing them (WAL databases only)",
        )
    plan.set_defaults(handler=_plan)
    sync.add_argument("--allow-destructive", action="store_true", help="apply drops and lossy conversions")
    sync.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sync.add_argument("--create", action="store_true", help="create the database file if it does not exist")
    sync.set_defaults(handler=_sync)

    diff = command(
        "diff", "the plan that turns schema A into schema B",
        "Show the migration that turns schema A into schema B, each a .sql file or a SQLite database.\n"
        "A database A is only read, and the plan is checked against its rows. Exit code 2 when they differ.",
    )
    diff.add_argument("a", metavar="A", help="the schema to start from")
    diff.add_argument("b", metavar="B", help="the schema to arrive at")
    diff.set_defaults(handler=_diff)
    for printing_a_plan in (plan, diff):
        output = printing_a_plan.add_mutually_exclusive_group()
        output.add_argument("--sql", action="store_true", help="print the SQL script only")
        output.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


class _PrintVersion(argparse.Action):
    """--version, looked up only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"pydsqlite {_version()}")
        parser.exit()


def _add_shared_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    parser.add_argument(
        "--verbose", action="store_true", default=False if defaults else argparse.SUPPRESS,
        help="print the traceback of an error",
    )
    parser.add_argument(
        "--busy-timeout", type=_seconds, metavar="SECONDS", default=None if defaults else argparse.SUPPRESS,
        help=f"how long to wait while another process holds the database lock "
        f"(default {READ_BUSY_TIMEOUT:g}, sync {SYNC_BUSY_TIMEOUT:g})",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}")
    return value


def _inspect(args: argparse.Namespace) -> int:
    with closing(open_database(args.database)) as conn:
        if args.json:
            schema = use_database(args.database, lock_wait_seconds(args), lambda: introspect(engine_for(conn)))
            print(json.dumps(schema_to_json(schema), indent=2))
        else:
            for sql in use_database(args.database, lock_wait_seconds(args), lambda: _schema_sql(conn)):
                print(f"{sql};")
    return EXIT_OK


def _schema_sql(conn: sqlite3.Connection) -> list[str]:
    """The SQL of the database's own objects: not SQLite's, pydsqlite's bookkeeping (its tables, and
    the triggers that capture deletes of synced tables, which write to one of them), nor the shadow
    tables of virtual tables (creating the virtual table creates them)."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND tbl_name NOT LIKE '\\_pydsqlite%' ESCAPE '\\' AND name NOT LIKE '\\_pydsqlite%' ESCAPE '\\' ORDER BY rowid"
    ).fetchall()
    shadows = shadow_tables(engine_for(conn), rows)
    return [sql for _, _, table_name, sql in rows if fold_name(table_name) not in shadows]


def _plan(args: argparse.Namespace) -> int:
    desired = _desired(args)
    steps = load_data_steps(args.data_steps)
    with closing(open_database(args.database)) as conn:
        plan = use_database(args.database, lock_wait_seconds(args), lambda: _preview(conn, desired, steps, args.online))
    _print_plan(plan, args)
    return EXIT_PENDING if not plan.is_empty else EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    path = args.database
    created = not os.path.exists(path)
    if created and not args.create:
        raise CommandError(f"database {path!r} does not exist (pass --create to start one)")
    check_writable(path)
    desired = _desired(args)
    steps = load_data_steps(args.data_steps)
    timeout = lock_wait_seconds(args)
    applied = False
    try:
        with closing(open_database(path, create=args.create)) as conn:
            plan = use_database(path, timeout, lambda: _preview(conn, desired, steps, args.online))
            print(plan)
            sys.stdout.flush()  # the plan is on screen (or in the log) before anything changes
            if plan.is_empty:
                return EXIT_OK
            while True:
                refused = plan.problems or (plan.destructive_operations and not args.allow_destructive)
                asked = not refused and not args.yes and sys.stdin.isatty()
                if asked and not _confirm("Apply this migration?"):
                    print("Nothing was changed.")
                    return EXIT_PENDING
                try:  # what the person said yes to, and nothing else, is applied
                    result = _apply_locked(conn, path, desired, steps, args, timeout, plan if asked else None)
                except PlanChangedError as changed:
                    plan = changed.plan  # the database changed while the question waited: show the new plan, ask again
                    print("The database changed since this plan was shown; nothing was changed. The plan now:")
                    print(plan)
                    sys.stdout.flush()
                    continue
                applied = True
                break
    finally:
        if created and not applied:
            remove_if_empty(path)
    applied_steps = f" and {count(len(result.data_steps), 'data step')}" if result.data_steps else ""
    print(f"Applied {count(len(result.operations), 'operation')}{applied_steps}.")
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    desired = load_schema(args.b, args)
    if schema_kind(args.a) == "sql":
        with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
            try:
                load_schema_sql(scratch, read_sql(args.a))
                create_capture_triggers(scratch)
            except PydsqliteError as error:
                raise CommandError(f"schema {args.a!r} does not load: {sqlite_cause(error) or error}") from error
            plan = _without_row_counts(schema_migration_plan(scratch, desired))
    else:
        with closing(open_database(args.a, read_only=True)) as source:
            plan = use_database(args.a, lock_wait_seconds(args), lambda: schema_migration_plan(source, desired))
    _print_plan(plan, args)
    return EXIT_PENDING if not plan.is_empty else EXIT_OK


def _without_row_counts(plan: MigrationPlan) -> MigrationPlan:
    """A schema file holds no rows, so its plan says nothing about rows (not "0 rows")."""
    operations = tuple(dataclasses.replace(operation, row_count=None) for operation in plan.operations)
    return dataclasses.replace(plan, operations=operations, checked=False)


def _print_plan(plan: MigrationPlan, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(plan_to_json(plan), indent=2))
    elif args.sql:
        print(plan.sql, end="")
    else:
        print(plan)


def _desired(args: argparse.Namespace) -> list[type[BaseModel]] | Schema:
    return load_models(args.models) if args.models else load_schema(args.to, args)


def _preview(
    conn: sqlite3.Connection, desired: list[type[BaseModel]] | Schema, steps: Mapping[str, Any] | None, online: bool = False
) -> MigrationPlan:
    if isinstance(desired, Schema):
        return schema_migration_plan(conn, desired, data_steps=steps, online=online)
    return model_migration_plan(conn, desired, data_steps=steps, online=online)


def _apply_locked(
    conn: sqlite3.Connection,
    path: str,
    desired: list[type[BaseModel]] | Schema,
    steps: Mapping[str, Any] | None,
    args: argparse.Namespace,
    timeout: float,
    approved: MigrationPlan | None,
) -> MigrationPlan:
    """Wait for the write lock (here, where Ctrl-C works, rather than inside SQLite), then apply,
    reporting the copies' progress; ``approved``: the plan that must still be the one to apply."""
    use_database(path, timeout, lambda: _take_write_lock(conn))
    reporter = ProgressReporter(sys.stderr)
    try:
        return use_database(path, timeout, lambda: _apply(conn, desired, steps, args, timeout, reporter, approved), retry=False)
    finally:
        reporter.finish()


def _apply(
    conn: sqlite3.Connection,
    desired: list[type[BaseModel]] | Schema,
    steps: Mapping[str, Any] | None,
    args: argparse.Namespace,
    busy_timeout: float,
    progress: ProgressReporter,
    approved: MigrationPlan | None,
) -> MigrationPlan:
    options = {
        "allow_destructive": args.allow_destructive, "busy_timeout": busy_timeout, "progress": progress, "online": args.online,
        "data_steps": steps, "expected_plan": approved,
    }
    if isinstance(desired, Schema):
        return sync_schema(conn, desired, **options)
    return sync_models(conn, desired, **options)


def _take_write_lock(conn: sqlite3.Connection) -> None:
    """Returns once the write lock is free (taking and releasing it changes nothing)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.rollback()


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    except KeyboardInterrupt:
        print()  # end the prompt's line before the message
        raise
    return answer.strip().lower() in ("y", "yes")


def _describe(error: BaseException) -> str:
    if isinstance(error, CommandError):
        return str(error)
    if isinstance(error, PydsqliteError):
        # Printed as the library formats it (one line per step or problem); its advice is
        # phrased for Python callers, the command line has a flag for it.
        return str(error).replace("allow_destructive=True", "--allow-destructive").replace("online=True", "--online")
    return " ".join(str(error).split()) or type(error).__name__


def _version() -> str:
    """The installed distribution's version; from a source checkout that is not installed, its pyproject.toml."""
    try:
        return importlib.metadata.version("pydsqlite")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "(unknown version: not installed)"
    return project.get("version", "(unknown version)") if project.get("name") == "pydsqlite" else "(unknown version: not installed)"


