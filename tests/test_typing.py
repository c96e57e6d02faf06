"""The package and user code written like the docs type-check: mypy --strict (with Pydantic's
plugin) and pyright over ``pydsqlite`` and ``tests/typing``. ``user_code.py`` must be clean (its
``assert_type`` calls pin what ``Database`` returns) and runs; ``misuse.py`` must be reported on
exactly its lines marked ``# error``, by both checkers."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "typing"
USER_CODE = SAMPLES / "user_code.py"
MISUSE = SAMPLES / "misuse.py"
TIMEOUT = 300


@dataclass
class Report:
    """What one checker said: the lines it reports an error on, by file, and its output."""

    errors: dict[Path, set[int]] = field(default_factory=dict)
    output: str = ""


def _mypy_report(output: str) -> Report:
    report = Report(output=output)
    for line in output.splitlines():
        match = re.match(r"(.+?):(\d+): error: ", line)
        assert match or ": note: " in line, f"unexpected mypy output: {line}"
        if match:
            report.errors.setdefault(Path(match[1]).resolve(), set()).add(int(match[2]))
    return report


def _pyright_report(output: str) -> Report:
    diagnostics = json.loads(output)["generalDiagnostics"]
    report = Report(output="\n".join(f"{item['file']}:{item['range']['start']['line'] + 1}: {item['message']}" for item in diagnostics))
    for item in diagnostics:
        if item["severity"] == "error":
            report.errors.setdefault(Path(item["file"]).resolve(), set()).add(item["range"]["start"]["line"] + 1)
    return report


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """The installed checkers over the package and the samples, run at once (pyright takes the longest)."""
    commands = {
        "mypy": [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                 "--cache-dir", str(tmp_path_factory.mktemp("mypy-cache")), "--show-absolute-path", "--no-error-summary"],
        "pyright": [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable],
    }
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}  # no look-up of a newer pyright release
    running = {
        name: subprocess.Popen(
            [*command, "pydsqlite", str(SAMPLES)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, command in commands.items()
        if importlib.util.find_spec(name) is not None
    }
    found = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode in (0, 1), f"{name} did not run:\n{out}\n{err}"
        found[name] = _mypy_report(out) if name == "mypy" else _pyright_report(out)
    return found


def report_of(reports: dict[str, Report], checker: str) -> Report:
    """Outside CI a checker that is not installed skips (the test extra installs both); in CI it fails."""
    if checker not in reports:
        if os.environ.get("CI"):
            pytest.fail(f"{checker} is not installed; the test extra should have installed it")
        pytest.skip(f"{checker} is not installed (pip install -e '.[test]')")
    return reports[checker]


def marked_lines() -> set[int]:
    return {number for number, text in enumerate(MISUSE.read_text().splitlines(), start=1) if text.endswith("# error")}


@pytest.mark.parametrize("checker", ["mypy", "pyright"])
def test_package_and_user_code_type_check_clean(reports, checker):
    report = report_of(reports, checker)
    assert {path: lines for path, lines in report.errors.items() if path != MISUSE} == {}, report.output


@pytest.mark.parametrize("checker", ["mypy", "pyright"])
def test_misuse_is_reported_on_exactly_the_marked_lines(reports, checker):
    assert len(marked_lines()) >= 10
    report = report_of(reports, checker)
    assert report.errors.get(MISUSE, set()) == marked_lines(), report.output


def test_the_typed_user_code_runs():
    result = subprocess.run(
        [sys.executable, str(USER_CODE)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
