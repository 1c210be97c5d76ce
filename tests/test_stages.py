"""The watchdog stages on the `local` cluster (plain processes, real rsync), both backends."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from labctl.catalog.experiments import log_entries
from labctl.config import ClusterConfig, Config
from labctl.config.jobtypes import JobTypeConfig
from labctl.db import Database
from labctl.jobs.actions import cancel_job, retry_job
from labctl.jobs.queue import get_job, read_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.job import NoticeEvent
from labctl.model.states import TERMINAL, JobState
from labctl.stages import stage_run
from labctl.stages.heartbeat import latest
from labctl.stages.loop import run_stages
from labctl.stages.runlock import RUNS, dead
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, local_jobs
from tests.modes import modes

ALL = ["scan", "transfers", "jobs"]


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    return local_jobs(config, db, tmp_path)


def run_until_final(
    db: Database, cfg: Config, job_id: str, timeout: float = 30
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
        job = get_job(db, job_id)
        if job["status"] in TERMINAL and not job.get("cleanup_pending"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['history']}"
        time.sleep(0.2)


def submit(db: Database, cfg: Config, **fields: object) -> str:
    request: dict[str, object] = {
        "dataset": DATASET,
        "compute_cluster": "local",
        "job_type": "file_stats",
        "datafiles": ["phase.h5"],
        "datarawfiles": ["fl_a.roli", "fl b $(x).roli"],
    }
    request.update(fields)
    return str(submit_job(db, cfg, JobRequest(**request))["job_id"])  # type: ignore[arg-type]


def test_job_runs_to_completed_with_verified_results(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job_id = submit(db, cfg)
    job = run_until_final(db, cfg, job_id)
    assert job["status"] == "completed", job["history"]
    states = [h["state"] for h in job["history"]]
    assert states == [
        "queued",
        "transferring",
        "submitted",
        "running",
        "retrieving",
        "completed",
    ] or (states == ["queued", "transferring", "submitted", "retrieving", "completed"])
    result_file = tmp_path / "data/processed/results" / job_id / "file_stats.json"
    results = {r["name"]: r for r in job["results"]}  # type: ignore[attr-defined]
    assert sorted(results) == ["environment.json", "file_stats.json"]
    result = results["file_stats.json"]
    assert result["path"] == str(result_file)
    assert result["sha256"] == hashlib.sha256(result_file.read_bytes()).hexdigest()
    stats = json.loads(result_file.read_text())["files"]
    assert stats["raw/fl b $(x).roli"]["size"] == 2000
    assert stats["data/phase.h5"]["sha256"] == hashlib.sha256(b"p" * 3000).hexdigest()
    entry = db.data.find_one({"dataset": DATASET})
    assert entry is not None and entry["results"][job_id]["files"][0]["sha256"] == result["sha256"]
    transfer = job["transfer"]
    assert transfer["percent"] == 100  # type: ignore[index]
    assert transfer["bytes"] == transfer["total"] == 6000  # type: ignore[index]  # the inputs
    assert not (tmp_path / "scratch" / job_id).exists()
    assert job["scratch_cleaned"] is True
    assert {b["stage"] for b in latest(db).items} == set(ALL)


@pytest.mark.usefixtures("open_umask")
def test_the_watchdog_state_is_private(db: Database, cfg: Config) -> None:
    """The state directory and each job's folder are 0700, the files labctl writes there 0600
    (the pipelines code exported for shipping keeps its own modes, inside them); the job's
    folder goes once it completed."""
    job_id = submit(db, cfg)
    run_stages(LocalStore.of(db, cfg), cfg, ["scan"])  # its rsync started, recorded
    state = cfg.watchdog.state_dir
    found = modes(state)
    assert found["."] == found[job_id] == found[RUNS] == 0o700
    own = {name: mode for name, mode in found.items() if name.startswith(f"{job_id}/")}
    files = {name for name in own if (state / name).is_file()}
    assert {f"{job_id}/{n}" for n in ("transfer.json", "rsync.log")} <= files
    assert {name: mode for name, mode in own.items() if name in files} == dict.fromkeys(
        files, 0o600
    )
    assert run_until_final(db, cfg, job_id)["status"] == "completed"
    assert not (state / job_id).exists() and (state / "code").is_dir()


def test_array_job_runs_every_split(db: Database, cfg: Config, tmp_path: Path) -> None:
    job_id = submit(db, cfg, job_type="file_stats_split", job_options={"num_splits": 3})
    job = run_until_final(db, cfg, job_id)
    assert job["status"] == "completed", job["history"]
    assert sorted(r["name"] for r in job["results"]) == [  # type: ignore[attr-defined]
        "environment_0.json",
        "environment_1.json",
        "environment_2.json",
        "file_stats_0.json",
        "file_stats_1.json",
        "file_stats_2.json",
    ]
    assert [e["split_idx"] for e in job["environment"]] == [0, 1, 2]  # type: ignore[attr-defined]
    assert "#SBATCH --array=0-2" in str(job["batch_script"])
    covered = []
    for index in range(3):
        path = tmp_path / "data/processed/results" / job_id / f"file_stats_{index}.json"
        covered += list(json.loads(path.read_text())["files"])
    assert sorted(covered) == ["data/phase.h5", "raw/fl b $(x).roli", "raw/fl_a.roli"]


def test_failing_job_reports_exit_code_and_log(db: Database, cfg: Config) -> None:
    job_id = submit(db, cfg, job_type="selftest", job_options={"exit_code": 3})
    job = run_until_final(db, cfg, job_id)
    assert job["status"] == "failed"
    assert job["failure"] == {"reason": "exit_code", "message": "process exited (exit 3)"}
    assert "exit 3" in str(job["log_tail"]) and "selftest on" in str(job["log_tail"])


def test_missing_outputs_fail_the_retrieval(db: Database, cfg: Config) -> None:
    lying = JobTypeConfig(entry="selftest", outputs=["selftest.json", "never_written.h5"])
    cfg = cfg.model_copy(update={"job_types": {**cfg.job_types, "liar": lying}})
    job = run_until_final(db, cfg, submit(db, cfg, job_type="liar"))
    assert job["status"] == "failed"
    assert job["failure"] == {
        "reason": "retrieve",
        "message": "the job did not write never_written.h5",
    }


def test_input_removed_after_submit_fails_the_transfer(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job_id = submit(db, cfg)
    (tmp_path / "data/raw/fl_a.roli").unlink()
    job = run_until_final(db, cfg, job_id)
    assert job["failure"]["reason"] == "transfer"  # type: ignore[index]
    assert "fl_a.roli' does not exist" in job["failure"]["message"]  # type: ignore[index]


def test_await_transfer_waits_for_the_complete_flag(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job_id = submit(db, cfg, datarawfiles=["late.roli"], data_transfer_await=True)
    for _ in range(2):
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
    assert get_job(db, job_id)["status"] == "awaiting_data"
    (tmp_path / "data/raw/late.roli").write_bytes(b"late")
    log_entries(db, cfg, [(DATASET, {"data_complete": "true"})], update=True)
    job = run_until_final(db, cfg, job_id)
    assert job["status"] == "completed", job["history"]
    assert [h["state"] for h in job["history"]][:3] == ["queued", "awaiting_data", "transferring"]


def dead_cluster(tmp_path: Path) -> ClusterConfig:
    """A key cluster nothing listens for (port 1 on this machine: the connection is refused)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "known_hosts").write_text("")
    return ClusterConfig(
        host="127.0.0.1",
        port=1,
        user="nobody",
        scratch="/tmp/nowhere",
        key_file=key,
        known_hosts=tmp_path / "known_hosts",
    )


