#!/usr/bin/env bash
# Set up labctl alone in .venv (not the test tool chain: scripts/test.sh adds that) and run the
# main job end to end on the embedded store and this machine.
EXTRAS=""
source "$(dirname "$0")/bootstrap.sh"
# The demo's job moves its data with rsync, which a fresh machine may lack.
if ! command -v rsync >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] the demo needs rsync, which is missing: installing Debian's rsync package" \
      "(apt-get install rsync)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
  else
    echo "labctl demo needs rsync: install it (e.g. sudo apt-get install rsync) and run again" >&2
    exit 1
  fi
fi
exec labctl demo "$@"
