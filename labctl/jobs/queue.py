"""The `queue` collection: reading jobs and moving them through their states.

Every state change goes through `transition`, a compare-and-set on the current state that also
appends to the job's history; watchdog stages take jobs with `claim` (owner + lease), so that
overlapping cron runs never work on the same job.

An event the job's owner is told of (it completed, failed, waits for a session) is recorded on
the job in the same write that makes it happen (`Job.notices`); each notice is then claimed on its
own, with an owner and a lease, before it is sent, and marked afterwards (`claim_notice`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from labctl.clock import utcnow
from labctl.db import Database
from labctl.errors import NotFoundError, PermissionDenied, ValidationError
from labctl.jobs.job import (
    Failure,
    HistoryItem,
    Job,
    MalformedJob,
    Notice,
    NoticeEvent,
    NoticeState,
    store_value,
)
from labctl.jobs.states import ACTIVE, RETRYABLE, FailureReason, JobState, check_transition


def history_item(state: JobState, note: str, now: dt.datetime) -> HistoryItem:
    return HistoryItem(state=state, at=now, note=note)


def where(*states: JobState, **fields: Any) -> dict[str, Any]:
    """A queue filter: jobs in one of `states` whose other fields equal (or match) `fields`.
    A dotted field name is written `transfer__done`."""
    filter = {name.replace("__", "."): value for name, value in fields.items()}
    filter["status"] = {"$in": [str(state) for state in states]}
    return filter


def get_job(db: Database, job_id: str) -> dict[str, Any]:
    """One job as the CLI, the REST API and the Python API show it."""
    return read_job(db, job_id).doc()


def read_job(db: Database, job_id: str) -> Job:
    doc = db.queue.find_one({"job_id": job_id})
    if doc is None:
        raise NotFoundError(f"no job {job_id}")
    return Job.of(doc)


def find_jobs(
    db: Database, filter: Mapping[str, Any], malformed: Callable[[MalformedJob], object]
) -> list[Job]:
    """The jobs matching `filter`; each that cannot be read goes to `malformed` instead."""
    jobs = []
    for doc in db.queue.find(filter):
        try:
            jobs.append(Job.of(doc))
        except MalformedJob as exc:
            malformed(exc)
    return jobs


def job_fields(
    db: Database, filter: Mapping[str, Any], fields: Sequence[str]
) -> list[dict[str, Any]]:
    """Only `fields` of the jobs matching `filter`, as stored: for reports over many jobs, which
    need neither whole documents nor their validation."""
    return db.queue.find(filter, fields)


def list_jobs(
    db: Database,
    *,
    user: str | None = None,
    status: str | None = None,
    dataset: str | None = None,
    limit: int = 0,
    matching: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Jobs, newest first; `matching` adds a queue filter (as `labctl.jobs.bulk` builds it)."""
    filter: dict[str, Any] = dict(matching or {})
    if user:
        filter["user"] = user
    if dataset:
        filter["dataset"] = dataset
    if status:
        filter["status"] = str(JobState(status))
    jobs = db.queue.find(filter, sort=[("created_at", -1)], limit=limit)
    return [Job.of(job).doc() for job in jobs]


def add_job(db: Database, job: Job) -> None:
    db.queue.insert(job.doc())


def active_twin(db: Database, job: Job) -> dict[str, Any] | None:
    """An active job identical to `job`: same dataset, job type, cluster, inputs and options."""
    same = {
        "dataset": job.dataset,
        "job_type": job.job_type,
        "compute_cluster": job.compute_cluster,
        "options_key": job.options_key,
        "datafiles": job.datafiles,
        "datarawfiles": job.datarawfiles,
    }
    return db.queue.find_one({**same, **where(*ACTIVE)}, ["job_id", "status"])


