"""labctl on a real terminal (a pseudo-terminal): missing required fields are asked for, and
tables fit an 80-column terminal without cutting ids."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import yaml

from labctl.catalog.experiments import log_entries
from labctl.config import Config
from labctl.db import connect
from labctl.jobs.submit import JobRequest, submit_job
from tests.jobfixtures import DATASET, dataset_with_files, job_config


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


def on_terminal(argv: list[str], columns: int = 80) -> str:
    """What `labctl ARGV` shows on a pseudo-terminal `columns` wide (COLUMNS set too, as a
    shell exports it)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    labctl = Path(sys.executable).parent / "labctl"
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "24"}
    proc = subprocess.Popen(
        [str(labctl), *argv], stdin=child, stdout=child, stderr=child, close_fds=True, env=env
    )
    os.close(child)
    try:
        output = read_until(main, b"\x00never\x00", timeout=60)
        assert proc.wait(timeout=20) == 0, output
    finally:
        os.close(main)
        proc.kill()
    return re.sub(r"\x1b\[[0-9;]*m", "", output.decode()).replace("\r\n", "\n")


@pytest.fixture
def busy(config: Config, tmp_path: Path) -> Path:
    """A config file whose store holds an entry with sixteen fields and two queued jobs."""
    cfg = job_config(config, tmp_path / "scratch")
    with connect(cfg.database) as db:
        dataset_with_files(db, cfg, tmp_path / "data")
        extra = {f"field_{n:02d}": f"value number {n}" for n in range(13)}
        log_entries(
            db, cfg, [("20211216_093527", {"user": "dana", "data_raw_path": "/x", **extra})]
        )
        for rawfile in ("fl_a.roli", "fl b $(x).roli"):
            request = JobRequest(
                dataset=DATASET,
                compute_cluster="local",
                job_type="file_stats",
                datarawfiles=[rawfile],
            )
            submit_job(db, cfg, request)
    path = tmp_path / "busy.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return path


def test_ids_are_whole_on_an_80_column_terminal(busy: Path) -> None:
    queue = on_terminal(["--config", str(busy), "queue"])
    with connect(Config.model_validate(yaml.safe_load(busy.read_text())).database) as db:
        ids = [job["job_id"] for job in db.queue.find({})]
    assert len(ids) == 2 and all(job_id in queue for job_id in ids), queue
    assert DATASET in queue and "…" not in queue
    assert max(len(line) for line in queue.splitlines()) <= 80, queue
    assert "scheduler" in queue.split("not shown at 80 columns: ")[1].splitlines()[0]

    query = on_terminal(["--config", str(busy), "query"])
    assert DATASET in query and "20211216_093527" in query and "…" not in query, query
    assert max(len(line) for line in query.splitlines()) <= 80
    assert "not shown at 80 columns: " in query and "field_12" in query.split("not shown")[1]
