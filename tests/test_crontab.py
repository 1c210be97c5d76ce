"""Pure crontab text (render, merge, remove) and the log rotator the block pipes into."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest

from labctl.config import Config, WatchdogConfig
from labctl.install.cron import (
    BEGIN,
    END,
    CronError,
    CronSpec,
    find_block,
    merge_block,
    remove_block,
    render,
    schedule,
)
from labctl.install.cronlog import append
from tests.modes import modes, private

FOREIGN = """\
# my own jobs
SHELL=/bin/bash
MAILTO=me@lab.org
0 3 * * * /usr/local/bin/backup --all   # nightly
@reboot   echo 'hi  there' >> /tmp/boot.log
"""
VALUES = {
    "schedule": "* * * * *",
    "flock": "/usr/bin/flock",
    "python": "/home/c/venv/bin/python",
    "config": "/home/c/.config/labctl/config.yaml",
    "log_dir": "/home/c/logs",
}


def block_of(template: str = "$schedule $python run $config\n") -> str:
    return render(template, VALUES)


def test_render_wraps_the_template_between_markers() -> None:
    block = render(
        '# a comment\n\nMAILTO=""\n$schedule $flock -n $log_dir/x.lock $python\n', VALUES
    )
    assert block == (
        f'{BEGIN}\n# a comment\nMAILTO=""\n'
        "* * * * * /usr/bin/flock -n /home/c/logs/x.lock /home/c/venv/bin/python\n"
        f"{END}\n"
    )


def test_render_quotes_values_against_the_shell_and_against_cron() -> None:
    nasty = "/tmp/my dir/100%/back\\slash/$(touch x)"
    line = render("$python\n", {**VALUES, "python": nasty}).splitlines()[1]
    # cron turns "\%" into "%" and "\\" into "\"; what remains is one shell word
    as_cron_passes_it = line.replace("\\\\", "\0").replace("\\%", "%").replace("\0", "\\")
    assert shlex.split(as_cron_passes_it) == [nasty]
    assert "%" not in line.replace("\\%", "")


def test_render_refuses_unknown_placeholders_and_line_breaks() -> None:
    with pytest.raises(CronError, match=r"\$pyhton"):
        render("$pyhton\n", VALUES)
    with pytest.raises(CronError, match="line break"):
        render("$python\n", {**VALUES, "python": "/a\n* * * * * evil"})


def test_schedule() -> None:
    assert schedule(1) == "* * * * *"
    assert schedule(5) == "*/5 * * * *"


def test_the_repository_template_renders_three_locked_logged_stages(tmp_path: Path) -> None:
    config = Config(watchdog=WatchdogConfig(log_dir=tmp_path / "logs", cron_minutes=2))
    spec = CronSpec(config, tmp_path / "config.yaml", python=Path("/opt/venv/bin/python"))
    lines = spec.block().splitlines()
    assert lines[0] == BEGIN and lines[-1] == END
    assert 'MAILTO=""' in lines
    jobs = [line for line in lines[1:-1] if not line.startswith(("#", "MAILTO"))]
    assert len(jobs) == 3
    for stage, line in zip(["scan", "transfers", "jobs"], jobs, strict=True):
        assert line.startswith(f"*/2 * * * * /usr/bin/flock -n {tmp_path}/logs/{stage}.lock ")
        assert (
            f"/opt/venv/bin/python -P -m labctl --config {tmp_path}/config.yaml watchdog {stage} "
            f"2>&1 | /opt/venv/bin/python -P -m labctl.install.cronlog --max-bytes 1000000 "
            f"--keep 3 {tmp_path}/logs/{stage}.log"
        ) in line


def test_merge_appends_the_block_and_keeps_every_foreign_byte() -> None:
    merged = merge_block(FOREIGN, block_of())
    assert merged == FOREIGN + block_of()
    assert merge_block(merged, block_of()) == merged  # twice: no change
    assert remove_block(merged) == FOREIGN
    assert find_block(merged) == block_of()


def test_merge_replaces_an_old_block_and_moves_it_last() -> None:
    old = block_of("$schedule old\n")
    text = "# before\n" + old + "0 1 * * * after\n"
    merged = merge_block(text, block_of())
    assert merged == "# before\n0 1 * * * after\n" + block_of()


def test_merge_into_an_empty_crontab_or_one_without_final_newline() -> None:
    assert merge_block("", block_of()) == block_of()
    assert merge_block("0 1 * * * x", block_of()) == "0 1 * * * x\n" + block_of()
    assert remove_block("0 1 * * * x") == "0 1 * * * x"
    assert find_block(FOREIGN) is None


@pytest.mark.parametrize(
    "text",
    [f"{BEGIN}\nx\n", f"x\n{END}\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"],
)
def test_broken_markers_are_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(CronError, match="markers are broken"):
        merge_block(text, block_of())
    with pytest.raises(CronError, match="markers are broken"):
        remove_block(text)


def test_cronlog_stamps_lines_and_rotates_a_full_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "scan.log"
    append(log, io.BytesIO(b"one\ntwo\n"), max_bytes=30, keep=2)
    assert [line.split(" ", 1)[1] for line in log.read_text().splitlines()] == ["one", "two"]
    append(log, io.BytesIO(b"three\n"), max_bytes=30, keep=2)  # 2 lines of 25 bytes: full
    assert log.read_text().endswith(" three\n")
    assert (tmp_path / "logs" / "scan.log.1").read_text().endswith(" two\n")
    for word in (b"four\n", b"five\n"):
        append(log, io.BytesIO(word * 2), max_bytes=30, keep=2)
    assert sorted(p.name for p in log.parent.iterdir()) == ["scan.log", "scan.log.1", "scan.log.2"]
    assert log.read_text().endswith(" five\n")


@pytest.mark.usefixtures("open_umask")
def test_cronlog_keeps_its_logs_private_through_rotation(tmp_path: Path) -> None:
    """A log may hold paths and error messages: 0700 folder, 0600 logs, rotated ones too."""
    logs = tmp_path / "logs"
    for word in (b"one\n", b"two\n", b"three\n"):
        append(logs / "scan.log", io.BytesIO(word * 2), max_bytes=30, keep=2)
    assert set(modes(logs)) == {".", "scan.log", "scan.log.1", "scan.log.2"}
    assert private(logs), modes(logs)


@pytest.mark.usefixtures("open_umask")
def test_cronlog_narrows_a_world_readable_log_of_an_older_labctl(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    (logs / "jobs.log").write_text("old line\n")
    (logs / "jobs.log").chmod(0o644)
    append(logs / "jobs.log", io.BytesIO(b"new line\n"), max_bytes=1000, keep=1)
    assert (logs / "jobs.log").read_text().startswith("old line\n")
    assert private(logs), modes(logs)


def test_cronlog_leaves_the_log_alone_when_a_run_prints_nothing(tmp_path: Path) -> None:
    log = tmp_path / "scan.log"
    append(log, io.BytesIO(b""), max_bytes=1, keep=1)
    assert not log.exists()
