"""A job queued for a member whose watchdog does not run says so, and how to start it: in
`labctl queue`, `labctl status` and the tick of another member's watchdog (both backends)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml
from click.testing import CliRunner, Result

from labctl import dbqueue_job
from labctl.api import close_connections
from labctl.cli import cli
from labctl.config import Config
from labctl.db import Database
from labctl.install.waiting import watchdog_note
from labctl.stages.heartbeat import beat
from tests.jobfixtures import DATASET, local_jobs

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
HOW = "charlie runs 'labctl watchdog tick', or installs its cron with install.py"


def test_the_note_says_whose_watchdog_and_how_long_ago() -> None:
    five = dt.timedelta(minutes=5)
    assert watchdog_note("charlie", [], NOW, five) == (
        f"waits for charlie's watchdog, which has never run: {HOW}"
    )
    beats = [{"user": "charlie", "at": NOW - dt.timedelta(hours=3)}, {"user": "root", "at": NOW}]
    assert watchdog_note("charlie", beats, NOW, five) == (
        f"waits for charlie's watchdog, last run 3h ago: {HOW}"
    )
    assert watchdog_note("root", beats, NOW, five) is None


def test_a_job_for_another_members_watchdog_says_whose(
    config: Config, db: Database, tmp_path: Path
) -> None:
    cfg = local_jobs(config.model_copy(update={"user": "root"}), db, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))

    def labctl(*args: str) -> Result:
        result = CliRunner().invoke(cli, ["--config", str(path), *args])
        assert result.exit_code == 0, result.output
        return result

    try:
        job_id = dbqueue_job(
            DATASET, "local", "file_stats", user="charlie", datarawfiles=["fl_a.roli"], config=cfg
        )
    finally:
        close_connections()
    note = f"waits for charlie's watchdog, which has never run: {HOW}"

    tick = labctl("watchdog", "tick").output  # root's watchdog: charlie's job is not root's
    assert f"skipped charlie's job(s) {job_id}: {note}" in tick.splitlines()
    assert labctl("status", job_id).output.splitlines()[-1] == f"note: this job {note}"
    queue = labctl("queue").output
    assert "waits for charlie's watchdog" in queue and "labctl watchdog tick" in queue

    for stage in ("scan", "transfers", "jobs"):
        beat(db, stage, {}, "charlie", "h1")  # charlie's watchdog runs now
    assert "skipped" not in labctl("watchdog", "tick").output
    assert "note:" not in labctl("status", job_id).output
    assert "waits for charlie" not in labctl("queue").output
