"""Which errors are an outage of the cluster (the job waits, no retry spent) and which are the
job's own (its retries): ssh's diagnostics, rsync's exits, and what a stage does with each.

Real processes where they can run without the testbed: ssh and rsync against a port nothing
listens on. The outage on the real testbed (its sshd stopped and started) is in
test_outage_testbed.py.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from pathlib import Path

import pytest

from labctl.clock import utcnow
from labctl.compute.transport import (
    AuthError,
    CommandTimeoutError,
    ConnectError,
    HostKeyError,
    Result,
    SessionDownError,
    SSHTarget,
    TransferHandle,
    TransferState,
    TransferStatus,
    TransportError,
    outage_message,
    poll,
    rsync_argv,
    start_background,
)
from labctl.compute.transport.sessions import Sessions, could_not_connect, ssh_error
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import read_job, transition
from labctl.model.job import NoticeEvent, Transfer
from labctl.model.states import FailureReason, JobState
from labctl.stages import stage_run
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import local_jobs
from tests.test_stages import dead_cluster, submit

REFUSED = "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n"

# ssh's own words when it could not connect at all (OpenSSH 9.x): an outage.
NO_CONNECTION = [
    REFUSED,
    "ssh: connect to host hpc.example.org port 22: Connection timed out\r\n",
    "ssh: connect to host 10.1.2.3 port 22: No route to host\r\n",
    "ssh: connect to host 10.1.2.3 port 22: Network is unreachable\r\n",
    "ssh: Could not resolve hostname raven.mpcdf.mpg.de: Temporary failure in name resolution\r\n",
    "kex_exchange_identification: read: Connection reset by peer\r\n"
    "Connection reset by 127.0.0.1 port 2222\r\n",
    "kex_exchange_identification: Connection closed by remote host\r\n"
    "Connection closed by 127.0.0.1 port 2222\r\n",
    "Connection timed out during banner exchange\r\nConnection to 10.1.2.3 port 22 timed out\r\n",
    "channel 0: open failed: connect failed: Connection refused\r\n"
    "stdio forwarding failed\r\nConnection closed by UNKNOWN port 65535\r\n",
]

# Not an outage: what a job, its files or a person must fix (or what the job's command said).
NOT_AN_OUTAGE = [
    "hpcuser@127.0.0.1: Permission denied (publickey).\r\n",
    "Host key verification failed.\r\n",
    "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n",
    'rsync: [sender] link_stat "/data/x.h5" failed: No such file or directory (2)\n',
    "rsync: [receiver] mkstemp failed: Disk quota exceeded (122)\n",
    "Bad owner or permissions on /root/.ssh/config\r\n",
]


def key_target(tmp_path: Path) -> SSHTarget:
    return SSHTarget("dead", "127.0.0.1", str(tmp_path), user="nobody", port=1)


def ssh_failed(stderr: str) -> Result:
    return Result(("ssh",), 255, "", stderr)


@pytest.mark.parametrize("stderr", NO_CONNECTION)
def test_ssh_that_could_not_connect_is_an_outage(tmp_path: Path, stderr: str) -> None:
    assert could_not_connect(stderr)
    assert isinstance(ssh_error(key_target(tmp_path), ssh_failed(stderr)), ConnectError)


@pytest.mark.parametrize("stderr", NOT_AN_OUTAGE)
def test_what_a_person_or_the_job_must_fix_is_no_outage(tmp_path: Path, stderr: str) -> None:
    assert not could_not_connect(stderr)
    error = ssh_error(key_target(tmp_path), ssh_failed(stderr))
    assert not isinstance(error, ConnectError)


def test_ssh_refusing_its_own_files_fails_at_once(tmp_path: Path) -> None:
    stderr = "Bad owner or permissions on /root/.ssh/config\r\n"
    error = ssh_error(key_target(tmp_path), ssh_failed(stderr))
    assert type(error) is TransportError and not error.transient
    assert str(error) == "ssh refuses its own files: Bad owner or permissions on /root/.ssh/config"


def wait_for_exit(handle: TransferHandle) -> TransferStatus:
    """The transfer's status once it has ended (its status written and its log let go)."""
    deadline = time.monotonic() + 20
    while (status := poll(handle)).state is TransferState.RUNNING:
        assert time.monotonic() < deadline, Path(handle.log_path).read_text()
        time.sleep(0.05)
    return status


