"""Other Pythons on this machine, for tests that run code under an older or newer version."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def interpreter(version: str) -> Path:
    """A Python `version` ("3.8"): pyenv's (under $PYENV_ROOT), else `python3.8` on PATH.

    Missing, the test skips; under CI=true it fails, since CI's machines have these Pythons.
    """
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv"))
    found = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
    on_path = shutil.which(f"python{version}")
    if found or on_path:
        return found[-1] if found else Path(str(on_path))
    message = f"no Python {version} here (looked in {root}/versions and on PATH)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
