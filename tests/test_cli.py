"""The pydsqlite command line, run as a user would (a real process, real files), plus progress reporting."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Optional

import pytest

from pydsqlite import PrimaryKey, SyncModel, sync_models

ROOT = Path(__file__).resolve().parents[1]

MODELS_V1 = '''
from typing import Annotated, Optional
from pydsqlite import Index, PrimaryKey, SyncModel

class Item(SyncModel, table="items"):
    id: Annotated[int, PrimaryKey()]
    name: str
    price: Optional[float] = None
'''

MODELS_V2 = MODELS_V1 + '''    stock: int = 0

class Tag(SyncModel, table="tags"):
    id: Annotated[int, PrimaryKey()]
    label: str
'''

MODELS_UNIQUE_NAME = MODELS_V1.replace("    name: str", "    name: Annotated[str, Unique()]").replace(
    "import Index,", "import Index, Unique,"
)


def environment() -> dict[str, str]:
    """This checkout's pydsqlite first on the path, whichever copy is installed; output buffered
    as a user's shell has it (PYTHONUNBUFFERED would hide what happens at the final flush)."""
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    return {**inherited, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pydsqlite", *args]


def run(*args: str, cwd: Path, stdin: str | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, *command(*args)], cwd=cwd, capture_output=True, text=True, input=stdin, timeout=60, env=environment()
    )


def start(*args: str, cwd: Path, **options) -> subprocess.Popen:
    """The command running in the background, Ctrl-C (SIGINT) acting on it as on a terminal: a runner that
    started the tests with SIGINT ignored (a shell's background job) would pass that on, and Python keeps it."""
    options.setdefault("stdout", subprocess.PIPE)
    options.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        command(*args), cwd=cwd, text=True, env=environment(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **options
    )


