#!/usr/bin/env bash
# Set up labctl in .venv and run the main job end to end on the embedded store.
source "$(dirname "$0")/bootstrap.sh"
exec labctl demo "$@"
