"""The command seam and rsync transfers against real processes and the real sshd testbed.

SSH tests need the testbed's variables (`. /tmp/hpc-testbed/env.sh`, or scripts/testbed.sh);
without them they are skipped. Nothing here mocks ssh or rsync.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from labctl.compute.transport import (
    AuthError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    HostKeyError,
    LocalRunner,
    Runner,
    Sessions,
    SSHRunner,
    SSHTarget,
    TransferError,
    TransferHandle,
    TransferState,
    TransferStatus,
    poll,
    private_dir,
    rsync_argv,
    start_background,
)
from tests.mongoserver import free_port
from tests.testbed import key_target, sshd_logins

ENV_VARS = ("HPC_SSH_HOST", "HPC_SSH_PORT", "HPC_SSH_USER", "HPC_SSH_KEY", "HPC_KNOWN_HOSTS")
NASTY_ARGS = [
    "; rm -rf {canary}",
    "$(touch {marker})",
    "`touch {marker}`",
    "two  spaces",
    'it\'s "quoted"',
    "line one\nline two",
    "*",
    "",
    "-n",
    "é ünïcode",
]


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _wait_until_done(handle: TransferHandle, timeout: float = 20.0) -> TransferStatus:
    status = poll(handle)
    deadline = time.monotonic() + timeout
    while status.state is TransferState.RUNNING:
        if time.monotonic() > deadline:
            pytest.fail(f"transfer {handle.pid} still running after {timeout} s")
        time.sleep(0.05)
        status = poll(handle)
    return status


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[SSHTarget]:
    """The testbed's account, from its env.sh variables, with a session directory of its own
    (so each test starts without a session); the session is closed afterwards."""
    missing = [var for var in ENV_VARS if var not in os.environ]
    if missing:
        pytest.skip(f"no SSH testbed: {', '.join(missing)} unset (source /tmp/hpc-testbed/env.sh)")
    found = key_target(tmp_path / "sessions")
    yield found
    Sessions().close(found)


def logins() -> int:
    """Successful SSH authentications the testbed's key sshd has logged so far."""
    return sshd_logins(Path(os.environ["HPC_SSHD_LOG"]))


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ed25519 key pair the testbed has never seen (private key path)."""
    key = tmp_path_factory.mktemp("keys") / "other key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture
def ssh(target: SSHTarget) -> Iterator[SSHRunner]:
    runner = SSHRunner(target)
    yield runner
    runner.close()


@pytest.fixture
def remote_dir(ssh: SSHRunner) -> Iterator[str]:
    """A fresh directory in the remote user's home, removed afterwards."""
    home = ssh.run(["printenv", "HOME"]).stdout.strip()
    path = f"{home}/labctl-test-{uuid.uuid4().hex[:12]}"
    ssh.run(["mkdir", path])
    yield path
    ssh.run(["rm", "-rf", path])


