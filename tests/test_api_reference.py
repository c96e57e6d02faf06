"""The API reference (docs/reference.md, generated from the docstrings) covers every public
name, each with an example, and every example does what it shows."""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest

import pydsqlite
from pydsqlite.schema import model

from .helpers import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tables_the_examples_declare_are_forgotten(monkeypatch):
    """Examples declare models named like other tests' tables (``accounts``), and a string foreign
    key resolves to the latest model of its table: they register into a copy of the registry."""
    monkeypatch.setattr(model, "_registry", dict(model._registry))


EXPORTING = {"pydsqlite": pydsqlite.__all__, "pydsqlite.aio": ["AsyncDatabase", "migration_history", "model_migration_plan",
                                                            "schema_migration_plan", "sync_models", "sync_schema"]}
"""The modules whose ``__all__`` is public API (``pydsqlite.aio`` needs the aio extra to import)."""

PUBLIC = [f"{module}.{name}" for module, names in EXPORTING.items() for name in names]


def _public(path: str) -> object:
    module, _, name = path.rpartition(".")
    if module == "pydsqlite.aio":
        require("aiosqlite")
    return getattr(importlib.import_module(module), name)


def test_the_reference_page_lists_exactly_the_public_names():
    listed = re.findall(r"^::: (pydsqlite[\w.]*)$", (ROOT / "docs" / "reference.md").read_text(), re.MULTILINE)
    assert sorted(listed) == sorted(PUBLIC) and len(listed) == len(set(listed))
    require("aiosqlite")
    assert EXPORTING["pydsqlite.aio"] == importlib.import_module("pydsqlite.aio").__all__


def test_no_other_package_module_exports_api():
    """A module with ``__all__`` of its own (not listed above) is the seam of an internal layer."""
    exporting = {
        f"pydsqlite.{path.relative_to(ROOT / 'pydsqlite').with_suffix('').as_posix().replace('/', '.')}".removesuffix(".__init__")
        for path in (ROOT / "pydsqlite").rglob("*.py")
        if re.search(r"^__all__ = ", path.read_text(), re.MULTILINE)
    }
    assert exporting - set(EXPORTING) == INTERNAL_SEAMS


INTERNAL_SEAMS = {"pydsqlite.engines", "pydsqlite.replica.replication"}
"""``__all__`` for pydsqlite's own imports: the engine seam (drivers) and the replica's parts."""


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_an_example_that_runs_as_shown(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that name a file create it here
    public = _public(name)
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
