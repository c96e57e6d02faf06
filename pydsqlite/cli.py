"""The pydsqlite command: inspect a SQLite database, plan or apply a migration to table models
or to a desired schema, and diff two schemas.

Exit codes: 0 nothing to do (or done), 2 changes pending (plan, diff, or sync answered no),
1 error, 130 interrupted (Ctrl-C), 141 output closed early (as in "pydsqlite plan ... | head").
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import json
import os
import sqlite3
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TextIO, TypeVar

from pydantic import BaseModel

from .engines import engine_for
from .errors import PydsqliteError
from .migrate.execute import DEFAULT_BUSY_TIMEOUT_MS
from .migrate.introspect import introspect, shadow_tables
from .migrate.migration import MigrationPlan
from .migrate.sync import model_migration_plan, schema_migration_plan, sync_models, sync_schema
from .schema.model import registered_models, table_options
from .schema.objects import Schema, fold_name
from .sql.source import connect_read_only, load_schema_sql, schema_from_database, schema_from_sql

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped with Ctrl-C
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for a Unix tool whose reader went away

READ_BUSY_TIMEOUT = 5.0
"""Seconds inspect, plan and diff wait for another process's lock (the sqlite3 module's default)."""
SYNC_BUSY_TIMEOUT = DEFAULT_BUSY_TIMEOUT_MS / 1000
"""Seconds sync waits for the write lock (as sync_models does)."""
LOCK_POLL_SECONDS = 0.2
"""SQLite's own wait for a lock cannot be interrupted: the command waits in slices this long."""

SQLITE_HEADER = b"SQLite format 3\x00"

EXAMPLES = """\
examples:
  pydsqlite plan app.db --models app.models         what would change (exit code 2 if anything)
  pydsqlite sync app.db --models app.models --yes   apply it
  pydsqlite diff old.sql new.sql --sql              the SQL that turns one schema into the other
"""

T = TypeVar("T")


class CommandError(Exception):
    """A problem with the command line's input (bad path, module, file), printed as its message."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status: int = args.handler(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        _discard_output(sys.stdout, sys.stderr)
        return EXIT_OUTPUT_CLOSED
    except KeyboardInterrupt:
        _report("interrupted; nothing was changed")
        return EXIT_INTERRUPTED
    except (CommandError, PydsqliteError, sqlite3.Error, OSError) as error:
        if args.verbose:
            _flush_stdout()
            traceback.print_exc()
        _report(f"error: {_describe(error)}")
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
    with closing(_open_database(args.database)) as conn:
        if args.json:
            schema = _use_database(args.database, _busy_timeout(args), lambda: introspect(engine_for(conn)))
            print(json.dumps(schema_to_json(schema), indent=2))
        else:
            for sql in _use_database(args.database, _busy_timeout(args), lambda: _schema_sql(conn)):
                print(f"{sql};")
    return EXIT_OK


def _schema_sql(conn: sqlite3.Connection) -> list[str]:
    """The SQL of the database's own objects: not SQLite's, pydsqlite's bookkeeping, nor the
    shadow tables of virtual tables (creating the virtual table creates them)."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND tbl_name NOT LIKE '\\_pydsqlite%' ESCAPE '\\' ORDER BY rowid"
    ).fetchall()
    shadows = shadow_tables(engine_for(conn), rows)
    return [sql for _, _, table_name, sql in rows if fold_name(table_name) not in shadows]


