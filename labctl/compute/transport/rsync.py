"""rsync transfers: argv building, --info=progress2 parsing, detached runs a later process can poll.

Checked against rsync 3.5.0 (protocol 32): `-s` is the short name of --secluded-args (called
--protect-args before 3.2.6), so remote paths travel inside the rsync protocol and the remote
shell never parses them.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum, auto
from pathlib import Path
from typing import Final, Literal

from labctl.compute.transport.runner import TransportError
from labctl.compute.transport.sessions import could_not_connect
from labctl.compute.transport.target import SSHTarget, ssh_command
from labctl.private import open_private

Direction = Literal["push", "pull"]

_OPTIONS: Final = ("-a", "-s", "--partial", "--info=progress2,stats1", "--no-inc-recursive")

# The launcher runs "$@" (never an interpolated string) and then writes its exit code
# to the status file atomically (write a temporary file, rename it over the status file), 0600.
_LAUNCHER: Final = (
    'status=$1; shift; "$@"; code=$?; umask 077; '
    'printf "exit=%d\\n" "$code" > "$status.tmp" && mv -f "$status.tmp" "$status"'
)

# Whether rerunning the same transfer can succeed, per rsync exit code (man rsync, EXIT VALUES).
_TRANSIENT: Final[Mapping[int, bool]] = {
    1: False,  # syntax or usage error: our argv is wrong
    2: False,  # protocol incompatibility: the remote rsync must be changed
    3: False,  # errors selecting input/output files or dirs: a path is wrong
    4: False,  # action not supported by the remote rsync
    5: False,  # error starting the client-server protocol: remote/daemon configuration
    10: True,  # socket I/O error: network
    11: False,  # file I/O error (disk full, read-only file system): needs a human
    12: True,  # protocol data stream error: usually a dropped connection (or no remote rsync)
    13: False,  # errors with program diagnostics
    14: True,  # IPC error (pipe or fork failed): resources exhausted for a moment
    15: True,  # a sibling process crashed
    16: True,  # a sibling process (e.g. ssh) was killed by a signal
    19: True,  # stopped by SIGUSR1
    20: True,  # stopped by SIGINT, SIGTERM or SIGHUP (e.g. shutdown): --partial resumes
    21: True,  # waitpid() error
    22: True,  # out of memory: may pass when the machine is less loaded
    23: False,  # partial transfer due to error: missing or unreadable files fail every time
    24: True,  # source files vanished during the transfer: the next run sees the new list
    25: False,  # --max-delete stopped deletions: needs a human
    30: True,  # timeout in data send/receive
    35: True,  # timeout waiting for a daemon connection
    255: True,  # ssh failed (refused, unreachable, dropped), unless _SSH_PERMANENT says otherwise
}

# ssh messages that make exit code 255 permanent: an unknown or changed host key, a rejected
# key ("Permission denied (publickey)."; rsync's file errors end in an errno: "(13)").
_SSH_PERMANENT = re.compile(r"Host key verification failed|Permission denied \([a-z][a-z,-]*\)")

_SEPARATOR = re.compile(r"[\r\n]")
_RECORD = re.compile(
    r"\s*(?P<bytes>\d[\d,.]*)\s+(?P<percent>\d+)%"
    r"\s+(?P<rate>(?P<rate_num>\d+(?:[.,]\d+)?)(?P<unit>[kMG])B/s)"
    r"\s+(?:(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)|\?\?:\?\?:\?\?)"
    # A record ends with its xfr part or with two spaces: a record cut short while rsync
    # writes it (the end of a growing log) matches neither and is ignored.
    r"(?: \(xfr#(?P<xfr>\d+), (?:to|ir)-chk=(?P<remaining>\d+)/(?P<total>\d+)\) *| {2,})"
)
_SENT = re.compile(r"sent (?P<sent>[\d,.]+) bytes\s+received (?P<received>[\d,.]+) bytes.*")
_TOTAL = re.compile(r"total size is (?P<total>[\d,.]+)\s+speedup is .*")
_UNIT: Final = {"k": 1024, "M": 1024**2, "G": 1024**3}  # rsync's rate units are binary
_STATUS = re.compile(r"exit=(\d+)")


class TransferError(TransportError):
    """A background transfer could not be started or its log is gone."""


@dataclass(frozen=True)
class Progress:
    """The last complete --info=progress2 record of a run, plus its summary once printed."""

    bytes_done: int
    percent: int
    rate: str
    rate_bytes_per_s: float
    eta_seconds: int | None
    xfr: int | None = None
    to_check_remaining: int | None = None
    to_check_total: int | None = None
    total_bytes: int | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None


class TransferState(Enum):
    """Where a background transfer is."""

    RUNNING = auto()
    SUCCEEDED = auto()
    FAILED = auto()
    VANISHED = auto()  # gone without writing a status: killed


@dataclass(frozen=True)
class TransferHandle:
    """Everything a later process needs to poll a background transfer."""

    pid: int
    log_path: str
    status_path: str
    started: int | None = None
    """The process's start time (`/proc/PID/stat` field 22, clock ticks after boot): with the
    pid, it names the process `start_background` started, never a later one with its pid."""


@dataclass(frozen=True)
class TransferStatus:
    """What poll() learned: state, exit code, progress and whether a retry can help."""

    state: TransferState
    exit_code: int | None
    progress: Progress | None
    message: str | None  # the first line of the log that is neither progress nor summary
    transient: bool  # failed or vanished, and rerunning the same argv can succeed
    unreachable: bool = False  # failed because ssh could not connect to the cluster at all


def _local(path: str) -> str:
    """A local path rsync cannot mistake for host:path or an option."""
    return path if path.startswith("/") else f"./{path}"


def _remote(target: SSHTarget, path: str) -> str:
    return f"{target.destination}:{path}"


def rsync_argv(
    sources: Sequence[str],
    dest: str,
    *,
    target: SSHTarget | None = None,
    direction: Direction = "push",
    files_from: str | None = None,
    bwlimit_kib: int | None = None,
    copy_links: bool = False,
    implied_dirs: bool = True,
    exclude: Sequence[str] = (),
    chmod: str | None = None,
) -> list[str]:
    """rsync argv copying sources to dest: local (no target), pushed to or pulled from target.

    With files_from (a file, or "-": standard input), sources is one base directory and the list
    gives paths relative to it, each ended by a NUL (`--from0`: no name is taken for a comment);
    without `implied_dirs`, the folders of those paths must exist at dest and keep their modes;
    `chmod` changes the copies' modes (rsync's `--chmod`, e.g. `o-rwx`).
    """
    if not sources:
        raise ValueError("rsync needs at least one source")
    argv = ["rsync", *_OPTIONS]
    if bwlimit_kib is not None:
        argv.append(f"--bwlimit={bwlimit_kib}")
    if files_from is not None:
        listing = files_from if files_from == "-" else _local(files_from)
        argv += [f"--files-from={listing}", "--from0"]
    if copy_links:  # send what symlinks point at (a staging tree of links to the inputs)
        argv.append("--copy-links")
    if not implied_dirs:
        argv.append("--no-implied-dirs")
    argv += [f"--exclude={pattern}" for pattern in exclude]
    if chmod is not None:
        argv.append(f"--chmod={chmod}")
    if target is None:
        return [*argv, *map(_local, sources), _local(dest)]
    argv += ["-e", shlex.join(ssh_command(target))]
    if direction == "push":
        return [*argv, *map(_local, sources), _remote(target, dest)]
    return [*argv, *(_remote(target, source) for source in sources), _local(dest)]


def _number(text: str) -> int:
    """An integer printed with thousands separators (',' or '.', by locale)."""
    return int(re.sub(r"[,.]", "", text))


def _lines(raw: bytes | str) -> list[str]:
    """The records and lines of a log: rsync separates them with \\r and \\n."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _SEPARATOR.split(text)


