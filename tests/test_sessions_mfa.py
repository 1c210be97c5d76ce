"""Sessions to an MPCDF-like cluster on the real testbed: password + one-time password, no keys,
through a gateway. `labctl connect` runs on a real pseudo-terminal where the test types what a
person would; then the watchdog runs whole jobs on the session without a prompt.

The MFA login host and the gateway are sshds of scripts/testbed.sh (PAM: pam_unix + pam_oath,
HOTP codes so that tests may log in often); their users live on the same SLURM node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.compute.cluster import ssh_target
from labctl.compute.transport import Sessions, SSHTarget, parse_progress
from labctl.config import Config, DatabaseConfig
from labctl.db import Database, connect
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from tests.jobfixtures import DATASET, dataset_with_files, job_config
from tests.mfa import connect_answers, fresh_totp, login_answers, run_on_pty
from tests.testbed import (
    mfa_cluster,
    mfa_gateway,
    slurm_jobs_named,
    sshd_logins,
    status_in,
    tick_until,
    write_config,
)

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.skipif("HPC_MFA_PORT" not in os.environ, reason="no MFA testbed (testbed.sh)"),
]
LABCTL = str(Path(sys.executable).parent / "labctl")
FINAL = ("completed", "failed", "cancelled")


def env(name: str) -> str:
    return os.environ[f"HPC_{name}"]


@pytest.fixture
def scratch() -> Iterator[str]:
    """A job root in the MFA user's home (the same machine: made and removed as root)."""
    user = env("MFA_USER")
    path = f"/home/{user}/labctl-it-{uuid.uuid4().hex[:10]}"
    subprocess.run(["install", "-d", "-o", user, "-g", user, path], check=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mfa(tmp_path: Path, scratch: str) -> Iterator[tuple[Database, Config, Path]]:
    """An embedded store with the dataset, a config whose cluster `mfa` is reached through the
    gateway, and that config as a file for `labctl` processes. The session is closed after."""
    base = Config(user="tester", database=DatabaseConfig(path=tmp_path / "store"))
    config = job_config(base, tmp_path / "local-scratch", mfa=mfa_cluster(scratch))
    config = config.model_copy(
        update={"watchdog": config.watchdog.model_copy(update={"lease_seconds": 10})}
    )
    path = write_config(config, tmp_path / "config.yaml")
    with connect(config.database) as db:
        dataset_with_files(db, config, tmp_path / "data")
        yield db, config, path
    target = ssh_target("mfa", config.clusters["mfa"])
    assert target is not None
    Sessions().close(target)


def target_of(config: Config) -> SSHTarget:
    target = ssh_target("mfa", config.clusters["mfa"])
    assert target is not None
    return target


def labctl(path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A labctl process as cron runs one: no terminal, stdin closed."""
    return subprocess.run(
        [LABCTL, "--config", str(path), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def connect_on_terminal(path: Path, answers: list[tuple[str, str]], *extra: str) -> Any:
    """`labctl connect mfa` on a pseudo-terminal, answering the prompts as a person would."""
    return run_on_pty([LABCTL, "--config", str(path), "connect", "mfa", *extra], answers)


def submit(db: Database, config: Config, **fields: Any) -> str:
    request = JobRequest(dataset=DATASET, compute_cluster="mfa", job_type="file_stats", **fields)
    return str(submit_job(db, config, request, force=True)["job_id"])


def logins() -> tuple[int, int]:
    """Logins so far on the MFA host and on the gateway."""
    return sshd_logins(Path(env("MFA_LOG"))), sshd_logins(Path(env("GW_LOG")))


def test_connect_through_the_gateway_then_jobs_run_without_a_prompt(
    mfa: tuple[Database, Config, Path], tmp_path: Path
) -> None:
    db, config, path = mfa
    before = logins()
    done = connect_on_terminal(path, connect_answers())
    assert done.returncode == 0, done
    assert (
        f"connected to mfa through {mfa_gateway()}: the session stays open until" in done.transcript
    )
    assert logins() == (before[0] + 1, before[1] + 1)  # one login on each: gateway, then host

    listed = json.loads(labctl(path, "connections", "--json").stdout)
    assert [(s["cluster"], s["up"], s["via"], s["auth"]) for s in listed] == [
        ("mfa", True, mfa_gateway(), "interactive")
    ]
    jobs = [submit(db, config), submit(db, config, datarawfiles=["fl_a.roli"])]
    tick_until(db, config, lambda: all(get_job(db, j)["status"] in FINAL for j in jobs), timeout=90)
    for job_id in jobs:
        job = get_job(db, job_id)
        assert job["status"] == "completed", job.get("failure")
        for result in job["results"]:
            assert Path(result["path"]).stat().st_size == result["size"]
    assert logins() == (before[0] + 1, before[1] + 1)  # the whole jobs rode the one session
    seen = db.meta.find({"kind": "cluster_session"}, ["cluster", "up", "via"])
    assert seen == [{"cluster": "mfa", "up": True, "via": mfa_gateway()}]

    closed = labctl(path, "disconnect", "mfa")
    assert closed.returncode == 0 and "closed the session to mfa" in closed.stdout
    assert json.loads(labctl(path, "connections", "--json").stdout)[0]["up"] is False


def test_wrong_otp_is_one_clear_line_and_changes_nothing(
    mfa: tuple[Database, Config, Path],
) -> None:
    _, config, path = mfa
    *gateway, password, otp = connect_answers()
    answers = [*gateway, password, (otp[0], "000000")]
    done = run_on_pty([LABCTL, "--config", str(path), "connect", "mfa"], answers,
                      require_all=False)  # fmt: skip
    assert done.returncode == 1, done
    errors = [line.strip() for line in done.transcript.splitlines() if "error:" in line]
    assert errors == [
        "error: mfa refused the login: wrong password or one-time password? Nothing was "
        "changed; run `labctl connect mfa` again"
    ]
    assert "Traceback" not in done.transcript
    target = target_of(config)
    assert not Sessions().status(target).up
    assert not target.control_path.exists()


def test_a_cron_run_on_a_down_session_waits_at_once_without_a_prompt(
    mfa: tuple[Database, Config, Path],
) -> None:
    db, config, path = mfa
    job_id = submit(db, config)
    before = logins()
    start = time.monotonic()
    done = labctl(path, "watchdog", "tick", timeout=30)
    assert time.monotonic() - start < 15
    assert done.returncode == 0, done.stderr
    assert "waiting for mfa 1" in done.stdout
    assert logins() == before  # not even a failed attempt reached the host or the gateway
    job = get_job(db, job_id)
    assert job["status"] == "queued" and job.get("retries", 0) == 0
    assert job["waiting"] == "waiting for a session to mfa: run `labctl connect mfa`"
    assert "waiting for a session to mfa" in labctl(path, "queue").stdout
    doctor = json.loads(labctl(path, "doctor", "--json").stdout)
    session = next(c for c in doctor["checks"] if c["name"] == "mfa: session")
    assert session["ok"] is False and session["hint"] == "labctl connect mfa"

    assert connect_on_terminal(path, connect_answers()).returncode == 0
    tick_until(db, config, status_in(db, job_id, *FINAL), timeout=90)
    job = get_job(db, job_id)
    assert job["status"] == "completed" and job["waiting"] is None


def reboot_mfa_gateway() -> None:
    """What a gateway's weekly reboot does to sessions through it: its sshd and every connection
    it serves end; then it comes back (scripts/testbed.sh starts what is not running)."""
    listener = int(Path("/run/sshd-gw.pid").read_text())
    served = Path(f"/proc/{listener}/task/{listener}/children").read_text().split()
    os.kill(listener, signal.SIGKILL)
    for pid in map(int, served):  # each connection: its monitor and the child it forked
        os.killpg(pid, signal.SIGKILL)
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(["bash", str(repo / "scripts" / "testbed.sh")], check=True, timeout=120,
                   capture_output=True)  # fmt: skip


def _hold_transfer_midway(db: Database, job_id: str, inputs: Path, size: int) -> int:
    """Let the job's rsync run in slices until a sixth has arrived; leave it stopped."""
    pid = int(get_job(db, job_id)["transfer"]["pid"])
    os.killpg(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 60
    while sum(p.stat().st_size for p in inputs.glob(".big.bin.*")) < size // 6:
        assert time.monotonic() < deadline, "the transfer did not get going"
        os.killpg(pid, signal.SIGCONT)
        time.sleep(0.05)
        os.killpg(pid, signal.SIGSTOP)
    return pid


@pytest.mark.slow
@pytest.mark.parametrize("how", ["master killed", "gateway restarted"])
def test_a_session_lost_mid_transfer_waits_then_resumes(
    mfa: tuple[Database, Config, Path], tmp_path: Path, scratch: str, how: str
) -> None:
    db, config, path = mfa
    big = tmp_path / "data" / "raw" / "big.bin"
    subprocess.run(["sh", "-c", 'head -c 200M /dev/urandom > "$1"', "gen", big], check=True)
    size = big.stat().st_size
    assert connect_on_terminal(path, connect_answers()).returncode == 0
    job_id = submit(db, config, datarawfiles=["big.bin"])
    tick_until(db, config, status_in(db, job_id, "transferring"), stages=["scan"])
    inputs = Path(scratch) / job_id / "inputs" / "raw"
    pid = _hold_transfer_midway(db, job_id, inputs, size)
    try:
        session = Sessions().status(target_of(config))
        if how == "master killed":
            assert session.pid is not None
            os.kill(session.pid, signal.SIGKILL)
        else:
            reboot_mfa_gateway()
    finally:
        os.killpg(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while get_job(db, job_id)["transfer"].get("resume") is not True:
        assert time.monotonic() < deadline, get_job(db, job_id)["transfer"]
        assert labctl(path, "watchdog", "transfers").returncode == 0
        time.sleep(0.3)
    for _ in range(2):  # the next runs leave it waiting: no resume, no retry
        assert "waiting for mfa" in labctl(path, "watchdog", "tick").stdout
    job = get_job(db, job_id)
    assert job["status"] == "transferring" and job["transfer"]["attempts"] == 1
    assert job["waiting"] == "waiting for a session to mfa: run `labctl connect mfa`"
    assert not [h for h in job["history"] if "retry" in h["note"]]
    assert "waiting for a session to mfa" in labctl(path, "queue").stdout
    assert "labctl connect mfa" in labctl(path, "doctor").stdout

    assert connect_on_terminal(path, connect_answers()).returncode == 0

    def sent() -> bool:
        return bool(get_job(db, job_id)["transfer"]["done"])

    tick_until(db, config, sent, timeout=120, stages=["transfers"])
    log = Path(get_job(db, job_id)["transfer"]["log"])  # the resumed run's, gone once completed
    resumed = parse_progress(log.read_bytes())
    tick_until(db, config, status_in(db, job_id, *FINAL), timeout=120)
    job = get_job(db, job_id)
    assert job["status"] == "completed", job.get("failure")
    assert job["transfer"]["attempts"] == 1  # the resume spent no retry
    assert any(h["note"].startswith("rsync resumed") for h in job["history"])
    assert not log.exists()
    assert resumed is not None and resumed.bytes_sent is not None
    assert resumed.bytes_sent < size - size // 6 + size // 100  # what had arrived stayed
    assert len(slurm_jobs_named([f"labctl-{job_id}"])[f"labctl-{job_id}"]) == 1  # submitted once
    report = json.loads(Path(job["results"][0]["path"]).read_text())
    assert report["files"]["raw/big.bin"]["size"] == size


def test_an_unknown_host_key_is_refused_with_its_fingerprint(
    mfa: tuple[Database, Config, Path], tmp_path: Path
) -> None:
    _, config, _ = mfa
    empty = tmp_path / "known_hosts"
    empty.touch()
    direct = mfa_cluster("/tmp", via_gateway=False, known_hosts=str(empty))
    path = write_config(
        config.model_copy(update={"clusters": {"mfa": direct}}), tmp_path / "direct.yaml"
    )
    before = logins()
    done = run_on_pty([LABCTL, "--config", str(path), "connect", "mfa"], [])
    assert done.returncode == 1, done
    assert "is not in" in done.transcript and "SHA256:" in done.transcript
    assert "labctl connect mfa --accept-host-key" in done.transcript
    assert logins() == before

    fingerprint = subprocess.run(
        ["sh", "-c", 'ssh-keyscan -p "$1" "$2" 2>/dev/null | ssh-keygen -lf -', "scan",
         env("MFA_PORT"), env("MFA_HOST")], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    accepted = run_on_pty(
        [LABCTL, "--config", str(path), "connect", "mfa", "--accept-host-key"],
        [
            (r"Are you sure you want to continue connecting", "yes"),
            *connect_answers(via_gateway=False),
        ],
    )
    assert accepted.returncode == 0, accepted
    assert fingerprint.split()[1] in accepted.prompts[0]  # ssh showed the key it asked about
    assert empty.read_text().strip()  # and added it to the cluster's known_hosts


def test_a_totp_account_connects_once(tmp_path: Path, mfa: tuple[Database, Config, Path]) -> None:
    _, config, _ = mfa
    totp = mfa_cluster("/tmp", via_gateway=False, user=env("TOTP_USER"))
    path = write_config(
        config.model_copy(update={"clusters": {"mfa": totp}}), tmp_path / "totp.yaml"
    )
    answers = login_answers(env("TOTP_USER"), env("TOTP_PASSWORD"), fresh_totp(env("TOTP_USER")))
    try:
        assert connect_on_terminal(path, answers).returncode == 0
        doctor = json.loads(labctl(path, "doctor", "--json").stdout)
        checks = {c["name"]: c for c in doctor["checks"]}
        assert checks["mfa: session"]["ok"] and checks["mfa: ssh login"]["ok"], checks
    finally:
        labctl(path, "disconnect", "mfa")


def test_an_existing_ssh_config_setup_works_unchanged_sshfs_included(
    mfa: tuple[Database, Config, Path], tmp_path: Path, scratch: str
) -> None:
    """A member's own ~/.ssh/config for the cluster and its gateway, as MPCDF documents it:
    `ssh_alias` uses it as it is, and commands, rsync and sshfs all ride the one session."""
    db, config, _ = mfa
    own = tmp_path / "ssh_config"
    own.write_text(
        f"Host gate\n  HostName {env('GW_HOST')}\n  Port {env('GW_PORT')}\n"
        f"  User {env('GW_USER')}\n"
        f"Host mine\n  HostName {env('MFA_HOST')}\n  Port {env('MFA_PORT')}\n"
        f"  User {env('MFA_USER')}\n  ProxyJump gate\n"
        f"Host *\n  UserKnownHostsFile {env('KNOWN_HOSTS')}\n"
    )
    own.chmod(0o600)
    data = Path(scratch) / "data"
    subprocess.run(["install", "-d", "-o", env("MFA_USER"), str(data)], check=True)
    (data / "seen on the cluster.txt").write_text("hello")
    where = {"ssh_alias": "mine", "ssh_config": own, "host": None, "user": None, "proxy_jump": []}
    alias = mfa_cluster(scratch, data_dir=str(data), mount_point=tmp_path / "mnt", **where)
    config = config.model_copy(update={"clusters": {**config.clusters, "mfa": alias}})
    path = write_config(config, tmp_path / "alias.yaml")
    before = logins()
    assert connect_on_terminal(path, connect_answers()).returncode == 0
    job_id = submit(db, config)
    tick_until(db, config, status_in(db, job_id, *FINAL), timeout=90)
    assert get_job(db, job_id)["status"] == "completed"
    mounted = labctl(path, "mount", "mfa")
    assert mounted.returncode == 0, mounted.stderr
    try:
        assert (tmp_path / "mnt" / "seen on the cluster.txt").read_text() == "hello"
    finally:
        assert labctl(path, "umount", "mfa").returncode == 0
    assert logins() == (before[0] + 1, before[1] + 1)  # one login each, for all of it
