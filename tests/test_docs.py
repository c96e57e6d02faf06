"""The documentation's examples run as written: every ``python`` block of a page in one
namespace, every ``console`` session command by command, in a fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, code in enumerate(blocks(page, "python"), 1):
        exec(compile(code, f"{page.name}#python{number}", "exec", dont_inherit=True), namespace)  # noqa: S102


def console_steps(session: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) pairs; a heredoc belongs to its command."""
    steps: list[tuple[str, list[str]]] = []
    lines = session.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("$ "):
            command = [line[2:]]
            heredoc = re.search(r"<<'(\w+)'", line)
            if heredoc:
                while lines[index] != heredoc.group(1):
                    index += 1
                    command.append(lines[index])
            steps.append(("\n".join(command), []))
        elif steps and line.strip():
            steps[-1][1].append(line)
        index += 1
    return steps


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "console")], ids=lambda p: p.name)
def test_console_sessions_run(page, tmp_path):
    # This checkout's pydsqlite, also when the installed one (whose console script runs) is another copy.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    for session in blocks(page, "console"):
        for command, expected in console_steps(session):
            result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=environment)
            output = result.stdout + result.stderr
            for line in expected:
                assert line in output, f"{page.name}: `{command}` printed:\n{output}\nexpected the line:\n{line}"