@dataclass(frozen=True)
class Place:
    """A runner and a scratch directory on the machine it runs commands on."""

    runner: Runner
    workdir: str


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.testbed)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each behaviour test runs once through LocalRunner and once through SSHRunner."""
    if request.param == "local":
        return Place(LocalRunner(), str(tmp_path))
    return Place(request.getfixturevalue("ssh"), request.getfixturevalue("remote_dir"))


# --- both runners --------------------------------------------------------------------------


def test_arguments_arrive_verbatim_and_nothing_runs(place: Place) -> None:
    run, work = place.runner.run, place.workdir
    canary, marker = f"{work}/canary", f"{work}/pwned"
    run(["mkdir", canary])
    args = [arg.format(canary=canary, marker=marker) for arg in NASTY_ARGS]
    result = run(["printf", "%s\\0", *args])
    assert result.stdout.split("\0")[:-1] == args
    assert run(["test", "-d", canary], check=False).returncode == 0
    assert run(["test", "-e", marker], check=False).returncode == 1


def test_exit_codes_and_stderr(place: Place) -> None:
    argv = ["sh", "-c", "echo out; echo 'oops: first' >&2; echo second >&2; exit 3"]
    result = place.runner.run(argv, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        "out\n",
        "oops: first\nsecond\n",
    )
    with pytest.raises(CommandError, match=r"exited 3: oops: first$") as excinfo:
        place.runner.run(argv)
    assert excinfo.value.result == result
    assert "sh -c" in str(excinfo.value)


def test_missing_program_is_127(place: Place) -> None:
    result = place.runner.run(["labctl-no-such-program", "x"], check=False)
    assert result.returncode == 127


def test_stdin_input(place: Place) -> None:
    assert place.runner.run(["cat"], input="a\nb $(x)\n").stdout == "a\nb $(x)\n"
    assert place.runner.run(["cat"]).stdout == ""  # no input: stdin is empty, never inherited


def test_timeout(place: Place) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimeoutError, match="sleep 5"):
        place.runner.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - start < 2
    assert place.runner.run(["echo", "still usable"]).stdout == "still usable\n"


def test_large_stdout_and_stderr_together(place: Place) -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"
    result = place.runner.run(["sh", "-c", script], timeout=20)
    assert (len(result.stdout), len(result.stderr)) == (3_000_000, 3_000_000)


def test_write_and_read_file(place: Place) -> None:
    path = f"{place.workdir}/job script.sh"
    content = "#!/bin/sh\necho 'héllo $(world)'\n"
    place.runner.write_file(path, content, mode=0o750)
    assert place.runner.read_file(path) == content
    assert place.runner.run(["stat", "-c", "%a", path]).stdout == "750\n"
    assert place.runner.run([path]).stdout == "héllo $(world)\n"
    with pytest.raises(FileNotFoundError):
        place.runner.read_file(f"{place.workdir}/absent")


# --- SSH sessions (OpenSSH ControlMaster) -------------------------------------------------


@pytest.mark.testbed
def test_one_login_for_many_commands_and_runs(target: SSHTarget) -> None:
    before = logins()
    path = f"/tmp/labctl-test-{uuid.uuid4().hex[:12]}"
    for run in range(3):  # three watchdog runs, each with a runner of its own
        runner = SSHRunner(target)
        for i in range(10):
            assert runner.run(["echo", str(run), str(i)]).stdout == f"{run} {i}\n"
        runner.write_file(path, str(run))
        assert runner.read_file(path) == str(run)
        runner.close()
    SSHRunner(target).run(["rm", "--", path])
    assert logins() - before == 1  # the first command opened the session; the rest rode it
    session = Sessions().status(target)
    assert session.up and session.pid is not None and session.until is not None


@pytest.mark.testbed
def test_no_login_until_needed_and_a_dropped_session_reopens(target: SSHTarget) -> None:
    before = logins()
    runner = SSHRunner(target)
    assert logins() == before and not Sessions().status(target).up
    runner.run(["true"])
    assert Sessions().close(target)
    assert SSHRunner(target).run(["echo", "back"]).stdout == "back\n"
    assert logins() - before == 2


@pytest.mark.testbed
def test_session_killed_mid_command(target: SSHTarget) -> None:
    runner = SSHRunner(target)
    runner.run(["true"])
    closer = threading.Timer(0.3, Sessions().close, [target])  # the master goes under the command
    closer.start()
    start = time.monotonic()
    with pytest.raises(ConnectError, match="cannot reach hpc: the session dropped"):
        runner.run(["sleep", "5"])
    closer.join()
    assert time.monotonic() - start < 3
    assert SSHRunner(target).run(["echo", "back"]).stdout == "back\n"


@pytest.mark.testbed
def test_unknown_host_key(target: SSHTarget, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    before = logins()
    with pytest.raises(HostKeyError) as excinfo:
        SSHRunner(replace(target, known_hosts=str(empty))).run(["true"])
    message = str(excinfo.value)
    assert f"[{target.host}]:{target.port}" in message and str(empty) in message
    assert "SHA256:" in message  # the fingerprint to compare, from ssh-keyscan
    assert "--accept-host-key" in message
    assert not excinfo.value.transient
    assert logins() == before


@pytest.mark.testbed
def test_changed_host_key(target: SSHTarget, other_key: Path, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    public = other_key.with_name(other_key.name + ".pub").read_text().split()[:2]
    known_hosts.write_text(f"[{target.host}]:{target.port} {' '.join(public)}\n")
    with pytest.raises(HostKeyError, match="changed") as excinfo:
        SSHRunner(replace(target, known_hosts=str(known_hosts))).run(["true"])
    assert str(known_hosts) in str(excinfo.value)


@pytest.mark.testbed
def test_missing_known_hosts_file(target: SSHTarget, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="is not in"):
        SSHRunner(replace(target, known_hosts=str(tmp_path / "absent"))).run(["true"])


@pytest.mark.testbed
def test_wrong_key(target: SSHTarget, other_key: Path) -> None:
    with pytest.raises(AuthError, match="rejected key") as excinfo:
        SSHRunner(replace(target, key_file=str(other_key))).run(["true"])
    assert not excinfo.value.transient


@pytest.mark.testbed
def test_missing_key_file(target: SSHTarget, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="rejected key"):
        SSHRunner(replace(target, key_file=str(tmp_path / "absent"))).run(["true"])


@pytest.mark.testbed
def test_closed_port_fails_fast(target: SSHTarget) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectError, match="Connection refused") as excinfo:
        SSHRunner(replace(target, port=free_port())).run(["true"])
    assert time.monotonic() - start < 2
    assert excinfo.value.transient


def test_silent_server_times_out(other_key: Path, tmp_path: Path) -> None:
    """A port that accepts TCP but never speaks SSH: ConnectError after connect_timeout."""
    (tmp_path / "known_hosts").touch()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        silent = SSHTarget(
            name="silent",
            host="127.0.0.1",
            directory=str(private_dir(tmp_path / "sessions")),
            port=server.getsockname()[1],
            user="nobody",
            key_file=str(other_key),
            known_hosts=str(tmp_path / "known_hosts"),
            connect_timeout=1,
        )
        start = time.monotonic()
        with pytest.raises(ConnectError):
            SSHRunner(silent).run(["true"])
        assert time.monotonic() - start < 4


# --- rsync through the real sshd -----------------------------------------------------------

ODD_NAME = "run 1 $(touch PWNED) 'q' `id`.dat"


@pytest.mark.testbed
def test_push_and_pull_with_odd_names(
    target: SSHTarget, ssh: SSHRunner, remote_dir: str, tmp_path: Path
) -> None:
    src = tmp_path / "out"
    src.mkdir()
    (src / ODD_NAME).write_bytes(os.urandom(300_000))
    remote = f"{remote_dir}/in $(touch PWNED)/"
    subprocess.run(rsync_argv([f"{src}/"], remote, target=target), check=True, capture_output=True)
    listing = ssh.run(["find", remote_dir, "-mindepth", "1", "-printf", "%P\\n"]).stdout
    assert sorted(listing.splitlines()) == ["in $(touch PWNED)", f"in $(touch PWNED)/{ODD_NAME}"]
    remote_sum = ssh.run(["sha256sum", f"{remote}{ODD_NAME}"]).stdout.split()[0]
    assert remote_sum == _sha256(src / ODD_NAME)

    back = tmp_path / "back"
    argv = rsync_argv([f"{remote}{ODD_NAME}"], f"{back}/", target=target, direction="pull")
    subprocess.run(argv, check=True, capture_output=True)
    assert _sha256(back / ODD_NAME) == remote_sum
    assert not list(tmp_path.rglob("PWNED"))
    home = remote_dir.rsplit("/", 1)[0]  # where a remote shell would have run the $(touch)
    assert ssh.run(["test", "-e", f"{home}/PWNED"], check=False).returncode == 1


@pytest.mark.testbed
def test_pull_files_from(
    target: SSHTarget, ssh: SSHRunner, remote_dir: str, tmp_path: Path
) -> None:
    ssh.run(["mkdir", f"{remote_dir}/sub"])
    for name in ("a b.txt", "sub/c.txt", "skip.txt"):
        ssh.write_file(f"{remote_dir}/{name}", name)
    (tmp_path / "list").write_text("a b.txt\0sub/c.txt\0")  # --from0: NUL-ended names
    argv = rsync_argv(
        [f"{remote_dir}/"],
        str(tmp_path / "got"),
        target=target,
        direction="pull",
        files_from=str(tmp_path / "list"),
    )
    subprocess.run(argv, check=True, capture_output=True)
    got = sorted(str(p.relative_to(tmp_path / "got")) for p in (tmp_path / "got").rglob("*.txt"))
    assert got == ["a b.txt", "sub/c.txt"]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.testbed
def test_background_push_killed_then_resumed(
    target: SSHTarget, ssh: SSHRunner, remote_dir: str, tmp_path: Path
) -> None:
    size = 200_000_000
    big = tmp_path / "big.bin"
    subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=big.open("wb"), check=True)
    # The bandwidth limit (~59 MiB/s) makes "mid-way" last long enough to catch.
    argv = rsync_argv([str(big)], f"{remote_dir}/", target=target, bwlimit_kib=60_000)

    first = start_background(argv, tmp_path / "first.log")
    with pytest.raises(TransferError, match="already writing"):
        start_background(argv, tmp_path / "first.log")
    _wait_for(
        "progress past 10 %",
        lambda: (p := poll(first).progress) is not None and 10 <= p.percent < 80,
    )
    running = poll(first)
    assert running.state is TransferState.RUNNING
    assert running.progress is not None and 0 < running.progress.bytes_done < size
    assert running.progress.rate_bytes_per_s > 0

    (rsync_pid,) = _children(first.pid)
    os.kill(rsync_pid, signal.SIGKILL)
    killed = _wait_until_done(first)
    assert (killed.state, killed.exit_code, killed.transient) == (
        TransferState.FAILED,
        128 + signal.SIGKILL,
        True,
    )
    remote_file = f"{remote_dir}/big.bin"
    # The remote receiver keeps the partial file (--partial) once it notices the drop.
    _wait_for(
        "the partial file",
        lambda: ssh.run(["test", "-f", remote_file], check=False).returncode == 0,
    )
    kept = int(ssh.run(["stat", "-c", "%s", remote_file]).stdout)
    assert 0 < kept < size

    second = start_background(argv, tmp_path / "second.log")
    done = _wait_until_done(second)
    assert (done.state, done.exit_code) == (TransferState.SUCCEEDED, 0)
    assert done.progress is not None
    assert done.progress.total_bytes == size
    assert done.progress.bytes_sent is not None
    assert done.progress.bytes_sent < size - kept + 5_000_000  # only the rest went again
    assert ssh.run(["sha256sum", remote_file]).stdout.split()[0] == _sha256(big)


# --- the background launcher, with plain commands -----------------------------------------


def test_a_background_transfer_does_not_keep_the_stages_cron_lock(tmp_path: Path) -> None:
    """cron runs each stage as `flock -n LOCK labctl watchdog STAGE`: a transfer that stage starts
    must not hold LOCK, or every later run of the stage skips until the transfer ends."""
    lock, log = tmp_path / "scan.lock", tmp_path / "t.log"
    start = "from labctl.compute.transport import start_background; import sys; "
    start += "print(start_background(['sleep', '30'], sys.argv[1]).pid)"
    spawned = subprocess.run(["flock", "-n", str(lock), sys.executable, "-c", start, str(log)],
                             capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(spawned.stdout)
    try:
        assert poll(TransferHandle(pid, str(log), f"{log}.status")).state is TransferState.RUNNING
        assert subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_background_exit_code_and_message(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo 'rsync: [sender] link_stat failed' >&2; exit 23"]
    status = _wait_until_done(start_background(argv, tmp_path / "t.log"))
    assert (status.state, status.exit_code, status.transient) == (TransferState.FAILED, 23, False)
    assert status.message == "rsync: [sender] link_stat failed"


def test_background_arguments_are_not_interpreted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = [f"$(touch {marker})", f"; touch {marker}", "a 'b' \"c\""]
    handle = start_background(["printf", "%s\\n", *args], tmp_path / "t.log")
    assert _wait_until_done(handle).state is TransferState.SUCCEEDED
    assert Path(handle.log_path).read_text().splitlines() == args
    assert Path(handle.status_path).read_text() == "exit=0\n"
    assert not marker.exists()


def test_background_vanished_and_orphans(tmp_path: Path) -> None:
    handle = start_background(["sleep", "30"], tmp_path / "t.log")
    _wait_for("the launcher to start sleep", lambda: bool(_children(handle.pid)))
    os.kill(handle.pid, signal.SIGKILL)  # the launcher dies, its child still runs
    _wait_for("the launcher to die", lambda: not Path(f"/proc/{handle.pid}/cmdline").read_bytes())
    assert poll(handle).state is TransferState.RUNNING
    os.killpg(handle.pid, signal.SIGKILL)  # the whole session: no status is ever written
    status = _wait_until_done(handle)
    assert (status.state, status.exit_code, status.transient) == (
        TransferState.VANISHED,
        None,
        True,
    )


def test_background_restart_truncates_log(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    assert _wait_until_done(start_background(["sh", "-c", "exit 30"], log)).transient
    handle = start_background(["echo", "again"], log)
    assert _wait_until_done(handle).state is TransferState.SUCCEEDED
    assert log.read_text() == "again\n"


def test_poll_without_log(tmp_path: Path) -> None:
    gone = TransferHandle(pid=1, log_path=str(tmp_path / "x.log"), status_path="x")
    with pytest.raises(TransferError, match="is gone"):
        poll(gone)


def test_local_resume_after_kill(tmp_path: Path) -> None:
    """--partial keeps what a killed sender already wrote (here: both ends are local)."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(20_000_000))
    argv = rsync_argv([str(src)], f"{tmp_path}/dst/", bwlimit_kib=10_000)
    first = start_background(argv, tmp_path / "1.log")
    _wait_for("some progress", lambda: (p := poll(first).progress) is not None and p.percent >= 10)
    (rsync_pid,) = _children(first.pid)
    os.kill(rsync_pid, signal.SIGTERM)  # rsync stops its receiver, which keeps the partial file
    stopped = _wait_until_done(first)
    assert (stopped.state, stopped.exit_code, stopped.transient) == (
        TransferState.FAILED,
        20,
        True,
    )
    kept = (tmp_path / "dst" / "src.bin").stat().st_size
    assert 0 < kept < 20_000_000
    done = _wait_until_done(start_background(argv, tmp_path / "2.log"))
    assert done.state is TransferState.SUCCEEDED
    assert _sha256(tmp_path / "dst" / "src.bin") == _sha256(src)
