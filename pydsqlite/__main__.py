"""``python -m pydsqlite``: the same as the ``pydsqlite`` command."""

import sys

from .cli import main

sys.exit(main())
