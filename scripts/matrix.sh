#!/usr/bin/env bash
# The compatibility matrix, run by scripts/test.sh after the full suite (which runs on .venv's
# Python). On each other Python that requires-python admits (Debian's own python3, the newest
# ones): install.py into a temporary HOME, the demo, the tar checks and the watchdog's testbed
# tests. Then the pipelines on their floor, Python 3.8, with numpy, scipy and h5py.
# Each interpreter's venv is cached outside the clone (CI starts from a fresh one), keyed by
# pyproject.toml and the interpreter; a missing cache is built from scratch. Needs the testbed
# (scripts/testbed.sh) and .venv (scripts/bootstrap.sh). A missing interpreter is skipped, and
# under CI=true it fails the run.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYENV=${PYENV_ROOT:-/root/.pyenv}
PYTHONS=${LABCTL_MATRIX_PYTHONS:-"/usr/bin/python3 3.12 3.13"}
FLOOR=$(.venv/bin/python -c 'import pipelines; print("%d.%d" % pipelines.MIN_PYTHON)')
CACHE=${LABCTL_MATRIX_CACHE:-/var/cache/labctl-matrix}
mkdir -p "$CACHE" 2>/dev/null || CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/labctl-matrix
mkdir -p "$CACHE"
TESTS=(
  tests/test_install.py::test_install_py_end_to_end tests/test_install_python.py
  tests/test_cli.py::test_demo_runs_end_to_end tests/test_safetar.py tests/test_codeversion.py
  tests/test_watchdog_testbed.py
)
# Of the watchdog's testbed tests, a job's whole life through real SLURM (verified results, an
# array, a failure, a cancel), and the MongoDB backend for one whole job; the races, kills,
# quoting and path checks do not depend on the interpreter, and the full suite runs them.
SELECT="(not mongodb or verified_results) and (not test_watchdog_testbed or verified_results or splits or failing or cancelled)"
failed=()
report=()

say() { echo "[matrix] $*"; }

# The interpreter for "3.12" (pyenv's) or a path; empty when there is none.
resolve() {
  case $1 in
    /*) [ -x "$1" ] && echo "$1" ;;
    *) compgen -G "$PYENV/versions/$1.*/bin/python$1" | sort -V | tail -n 1 ;;
  esac
}

# A venv of Python $1 for $2 ("test" or "pipelines") holding the packages $3... (pip
# arguments), cached; prints its path.
cached_venv() {
  local python=$1 what=$2; shift 2
  local id key venv
  id=$("$python" -c 'import sys; print(sys.version.split()[0], sys.executable)')
  key=$({ echo "$id"; cat pyproject.toml; } | sha256sum | cut -c1-16)
  venv="$CACHE/$what-py${id%% *}-$key"
  if [ ! -f "$venv/.complete" ]; then
    say "building $venv (cache miss)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2 && "$venv/bin/python" -m pip install --quiet "$@" \
      2> >(grep -v "^WARNING: Location" >&2) >&2 && touch "$venv/.complete" \
      || { rm -rf "$venv"; return 1; }
  fi
  echo "$venv"
}

# Point a cached venv's editable labctl at this clone (CI clones anew each run).
use_this_clone() {
  if [ "$(cat "$1/.labctl-root" 2>/dev/null)" != "$ROOT" ]; then
    "$1/bin/python" -m pip install --quiet --no-deps --config-settings editable_mode=compat \
      -e "$ROOT" \
        2> >(grep -v "^WARNING: Location" >&2) && echo "$ROOT" >"$1/.labctl-root"
  fi
}

missing() {
  if [ "${CI:-}" = true ]; then
    say "FAIL: $1"; failed+=("$1")
  else
    say "skipped: $1"; report+=("skipped: $1")
  fi
}

for want in $PYTHONS; do
  python=$(resolve "$want")
  if [ -z "$python" ]; then
    missing "no Python $want here"
    continue
  fi
  version=$("$python" -c 'import sys; print(sys.version.split()[0])')
  start=$SECONDS
  say "Python $version ($python): install.py, demo, tar checks, watchdog testbed tests"
  if ! venv=$(cached_venv "$python" test -e "$ROOT[test]") || ! use_this_clone "$venv"; then
    failed+=("Python $version: venv")
    continue
  fi
  ready=$((SECONDS - start))
  # python3 on PATH is this interpreter, so the jobs on the local cluster run under it too.
  if ! PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      "${TESTS[@]}" -k "$SELECT"; then
    failed+=("Python $version")
  fi
  report+=("Python $version ($python): venv ${ready} s, tests $((SECONDS - start - ready)) s")
done

python=$(resolve "$FLOOR")
if [ -z "$python" ]; then
  missing "no Python $FLOOR here (the pipelines' floor)"
else
  start=$SECONDS
  say "pipelines on their floor, Python $FLOOR ($python) with numpy, scipy and h5py"
  extra=$(.venv/bin/python -c \
    'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["pipelines"])')
  # shellcheck disable=SC2086  # the requirements are words
  if venv=$(cached_venv "$python" pipelines $extra); then
    LABCTL_FLOOR_PYTHON="$venv/bin/python" .venv/bin/python -m pytest -q -p no:cacheprovider \
      tests/test_pipelines_floor.py || failed+=("pipelines on Python $FLOOR")
  else
    failed+=("pipelines on Python $FLOOR: venv")
  fi
  report+=("pipelines on Python $FLOOR ($python): $((SECONDS - start)) s")
fi

for line in "${report[@]}"; do say "$line"; done
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all green"
