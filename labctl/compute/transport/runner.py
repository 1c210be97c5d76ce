"""The command seam: run argv lists and move small files, here or (see ssh.py) on a cluster."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from labctl.errors import LabctlError


class TransportError(LabctlError):
    """Base class: running a command or reaching a host failed."""

    transient: ClassVar[bool] = False


class ConnectError(TransportError):
    """The host could not be reached (refused, unreachable, timed out, dropped): retry later."""

    transient = True


class HostKeyError(TransportError):
    """The host key is unknown or changed: a human must check and update known_hosts."""


class AuthError(TransportError):
    """The key, password or one-time password was rejected: a human must fix the credentials."""


class CommandTimeoutError(TransportError):
    """A command did not finish within its timeout."""

    transient = True


class CommandError(TransportError):
    """A command run with check=True exited non-zero."""

    def __init__(self, result: Result) -> None:
        lines = result.stderr.strip().splitlines()
        first = lines[0] if lines else "(no stderr)"
        super().__init__(f"{shlex.join(result.argv)} exited {result.returncode}: {first}")
        self.result = result


@dataclass(frozen=True)
class Result:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs commands and reads/writes small text files on one machine."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        """Run argv (no shell); raise CommandError if check and it exits non-zero."""
        ...

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a UTF-8 text file and set its permission bits."""
        ...

    def read_file(self, path: str) -> str:
        """Read a UTF-8 text file."""
        ...

    def close(self) -> None:
        """Release connections; the runner may not be used afterwards."""
        ...


def checked(result: Result, check: bool) -> Result:
    """`result`, or CommandError if `check` and it exited non-zero."""
    if check and result.returncode != 0:
        raise CommandError(result)
    return result


SECRETS = ("LABCTL_TOKEN",)
"""What labctl's own commands and the jobs they start (a `local` cluster's) never inherit."""


def child_env() -> dict[str, str]:
    """This process's environment without `SECRETS`."""
    return {name: value for name, value in os.environ.items() if name not in SECRETS}


class LocalRunner:
    """Runs commands on this machine with subprocess (argv lists, never a shell)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        every: tuple[float, Callable[[], None]] | None = None,
    ) -> Result:
        """Run argv; a missing program gives returncode 127 as a shell would. With
        `every=(SECONDS, call)`, `call()` runs every SECONDS while argv does (e.g. to renew a
        lease during a long pull)."""
        args = tuple(argv)
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=child_env(),
            )
        except FileNotFoundError as exc:
            return checked(Result(args, 127, "", f"{args[0]}: {exc.strerror}"), check)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, call = every or (None, None)
        with proc:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                waits = [w for w in (left, interval) if w is not None]
                wait = min(waits) if waits else None
                try:
                    stdout, stderr = proc.communicate(input, timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    input = None  # sent already; communicate keeps what it read so far
                    if deadline is not None and time.monotonic() >= deadline:
                        proc.kill()  # and no draining: an ssh master may hold the pipes on
                        proc.wait()
                        raise CommandTimeoutError(
                            f"{shlex.join(args)} timed out after {timeout} s"
                        ) from None
                    if call is not None:
                        call()
        return checked(Result(args, proc.returncode, stdout, stderr), check)

    def interactive(self, argv: Sequence[str]) -> Result:
        """Run argv on this terminal (the person answers its prompts on /dev/tty), passing its
        stderr through as it comes while keeping a copy to explain a failure."""
        args = tuple(argv)
        # What it leaves running (an ssh master's ProxyJump relay) must outlive this terminal:
        # the kernel sends SIGHUP to the foreground group when the terminal goes.
        hangup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            proc = subprocess.Popen(args, stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            return Result(args, 127, "", f"{args[0]}: {exc.strerror}")
        finally:
            signal.signal(signal.SIGHUP, hangup)
        assert proc.stderr is not None
        seen: list[bytes] = []

        def relay() -> None:
            assert proc.stderr is not None
            for line in iter(proc.stderr.readline, b""):
                seen.append(line)
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        code = proc.wait()
        reader.join(timeout=5)
        return Result(args, code, "", b"".join(seen).decode("utf-8", "replace"))

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a text file and chmod it."""
        Path(path).write_text(content, encoding="utf-8")
        os.chmod(path, mode)

    def read_file(self, path: str) -> str:
        """Read a text file."""
        return Path(path).read_text(encoding="utf-8")

    def close(self) -> None:
        """Nothing to release."""


_WRITE: str = (
    'umask 077 && cat > "$1.labctl-part" && chmod "$2" "$1.labctl-part" '
    '&& mv -f "$1.labctl-part" "$1"'
)


def write_remote_file(runner: Runner, path: str, content: str, mode: int) -> None:
    """Write a text file through `runner` atomically: readers see the old file or the new one."""
    runner.run(["sh", "-c", _WRITE, "write", path, f"{mode:o}"], input=content)