def _plan(args: argparse.Namespace) -> int:
    desired = _desired(args)
    steps = _load_data_steps(args.data_steps)
    with closing(_open_database(args.database)) as conn:
        plan = _use_database(args.database, _busy_timeout(args), lambda: _preview(conn, desired, steps, args.online))
    _print_plan(plan, args)
    return EXIT_PENDING if not plan.is_empty else EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    path = args.database
    created = not os.path.exists(path)
    if created and not args.create:
        raise CommandError(f"database {path!r} does not exist (pass --create to start one)")
    _check_writable(path)
    desired = _desired(args)
    steps = _load_data_steps(args.data_steps)
    timeout = _busy_timeout(args)
    applied = False
    try:
        with closing(_open_database(path, create=args.create)) as conn:
            plan = _use_database(path, timeout, lambda: _preview(conn, desired, steps, args.online))
            print(plan)
            sys.stdout.flush()  # the plan is on screen (or in the log) before anything changes
            if plan.is_empty:
                return EXIT_OK
            refused = plan.problems or (plan.destructive_operations and not args.allow_destructive)
            if not refused and not args.yes and sys.stdin.isatty() and not _confirm("Apply this migration?"):
                print("Nothing was changed.")
                return EXIT_PENDING
            # Wait for the write lock here, where Ctrl-C works, rather than inside SQLite.
            _use_database(path, timeout, lambda: _take_write_lock(conn))
            reporter = ProgressReporter(sys.stderr)
            try:
                result = _use_database(path, timeout, lambda: _apply(conn, desired, steps, args, timeout, reporter), retry=False)
            finally:
                reporter.finish()
            applied = True
    finally:
        if created and not applied:
            _remove_if_empty(path)
    applied_steps = f" and {_count(len(result.data_steps), 'data step')}" if result.data_steps else ""
    print(f"Applied {_count(len(result.operations), 'operation')}{applied_steps}.")
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    desired = _load_schema(args.b, args)
    if _schema_kind(args.a) == "sql":
        with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
            try:
                load_schema_sql(scratch, _read_sql(args.a))
            except PydsqliteError as error:
                raise CommandError(f"schema {args.a!r} does not load: {_sqlite_cause(error) or error}") from error
            plan = _without_row_counts(schema_migration_plan(scratch, desired))
    else:
        with closing(_open_database(args.a, read_only=True)) as source:
            plan = _use_database(args.a, _busy_timeout(args), lambda: schema_migration_plan(source, desired))
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
    return _load_models(args.models) if args.models else _load_schema(args.to, args)


def _preview(
    conn: sqlite3.Connection, desired: list[type[BaseModel]] | Schema, steps: Mapping[str, Any] | None, online: bool = False
) -> MigrationPlan:
    if isinstance(desired, Schema):
        return schema_migration_plan(conn, desired, data_steps=steps, online=online)
    return model_migration_plan(conn, desired, data_steps=steps, online=online)


def _apply(
    conn: sqlite3.Connection,
    desired: list[type[BaseModel]] | Schema,
    steps: Mapping[str, Any] | None,
    args: argparse.Namespace,
    busy_timeout: float,
    progress: ProgressReporter,
) -> MigrationPlan:
    options = {
        "allow_destructive": args.allow_destructive, "busy_timeout": busy_timeout, "progress": progress, "online": args.online,
        "data_steps": steps,
    }
    if isinstance(desired, Schema):
        return sync_schema(conn, desired, **options)
    return sync_models(conn, desired, **options)


def _take_write_lock(conn: sqlite3.Connection) -> None:
    """Returns once the write lock is free (taking and releasing it changes nothing)."""
    conn.execute("BEGIN IMMEDIATE")
    conn.rollback()


def _busy_timeout(args: argparse.Namespace) -> float:
    if args.busy_timeout is not None:
        seconds: float = args.busy_timeout
        return seconds
    return SYNC_BUSY_TIMEOUT if args.command == "sync" else READ_BUSY_TIMEOUT


def _use_database(path: str, seconds: float, action: Callable[[], T], *, retry: bool = True) -> T:
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
        except (PydsqliteError, sqlite3.Error) as error:
            cause = _sqlite_cause(error)
            code = cause.sqlite_errorcode & 0xFF if cause is not None else None
            if code == sqlite3.SQLITE_NOTADB:
                raise CommandError(f"{path!r} is not a SQLite database") from error
            if code == sqlite3.SQLITE_CORRUPT:
                raise CommandError(f"database {path!r} is damaged: {cause}") from error
            if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
                raise CommandError(f"cannot open database {path!r}: {cause}") from error
            if code != sqlite3.SQLITE_BUSY:
                raise
            if not retry or time.monotonic() >= deadline:
                raise CommandError(
                    f"database {path!r} is locked: another process holds its lock (waited {seconds:g} s); "
                    "try again when it is done, or wait longer with --busy-timeout SECONDS"
                ) from error
        if not told:
            _report(f"database {path!r} is locked by another process; waiting up to {seconds:g} s (Ctrl-C to stop)")
            told = True


