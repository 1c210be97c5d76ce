"""`labctl log` on a real terminal (a pseudo-terminal): missing required fields are asked for."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import yaml

from labctl.config import Config
from labctl.db import connect


def read_until(fd: int, text: bytes, timeout: float = 20) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"waited for {text!r}, got {seen!r}"
        try:
            seen += os.read(fd, 1024)
        except OSError:  # the child closed the terminal
            break
    return seen


def test_missing_required_fields_are_prompted_on_a_terminal(config: Config, tmp_path: Path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    main, child = pty.openpty()
    labctl = Path(sys.executable).parent / "labctl"
    proc = subprocess.Popen(
        [str(labctl), "--config", str(config_file), "log", "20211215_093527", "--user", "charlie"],
        stdin=child,
        stdout=child,
        stderr=child,
        close_fds=True,
    )
    os.close(child)
    try:
        read_until(main, b"data_raw_path (where the raw data lie):")
        os.write(main, b"/nfs/typed/at/the/prompt\n")
        output = read_until(main, b"logged 20211215_093527")
        assert proc.wait(timeout=20) == 0, output
    finally:
        os.close(main)
        proc.kill()
    with connect(config.database) as db:
        assert db.data.find_one({"dataset": "20211215_093527"}, ["user", "data_raw_path"]) == {
            "user": "charlie",
            "data_raw_path": "/nfs/typed/at/the/prompt",
        }
