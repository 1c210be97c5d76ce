#!/usr/bin/env bash
# Set up everything the tests need (venv, the sshd + SLURM testbed) and run the whole suite:
# lint, type check, pytest, then the compatibility matrix on the other Pythons
# (scripts/matrix.sh). Extra arguments go to the full pytest run.
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
if [ -f scripts/testbed.sh ]; then
  bash scripts/testbed.sh
  source "${HPC_DIR:-/tmp/hpc-testbed}/env.sh"
fi
# The browser tests drive Debian's headless Chromium (never a downloaded browser build).
if ! dpkg -s chromium 2>/dev/null | grep -q '^Status: install ok installed'; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
      >/tmp/labctl-apt-chromium.log 2>&1 || { tail /tmp/labctl-apt-chromium.log >&2; exit 1; }
  else
    echo "[test] chromium is not installed and this is not root: the browser tests will skip"
  fi
fi
echo "[test] ruff";  ruff check .
echo "[test] mypy";  mypy
echo "[test] pytest"
status=0
pytest --durations=15 "$@" || status=$?
echo "[test] compatibility matrix"
bash scripts/matrix.sh || status=1
exit "$status"