def test_a_real_rsync_that_could_not_connect_is_an_outage(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    argv = rsync_argv([f"{tmp_path / 'src'}/"], "/tmp/x/", target=key_target(tmp_path))
    handle = start_background(argv, tmp_path / "rsync.log")
    status = wait_for_exit(handle)
    assert status.state is TransferState.FAILED and status.exit_code in (12, 255)  # either
    assert status.unreachable and status.transient
    assert status.message == "ssh: connect to host 127.0.0.1 port 1: Connection refused"


def test_a_real_rsync_that_failed_on_its_files_is_the_job_s_error(tmp_path: Path) -> None:
    argv = rsync_argv([str(tmp_path / "missing")], str(tmp_path / "dest"))
    handle = start_background(argv, tmp_path / "rsync.log")
    status = wait_for_exit(handle)
    assert status.state is TransferState.FAILED and status.exit_code == 23
    assert not status.unreachable and not status.transient


def test_an_outage_is_dated_from_when_it_was_first_noted_until_the_cluster_answers(
    tmp_path: Path,
) -> None:
    sessions, target = Sessions(), key_target(tmp_path)
    first = sessions.down_since(target)
    time.sleep(1.1)
    assert sessions.down_since(target) == first  # the same outage: the same message
    assert outage_message("dead", first) == (
        f"waiting for dead: unreachable since {first:%Y-%m-%d %H:%M:%S} UTC; "
        "it goes on by itself once the cluster is back"
    )
    assert abs(first - dt.datetime.now(dt.UTC)).total_seconds() < 3


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    base = local_jobs(config, db, tmp_path)
    clusters = {**base.clusters, "dead": dead_cluster(tmp_path)}
    return base.model_copy(update={"clusters": clusters})


@pytest.mark.parametrize(
    ("error", "waits", "retries", "state"),
    [
        (ConnectError("cannot reach dead: ssh: connect to host ..."), "unreachable since", 0, "q"),
        (SessionDownError("no session to dead"), "waiting for a session to dead", 0, "q"),
        (CommandTimeoutError("sbatch timed out after 120 s"), None, 1, "q"),
        (TransportError("publishing the pipelines code on dead failed: disk full"), None, 1, "f"),
        (AuthError("127.0.0.1 rejected key /k (publickey)"), None, 1, "f"),
        (HostKeyError("the host key of dead changed"), None, 1, "f"),
    ],
)
def test_a_setback_waits_for_the_cluster_or_spends_the_job_s_retries(
    db: Database,
    cfg: Config,
    error: TransportError,
    waits: str | None,
    retries: int,
    state: str,
) -> None:
    job_id = submit(db, cfg, compute_cluster="dead")
    for _ in range(3 if waits else 1):  # waiting again and again spends nothing
        with stage_run(LocalStore.of(db, cfg), cfg, "scan") as run:
            run.setback(read_job(db, job_id), error, FailureReason.SUBMIT)
    job = read_job(db, job_id)
    assert job.status is (JobState.QUEUED if state == "q" else JobState.FAILED)
    assert job.retries == retries  # (a failed job records the try it failed on)
    if waits is None:
        assert job.waiting is None and not job.notices.get("outage")
    else:
        assert job.waiting is not None and waits in job.waiting
        [notice] = job.notices.values()  # told once, however often it waits
        outage = "unreachable" in waits
        assert notice.event is (NoticeEvent.OUTAGE if outage else NoticeEvent.SESSION)


def test_an_rsync_cut_by_an_outage_resumes_for_free_once_the_cluster_is_back(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job_id = submit(db, cfg, compute_cluster="dead")
    log = tmp_path / "rsync.log"
    argv = rsync_argv([f"{tmp_path}/"], "/tmp/nowhere/job/", target=key_target(tmp_path))
    handle = start_background(argv, log)
    wait_for_exit(handle)
    transfer = Transfer(
        host=socket.gethostname(),
        argv=argv,
        pid=handle.pid,
        log=handle.log_path,
        status_path=handle.status_path,
        started_at=utcnow(),
    )
    transition(db, read_job(db, job_id), JobState.TRANSFERRING, fields={"transfer": transfer})
    for _ in range(cfg.watchdog.max_retries + 2):  # more runs than it has attempts
        run_stages(LocalStore.of(db, cfg), cfg, ["transfers"])
    job = read_job(db, job_id)
    assert job.status is JobState.TRANSFERRING and job.retries == 0
    assert job.waiting is not None and "waiting for dead: unreachable since" in job.waiting
    assert job.transfer is not None
    assert (job.transfer.resume, job.transfer.free_resume) == (True, True)
    assert job.transfer.attempts == 1 and job.transfer.pid == handle.pid  # none started meanwhile
    assert not [h.note for h in job.history if "retry" in h.note or "resumed" in h.note]
