"""The `queue` collection: reading jobs and moving them through their states.

Every state change goes through `transition`, a compare-and-set on the current state that also
appends to the job's history; watchdog stages take jobs with `claim` (owner + lease), so that
overlapping cron runs never work on the same job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from labctl.clock import utcnow
from labctl.db import Database
from labctl.errors import LabctlError, NotFoundError, ValidationError
from labctl.jobs.states import ACTIVE, FailureReason, JobState, check_transition


class PermissionDenied(LabctlError):
    """The user may not act on this job."""


def history_item(state: JobState, note: str, now: dt.datetime) -> dict[str, Any]:
    return {"state": str(state), "at": now, "note": note}


def get_job(db: Database, job_id: str) -> dict[str, Any]:
    job = db.queue.find_one({"job_id": job_id})
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    job.pop("_id", None)
    return job


def list_jobs(
    db: Database,
    *,
    user: str | None = None,
    status: str | None = None,
    dataset: str | None = None,
    limit: int = 0,
) -> list[dict[str, Any]]:
    filter: dict[str, Any] = {}
    if user:
        filter["user"] = user
    if dataset:
        filter["dataset"] = dataset
    if status:
        filter["status"] = str(JobState(status))
    jobs = db.queue.find(filter, sort=[("created_at", -1)], limit=limit)
    for job in jobs:
        job.pop("_id", None)
    return jobs


def transition(
    db: Database,
    job: Mapping[str, Any],
    new: JobState,
    note: str = "",
    *,
    fields: Mapping[str, Any] | None = None,
    reason: FailureReason | None = None,
) -> dict[str, Any] | None:
    """Move `job` from the state it was read in to `new`, recording why.

    Returns the updated job, or None when another process changed its state first.
    """
    old = JobState(job["status"])
    check_transition(old, new)
    now = utcnow()
    changes: dict[str, Any] = {
        "status": str(new),
        "updated_at": now,
        "waiting": None,  # a job that moves waits for nothing any more
        **(fields or {}),
    }
    if new is JobState.CANCELLED:
        reason = reason or FailureReason.CANCELLED
    if new is JobState.FAILED or new is JobState.CANCELLED:
        if reason is None:
            raise ValueError("a failed job needs a FailureReason")
        changes["failure"] = {"reason": str(reason), "message": note}
    done = db.queue.claim(
        {"job_id": job["job_id"], "status": str(old)},
        {"$set": changes, "$push": {"history": history_item(new, note, now)}},
    )
    if done is not None:
        done.pop("_id", None)  # like get_job: the store's own key is not part of a job
    return done


def claim(
    db: Database, filter: Mapping[str, Any], owner: str, lease: dt.timedelta
) -> dict[str, Any] | None:
    """Take one job matching `filter` whose lease is free or expired, for `lease`."""
    now = utcnow()
    free = {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
    return db.queue.claim(
        {**filter, **free},
        {"$set": {"owner": owner, "lease_until": now + lease}},
        sort=[("created_at", 1)],
    )


def release(db: Database, job_id: str, owner: str) -> None:
    db.queue.update(
        {"job_id": job_id, "owner": owner}, {"$set": {"owner": None, "lease_until": None}}
    )


def is_admin(db: Database, username: str) -> bool:
    user = db.users.find_one({"username": username}, ["role"])
    return bool(user and user.get("role") == "admin")


def check_may_change(db: Database, job: Mapping[str, Any], username: str) -> None:
    if job["user"] != username and not is_admin(db, username):
        raise PermissionDenied(
            f"job {job['job_id']} belongs to {job['user']}; only they or an admin may change it"
        )


def cancel_job(db: Database, job_id: str, username: str) -> dict[str, Any]:
    """Mark a job cancelled; the watchdog stops its transfer or SLURM job on the cluster."""
    job = get_job(db, job_id)
    check_may_change(db, job, username)
    if JobState(job["status"]) not in ACTIVE:
        raise ValidationError(f"job {job_id} is already {job['status']}")
    done = transition(
        db,
        job,
        JobState.CANCELLED,
        f"cancelled by {username}",
        fields={"cleanup_pending": True},
        reason=FailureReason.CANCELLED,
    )
    if done is None:
        raise ValidationError(f"job {job_id} changed state meanwhile; look again")
    return done


def retry_job(db: Database, job_id: str, username: str) -> dict[str, Any]:
    """Put a failed or cancelled job back in the queue, from the start."""
    job = get_job(db, job_id)
    check_may_change(db, job, username)
    if JobState(job["status"]) not in (JobState.FAILED, JobState.CANCELLED):
        raise ValidationError(
            f"only failed or cancelled jobs can be retried; {job_id} is {job['status']}"
        )
    done = transition(
        db,
        job,
        JobState.QUEUED,
        f"retried by {username}",
        fields={
            "failure": None,
            "retries": 0,
            "next_try_at": utcnow(),
            "transfer": None,
            "slurm": None,
            "owner": None,
            "lease_until": None,
            "attempt": int(job.get("attempt", 1)) + 1,
        },
    )
    if done is None:
        raise ValidationError(f"job {job_id} changed state meanwhile; look again")
    return done
