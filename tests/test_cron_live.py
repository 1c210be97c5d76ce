"""The real `crontab` command and the real cron daemon (Debian cron, started by scripts/testbed.sh).

Every test leaves the user's crontab exactly as it found it (the `user_crontab` fixture).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from labctl.cli import cli
from labctl.compute.transport import LocalRunner
from labctl.config import load_config
from labctl.install.cron import BEGIN, END, CronSpec, install, read_crontab

pytestmark = pytest.mark.skipif(shutil.which("crontab") is None, reason="cron is not installed")

FOREIGN = """\
# a lab member's own lines, kept byte for byte
MAILTO=me@lab.org
0 0 31 2 * /bin/echo never runs   # 31 February
"""


def crontab(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["crontab", *args], input=input, capture_output=True, text=True)


@contextmanager
def saved_crontab() -> Iterator[None]:
    """Save the user's crontab (or its absence) and put it back exactly afterwards."""
    saved = crontab("-l")
    try:
        yield
    finally:
        if saved.returncode == 0:
            crontab("-", input=saved.stdout)
        else:
            crontab("-r")
    assert crontab("-l").stdout == (saved.stdout if saved.returncode == 0 else "")


@pytest.fixture
def user_crontab() -> Iterator[None]:
    with saved_crontab():
        yield


def write_config(directory: Path) -> Path:
    """A config whose every local path is inside `directory` (cron runs with another HOME)."""
    path = directory / "config.yaml"
    settings = {
        "database": {"path": str(directory / "db")},
        "watchdog": {"state_dir": str(directory / "state"), "log_dir": str(directory / "logs")},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def labctl(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_install_show_remove_keep_foreign_lines(user_crontab: None, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    crontab("-", input=FOREIGN)

    assert labctl(config, "cron", "install") == "installed the labctl block\n"
    first = crontab("-l").stdout
    assert labctl(config, "cron", "install") == "the labctl block is up to date\n"
    assert crontab("-l").stdout == first
    assert first.startswith(FOREIGN)
    block = first[len(FOREIGN) :]
    assert block.startswith(BEGIN + "\n") and block.endswith(END + "\n")
    assert labctl(config, "cron", "show") == block
    assert (tmp_path / "logs").is_dir()

    assert labctl(config, "cron", "remove") == "removed the labctl block\n"
    assert crontab("-l").stdout == FOREIGN
    assert labctl(config, "cron", "remove") == "no labctl block to remove\n"
    assert crontab("-l").stdout == FOREIGN


def test_install_and_remove_without_any_crontab(user_crontab: None, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    crontab("-r")
    assert read_crontab(LocalRunner()) == ""  # `crontab -l` exits 1: "no crontab for root"

    labctl(config, "cron", "install")
    assert crontab("-l").stdout.startswith(BEGIN)
    labctl(config, "cron", "remove")
    done = crontab("-l")
    assert done.returncode == 1 and "no crontab" in done.stderr  # as it was: no table at all


def test_install_refuses_without_a_config_file_and_leaves_the_crontab(
    user_crontab: None, isolated_home: Path
) -> None:
    crontab("-", input=FOREIGN)
    result = CliRunner().invoke(cli, ["cron", "install"])
    assert result.exit_code == 1
    wanted = isolated_home / ".config" / "labctl" / "config.yaml"
    assert result.output == f"error: no config file at {wanted}: run 'labctl setup' first\n"
    assert crontab("-l").stdout == FOREIGN


def _cron_running() -> bool:
    pidfile = Path("/run/crond.pid")
    if not pidfile.is_file():
        return False
    stat = subprocess.run(["ps", "-o", "stat=", "-p", pidfile.read_text().strip()],
                          capture_output=True, text=True)  # fmt: skip
    return stat.returncode == 0 and not stat.stdout.startswith("Z")


@pytest.mark.slow
def test_cron_runs_the_rendered_block(user_crontab: None, tmp_path: Path) -> None:
    """cron runs each stage through flock and the log rotator; a held lock skips its stage.

    The python in the block is a stub that records its arguments, then runs the real one, so
    the real `labctl watchdog` runs against a store in this test's directory. The directory name
    has a space and a `%`, which cron would otherwise cut the line at."""
    if not _cron_running():
        pytest.fail("the cron daemon is not running: run scripts/testbed.sh")
    home = tmp_path / "cron 100% real"
    home.mkdir()
    calls = home / "calls"
    stub = home / "python"
    stub.write_text(
        f'#!/bin/sh\necho "$*" >> "{calls}"\nexec "{sys.executable}" "$@"\n', encoding="utf-8"
    )
    stub.chmod(0o755)
    config_path = write_config(home)
    spec = CronSpec(load_config(config_path), config_path, python=stub)
    crontab("-", input=FOREIGN)
    assert install(LocalRunner(), spec)

    logs = home / "logs"
    with (logs / "scan.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a scan "still running": cron's scan must skip
        deadline = time.monotonic() + 75
        wanted = [logs / "transfers.log", logs / "jobs.log"]
        while not all(log.exists() and log.stat().st_size for log in wanted):
            assert time.monotonic() < deadline, f"cron did not run the block; calls: {calls}"
            time.sleep(0.5)
        time.sleep(2)  # let both stages finish writing
    ran = calls.read_text().splitlines()

    for stage in ("transfers", "jobs"):
        assert f"-P -m labctl --config {config_path} watchdog {stage}" in ran
        text = (logs / f"{stage}.log").read_text()
        assert f" {stage}: nothing to do" in text, text
    assert not any("watchdog scan" in line for line in ran)
    assert not (logs / "scan.log").exists()
    assert crontab("-l").stdout.startswith(FOREIGN)
