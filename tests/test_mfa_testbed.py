"""The testbed's MPCDF-like login host and gateway behave like MPCDF's (plain OpenSSH only).

No keys; each new login asks password + one-time password; a ControlMaster opened once on a
terminal then serves BatchMode commands, rsync and sshfs with no prompt; from outside, the route is
a ProxyJump through a gateway that asks password + OTP too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mfa import fresh_totp, login_answers, next_hotp, read_account, run_on_pty
from tests.testbed import ACCOUNTING, needs_testbed

MFA = os.environ.get("HPC_MFA_PORT") is not None
needs_mfa = pytest.mark.skipif(
    not MFA,
    reason="HPC_MFA_PORT unset: run scripts/testbed.sh (with the MFA host) and source env.sh",
)
GATEWAY_ONLY = os.environ.get("HPC_MFA_GATEWAY_ONLY") == "1"
direct = pytest.mark.skipif(
    GATEWAY_ONLY, reason="MFA_GATEWAY_ONLY=1: the host is behind the gateway"
)
pytestmark = [pytest.mark.testbed, needs_testbed, needs_mfa]

DENIED = "Permission denied (keyboard-interactive)."


def accepted(log: str, user: str) -> int:
    """How many logins of `user` the sshd log (`-E FILE`) records."""
    pattern = re.compile(rf"^Accepted \S+ for {re.escape(user)} from ")
    with open(log) as lines:
        return sum(bool(pattern.match(line)) for line in lines)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private folder for ControlPath sockets; masters left in it are stopped after."""
    path = Path(tempfile.mkdtemp(prefix="mfa-", dir="/tmp"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        for sock in path.iterdir():
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"],
                           capture_output=True, timeout=10, check=False)  # fmt: skip
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ssh_config(tmp_path: Path, sock_dir: Path) -> Path:
    """An ssh config file as labctl would write one: `raven` straight to the login host,
    `raven-gw` through the gateway `gate`; the ProxyJump child ssh reads this file too."""
    env = os.environ
    path = tmp_path / "ssh_config"
    path.write_text(f"""\
Host raven
  HostName {env["HPC_MFA_HOST"]}
  Port {env["HPC_MFA_PORT"]}
  User {env["HPC_MFA_USER"]}
  ControlPath {sock_dir}/raven
Host raven-gw
  HostName {env["HPC_MFA_HOST"]}
  Port {env["HPC_MFA_PORT"]}
  User {env["HPC_MFA_USER"]}
  ProxyJump gate
  ControlPath {sock_dir}/raven-gw
Host gate
  HostName {env["HPC_GW_HOST"]}
  Port {env["HPC_GW_PORT"]}
  User {env["HPC_GW_USER"]}
  ControlPath none
Host *
  UserKnownHostsFile {env["HPC_KNOWN_HOSTS"]}
  StrictHostKeyChecking yes
  NumberOfPasswordPrompts 1
  PubkeyAuthentication no
""")
    return path


def mfa_login() -> list[tuple[str, str]]:
    return login_answers(os.environ["HPC_MFA_USER"], os.environ["HPC_MFA_PASSWORD"])


def gw_login() -> list[tuple[str, str]]:
    return login_answers(os.environ["HPC_GW_USER"], os.environ["HPC_GW_PASSWORD"])


def batch(config: Path, host: str, command: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`command` on `host` with BatchMode (never a prompt), as the watchdog would run it."""
    return subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", *options, host, command],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def open_master(config: Path, host: str, answers: list[tuple[str, str]]) -> str:
    """Log in on a terminal, leaving a ControlMaster in the background; return the transcript."""
    argv = ["ssh", "-F", str(config), "-o", "ControlMaster=auto", "-o", "ControlPersist=600"]
    done = run_on_pty([*argv, host, "true"], answers)
    assert done.returncode == 0, done
    return done.transcript


def slurm_round_trip(config: Path, host: str) -> None:
    """sbatch, squeue and sacct over the master: a job runs to COMPLETED."""
    job = batch(config, host, "sbatch --parsable --wrap 'echo hi'")
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    assert job_id.isdigit(), job.stdout
    deadline = time.monotonic() + 30
    while True:
        state = batch(config, host, f"squeue -h -t all -j {job_id} -o %T").stdout.strip()
        if state == "COMPLETED":
            break
        assert time.monotonic() < deadline, f"job {job_id} still {state!r}"
        time.sleep(0.2)
    # slurmdbd's record if the testbed keeps one (a moment after squeue's), else the jobcomp log
    source = "" if ACCOUNTING == "slurmdbd" else "-c "
    while True:
        sacct = batch(config, host, f"sacct {source}-n -P -j {job_id} -o JobID,State")
        if f"{job_id}|COMPLETED" in sacct.stdout:
            break
        assert time.monotonic() < deadline, sacct
        time.sleep(0.2)


def rsync_round_trip(config: Path, host: str, tmp_path: Path) -> None:
    """rsync up and down over the master with `-e 'ssh -F FILE -o BatchMode=yes'`."""
    local = tmp_path / "up"
    local.mkdir()
    (local / "data.bin").write_bytes(os.urandom(200_000))
    remote = f"mfa-it-{os.getpid()}-{time.monotonic_ns()}"
    rsh = f"ssh -F {config} -o BatchMode=yes"
    up = subprocess.run(["rsync", "-a", "-e", rsh, f"{local}/", f"{host}:{remote}/"],
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert up.returncode == 0, up.stderr
    down = subprocess.run(["rsync", "-a", "-e", rsh, f"{host}:{remote}/", f"{tmp_path}/down/"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down" / "data.bin").read_bytes() == (local / "data.bin").read_bytes()
    assert batch(config, host, f"rm -rf -- {remote}").returncode == 0


@direct
def test_key_login_is_refused_though_the_key_is_authorized() -> None:
    env = os.environ
    done = subprocess.run(
        ["ssh", "-i", env["HPC_SSH_KEY"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={env['HPC_KNOWN_HOSTS']}", "-o", "StrictHostKeyChecking=yes",
         "-p", env["HPC_MFA_PORT"], f"{env['HPC_MFA_USER']}@{env['HPC_MFA_HOST']}", "true"],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 255
    assert done.stderr.strip() == f"{env['HPC_MFA_USER']}@{env['HPC_MFA_HOST']}: {DENIED}"


@direct
def test_password_and_hotp_open_a_master_that_batch_commands_ride(
    ssh_config: Path, sock_dir: Path, tmp_path: Path
) -> None:
    log, user = os.environ["HPC_MFA_LOG"], os.environ["HPC_MFA_USER"]
    no_master = batch(ssh_config, "raven", "true")
    assert no_master.returncode == 255 and DENIED in no_master.stderr, no_master

    before = accepted(log, user)
    transcript = open_master(ssh_config, "raven", mfa_login())
    assert re.search(r"\(mfauser@[^)]*\) Password: .*One-time password \(OATH\)", transcript, re.S)
    check = subprocess.run(["ssh", "-F", str(ssh_config), "-O", "check", "raven"],
                           capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    assert check.returncode == 0 and check.stdout == ""
    assert re.fullmatch(r"Master running \(pid=\d+\)\n", check.stderr), check.stderr

    assert batch(ssh_config, "raven", "id -un").stdout == f"{user}\n"
    slurm_round_trip(ssh_config, "raven")
    rsync_round_trip(ssh_config, "raven", tmp_path)
    assert accepted(log, user) == before + 1  # one login served all of it


def test_the_same_through_the_gateway_with_two_logins(ssh_config: Path, tmp_path: Path) -> None:
    gw_log, mfa_log = os.environ["HPC_GW_LOG"], os.environ["HPC_MFA_LOG"]
    gw_user, user = os.environ["HPC_GW_USER"], os.environ["HPC_MFA_USER"]
    before = accepted(gw_log, gw_user), accepted(mfa_log, user)
    transcript = open_master(ssh_config, "raven-gw", gw_login() + mfa_login())
    assert transcript.index("(gwuser@") < transcript.index("(mfauser@")
    slurm_round_trip(ssh_config, "raven-gw")
    rsync_round_trip(ssh_config, "raven-gw", tmp_path)
    assert (accepted(gw_log, gw_user), accepted(mfa_log, user)) == (before[0] + 1, before[1] + 1)


def test_with_the_master_down_a_proxycommand_false_guard_fails_at_once(ssh_config: Path) -> None:
    """What the watchdog may run: the master or nothing, never a login attempt at either sshd."""
    logs = [os.environ["HPC_GW_LOG"], os.environ["HPC_MFA_LOG"]]
    sizes = [os.path.getsize(log) for log in logs]
    done = batch(
        ssh_config, "raven-gw", "true", "-o", "ControlMaster=no", "-o", "ProxyCommand=false"
    )
    assert done.returncode == 255
    # "kex_exchange_identification: Connection closed by remote host" + "Connection closed by
    # UNKNOWN port 65535", or (a race with `false` exiting) "banner exchange: Connection to
    # UNKNOWN port 65535: Broken pipe"
    assert "UNKNOWN port 65535" in done.stderr, done.stderr
    assert [os.path.getsize(log) for log in logs] == sizes  # neither sshd saw a connection


def test_a_wrong_otp_is_refused(ssh_config: Path, sock_dir: Path) -> None:
    user, password = os.environ["HPC_MFA_USER"], os.environ["HPC_MFA_PASSWORD"]
    host = "raven" if not GATEWAY_ONLY else "raven-gw"
    answers = [] if not GATEWAY_ONLY else gw_login()
    code = next_hotp(user)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    argv = ["ssh", "-F", str(ssh_config), "-o", "ControlMaster=auto", "-o", "ControlPersist=600"]
    done = run_on_pty([*argv, host, "true"], answers + login_answers(user, password, wrong))
    assert done.returncode == 255
    assert done.transcript.endswith(f"{user}@{os.environ['HPC_MFA_HOST']}: {DENIED}\r\r\n"), done
    assert not any(sock_dir.iterdir())  # no master left behind


@direct
def test_a_totp_code_logs_in_once(ssh_config: Path) -> None:
    user, password = os.environ["HPC_TOTP_USER"], os.environ["HPC_TOTP_PASSWORD"]
    code = fresh_totp(user)
    argv = ["ssh", "-F", str(ssh_config), "-o", "ControlPath=none", "-l", user, "raven", "echo ok"]
    first = run_on_pty(argv, login_answers(user, password, code))
    assert first.returncode == 0 and first.transcript.endswith("ok\r\n"), first
    assert read_account(user).last_otp == code
    again = run_on_pty(argv, login_answers(user, password, code))  # the same code: a replay
    assert again.returncode == 255 and DENIED in again.transcript, again


@pytest.mark.skipif(not GATEWAY_ONLY, reason="MFA_GATEWAY_ONLY=0: the host is reachable directly")
def test_only_the_gateway_reaches_the_host() -> None:
    env = os.environ
    done = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-p", env["HPC_MFA_PORT"], env["HPC_MFA_HOST"], "true"],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 255
    assert "Connection refused" in done.stderr, done.stderr