def _sqlite_cause(error: BaseException | None) -> sqlite3.Error | None:
    """The SQLite error behind ``error`` (our errors keep it as their cause)."""
    while error is not None and not isinstance(error, sqlite3.Error):
        error = error.__cause__ or error.__context__
    return error


def _open_database(path: str, *, create: bool = False, read_only: bool = False) -> sqlite3.Connection:
    """A connection to an existing database file (or a new one with ``create``); whether it is a
    database at all shows at its first read, in ``_use_database``."""
    if create and not os.path.exists(path):
        return sqlite3.connect(path, timeout=LOCK_POLL_SECONDS)
    _file_header(path, "database")
    if not read_only:
        return sqlite3.connect(path, timeout=LOCK_POLL_SECONDS)
    conn = connect_read_only(path)
    conn.execute(f"PRAGMA busy_timeout = {round(LOCK_POLL_SECONDS * 1000)}")
    return conn


def _file_header(path: str, what: str) -> bytes:
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


def _check_writable(path: str) -> None:
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


def _remove_if_empty(path: str) -> None:
    """Undo ``--create`` when nothing was applied: an empty file is left only if it was asked for."""
    try:
        if os.path.getsize(path) == 0:
            os.remove(path)
    except OSError:
        pass


def _load_models(spec: str) -> list[type[BaseModel]]:
    """``package.module`` (every table model it defines) or ``package.module:Name,Other``."""
    module_name, colon, names = spec.partition(":")
    module = _import_module(module_name, "--models", "models")
    if colon:
        models: list[type[BaseModel]] = []
        for name in (name.strip() for name in names.split(",")):
            if not name:
                raise CommandError(f"--models {spec!r}: a model name is missing after ':' or ','")
            model = getattr(module, name, None)
            if not (isinstance(model, type) and issubclass(model, BaseModel) and table_options(model)):
                raise CommandError(f"{module_name}:{name} is not a table model")
            models.append(model)
        return models
    models = [model for model in registered_models() if model.__module__ == module.__name__]
    if not models:
        raise CommandError(f"module {module_name!r} defines no table models{_imported_models_hint(module)}")
    return models


def _load_data_steps(spec: str | None) -> Mapping[str, Any] | None:
    """``package.module:NAME``, a dict of data steps (checked by ``sync_models`` like any)."""
    if spec is None:
        return None
    module_name, _, name = spec.partition(":")
    if not name.strip():
        raise CommandError(f"--data-steps {spec!r}: name the dict of data steps in the module, as in {module_name}:DATA_STEPS")
    steps = getattr(_import_module(module_name, "--data-steps", "data steps"), name.strip(), None)
    if isinstance(steps, Mapping):
        return steps
    if steps is None:
        found = "nothing"
    elif isinstance(steps, type):
        found = f"class {steps.__name__}"
    else:
        found = f"a {type(steps).__name__}"
    raise CommandError(f"{module_name}:{name.strip()} is {found}, not a dict of data steps (name -> function)")


def _import_module(module_name: str, option: str, what: str) -> ModuleType:
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
        raise CommandError(f"cannot import {what} module {module_name!r}: {_failure(error)}") from error


def _failure(error: Exception) -> str:
    """``Type at file, line N: message``, the place being the last one in the user's code
    (not in Python, an installed package or pydsqlite)."""
    if isinstance(error, SyntaxError):  # it names its place itself
        return f"{type(error).__name__}: {error}"
    elsewhere = ("<", sys.prefix, sys.base_prefix, str(Path(__file__).parent))
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith(elsewhere)]
    if not frames:
        return f"{type(error).__name__}: {error}"
    filename = Path(frames[-1].filename)
    if filename.is_relative_to(Path.cwd()):
        filename = filename.relative_to(Path.cwd())
    return f"{type(error).__name__} at {filename}, line {frames[-1].lineno}: {error}"


def _imported_models_hint(module: object) -> str:
    registered = set(registered_models())
    imported = sorted({value.__module__ for value in vars(module).values() if isinstance(value, type) and value in registered})
    if imported:
        return f" (it imports table models from {', '.join(imported)}: pass --models {imported[0]})"
    return " (a table model is a SyncModel subclass, like class Item(SyncModel, table=\"items\"))"


