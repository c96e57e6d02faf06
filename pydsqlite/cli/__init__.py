"""The pydsqlite command line: ``commands`` parses it and runs each command (its docstring is
the ``--help`` text); ``inputs`` opens the databases and loads what a command names (models,
data steps, schema files); ``output`` prints plans, progress and messages.
"""

from .commands import main as main  # the console script's entry point (pydsqlite.cli:main)
