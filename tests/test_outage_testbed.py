"""A maintenance window on the real testbed: the cluster's sshd stopped for longer than all of a
job's retries would last, then started again. Nothing fails, every job completes, and the member
is told once.

The sshd is a private one (the testbed's host keys, the cluster user's authorized key) on a
port of its own, so that stopping it stops nobody else's tests; SLURM is the testbed's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.compute.cluster import ssh_target
from labctl.compute.transport import Sessions
from labctl.config import Config, DatabaseConfig
from labctl.config.notifyconfig import NotifyConfig, SmtpConfig
from labctl.db import Database, connect
from labctl.jobs.queue import read_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.states import TERMINAL, JobState
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from labctl.users import add_user
from tests.jobfixtures import DATASET, dataset_with_files
from tests.notifyfixtures import Mailbox, free_port, smtp_server
from tests.testbed import TICK, hpc_config, needs_testbed, remote_scratch

pytestmark = [pytest.mark.testbed, needs_testbed]

OUTAGE_SECONDS = 60
"""Longer than the default 5 retries at `backoff_seconds: 1` (1 + 2 + 4 + 8 + 16 s)."""


class PrivateSshd:
    """The testbed's key login on a port of its own: started, stopped hard, started again."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "/usr/sbin/sshd", "-D", "-p", str(self.port), "-o", "ListenAddress=127.0.0.1",
            "-o", "AuthenticationMethods=publickey", "-o", "PasswordAuthentication=no",
            "-o", "PidFile=none", "-E", str(self.log),
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, start_new_session=True)
        scan = ["ssh-keyscan", "-p", str(self.port), "127.0.0.1"]
        deadline = time.monotonic() + 10
        while not subprocess.run(scan, capture_output=True, check=False).stdout:
            assert time.monotonic() < deadline, "the private sshd did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        """What a maintenance window does: the daemon and every connection it serves end."""
        if self.process is None:
            return
        listener = self.process.pid
        served = Path(f"/proc/{listener}/task/{listener}/children").read_text().split()
        os.killpg(listener, signal.SIGKILL)
        for pid in map(int, served):  # each connection: its monitor and what it forked
            with contextlib.suppress(ProcessLookupError):  # in the listener's group: gone
                os.killpg(pid, signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[PrivateSshd]:
    server = PrivateSshd(free_port(), tmp_path / "sshd.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def known_hosts(port: int, path: Path) -> Path:
    """The testbed's host keys, as this port offers them."""
    lines = []
    for kind in ("ed25519", "ecdsa", "rsa"):
        key = Path(f"/etc/ssh/ssh_host_{kind}_key.pub").read_text().split()[:2]
        lines.append(f"[127.0.0.1]:{port} {' '.join(key)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def setup(tmp_path: Path, sshd: PrivateSshd) -> Iterator[tuple[Database, Config, Mailbox]]:
    """The embedded store, the member with an e-mail address, and the cluster `hpc` reached
    through the private sshd, with backoff_seconds 1 and the default max_retries."""
    base = Config(user="tester", database=DatabaseConfig(uri="embedded", path=tmp_path / "store"))
    with remote_scratch() as scratch, smtp_server() as (box, port):
        cfg = hpc_config(base, scratch, tmp_path, backoff_seconds=1, max_retries=5)
        cluster = cfg.clusters["hpc"].model_copy(
            update={"port": sshd.port, "known_hosts": known_hosts(sshd.port, tmp_path / "kh")}
        )
        smtp = SmtpConfig(
            host="127.0.0.1", port=port, security="none", from_address="labctl@lab.org"
        )
        cfg = cfg.model_copy(
            update={
                "clusters": {**cfg.clusters, "hpc": cluster},
                "notify": NotifyConfig(smtp=smtp, backoff_seconds=0),
            }
        )
        with connect(cfg.database) as db:
            add_user(db, "tester", email="tester@lab.org")
            dataset_with_files(db, cfg, tmp_path / "data")
            yield db, cfg, box


def submit(db: Database, cfg: Config, sleep: float) -> str:
    request = JobRequest(
        dataset=DATASET,
        compute_cluster="hpc",
        job_type="selftest",
        job_options={"sleep_seconds": sleep},
    )
    return str(submit_job(db, cfg, request, force=True)["job_id"])


def tick(db: Database, cfg: Config) -> None:
    run_stages(LocalStore.of(db, cfg), cfg, TICK)


def test_a_maintenance_window_fails_nothing_and_is_told_once(
    setup: tuple[Database, Config, Mailbox], sshd: PrivateSshd
) -> None:
    db, cfg, box = setup
    at_slurm = [submit(db, cfg, sleep=15), submit(db, cfg, sleep=15)]
    deadline = time.monotonic() + 90
    while any(read_job(db, j).status not in (JobState.PENDING, JobState.RUNNING) for j in at_slurm):
        assert time.monotonic() < deadline, [read_job(db, j).status for j in at_slurm]
        tick(db, cfg)
        time.sleep(0.3)
    queued = [submit(db, cfg, sleep=0), submit(db, cfg, sleep=0)]  # to ship during the outage
    jobs = at_slurm + queued

    target = ssh_target("hpc", cfg.clusters["hpc"])
    assert target is not None
    master = Sessions().status(target).pid
    sshd.stop()
    if master is not None:  # gone with its connection, or now
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGKILL)
    down = time.monotonic()
    runs = 0
    while time.monotonic() - down < OUTAGE_SECONDS:
        tick(db, cfg)
        runs += 1
        time.sleep(0.5)
    during = [read_job(db, j) for j in jobs]
    assert all(j.status not in TERMINAL for j in during), [(j.job_id, j.failure) for j in during]
    assert [j.status for j in during[2:]] == [JobState.QUEUED] * 2
    assert all(j.retries == 0 for j in during), [(j.job_id, j.retries) for j in during]
    waiting = {j.waiting for j in during}
    assert len(waiting) == 1, waiting  # one outage, one message on every job
    [message] = waiting
    assert message is not None and message.startswith("waiting for hpc: unreachable since ")
    told = [s for s in box.subjects() if "cannot be reached" in s]
    assert told == ["[labctl] 4 job(s) wait for cluster hpc: it cannot be reached"], (
        box.subjects(),
        runs,
    )

    sshd.start()
    deadline = time.monotonic() + 180
    while any(read_job(db, j).status not in TERMINAL for j in jobs):
        assert time.monotonic() < deadline, [
            (j, read_job(db, j).status, read_job(db, j).waiting) for j in jobs
        ]
        tick(db, cfg)
        time.sleep(0.5)
    done = [read_job(db, j) for j in jobs]
    assert [j.status for j in done] == [JobState.COMPLETED] * 4, [
        (j.job_id, j.status, j.failure) for j in done
    ]
    assert all(j.retries == 0 and j.waiting is None for j in done)
    assert not [h.note for j in done for h in j.history if "retry" in h.note]
    told = [s for s in box.subjects() if "cannot be reached" in s]
    assert len(told) == 1, box.subjects()  # the member was told once of the outage
