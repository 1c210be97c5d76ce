"""`max_submitted`: the watchdog never has more jobs (array tasks counted) at a cluster's
scheduler than the setting allows; the rest wait, unfailed (the `local` cluster, real processes)."""

from __future__ import annotations

import time
from pathlib import Path

from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.states import TERMINAL
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, local_jobs

ALL = ["scan", "transfers", "jobs"]


def capped(config: Config, db: Database, tmp_path: Path, limit: int) -> Config:
    cfg = local_jobs(config, db, tmp_path)
    local = cfg.clusters["local"].model_copy(update={"max_submitted": limit})
    return cfg.model_copy(update={"clusters": {**cfg.clusters, "local": local}})


def submit(db: Database, cfg: Config, job_type: str, **options: object) -> str:
    request = JobRequest(
        dataset=DATASET,
        compute_cluster="local",
        job_type=job_type,
        datafiles=["phase.h5"],
        job_options=options,
    )
    return str(submit_job(db, cfg, request, force=True)["job_id"])


def test_jobs_past_max_submitted_wait_for_room(
    config: Config, db: Database, tmp_path: Path
) -> None:
    """max_submitted 2, one job running: a 2-task array counts as two and waits."""
    cfg = capped(config, db, tmp_path, 2)
    single = submit(db, cfg, "selftest", sleep_seconds=10)  # long past the array's transfer
    deadline = time.monotonic() + 60
    while get_job(db, single)["status"] not in ("submitted", "running"):
        assert time.monotonic() < deadline, get_job(db, single)
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
    array = submit(db, cfg, "file_stats_split", num_splits=2)
    while get_job(db, array)["waiting"] is None:
        assert time.monotonic() < deadline, get_job(db, array)
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
    job = get_job(db, array)
    assert job["status"] == "transferring" and job["failure"] is None and job["retries"] == 0
    assert job["waiting"] == "1 of max_submitted 2 jobs are submitted on local; waiting for room"
    assert get_job(db, single)["status"] in ("submitted", "running")
    while get_job(db, array)["status"] not in TERMINAL:
        assert time.monotonic() < deadline, get_job(db, array)
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
        time.sleep(0.2)
    job = get_job(db, array)
    assert job["status"] == "completed" and job["waiting"] is None
    submitted = [h["at"] for h in job["history"] if " submitted on local " in h["note"]]
    first = get_job(db, single)["history"]
    single_done = [h["at"] for h in first if h["state"] == "retrieving"]
    assert submitted[0] >= single_done[0]  # not before the running job left room
    waits = [h for h in job["history"] if "waiting for room" in h["note"]]
    assert len(waits) == 1  # noted once, however many runs it waited


def test_a_job_larger_than_max_submitted_fails_saying_why(
    config: Config, db: Database, tmp_path: Path
) -> None:
    cfg = capped(config, db, tmp_path, 3)
    job_id = submit(db, cfg, "file_stats_split", num_splits=4)
    deadline = time.monotonic() + 30
    while get_job(db, job_id)["status"] not in TERMINAL:
        assert time.monotonic() < deadline, get_job(db, job_id)
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
    job = get_job(db, job_id)
    assert job["failure"] == {
        "reason": "config",
        "message": "the job has 4 tasks but max_submitted on local is 3",
    }
