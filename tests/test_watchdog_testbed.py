"""The watchdog end to end on the real testbed: sshd, SLURM and rsync, nothing mocked.

Jobs go to the cluster `hpc` (tests/testbed.py): a fresh scratch root on the testbed, SLURM
partition `debug`, finished jobs read from the jobcomp log. Their inputs are real files under
tmp_path. The stages run in this process through `run_stages`, or as `labctl watchdog tick`
processes where the test is about processes (overlapping runs, SIGKILL).

Backends: the cheap tests take `db`/`config` and so run on both the embedded store and the
MongoDB wire server; the heavy ones (a 300 MB transfer, 100 jobs in 8 overlapping ticks,
SIGKILLed processes) use the embedded store only, through the `solo` fixture.

The tests at the end need no testbed: they check the parsing of output captured from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast

import pytest

from labctl.catalog.experiments import log_entries
from labctl.clock import utcnow
from labctl.compute.batch import JobLayout
from labctl.compute.cluster import ClusterPool
from labctl.compute.transport import parse_progress
from labctl.compute.transport.rsync import TransferHandle, TransferState, poll
from labctl.config import Config, DatabaseConfig
from labctl.config.jobtypes import JobTypeConfig, OptionSpec
from labctl.db import Database, connect
from labctl.errors import ValidationError
from labctl.jobs.actions import cancel_job
from labctl.jobs.queue import get_job, read_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.states import TERMINAL, JobState
from labctl.stages import stage_run
from labctl.stages.heartbeat import latest
from labctl.stages.loop import run_stages
from labctl.stages.runlock import RUNS
from labctl.stages.seam import LocalStore
from labctl.stages.tracking import follow
from tests.jobfixtures import DATASET, dataset_with_files
from tests.testbed import (
    SlurmEntry,
    hpc_config,
    needs_testbed,
    parse_named,
    pulls,
    remote_exists,
    remote_scratch,
    slurm_jobs_named,
    ssh,
    status_in,
    tick_until,
    write_config,
)

F = TypeVar("F", bound=Callable[..., Any])
CAPTURED = Path(__file__).parent / "captured"
LABCTL = str(Path(sys.executable).parent / "labctl")
FINAL = [str(s) for s in TERMINAL]
LIFECYCLE = [str(s) for s in JobState]  # the enum lists the states in lifecycle order
RETRY_NOTE = re.compile(r"; retry \d+ in |^rsync resumed ")
INPUTS: dict[str, Any] = {
    "datafiles": ["phase.h5"],
    "datarawfiles": ["fl_a.roli", "fl b $(x).roli"],
}


def on_testbed(test: F) -> F:
    """Mark a test as needing the testbed, and skip it when there is none."""
    return cast(F, pytest.mark.testbed(needs_testbed(test)))


@pytest.fixture
def scratch() -> Iterator[str]:
    with remote_scratch() as path:
        yield path


@pytest.fixture
def hpc(config: Config, db: Database, scratch: str, tmp_path: Path) -> Config:
    """Both backends: the testbed cluster, the job types, and the dataset with its files."""
    cfg = hpc_config(config, scratch, tmp_path)
    dataset_with_files(db, cfg, tmp_path / "data")
    return cfg


@pytest.fixture
def solo(tmp_path: Path, scratch: str) -> Iterator[tuple[Database, Config]]:
    """Embedded store only, for the heavy tests: a database and the testbed config (lease 10 s)."""
    base = Config(user="tester", database=DatabaseConfig(uri="embedded", path=tmp_path / "store"))
    cfg = hpc_config(base, scratch, tmp_path, lease_seconds=10)
    with connect(cfg.database) as database:
        dataset_with_files(database, cfg, tmp_path / "data")
        yield database, cfg


def submit(db: Database, config: Config, job_type: str = "file_stats", **fields: Any) -> str:
    fields.setdefault("dataset", DATASET)
    request = JobRequest(compute_cluster="hpc", job_type=job_type, **fields)
    return str(submit_job(db, config, request, force=True)["job_id"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def states(job: dict[str, Any]) -> list[str]:
    return [item["state"] for item in job["history"]]


def assert_lifecycle(job: dict[str, Any], end: str) -> None:
    """History in lifecycle order, timestamps rising, each transition once, ending in `end`."""
    seen = states(job)
    assert [LIFECYCLE.index(s) for s in seen] == sorted(LIFECYCLE.index(s) for s in seen), seen
    times = [item["at"] for item in job["history"]]
    assert times == sorted(times)
    assert seen[:2] == ["queued", "transferring"], seen
    assert seen[-1] == end, seen
    moves = [item["state"] for item in job["history"] if not RETRY_NOTE.search(item["note"])]
    assert len(moves) == len(set(moves)), seen  # a state repeats only in notes of retries


def assert_verified(job: dict[str, Any], dest: Path, names: Sequence[str]) -> None:
    """Results home in `dest` (the named outputs, then the runs' environment reports), and each
    recorded size and sha256 is the file's own."""
    assert job["result_dir"] == str(dest)
    recorded = [r["name"] for r in job["results"]]
    assert recorded[: len(names)] == list(names)
    assert recorded[len(names) :] and all(
        n.startswith("environment") for n in recorded[len(names) :]
    )
    for result in job["results"]:
        local = dest / result["name"]
        assert result["path"] == str(local)
        assert result["size"] == local.stat().st_size
        assert result["sha256"] == sha256(local)


def one_slurm_job(job: dict[str, Any], entries: list[SlurmEntry]) -> None:
    """SLURM ran exactly one job for this labctl job: the one recorded in it."""
    assert entries, f"SLURM knows no job named labctl-{job['job_id']}"
    assert {e.job_id for e in entries} == {job["scheduler"]["job_id"]}
    assert states(job).count("submitted") == 1


# 1. submit -> completed ----------------------------------------------------------------------


@on_testbed
def test_job_goes_from_submit_to_verified_results(
    db: Database, hpc: Config, tmp_path: Path, scratch: str
) -> None:
    started = utcnow()
    job_id = submit(db, hpc, **INPUTS)

    assert run_stages(LocalStore.of(db, hpc), hpc, ["scan"]) == [
        "scan: code shipped 1, transferring 1"
    ]
    # let the rsync finish unobserved: the transfers stage first sees it ended
    status_file = Path(get_job(db, job_id)["transfer"]["status_path"])
    deadline = time.monotonic() + 30
    while not status_file.exists():
        assert time.monotonic() < deadline, "the rsync did not finish"
        time.sleep(0.1)
    assert run_stages(LocalStore.of(db, hpc), hpc, ["transfers"]) == ["transfers: transferred 1"]
    tick_until(db, hpc, status_in(db, job_id, *FINAL))

    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    assert_lifecycle(job, "completed")
    assert states(job)[:3] == ["queued", "transferring", "submitted"]
    assert states(job)[-2:] == ["retrieving", "completed"]
    processed = tmp_path / "data" / "processed"
    dest = processed / "results" / job_id
    assert_verified(job, dest, ["file_stats.json"])
    # the pipeline saw exactly our inputs, byte for byte
    report = json.loads((dest / "file_stats.json").read_text())
    assert report["dataset"] == DATASET
    raw = tmp_path / "data" / "raw"
    assert {name: f["sha256"] for name, f in report["files"].items()} == {
        "data/phase.h5": sha256(processed / "phase.h5"),
        "raw/fl_a.roli": sha256(raw / "fl_a.roli"),
        "raw/fl b $(x).roli": sha256(raw / "fl b $(x).roli"),
    }
    # the dataset records the results too
    entry = db.data.find_one({"dataset": DATASET})
    assert entry is not None
    record = entry["results"][job_id]
    assert (record["job_id"], record["job_type"], record["dir"]) == (
        job_id,
        "file_stats",
        str(dest),
    )
    assert record["files"] == job["results"]
    # the transfer ended complete, the cluster's job folder is gone
    assert job["transfer"]["done"] is True
    assert job["transfer"]["percent"] == 100
    assert job["transfer"]["bytes"] == job["transfer"]["total"] == 6000  # inputs; code apart
    assert job["remote_dir"] == f"{scratch}/{job_id}"
    assert job["scratch_cleaned"] is True
    assert not remote_exists(job["remote_dir"])
    assert remote_exists(scratch)
    # SLURM ran it once, under its name, to completion
    assert job["scheduler"]["state"] == "COMPLETED"
    assert job["scheduler"]["exit_code"] == 0
    entries = slurm_jobs_named([f"labctl-{job_id}"])[f"labctl-{job_id}"]
    one_slurm_job(job, entries)
    assert entries == [SlurmEntry(job["scheduler"]["job_id"], None, "COMPLETED")]
    # each stage left a heartbeat; the last jobs run is the one that completed the job
    beats = {beat["stage"]: beat for beat in latest(db).items}
    assert set(beats) == {"scan", "transfers", "jobs"}
    for beat in beats.values():
        assert beat["host"] == socket.gethostname()
        assert beat["at"] >= started.replace(microsecond=0)
    assert beats["jobs"]["did"]["completed"] == 1


# 2. a job array --------------------------------------------------------------------------------


@on_testbed
def test_splits_run_as_one_slurm_array(db: Database, hpc: Config, tmp_path: Path) -> None:
    job_id = submit(db, hpc, "file_stats_split", job_options={"num_splits": 4}, **INPUTS)

    tick_until(db, hpc, status_in(db, job_id, *FINAL))

    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    assert_lifecycle(job, "completed")
    assert "#SBATCH --array=0-3" in job["batch_script"].splitlines()
    slurm_id = job["scheduler"]["job_id"]
    assert job["scheduler"]["tasks"] == 4
    assert job["scheduler"]["task_states"] == {str(i): "COMPLETED" for i in range(4)}
    # one sbatch: SLURM has one array job under this name, with tasks 0-3
    entries = slurm_jobs_named([f"labctl-{job_id}"])[f"labctl-{job_id}"]
    one_slurm_job(job, entries)
    assert sorted(entries, key=lambda e: str(e.tasks)) == [
        SlurmEntry(slurm_id, str(i), "COMPLETED") for i in range(4)
    ]
    names = [f"file_stats_{i}.json" for i in range(4)]
    dest = tmp_path / "data" / "processed" / "results" / job_id
    assert_verified(job, dest, names)
    # the tasks split the inputs between them: each input in exactly one output
    per_task = [json.loads((dest / name).read_text())["files"] for name in names]
    assert sum(len(files) for files in per_task) == 3
    assert set().union(*per_task) == {"data/phase.h5", "raw/fl_a.roli", "raw/fl b $(x).roli"}


# 3. a failing job and a cancelled one -----------------------------------------------------------


@on_testbed
def test_failing_job_reports_its_exit_code_and_log(db: Database, hpc: Config) -> None:
    job_id = submit(db, hpc, "selftest", datafiles=["phase.h5"], job_options={"exit_code": 3})

    tick_until(db, hpc, status_in(db, job_id, *FINAL))

    job = get_job(db, job_id)
    assert job["status"] == "failed"
    assert_lifecycle(job, "failed")
    assert "retrieving" not in states(job)
    assert job["failure"]["reason"] == "exit_code"
    assert job["failure"]["message"] == "SLURM FAILED (exit 3)"
    assert job["history"][-1]["note"] == "SLURM FAILED (exit 3)"
    assert (job["scheduler"]["state"], job["scheduler"]["exit_code"]) == ("FAILED", 3)
    # the tail of the SLURM log came home: the pipeline's own line on stderr
    assert f"== slurm-{job['scheduler']['job_id']}.out" in job["log_tail"]
    assert "selftest on " in job["log_tail"]
    assert ": exit 3" in job["log_tail"]
    assert job["results"] == []
    # its state folder here is gone (a retry stages afresh); its folder there stays for a look
    assert not (hpc.watchdog.state_dir / job_id).exists()
    assert remote_exists(f"{job['remote_dir']}/logs")


@on_testbed
def test_cancelled_job_is_stopped_on_slurm(db: Database, hpc: Config) -> None:
    job_id = submit(db, hpc, "selftest", datafiles=["phase.h5"], job_options={"sleep_seconds": 60})
    tick_until(db, hpc, status_in(db, job_id, "running", *FINAL), timeout=60)
    assert get_job(db, job_id)["status"] == "running"
    slurm_id = get_job(db, job_id)["scheduler"]["job_id"]
    name = f"labctl-{job_id}"
    assert slurm_jobs_named([name])[name] == [SlurmEntry(slurm_id, None, "RUNNING")]

    cancelled = cancel_job(db, job_id, "tester")
    assert cancelled["status"] == "cancelled"
    assert cancelled["cleanup_pending"] is True
    assert cancelled["failure"] == {"reason": "cancelled", "message": "cancelled by tester"}

    assert remote_exists(f"{hpc.clusters['hpc'].scratch}/{job_id}/inputs/data/phase.h5")
    lines = run_stages(LocalStore.of(db, hpc), hpc, ["jobs"])
    assert lines == ["jobs: archived 1, cleaned 1, stopped 1"]  # stopped, cleaned: archived
    job = get_job(db, job_id)
    assert job["cleanup_pending"] is False
    assert not remote_exists(job["remote_dir"])  # its folder, with the inputs shipped
    deadline = time.monotonic() + 20
    while (entries := slurm_jobs_named([name])[name]) != [SlurmEntry(slurm_id, None, "CANCELLED")]:
        assert time.monotonic() < deadline, f"SLURM still shows {entries}"
        time.sleep(0.3)
    # later runs leave the cancelled job alone
    run_stages(LocalStore.of(db, hpc), hpc, ["scan", "transfers", "jobs"])
    assert get_job(db, job_id)["history"] == job["history"]
    assert_lifecycle(job, "cancelled")


@on_testbed
def test_a_forged_id_of_another_slurm_job_cancels_nothing(db: Database, hpc: Config) -> None:
    """A member names another SLURM job (another name) as their cancelled job's: scancel, kept
    to the job's own name (`--name=labctl-ID`), leaves it running."""
    name = f"not-labctl-{uuid.uuid4().hex[:8]}"
    sbatch = ["sbatch", "--parsable", "--partition=debug", f"--job-name={name}"]
    other = ssh([*sbatch, "--output=/dev/null", "--wrap=sleep 300"]).strip().split(";")[0]
    try:
        job_id = submit(db, hpc, "selftest", datafiles=["phase.h5"])
        cancel_job(db, job_id, "tester")
        db.queue.update({"job_id": job_id}, {"$set": {"scheduler": {"job_id": other}}})
        lines = run_stages(LocalStore.of(db, hpc), hpc, ["jobs"])
        assert lines == ["jobs: archived 1, cleaned 1, stopped 1"]
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            [entry] = slurm_jobs_named([name])[name]
            assert entry.state in ("PENDING", "RUNNING"), entry
            time.sleep(0.3)
    finally:
        ssh(["scancel", other])


@on_testbed
def test_a_late_poll_does_not_rewrite_a_finished_job(solo: tuple[Database, Config]) -> None:
    """Overlapping jobs stages: one that polled SLURM before another finished the job must not
    write its stale SLURM state over the finished job's."""
    db, hpc = solo
    job_id = submit(db, hpc, "selftest", datafiles=["phase.h5"], job_options={"sleep_seconds": 2})
    tick_until(db, hpc, status_in(db, job_id, "running", *FINAL))
    stale = read_job(db, job_id)
    assert stale.status is JobState.RUNNING and stale.scheduler_id
    with stage_run(LocalStore.of(db, hpc), hpc, "jobs") as late:
        cluster = late.pool.get("hpc")
        seen = cluster.scheduler.poll({stale.scheduler_id: late.layout(stale)})
        tick_until(db, hpc, status_in(db, job_id, *FINAL))  # meanwhile, another run finishes it
        follow(late, cluster, stale, statuses=seen)

    job = get_job(db, job_id)
    assert job["status"] == "completed"
    assert (job["scheduler"]["state"], job["scheduler"]["exit_code"]) == ("COMPLETED", 0)


# 4. an interrupted rsync resumes ---------------------------------------------------------------


def remote_sizes(folder: str, pattern: str) -> dict[str, int]:
    """Sizes of the files under a remote folder whose names match a glob pattern."""
    out = ssh(["find", folder, "-name", pattern, "-printf", "%f\\t%s\\n"], check=False)
    return {
        name: int(size)
        for name, _, size in (line.partition("\t") for line in out.split("\n") if line)
    }


@on_testbed
def test_killed_rsync_resumes_where_it_stopped(
    solo: tuple[Database, Config], tmp_path: Path, scratch: str
) -> None:
    db, hpc = solo
    big = tmp_path / "data" / "raw" / "big.bin"
    subprocess.run(["sh", "-c", 'head -c 300M /dev/urandom > "$1"', "gen", big], check=True)
    size = big.stat().st_size
    job_id = submit(db, hpc, datarawfiles=["big.bin"])
    inputs = f"{scratch}/{job_id}/inputs/raw"

    assert run_stages(LocalStore.of(db, hpc), hpc, ["scan"]) == [
        "scan: code shipped 1, transferring 1"
    ]
    pid = get_job(db, job_id)["transfer"]["pid"]
    # Hold the transfer still, then let it run in short slices until a sixth has arrived.
    os.killpg(pid, signal.SIGSTOP)
    try:
        assert os.getsid(pid) == pid  # the recorded pid leads the transfer's own session
        deadline = time.monotonic() + 60
        while max(remote_sizes(inputs, ".big.bin.*").values(), default=0) < size // 6:
            assert time.monotonic() < deadline, "the transfer did not get going"
            os.killpg(pid, signal.SIGCONT)
            time.sleep(0.05)
            os.killpg(pid, signal.SIGSTOP)
    finally:
        os.killpg(pid, signal.SIGKILL)  # kill -9 the whole transfer: launcher, rsync, ssh
        os.waitpid(pid, 0)  # the launcher is this process's child
    # --partial: the receiver keeps what arrived under the file's own name
    deadline = time.monotonic() + 20
    while "big.bin" not in (partial := remote_sizes(inputs, "big.bin")):
        assert time.monotonic() < deadline, "no partial file kept on the cluster"
        time.sleep(0.2)
    kept = partial["big.bin"]
    assert size // 6 <= kept < size
    # Killed processes release the log's lock as the kernel reaps them: on a loaded machine
    # not always by now.
    transfer = get_job(db, job_id)["transfer"]
    handle = TransferHandle(transfer["pid"], transfer["log"], transfer["status_path"])
    while poll(handle).state is TransferState.RUNNING:
        assert time.monotonic() < deadline, "the killed transfer still holds its log"
        time.sleep(0.2)

    assert run_stages(LocalStore.of(db, hpc), hpc, ["transfers"]) == [
        "transfers: interrupted 1, retries 1"
    ]
    job = get_job(db, job_id)
    assert job["history"][-1]["state"] == "transferring"
    assert job["history"][-1]["note"] == "rsync was killed; retry 1 in 0:00:00"
    assert job["transfer"]["resume"] is True
    assert run_stages(LocalStore.of(db, hpc), hpc, ["transfers"]) == ["transfers: resumed 1"]
    assert get_job(db, job_id)["transfer"]["attempts"] == 2
    tick_until(db, hpc, lambda: get_job(db, job_id)["transfer"]["done"], stages=["transfers"])

    # the rerun sent only what was missing (plus block checksums), not the whole file again
    resumed = parse_progress(Path(job["transfer"]["log"]).read_bytes())
    assert resumed is not None and resumed.bytes_sent is not None
    assert resumed.bytes_sent < size - kept + size // 100, (resumed.bytes_sent, size, kept)
    tick_until(db, hpc, status_in(db, job_id, *FINAL), timeout=120)
    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    assert_lifecycle(job, "completed")
    dest = tmp_path / "data" / "processed" / "results" / job_id
    assert_verified(job, dest, ["file_stats.json"])
    report = json.loads((dest / "file_stats.json").read_text())
    assert report["files"]["raw/big.bin"]["size"] == size
    assert report["files"]["raw/big.bin"]["sha256"] == sha256(big)
    big.unlink()


# 5. overlapping watchdog processes -------------------------------------------------------------

OVERLAPPING = 8
JOBS = 100


@on_testbed
def test_overlapping_ticks_never_submit_twice(
    solo: tuple[Database, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, hpc = solo
    hpc = hpc.model_copy(
        update={"watchdog": hpc.watchdog.model_copy(update={"backoff_seconds": 1})}
    )
    config_file = write_config(hpc, tmp_path / "config.yaml")
    job_ids = [submit(db, hpc, "selftest", datafiles=["phase.h5"]) for _ in range(JOBS)]
    start = time.monotonic()
    rounds: list[float] = []
    did: Counter[str] = Counter()
    while db.queue.count({"status": {"$nin": FINAL}}):
        assert time.monotonic() - start < 240, f"not done after {len(rounds)} rounds"
        began = time.monotonic()
        procs = [
            subprocess.Popen(
                [LABCTL, "--config", str(config_file), "watchdog", "tick"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(OVERLAPPING)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0 and not err, err
            for line in out.splitlines():
                for item in line.partition(": ")[2].split(", "):
                    what, _, count = item.rpartition(" ")
                    if count.isdigit():
                        did[what] += int(count)
        rounds.append(time.monotonic() - began)

    with capsys.disabled():
        print(
            f"\n{JOBS} jobs, {OVERLAPPING} overlapping ticks: {len(rounds)} rounds in "
            f"{time.monotonic() - start:.1f} s (slowest {max(rounds):.1f} s); "
            f"did {dict(sorted(did.items()))}"
        )
    jobs = [get_job(db, job_id) for job_id in job_ids]
    assert Counter(job["status"] for job in jobs) == {"completed": JOBS}
    assert did["submitted"] == JOBS
    assert did["completed"] == JOBS
    assert len({job["scheduler"]["job_id"] for job in jobs}) == JOBS
    named = slurm_jobs_named([f"labctl-{job_id}" for job_id in job_ids])
    for job in jobs:
        entries = named[f"labctl-{job['job_id']}"]
        one_slurm_job(job, entries)
        assert entries == [SlurmEntry(job["scheduler"]["job_id"], None, "COMPLETED")]
        assert_lifecycle(job, "completed")
        assert (job["scheduler"]["state"], job["scheduler"]["exit_code"]) == ("COMPLETED", 0)
        assert job["transfer"]["bytes"] == job["transfer"]["total"], job["transfer"]


# 6. a watchdog killed mid-stage ----------------------------------------------------------------

SUBMITTING = {"status": "transferring", "scheduler.submitting": True}
KILLS: list[float | None] = [0.3, 1.0, None, 2.0, 3.0]
"""When to SIGKILL each `tick --loop` process: seconds after its start, or None for just after
its sbatch reached SLURM and before it recorded the SLURM job id."""


def kill_after_sbatch(proc: subprocess.Popen[str], db: Database) -> str:
    """SIGKILL `proc` between an sbatch reaching SLURM and the job id being recorded.

    Once a job is marked as being submitted, the process is run in 5 ms slices; between them
    it is stopped (it may hold the store's lock, so only SLURM is asked) until SLURM has the job.
    """
    deadline = time.monotonic() + 60
    while (marked := db.queue.find_one(SUBMITTING, ["job_id"])) is None:
        assert time.monotonic() < deadline, "no job was marked as being submitted"
        assert proc.poll() is None, proc.communicate()[1]
    os.kill(proc.pid, signal.SIGSTOP)
    name = f"labctl-{marked['job_id']}"
    try:
        while not slurm_jobs_named([name])[name]:
            assert time.monotonic() < deadline, "the job never reached SLURM"
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.005)
            os.kill(proc.pid, signal.SIGSTOP)
    finally:
        proc.kill()
        proc.wait()
    job = get_job(db, marked["job_id"])
    assert job["status"] == "transferring" and job["scheduler"]["submitting"] is True
    assert job["scheduler"]["job_id"] is None
    return f"sbatch of {marked['job_id']}, before its id was recorded"


@on_testbed
def test_watchdog_killed_anywhere_then_rerun_completes_each_job_once(
    solo: tuple[Database, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, hpc = solo
    config_file = write_config(hpc, tmp_path / "config.yaml")
    job_ids = [submit(db, hpc, **INPUTS) for _ in range(6)]
    seen: list[str] = []
    for delay in KILLS:
        proc = subprocess.Popen(
            [LABCTL, "--config", str(config_file), "watchdog", "tick", "--loop", "0.2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if delay is None:
            moment = kill_after_sbatch(proc, db)
        else:
            time.sleep(delay)
            assert proc.poll() is None, proc.communicate()[1]
            proc.kill()
            proc.wait()
            moment = f"{delay} s"
        now = Counter(get_job(db, job_id)["status"] for job_id in job_ids)
        seen.append(f"killed at {moment}: {dict(now)}")
    with capsys.disabled():
        print("\nSIGKILLed ticks left the jobs " + "; ".join(seen))

    tick_until(db, hpc, lambda: not db.queue.count({"status": {"$nin": FINAL}}), timeout=120)

    jobs = [get_job(db, job_id) for job_id in job_ids]
    named = slurm_jobs_named([f"labctl-{job_id}" for job_id in job_ids])
    for job in jobs:
        assert job["status"] == "completed", job.get("failure")
        assert_lifecycle(job, "completed")
        one_slurm_job(job, named[f"labctl-{job['job_id']}"])
        dest = tmp_path / "data" / "processed" / "results" / job["job_id"]
        assert_verified(job, dest, ["file_stats.json"])
        record = db.data.find_one({"dataset": DATASET})
        assert record is not None and record["results"][job["job_id"]]["files"] == job["results"]
        assert not remote_exists(job["remote_dir"])


@on_testbed
def test_a_run_killed_during_a_pull_stalls_no_job_for_its_lease(
    solo: tuple[Database, Config], tmp_path: Path, scratch: str
) -> None:
    """SIGKILL of the jobs stage while it pulls a batch of three jobs' results, with the default
    lease of 600 s: the next run frees the dead run's leases and brings every job home."""
    db, base = solo
    big = JobTypeConfig(entry="file_stats", outputs=["file_stats.json", "big.bin"])
    settings = {"lease_seconds": 600, "bwlimit_kib": 20_000}  # the default lease; a 3-s pull
    hpc = base.model_copy(
        update={
            "job_types": {**base.job_types, "big": big},
            "watchdog": base.watchdog.model_copy(update=settings),
        }
    )
    ids = [submit(db, hpc, "big", **INPUTS) for _ in range(3)]
    tick_until(db, hpc, lambda: db.queue.count({"status": "submitted"}) == 3,
               stages=["scan", "transfers"])  # fmt: skip
    at_slurm = {
        job["scheduler"]["job_id"]: JobLayout(PurePosixPath(job["remote_dir"]))
        for job in (get_job(db, job_id) for job_id in ids)
    }
    slurm = ClusterPool(hpc).get("hpc").scheduler
    deadline = time.monotonic() + 120
    while True:  # ended, and accounted as the jobs stage waits for: else it waits a run
        statuses = slurm.poll(at_slurm).values()
        if all(s.state is JobState.RETRIEVING and s.usage and s.usage.req_mem_bytes
               for s in statuses):  # fmt: skip
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
    made = {}
    for job_id in ids:  # what each job made besides: 20 MiB
        path = f"{scratch}/{job_id}/outputs/big.bin"
        write = 'head -c 20971520 /dev/urandom > "$1" && sha256sum < "$1"'
        made[job_id] = ssh(["sh", "-c", write, "big", path]).split()[0]
    config_file = write_config(hpc, tmp_path / "config.yaml")
    argv = [LABCTL, "--config", str(config_file), "watchdog", "jobs"]
    said = tmp_path / "jobs-stage.out"
    with said.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    while not pulls(scratch):
        states = {job_id: get_job(db, job_id)["status"] for job_id in ids}
        assert time.monotonic() < deadline and proc.poll() is None, (
            f"no pull was seen; the run said {said.read_text()!r}; the jobs are {states}"
        )
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the stage, its rsync and its ssh
    proc.wait()
    held = [get_job(db, job_id) for job_id in ids]
    assert {job["status"] for job in held} == {"retrieving"}
    assert all(job["lease_until"] > utcnow() + dt.timedelta(seconds=500) for job in held)

    assert run_stages(LocalStore.of(db, hpc), hpc, ["jobs"]) == [
        "jobs: archived 3, cleaned 3, completed 3, dead runs 1"
    ]
    dest = tmp_path / "data" / "processed" / "results"
    for job_id in ids:
        job = get_job(db, job_id)
        assert job["status"] == "completed", job.get("failure")
        assert_verified(job, dest / job_id, ["file_stats.json", "big.bin"])
        assert sha256(dest / job_id / "big.bin") == made[job_id]
        assert job["owner"] is None
    assert os.listdir(hpc.watchdog.state_dir / RUNS) == []  # the dead run's file too


# 7. shell metacharacters and `..` -------------------------------------------------------------

ECHO_OPTIONS = '''"""Test-only job type: writes down the options it received."""
import json


def run(dataset, inputs, outputs, options):
    (outputs / "options.json").write_text(json.dumps({"dataset": dataset, "options": options}))
    return 0
'''


def metachar_names(marker: str) -> list[str]:
    return [
        f"a b;$(touch {marker})",  # also a path: folders `a b;$(touch `, `tmp`
        f"`touch {marker}`.h5",
        "`id`",
        "'quote'",
        '"dq" \\ back',
        "-e x --rsh=sh",
        "*?[]{a,b}~ $HOME & | > <",
        "..dots..",
        "ünïcode  two  spaces ",
    ]


@pytest.fixture
def marker() -> Iterator[str]:
    path = f"/tmp/pwned-{uuid.uuid4().hex[:10]}"
    yield path
    assert not Path(path).exists(), "a user-supplied string was executed on this machine"
    assert not remote_exists(path), "a user-supplied string was executed on the testbed"


@on_testbed
def test_metacharacters_in_file_names_and_folders_travel_verbatim(
    db: Database, hpc: Config, tmp_path: Path, marker: str
) -> None:
    dataset = "20220101_000000"
    root = tmp_path / f"d $(touch {marker}) 'q' `id`"
    names = metachar_names(marker)
    for i, name in enumerate(names):
        for sub in ("processed", "raw"):
            path = root / sub / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{sub} {i} {name}\n".encode())
    fields = {
        "user": "charlie",
        "data_raw_path": str(root / "raw"),
        "data_path": str(root / "processed"),
    }
    log_entries(db, hpc, [(dataset, fields)])
    job_id = submit(db, hpc, dataset=dataset, datafiles=names, datarawfiles=names)
    assert get_job(db, job_id)["datafiles"] == names

    tick_until(db, hpc, status_in(db, job_id, *FINAL))

    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    dest = root / "processed" / "results" / job_id
    assert_verified(job, dest, ["file_stats.json"])
    report = json.loads((dest / "file_stats.json").read_text())["files"]
    expected = {
        f"{folder}/{name}": sha256(root / sub / name)
        for name in names
        for folder, sub in (("data", "processed"), ("raw", "raw"))
    }
    assert {name: f["sha256"] for name, f in report.items()} == expected


@on_testbed
def test_metacharacters_in_an_option_arrive_verbatim(
    db: Database, hpc: Config, tmp_path: Path, marker: str
) -> None:
    # A committed copy of the lab's pipelines plus one module that writes down its options.
    repo = tmp_path / "code"
    pipelines = repo / "pipelines"
    shutil.copytree(hpc.watchdog.pipelines_dir, pipelines, ignore=shutil.ignore_patterns("__py*"))
    (pipelines / "echo_options.py").write_text(ECHO_OPTIONS)
    main = pipelines / "__main__.py"  # a fixed list of job types, or every top-level module
    main.write_text(main.read_text().replace("JOB_TYPES = (", 'JOB_TYPES = ("echo_options", ', 1))
    git = ["git", "-C", str(repo), "-c", "user.name=labctl tests", "-c", "user.email=t@lab"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "echo_options"]):
        subprocess.run([*git, *args], check=True)
    echo = JobTypeConfig(
        entry="echo_options", outputs=["options.json"], options={"label": OptionSpec(type="str")}
    )
    cfg = hpc.model_copy(
        update={
            "job_types": {**hpc.job_types, "echo": echo},
            "watchdog": hpc.watchdog.model_copy(update={"pipelines_dir": pipelines}),
        }
    )
    value = (
        f'it\'s "q" $(touch {marker}) `touch {marker}`; touch {marker} | cat && echo '
        "\\ * ? ~ > < & $HOME ${IFS} ../../etc/passwd -- ünï\nsecond line\t'"
    )
    job_id = submit(db, cfg, "echo", datafiles=["phase.h5"], job_options={"label": value})

    tick_until(db, cfg, status_in(db, job_id, *FINAL))

    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    dest = tmp_path / "data" / "processed" / "results" / job_id
    assert_verified(job, dest, ["options.json"])
    received = json.loads((dest / "options.json").read_text())
    assert received["dataset"] == DATASET
    assert received["options"]["label"] == value


@on_testbed
def test_dotdot_and_absolute_input_paths_are_refused(db: Database, hpc: Config) -> None:
    names = ["../raw/fl_a.roli", "a/../../x", "/etc/passwd", "//etc/passwd", "./../x", ".."]
    for name in names:
        for field, good in (("datafiles", "phase.h5"), ("datarawfiles", "fl_a.roli")):
            inputs: dict[str, Any] = {field: [good, name]}
            with pytest.raises(ValidationError, match="must be a path inside the dataset"):
                submit(db, hpc, **inputs)
    assert db.queue.count({}) == 0


@on_testbed
def test_symlinks_out_of_the_dataset_are_refused(
    db: Database, hpc: Config, tmp_path: Path, scratch: str
) -> None:
    processed = tmp_path / "data" / "processed"
    (processed / "passwd").symlink_to("/etc/passwd")
    (processed / "etc").symlink_to("/etc")
    for name in ("passwd", "etc/passwd"):
        with pytest.raises(ValidationError, match="leads outside"):
            submit(db, hpc, datafiles=[name])
    # a file swapped for such a link after submit is refused at scan, before anything moves
    job_id = submit(db, hpc, datafiles=["phase.h5"])
    (processed / "phase.h5").unlink()
    (processed / "phase.h5").symlink_to("/etc/passwd")

    assert run_stages(LocalStore.of(db, hpc), hpc, ["scan"]) == ["scan: failed 1"]
    job = get_job(db, job_id)
    assert job["failure"]["reason"] == "transfer"
    assert "leads outside" in job["failure"]["message"]
    assert job["transfer"] is None
    assert not remote_exists(f"{scratch}/{job_id}")


# Parsing output captured on the testbed (no testbed needed) --------------------------------------


def test_parse_named_reads_captured_squeue() -> None:
    named = parse_named((CAPTURED / "squeue-names.txt").read_text())
    assert named["labctl-jarray000000"] == [SlurmEntry("90", str(i), "COMPLETED") for i in range(4)]
    assert named["labctl-jpending0000"] == [SlurmEntry("91", "0-2", "PENDING")]
    assert named["labctl-jsingle00000"] == [SlurmEntry("92", None, "RUNNING")]
    with pytest.raises(ValueError, match=r"expected 'id\|tasks\|name\|state'"):
        parse_named("71|0|name\n")


def test_parse_progress_reads_a_resumed_transfer() -> None:
    # 314,572,800 random bytes, the first 106,921,984 kept on the cluster by --partial
    progress = parse_progress((CAPTURED / "rsync-resumed.raw").read_bytes())
    assert progress is not None
    assert (progress.bytes_done, progress.percent, progress.xfr) == (314_572_800, 99, 1)
    assert (progress.to_check_remaining, progress.to_check_total) == (0, 10)
    assert progress.total_bytes == 314_576_841  # with the pipelines code shipped alongside
    assert (progress.bytes_sent, progress.bytes_received) == (207_749_614, 72_469)
    # what was sent: the missing part plus block checksums, under 0.1 % more
    assert 0 < 207_749_614 - (314_576_841 - 106_921_984) < 314_576_841 // 1000
