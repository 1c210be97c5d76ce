"""Upgrading stored jobs written by an older labctl (`labctl db migrate`, run by the watchdog
too when it finds an older store).

Each upgrade is idempotent and guarded per job, so a run killed half-way leaves every job either
old or new, never half of each, and every reader reads both. One process upgrades at a time (a
lease in `meta`): on the embedded store, two writing the same large queue would each rebuild its
indexes after every write of the other.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

from labctl.compute.slurm import SchedulerError, to_job_state
from labctl.config import Config
from labctl.db import Database
from labctl.errors import LabctlError
from labctl.jobs.queue import archive_settled, take
from labctl.model.job import SCHEMA_VERSION
from labctl.model.states import JobState

_SCHEMA_KEY = "schema"
_UPGRADE_KEY = "schema-upgrade"
_UPGRADE_LEASE = dt.timedelta(hours=1)  # a store of 100k jobs: about 10 minutes


class UpgradeBusy(LabctlError):
    """Another process is upgrading the store."""


# What labctl 0.1's process scheduler recorded in SLURM's words, by what those words mean, is
# said today as the process scheduler says it.
_PROCESS_WORDS = {
    JobState.RUNNING: "alive",
    JobState.RETRIEVING: "exited",
    JobState.FAILED: "exited",
    JobState.CANCELLED: "killed",
}


def _process_word(slurm_word: str | None) -> str | None:
    if slurm_word is None:
        return None
    try:
        state, _ = to_job_state(slurm_word, None)
    except SchedulerError:
        return slurm_word  # not a SLURM word: kept as it is
    return _PROCESS_WORDS.get(state)


def stored_version(db: Database) -> int:
    found = db.meta.find_one({"key": _SCHEMA_KEY}, ["version"])
    return int(found["version"]) if found else 1


def scheduler_of(slurm: dict[str, Any], process: bool) -> dict[str, Any]:
    """A version-1 `slurm` field as a version-2 `scheduler` field."""
    if not process:
        return slurm
    states = {k: _process_word(v) for k, v in (slurm.get("task_states") or {}).items()}
    return {**slurm, "state": _process_word(slurm.get("state")), "task_states": states}


def migrate(db: Database, config: Config) -> int:
    """Bring every stored job to SCHEMA_VERSION; return how many were changed. UpgradeBusy if
    another process is at it."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    lock = {"key": _UPGRADE_KEY}
    db.meta.update(lock, {"$set": {"kind": _UPGRADE_KEY}}, upsert=True)
    if take(db.meta, lock, owner, _UPGRADE_LEASE) is None:
        raise UpgradeBusy(f"{db.where}: another process is upgrading the store; try again later")
    try:
        return _upgrade(db, config, owner)
    finally:
        db.meta.update({**lock, "owner": owner}, {"$set": {"owner": None, "lease_until": None}})


def _upgrade(db: Database, config: Config, owner: str) -> int:
    changed: set[str] = set()
    fields = ["job_id", "compute_cluster", "slurm", "scheduler"]
    for doc in db.queue.find({"slurm": {"$exists": True}}, fields):  # version 2
        cluster = config.clusters.get(doc["compute_cluster"])
        process = cluster is not None and cluster.scheduler == "process"
        new: dict[str, Any] = {"$unset": {"slurm": ""}}
        if doc["slurm"] is not None and "scheduler" not in doc:  # a newer labctl wrote none yet
            new["$set"] = {"scheduler": scheduler_of(doc["slurm"], process)}
        if db.queue.update({"job_id": doc["job_id"], "slurm": {"$exists": True}}, new):
            changed.add(doc["job_id"])
    changed.update(archive_settled(db, owner, _UPGRADE_LEASE))  # version 3
    db.meta.update(
        {"key": _SCHEMA_KEY},
        {"$set": {"kind": _SCHEMA_KEY, "version": SCHEMA_VERSION}},
        upsert=True,
    )
    return len(changed)


def migrate_if_needed(db: Database, config: Config) -> int:
    """`migrate` when the store is older than this labctl and no other process is at it: one
    read otherwise."""
    if stored_version(db) >= SCHEMA_VERSION:
        return 0
    try:
        return migrate(db, config)
    except UpgradeBusy:
        return 0