def _changes(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` as the `$set` of stored values; each must be a field of `Job`."""
    unknown = set(fields) - set(Job.model_fields)
    if unknown:
        raise ValueError(f"a job has no field {', '.join(sorted(unknown))}")
    return {name: store_value(value) for name, value in fields.items()}


def _as_read(job: Job) -> dict[str, Any]:
    """The job while still in the state it was read in: another run may have moved it since,
    and what this run learnt is then older than what that run wrote."""
    return {"job_id": job.job_id, "status": str(job.status)}


def transition(
    db: Database,
    job: Job,
    new: JobState,
    note: str = "",
    *,
    fields: Mapping[str, Any] | None = None,
    reason: FailureReason | None = None,
) -> Job | None:
    """Move `job` from the state it was read in to `new`, recording why, and change `fields`.

    Returns the updated job, or None when another process changed its state first.
    """
    check_transition(job.status, new)
    now = utcnow()
    changes: dict[str, Any] = {
        "status": new,
        "updated_at": now,
        "waiting": None,  # a job that moves waits for nothing any more
        **(fields or {}),
    }
    if new is JobState.CANCELLED:
        reason = reason or FailureReason.CANCELLED
    if new is JobState.FAILED or new is JobState.CANCELLED:
        if reason is None:
            raise ValueError("a failed job needs a FailureReason")
        changes["failure"] = Failure(reason=reason, message=note)
    change = _changes(changes)
    if new is JobState.COMPLETED or new is JobState.FAILED:
        key = f"{new}-{job.attempt}-{len(job.history)}"
        change.update(_new_notice(key, Notice(event=NoticeEvent(new), at=now, next_try_at=now)))
    done = db.queue.claim(
        _as_read(job),
        {"$set": change, "$push": {"history": store_value(history_item(new, note, now))}},
    )
    return None if done is None else Job.of(done)


def _new_notice(key: str, notice: Notice) -> dict[str, Any]:
    """The `$set` that records a notice due now, under `key`."""
    return {f"notices.{key}": store_value(notice), "notify_at": notice.at}


def update(db: Database, job: Job, note: str | None = None, **fields: Any) -> bool:
    """Change `fields` of a job still in the state it was read in (and add `note` to its
    history); False if it has moved on meanwhile."""
    change: dict[str, Any] = {"$set": _changes(fields)}
    if note is not None:
        change["$push"] = {"history": store_value(history_item(job.status, note, utcnow()))}
    return db.queue.update(_as_read(job), change) > 0


def update_all(db: Database, jobs: Sequence[Job], **fields: Any) -> None:
    """Change `fields` of every job still in the state it was read in: one write per state."""
    _set_all(db, jobs, _changes(fields))


def mark_waiting(
    db: Database, jobs: Sequence[Job], message: str, session: str | None = None
) -> None:
    """Note on each job (still in the state it was read in) what it waits for; when it waits
    for its owner's `session` to a cluster, with a notice to tell them."""
    now = utcnow()
    change: dict[str, Any] = {"waiting": message}
    if session is not None:
        notice = Notice(event=NoticeEvent.SESSION, at=now, cluster=session, next_try_at=now)
        change.update(_new_notice(f"session-{now:%Y%m%dT%H%M%S%f}", notice))
    _set_all(db, [job for job in jobs if job.waiting != message], change)


def _set_all(db: Database, jobs: Sequence[Job], change: Mapping[str, Any]) -> None:
    by_state: dict[JobState, list[str]] = {}
    for job in jobs:
        by_state.setdefault(job.status, []).append(job.job_id)
    for state, ids in by_state.items():
        db.queue.update({"job_id": {"$in": ids}, "status": str(state)}, {"$set": change}, many=True)


def has_work(db: Database, user: str) -> bool:
    """Whether a watchdog stage may have something to do for `user`, in one read: a job of
    theirs is active, or cancelled and still to stop, or completed and still to clean or to
    follow up, or a notice of theirs is due (the stages' own filters, all at once)."""
    pending = [
        where(*ACTIVE),
        where(JobState.CANCELLED, cleanup_pending=True),
        where(JobState.COMPLETED, scratch_cleaned=False),
        where(JobState.COMPLETED, follow_up_pending=True),
        {"notify_at": {"$lte": utcnow()}},
    ]
    return db.queue.find_one({"user": user, "$or": pending}, ["job_id"]) is not None


def claim(db: Database, filter: Mapping[str, Any], owner: str, lease: dt.timedelta) -> Job | None:
    """Take one job matching `filter` whose lease is free or expired, for `lease`."""
    now = utcnow()
    free = {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
    done = db.queue.claim(
        {**filter, **free},
        {"$set": {"owner": owner, "lease_until": now + lease}},
        sort=[("created_at", 1)],
    )
    return None if done is None else Job.of(done)


def renew(db: Database, jobs: Sequence[Job], owner: str, lease: dt.timedelta) -> None:
    """Extend `owner`'s lease on jobs it is still working on, in one write."""
    db.queue.update(
        {"job_id": {"$in": [job.job_id for job in jobs]}, "owner": owner},
        {"$set": {"lease_until": utcnow() + lease}},
        many=True,
    )


def release(db: Database, job_ids: Sequence[str], owner: str) -> None:
    """Give up `owner`'s leases on jobs, in one write."""
    db.queue.update(
        {"job_id": {"$in": list(job_ids)}, "owner": owner},
        {"$set": {"owner": None, "lease_until": None}},
        many=True,
    )


def claim_notice(
    db: Database, job_id: str, key: str, owner: str, lease: dt.timedelta
) -> Job | None:
    """Take one notice that is due, or whose claim by a run that stopped has expired, for
    `lease`; the job as it is then, or None if another run has it or it is settled."""
    now = utcnow()
    n = f"notices.{key}"
    due = {f"{n}.state": str(NoticeState.NEW), f"{n}.next_try_at": {"$lte": now}}
    stale = {f"{n}.state": str(NoticeState.SENDING), f"{n}.lease_until": {"$lt": now}}
    done = db.queue.claim(
        {"job_id": job_id, "$or": [due, stale]},
        {
            "$set": {
                f"{n}.state": str(NoticeState.SENDING),
                f"{n}.owner": owner,
                f"{n}.lease_until": now + lease,
            },
            "$inc": {f"{n}.claims": 1},
        },
    )
    return None if done is None else Job.of(done)


def settle_notice(
    db: Database, job_id: str, key: str, owner: str, state: NoticeState, **fields: Any
) -> bool:
    """Change a notice that `owner` has claimed to `state` (releasing it unless it stays
    `SENDING`), with `fields` of `Notice`; `delivered` is added to, not replaced. False if
    `owner` does not hold it (any more)."""
    n = f"notices.{key}"
    guard = {f"{n}.owner": owner, f"{n}.state": str(NoticeState.SENDING)}
    change: dict[str, Any] = {f"{n}.state": str(state)}
    if state is not NoticeState.SENDING:
        change.update({f"{n}.owner": None, f"{n}.lease_until": None})
    delivered = fields.pop("delivered", [])
    unknown = set(fields) - set(Notice.model_fields)
    if unknown:
        raise ValueError(f"a notice has no field {', '.join(sorted(unknown))}")
    change.update({f"{n}.{name}": store_value(value) for name, value in fields.items()})
    update: dict[str, Any] = {"$set": change}
    if delivered:
        update["$addToSet"] = {f"{n}.delivered": {"$each": delivered}}
    return db.queue.update({"job_id": job_id, **guard}, update) > 0


def reschedule_notices(db: Database, job_id: str) -> None:
    """Set the job's `notify_at` to when its next notice is due (None: none is), unless another
    run recorded a notice meanwhile."""
    job = read_job(db, job_id)
    times = [
        n.next_try_at if n.state is NoticeState.NEW else n.lease_until
        for n in job.notices.values()
        if n.state in (NoticeState.NEW, NoticeState.SENDING)
    ]
    due = min((t for t in times if t is not None), default=None)
    if due != job.notify_at:
        db.queue.update(
            {"job_id": job_id, "notify_at": job.notify_at}, {"$set": {"notify_at": due}}
        )


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
    """Put a failed or cancelled job back in the queue, from the start."""
    job = read_job(db, job_id)
    check_may_change(db, job, username)
    check_retryable(job)
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
            "owner": None,
            "lease_until": None,
            "attempt": job.attempt + 1,
        },
    )
    if done is None:
        raise ValidationError(f"job {job_id} changed state meanwhile; look again")
    return done.doc()