def file_state(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of the folder with its content hash and modification time."""
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app_models.py").write_text(MODELS_V1)
    (tmp_path / "app_models_v2.py").write_text(MODELS_V2)
    return tmp_path


def test_plan_exit_codes_and_formats(project):
    db = project / "app.db"
    sqlite3.connect(db).close()
    pending = run("plan", "app.db", "--models", "app_models", cwd=project)
    assert pending.returncode == 2, pending.stderr
    assert "create table items" in pending.stdout
    as_sql = run("plan", "app.db", "--models", "app_models:Item", "--sql", cwd=project)
    assert as_sql.returncode == 2 and as_sql.stdout.startswith('CREATE TABLE `items`')
    as_json = json.loads(run("plan", "app.db", "--models", "app_models", "--json", cwd=project).stdout)
    assert as_json["operations"][0]["kind"] == "create_table" and not as_json["is_empty"]
    applied = run("sync", "app.db", "--models", "app_models", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert "Applied 1 operation." in applied.stdout
    done = run("plan", "app.db", "--models", "app_models", cwd=project)
    assert done.returncode == 0 and "Nothing to do" in done.stdout


MODELS_WITH_SLUG = MODELS_V1 + '''    slug: str
'''

DATA_STEPS = '''
import os

def fill_slugs(db):
    if os.environ.get("FAIL_STEP"):
        raise RuntimeError("no slug for " + os.environ["FAIL_STEP"])
    db.conn.execute("UPDATE items SET slug = lower(name)")
    if os.environ.get("COMMIT_IN_STEP"):
        db.conn.commit()

DATA_STEPS = {"001_slugs": fill_slugs}
'''


def test_plan_and_sync_take_the_data_steps_of_a_module(project):
    """The command line runs a release's data steps like sync_models does; without them, the
    new NOT NULL column cannot be filled and the sync is refused."""
    (project / "slug_models.py").write_text(MODELS_WITH_SLUG)
    (project / "app_steps.py").write_text(DATA_STEPS)
    db = project / "app.db"
    assert run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project).returncode == 0
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO items (id, name) VALUES (?, ?)", [(1, "Pen"), (2, "Ink")])
    conn.commit()
    conn.close()
    before = file_state(project)
    steps = ("--models", "slug_models", "--data-steps", "app_steps:DATA_STEPS")
    pending = run("plan", "app.db", *steps, cwd=project)
    assert pending.returncode == 2, pending.stderr
    assert pending.stdout.splitlines() == [
        "Migration plan (2 operations, 1 data step):",
        "  1. add column items.slug",
        "  data step 001_slugs",
        "  2. rebuild table items: alter column slug (NOT NULL)",
        "    ! checked against the data after the data steps",
    ]
    as_json = json.loads(run("plan", "app.db", *steps, "--json", cwd=project).stdout)
    assert as_json["data_steps"] == ["001_slugs"]
    assert [op["after_data_steps"] for op in as_json["operations"]] == [False, True]
    without = run("sync", "app.db", "--models", "slug_models", "--yes", cwd=project)
    assert without.returncode == 1 and "items.slug" in without.stderr
    failing = subprocess.run(
        command("sync", "app.db", *steps, "--yes"), cwd=project, capture_output=True, text=True, timeout=60,
        env={**environment(), "FAIL_STEP": "Pen"},
    )
    assert failing.returncode == 1 and failing.stderr == (
        "pydsqlite: error: data step '001_slugs' failed: RuntimeError: no slug for Pen; nothing was changed\n"
    )
    assert file_state(project) == before
    committing = subprocess.run(  # named as the library names it, not as a file SQLite cannot open
        command("sync", "app.db", *steps, "--yes"), cwd=project, capture_output=True, text=True, timeout=60,
        env={**environment(), "COMMIT_IN_STEP": "1"},
    )
    assert committing.returncode == 1 and committing.stderr.startswith("pydsqlite: error: data step '001_slugs' tried to end"), committing.stderr
    assert file_state(project) == before
    applied = run("sync", "app.db", *steps, "--yes", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "Applied 2 operations and 1 data step."
    assert sqlite3.connect(db).execute("SELECT name, slug FROM items").fetchall() == [("Pen", "pen"), ("Ink", "ink")]
    done = run("plan", "app.db", *steps, cwd=project)
    assert done.returncode == 0 and "Nothing to do" in done.stdout


def test_sync_refuses_destructive_steps_with_the_library_listing_and_command_line_advice(project):
    db = project / "app.db"
    run("sync", "app.db", "--models", "app_models_v2", "--create", cwd=project)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items (id, name, stock) VALUES (1, 'a', 5)")
    conn.execute("INSERT INTO tags VALUES (1, 'x'), (2, 'y')")
    conn.commit()
    before = file_state(project)
    refused = run("sync", "app.db", "--models", "app_models", "--yes", cwd=project)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "pydsqlite: error: the migration would lose data; pass --allow-destructive to apply it. Destructive steps:",
        "  - DESTRUCTIVE drop column items.stock [1 row]",
        "    ! items.stock: 1 row: values would be deleted with the column",
        "  - DESTRUCTIVE drop table tags [2 rows]",
        "    ! tags: 2 rows: rows would be deleted with the table",
    ]
    assert "allow_destructive=True" not in refused.stderr and "Traceback" not in refused.stderr
    assert "DESTRUCTIVE drop column items.stock [1 row]" in refused.stdout
    assert file_state(project) == before
    verbose = run("sync", "app.db", "--models", "app_models", "--yes", "--verbose", cwd=project)
    assert "Traceback" in verbose.stderr and "DestructiveChangeError" in verbose.stderr
    assert "pass --allow-destructive to apply it. Destructive steps:\n  - DESTRUCTIVE" in verbose.stderr
    applied = run("sync", "app.db", "--models", "app_models", "--yes", "--allow-destructive", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert sqlite3.connect(db).execute("SELECT id, name FROM items").fetchall() == [(1, "a")]


def test_sync_refuses_an_impossible_plan_one_problem_per_line_without_asking(project):
    import pty

    (project / "unique_models.py").write_text(MODELS_UNIQUE_NAME)
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    conn = sqlite3.connect(project / "app.db")
    conn.executemany("INSERT INTO items (id, name) VALUES (?, ?)", [(1, "pen"), (2, "pen"), (3, "ink"), (4, "ink")])
    conn.commit()
    before = file_state(project)
    main_fd, replica_fd = pty.openpty()
    process = start("sync", "app.db", "--models", "unique_models", cwd=project, stdin=replica_fd)
    out, err = process.communicate(timeout=60)
    os.close(main_fd)
    os.close(replica_fd)
    assert process.returncode == 1
    assert "Apply this migration?" not in out  # nothing to confirm: it is refused anyway
    lines = err.splitlines()
    assert lines[0] == "pydsqlite: error: the migration cannot be applied; nothing was changed:"
    assert lines[1].startswith("  - items.name: 4 rows: rows share a value") and len(lines) == 2
    assert file_state(project) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "missing.db", "--models", "app_models"), "error: database 'missing.db' does not exist"),
        (("sync", "missing.db", "--models", "app_models"), "error: database 'missing.db' does not exist (pass --create"),
        (("sync", "no/such/folder/new.db", "--models", "app_models", "--create"), "folder"),
        (("plan", "garbage.db", "--models", "app_models"), "error: 'garbage.db' is not a SQLite database"),
        (("inspect", "garbage.db"), "error: 'garbage.db' is not a SQLite database"),
        (("inspect", "subfolder"), "error: database 'subfolder' is a folder, not a file"),
        (("plan", "app.db", "--models", "no_such_module"),
         "error: cannot import models module 'no_such_module': no such module in the current folder or on the Python path"),
        (("plan", "app.db", "--models", "needs_missing_package"),
         "error: cannot import models module 'needs_missing_package': No module named 'not_installed_anywhere'"),
        (("plan", "app.db", "--models", "broken_syntax"),
         "error: cannot import models module 'broken_syntax': SyntaxError: '(' was never closed (broken_syntax.py, line 2)"),
        (("plan", "app.db", "--models", "fails_on_import"),
         "error: cannot import models module 'fails_on_import': JSONDecodeError at fails_on_import.py, line 2: Expecting"),
        (("plan", "app.db", "--models", "empty_models"), "error: module 'empty_models' defines no table models (a table model is"),
        (("sync", "app.db", "--models", "two_versions"),
         "error: module 'two_versions' declares table 'items' with several models (Item, ItemV2); name the ones to use, "
         "as in --models two_versions:ItemV2"),
        (("plan", "app.db", "--models", "app_models.py"), "error: --models takes a module name such as 'app_models'"),
        (("plan", "app.db", "--models", "pkg/models.py"), "error: --models takes a module name such as 'pkg.models'"),
        (("plan", "app.db", "--models", "app_models:Nope"), "error: app_models:Nope: module app_models defines no 'Nope' (its table models: "),
        (("plan", "app.db", "--models", "app_models:Itme"), "error: app_models:Itme: module app_models defines no 'Itme' (did you mean 'Item'? "),
        (("plan", "app.db", "--models", "app_models:Annotated"), "error: app_models:Annotated is not a table model"),
        (("plan", "app.db", "--models", "app_models:Item,"), "a model name is missing after ':' or ','"),
        (("plan", "app.db", "--models", "app_models", "--data-steps", "app_models"),
         "error: --data-steps 'app_models': name the dict of data steps in the module, as in app_models:DATA_STEPS"),
        (("plan", "app.db", "--models", "app_models", "--data-steps", "app_models:NOPE"),
         "error: app_models:NOPE is nothing, not a dict of data steps (name -> function)"),
        (("sync", "app.db", "--models", "app_models", "--data-steps", "app_models:Item"),
         "error: app_models:Item is class Item, not a dict of data steps"),
        (("plan", "app.db", "--models", "app_models", "--data-steps", "no_such_steps:DATA_STEPS"),
         "error: cannot import data steps module 'no_such_steps': no such module in the current folder"),
        (("plan", "app.db", "--to", "missing.sql"), "error: schema 'missing.sql' does not exist"),
        (("plan", "app.db", "--to", "broken.sql"), "error: schema 'broken.sql' does not load: "),
        (("plan", "app.db", "--to", "notes.txt"), "error: schema 'notes.txt' is neither a SQLite database nor a .sql file"),
        (("plan", "app.db", "--to", "subfolder"), "error: schema 'subfolder' is a folder, not a file"),
        (("diff", "broken.sql", "app.db"), "error: schema 'broken.sql' does not load: "),
        (("diff", "app.db", "missing.db"), "error: schema 'missing.db' does not exist"),
    ],
)
def test_errors_print_one_line_and_exit_1(project, args, message):
    sqlite3.connect(project / "app.db").close()
    (project / "garbage.db").write_bytes(b"definitely not sqlite" * 50)
    (project / "notes.txt").write_text("CREATE TABLE notes (id INTEGER PRIMARY KEY);\n")
    (project / "broken.sql").write_text("CREATE TABLE (")
    (project / "subfolder").mkdir()
    (project / "needs_missing_package.py").write_text("import not_installed_anywhere\n")
    (project / "broken_syntax.py").write_text("from pydsqlite import SyncModel\nx = (\n")
    (project / "fails_on_import.py").write_text("import json\nSETTINGS = json.loads('{')\n")  # fails inside the json module
    (project / "empty_models.py").write_text("from pydsqlite import SyncModel\n")
    (project / "reexports.py").write_text("from app_models import *\n")
    (project / "two_versions.py").write_text(
        "from typing import Annotated\nfrom pydsqlite import PrimaryKey, SyncModel\n"
        "class Item(SyncModel, table='items'):\n    id: Annotated[int, PrimaryKey()]\n    legacy: str = ''\n"
        "class ItemV2(SyncModel, table='Items'):\n    id: Annotated[int, PrimaryKey()]\n"
    )
    before = file_state(project)
    result = run(*args, cwd=project)
    assert result.returncode == 1
    assert result.stderr.startswith("pydsqlite: error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert file_state(project) == before
    verbose = run("--verbose", *args, cwd=project)
    assert "Traceback" in verbose.stderr and verbose.returncode == 1
    assert verbose.stderr.splitlines()[-1] == result.stderr.strip()


def test_help_reads_as_plain_text_and_version_comes_from_the_package(project):
    for args in ((), ("inspect",), ("plan",), ("sync",), ("diff",)):
        shown = run(*args, "--help", cwd=project)
        assert shown.returncode == 0 and shown.stdout.startswith(f"usage: pydsqlite {' '.join(args)}".rstrip())
        assert "`" not in shown.stdout and "**" not in shown.stdout, shown.stdout
    overview = run("--help", cwd=project).stdout
    assert "Exit codes: 0 nothing to do" in overview and "--busy-timeout SECONDS" in overview
    assert all(name in overview for name in ("inspect", "plan", "sync", "diff", "--version"))
    for mistake in (("plan", "app.db", "--modles", "app_models"), ("plan", "app.db", "--models", "m", "--busy-timeout", "soon"), ()):
        misused = run(*mistake, cwd=project)  # exit code 2 would read as "changes pending"
        assert misused.returncode == 1 and misused.stderr.startswith("usage: pydsqlite") and "error: " in misused.stderr
    after_the_command = run("plan", "missing.db", "--models", "app_models", "--busy-timeout", "1", "--verbose", cwd=project)
    assert "Traceback" in after_the_command.stderr and after_the_command.returncode == 1
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = run("--version", cwd=project)
    assert shown.returncode == 0 and shown.stdout == f"pydsqlite {version}\n" and shown.stderr == ""


def test_diff_from_a_database_counts_its_rows_and_leaves_it_untouched(project):
    (project / "v1.sql").write_text(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, pinned INTEGER);\n"
        "CREATE TABLE drafts (id INTEGER PRIMARY KEY, body TEXT);\n"
    )
    (project / "v2.sql").write_text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n")
    assert run("sync", "notes.db", "--to", "v1.sql", "--create", cwd=project).returncode == 0
    conn = sqlite3.connect(project / "notes.db")
    conn.executemany("INSERT INTO drafts VALUES (?, 'text')", [(1,), (2,), (3,)])
    conn.execute("INSERT INTO notes VALUES (1, 'a', 1), (2, 'b', NULL)")
    conn.commit()
    conn.close()
    before = file_state(project)
    from_database = run("diff", "notes.db", "v2.sql", cwd=project)
    assert from_database.returncode == 2, from_database.stderr
    assert "DESTRUCTIVE drop table drafts [3 rows]" in from_database.stdout
    assert "DESTRUCTIVE drop column notes.pinned [1 row]" in from_database.stdout
    as_json = json.loads(run("diff", "notes.db", "v2.sql", "--json", cwd=project).stdout)
    assert {op["table"]: op["row_count"] for op in as_json["operations"]} == {"drafts": 3, "notes": 1}
    assert file_state(project) == before
    from_file = run("diff", "v1.sql", "v2.sql", cwd=project)
    assert from_file.returncode == 2, from_file.stderr
    assert "DESTRUCTIVE drop table drafts\n" in from_file.stdout and "DESTRUCTIVE drop column notes.pinned" in from_file.stdout
    assert "row" not in from_file.stdout  # a schema file has no rows: nothing is said about them
    as_json = json.loads(run("diff", "v1.sql", "v2.sql", "--json", cwd=project).stdout)
    assert [op["row_count"] for op in as_json["operations"]] == [None, None]
    assert run("diff", "notes.db", "v1.sql", cwd=project).returncode == 0


def test_desired_schema_as_sql_and_diff_between_files(project):
    (project / "v1.sql").write_text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n")
    (project / "v2.sql").write_text(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL DEFAULT '', pinned INTEGER);\n"
        "CREATE VIEW pinned_notes AS SELECT id FROM notes WHERE pinned;\n"
    )
    assert run("sync", "notes.db", "--to", "v1.sql", "--create", cwd=project).returncode == 0
    conn = sqlite3.connect(project / "notes.db")
    conn.execute("INSERT INTO notes VALUES (1, NULL)")
    conn.commit()
    diff = run("diff", "v1.sql", "v2.sql", cwd=project)
    assert diff.returncode == 2 and "rebuild table notes" in diff.stdout and "create view pinned_notes" in diff.stdout
    assert run("diff", "v2.sql", "v2.sql", cwd=project).returncode == 0
    (project / "v2_bom.sql").write_bytes(b"\xef\xbb\xbf" + (project / "v2.sql").read_bytes())  # as some editors save it
    assert run("diff", "v2.sql", "v2_bom.sql", cwd=project).returncode == 0
    assert run("diff", "notes.db", "v1.sql", cwd=project).returncode == 0
    applied = run("sync", "notes.db", "--to", "v2.sql", "--yes", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert conn.execute("SELECT id, body FROM notes").fetchall() == [(1, "")]
    assert run("plan", "notes.db", "--to", "v2.sql", cwd=project).returncode == 0
    assert run("sync", "other.db", "--to", "notes.db", "--create", cwd=project).returncode == 0
    assert run("diff", "other.db", "notes.db", cwd=project).returncode == 0
    listing = run("inspect", "notes.db", cwd=project).stdout
    assert "CREATE VIEW pinned_notes" in listing and "_pydsqlite" not in listing
    described = json.loads(run("inspect", "notes.db", "--json", cwd=project).stdout)
    assert [t["name"] for t in described["tables"]] == ["notes"] and described["views"][0]["name"] == "pinned_notes"


@contextmanager
def lock_held(path: Path, mode: str) -> Iterator[sqlite3.Connection]:
    """Another process's lock, as SQLite sees it: a connection of this test process in a
    transaction (EXCLUSIVE keeps readers out, IMMEDIATE other writers)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(f"BEGIN {mode}")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize(
    ("args", "locked", "mode"),
    [
        (("inspect", "app.db"), "app.db", "EXCLUSIVE"),
        (("plan", "app.db", "--models", "app_models_v2"), "app.db", "EXCLUSIVE"),
        (("plan", "other.db", "--to", "app.db"), "app.db", "EXCLUSIVE"),
        (("diff", "app.db", "other.db"), "app.db", "EXCLUSIVE"),
        (("sync", "app.db", "--models", "app_models_v2", "--yes"), "app.db", "IMMEDIATE"),
    ],
)
def test_a_locked_database_is_reported_as_locked(project, args, locked, mode):
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    sqlite3.connect(project / "other.db").close()
    before = file_state(project)  # (reading a file releases this process's SQLite locks on it: POSIX locks)
    with lock_held(project / locked, mode):
        result = run(*args, "--busy-timeout", "0.3", cwd=project)
    assert file_state(project) == before
    assert result.returncode == 1
    *waiting, error = result.stderr.splitlines()
    assert error == (
        f"pydsqlite: error: database '{locked}' is locked: another process holds its lock (waited 0.3 s); "
        "try again when it is done, or wait longer with --busy-timeout SECONDS"
    )
    # Told once, unless the first try used up the time.
    assert waiting in ([], [f"pydsqlite: database '{locked}' is locked by another process; waiting up to 0.3 s (Ctrl-C to stop)"])
    assert run(*args, cwd=project).returncode in (0, 2)  # free again: it works


def test_a_command_waits_for_the_lock_and_goes_on_when_it_is_released(project):
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    with lock_held(project / "app.db", "EXCLUSIVE"):
        process = start("plan", "app.db", "--models", "app_models_v2", "--busy-timeout", "120", cwd=project)
        assert "is locked by another process; waiting up to 120 s" in process.stderr.readline()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "add column items.stock" in out and err == ""


def test_ctrl_c_while_sync_waits_for_the_lock_stops_at_once_and_changes_nothing(project):
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    before = file_state(project)
    with lock_held(project / "app.db", "IMMEDIATE"):
        process = start("sync", "app.db", "--models", "app_models_v2", "--yes", cwd=project)
        assert "waiting up to 60 s (Ctrl-C to stop)" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)  # SQLite's own wait would hold it for 60 s
    assert file_state(project) == before
    assert process.returncode == 130 and err == "pydsqlite: interrupted; nothing was changed\n"
    assert "create table tags" in out and "Applied" not in out


