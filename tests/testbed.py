"""Helpers for tests on the real sshd + SLURM testbed (scripts/testbed.sh, then source env.sh).

`hpc_config` adds a cluster `hpc` (type ssh, SLURM with slurmdbd accounting, or the jobcomp log
on a testbed started with WITH_DBD=0; partition debug)
whose scratch root is a fresh folder on the testbed (`remote_scratch`, removed at the end).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from labctl.compute.transport import SSHTarget, private_dir
from labctl.config import ClusterConfig, Config
from labctl.config.jobtypes import Resources
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import job_config

HOST = os.environ.get("HPC_SSH_HOST")
needs_testbed = pytest.mark.skipif(
    HOST is None, reason="HPC_SSH_HOST unset: run scripts/testbed.sh and source its env.sh"
)
ACCOUNTING = "jobcomp" if os.environ.get("HPC_WITH_DBD", "1") == "0" else "slurmdbd"
"""How the testbed accounts for finished jobs (scripts/testbed.sh WITH_DBD)."""
TICK = ["scan", "transfers", "jobs"]
SQUEUE_NAMES = ["squeue", "--noheader", "--states=all", "--format=%F|%K|%j|%T"]
"""Every job SLURM still remembers: array job id (the plain id if none), task(s), name, state."""


def ssh(argv: list[str], *, check: bool = True, timeout: float = 60) -> str:
    """Run argv (each argument quoted) as the cluster user on the testbed; return its stdout."""
    done = subprocess.run(
        ["ssh", "-F", os.environ["HPC_SSH_CONFIG"], "hpc", shlex.join(argv)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


ACCEPTED = re.compile(r"^Accepted \S+ for \S+ from ", re.MULTILINE)


def sshd_logins(log: Path) -> int:
    """How many logins (any authentication method) an sshd's `-E` log records so far."""
    return len(ACCEPTED.findall(log.read_text(errors="replace")))


def remote_exists(path: str) -> bool:
    return ssh(["sh", "-c", 'test -e "$1" && echo yes || echo no', "exists", path]) == "yes\n"


@contextmanager
def remote_scratch() -> Iterator[str]:
    """A fresh scratch root on the testbed (/home/hpcuser/labctl-it-<random>), removed after
    (the shared copies of the pipelines code in it are read-only)."""
    path = f"/home/{os.environ['HPC_SSH_USER']}/labctl-it-{uuid.uuid4().hex[:10]}"
    ssh(["mkdir", "-p", path])
    try:
        yield path
    finally:
        ssh(["sh", "-c", 'chmod -R u+w -- "$1"; rm -rf -- "$1"', "rm", path], check=False)


def hpc_cluster(scratch: str) -> ClusterConfig:
    assert HOST is not None
    return ClusterConfig(
        type="ssh",
        host=HOST,
        port=int(os.environ["HPC_SSH_PORT"]),
        user=os.environ["HPC_SSH_USER"],
        key_file=Path(os.environ["HPC_SSH_KEY"]),
        known_hosts=Path(os.environ["HPC_KNOWN_HOSTS"]),
        scratch=scratch,
        accounting=ACCOUNTING,
        python="/usr/bin/python3",
        resources=Resources(time="00:10:00", cpus=1, partition="debug"),
    )


def mfa_gateway() -> str:
    """The testbed's gateway as a ProxyJump hop."""
    env = os.environ
    return f"{env['HPC_GW_USER']}@{env['HPC_GW_HOST']}:{env['HPC_GW_PORT']}"


def mfa_cluster(scratch: str, *, via_gateway: bool = True, **changes: Any) -> ClusterConfig:
    """The testbed's MPCDF-like login host as an `interactive` cluster (password + OTP, no
    keys), through the gateway unless told otherwise; SLURM as for `hpc_cluster`."""
    env = os.environ
    settings: dict[str, Any] = {
        "type": "ssh",
        "host": env["HPC_MFA_HOST"],
        "port": int(env["HPC_MFA_PORT"]),
        "user": env["HPC_MFA_USER"],
        "auth": "interactive",
        "proxy_jump": [mfa_gateway()] if via_gateway else [],
        "known_hosts": env["HPC_KNOWN_HOSTS"],
        "scratch": scratch,
        "accounting": ACCOUNTING,
        "python": "/usr/bin/python3",
        "resources": Resources(time="00:10:00", cpus=1, partition="debug"),
    }
    return ClusterConfig.model_validate({**settings, **changes})


