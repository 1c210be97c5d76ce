# Sourced by scripts/demo.sh and scripts/test.sh: make .venv with labctl and its test tools.
# Re-installs only when pyproject.toml changed, so a second run costs about nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.labctl-installed"
WANT=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing labctl and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" \
    2> >(grep -v "^WARNING: Location" >&2)
  echo "$WANT" >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"