def press_ctrl_c_at_the_prompt(process: subprocess.Popen) -> None:
    """SIGINT, again if it arrived after the prompt was written but before the read began
    (Python then acts on it only when the read returns)."""
    for _ in range(30):
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    pytest.fail("the command went on waiting at its prompt through a minute of SIGINTs")


@pytest.mark.parametrize("new_file", [False, True])
def test_ctrl_c_or_no_at_the_prompt_changes_nothing(project, new_file):
    import pty

    if not new_file:
        run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    before = file_state(project)
    args = ("sync", "app.db", "--models", "app_models_v2", *(("--create",) if new_file else ()))
    for answer in ("no", "ctrl-c"):
        main_fd, replica_fd = pty.openpty()
        process = start(*args, cwd=project, stdin=replica_fd)
        shown = ""
        while not shown.endswith("Apply this migration? [y/N] "):
            shown += process.stdout.read(1)
        if answer == "no":
            os.write(main_fd, b"n\n")
        else:
            press_ctrl_c_at_the_prompt(process)
        out, err = process.communicate(timeout=60)
        os.close(main_fd)
        os.close(replica_fd)
        if answer == "no":
            assert process.returncode == 2 and out == "Nothing was changed.\n" and err == ""
        else:
            assert process.returncode == 130 and out == "\n" and err == "pydsqlite: interrupted; nothing was changed\n"
        assert file_state(project) == before  # --create leaves no empty file behind


