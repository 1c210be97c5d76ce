"""Stopping a cancelled job acts only on what labctl started for it: never on a process that a
job document (which a member's watchdog writes) merely names. Real processes, both backends.

Beware: against labctl before this check, the forged id "1" sends TERM to process group -1 (every
process the account may signal); run these tests on older code only on a machine to throw away.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from labctl.access.cancel import cancel_and_stop
from labctl.compute.batch import JobLayout
from labctl.compute.cluster import ClusterPool
from labctl.compute.scheduler import NotOursError, ProcessScheduler
from labctl.compute.transport import LocalRunner
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.model.states import JobState
from labctl.stages import StageRun, stage_run
from labctl.stages.scan import launch
from labctl.stages.seam import LocalStore
from labctl.stages.tracking import stop_cancelled
from tests.jobfixtures import job_in_state, local_jobs


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    return local_jobs(config, db, tmp_path)


@pytest.fixture
def foreign() -> Iterator[subprocess.Popen[bytes]]:
    """A process group that is not labctl's (`setsid sleep 300`), ended after the test."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def gone(pid: int, timeout: float = 10) -> bool:
    """Whether process `pid` ends (or is only a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def forge(db: Database, cfg: Config, state: JobState = JobState.CANCELLED, **fields: Any) -> str:
    """One of `cfg.user`'s jobs in `state` (cancelled: still to stop), with `fields` written
    into its document as a member's watchdog could write them."""
    job_id = job_in_state(db, cfg, state, user=cfg.user)
    pending = {"cleanup_pending": True} if state is JobState.CANCELLED else {}
    db.queue.update({"job_id": job_id}, {"$set": {**pending, **fields}})
    return job_id


def stop_all(db: Database, cfg: Config) -> list[str]:
    """The jobs stage's stop of cancelled jobs, as it runs it; its notes."""
    with stage_run(LocalStore.of(db, cfg), cfg, "jobs") as run:
        stop_cancelled(run)
    return run.notes


def state_dir(db: Database, cfg: Config, job_id: str) -> Path:
    """The job's folder in the watchdog's state directory, as the scan stage makes it."""
    return StageRun(LocalStore.of(db, cfg), cfg, "scan", ClusterPool(cfg)).state_dir(job_id)


def transfer(pid: int, tmp_path: Path) -> dict[str, Any]:
    """A transfer on this host, as the scan stage records it in the job document."""
    log = str(tmp_path / "rsync.log")
    return {"host": socket.gethostname(), "argv": ["rsync"], "pid": pid, "log": log,
            "status_path": f"{log}.status"}  # fmt: skip


FORGED_IDS = ["{pid}", "1", "-1", "0", "12 34", "$(touch {marker})", "0{pid}", " {pid}"]


@pytest.mark.parametrize("forged", FORGED_IDS)
def test_a_forged_scheduler_id_kills_nothing(
    db: Database, cfg: Config, tmp_path: Path, foreign: subprocess.Popen[bytes], forged: str
) -> None:
    marker = tmp_path / "evaluated"
    job_id = forge(db, cfg, scheduler={"job_id": forged.format(pid=foreign.pid, marker=marker)})
    notes = stop_all(db, cfg)
    assert not gone(foreign.pid, timeout=0.5)
    assert not marker.exists()
    if forged in ("{pid}", "1"):  # a live process that is not this job's launcher
        assert f"cancel {job_id}: process {forged.format(pid=foreign.pid)} " in "\n".join(notes)
        assert get_job(db, job_id)["cleanup_pending"] is False  # nothing of ours to stop
    elif forged in ("-1", "12 34", "$(touch {marker})", " {pid}"):  # no scheduler's id at all
        assert f"job {job_id}: scheduler.job_id: String should match" in "\n".join(notes)


@pytest.mark.parametrize("forged", FORGED_IDS)
def test_the_host_checks_a_process_job_id_before_the_kill(
    tmp_path: Path, foreign: subprocess.Popen[bytes], forged: str
) -> None:
    """What the model refuses to store is refused on the host too, quoted, never evaluated."""
    marker = tmp_path / "evaluated"
    job_id = forged.format(pid=foreign.pid, marker=marker)
    scheduler = ProcessScheduler(LocalRunner())
    with pytest.raises(NotOursError, match="left alone"):
        scheduler.cancel(job_id, JobLayout(PurePosixPath(tmp_path)), "labctl-j1")
    assert not gone(foreign.pid, timeout=0.5)
    assert not marker.exists()


def _launcher(cfg: Config, job_id: str) -> tuple[JobLayout, str]:
    """A real process job of labctl's, `job_id`'s, on the local cluster, running for minutes."""
    layout = JobLayout.of(cfg.clusters["local"], job_id)
    (Path(layout.root) / "logs").mkdir(parents=True)
    (Path(layout.root) / "job.sh").write_text("sleep 300\n")
    return layout, ProcessScheduler(LocalRunner()).submit(layout, 1)


