"""Finished jobs leave the queue for the archive, where the watchdog's stages never read them, and
every reader still sees each job exactly once: after a move killed half-way (in-process and by
SIGKILL of a real process), and when a retry brings one back. Both backends.

The child process is this file run as a script (`python test_archive.py CONFIG_JSON`): it
archives one job at a time, printing each id once moved, until the parent kills it.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labctl.config import Config, DatabaseConfig
from labctl.db import Collection, Database, connect
from labctl.jobs.actions import (
    retry_job,
)
from labctl.jobs.provenance import provenance
from labctl.jobs.queue import (
    all_jobs,
    archive_settled,
    get_job,
    list_jobs,
    read_job,
)
from labctl.jobs.submit import JobRequest, new_job_id, submit_job
from labctl.model.states import TERMINAL, JobState
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.memberops import HasWork
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, local_jobs

ALL = ["scan", "transfers", "jobs"]
LEASE = dt.timedelta(seconds=0.5)


def move(db: Database, limit: int = 0) -> list[str]:
    """Archive settled jobs as a watchdog run on this process would."""
    return archive_settled(db, f"test:{os.getpid()}", LEASE, limit=limit)


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    return local_jobs(config, db, tmp_path)


def finished(db: Database, cfg: Config, count: int, state: JobState) -> list[str]:
    """`count` copies of one submitted job, finished in `state` and settled; their ids."""
    request = JobRequest(
        dataset=DATASET, compute_cluster="local", job_type="selftest", datarawfiles=["fl_a.roli"]
    )
    model = submit_job(db, cfg, request, force=True)
    db.queue.delete({"job_id": model["job_id"]})
    model.pop("_id", None)
    created = model["created_at"]
    docs = [
        {
            **model,
            "job_id": new_job_id(),
            "status": str(state),
            "scratch_cleaned": True,
            "created_at": created + dt.timedelta(minutes=i),  # the last one the newest
        }
        for i in range(count)
    ]
    if state is not JobState.COMPLETED:
        reason = "cancelled" if state is JobState.CANCELLED else "exit_code"
        for doc in docs:
            doc["failure"] = {"reason": reason, "message": "it ended"}
    db.queue.insert_many(docs)
    return [doc["job_id"] for doc in docs]


def ids_shown(db: Database) -> list[str]:
    return [job.job_id for job in list_jobs(db).items]


def test_a_job_run_by_the_watchdog_ends_in_the_archive(cfg: Config, db: Database) -> None:
    request = JobRequest(
        dataset=DATASET, compute_cluster="local", job_type="selftest", datarawfiles=["fl_a.roli"]
    )
    job_id = submit_job(db, cfg, request, force=True)["job_id"]
    deadline = time.monotonic() + 60
    while db.archive.count({"_id": job_id}) == 0:
        assert time.monotonic() < deadline, get_job(db, job_id)["history"]
        run_stages(LocalStore.of(db, cfg), cfg, ALL)
        reap_children()
        time.sleep(0.2)
    assert db.queue.count({}) == 0
    assert get_job(db, job_id)["status"] == str(JobState.COMPLETED)
    assert ids_shown(db) == [job_id]
    assert [record["job_id"] for record in provenance(db, DATASET).items] == [job_id]
    assert not LocalStore.of(db, cfg).run(HasWork())


def test_the_stages_never_read_the_archive(
    cfg: Config, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished(db, cfg, 3, JobState.FAILED)
    run_stages(LocalStore.of(db, cfg), cfg, ALL)  # archives them
    assert db.archive.count({}) == 3
    finished(db, cfg, 2, JobState.CANCELLED)
    request = JobRequest(
        dataset=DATASET, compute_cluster="local", job_type="selftest", datarawfiles=["fl_a.roli"]
    )
    submit_job(db, cfg, request, force=True)
    calls: list[tuple[str, str]] = []
    for method in ("find", "find_one", "claim", "count", "distinct", "update", "insert"):
        real = getattr(Collection, method)

        def spy(
            self: Collection, *args: Any, _real: Any = real, _name: str = method, **kw: Any
        ) -> Any:
            calls.append((self.name, _name))
            return _real(self, *args, **kw)

        monkeypatch.setattr(Collection, method, spy)
    run_stages(LocalStore.of(db, cfg), cfg, ALL)
    reap_children()
    assert ("queue", "claim") in calls
    assert [call for call in calls if call[0] == "archive"] == [("archive", "insert")] * 2
    assert db.archive.count({}) == 5


def test_a_move_killed_after_its_copy_shows_the_job_once(cfg: Config, db: Database) -> None:
    (job_id,) = finished(db, cfg, 1, JobState.FAILED)
    stale = db.queue.find_one({"job_id": job_id})
    assert stale is not None
    db.archive.insert({**stale, "_id": job_id, "log_tail": "an older copy"})  # copied, then -9
    db.queue.update({"job_id": job_id}, {"$set": {"log_tail": "the queue's copy"}})
    assert ids_shown(db) == [job_id]
    assert get_job(db, job_id)["log_tail"] == "the queue's copy"
    retried = {"status": str(JobState.QUEUED)}
    db.queue.update({"job_id": job_id}, {"$set": retried})  # a retry since: the copy is older
    assert list_jobs(db, status=str(JobState.FAILED)).items == []
    assert [job.status for job in list_jobs(db).items] == [str(JobState.QUEUED)]
    db.queue.update({"job_id": job_id}, {"$set": {"status": str(JobState.FAILED)}})
    assert move(db) == [job_id]  # the next move replaces the older copy
    assert db.queue.count({}) == 0
    assert get_job(db, job_id)["log_tail"] == "the queue's copy"
    assert ids_shown(db) == [job_id]


def test_retry_brings_an_archived_job_back(cfg: Config, db: Database) -> None:
    (job_id,) = finished(db, cfg, 1, JobState.CANCELLED)
    assert move(db) == [job_id]
    done = retry_job(db, job_id, cfg.user)
    assert done["status"] == str(JobState.QUEUED)
    assert db.archive.count({}) == 0
    assert db.queue.find_one({"job_id": job_id}, ["status"]) == {"status": "queued"}
    assert [job.status for job in list_jobs(db).items] == [str(JobState.QUEUED)]
    assert LocalStore.of(db, cfg).run(HasWork())


def test_retry_after_a_move_killed_half_way(cfg: Config, db: Database) -> None:
    (job_id,) = finished(db, cfg, 1, JobState.FAILED)
    doc = db.queue.find_one({"job_id": job_id})
    assert doc is not None
    db.archive.insert({**doc, "_id": job_id})  # in both
    retry_job(db, job_id, cfg.user)
    assert db.archive.count({}) == 0
    assert read_job(db, job_id).status is JobState.QUEUED
    assert ids_shown(db) == [job_id]


def test_lists_keep_their_order_and_limit_across_queue_and_archive(
    cfg: Config, db: Database
) -> None:
    ids = finished(db, cfg, 6, JobState.FAILED)
    move(db, limit=3)  # the three oldest (natural order) move
    doc = db.queue.find_one({"job_id": ids[3]})
    assert doc is not None
    db.archive.insert({**doc, "_id": ids[3]})  # and one is half-way
    assert db.queue.count({}) == 3
    assert ids_shown(db) == ids[::-1]
    assert [job.job_id for job in list_jobs(db, limit=4).items] == ids[:1:-1]
    shown = all_jobs(db, {}, sort=[("created_at", 1)], limit=2)
    assert [doc["job_id"] for doc in shown] == ids[:2]


# --- kill -9 ---------------------------------------------------------------------------------


def _archiver(config_json: str) -> None:
    """Archive one job at a time (as slowly as the store lets it), printing each id moved."""
    with connect(DatabaseConfig.model_validate_json(config_json)) as db:
        print("ready", flush=True)
        while moved := move(db, limit=1):
            print(moved[0], flush=True)


def test_a_sigkilled_archiver_loses_and_doubles_nothing(cfg: Config, db: Database) -> None:
    ids = finished(db, cfg, 300, JobState.FAILED)
    rng = random.Random(12)
    kills = 0
    while db.queue.count({}) and kills < 6:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_archive", cfg.database.model_dump_json()],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,  # the repository: `tests` is importable there
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        shown = ids_shown(db)
        assert sorted(shown) == sorted(ids)  # each job once, none lost
        assert all(read_job(db, job_id).status is JobState.FAILED for job_id in ids)
    assert kills >= 2, "the archiver finished before it could be killed twice"
    time.sleep(LEASE.total_seconds())  # the job a killed run held is free again
    while move(db):
        pass
    assert db.queue.count({}) == 0
    assert sorted(doc["_id"] for doc in db.archive.find({}, ["_id"])) == sorted(ids)
    assert all(JobState(doc["status"]) in TERMINAL for doc in all_jobs(db, {}))


if __name__ == "__main__":
    _archiver(sys.argv[1])
