"""Which of this machine's watchdog runs died with jobs in hand.

Each stage run holds an exclusive `flock` on a file of its own in the member's state folder
(`RUNS`, 0700) for as long as it lives; the kernel lets go of it when the process ends, however
it ends (kill -9 too), and never while it lives (stopped, or busy for hours). A later run that
can lock such a file knows its run is dead, and frees the leases that run held (their jobs are
the member's alone) at once instead of after `lease_seconds`; then removes the file. The file
names the run's owner (host, pid and a random token, which no later process with the same pid
shares) and member; a run reads only the files of its own member and host.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from labctl.private import open_private, private_dir

RUNS = ".runs"
"""The folder of the runs' files in the state folder (no job id starts with a dot)."""


class Mark(BaseModel):
    """What a run's file says: whose leases it holds."""

    owner: str
    member: str
    host: str


@dataclass
class RunLock:
    """A run's file, locked by this process (its own, or a dead run's it found)."""

    mark: Mark
    path: Path
    fd: int

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.drop()

    def drop(self, *, remove: bool = True) -> None:
        """Let go of the file's lock, removing the file first (unless told not to)."""
        if remove:
            with suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)


def new_owner(host: str) -> str:
    """An owner id for a run of this process: `host:pid:token`."""
    return f"{host}:{os.getpid()}:{secrets.token_hex(8)}"


def hold(state_dir: Path, mark: Mark) -> RunLock:
    """Lock a new file for this run until it ends. It is made and locked under a temporary
    name and then renamed, so that no run ever sees it unlocked while this one lives."""
    folder = private_dir(state_dir / RUNS)
    path = folder / f"{secrets.token_hex(8)}.run"
    temp = path.with_suffix(".new")
    fd = open_private(temp, os.O_RDWR | os.O_EXCL)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: no one else has it
        os.write(fd, mark.model_dump_json().encode())
        temp.rename(path)
    except BaseException:
        temp.unlink()
        os.close(fd)
        raise
    return RunLock(mark, path, fd)


def dead(state_dir: Path, member: str, host: str, limit: int) -> list[RunLock]:
    """Up to `limit` runs of `member` on `host` that ended without removing their file, each
    file now locked by this process."""
    found: list[RunLock] = []
    folder = state_dir / RUNS
    paths = sorted(folder.glob("*.run")) if folder.is_dir() else []
    for path in paths:
        if len(found) >= limit:
            break
        if (lock := _unheld(path)) is None:
            continue
        if lock.mark.member == member and lock.mark.host == host:
            found.append(lock)
        else:
            lock.drop(remove=False)
    return found


def _unheld(path: Path) -> RunLock | None:
    """The run file at `path`, locked here, if no live process holds it (and it reads)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # removed meanwhile by the run that found it dead
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        mark = Mark.model_validate_json(os.read(fd, 4096))
    except (BlockingIOError, ValidationError):  # alive; or not a file of ours
        os.close(fd)
        return None
    return RunLock(mark, path, fd)
