"""install.py refuses, in one line and before it creates anything, a Python it cannot use.

Real interpreters throughout: pyenv's 3.8 and 3.10 for "too old", and for "no python3-venv" this
Python itself with a standard library lacking ensurepip, as Debian's python3 is without the
python3.X-venv package (its binary beside a folder of links to every other stdlib entry).
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.interpreters import interpreter

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.py"
MINOR = "{}.{}".format(*sys.version_info[:2])


def install(python: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "XDG_"))}
    env["HOME"] = str(home)
    argv = [str(python), str(INSTALL), "--non-interactive", "--user", "charlie"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_min_python_is_the_one_pyproject_requires() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    wanted = runpy.run_path(str(INSTALL))["MIN_PYTHON"]
    assert requires == ">={}.{}".format(*wanted)


def test_install_py_parses_as_python_3_6() -> None:
    """So that every old python3 reaches the version check instead of a SyntaxError."""
    ast.parse(INSTALL.read_text(), feature_version=(3, 6))


@pytest.mark.parametrize("version", ["3.8", "3.10"])
def test_too_old_a_python_is_refused(version: str, isolated_home: Path) -> None:
    python = interpreter(version)
    done = install(python, isolated_home)
    assert done.returncode == 2
    assert done.stdout == ""
    assert re.fullmatch(
        rf"\[install\] error: labctl needs Python 3\.11 or newer, and {re.escape(str(python))} "
        rf"is {re.escape(version)}\.\d+: run install\.py with a newer one .*python3\.11-venv\)\n",
        done.stderr,
    ), done.stderr
    assert list(isolated_home.iterdir()) == []


@pytest.fixture
def python_without_ensurepip(tmp_path: Path) -> Path:
    """This Python's interpreter in a prefix of its own, whose stdlib lacks only ensurepip."""
    executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    copied = prefix / "bin" / executable.name
    shutil.copy2(executable, copied)
    linked = prefix / "lib" / stdlib.name
    linked.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "ensurepip":
            (linked / entry.name).symlink_to(entry)
    probe = subprocess.run(
        [str(copied), "-c", "import sys, venv; print(sys.prefix)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == str(prefix)  # it really runs on the reduced stdlib
    return copied


def test_a_python_without_ensurepip_is_refused_with_the_package_to_install(
    python_without_ensurepip: Path, isolated_home: Path
) -> None:
    done = install(python_without_ensurepip, isolated_home)
    assert done.returncode == 2
    package = f"python{MINOR}-venv"
    assert done.stderr == (
        f"[install] error: {python_without_ensurepip} cannot create a virtual environment (it has "
        f"no ensurepip): install {package} (Debian/Ubuntu: apt install {package}) and run "
        "install.py again\n"
    )
    assert "creating a virtual environment" not in done.stdout
    assert not (isolated_home / ".local").exists()
