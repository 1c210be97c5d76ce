"""What the benchmarks share: a throwaway config and store, the testbed cluster, medians.

Run the benchmarks from the repository root as modules (`python -m benchmarks.bench_tick`), or
all of them with `bash benchmarks/run.sh`.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

from labctl.compute.cluster import ssh_target
from labctl.compute.transport import SSHRunner
from labctl.config import ClusterConfig, Config, DatabaseConfig, WatchdogConfig
from tests.testbed import hpc_cluster

DATASET = "20211215_093527"
TICK = ["scan", "transfers", "jobs"]
TESTBED_HINT = "HPC_SSH_HOST unset: run scripts/testbed.sh and source its env.sh"


def bench_config(tmp: Path, **clusters: ClusterConfig) -> Config:
    """An embedded store and watchdog folders under `tmp`, a `local` cluster (plain processes)
    plus `clusters`; the job types are those the shipped pipelines declare (`file_stats`)."""
    local = ClusterConfig(type="local", scratch=str(tmp / "scratch"), scheduler="process")
    return Config(
        user="bench",
        database=DatabaseConfig(path=tmp / "store"),
        clusters={"local": local, **clusters},
        watchdog=WatchdogConfig(
            state_dir=tmp / "state", log_dir=tmp / "logs", backoff_seconds=0, max_retries=0
        ),
    )


def testbed_cluster(scratch: str) -> ClusterConfig | None:
    """The testbed of scripts/testbed.sh as an ssh cluster (SLURM, jobcomp accounting), the same
    one the integration tests use, or None when its env.sh is not sourced."""
    return hpc_cluster(scratch) if os.environ.get("HPC_SSH_HOST") else None


def testbed_home() -> str:
    return f"/home/{os.environ['HPC_SSH_USER']}"


@contextmanager
def testbed_shell() -> Iterator[SSHRunner]:
    """A labctl SSH runner on the testbed, for the benchmarks' own setup and cleanup."""
    cluster = testbed_cluster(testbed_home())
    assert cluster is not None, TESTBED_HINT
    target = ssh_target("hpc", cluster)
    assert target is not None
    runner = SSHRunner(target)
    try:
        yield runner
    finally:
        runner.close()


@contextmanager
def remote_scratch(shell: SSHRunner) -> Iterator[str]:
    """A fresh folder on the testbed (~/labctl-bench-<random>), removed at the end (the shared
    copies of the pipelines code in it are read-only)."""
    path = f"{testbed_home()}/labctl-bench-{uuid4().hex[:10]}"
    shell.run(["mkdir", "-p", "--", path])
    try:
        yield path
    finally:
        remove = 'chmod -R u+w -- "$1"; rm -rf -- "$1"'
        shell.run(["sh", "-c", remove, "rm", path], check=False, timeout=300)


@contextmanager
def held_jobs(shell: SSHRunner, count: int) -> Iterator[list[str]]:
    """`count` real SLURM jobs on the testbed, submitted on hold: pending and never started, so
    they take no CPU from anyone else's tests. Cancelled at the end."""
    submit = (
        'for i in $(seq "$1"); do sbatch --hold --parsable --job-name="$2" --partition=debug '
        '--time=00:10:00 --output=/dev/null --wrap="sleep 600" || exit; done'
    )
    name = f"labctl-bench-{uuid4().hex[:8]}"
    done = shell.run(["sh", "-c", submit, "submit", str(count), name], check=False, timeout=600)
    ids = [line.split(";")[0] for line in done.stdout.split()]
    try:
        if done.returncode != 0:
            raise RuntimeError(f"sbatch failed after {len(ids)} jobs: {done.stderr.strip()}")
        yield ids
    finally:
        if ids:
            shell.run(["scancel", *ids], check=False, timeout=300)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """`min-max` of a series, to show the noise next to its median."""
    return f"{min(values):.2f}-{max(values):.2f}"
