"""The project's promises about itself: the README's two set-up commands, CI, the example, the public API."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pydsqlite

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```\n(python3 -m pip[^\n]+)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    assert "examples/todo_app.py" in commands[0]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert commands[1] in ci and not any(line.startswith("python3 ") for line in ci[: ci.index(commands[1])])


def test_ci_builds_the_documentation_strictly_from_the_docs_extra():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    readme_test = ci.index(readme_commands()[1])
    docs = [n for n, line in enumerate(ci) if "pip install" in line and "'.[docs]'" in line]
    build = [n for n, line in enumerate(ci) if "mkdocs\" build --strict" in line]
    assert docs and build and readme_test < docs[0] < build[0], ci
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    # ruff formats the signatures; aiosqlite lets docs/griffe_awaitable.py import pydsqlite.aio
    assert set(extras["docs"]) == {"mkdocs-material", "mkdocstrings[python]", "ruff", "aiosqlite>=0.20"}
    assert "docs/griffe_awaitable.py:AwaitableDocstrings" in (ROOT / "mkdocs.yml").read_text()
    assert "mkdocstrings" in (ROOT / "mkdocs.yml").read_text() and "reference.md" in (ROOT / "mkdocs.yml").read_text()


def test_ci_runs_the_readme_dqlite_command_after_the_other_suites():
    (command,) = re.findall(r"```\n(apt-get [^\n]+)\n```", (ROOT / "README.md").read_text())
    assert "libdqlite0 go-dqlite" in command and "tests/run_dqlite_suite.sh" in command
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == command and readme_commands()[1] in ci
    script = (ROOT / "tests" / "run_dqlite_suite.sh").read_text()
    assert "'.[test,fastapi,aio,dqlite]'" in script and "3.13" in script
    assert 'PYDSQLITE_REQUIRE_DQLITE=1 "$venv/bin/python" -m pytest' in script  # never skipped there


def test_the_main_example_runs_twice_on_a_real_file(tmp_path):
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "todo_app.py"), str(tmp_path / "todo.db")],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "ship pydsqlite" in result.stdout and "Second plan: Nothing to do" in result.stdout


def test_public_api_is_declared_and_importable():
    for name in pydsqlite.__all__:
        assert hasattr(pydsqlite, name), name
    assert (ROOT / "pydsqlite" / "py.typed").exists()


def test_a_built_wheel_holds_every_module_of_the_package(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    import zipfile

    (wheel,) = tmp_path.glob("pydsqlite-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("pydsqlite/")}
    on_disk = {str(path.relative_to(ROOT)) for path in (ROOT / "pydsqlite").rglob("*.py")} | {"pydsqlite/py.typed"}
    assert on_disk <= packaged, sorted(on_disk - packaged)


def test_ci_smoke_runs_the_benchmark_command_quickly_without_touching_the_docs():
    """``python -m benchmarks --quick`` keeps working (a broken case fails CI), and leaves
    docs/benchmarks.md to full runs."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    smoke = [n for n, line in enumerate(ci) if "-m benchmarks --quick --no-write" in line]
    install = [n for n, line in enumerate(ci) if "pip install" in line and "'.[bench]'" in line]
    assert smoke and install and ci.index(readme_commands()[1]) < install[0] < smoke[0] < len(ci) - 1, ci
