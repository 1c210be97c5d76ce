"""The user's crontab through the `crontab` command: show, install and remove labctl's block."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from labctl.config import Config
from labctl.crontab import CronError, find_block, merge_block, remove_block, render
from labctl.transport import CommandError, Runner

TEMPLATE = Path(__file__).resolve().parent / "crontab.template"  # package data (links to the
# repository's top-level crontab.template in a checkout)


def schedule(minutes: int) -> str:
    """The five cron fields for "every `minutes` minutes"."""
    return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"


@dataclass(frozen=True)
class CronSpec:
    """What the block is rendered from: the template, and the python and config it runs."""

    config: Config
    config_path: Path
    python: Path = Path(sys.executable)  # the venv's python, not resolved past its symlink
    template: Path = TEMPLATE

    def block(self) -> str:
        try:
            text = self.template.read_text(encoding="utf-8")
        except OSError as exc:
            raise CronError(
                f"cannot read the crontab template {self.template}: {exc.strerror}"
            ) from None
        flock = shutil.which("flock")
        if flock is None:
            raise CronError("flock is not installed (Debian: apt install util-linux)")
        return render(
            text,
            {
                "schedule": schedule(self.config.watchdog.cron_minutes),
                "flock": flock,
                "python": str(self.python.absolute()),
                "config": str(self.config_path.absolute()),
                "log_dir": str(self.config.watchdog.log_dir.absolute()),
            },
        )


def read_crontab(runner: Runner) -> str:
    """The user's crontab text; empty when they have none (`crontab -l` exits 1 then)."""
    done = runner.run(["crontab", "-l"], check=False, timeout=30)
    if done.returncode == 0:
        return done.stdout
    if done.returncode == 1 and "no crontab for" in done.stderr:
        return ""
    if done.returncode == 127:
        raise CronError("the crontab command is missing (Debian: apt install cron)")
    raise CommandError(done)


def _write_crontab(runner: Runner, text: str) -> None:
    runner.run(["crontab", "-"], input=text, timeout=30)


def installed_block(runner: Runner) -> str | None:
    """labctl's block as it is in the user's crontab now, or None."""
    return find_block(read_crontab(runner))


def install(runner: Runner, spec: CronSpec) -> bool:
    """Put the rendered block into the crontab (creating its log directory); False if unchanged."""
    block = spec.block()
    if not spec.config_path.is_file():
        raise CronError(f"no config file at {spec.config_path}: run 'labctl setup' first")
    current = read_crontab(runner)
    wanted = merge_block(current, block)
    try:
        spec.config.watchdog.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CronError(f"cannot create the log directory: {exc}") from None
    if wanted == current:
        return False
    _write_crontab(runner, wanted)
    return True


def remove(runner: Runner) -> bool:
    """Take our block out of the crontab, keeping every other line (no line left: no crontab);
    False if it was not there."""
    current = read_crontab(runner)
    wanted = remove_block(current)
    if wanted == current:
        return False
    if wanted:
        _write_crontab(runner, wanted)
    else:
        runner.run(["crontab", "-r"], timeout=30)
    return True
