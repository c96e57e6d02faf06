"""The API reference (docs/reference.md, generated from the docstrings) covers every public
name, each with an example, and every example does what it shows."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

import pydsqlite
from pydsqlite.schema import model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tables_the_examples_declare_are_forgotten(monkeypatch):
    """Examples declare models named like other tests' tables (``accounts``), and a string foreign
    key resolves to the latest model of its table: they register into a copy of the registry."""
    monkeypatch.setattr(model, "_registry", dict(model._registry))


def test_the_reference_page_lists_exactly_the_public_names():
    listed = re.findall(r"^::: pydsqlite\.(\w+)$", (ROOT / "docs" / "reference.md").read_text(), re.MULTILINE)
    assert sorted(listed) == sorted(pydsqlite.__all__) and len(listed) == len(set(listed))


@pytest.mark.parametrize("name", pydsqlite.__all__)
def test_every_public_name_has_an_example_that_runs_as_shown(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that name a file create it here
    public = getattr(pydsqlite, name)
    docstring = inspect.getdoc(public) or ""
    assert re.search(r"^Examples:\n    >>> ", docstring, re.MULTILINE), f"{name}: no Examples: section with >>> lines"
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(public, name, globs={})
    assert tests, name
    for test in tests:
        report: list[str] = []
        result = runner.run(test, out=report.append)
        assert result.failed == 0, f"{test.name}:\n" + "".join(report)
