"""The watchdog's loop costs nothing while there is nothing to do: DB operations counted through
the seam (every `Collection` method), on both backends."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labctl.config import Config
from labctl.db import Collection, Database
from labctl.jobs.migrate import migrate
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages import heartbeat
from labctl.stages.heartbeat import IDLE_BEAT_SECONDS, Pacer, latest
from labctl.stages.loop import run_loop
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, local_jobs

ALL = ["scan", "transfers", "jobs"]
OPERATIONS = ["insert", "insert_many", "find", "find_one", "claim", "update", "delete", "count"]


@pytest.fixture
def ops(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every DB operation from now on, counted as `collection.method`."""
    counted: Counter[str] = Counter()

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Collection, *args: Any, **kwargs: Any) -> Any:
            counted[f"{self.name}.{name}"] += 1
            return method(self, *args, **kwargs)

        return wrapper

    for name in OPERATIONS:
        monkeypatch.setattr(Collection, name, counting(name, getattr(Collection, name)))
    return counted


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path, ops: Counter[str]) -> Config:
    """Job settings and a dataset, on a store already at this labctl's schema; nothing counted."""
    cfg = local_jobs(config, db, tmp_path)
    migrate(db, cfg)
    ops.clear()
    return cfg


def loop(db: Database, cfg: Config, runs: int, ops: Counter[str]) -> list[int]:
    """Run the loop every 0.2 s; return the operations counted after each run."""
    after: list[int] = []

    def echo(line: str) -> None:
        if line.startswith(f"{ALL[-1]}:"):
            after.append(sum(ops.values()))

    run_loop(LocalStore.of(db, cfg), cfg, ALL, 0.2, runs, echo)
    return after


def test_an_idle_loop_reads_once_a_run(db: Database, cfg: Config, ops: Counter[str]) -> None:
    after = loop(db, cfg, 15, ops)
    # the first run: the look for work, then per stage its schema check and its heartbeat
    assert after[0] == 1 + 2 * len(ALL)
    assert ops["meta.update"] == len(ALL) and ops["queue.claim"] == 0
    assert {b["stage"]: b["did"] for b in latest(db).items} == {stage: {} for stage in ALL}
    # then each run is one read: whether any job of this member needs a stage
    assert [b - a for a, b in itertools.pairwise(after)] == [1] * 14


def test_an_idle_loop_beats_once_a_minute(
    db: Database, cfg: Config, ops: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a minute of 1 s: a heartbeat per stage and minute, however many runs."""
    monkeypatch.setattr(heartbeat, "IDLE_BEAT_SECONDS", 1.0)
    start = time.monotonic()
    loop(db, cfg, 15, ops)
    minutes = time.monotonic() - start
    beats = ops["meta.update"] / len(ALL)
    assert 2 <= beats <= 1 + minutes


def test_work_runs_the_stages_each_time(db: Database, cfg: Config, ops: Counter[str]) -> None:
    request = JobRequest(
        dataset=DATASET, compute_cluster="local", job_type="file_stats", datarawfiles=("fl_a.roli",)
    )
    submit_job(db, cfg, request)
    lines: list[str] = []
    run_loop(LocalStore.of(db, cfg), cfg, ALL, 0.2, 2, lines.append)
    assert lines[0] == "scan: code shipped 1, transferring 1"
    assert ops["queue.claim"] > 2 * len(ALL)  # the second run looked for work too


def test_a_pacer_writes_what_was_done_and_nothing_twice_a_minute(db: Database) -> None:
    pacer = Pacer()
    assert pacer.beats("scan", {})
    assert not pacer.beats("scan", {})
    assert not pacer.due("scan")
    assert pacer.beats("scan", {"transferring": 1})
    pacer.written["scan"] -= IDLE_BEAT_SECONDS
    assert pacer.due("scan") and pacer.beats("scan", {})
