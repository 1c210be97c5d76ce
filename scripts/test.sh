#!/usr/bin/env bash
# Set up everything the tests need (venv, the sshd + SLURM testbed) and run the whole suite:
# lint, type check, then pytest. Extra arguments go to pytest.
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
if [ -f scripts/testbed.sh ]; then
  bash scripts/testbed.sh
  source "${HPC_DIR:-/tmp/hpc-testbed}/env.sh"
fi
echo "[test] ruff";  ruff check .
echo "[test] mypy";  mypy
echo "[test] pytest"
exec pytest "$@"