def test_sync_asks_on_a_terminal_and_shows_plain_progress_otherwise(project):
    import pty

    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    conn = sqlite3.connect(project / "app.db")
    conn.executemany("INSERT INTO items (id, name, price) VALUES (?, ?, NULL)", [(i, f"n{i}") for i in range(500)])
    conn.commit()
    (project / "app_models_v3.py").write_text(MODELS_V1.replace("price: Optional[float] = None", "price: float = 0.0"))
    main_fd, replica_fd = pty.openpty()
    process = start("sync", "app.db", "--models", "app_models_v3", cwd=project, stdin=replica_fd)
    os.write(main_fd, b"n\n")
    out, _ = process.communicate(timeout=60)
    os.close(main_fd)
    os.close(replica_fd)
    assert process.returncode == 2 and "Nothing was changed." in out
    applied = run("sync", "app.db", "--models", "app_models_v3", "--yes", cwd=project)
    assert applied.returncode == 0
    assert "items: copied 0 of 500 rows" in applied.stderr and "items: copied 500 of 500 rows" in applied.stderr
    assert applied.stderr.count("items: copied") <= 12


@pytest.mark.parametrize("rows", [1, 2])
def test_counts_the_command_prints_agree_with_their_number(project, rows):
    (project / "app_models_v3.py").write_text(MODELS_V1.replace("price: Optional[float] = None", "price: float = 0.0"))
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    conn = sqlite3.connect(project / "app.db")
    conn.executemany("INSERT INTO items (id, name) VALUES (?, 'x')", [(i,) for i in range(rows)])
    conn.commit()
    rebuilt = run("sync", "app.db", "--models", "app_models_v3", "--yes", cwd=project)
    assert rebuilt.returncode == 0, rebuilt.stderr
    noun = "row" if rows == 1 else "rows"
    assert f"items: copied {rows} of {rows} {noun}\n" in rebuilt.stderr and "1 rows" not in rebuilt.stderr
    assert "Applied 1 operation.\n" in rebuilt.stdout
    two = run("sync", "app.db", "--models", "app_models_v2", "--yes", cwd=project)
    assert "Applied 2 operations.\n" in two.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly(project):
    with closing(sqlite3.connect(project / "big.db")) as conn:  # some 150 kB of schema: more than a pipe holds
        conn.executescript(
            "BEGIN;"
            + "".join(f"CREATE TABLE t{n} (id INTEGER PRIMARY KEY, body TEXT, created TEXT, updated TEXT);" for n in range(2000))
            + "COMMIT;"
        )
    process = start("inspect", "big.db", cwd=project)
    assert process.stdout.readline().startswith("CREATE TABLE t0 ")
    process.stdout.close()  # as `| head -1` does
    assert process.stderr.read() == "" and process.wait(timeout=60) == 141
    # Gone before anything was written: the output left for the interpreter's exit fails the same way.
    process = start("plan", "big.db", "--models", "app_models", cwd=project)
    process.stdout.close()
    assert process.stderr.read() == "" and process.wait(timeout=60) == 141
    # sync stops before changing anything when nobody can read its plan.
    before = file_state(project)
    process = start("sync", "new.db", "--models", "app_models", "--create", "--yes", cwd=project)
    process.stdout.close()
    assert process.stderr.read() == "" and process.wait(timeout=60) == 141
    assert file_state(project) == before


def test_closed_progress_output_does_not_cancel_the_migration(project):
    (project / "app_models_v3.py").write_text(MODELS_V1.replace("price: Optional[float] = None", "price: float = 0.0"))
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    conn = sqlite3.connect(project / "app.db")
    conn.executemany("INSERT INTO items (id, name) VALUES (?, 'x')", [(i,) for i in range(100)])
    conn.commit()
    process = start("sync", "app.db", "--models", "app_models_v3", "--yes", cwd=project)
    process.stderr.close()
    out = process.stdout.read()
    assert process.wait(timeout=60) == 0 and "Applied 1 operation." in out
    assert conn.execute("SELECT count(*) FROM items WHERE price = 0.0").fetchone() == (100,)


def file_permissions_apply() -> tuple[str, ...]:
    """A command prefix under which file permissions apply: root reads and writes any file,
    unless the capabilities that let it are dropped."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): root ignores file permissions")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")


def test_unreadable_and_read_only_files_are_named_as_such(project):
    prefix = file_permissions_apply()
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    db = project / "app.db"
    try:
        db.chmod(0o000)
        unreadable = run("plan", "app.db", "--models", "app_models_v2", cwd=project, prefix=prefix)
        assert unreadable.returncode == 1
        assert unreadable.stderr == "pydsqlite: error: cannot read database 'app.db': permission denied\n"
        db.chmod(0o444)
        before = file_state(project)
        assert run("plan", "app.db", "--models", "app_models_v2", cwd=project, prefix=prefix).returncode == 2
        read_only = run("sync", "app.db", "--models", "app_models_v2", "--yes", cwd=project, prefix=prefix)
        assert read_only.returncode == 1 and read_only.stdout == ""
        assert read_only.stderr == "pydsqlite: error: cannot write to database 'app.db': the file is read-only\n"
        db.chmod(0o644)
        project.chmod(0o555)
        in_read_only_folder = run("sync", "app.db", "--models", "app_models_v2", "--yes", cwd=project, prefix=prefix)
        assert in_read_only_folder.returncode == 1
        assert "is read-only (SQLite writes its journal next to the database)" in in_read_only_folder.stderr
        assert file_state(project) == {**before, "app.db": file_state(project)["app.db"]}
        assert file_state(project)["app.db"][0] == before["app.db"][0]
    finally:
        project.chmod(0o755)
        db.chmod(0o644)


def test_progress_callback_reports_rows_and_can_cancel(conn):
    class Wide(SyncModel, table="wide"):
        id: Annotated[int, PrimaryKey()]
        v: Optional[int] = None

    class Narrow(SyncModel, table="wide"):
        id: Annotated[int, PrimaryKey()]
        v: int = 0

    sync_models(conn, [Wide])
    conn.executemany("INSERT INTO wide VALUES (?, ?)", [(i, None if i % 2 else i) for i in range(1000)])
    conn.commit()
    calls: list[tuple[str, int, int]] = []

    def stop_halfway(table: str, copied: int, total: int) -> None:
        if copied >= total // 2:
            raise KeyboardInterrupt("user cancelled")

    with pytest.raises(KeyboardInterrupt):
        sync_models(conn, [Narrow], progress=stop_halfway)
    assert conn.execute("SELECT count(*) FROM wide WHERE v IS NULL").fetchone() == (500,)
    assert not conn.in_transaction
    sync_models(conn, [Narrow], progress=lambda *call: calls.append(call))
    assert calls[0] == ("wide", 0, 1000) and calls[-1] == ("wide", 1000, 1000)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls) and 50 <= len(calls) <= 102
    assert conn.execute("SELECT count(*) FROM wide WHERE v = 0").fetchone() == (501,)


def installed_console_script() -> Path:
    """The ``pydsqlite`` executable that pip installed with the package (beside the interpreter,
    or wherever the installation's RECORD says)."""
    installed = [found for found in importlib.metadata.distributions(name="pydsqlite") if found.read_text("RECORD")]
    if not installed:  # (a source tree's pydsqlite.egg-info lists no installed files)
        pytest.skip("pydsqlite is not installed: run `python3 -m pip install -e '.[test]'` to test its console script")
    for distribution in installed:
        for file in distribution.files or ():
            if file.name in ("pydsqlite", "pydsqlite.exe") and file.parent.name in ("bin", "Scripts"):
                return Path(distribution.locate_file(file)).resolve()
    pytest.fail("pydsqlite is installed without its console script: [project.scripts] in pyproject.toml must name it")


def test_the_installed_console_script_runs_the_command(project):
    script = installed_console_script()

    def run_script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], cwd=project, capture_output=True, text=True, timeout=60, env=environment())

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run_script("--version").stdout == f"pydsqlite {version}\n"
    assert run_script("--help").stdout == run("--help", cwd=project).stdout
    applied = run_script("sync", "app.db", "--models", "app_models", "--create", "--yes")
    assert applied.returncode == 0 and "Applied 1 operation." in applied.stdout, applied.stderr
    pending = run_script("plan", "app.db", "--models", "app_models_v2")
    assert pending.returncode == 2 and "add column items.stock" in pending.stdout
    missing = run_script("plan", "missing.db", "--models", "app_models")
    assert missing.returncode == 1 and missing.stderr == "pydsqlite: error: database 'missing.db' does not exist\n"