def _record(match: re.Match[str]) -> Progress:
    h, m, s = match["h"], match["m"], match["s"]
    xfr, remaining, total = match["xfr"], match["remaining"], match["total"]
    return Progress(
        bytes_done=_number(match["bytes"]),
        percent=int(match["percent"]),
        rate=match["rate"],
        rate_bytes_per_s=float(match["rate_num"].replace(",", ".")) * _UNIT[match["unit"]],
        eta_seconds=None if h is None else int(h) * 3600 + int(m) * 60 + int(s),
        xfr=None if xfr is None else int(xfr),
        to_check_remaining=None if remaining is None else int(remaining),
        to_check_total=None if total is None else int(total),
    )


def parse_progress(raw: bytes | str) -> Progress | None:
    """The last complete progress record of a (growing) rsync log, or None if there is none.

    Summary lines (`sent ... received ...`, `total size is ...`) fill the totals once printed.
    """
    last: Progress | None = None
    sent = received = total = None
    for line in _lines(raw):
        if match := _RECORD.fullmatch(line):
            last = _record(match)
        elif match := _SENT.fullmatch(line):
            sent, received = _number(match["sent"]), _number(match["received"])
        elif match := _TOTAL.fullmatch(line):
            total = _number(match["total"])
    if last is None:
        return None
    return replace(last, total_bytes=total, bytes_sent=sent, bytes_received=received)


