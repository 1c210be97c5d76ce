"""The results of a batch come home in one checksum command, one rsync and one cleanup per
cluster; each job is verified alone, a bad one fails or retries alone, and kill -9 anywhere
leaves every job recoverable. On the `local` cluster (plain processes, real rsync), the embedded
store."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from labctl.catalog.experiments import log_entries
from labctl.compute.cluster import Cluster, ClusterPool
from labctl.compute.scheduler import ProcessScheduler
from labctl.compute.transport import LocalRunner, Result
from labctl.config import Config
from labctl.config.jobtypes import JobTypeConfig
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages import StageRun
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from labctl.stages.tracking import run_jobs
from tests.jobfixtures import DATASET, dataset_with_files, embedded_jobs
from tests.testbed import pulls, write_config

LABCTL = str(Path(sys.executable).parent / "labctl")


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[tuple[Database, Config]]:
    with embedded_jobs(tmp_path) as found:
        yield found


def with_types(cfg: Config, **types: JobTypeConfig) -> Config:
    return cfg.model_copy(update={"job_types": {**cfg.job_types, **types}})


def submit(db: Database, cfg: Config, **fields: Any) -> str:
    request = {"dataset": DATASET, "compute_cluster": "local", "job_type": "file_stats",
               "datafiles": ["phase.h5"], "datarawfiles": ["fl_a.roli"], **fields}  # fmt: skip
    return str(submit_job(db, cfg, JobRequest(**request), force=True)["job_id"])


def ran(db: Database, cfg: Config, ids: Sequence[str]) -> None:
    """Take the jobs through scan and transfers until each is submitted and has ended."""
    deadline = time.monotonic() + 60
    while not all(get_job(db, job_id)["status"] == "submitted" for job_id in ids):
        assert time.monotonic() < deadline, [get_job(db, j)["history"][-1] for j in ids]
        run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers"])
        time.sleep(0.1)
    for job_id in ids:
        while not (folder(cfg, job_id) / "logs" / "task-0.exit").exists():
            assert time.monotonic() < deadline, f"{job_id} did not end"
            time.sleep(0.1)


def folder(cfg: Config, job_id: str) -> Path:
    return Path(cfg.clusters["local"].scratch) / job_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Counting(LocalRunner):
    """This machine's runner, counting the cluster's commands; `after_sums` runs once the
    checksums are taken (to change a file on the cluster before the pull)."""

    def __init__(self, after_sums: Callable[[], object] = lambda: None) -> None:
        self.commands: list[list[str]] = []
        self.after_sums = after_sums

    def run(self, argv: Sequence[str], **kwargs: Any) -> Result:
        self.commands.append(list(argv))
        done = super().run(argv, **kwargs)
        if "sha256sum" in (argv[2] if len(argv) > 2 else ""):
            self.after_sums()
        return done


def jobs_run(db: Database, cfg: Config, runner: Counting) -> StageRun:
    """One run of the jobs stage whose `local` cluster runs its commands through `runner`."""
    cluster = Cluster("local", cfg.clusters["local"], runner, ProcessScheduler(runner), None)
    run = StageRun(LocalStore.of(db, cfg), cfg, "jobs", ClusterPool(cfg, opened={"local": cluster}))
    run_jobs(run)
    return run


def test_a_batch_comes_home_in_one_checksum_command_one_rsync_and_one_cleanup(
    solo: tuple[Database, Config],
) -> None:
    db, cfg = solo
    ids = [submit(db, cfg) for _ in range(4)]
    ran(db, cfg, ids)
    runner = Counting()
    run = jobs_run(db, cfg, runner)
    assert run.did["completed"] == 4 and run.did["cleaned"] == 4, (run.did, run.notes)
    _, sums, cleanup = runner.commands  # the scheduler's poll, then one command each
    assert "sha256sum" in sums[2]
    assert cleanup[:3] == ["rm", "-rf", "--"]
    assert sorted(cleanup[3:-1]) == sorted(str(folder(cfg, job_id)) for job_id in ids)
    assert Path(cleanup[-1]).name.startswith(".pull-")  # the batch's folder of links
    for job_id in ids:
        job = get_job(db, job_id)
        assert job["status"] == "completed" and job["scratch_cleaned"] is True
        results = Path(job["result_dir"])
        assert results == folder(cfg, job_id).parent.parent / "data/processed/results" / job_id
        for result in job["results"]:
            assert result["sha256"] == sha256(results / result["name"])
            assert (results / result["name"]).stat().st_mode & 0o777 == 0o640
        assert job["input_checksums"] == [
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in (("data/phase.h5", b"p" * 3000), ("raw/fl_a.roli", b"a" * 1000))
        ]
        assert not folder(cfg, job_id).exists()
    entry = db.data.find_one({"dataset": DATASET})
    assert entry is not None and sorted(entry["results"]) == sorted(ids)
    assert os.listdir(folder(cfg, "x").parent) == ["code"]  # no link left behind


def test_results_reach_a_dataset_folder_behind_a_symlink(
    solo: tuple[Database, Config], tmp_path: Path
) -> None:
    """Two datasets in one pull, one reached through a symlink: rsync writes through none, and
    the results folder as configured is what is recorded."""
    db, cfg = solo
    behind = tmp_path / "elsewhere"
    behind.symlink_to(tmp_path / "data" / "processed")
    log_entries(db, cfg, [(DATASET, {"data_path": str(behind)})], update=True)
    other = "20211215_093528"
    dataset_with_files(db, cfg, tmp_path / "other", dataset=other)
    ids = [submit(db, cfg), submit(db, cfg, dataset=other)]
    ran(db, cfg, ids)
    run_stages(LocalStore.of(db, cfg), cfg, ["jobs"])
    for job_id, results in zip(ids, (behind, tmp_path / "other" / "processed"), strict=True):
        job = get_job(db, job_id)
        assert job["status"] == "completed", job["history"][-1]
        assert job["result_dir"] == str(results / "results" / job_id)
        for result in job["results"]:
            assert result["sha256"] == sha256(results / "results" / job_id / result["name"])


def test_a_bad_job_in_a_batch_fails_or_retries_alone(solo: tuple[Database, Config]) -> None:
    db, base = solo
    liar = JobTypeConfig(entry="file_stats", outputs=["file_stats.json", "never_written.h5"])
    cfg = with_types(base, liar=liar)
    good = [submit(db, cfg) for _ in range(2)]
    lying, damaged = submit(db, cfg, job_type="liar"), submit(db, cfg)
    ran(db, cfg, [*good, lying, damaged])
    changed = folder(cfg, damaged) / "outputs" / "file_stats.json"
    runner = Counting(lambda: changed.write_bytes(changed.read_bytes() + b" "))
    run = jobs_run(db, cfg, runner)
    assert run.did["completed"] == 2, (run.did, run.notes)
    assert len(runner.commands) == 4  # poll, checksums, the liar's log tail, cleanup
    for job_id in good:
        assert get_job(db, job_id)["status"] == "completed"
    failed = get_job(db, lying)
    assert failed["status"] == "failed"
    assert failed["failure"]["message"] == "the job did not write never_written.h5"
    retried = get_job(db, damaged)
    assert (retried["status"], retried["retries"]) == ("retrieving", 1)
    assert retried["history"][-1]["note"] == (
        "file_stats.json arrived damaged (size or checksum differs); retry 1 in 0:00:00"
    )
    entry = db.data.find_one({"dataset": DATASET})
    assert entry is not None and sorted(entry["results"]) == sorted(good)  # nothing unverified
    run_stages(LocalStore.of(db, cfg), cfg, ["jobs"])
    done = get_job(db, damaged)
    assert done["status"] == "completed"  # as it is on the cluster now, verified
    assert done["results"][0]["sha256"] == sha256(Path(done["result_dir"]) / "file_stats.json")
    assert Path(done["result_dir"], "file_stats.json").read_bytes().endswith(b" ")


def test_no_link_brings_home_or_shows_a_file_from_outside_the_job_folder(
    solo: tuple[Database, Config], tmp_path: Path
) -> None:
    """An output that is a symlink to a private file outside scratch (or reached through a
    linked folder), or a link in logs/, is neither summed, nor brought home, nor put in the log
    tail every member reads; the others of the batch complete."""
    db, cfg = solo
    secret = tmp_path / "secret"
    secret.write_text("private words")
    secret.chmod(0o600)
    good, linked, via_folder = (submit(db, cfg) for _ in range(3))
    ran(db, cfg, [good, linked, via_folder])
    output = folder(cfg, linked) / "outputs" / "file_stats.json"
    output.unlink()
    output.symlink_to(secret)
    (folder(cfg, linked) / "logs" / "zz.log").symlink_to(secret)
    outputs = folder(cfg, via_folder) / "outputs"
    outputs.rename(tmp_path / "elsewhere")
    outputs.symlink_to(tmp_path / "elsewhere")
    run = jobs_run(db, cfg, Counting())
    assert run.did["completed"] == 1, (run.did, run.notes)
    assert get_job(db, good)["status"] == "completed"
    for job_id in (linked, via_folder):
        job = get_job(db, job_id)
        assert job["status"] == "failed", job["history"]
        assert job["failure"]["message"].startswith("the job did not write file_stats.json")
        assert "private words" not in job["log_tail"] and "== zz.log" not in job["log_tail"]
        assert "== task-0.out" in job["log_tail"]  # the job's own logs are still shown
        results = Path(cfg.watchdog.state_dir).parent / "data/processed/results" / job_id
        assert not (results / "file_stats.json").exists()


def test_a_pull_failed_by_one_jobs_file_completes_the_others(
    solo: tuple[Database, Config],
) -> None:
    db, cfg = solo
    good = [submit(db, cfg) for _ in range(2)]
    vanished = submit(db, cfg)
    ran(db, cfg, [*good, vanished])
    gone = folder(cfg, vanished) / "outputs" / "file_stats.json"
    run = jobs_run(db, cfg, Counting(gone.unlink))  # between the checksums and the pull
    assert run.did["completed"] == 2, (run.did, run.notes)
    retried = get_job(db, vanished)
    assert (retried["status"], retried["retries"]) == ("retrieving", 1)
    note = retried["history"][-1]["note"]
    assert note.startswith("file_stats.json did not arrive intact (bringing results home failed:")
    run_stages(LocalStore.of(db, cfg), cfg, ["jobs"])
    failed = get_job(db, vanished)
    assert failed["failure"] == {
        "reason": "retrieve",
        "message": "the job did not write file_stats.json",
    }


def test_a_pull_killed_anywhere_leaves_every_job_recoverable(
    solo: tuple[Database, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 of the jobs stage and its rsync while the pull runs, then at moments spread over
    the runs that follow; then runs to the end: every job completed once, verified."""
    db, base = solo
    big = JobTypeConfig(entry="file_stats", outputs=["file_stats.json", "big.bin"])
    slow = with_types(base, big=big).model_copy(
        update={"watchdog": base.watchdog.model_copy(update={"lease_seconds": 1,
                                                             "bwlimit_kib": 20_000})}
    )  # fmt: skip
    ids = [submit(db, slow, job_type="big") for _ in range(3)]
    ran(db, slow, ids)
    made = {}
    for job_id in ids:  # what each job made: 20 MiB, a pull of 3 s in all
        path = folder(slow, job_id) / "outputs" / "big.bin"
        path.write_bytes(os.urandom(20 * 2**20))
        made[job_id] = sha256(path)
    config = write_config(slow, tmp_path / "slow.yaml")
    scratch = slow.clusters["local"].scratch
    completed, done = {"job_id": {"$in": ids}, "status": "completed"}, 0
    seen = []
    for moment in ("while its rsync runs", 1.0, 2.5, "once a job is completed", 4.5):
        proc = subprocess.Popen([LABCTL, "--config", str(config), "watchdog", "jobs"],
                                stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        if isinstance(moment, float):
            time.sleep(moment)
        while isinstance(moment, str) and proc.poll() is None:
            if moment.startswith("while") and pulls(scratch):
                break
            if moment.startswith("once") and db.queue.count(completed) > done:
                break
            assert time.monotonic() < deadline, f"never {moment}"
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage, its rsync and its ssh
        proc.wait()
        now = Counter(get_job(db, job_id)["status"] for job_id in ids)
        uncleaned = db.queue.count({**completed, "scratch_cleaned": False})
        seen.append(f"{moment}: {dict(now)}, {uncleaned} completed not cleaned")
        done = now["completed"]
        time.sleep(1.1)  # its leases expire
    with capsys.disabled():
        print("\nkilled jobs stages left the jobs " + "; ".join(seen))
    assert "'retrieving': 3" in seen[0]
    deadline = time.monotonic() + 60
    while any(not get_job(db, job_id)["scratch_cleaned"] for job_id in ids):
        assert time.monotonic() < deadline, [get_job(db, j)["history"][-1] for j in ids]
        run_stages(LocalStore.of(db, slow), slow, ["jobs"])
    entry = db.data.find_one({"dataset": DATASET})
    assert entry is not None
    for job_id in ids:
        job = get_job(db, job_id)
        assert job["status"] == "completed"
        assert [h["state"] for h in job["history"]].count("completed") == 1
        results = {r["name"]: r for r in job["results"]}
        assert results["big.bin"]["sha256"] == made[job_id]
        assert sha256(Path(job["result_dir"]) / "big.bin") == made[job_id]
        assert entry["results"][job_id]["files"] == job["results"]
        assert job["owner"] is None and not folder(slow, job_id).exists()
    left = [name for name in os.listdir(scratch) if name != "code"]
    assert all(name.startswith(".pull-") for name in left), left  # killed runs' links only
