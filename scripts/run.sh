#!/usr/bin/env bash
# Sets everything up, then runs the main job: the Tempo dashboard with simulated
# instances, on an embedded redis-server unless REDIS_URL names one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/greenredis dashboard "$@"
