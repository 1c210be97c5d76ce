"""sbatch, squeue and sacct over ssh against the real testbed (scripts/testbed.sh)."""

import dataclasses
import os
import shlex
import subprocess
import time

import pytest

from labctl.compute.slurm import (
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    sacct_command,
    squeue_command,
)
from labctl.model.job import TaskStatus
from labctl.model.states import FailureReason, JobState

pytestmark = pytest.mark.testbed

SSH_CONFIG = os.environ.get("HPC_SSH_CONFIG")


def jobcomp_open_to_the_cluster_user() -> None:
    """What scripts/testbed.sh sets up, once more: the cluster user's `sacct --completion` opens
    the jobcomp log for writing, and root's own (this machine's `local` cluster, in other tests
    run as root) sets it back to 0644."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    [path] = [
        line.split("=", 1)[1].strip()
        for line in config.stdout.splitlines()
        if line.startswith("JobCompLoc ")
    ]
    os.chmod(path, 0o666)


def ssh(argv: list[str]) -> str:
    """Run argv as the cluster user on the testbed's `hpc` host; return its stdout."""
    assert SSH_CONFIG is not None
    done = subprocess.run(
        ["ssh", "-F", SSH_CONFIG, "hpc", shlex.join(argv)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def wait_until_finished(job_ids: list[str], timeout: float = 60) -> dict[str, TaskStatus]:
    """Poll squeue, one call for all jobs, until none of them is pending or running."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = parse_squeue(ssh(squeue_command(job_ids)))
        if all(s.state not in (JobState.PENDING, JobState.RUNNING) for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"jobs {job_ids} still not finished after {timeout} s: {statuses}")
        time.sleep(0.5)


@pytest.mark.skipif(
    SSH_CONFIG is None, reason="HPC_SSH_CONFIG unset: run scripts/testbed.sh, source its env.sh"
)
def test_jobs_run_and_end_as_parsed() -> None:
    ok = parse_sbatch(ssh(["sbatch", "--parsable", "--wrap", "true"]))
    bad = parse_sbatch(ssh(["sbatch", "--parsable", "--wrap", "exit 3"]))
    array = parse_sbatch(ssh(["sbatch", "--parsable", "--array=0-1", "--wrap", "true"]))

    statuses = wait_until_finished([ok, bad, array])

    assert statuses.keys() == {ok, bad, f"{array}_0", f"{array}_1"}
    assert statuses[ok] == TaskStatus(ok, JobState.RETRIEVING, None, "COMPLETED", 0)
    assert statuses[bad] == TaskStatus(bad, JobState.FAILED, FailureReason.EXIT_CODE, "FAILED", 3)
    assert statuses[f"{array}_1"].state is JobState.RETRIEVING
    assert statuses[f"{array}_1"].array_task == 1

    def plain(found: dict[str, TaskStatus]) -> dict[str, TaskStatus]:
        return {key: dataclasses.replace(s, usage=None) for key, s in found.items()}

    jobcomp_open_to_the_cluster_user()
    logged = parse_sacct(ssh(sacct_command([ok, bad], since_seconds=600, jobcomp=True)))
    assert plain(logged) == {ok: statuses[ok], bad: statuses[bad]}
    if os.environ.get("HPC_WITH_DBD") != "1":
        return
    # slurmdbd: every task of the array, each with its usage
    deadline = time.monotonic() + 10
    while True:
        accounted = parse_sacct(ssh(sacct_command([ok, bad, array], since_seconds=600)))
        usage = {key: s.usage for key, s in accounted.items()}
        complete = accounted.keys() == statuses.keys()  # every task recorded already
        if complete and all(u is not None and u.req_mem_bytes for u in usage.values()):
            break
        assert time.monotonic() < deadline, usage  # slurmdbd's record is complete in a moment
        time.sleep(0.5)
    assert plain(accounted) == statuses
    for key, record in usage.items():
        assert record is not None and record.task == key and record.nodes == "localhost"
        assert record.submit and record.start and record.end and record.submit <= record.end
    assert usage[bad] is not None and usage[bad].exit_code == 3