@pytest.mark.parametrize("claims_its_folder", [False, True])
def test_another_job_s_launcher_is_left_alone(
    db: Database, cfg: Config, claims_its_folder: bool
) -> None:
    """A member names another job's process as their job's, even with that job's folder: the
    folder checked is where labctl puts their own job, so the other job runs on."""
    other, pid = _launcher(cfg, "jothers")
    try:
        folder = {"remote_dir": str(other.root)} if claims_its_folder else {}
        job_id = forge(db, cfg, scheduler={"job_id": pid}, **folder)
        notes = "\n".join(stop_all(db, cfg))
        assert not gone(int(pid), timeout=0.5)
        if claims_its_folder:
            assert f"cancel {job_id}: its folder {other.root} is not " in notes
        else:
            assert f"process {pid} is not labctl's job in " in notes
    finally:
        ProcessScheduler(LocalRunner()).cancel(pid, other, "labctl-jothers")  # its own: stops
    assert gone(int(pid))


def test_cancel_and_stop_leaves_a_named_process_alone(
    db: Database, cfg: Config, tmp_path: Path, foreign: subprocess.Popen[bytes]
) -> None:
    """The path of `labctl cancel`, the dashboard, the REST API and the service."""
    job_id = forge(
        db,
        cfg,
        JobState.TRANSFERRING,
        scheduler={"job_id": str(foreign.pid)},
        transfer=transfer(foreign.pid, tmp_path),
    )
    done = cancel_and_stop(db, cfg, job_id, cfg.user)
    assert not gone(foreign.pid, timeout=0.5)
    assert done.stopped and done.job["cleanup_pending"] is False
    assert done.message.startswith(f"cancelled {job_id}; process {foreign.pid} ")
    assert "left alone; this account started no transfer for it here" in done.message


def test_a_forged_transfer_pid_kills_nothing(
    db: Database, cfg: Config, tmp_path: Path, foreign: subprocess.Popen[bytes]
) -> None:
    job_id = forge(db, cfg, transfer=transfer(foreign.pid, tmp_path))
    notes = stop_all(db, cfg)
    assert not gone(foreign.pid, timeout=0.5)
    assert notes == [f"cancel {job_id}: this account started no transfer for it here"]
    assert get_job(db, job_id)["cleanup_pending"] is False


def test_a_transfer_is_stopped_only_as_recorded(
    db: Database, cfg: Config, tmp_path: Path, foreign: subprocess.Popen[bytes]
) -> None:
    """The record the scan stage keeps (state_dir/JOB/transfer.json) decides: a document naming
    another pid stops nothing, while ours runs on it stays to stop; naming ours stops it."""
    job_id = forge(db, cfg, transfer=transfer(foreign.pid, tmp_path))
    ours = launch(state_dir(db, cfg, job_id), ["sleep", "300"])  # a real transfer of this job
    assert ours is not None and ours.started is not None
    try:
        notes = stop_all(db, cfg)
        assert notes == [
            f"cancel {job_id}: its transfer pid {foreign.pid} is not the recorded {ours.pid}: "
            "nothing stopped"
        ]
        assert not gone(foreign.pid, timeout=0.5) and not gone(ours.pid, timeout=0.1)
        assert get_job(db, job_id)["cleanup_pending"] is True  # ours still runs
        db.queue.update({"job_id": job_id}, {"$set": {"transfer.pid": ours.pid}})
        assert stop_all(db, cfg) == []
        assert gone(ours.pid)
        assert get_job(db, job_id)["cleanup_pending"] is False
    finally:
        subprocess.run(["kill", "-s", "KILL", "--", f"-{ours.pid}"], check=False)
        os.waitpid(ours.pid, 0)  # our child: reaped
    assert not gone(foreign.pid, timeout=0.1)


@pytest.mark.parametrize("started", ["another", "none"])
def test_a_recorded_pid_taken_by_another_process_is_not_killed(
    db: Database, cfg: Config, tmp_path: Path, foreign: subprocess.Popen[bytes], started: str
) -> None:
    """The recorded pid now belongs to another process (ours ended; the pid was reused), or the
    record is an old one without a start time: nothing is killed, nothing is left to stop."""
    job_id = forge(db, cfg, transfer=transfer(foreign.pid, tmp_path))
    folder = state_dir(db, cfg, job_id)
    own_start = int(Path(f"/proc/{foreign.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    record = {"pid": foreign.pid, "log_path": "x", "status_path": "x"}
    if started == "another":
        record["started"] = own_start - 1
    (folder / "transfer.json").write_text(json.dumps(record))
    assert stop_all(db, cfg) == []
    assert not gone(foreign.pid, timeout=0.5)
    assert get_job(db, job_id)["cleanup_pending"] is False
