#!/usr/bin/env bash
# Installs the project with its test tools into .venv and runs every check CI runs:
# lint, format, types, import contracts, then the test suite (SQLite always, PostgreSQL when reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff check";  ruff check .
echo "== ruff format"; ruff format --check .
echo "== mypy";        mypy
echo "== import contracts"; lint-imports
echo "== pytest";      pytest "$@"