def test_progress_bar_on_a_terminal_redraws_one_line_per_table():
    import io

    from pydsqlite.cli.output import ProgressReporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    reporter = ProgressReporter(screen)
    for copied in (0, 50, 100):
        reporter("items", copied, 100)
    reporter("tags", 0, 10)
    reporter.finish()
    reporter("one", 0, 1)
    reporter("one", 1, 1)
    text = screen.getvalue()
    assert text.count("\n") == 3 and text.count("\r") == 6
    assert "items: [###############...............] 50/100 rows" in text
    assert "items: [##############################] 100/100 rows\n" in text
    assert "one: [##############################] 1/1 row\n" in text


def test_sync_online_previews_which_tables_go_online_and_reports_each_phase(project):
    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    conn = sqlite3.connect(project / "app.db")
    conn.executemany("INSERT INTO items (id, name, price) VALUES (?, ?, NULL)", [(i, f"n{i}") for i in range(500)])
    conn.commit()
    (project / "app_models_v3.py").write_text(MODELS_V1.replace("price: Optional[float] = None", "price: float = 0.0"))
    refused = run("sync", "app.db", "--models", "app_models_v3", "--yes", "--online", cwd=project)
    assert refused.returncode == 1 and "WAL mode" in refused.stdout + refused.stderr
    assert refused.stderr.startswith("pydsqlite: error: --online needs the database in WAL mode") and "online=True" not in refused.stderr
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    preview = run("plan", "app.db", "--models", "app_models_v3", "--online", cwd=project)
    assert preview.returncode == 2 and "rebuild table items (online, copied in chunks by rowid)" in preview.stdout
    applied = run("sync", "app.db", "--models", "app_models_v3", "--yes", "--online", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert "items: copied 500 of 500 rows" in applied.stderr and "items: the new table is in place\n" in applied.stderr
    assert "items: freed 500 of 500 rows" in applied.stderr
    with closing(sqlite3.connect(project / "app.db")) as conn:
        assert conn.execute("SELECT COUNT(*), MIN(price) FROM items").fetchone() == (500, 0.0)


VIRTUAL_TABLE_SCHEMAS = {
    "fts5": "CREATE VIRTUAL TABLE notes_fts USING fts5(body, title);",
    "fts5 external content": (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n"
        "CREATE VIRTUAL TABLE notes_fts USING fts5(body, content='notes', content_rowid='id');\n"
        "CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN INSERT INTO notes_fts(rowid, body) VALUES (new.id, new.body); END;"
    ),
    "fts4": "CREATE VIRTUAL TABLE docs USING fts4(body);",
    "fts3": "CREATE VIRTUAL TABLE docs USING fts3(body);",
    "rtree": "CREATE VIRTUAL TABLE boxes USING rtree(id, min_x, max_x);",
    "all with a view": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);\nCREATE INDEX t_name ON t (name);\n"
        "CREATE VIRTUAL TABLE a USING fts5(x);\nCREATE VIRTUAL TABLE b USING fts4(y);\nCREATE VIRTUAL TABLE c USING rtree(id, lo, hi);\n"
        "CREATE VIEW names AS SELECT name FROM t;"
    ),
}


