"""Files only their owner may read: the embedded store, the watchdog's state and its logs.

Directories are made 0700 and files 0600 with explicit modes, whatever the umask. One that exists
already with wider modes (made by an older labctl) is narrowed when labctl opens it, if it is ours.
Standard library only: `labctl.install.cronlog` uses it and must start fast.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _narrow(path: Path, mode: int) -> None:
    """chmod `path` to `mode` if it is ours and not a symlink."""
    info = path.lstat()
    ours = info.st_uid == os.getuid() and not stat.S_ISLNK(info.st_mode)
    if ours and stat.S_IMODE(info.st_mode) != mode:
        path.chmod(mode)


def private_dir(path: Path) -> Path:
    """`path` as a 0700 directory (created with its missing parents); returns it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _narrow(path, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """`os.open` of `path` (created if missing) as a 0600 file; returns the descriptor."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    info = os.fstat(fd)
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd


def write_private(path: Path, text: str) -> None:
    """Replace the contents of `path` with `text`, as a 0600 file."""
    with open(open_private(path, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as out:
        out.write(text)


def narrow_tree(root: Path) -> None:
    """Every directory under `root` (itself included) 0700, every file 0600, those that are ours."""
    for folder, _, files in os.walk(root):
        _narrow(Path(folder), DIR_MODE)
        for name in files:
            _narrow(Path(folder) / name, FILE_MODE)


class FileLock:
    """Process-wide exclusive lock: a thread lock plus `flock` on a file (re-entrant per thread)."""

    def __init__(self, path: Path) -> None:
        self._file = os.fdopen(open_private(path, os.O_RDWR | os.O_APPEND), "a+")
        self._thread_lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self._file.close()
