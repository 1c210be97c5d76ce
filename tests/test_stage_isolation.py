"""Each stage handles its jobs one by one: one job that cannot be handled fails alone and the
others proceed; a job keeps the folder it was given; a long pull keeps its lease. On the `local`
cluster (plain processes, real rsync), both backends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.config import ClusterConfig, Config
from labctl.config.jobtypes import JobTypeConfig
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, embedded_jobs, local_jobs
from tests.testbed import pulls, write_config

ALL = ["scan", "transfers", "jobs"]
LABCTL = str(Path(sys.executable).parent / "labctl")


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    return local_jobs(config, db, tmp_path)


def submit(db: Database, cfg: Config, **fields: Any) -> str:
    request = {"dataset": DATASET, "compute_cluster": "local", "job_type": "file_stats", **fields}
    return str(submit_job(db, cfg, JobRequest(**request), force=True)["job_id"])


def until(db: Database, cfg: Config, done: Any, timeout: float = 60, **kw: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, [
            (j["job_id"], j["status"], (j.get("failure") or {}).get("message"))
            for j in db.queue.find({})
        ]
        run_stages(LocalStore.of(db, cfg), cfg, kw.get("stages", ALL))
        time.sleep(0.1)


def without(cfg: Config, *, cluster: str | None = None, job_type: str | None = None) -> Config:
    clusters = {k: v for k, v in cfg.clusters.items() if k != cluster}
    types = {k: v for k, v in cfg.job_types.items() if k != job_type}
    return cfg.model_copy(update={"clusters": clusters, "job_types": types})


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[tuple[Database, Config]]:
    """The embedded store only, for the test that runs twenty jobs."""
    with embedded_jobs(tmp_path) as found:
        yield found


@pytest.mark.parametrize("poison", ["cluster gone while queued", "job type gone while running"])
def test_a_poisoned_job_first_does_not_stop_the_ten_behind_it(
    solo: tuple[Database, Config], poison: str
) -> None:
    db, cfg = solo
    if poison.startswith("cluster"):
        viper = ClusterConfig(type="local", scratch=cfg.clusters["local"].scratch + "-viper",
                              scheduler="process")  # fmt: skip
        at_submit = cfg.model_copy(update={"clusters": {**cfg.clusters, "viper": viper}})
        bad = submit(db, at_submit, compute_cluster="viper")
        later, why = without(at_submit, cluster="viper"), "cluster 'viper' is no longer configured"
    else:
        old = JobTypeConfig(entry="selftest", outputs=["selftest.json"])
        at_submit = cfg.model_copy(update={"job_types": {**cfg.job_types, "old": old}})
        bad = submit(db, at_submit, job_type="old")
        until(db, at_submit, lambda: get_job(db, bad)["status"] in ("submitted", "running"))
        later, why = without(at_submit, job_type="old"), "job type 'old' is no longer configured"
    good = [submit(db, later, datarawfiles=["fl_a.roli"]) for _ in range(10)]
    until(db, later, lambda: all(get_job(db, j)["status"] == "completed" for j in good), 120)
    failed = get_job(db, bad)
    assert failed["status"] == "failed"
    assert failed["failure"] == {"reason": "config", "message": why}


def test_a_malformed_environment_report_fails_its_job_and_records_nothing(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job_id = submit(db, cfg, datarawfiles=["fl_a.roli"])
    until(db, cfg, lambda: get_job(db, job_id)["status"] == "submitted", stages=ALL[:2])
    folder = Path(cfg.clusters["local"].scratch) / job_id
    deadline = time.monotonic() + 30
    while not (folder / "logs" / "task-0.exit").exists():  # the job ran to its end
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (folder / "outputs" / "environment.json").write_text("{not json")
    other = submit(db, cfg, datarawfiles=["fl_a.roli"])
    until(db, cfg, lambda: get_job(db, other)["status"] == "completed")
    job = get_job(db, job_id)
    assert job["status"] == "failed" and job["failure"]["reason"] == "retrieve"
    assert job["failure"]["message"].startswith("an environment report brought home is not valid")
    entry = db.data.find_one({"dataset": DATASET})
    assert entry is not None and job_id not in entry["results"]
    assert other in entry["results"]


def test_a_job_keeps_its_folder_when_the_scratch_setting_changes(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job_id = submit(db, cfg, job_options={"sleep_seconds": 1})
    until(db, cfg, lambda: get_job(db, job_id)["status"] in ("submitted", "running"))
    made = Path(get_job(db, job_id)["remote_dir"])
    assert made == Path(cfg.clusters["local"].scratch) / job_id and made.is_dir()
    moved = cfg.clusters["local"].model_copy(update={"scratch": str(tmp_path / "new-scratch")})
    later = cfg.model_copy(update={"clusters": {**cfg.clusters, "local": moved}})
    until(db, later, lambda: get_job(db, job_id).get("scratch_cleaned") is True)
    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    assert not made.exists()  # the folder it was made in, cleaned
    assert not (tmp_path / "new-scratch" / job_id).exists()


def test_a_long_pull_keeps_its_lease(db: Database, cfg: Config, tmp_path: Path) -> None:
    """lease_seconds=2 and a pull of 120 MB capped at 20 MB/s (6 s): no other run takes over."""
    big = JobTypeConfig(entry="file_stats", outputs=["file_stats.json", "big.bin"])
    lease = cfg.watchdog.model_copy(update={"lease_seconds": 2, "bwlimit_kib": 20_000})
    slow = cfg.model_copy(update={"watchdog": lease, "job_types": {**cfg.job_types, "big": big}})
    path = write_config(slow, tmp_path / "slow.yaml")
    job_id = submit(db, slow, job_type="big")
    until(db, slow, lambda: get_job(db, job_id)["status"] == "submitted", stages=ALL[:2])
    folder = Path(slow.clusters["local"].scratch) / job_id
    while not (folder / "logs" / "task-0.exit").exists():
        time.sleep(0.1)
    (folder / "outputs" / "big.bin").write_bytes(os.urandom(120 * 2**20))  # what the job made
    first = subprocess.Popen([LABCTL, "--config", str(path), "watchdog", "jobs"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while not (started := pulls(slow.clusters["local"].scratch)):
        assert time.monotonic() < deadline and first.poll() is None, "no pull started"
        time.sleep(0.05)
    time.sleep(3)  # past the 2 s lease
    assert get_job(db, job_id)["owner"].split(":")[1] == str(first.pid)  # host:pid:token
    assert run_stages(LocalStore.of(db, slow), slow, ["jobs"]) == ["jobs: nothing to do"]
    assert pulls(slow.clusters["local"].scratch) == started  # the one pull, never a second
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and "completed 1" in out, out
    job = get_job(db, job_id)
    assert job["status"] == "completed"
    assert [h["state"] for h in job["history"]].count("completed") == 1
    assert Path(job["result_dir"], "big.bin").stat().st_size == 120 * 2**20
