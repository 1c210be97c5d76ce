"""scripts/demo.sh on a copy of this tree: it installs labctl alone (no test tool chain), then
runs the demo to a verified job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_install import copy_tree


@pytest.mark.slow
def test_demo_sh_installs_the_runtime_only(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path / "labctl")
    env = {**os.environ, "PYTHON": sys.executable, "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(tree / "scripts" / "demo.sh"), "--timeout", "120"],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[setup] installing labctl and its dependencies into" in done.stdout
    assert "completed with verified results" in done.stdout
    venv = tree / ".venv"
    for tool in ("ruff", "mypy", "pytest", "playwright"):
        assert not (venv / "bin" / tool).exists(), tool
    assert (venv / ".labctl-installed").read_text().endswith(" \n")  # no extras
