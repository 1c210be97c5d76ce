"""The user's crontab through the `crontab` command: show, install and remove labctl's block."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from labctl.compute.transport import CommandError, Runner
from labctl.config import Config
from labctl.errors import LabctlError
from labctl.private import private_dir

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
    """Put the rendered block into the crontab (creating its 0700 log directory); False if
    unchanged."""
    block = spec.block()
    if not spec.config_path.is_file():
        raise CronError(f"no config file at {spec.config_path}: run 'labctl setup' first")
    current = read_crontab(runner)
    wanted = merge_block(current, block)
    try:
        private_dir(spec.config.watchdog.log_dir)
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


BEGIN = "# >>> labctl >>>"
END = "# <<< labctl <<<"


class CronError(LabctlError):
    """The crontab or its template cannot be read, rendered or written."""


def cron_quote(value: str) -> str:
    """`value` as one shell word, escaped against cron's own reading of `%` and backslashes."""
    if "\n" in value or "\r" in value:
        raise CronError(f"a crontab line cannot hold a line break: {value!r}")
    return shlex.quote(value).replace("\\", "\\\\").replace("%", "\\%")


def render(template: str, values: Mapping[str, str]) -> str:
    """The block: the template with each `$name` replaced by its quoted value, between markers.

    `schedule` is inserted as it is (five cron fields); every other value is quoted."""
    words = {
        name: value if name == "schedule" else cron_quote(value) for name, value in values.items()
    }
    try:
        body = Template(template).substitute(words)
    except KeyError as exc:
        raise CronError(
            f"crontab template uses ${exc.args[0]}, which labctl does not set"
        ) from None
    except ValueError as exc:
        raise CronError(f"crontab template: {exc}") from None
    lines = [line for line in body.splitlines() if line.strip()]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def _span(text: str) -> tuple[int, int] | None:
    """Line indexes of our BEGIN and END markers, or None when there is no block."""
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise CronError(
            f"the crontab's labctl markers are broken ({len(begins)} '{BEGIN}', "
            f"{len(ends)} '{END}'): fix them with 'crontab -e'"
        )
    return begins[0], ends[0]


def find_block(text: str) -> str | None:
    """Our block (markers included, newline-terminated), or None."""
    span = _span(text)
    if span is None:
        return None
    return "\n".join(text.splitlines()[span[0] : span[1] + 1]) + "\n"


def remove_block(text: str) -> str:
    """The crontab without our block; every other line kept as it was."""
    span = _span(text)
    if span is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[: span[0]] + lines[span[1] + 1 :])


def merge_block(text: str, block: str) -> str:
    """The crontab with `block` as its last lines (our MAILTO must not reach the user's lines)."""
    rest = remove_block(text)
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block
