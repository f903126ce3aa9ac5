#!/usr/bin/env bash
# Sets everything up, lints, type-checks, then runs the whole test suite against real
# redis-servers (in parallel: each test owns its servers on free ports).
# Arguments go to pytest: ./scripts/test.sh -k grid, ./scripts/test.sh -m unit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "test: ruff check, ruff format --check, mypy"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-3}" "$@"