def key_target(directory: Path, **changes: Any) -> SSHTarget:
    """The testbed's key account as an SSH target with sessions in `directory`."""
    settings: dict[str, Any] = {
        "name": "hpc",
        "host": os.environ["HPC_SSH_HOST"],
        "directory": str(private_dir(directory)),
        "port": int(os.environ["HPC_SSH_PORT"]),
        "user": os.environ["HPC_SSH_USER"],
        "key_file": os.environ["HPC_SSH_KEY"],
        "known_hosts": os.environ["HPC_KNOWN_HOSTS"],
    }
    return SSHTarget(**{**settings, **changes})


def hpc_config(base: Config, scratch: str, state: Path, **watchdog: Any) -> Config:
    """`base` with the job types of tests.jobfixtures, the cluster `hpc` and a local watchdog."""
    config = job_config(base, state / "local-scratch", hpc=hpc_cluster(scratch))
    settings = {"state_dir": state / "watchdog", "backoff_seconds": 0, **watchdog}
    return config.model_copy(update={"watchdog": config.watchdog.model_copy(update=settings)})


def write_config(config: Config, path: Path) -> Path:
    """Save `config` as the YAML file a `labctl --config` process reads."""
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    path.chmod(0o600)
    return path


def pulls(scratch: str) -> list[int]:
    """The pids of the watchdog's rsyncs bringing outputs home from `scratch`: one per pull,
    whatever children each has forked so far (a child's parent is an rsync of the same pull)."""
    found = subprocess.run(["pgrep", "-f", f"rsync .*--files-from=- .*{scratch}/[.]pull-"],
                           capture_output=True, text=True)  # fmt: skip
    pids = {int(pid) for pid in found.stdout.split()}
    return sorted(pid for pid in pids if _parent(pid) not in pids)


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None  # gone meanwhile
    return int(stat.rpartition(")")[2].split()[1])


def tick_until(
    db: Database,
    config: Config,
    done: Callable[[], bool],
    *,
    timeout: float = 60,
    pause: float = 0.2,
    stages: list[str] | None = None,
) -> int:
    """Run the watchdog stages until `done()`; fail after `timeout` s; return the runs made."""
    deadline = time.monotonic() + timeout
    runs = 0
    while not done():
        if time.monotonic() > deadline:
            states = [(j["job_id"], j["status"], j.get("waiting")) for j in db.queue.find({})]
            raise AssertionError(f"not done after {timeout} s and {runs} runs: {states}")
        run_stages(LocalStore.of(db, config), config, stages or TICK)
        runs += 1
        if not done():
            time.sleep(pause)
    return runs


def status_in(db: Database, job_id: str, *states: str) -> Callable[[], bool]:
    return lambda: get_job(db, job_id)["status"] in states


@dataclass(frozen=True)
class SlurmEntry:
    """One line of `SQUEUE_NAMES`: a job, an array task, or a pending array's task range."""

    job_id: str  # the array's job id for array tasks
    tasks: str | None  # None for a plain job; "2" for one task; "0-3" for pending tasks
    state: str


def parse_named(text: str) -> dict[str, list[SlurmEntry]]:
    """The output of `SQUEUE_NAMES`, grouped by job name."""
    named: dict[str, list[SlurmEntry]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 4:
            raise ValueError(f"expected 'id|tasks|name|state', got {line!r}")
        job_id, tasks, name, state = fields
        entry = SlurmEntry(job_id, None if tasks == "N/A" else tasks, state)
        named.setdefault(name, []).append(entry)
    return named


def slurm_jobs_named(names: Collection[str]) -> dict[str, list[SlurmEntry]]:
    """What SLURM knows of the jobs with these names (one squeue call)."""
    named = parse_named(ssh(SQUEUE_NAMES))
    return {name: named.get(name, []) for name in names}
