#!/usr/bin/env bash
# The whole suite on Python 3.13 with the dqlite cluster tests (README: "Run the test suite").
# Needs Debian's libdqlite0 and go-dqlite (dqlite-demo, dqlite); the dqlite-dbapi client needs
# Python 3.13, taken from PATH (python3.13) or pyenv, in a fresh venv with '.[test,fastapi,aio,dqlite]'.
# The cluster tests are required here: without dqlite they fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
interpreter=""
for candidate in $(ls -d "$HOME"/.pyenv/versions/3.13.*/bin/python3 2>/dev/null | sort -V -r) python3.13; do
  if "$candidate" -c "import sys; assert sys.version_info[:2] == (3, 13)" 2>/dev/null; then
    interpreter=$candidate
    break
  fi
done
if [ -z "$interpreter" ]; then
  echo "Python 3.13 is neither on PATH nor in pyenv: the dqlite suite needs it (dqlite-dbapi)" >&2
  exit 1
fi
venv=$(mktemp -d)/venv
"$interpreter" -m venv "$venv"
"$venv/bin/python" -m pip install -q -e '.[test,fastapi,aio,dqlite]'
PYDSQLITE_REQUIRE_DQLITE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider
