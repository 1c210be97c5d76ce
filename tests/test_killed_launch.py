"""A watchdog run SIGKILLed between launching a `local` process job and recording its pid: the
next runs adopt that launch, the job runs once, and its folder goes only after its launcher
ended. Both backends.

The child process is this file run as a script (`python -m tests.test_killed_launch CONFIG`): it
runs the scan stage on a store that SIGKILLs it when the stage records the job submitted, that
is, right after the launch.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import pytest

from labctl.config import Config
from labctl.db import Database, connect
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.states import TERMINAL, JobState
from labctl.stages.loop import run_stages
from labctl.stages.ops import Move
from labctl.stages.seam import LocalStore, Op
from tests.jobfixtures import DATASET, local_jobs

R = TypeVar("R")
ALL = ["scan", "transfers", "jobs"]


class DiesAfterLaunch:
    """The member's store, for a run that is SIGKILLed as it records a job submitted."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    @property
    def member(self) -> str:
        return self.store.member

    def prepare(self) -> None:
        self.store.prepare()

    def run(self, op: Op[R]) -> R:
        if isinstance(op, Move) and op.to is JobState.SUBMITTED:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.store.run(op)


def _scan_killed_after_launch(config_json: str) -> None:
    config = Config.model_validate_json(config_json)
    with connect(config.database) as db:
        run_stages(DiesAfterLaunch(LocalStore.of(db, config)), config, ["scan"])


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    """Local jobs whose every task run appends a line to `runs`; a lease a killed run holds
    for a second only."""
    base = local_jobs(config, db, tmp_path)
    count = f"echo ran >> {shlex.quote(str(tmp_path / 'runs'))}"
    local = base.clusters["local"].model_copy(update={"setup": [count]})
    watchdog = base.watchdog.model_copy(update={"lease_seconds": 1})
    return base.model_copy(update={"clusters": {"local": local}, "watchdog": watchdog})


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def launchers(folder: Path) -> list[int]:
    """The live processes launching the job in `folder` (`sh -c ... labctl-job FOLDER TASKS`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if argv[3:5] == [b"labctl-job", bytes(folder)] and alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def job(db: Database, job_id: str) -> dict[str, Any]:
    return get_job(db, job_id)


@pytest.mark.parametrize("ended", [False, True], ids=["running", "ended"])
def test_a_run_killed_between_launch_and_pid_record_runs_the_job_once(
    db: Database, cfg: Config, tmp_path: Path, ended: bool
) -> None:
    """Killed right after the launch: the next runs adopt it, while it still runs or once it
    ended; it ran once, completes, and its folder is removed only after its launcher ended."""
    request = JobRequest(
        dataset=DATASET,
        compute_cluster="local",
        job_type="selftest",
        datarawfiles=["fl_a.roli"],
        job_options={"sleep_seconds": 2},
    )
    job_id = str(submit_job(db, cfg, request)["job_id"])
    deadline = time.monotonic() + 30
    while not (job(db, job_id).get("transfer") or {}).get("done"):
        assert time.monotonic() < deadline, job(db, job_id)["history"]
        run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers"])
        time.sleep(0.1)
    child = subprocess.run(
        [sys.executable, "-m", "tests.test_killed_launch", cfg.model_dump_json()],
        cwd=Path(__file__).parent.parent,  # the repository: `tests` is importable there
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    killed = job(db, job_id)
    assert killed["status"] == "transferring" and killed["scheduler"]["submitting"] is True
    folder = Path(cfg.clusters["local"].scratch) / job_id
    [launcher] = launchers(folder)
    if ended:
        deadline = time.monotonic() + 30
        while alive(launcher):
            assert time.monotonic() < deadline, "the launch did not end"
            time.sleep(0.1)
    time.sleep(cfg.watchdog.lease_seconds)  # the killed run's lease runs out
    deadline = time.monotonic() + 60
    while not ((done := job(db, job_id))["status"] in TERMINAL and done["scratch_cleaned"]):
        assert time.monotonic() < deadline, done["history"]
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
        assert folder.exists() or not alive(launcher), "its folder was removed under it"
        time.sleep(0.2)
    assert done["status"] == "completed", done["history"]
    assert (tmp_path / "runs").read_text() == "ran\n"  # its one task ran once
    assert done["scheduler"]["job_id"] == str(launcher)
    assert f"job {launcher} submitted on local" in " ".join(h["note"] for h in done["history"])


if __name__ == "__main__":
    _scan_killed_after_launch(sys.argv[1])