def test_an_unreachable_cluster_is_waited_for_without_spending_retries(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    cfg = cfg.model_copy(update={"clusters": {**cfg.clusters, "dead": dead_cluster(tmp_path)}})
    job_id = submit(db, cfg, compute_cluster="dead")
    for _ in range(cfg.watchdog.max_retries + 3):  # more runs than it has retries
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
    job = read_job(db, job_id)
    assert job.status is JobState.QUEUED and job.retries == 0 and job.failure is None
    assert job.waiting is not None
    assert re.fullmatch(
        r"waiting for dead: unreachable since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; "
        r"it goes on by itself once the cluster is back",
        job.waiting,
    )
    assert [h.note for h in job.history] == ["submitted by tester"]  # no retry noted
    [notice] = job.notices.values()  # one notice for the outage, however many runs
    assert notice.event is NoticeEvent.OUTAGE and notice.cluster == "dead"


def test_cancel_stops_the_running_job_and_retry_runs_it_again(db: Database, cfg: Config) -> None:
    job_id = submit(db, cfg, job_type="selftest", job_options={"sleep_seconds": 60})
    deadline = time.monotonic() + 30
    while get_job(db, job_id)["status"] != "running":
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
        assert time.monotonic() < deadline
    pid = int(get_job(db, job_id)["scheduler"]["job_id"])
    cancel_job(db, job_id, "tester")
    job = run_until_final(db, cfg, job_id)
    assert job["status"] == "cancelled" and job["cleanup_pending"] is False
    deadline = time.monotonic() + 10
    while (
        Path(f"/proc/{pid}").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    ):
        assert time.monotonic() < deadline, "the cancelled job's processes are still running"
        time.sleep(0.1)
    retry_job(db, job_id, "tester")
    db.queue.update({"job_id": job_id}, {"$set": {"job_options.sleep_seconds": 0}})
    again = run_until_final(db, cfg, job_id)
    assert again["status"] == "completed" and again["attempt"] == 2


def test_dataset_deleted_after_submit_fails_the_job(db: Database, cfg: Config) -> None:
    job_id = submit(db, cfg)
    db.data.delete({"dataset": DATASET})
    job = run_until_final(db, cfg, job_id)
    assert job["failure"] == {
        "reason": "transfer",
        "message": f"dataset {DATASET} is no longer in the database",
    }


# A run that was killed with jobs in hand -----------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from labctl.stages.runlock import Mark, hold
state, owner, member, host = sys.argv[1:]
with hold(Path(state), Mark(owner=owner, member=member, host=host)):
    print("held", flush=True)
    time.sleep(600)
"""


@contextmanager
def run_holding(state: Path, owner: str, member: str, host: str) -> Iterator[int]:
    """A real process that holds a run file as a stage run does; its pid."""
    argv = [sys.executable, "-c", HOLDER, str(state), owner, member, host]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        try:
            yield proc.pid
        finally:
            proc.kill()


def test_a_run_file_is_found_dead_only_once_its_process_is_gone(tmp_path: Path) -> None:
    with run_holding(tmp_path, "here:1:a", "tester", "here") as pid:
        assert dead(tmp_path, "tester", "here", 10) == []
        os.kill(pid, signal.SIGSTOP)  # stopped is alive
        assert dead(tmp_path, "tester", "here", 10) == []
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert dead(tmp_path, "alice", "here", 10) == []  # another member's run
        assert dead(tmp_path, "tester", "there", 10) == []  # a run on another machine
        [found] = dead(tmp_path, "tester", "here", 10)
        assert found.mark.owner == "here:1:a"
        assert dead(tmp_path, "tester", "here", 10) == []  # locked by who found it
        found.drop()
    assert os.listdir(tmp_path / RUNS) == []


def test_a_killed_run_s_leases_are_freed_by_the_next_run_and_no_live_one_s(
    db: Database, cfg: Config
) -> None:
    """Jobs leased for 600 s by a run SIGKILLed since are free at the next run's start; jobs
    leased by a live run stay its own, and so do another member's jobs leased by the dead run."""
    host, state = socket.gethostname(), cfg.watchdog.state_dir
    killed, live, alices = (submit(db, cfg, job_options={"sleep_seconds": n}) for n in range(3))
    db.queue.update({"job_id": alices}, {"$set": {"user": "alice"}})
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600)
    leases = {killed: f"{host}:1:k", alices: f"{host}:1:k", live: f"{host}:2:l"}
    for job_id, owner in leases.items():
        db.queue.update({"job_id": job_id}, {"$set": {"owner": owner, "lease_until": until}})
    with run_holding(state, f"{host}:2:l", cfg.user, host):
        with run_holding(state, f"{host}:1:k", cfg.user, host) as pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with stage_run(LocalStore.of(db, cfg), cfg, "scan") as run:
            assert run.did["dead runs"] == 1
            assert len(os.listdir(state / RUNS)) == 2  # the live run's and this run's
        owners = {job_id: get_job(db, job_id)["owner"] for job_id in leases}
        assert owners == {killed: None, alices: f"{host}:1:k", live: f"{host}:2:l"}
        assert len(os.listdir(state / RUNS)) == 1
