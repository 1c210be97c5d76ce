"""Resubmission and submit limits on the real testbed (scripts/testbed.sh with slurmdbd).

A job that hits its time limit runs again with twice the time and completes; one that holds
more than its --mem is killed by jobacct_gather (OverMemoryKill: the testbed has no cgroups) and
runs again with twice the memory; a job refused by a QOS submit limit waits, unfailed, and is
submitted once a slot frees. SLURM's `--time` has minute granularity and a TIMEOUT shows 60-90 s
after the start, so only one test waits for one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from labctl.config import Config
from labctl.config.jobtypes import JobTypeConfig, Resources
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages import stage_run
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from labctl.stages.tracking import run_jobs
from tests.jobfixtures import DATASET, dataset_with_files
from tests.testbed import (
    HOST,
    hpc_config,
    remote_scratch,
    slurm_jobs_named,
    ssh,
    status_in,
    tick_until,
)

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.skipif(
        HOST is None or os.environ.get("HPC_WITH_DBD") != "1",
        reason="needs scripts/testbed.sh with slurmdbd (WITH_DBD=1), and its env.sh sourced",
    ),
]


@pytest.fixture
def hpc(config: Config, db: Database, tmp_path: Path) -> Any:
    """The testbed cluster with a `selftest` variant asking for little time and memory."""
    with remote_scratch() as scratch:
        cfg = hpc_config(config, scratch, tmp_path)
        small = JobTypeConfig(
            entry="selftest",
            outputs=["selftest.json"],
            resources=Resources(time="00:01:00", mem="100M"),
            max_resources=Resources(time="00:04:00", mem="400M"),
        )
        cfg = cfg.model_copy(update={"job_types": {**cfg.job_types, "small": small}})
        dataset_with_files(db, cfg, tmp_path / "data")
        yield cfg


def submit(db: Database, config: Config, cluster: str = "hpc", **options: Any) -> str:
    request = JobRequest(
        dataset=DATASET, compute_cluster=cluster, job_type="small", job_options=options
    )
    return str(submit_job(db, config, request, force=True)["job_id"])


def notes(job: dict[str, Any]) -> list[str]:
    return [item["note"] for item in job["history"]]


@pytest.mark.parametrize("db_config", ["embedded"], indirect=True)  # one slow test: one backend
def test_a_timed_out_job_runs_again_with_twice_the_time(db: Database, hpc: Config) -> None:
    job_id = submit(db, hpc, sleep_seconds=100)  # a 1-minute limit ends it at 60-90 s
    tick_until(db, hpc, status_in(db, job_id, "completed", "failed"), timeout=330, pause=2)

    job = get_job(db, job_id)
    assert job["status"] == "completed", notes(job)
    assert job["resubmission"]["count"] == 1
    assert job["resubmission"]["resources"]["time"] == "00:02:00"
    assert "#SBATCH --time=00:02:00" in job["batch_script"]
    assert "#SBATCH --job-name=labctl-" + job_id + "-r1" in job["batch_script"]
    said = notes(job)
    first = next(n for n in said if "TIMEOUT" in n)
    assert "; resubmitting with time 00:02:00, mem 100M, cpus 1 (resubmission 1 of 2)" in first
    submitted = [n for n in said if " submitted on hpc " in n]
    assert len(submitted) == 2 and "(time 00:01:00, mem 100M" in submitted[0]
    assert "(time 00:02:00, mem 100M" in submitted[1]
    # both runs are accounted for: the one that timed out and the one that completed
    usage = {u["state"]: u for u in job["usage"]}
    assert set(usage) == {"TIMEOUT", "COMPLETED"}, job["usage"]
    assert 55 <= usage["TIMEOUT"]["elapsed_s"] <= 100
    assert usage["COMPLETED"]["elapsed_s"] >= 100
    assert usage["COMPLETED"]["req_mem_bytes"] == 100 << 20
    assert usage["COMPLETED"]["submit"] <= usage["COMPLETED"]["start"] <= usage["COMPLETED"]["end"]
    assert usage["COMPLETED"]["nodes"] == "localhost"


def test_a_job_over_its_memory_runs_again_with_twice_the_memory(db: Database, hpc: Config) -> None:
    """jobacct_gather samples every 2 s and kills a step above its --mem (FAILED by signal 9,
    MaxRSS above ReqMem: labctl reads that as out of memory); 150 MB fits in 200M."""
    job_id = submit(db, hpc, hold_mb=150, sleep_seconds=6)
    tick_until(db, hpc, status_in(db, job_id, "completed", "failed"), timeout=120, pause=1)

    job = get_job(db, job_id)
    assert job["status"] == "completed", notes(job)
    assert job["resubmission"]["resources"]["mem"] == "200M"
    assert job["resubmission"]["ends"] == ["out_of_memory"]
    killed = [u for u in job["usage"] if u["state"] == "FAILED"]
    assert len(killed) == 1 and killed[0]["exit_code"] == 128 + 9
    assert killed[0]["max_rss_bytes"] > killed[0]["req_mem_bytes"] == 100 << 20
    done = [u for u in job["usage"] if u["state"] == "COMPLETED"]
    assert done and 150 << 20 < done[0]["max_rss_bytes"] < 200 << 20


def test_a_job_that_stays_over_its_memory_gives_up_saying_so(db: Database, hpc: Config) -> None:
    job_id = submit(db, hpc, hold_mb=500, sleep_seconds=6)  # over the 400M max_resources cap
    tick_until(db, hpc, status_in(db, job_id, "completed", "failed"), timeout=180, pause=1)

    job = get_job(db, job_id)
    assert job["status"] == "failed"
    assert job["failure"]["reason"] == "out_of_memory"
    assert job["failure"]["message"].endswith(
        ": ran out of memory 3 times, last with mem 400M; resubmit_limit is 2"
    ), job["failure"]
    assert [u["req_mem_bytes"] >> 20 for u in job["usage"]] == [100, 200, 400]


def test_a_qos_submit_limit_leaves_the_job_waiting_until_a_slot_frees(
    db: Database, hpc: Config
) -> None:
    """Account `capped` has QOS `capped`: 2 submitted jobs per user. Two jobs of the testbed
    user's own fill it; labctl's job waits, unfailed, then goes once they end."""
    capped = hpc.clusters["hpc"].model_copy(update={"account": "capped"})
    cfg = hpc.model_copy(update={"clusters": {**hpc.clusters, "capped": capped}})
    blockers = [
        ssh(
            ["sbatch", "--parsable", "--account=capped", "--output=/dev/null", "--wrap=sleep 8"]
        ).strip()
        for _ in range(2)
    ]
    job_id = submit(db, cfg, "capped")
    tick_until(db, cfg, lambda: get_job(db, job_id)["waiting"] is not None, timeout=60)

    job = get_job(db, job_id)
    assert job["status"] == "transferring" and job["failure"] is None and job["retries"] == 0
    assert job["waiting"] == (
        "the cluster's submit limit is reached (QOSMaxSubmitJobPerUserLimit); trying again later"
    )
    assert slurm_jobs_named([f"labctl-{job_id}"])[f"labctl-{job_id}"] == []
    deadline = time.monotonic() + 60
    while ssh(["squeue", "-h", "-j", ",".join(blockers), "-o", "%i"]).strip():
        assert time.monotonic() < deadline, "the blocking jobs never ended"
        time.sleep(1)
    cfg = cfg.model_copy(
        update={"watchdog": cfg.watchdog.model_copy(update={"backoff_seconds": 0})}
    )
    tick_until(db, cfg, status_in(db, job_id, "completed", "failed"), timeout=90, pause=1)
    job = get_job(db, job_id)
    assert job["status"] == "completed" and job["waiting"] is None
    waits = [n for n in notes(job) if "submit limit" in n]
    assert len(waits) == 1  # noted once, however many runs it waited


def test_a_jobs_run_asks_squeue_once_and_sacct_at_most_once(db: Database, hpc: Config) -> None:
    """Five jobs followed to the end: every jobs-stage run makes one squeue and at most one
    sacct call, and each finished job has its usage."""
    job_ids = [submit(db, hpc, sleep_seconds=2) for _ in range(5)]
    calls: list[int] = []
    deadline = time.monotonic() + 90
    while not all(get_job(db, j)["status"] in ("completed", "failed") for j in job_ids):
        assert time.monotonic() < deadline, [get_job(db, j)["status"] for j in job_ids]
        run_stages(LocalStore.of(db, hpc), hpc, ["scan", "transfers"])
        with stage_run(LocalStore.of(db, hpc), hpc, "jobs") as run:
            run_jobs(run)
            if "hpc" in run.pool.opened:
                calls.append(run.pool.get("hpc").scheduler.calls)
        time.sleep(0.5)
    assert all(get_job(db, j)["status"] == "completed" for j in job_ids)
    assert all(len(get_job(db, j)["usage"]) == 1 for j in job_ids)
    assert calls and max(calls) <= 2, calls


def test_a_run_killed_around_a_resubmission_sbatch_is_adopted_not_repeated(
    db: Database, hpc: Config
) -> None:
    """The state a run SIGKILLed right after a resubmission's sbatch leaves: the job marked
    submitting, its SLURM job (`labctl-ID-r1`) already there. The next run adopts that job."""
    job_id = submit(db, hpc, sleep_seconds=1)
    tick_until(db, hpc, status_in(db, job_id, "completed", "failed"), timeout=60)
    first = get_job(db, job_id)
    assert first["status"] == "completed"
    folder = first["remote_dir"]
    name = f"labctl-{job_id}-r1"
    again = {"count": 1, "resources": {"time": "00:02:00", "mem": "100M"}, "ends": ["timeout"]}
    archived = db.archive.find_one({"_id": job_id})  # completed and settled: moved at once
    if archived is not None:  # back into the queue, where a job in flight is
        db.queue.insert({k: v for k, v in archived.items() if k != "_id"})
        db.archive.delete({"_id": job_id})
    db.queue.update(
        {"job_id": job_id},
        {
            "$set": {
                "status": "submitted",
                "scheduler": {"submitting": True},
                "resubmission": again,
                "next_try_at": first["updated_at"],
            }
        },
    )
    ssh(["mkdir", "-p", folder])  # the completed job's folder was cleaned away
    slurm_id = ssh(
        ["sbatch", "--parsable", f"--job-name={name}", "--output=/dev/null", "--wrap=true"]
    ).strip()
    run_stages(LocalStore.of(db, hpc), hpc, ["jobs"])
    job = get_job(db, job_id)
    assert job["scheduler"]["job_id"] == slurm_id
    assert [e.job_id for e in slurm_jobs_named([name])[name]] == [slurm_id]  # submitted once
    assert f"job {slurm_id} submitted on hpc (time 00:02:00, mem 100M" in job["history"][-1]["note"]