def _load_schema(path: str, args: argparse.Namespace) -> Schema:
    """The desired schema in a .sql file or a SQLite database."""
    if _schema_kind(path) == "sql":
        try:
            return schema_from_sql(_read_sql(path))
        except PydsqliteError as error:
            raise CommandError(f"schema {path!r} does not load: {_sqlite_cause(error) or error}") from error
    with closing(_open_database(path, read_only=True)) as conn:
        return _use_database(path, _busy_timeout(args), lambda: schema_from_database(conn))


def _schema_kind(path: str) -> str:
    """"database" or "sql", told apart by the file's first bytes (an empty file is an empty database)."""
    header = _file_header(path, "schema")
    if header.startswith(SQLITE_HEADER) or (not header and not path.lower().endswith(".sql")):
        return "database"
    if path.lower().endswith(".sql"):
        return "sql"
    raise CommandError(f"schema {path!r} is neither a SQLite database nor a .sql file")


def _read_sql(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CommandError(f"schema {path!r} is not UTF-8 text: {error}") from None


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
        return str(error).replace("allow_destructive=True", "--allow-destructive")
    return " ".join(str(error).split()) or type(error).__name__


def _report(message: str) -> None:
    """A message on stderr, after what is already on stdout (so a log shows them in order)."""
    _flush_stdout()
    try:
        print(f"pydsqlite: {message}", file=sys.stderr, flush=True)
    except BrokenPipeError:
        _discard_output(sys.stderr)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_output(sys.stdout)


def _discard_output(*streams: TextIO) -> None:
    """After the reader of a stream went away: send what is left to /dev/null, so that neither
    this process nor the interpreter's flush at exit reports the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _version() -> str:
    """The installed distribution's version; from a source checkout that is not installed, its pyproject.toml."""
    try:
        return importlib.metadata.version("pydsqlite")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "(unknown version: not installed)"
    return project.get("version", "(unknown version)") if project.get("name") == "pydsqlite" else "(unknown version: not installed)"


_PHASE_VERBS = {"copy": "copied", "catch-up": "caught up", "free": "freed"}
"""How the plain progress lines name each phase of a rebuild."""


class ProgressReporter:
    """Rows copied per rebuilt table: a bar on a terminal, a plain line per 10% otherwise; an
    online rebuild's phases (copy, catch-up, swap, free) each get their own.

    A closed output stops the reporting, not the migration."""

    def __init__(self, stream: TextIO) -> None:
        self.stream: TextIO | None = stream
        self.tty = stream.isatty()
        self.last_tenth: dict[str, int] = {}
        self.open_bar = False

    def __call__(self, table: str, copied: int, total: int, phase: str = "copy") -> None:
        if phase == "swap":  # one step, no rows to count
            self.finish()
            self._write(f"{table}: the new table is in place\n")
            return
        fraction = copied / total if total else 1.0
        rows = "row" if total == 1 else "rows"
        verb = _PHASE_VERBS.get(phase, phase)
        label = table if phase == "copy" else f"{table} ({phase})"
        if self.tty:
            filled = int(fraction * 30)
            self._write(f"\r{label}: [{'#' * filled}{'.' * (30 - filled)}] {copied}/{total} {rows}")
            self.open_bar = copied < total
            if not self.open_bar:
                self._write("\n")
        else:
            tenth = int(fraction * 10)
            if self.last_tenth.get(label) != tenth:
                self.last_tenth[label] = tenth
                self._write(f"{table}: {verb} {copied} of {total} {rows}\n")

    def finish(self) -> None:
        if self.open_bar:
            self._write("\n")
            self.open_bar = False

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            _discard_output(self.stream)
            self.stream = None


def schema_to_json(schema: Schema) -> dict[str, Any]:
    """The schema as plain JSON data (tables with columns, keys, indexes; views; triggers)."""
    def clean(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
        if isinstance(value, (tuple, list)):
            return [clean(item) for item in value]
        return value

    return clean(schema)  # type: ignore[return-value]


def plan_to_json(plan: MigrationPlan) -> dict[str, Any]:
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
                "after_data_steps": op.after_data_steps,
            }
            for op in plan.operations
        ],
        "data_steps": list(plan.data_steps),
    }
