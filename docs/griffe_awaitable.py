"""A griffe extension for the API reference: ``pydsqlite.aio``'s entry points are built at import
time (``sync_models = _awaitable(...)``), so reading the source finds no docstring; this one
takes each from the imported object, which has the text and the async example."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import griffe


class AwaitableDocstrings(griffe.Extension):
    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.parent is None or attr.parent.path != "pydsqlite.aio" or not str(attr.value).startswith("_awaitable("):
            return
        runtime = getattr(importlib.import_module("pydsqlite.aio"), attr.name)
        attr.docstring = griffe.Docstring(inspect.getdoc(runtime) or "", parent=attr)
        attr.labels = {"async function"}
        attr.value = None
