#!/usr/bin/env bash
# Set up everything the tests need (venv, the sshd + SLURM testbed) and run the whole suite:
# lint, type check, the import layers (pyproject.toml's [tool.importlinter]), pytest, then the
# compatibility matrix on the other Pythons (scripts/matrix.sh). Extra arguments make it one
# pytest run with them instead of the whole suite and the matrix.
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
if [ -f scripts/testbed.sh ]; then
  bash scripts/testbed.sh
  source "${HPC_DIR:-/tmp/hpc-testbed}/env.sh"
fi
# The browser tests drive Debian's headless Chromium (never a downloaded browser build); the
# dashboard draws a dataset's lineage with Debian's graphviz.
missing=()
for package in chromium graphviz; do
  dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/tmp/labctl-apt.log 2>&1 || { tail /tmp/labctl-apt.log >&2; exit 1; }
  else
    echo "[test] ${missing[*]} not installed and this is not root: the tests needing them will skip"
  fi
fi
echo "[test] ruff";  ruff check .
echo "[test] mypy";  mypy
echo "[test] import-linter"; lint-imports
if [ "$#" -gt 0 ]; then
  echo "[test] pytest $*"
  exec pytest --durations=15 "$@"
fi
status=0
# Two processes side by side: the tests that share the testbed (marked `testbed`, see
# tests/conftest.py) one after another in the background, every other test meanwhile.
echo "[test] pytest, in two processes: -m testbed (shown after) and -m 'not testbed'"
shared_log=$(mktemp)
pytest --durations=10 -m testbed --basetemp=/tmp/labctl-pytest-testbed >"$shared_log" 2>&1 &
shared=$!
pytest --durations=10 -m "not testbed" --basetemp=/tmp/labctl-pytest-others || status=$?
wait "$shared" || status=$?
echo "[test] pytest -m testbed"
cat "$shared_log"
rm -f "$shared_log"
echo "[test] compatibility matrix"
bash scripts/matrix.sh || status=1
exit "$status"
