"""Upgrading a store written by labctl 0.1 (the `slurm` field) to today's jobs (`scheduler`).

tests/captured/queue-v1.json holds queue documents exactly as labctl 0.1 stored them: a completed,
a failed, a running and a queued job on a `local` cluster with the process scheduler (see
tests/captured/README.md for how they were made).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from click.testing import CliRunner

from labctl.cli import cli
from labctl.clock import utcnow
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.migrate import (
    UpgradeBusy,
    migrate,
    migrate_if_needed,
    scheduler_of,
    stored_version,
)
from labctl.jobs.queue import all_jobs, get_job, list_jobs, read_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.job import SCHEMA_VERSION
from labctl.model.states import TERMINAL, JobState
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, local_jobs
from tests.test_archive import finished
from tests.testbed import write_config

CAPTURED = Path(__file__).parent / "captured" / "queue-v1.json"


def v1_jobs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json_util.loads(CAPTURED.read_text())
    return docs


@pytest.fixture
def old_store(config: Config, db: Database, tmp_path: Path) -> Config:
    """A store holding labctl 0.1's jobs, and a config for its `local` process cluster."""
    cfg = local_jobs(config, db, tmp_path)
    assert cfg.clusters["local"].scheduler == "process"
    db.queue.insert_many(v1_jobs())
    return cfg


def test_the_capture_is_what_labctl_0_1_wrote() -> None:
    docs = {doc["status"]: doc for doc in v1_jobs()}
    assert sorted(docs) == ["completed", "failed", "queued", "running"]
    assert all("scheduler" not in doc for doc in docs.values())
    assert docs["failed"]["slurm"]["state"] == "FAILED"  # the invented SLURM word
    assert "slurm" not in docs["queued"]


def test_an_old_job_reads_as_today_before_it_is_migrated(old_store: Config, db: Database) -> None:
    for doc in v1_jobs():
        job = read_job(db, doc["job_id"])
        assert job.scheduler_id == (doc.get("slurm") or {}).get("job_id")
        assert "slurm" not in get_job(db, doc["job_id"])


def test_migrate_upgrades_every_old_job_once(old_store: Config, db: Database) -> None:
    assert stored_version(db) == 1
    assert migrate(db, old_store) == 3  # the queued job has no scheduler record
    assert db.queue.count({"slurm": {"$exists": True}}) == 0
    assert stored_version(db) == SCHEMA_VERSION
    by_state = {doc["status"]: doc for doc in all_jobs(db, {})}
    words = {
        state: by_state[state]["scheduler"]["state"] for state in by_state if state != "queued"
    }
    assert words == {"completed": "exited", "failed": "exited", "running": "alive"}
    assert by_state["failed"]["scheduler"]["exit_code"] == 3
    assert "scheduler" not in by_state["queued"]
    live = sorted(doc["status"] for doc in db.queue.find({}, ["status"]))
    assert live == ["queued", "running"]  # version 3: the finished ones are archived
    assert sorted(doc["status"] for doc in db.archive.find({}, ["status"])) == [
        "completed",
        "failed",
    ]
    assert migrate(db, old_store) == 0  # safe to rerun


def test_labctl_db_migrate_and_status_on_an_old_store(
    old_store: Config, db: Database, tmp_path: Path
) -> None:
    path = write_config(old_store, tmp_path / "config.yaml")
    runner = CliRunner()
    done = runner.invoke(cli, ["--config", str(path), "db", "migrate"])
    assert done.exit_code == 0, done.output
    assert done.output.endswith(": 3 job(s) upgraded to the current format\n")
    failed = next(doc for doc in v1_jobs() if doc["status"] == "failed")
    status = runner.invoke(cli, ["--config", str(path), "status", failed["job_id"], "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert "slurm" not in shown
    assert (shown["scheduler"]["state"], shown["scheduler"]["exit_code"]) == ("exited", 3)


def test_the_watchdog_upgrades_an_old_store_and_runs_new_jobs_in_it(
    old_store: Config, db: Database
) -> None:
    request = JobRequest(
        dataset=DATASET, compute_cluster="local", job_type="selftest", datarawfiles=["fl_a.roli"]
    )
    job_id = submit_job(db, old_store, request, force=True)["job_id"]
    deadline = time.monotonic() + 30
    while (job := read_job(db, job_id)).status not in TERMINAL:
        assert time.monotonic() < deadline, job.history
        run_stages(LocalStore.of(db, old_store), old_store, ["scan", "transfers", "jobs"])
        reap_children()
        time.sleep(0.2)
    assert job.status is JobState.COMPLETED, job.failure
    assert stored_version(db) == SCHEMA_VERSION
    assert db.queue.count({"slurm": {"$exists": True}}) == 0


def test_migrate_moves_the_history_to_the_archive(old_store: Config, db: Database) -> None:
    migrate(db, old_store)  # labctl 0.1's jobs, then a version-2 store's history:
    settled = finished(db, old_store, 600, JobState.COMPLETED)
    unsettled = finished(db, old_store, 1, JobState.COMPLETED)
    db.queue.update({"job_id": unsettled[0]}, {"$set": {"scratch_cleaned": False}})
    db.meta.update({"key": "schema"}, {"$set": {"version": 2}})
    assert migrate(db, old_store) == 600
    assert stored_version(db) == SCHEMA_VERSION == 3
    in_queue = {doc["job_id"] for doc in db.queue.find({}, ["job_id"])}
    assert unsettled[0] in in_queue and not in_queue & set(settled)
    assert db.archive.count({}) == 600 + 2
    assert {job.job_id for job in list_jobs(db).items} >= {*settled, *unsettled}
    assert migrate(db, old_store) == 0


def test_one_process_upgrades_at_a_time(old_store: Config, db: Database) -> None:
    held = {"owner": "other:1", "lease_until": utcnow() + dt.timedelta(minutes=5)}
    db.meta.update({"key": "schema-upgrade"}, {"$set": held}, upsert=True)
    with pytest.raises(UpgradeBusy, match="another process is upgrading"):
        migrate(db, old_store)
    assert migrate_if_needed(db, old_store) == 0  # the watchdog goes on meanwhile
    assert stored_version(db) == 1
    died = {"lease_until": utcnow() - dt.timedelta(seconds=1)}
    db.meta.update({"key": "schema-upgrade"}, {"$set": died})
    assert migrate(db, old_store) == 3
    assert stored_version(db) == SCHEMA_VERSION


def test_a_slurm_record_keeps_slurm_s_words() -> None:
    old = {"job_id": "138", "tasks": 4, "state": "TIMEOUT", "task_states": {"0": "TIMEOUT"}}
    assert scheduler_of(old, process=False) == old
    assert scheduler_of(old | {"state": "RUNNING"}, process=True)["state"] == "alive"