@pytest.mark.parametrize("kind", sorted(VIRTUAL_TABLE_SCHEMAS))
def test_inspect_output_plans_back_to_nothing_with_virtual_tables(kind: str, project: Path) -> None:
    """``inspect > schema.sql`` is a desired schema: the shadow tables a virtual table's module
    creates are left out (as ``inspect --json`` leaves them), so planning to it changes nothing."""
    with closing(sqlite3.connect(project / "v.db")) as conn:
        conn.executescript(VIRTUAL_TABLE_SCHEMAS[kind])
        shadow_names = {name for (name,) in conn.execute("SELECT name FROM pragma_table_list WHERE type = 'shadow'")}
    assert shadow_names
    listing = run("inspect", "v.db", cwd=project)
    assert listing.returncode == 0, listing.stderr
    assert not any(f"CREATE TABLE '{name}'" in listing.stdout or f'CREATE TABLE "{name}"' in listing.stdout for name in shadow_names)
    assert "CREATE VIRTUAL TABLE" in listing.stdout
    (project / "schema.sql").write_text(listing.stdout)
    planned = run("plan", "v.db", "--to", "schema.sql", cwd=project)
    assert (planned.returncode, planned.stderr) == (0, "")
    assert "Nothing to do" in planned.stdout
    rebuilt = run("diff", "schema.sql", "v.db", cwd=project)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr


@pytest.mark.parametrize("second_answer", ["n", "y"])
def test_sync_applies_only_the_plan_the_person_approved(project, second_answer):
    """The user approves dropping a column that holds no value; another process writes one while the
    prompt waits. The approved plan is not the one the database needs any more: the new one (1 row
    lost) is shown and asked about again, and nothing is dropped unless that is approved too."""
    import pty

    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    (project / "without_price.py").write_text(MODELS_V1.replace("    price: Optional[float] = None\n", ""))
    main_fd, replica_fd = pty.openpty()
    process = start("sync", "app.db", "--models", "without_price", "--allow-destructive", cwd=project, stdin=replica_fd)
    shown = ""
    while not shown.endswith("Apply this migration? [y/N] "):
        shown += process.stdout.read(1)
    assert "DESTRUCTIVE drop column items.price [0 rows]" in shown
    writer = sqlite3.connect(project / "app.db")
    writer.execute("INSERT INTO items (id, name, price) VALUES (1, 'pen', 9.99)")
    writer.commit()
    writer.close()
    os.write(main_fd, b"y\n")
    while not shown.endswith("Apply this migration? [y/N] ") or shown.count("[y/N]") < 2:
        shown += process.stdout.read(1)
    assert "The database changed since this plan was shown; nothing was changed. The plan now:" in shown
    assert "DESTRUCTIVE drop column items.price [1 row]" in shown
    assert sqlite3.connect(project / "app.db").execute("SELECT price FROM items").fetchall() == [(9.99,)]
    os.write(main_fd, f"{second_answer}\n".encode())
    out, err = process.communicate(timeout=60)
    os.close(main_fd)
    os.close(replica_fd)
    columns = [row[1] for row in sqlite3.connect(project / "app.db").execute("PRAGMA table_info(items)")]
    if second_answer == "n":
        assert process.returncode == 2 and out.endswith("Nothing was changed.\n") and "price" in columns
    else:
        assert process.returncode == 0 and out.endswith("Applied 1 operation.\n") and "price" not in columns, err


def test_models_a_package_re_exports_are_taken_with_the_ones_it_defines(project):
    """``app/models/__init__.py`` defines Post and re-exports User from a submodule: both are the
    package's models (leaving User out planned the drop of its table, one flag from losing it)."""
    package = project / "shop" / "models"
    package.mkdir(parents=True)
    (project / "shop" / "__init__.py").write_text("")
    (package / "user.py").write_text(
        "from typing import Annotated\nfrom pydsqlite import PrimaryKey, SyncModel\n"
        "class User(SyncModel, table='users'):\n    id: Annotated[int, PrimaryKey()]\n    name: str\n"
    )
    (package / "__init__.py").write_text(
        "from typing import Annotated\nfrom pydsqlite import PrimaryKey, SyncModel\nfrom .user import User\n"
        "class Post(SyncModel, table='posts'):\n    id: Annotated[int, PrimaryKey()]\n    title: str\n"
    )
    (project / "star.py").write_text("from app_models import *\n")
    created = run("sync", "app.db", "--models", "shop.models", "--create", "--yes", cwd=project)
    assert created.returncode == 0 and "create table users" in created.stdout and "create table posts" in created.stdout, created.stderr
    conn = sqlite3.connect(project / "app.db")
    conn.execute("INSERT INTO users VALUES (1, 'ann')")
    conn.commit()
    planned = run("plan", "app.db", "--models", "shop.models", cwd=project)
    assert planned.returncode == 0 and planned.stdout == "Nothing to do: the database matches the desired schema.\n"
    sqlite3.connect(project / "items.db").close()  # a module of star imports exposes those models too
    assert "create table items" in run("plan", "items.db", "--models", "star", cwd=project).stdout


