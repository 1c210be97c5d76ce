"""What people do to jobs: cancel and retry, with who may and in which states (the CLI, the
REST API, the dashboard and bulk actions all come here); the changes go through `queue`."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from labctl.clock import utcnow
from labctl.db import Database
from labctl.errors import DuplicateError, PermissionDenied, ValidationError
from labctl.jobs.queue import read_job, transition
from labctl.model.job import Job
from labctl.model.states import ACTIVE, RETRYABLE, FailureReason, JobState


def is_admin(db: Database, username: str) -> bool:
    user = db.users.find_one({"username": username}, ["role"])
    return bool(user and user.get("role") == "admin")


def check_may_change(db: Database, job: Job, username: str) -> None:
    if job.user != username and not is_admin(db, username):
        raise PermissionDenied(
            f"job {job.job_id} belongs to {job.user}; only they or an admin may change it"
        )


def check_cancellable(job: Job) -> None:
    if job.status not in ACTIVE:
        raise ValidationError(f"job {job.job_id} is already {job.status}")


def check_retryable(job: Job) -> None:
    if job.status not in RETRYABLE:
        raise ValidationError(
            f"only failed or cancelled jobs can be retried; {job.job_id} is {job.status}"
        )


def cancel_job(db: Database, job_id: str, username: str) -> dict[str, Any]:
    """Mark a job cancelled; the watchdog stops its transfer or SLURM job on the cluster."""
    job = read_job(db, job_id)
    check_may_change(db, job, username)
    check_cancellable(job)
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
    return done.doc()


def retry_job(db: Database, job_id: str, username: str) -> dict[str, Any]:
    """Put a failed or cancelled job back in the queue, from the start (out of the archive)."""
    job = read_job(db, job_id)
    check_may_change(db, job, username)
    check_retryable(job)
    archived = db.archive.find_one({"_id": job_id})
    if archived is not None:  # copied back before it leaves the archive (see `read_job`)
        with suppress(DuplicateError):  # still in the queue too: a move killed half-way
            db.queue.insert(archived)
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
            "scheduler": None,
            "resubmission": None,
            "scratch_cleaned": False,  # a cancelled attempt's folders were removed
            "owner": None,
            "lease_until": None,
            "attempt": job.attempt + 1,
        },
    )
    if done is None:
        raise ValidationError(f"job {job_id} changed state meanwhile; look again")
    if archived is not None:
        db.archive.delete({"_id": job_id})
    return done.doc()
