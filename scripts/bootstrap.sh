# Sourced by scripts/demo.sh and scripts/test.sh: make .venv with labctl and the extras in
# $EXTRAS (test.sh: "test", the test tool chain; demo.sh: "", labctl alone).
# Re-installs only when pyproject.toml changed or extras are wanted that the venv lacks, so a
# second run costs about nothing. The editable install is path-based (compat): a folder named
# labctl in the current directory (a clone in ~/labctl, seen from ~) cannot shadow the package.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS-test}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.labctl-installed"
HASH=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
read -r HAD_HASH HAD_EXTRAS 2>/dev/null <"$STAMP" || true
if [ "${HAD_HASH:-}" != "$HASH" ] || { [ -n "$EXTRAS" ] && [ "${HAD_EXTRAS:-}" != "$EXTRAS" ]; }; then
  echo "[setup] installing labctl${EXTRAS:+ with [$EXTRAS]} and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --config-settings editable_mode=compat -e "$ROOT${EXTRAS:+[$EXTRAS]}" \
    2> >(grep -v "^WARNING: Location" >&2)
  echo "$HASH $EXTRAS" >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"