def test_inspect_of_a_syncing_database_plans_back_to_nothing_and_makes_a_syncing_copy(project):
    """A table with LWW columns: ``inspect`` leaves out pydsqlite's delete-capture trigger (it writes to
    pydsqlite's bookkeeping, which the output leaves out too); the schema file plans back to nothing
    against the database, and a database made from it captures deletes as the original does."""
    (project / "todo_models.py").write_text(
        "from typing import Annotated\nfrom pydsqlite import LWW, PrimaryKey, SyncModel\n"
        "class Todo(SyncModel, table='todos'):\n    id: Annotated[int, PrimaryKey()]\n    title: str\n"
        "    done: Annotated[bool, LWW()] = False\n"
    )
    assert run("sync", "app.db", "--models", "todo_models", "--create", "--yes", cwd=project).returncode == 0
    printed = run("inspect", "app.db", cwd=project)
    assert printed.returncode == 0 and "_pydsqlite_delete" not in printed.stdout and "done__hlc" in printed.stdout
    (project / "schema.sql").write_text(printed.stdout)
    planned = run("plan", "app.db", "--to", "schema.sql", cwd=project)
    assert planned.returncode == 0 and planned.stdout == "Nothing to do: the database matches the desired schema.\n", planned
    for pair in (("schema.sql", "schema.sql"), ("schema.sql", "app.db"), ("app.db", "schema.sql")):
        compared = run("diff", *pair, cwd=project)
        assert compared.returncode == 0 and compared.stdout == "Nothing to do: the database matches the desired schema.\n", (pair, compared)
    made = run("sync", "copy.db", "--create", "--yes", "--to", "schema.sql", cwd=project)
    assert made.returncode == 0 and "create trigger _pydsqlite_delete_todos" in made.stdout, made
    assert run("plan", "copy.db", "--models", "todo_models", cwd=project).stdout == "Nothing to do: the database matches the desired schema.\n"
    from pydsqlite import Database

    spec = importlib.util.spec_from_file_location("cli_todo_models", project / "todo_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("app.db", "copy.db"):
        db = Database(sqlite3.connect(project / name))
        db.insert(module.Todo(id=1, title="a"))
        assert [change.key for change in db.changes_since(models=[module.Todo]).changes] == [(1,)]
        db.conn.execute("DELETE FROM todos WHERE id = 1")  # by SQL: the trigger captures it
        db.conn.commit()
        (change,) = db.changes_since(models=[module.Todo]).changes
        assert change.key == (1,) and not change.alive, name
        db.conn.close()


def test_read_only_commands_say_why_sqlite_would_have_to_write(project):
    """Reading can need writing: a crashed writer's rollback journal must be rolled back first, and a
    WAL database needs its shared-memory file beside it. Named, instead of "attempt to write a
    readonly database"."""
    import shutil

    conn = sqlite3.connect(project / "h.db")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.executemany("INSERT INTO items VALUES (?, ?)", [(i, "x" * 200) for i in range(2000)])
    conn.commit()
    conn.execute("PRAGMA cache_size = 1")  # the update spills to the file: the journal is hot
    conn.execute("BEGIN")
    conn.execute("UPDATE items SET name = 'half-done'")
    shutil.copy(project / "h.db", project / "crash.db")
    shutil.copy(project / "h.db-journal", project / "crash.db-journal")
    conn.rollback()
    conn.close()
    for args in (("diff", "crash.db", "h.db"), ("plan", "h.db", "--to", "crash.db")):
        result = run(*args, cwd=project)
        assert result.returncode == 1 and result.stderr.startswith(
            "pydsqlite: error: database 'crash.db' was left mid-write by a process that stopped: its rollback journal"
        ), result.stderr

    folder = project / "data"
    folder.mkdir()
    wal = sqlite3.connect(folder / "app.db")
    wal.execute("PRAGMA journal_mode = WAL")
    wal.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    wal.commit()
    wal.close()
    folder.chmod(0o555)
    try:  # as root, without the capability that ignores file permissions
        prefix = ("setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--") if os.geteuid() == 0 else ()
        result = run("inspect", "data/app.db", cwd=project, prefix=prefix)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1 and "it is in WAL mode, and SQLite must create 'data/app.db-shm' beside it" in result.stderr, result.stderr


def test_several_versions_of_a_model_are_named_as_the_module_exposes_them(project):
    (project / "aliased_versions.py").write_text(
        "from typing import Annotated\nfrom pydsqlite import PrimaryKey, SyncModel\nfrom app_models import Item as OldItem\n"
        "class Item(SyncModel, table='items'):\n    id: Annotated[int, PrimaryKey()]\n"
    )
    refused = run("sync", "app.db", "--models", "aliased_versions", "--create", cwd=project)
    assert refused.returncode == 1 and (
        "pydsqlite: error: module 'aliased_versions' declares table 'items' with several models (OldItem, Item); name the "
        "ones to use, as in --models aliased_versions:Item"
    ) in refused.stderr, refused.stderr
    assert not (project / "app.db").exists()
