"""What SLURM does behind labctl's back, on the real testbed: a finished job purged from
slurmctld before the run after a killed one adopts it (only the accounting remembers it), and a
running job requeued by `scontrol requeue`. The test at the end needs no testbed.

The first test changes the testbed's shared slurmctld: it sets `MinJobAge` to a few seconds until
the job is purged, and restores it in a `finally` (other tests read finished jobs from squeue).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.model.job import SchedulerStatus, TaskStatus
from labctl.model.states import JobState
from labctl.stages.tracking import requeues
from tests.test_watchdog_testbed import (  # noqa: F401 (fixtures: scratch, solo)
    INPUTS,
    kill_after_sbatch,
    on_testbed,
    scratch,
    solo,
    submit,
)
from tests.testbed import slurm_jobs_named, ssh, status_in, tick_until, write_config

LABCTL = str(Path(sys.executable).parent / "labctl")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MIN_JOB_AGE = re.compile(r"^MinJobAge=\d+$", re.MULTILINE)


def slurm_jobs_in_accounting(name: str) -> list[str]:
    """The ids of the cluster user's SLURM jobs named `name` in the last hour, as the
    accounting (slurmdbd) has them: one line per job, array tasks folded."""
    out = ssh(["sacct", "-X", "-P", "-n", "--starttime=now-3600", f"--name={name}", "-o", "JobID"])
    return sorted({line.split("_")[0] for line in out.split()})


def squeue_knows(slurm_id: str) -> bool:
    listed = ssh(["squeue", "-h", "-t", "all", "-j", slurm_id, "-o", "%i"], check=False)
    return slurm_id in listed.split()


@contextmanager
def min_job_age(seconds: int) -> Iterator[None]:
    """slurmctld keeps finished jobs only `seconds` (SLURM's default is 300, the testbed's 3600),
    restored afterwards."""
    original = SLURM_CONF.read_text()
    assert MIN_JOB_AGE.search(original), "no MinJobAge in the testbed's slurm.conf"
    try:
        SLURM_CONF.write_text(MIN_JOB_AGE.sub(f"MinJobAge={seconds}", original))
        subprocess.run(["scontrol", "reconfigure"], check=True, timeout=60)
        yield
    finally:
        SLURM_CONF.write_text(original)
        subprocess.run(["scontrol", "reconfigure"], check=True, timeout=60)


@on_testbed
def test_a_job_purged_after_a_run_killed_around_sbatch_is_adopted_from_accounting(
    solo: tuple[Database, Config],  # noqa: F811 (the fixture, imported)
    tmp_path: Path,
) -> None:
    db, hpc = solo
    config_file = write_config(hpc, tmp_path / "config.yaml")
    job_id = submit(db, hpc, "selftest", datafiles=["phase.h5"])
    name = f"labctl-{job_id}"
    proc = subprocess.Popen(
        [LABCTL, "--config", str(config_file), "watchdog", "tick", "--loop", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    kill_after_sbatch(proc, db)  # the job is marked submitting, its SLURM id not recorded
    [slurm_id] = {entry.job_id for entry in slurm_jobs_named([name])[name]}
    deadline = time.monotonic() + 120
    while "COMPLETED" not in ssh(["squeue", "-h", "-t", "all", "-j", slurm_id, "-o", "%T"]):
        assert time.monotonic() < deadline, f"SLURM job {slurm_id} did not complete"
        time.sleep(1)
    with min_job_age(2):  # slurmctld purges its old jobs once a minute
        while squeue_knows(slurm_id):
            assert time.monotonic() < deadline + 120, f"slurmctld still shows job {slurm_id}"
            time.sleep(2)

    tick_until(db, hpc, status_in(db, job_id, "completed", "failed"), timeout=120)

    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    assert job["scheduler"]["job_id"] == slurm_id
    assert slurm_jobs_in_accounting(name) == [slurm_id]  # submitted once
    [note] = [item["note"] for item in job["history"] if item["state"] == "submitted"]
    assert note.startswith(f"job {slurm_id} submitted on hpc (")


@on_testbed
def test_a_job_requeued_behind_labctls_back_is_in_its_history_and_completes(
    solo: tuple[Database, Config],  # noqa: F811 (the fixture, imported)
) -> None:
    db, hpc = solo
    job_id = submit(db, hpc, **INPUTS, job_options={"sleep_seconds": 15})
    tick_until(db, hpc, status_in(db, job_id, "running"), timeout=120)
    slurm_id = get_job(db, job_id)["scheduler"]["job_id"]
    ssh(["scontrol", "requeue", slurm_id])  # as the cluster user; it runs again in 2 minutes

    tick_until(db, hpc, status_in(db, job_id, "completed", "failed"), timeout=360, pause=2)

    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    notes = [item["note"] for item in job["history"]]
    assert [note for note in notes if "requeued by" in note] == ["requeued by SLURM (restart 1)"]
    at = notes.index("requeued by SLURM (restart 1)")
    assert notes[at - 1] == "SLURM RUNNING" and notes[at + 1] == "SLURM COMPLETED"
    assert job["scheduler"]["job_id"] == slurm_id and job["scheduler"]["restarts"] == {slurm_id: 1}
    assert slurm_jobs_in_accounting(f"labctl-{job_id}") == [slurm_id]  # the same job, run again


def test_requeues_notes_each_restart_once_for_the_job_or_its_task() -> None:
    running, pending = JobState.RUNNING, JobState.PENDING
    plain = [TaskStatus("138", pending, None, "PENDING", None, restarts=2)]
    assert requeues("SLURM", SchedulerStatus(job_id="138"), plain) == [
        "requeued by SLURM (restart 1)",
        "requeued by SLURM (restart 2)",
    ]
    assert requeues("SLURM", SchedulerStatus(job_id="138", restarts={"138": 2}), plain) == []
    array = [
        TaskStatus("139", running, None, "RUNNING", None, 0, restarts=1),
        TaskStatus("139", pending, None, "PENDING", None, 1, restarts=1),
    ]
    seen = SchedulerStatus(job_id="139", restarts={"139_0": 1})
    assert requeues("SLURM", seen, array) == ["task 1 requeued by SLURM (restart 1)"]
