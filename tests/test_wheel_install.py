"""labctl installed from a wheel (not editable), as `pip install .` installs it: what it needs
comes as package data, and the lab's pipelines checkout is named explicitly or the error says so.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.test_cron_live import crontab, saved_crontab

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding labctl's wheel; its dependencies are this venv's (no download)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(root), str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = root.glob("labctl-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    fresh = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (Path(fresh) / "deps.pth").write_text(site.getsitepackages()[0] + "\n")  # paths only
    yield venv


def labctl(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run([str(venv / "bin" / "labctl"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_the_wheel_is_the_labctl_that_runs(wheel_venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", "import labctl; print(labctl.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(wheel_venv)), where  # not this checkout's source


@pytest.mark.testbed  # the user's crontab is one per machine: not beside the tests installing it
def test_cron_show_finds_its_template(wheel_venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"user": "charlie"}))
    with saved_crontab():
        crontab("-r")  # none installed: `cron show` renders the template
        shown = labctl(wheel_venv, tmp_path, "--config", str(config), "cron", "show")
    assert shown.returncode == 0, shown.stderr
    assert "watchdog scan" in shown.stdout and f"{wheel_venv}/bin/python" in shown.stdout


def test_the_demo_runs_with_no_repository(wheel_venv: Path, tmp_path: Path) -> None:
    """With no checkout of the lab's repository, the demo runs the example labctl ships."""
    done = labctl(wheel_venv, tmp_path, "demo", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert done.stdout.startswith("no checkout of the lab's repository: the demo runs labctl's")
    assert "completed with verified results" in done.stdout
    shipped = tmp_path / "demo" / "example-pipelines" / "pipelines"
    assert (shipped / "file_stats.py").read_text() == (REPO / "pipelines/file_stats.py").read_text()
    assert not (shipped / "file_stats.py").is_symlink()  # the wheel holds the files themselves


def test_doctor_names_the_missing_pipelines_checkout(wheel_venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"path": str(tmp_path / "db")}}))
    doctor = labctl(wheel_venv, tmp_path, "--config", str(config), "doctor")
    lines = doctor.stdout.splitlines()
    where = lines.index(
        "✗ pipelines: no pipelines checkout: this labctl is not run from the lab's repository; "
        "set watchdog.pipelines_dir to the lab's pipelines/ (a git checkout)"
    )
    assert lines[where + 1].startswith("    fix: set watchdog.pipelines_dir in the config")


def test_the_demo_runs_with_the_labs_pipelines_named(wheel_venv: Path, tmp_path: Path) -> None:
    done = labctl(wheel_venv, tmp_path, "demo", "--pipelines", str(REPO / "pipelines"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "completed with verified results" in done.stdout
