"""The documentation's examples run as written and print what the pages say they print.

Every ``python`` block of a page runs in one namespace, statement by statement, in a fresh
folder. A statement's output is stated in one of two ways (docs/index.md, "Examples in
these pages", tells readers):

- ``# -> text`` at the end of its line or on the comment lines right below it (one line of
  output per marker; ``...`` stands for any text);
- a paragraph ``prints`` after the block, then a fenced block holding the block's whole output.

A statement that prints without stated output fails, so no printed claim goes unchecked.
Every ``console`` session runs command by command.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"#\s?->(?: (?P<text>.*))?$")
FENCE = re.compile(r"```(?P<language>[\w-]*)\n(?P<body>.*?)```", re.DOTALL)


def blocks(page: Path, language: str) -> list[str]:
    return [match["body"] for match in FENCE.finditer(page.read_text()) if match["language"] == language]


@dataclass
class PythonBlock:
    code: str
    prints: str | None
    """The fenced block after a ``prints`` paragraph: everything the block prints."""


def python_blocks(page: Path) -> list[PythonBlock]:
    text = page.read_text()
    fences = list(FENCE.finditer(text))
    found = []
    for position, fence in enumerate(fences):
        if fence["language"] != "python":
            continue
        following = fences[position + 1] if position + 1 < len(fences) else None
        stated = following is not None and text[fence.end() : following.start()].strip() == "prints"
        found.append(PythonBlock(fence["body"], following["body"] if stated else None))
    return found


def stated_output(lines: list[str], first: int, last: int) -> list[str] | None:
    """Output lines stated for the statement on lines ``first``..``last`` (1-based): its markers,
    then the marker comment lines right below it; None when it states nothing."""
    stated = [match["text"] or "" for line in lines[first - 1 : last] if (match := MARKER.search(line))]
    following = last
    while following < len(lines) and (match := re.fullmatch(r"\s*" + MARKER.pattern, lines[following])):
        stated.append(match["text"] or "")
        following += 1
    return stated or None


def same_output(printed: str, stated: str) -> bool:
    """``printed`` equals ``stated``, where ``...`` in ``stated`` matches any text."""
    pattern = ".*?".join(re.escape(part) for part in stated.split("..."))
    return re.fullmatch(pattern, printed.rstrip("\n"), re.DOTALL) is not None


CLUSTER_PAGES = {"dqlite.md"}
"""Pages whose examples need a dqlite cluster: the cluster suite runs them (tests/test_dqlite_cluster.py)."""


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p) and p.name not in CLUSTER_PAGES], ids=lambda p: p.name)
def test_python_examples_print_what_the_page_says(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python_examples(page)


def run_python_examples(page: Path, rewrite: Callable[[str], str] = lambda code: code) -> None:
    """Run every python block of ``page`` in one namespace (after ``rewrite``), checking what each statement prints."""
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), 1):
        name = f"{page.name}#python{number}"
        code = rewrite(block.code)
        lines = code.splitlines()
        whole = []
        for statement in ast.parse(code, name).body:
            first = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))])
            stated = stated_output(lines, first, statement.end_lineno)
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(ast.Module([statement], type_ignores=[]), name, "exec", dont_inherit=True), namespace)  # noqa: S102
            whole.append(printed.getvalue())
            where = f"{name}, line {statement.lineno}"
            if stated is not None:
                assert same_output(printed.getvalue(), "\n".join(stated)), (
                    f"{where} printed:\n{printed.getvalue()}\nthe page says:\n" + "\n".join(stated)
                )
            elif block.prints is None:
                assert printed.getvalue() == "", f"{where} printed output the page does not state:\n{printed.getvalue()}"
        if block.prints is not None:
            assert same_output("".join(whole), block.prints.rstrip("\n")), (
                f"{name} printed:\n{''.join(whole)}\nthe page says it prints:\n{block.prints}"
            )


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
