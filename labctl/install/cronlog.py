"""Append stdin to a log file, each line time-stamped, rotating it when it grows too big.

Used by the crontab block: `... 2>&1 | python -m labctl.install.cronlog --max-bytes N --keep K LOG`.
LOG is renamed LOG.1 (LOG.1 to LOG.2, ...; the oldest beyond K is dropped) before a run's output
would be appended to a LOG of N bytes or more. The log folder is 0700 and the logs 0600 (a URI
or a path in an error is nobody else's business). Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from labctl.private import open_private, private_dir


def rotate(log: Path, keep: int) -> None:
    """LOG -> LOG.1 -> ... -> LOG.keep; what was LOG.keep is dropped."""
    for n in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{n + 1}"))
    if keep > 0:
        log.replace(log.with_name(f"{log.name}.1"))
    else:
        log.unlink()


def _open(log: Path, max_bytes: int, keep: int) -> BinaryIO:
    """`log` opened to append, in a private folder as a private file; rotated first if full."""
    private_dir(log.parent)
    if log.exists() and log.stat().st_size >= max_bytes:
        rotate(log, keep)
    return os.fdopen(open_private(log, os.O_WRONLY | os.O_APPEND), "ab")


def append(log: Path, lines: Iterable[bytes], max_bytes: int, keep: int) -> None:
    """Write `lines` to `log` with a UTC time stamp each; rotate first if `log` is full."""
    out = None
    try:
        for line in lines:
            if out is None:  # a run without output leaves the log alone
                out = _open(log, max_bytes, keep)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ ")
            out.write(stamp.encode() + line.rstrip(b"\n") + b"\n")
    finally:
        if out is not None:
            out.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labctl.install.cronlog", description=__doc__)
    parser.add_argument("log", type=Path)
    parser.add_argument("--max-bytes", type=int, default=1_000_000)
    parser.add_argument("--keep", type=int, default=3)
    args = parser.parse_args(argv)
    append(args.log, sys.stdin.buffer, args.max_bytes, max(args.keep, 0))


if __name__ == "__main__":
    main()
