#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite against real redis-servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
