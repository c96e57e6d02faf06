"""The pydsqlite command line, run as a user would (a real process, real files), plus progress reporting."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import pytest

from pydsqlite import PrimaryKey, SyncModel, sync_models

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


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pydsqlite", *args], cwd=cwd, capture_output=True, text=True, input=stdin, timeout=60
    )


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


def test_sync_refuses_destructive_steps_without_the_flag(project):
    db = project / "app.db"
    run("sync", "app.db", "--models", "app_models_v2", "--create", cwd=project)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items (id, name, stock) VALUES (1, 'a', 5)")
    conn.commit()
    conn.close()
    refused = run("sync", "app.db", "--models", "app_models", "--yes", cwd=project)
    assert refused.returncode == 1
    assert refused.stderr.startswith("pydsqlite: error: the migration would lose data") and refused.stderr.count("\n") == 1
    assert "DESTRUCTIVE drop column items.stock [1 row]" in refused.stdout
    applied = run("sync", "app.db", "--models", "app_models", "--yes", "--allow-destructive", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert sqlite3.connect(db).execute("SELECT id, name FROM items").fetchall() == [(1, "a")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "missing.db", "--models", "app_models"), "database 'missing.db' does not exist"),
        (("sync", "missing.db", "--models", "app_models"), "pass --create"),
        (("plan", "garbage.db", "--models", "app_models"), "'garbage.db' is not a SQLite database"),
        (("plan", "app.db", "--models", "no_such_module"), "cannot import models module 'no_such_module'"),
        (("plan", "app.db", "--models", "app_models:Nope"), "app_models:Nope is not a table model"),
        (("plan", "app.db", "--to", "missing.sql"), "schema 'missing.sql' does not exist"),
        (("plan", "app.db", "--to", "broken.sql"), "does not load"),
        (("inspect", "garbage.db"), "not a SQLite database"),
    ],
)
def test_errors_print_one_line_and_exit_1(project, args, message):
    sqlite3.connect(project / "app.db").close()
    (project / "garbage.db").write_bytes(b"definitely not sqlite" * 50)
    (project / "broken.sql").write_text("CREATE TABLE (")
    result = run(*args, cwd=project)
    assert result.returncode == 1
    assert result.stderr.startswith("pydsqlite: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    verbose = run("--verbose", *args, cwd=project)
    assert "Traceback" in verbose.stderr and verbose.returncode == 1


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


def test_sync_asks_on_a_terminal_and_shows_plain_progress_otherwise(project):
    import pty

    run("sync", "app.db", "--models", "app_models", "--create", "--yes", cwd=project)
    conn = sqlite3.connect(project / "app.db")
    conn.executemany("INSERT INTO items (id, name, price) VALUES (?, ?, NULL)", [(i, f"n{i}") for i in range(500)])
    conn.commit()
    (project / "app_models_v3.py").write_text(MODELS_V1.replace("price: Optional[float] = None", "price: float = 0.0"))
    main_fd, replica_fd = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pydsqlite", "sync", "app.db", "--models", "app_models_v3"],
        cwd=project, stdin=replica_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    os.write(main_fd, b"n\n")
    out, _ = process.communicate(timeout=60)
    os.close(main_fd)
    os.close(replica_fd)
    assert process.returncode == 2 and "Nothing was changed." in out
    applied = run("sync", "app.db", "--models", "app_models_v3", "--yes", cwd=project)
    assert applied.returncode == 0
    assert "items: copied 0 of 500 rows" in applied.stderr and "items: copied 500 of 500 rows" in applied.stderr
    assert applied.stderr.count("items: copied") <= 12


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


def test_python_dash_m_and_console_script_agree(project):
    help_text = run("--help", cwd=project)
    assert help_text.returncode == 0 and "inspect" in help_text.stdout and "Exit codes" in help_text.stdout


def test_progress_bar_on_a_terminal_redraws_one_line_per_table():
    import io

    from pydsqlite.cli import ProgressReporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    reporter = ProgressReporter(screen)
    for copied in (0, 50, 100):
        reporter("items", copied, 100)
    reporter("tags", 0, 10)
    reporter.finish()
    text = screen.getvalue()
    assert text.count("\n") == 2 and text.count("\r") == 4
    assert "items: [###############...............] 50/100 rows" in text
    assert "items: [##############################] 100/100 rows\n" in text