def _diagnostics(raw: bytes | str) -> list[str]:
    """Log lines that are neither progress records nor the summary: warnings and errors."""
    patterns = (_RECORD, _SENT, _TOTAL)
    return [
        line.strip()
        for line in _lines(raw)
        if line.strip() and not any(p.fullmatch(line) for p in patterns)
    ]


def is_transient(exit_code: int, log: str = "") -> bool:
    """Whether rerunning a transfer that ended with exit_code (and wrote log) can succeed."""
    if exit_code == 255 and _SSH_PERMANENT.search(log):
        return False
    if 128 < exit_code < 255:  # the launcher's shell reports death by signal N as 128 + N
        return True
    return _TRANSIENT.get(exit_code, False)  # unknown codes: let a human look


def start_background(argv: Sequence[str], log_path: str | os.PathLike[str]) -> TransferHandle:
    """Start argv detached (new session, stdin /dev/null, stdout+stderr to log_path).

    The log file stays flock()ed while any process of the transfer holds it open; that is how
    a later process tells a running transfer from a finished one, immune to PID reuse.
    The log must be on a local file system. The caller should exit or live with a zombie.
    """
    log = Path(log_path)
    status = log.with_name(f"{log.name}.status")
    fd = open_private(log, os.O_WRONLY)  # 0600: it names the job's files and hosts
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise TransferError(f"a transfer is already writing {log}") from exc
        os.ftruncate(fd, 0)
        status.unlink(missing_ok=True)
        pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", _LAUNCHER, "labctl-transfer", str(status), *argv],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
                *((os.POSIX_SPAWN_CLOSE, other) for other in _inherited()),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)
    started = _start_time(pid)  # our child, a zombie at worst until we wait: still there
    return TransferHandle(pid=pid, log_path=str(log), status_path=str(status), started=started)


def _inherited() -> list[int]:
    """This process's inheritable descriptors above stderr, such as the lock that cron's
    `flock -n` holds for the stage: a transfer that kept it would make every later run skip."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2 and os.get_inheritable(int(name)):
                found.append(int(name))
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return found


def _stat(pid: int) -> list[str]:
    """Fields 3 on of `/proc/PID/stat` (`[]` if there is no such process): the state is [0],
    the process group [2], the start time [19]. They follow the name, which may hold anything."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return []
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def transfer_alive(handle: TransferHandle) -> bool:
    """Whether the process `start_background` started for `handle` still runs, leading its
    process group: the same pid with the same start time (an old record has none: never)."""
    fields = _stat(handle.pid)
    return (
        bool(fields)
        and fields[0] not in ("Z", "X")
        and handle.started is not None
        and int(fields[19]) == handle.started
        and int(fields[2]) == handle.pid
    )


def stop_transfer(handle: TransferHandle) -> bool:
    """TERM the transfer's process group if `transfer_alive`; False if it ran no more."""
    if not transfer_alive(handle):
        return False
    try:
        os.killpg(handle.pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended just now
        return False
    return True


def _running(log_path: str) -> bool:
    """True while a process of the transfer still holds the log's lock."""
    try:
        fd = os.open(log_path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise TransferError(f"transfer log {log_path} is gone") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _exit_code(status_path: str) -> int | None:
    try:
        match = _STATUS.fullmatch(Path(status_path).read_text().strip())
    except FileNotFoundError:
        return None
    return int(match[1]) if match else None


def poll(handle: TransferHandle) -> TransferStatus:
    """The state of a background transfer, from any process (e.g. a later cron run)."""
    running = _running(handle.log_path)  # before reading the status: no race with the end
    raw = Path(handle.log_path).read_bytes()
    progress = parse_progress(raw)
    if running:
        return TransferStatus(TransferState.RUNNING, None, progress, None, transient=False)
    code = _exit_code(handle.status_path)
    if code == 0:
        return TransferStatus(TransferState.SUCCEEDED, 0, progress, None, transient=False)
    diagnostics = _diagnostics(raw)
    message = diagnostics[0] if diagnostics else None
    if code is None:
        return TransferStatus(TransferState.VANISHED, None, progress, message, transient=True)
    log = "\n".join(diagnostics)
    unreachable = could_not_connect(log)  # exit 12 or 255, as rsync sees ssh end
    return TransferStatus(
        TransferState.FAILED, code, progress, message, is_transient(code, log), unreachable
    )
