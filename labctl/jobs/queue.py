"""The jobs: reading them and moving them through their states.

Every state change goes through `transition`, a compare-and-set on the current state that also
appends to the job's history; watchdog stages take jobs with `claim` (owner + lease), so that
overlapping cron runs never work on the same job.

Jobs in flight live in `queue`, the only collection the watchdog's stages read; a finished job no
stage works on any more is moved to `archive` (`archive_settled`), so that a stage's cost does not
grow with the lab's history, and back by `retry_job`. A move copies, then deletes: a run killed
in between leaves the job in both, and every reader here takes the queue's copy.

An event the job's owner is told of (it completed, failed, waits for a session) is recorded on
the job in the same write that makes it happen (`Job.notices`); each notice is then claimed on its
own, with an owner and a lease, before it is sent, and marked afterwards (`claim_notice`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from labctl.clock import utcnow
from labctl.damaged import Listing, validated
from labctl.db import Collection, Database, Doc, SortSpec
from labctl.errors import DuplicateError, NotFoundError
from labctl.model.job import (
    ROW_FIELDS,
    Failure,
    HistoryItem,
    Job,
    JobRef,
    JobRow,
    MalformedJob,
    Notice,
    NoticeEvent,
    Progress,
    store_value,
)
from labctl.model.states import (
    ACTIVE,
    TERMINAL,
    FailureReason,
    JobState,
    check_transition,
)


def history_item(state: JobState, note: str, now: dt.datetime) -> HistoryItem:
    return HistoryItem(state=state, at=now, note=note)


def where(*states: JobState, **fields: Any) -> dict[str, Any]:
    """A queue filter: jobs in one of `states` whose other fields equal (or match) `fields`.
    A dotted field name is written `transfer__done`."""
    filter = {name.replace("__", "."): value for name, value in fields.items()}
    filter["status"] = {"$in": [str(state) for state in states]}
    return filter


# Of the finished jobs, those no stage has anything left to do for: cancelled ones stopped,
# completed ones followed up, both cleaned up.
_SETTLED = {
    "cleanup_pending": {"$ne": True},
    "follow_up_pending": {"$ne": True},
    "notify_at": None,  # no notice still to send
    "$nor": [
        {
            "status": {"$in": [str(JobState.COMPLETED), str(JobState.CANCELLED)]},
            "scratch_cleaned": {"$ne": True},
        }
    ],
}


def settled(**fields: Any) -> dict[str, Any]:
    """A queue filter: finished jobs no stage has anything left to do for, whose other fields
    match `fields`."""
    return {**where(*TERMINAL, **fields), **_SETTLED}


def get_job(db: Database, job_id: str) -> dict[str, Any]:
    """One job as the CLI, the REST API and the Python API show it."""
    return read_job(db, job_id).doc()


def read_job(db: Database, job_id: str) -> Job:
    """A job in flight or archived."""
    # Moves copy before they delete, so a job moving out of the queue is in the archive once it
    # has left, and one moving back (a retry) in the queue again before it leaves the archive.
    doc = (
        db.queue.find_one({"job_id": job_id})
        or db.archive.find_one({"_id": job_id})
        or db.queue.find_one({"job_id": job_id})
    )
    if doc is None:
        raise NotFoundError(f"no job {job_id}")
    return Job.of(doc)


def all_jobs(
    db: Database,
    filter: Mapping[str, Any],
    sort: SortSpec = (),
    limit: int = 0,
    fields: Sequence[str] | None = None,
    max_bytes: int | None = None,
) -> list[Doc]:
    """The stored documents of every job matching `filter`, in flight or archived, each once
    (the queue's copy of one being moved), in the order of `sort`, the first `limit` of them;
    only `fields` of them (and `job_id`) if given. ValidationError if those of the queue or of
    the archive are larger than `max_bytes` (read no further)."""
    fields = None if fields is None else [*fields, "job_id"]
    live = db.queue.find(filter, fields, sort=sort, limit=limit, max_bytes=max_bytes)
    # An archive copy of a job in the queue is older than the queue's (a move killed half-way,
    # or a retry): it is left out, even if only it matches. Read as many more as there are.
    queued = {doc["job_id"] for doc in db.queue.find({}, ["job_id"])}
    more = limit + len(queued) if limit else 0
    archived = db.archive.find(filter, fields, sort=sort, limit=more, max_bytes=max_bytes)
    old = [doc for doc in archived if doc["job_id"] not in queued]
    again = db.queue.find(filter, fields, sort=sort, limit=limit, max_bytes=max_bytes)  # read_job
    by_id = {doc["job_id"]: doc for doc in [*old, *live, *again]}
    jobs = list(by_id.values())
    for field, direction in reversed(sort):
        jobs.sort(key=lambda doc: _order(doc.get(field)), reverse=direction < 0)
    return jobs[:limit] if limit else jobs


def _order(value: Any) -> tuple[bool, str, Any]:
    """A sort key over stored values of mixed types (a damaged job's text where a date should
    be): None first, then by kind of value, then by value."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return value is not None, "number" if number else type(value).__name__, value


def archive_settled(
    db: Database, owner: str, lease: dt.timedelta, user: str | None = None, limit: int = 0
) -> list[str]:
    """Move the settled jobs (of `user`, or everyone's; the first `limit`) from the queue to the
    archive, each claimed by `owner` for `lease` meanwhile; return their ids. A job that changed
    once copied (a retry) stays in the queue."""
    moved = []
    # One read for all: litemongo reads every match of a query whatever its limit.
    mine = settled(**({"user": user} if user else {}))
    for found in db.queue.find(mine, ["job_id"], limit=limit):
        # Still settled, with its state not planned by litemongo: `$in` of the finished states
        # would collect every finished job in the queue for each claim.
        still = {"job_id": found["job_id"], "status": {"$nin": [str(s) for s in ACTIVE]}}
        doc = take(db.queue, {**still, **_SETTLED}, owner, lease)
        if doc is None:  # another run is moving it, or it changed
            continue
        copy = {**doc, "_id": doc["job_id"], "owner": None, "lease_until": None}
        try:
            db.archive.insert(copy)
        except DuplicateError:  # copied by a run killed before its delete: copy it again
            db.archive.replace({"_id": doc["job_id"]}, copy)
        if db.queue.delete({"job_id": doc["job_id"], "owner": owner}):
            moved.append(doc["job_id"])
    return moved


def find_jobs(
    db: Database,
    filter: Mapping[str, Any],
    malformed: Callable[[MalformedJob], object],
    *,
    archived: bool = False,
) -> list[Job]:
    """The jobs in flight matching `filter` (and archived ones if `archived`: the stages never
    read those); each that cannot be read goes to `malformed` instead."""
    jobs = []
    for doc in all_jobs(db, filter) if archived else db.queue.find(filter):
        try:
            jobs.append(Job.of(doc))
        except MalformedJob as exc:
            malformed(exc)
    return jobs


def job_fields(
    db: Database, filter: Mapping[str, Any], fields: Sequence[str]
) -> list[dict[str, Any]]:
    """Only `fields` of the jobs matching `filter`, as stored: for reports over many jobs, which
    need neither whole documents nor their validation; archived jobs too."""
    return all_jobs(db, filter, fields=fields)


NEWEST: SortSpec = [("created_at", -1)]


def list_jobs(
    db: Database,
    *,
    user: str | None = None,
    status: str | None = None,
    dataset: str | None = None,
    limit: int = 0,
    matching: Mapping[str, Any] | None = None,
    max_bytes: int | None = None,
) -> Listing[Job]:
    """Jobs, newest first, and those of them that are damaged; `matching` adds a queue filter
    (as `labctl.jobs.bulk` builds it); `max_bytes` bounds the answer (see `all_jobs`)."""
    filter: dict[str, Any] = dict(matching or {})
    if user:
        filter["user"] = user
    if dataset:
        filter["dataset"] = dataset
    if status:
        filter["status"] = str(JobState(status))
    return read_all(all_jobs(db, filter, sort=NEWEST, limit=limit, max_bytes=max_bytes))


def list_rows(db: Database, filter: Mapping[str, Any], *, limit: int = 0) -> Listing[JobRow]:
    """The jobs `filter` selects, newest first, as a page lists them (only `ROW_FIELDS` are
    read), and those of them whose listed fields are damaged."""
    docs = all_jobs(db, filter, sort=NEWEST, limit=limit, fields=ROW_FIELDS)
    return validated(JobRow, docs, "job", "job_id")


def read_all(docs: Iterable[Doc]) -> Listing[Job]:
    """Stored documents as jobs, in their order, and those that are damaged."""
    found: Listing[Job] = Listing()
    for doc in docs:
        try:
            found.items.append(Job.of(doc))
        except MalformedJob as exc:
            found.damaged.append(exc.damaged)
    return found


def add_job(db: Database, job: Job) -> None:
    """Queue `job`; DuplicateError if a job in flight or archived has its id (ids are unique
    across both, so that no job can stand in for another)."""
    if db.archive.find_one({"_id": job.job_id}, ["_id"]) is not None:
        raise DuplicateError(f"a job {job.job_id} exists already")
    db.queue.insert(job.doc())


# What changes on a job: what a watchdog records (`Progress`), or, for a person's action (a
# retry), any of its fields.
Fields = Progress | Mapping[str, Any]


def _changes(fields: Fields | None) -> dict[str, Any]:
    """`fields` as the `$set` of stored values."""
    if isinstance(fields, Progress):
        return fields.changes()
    unknown = set(fields or {}) - set(Job.model_fields)
    if unknown:
        raise ValueError(f"a job has no field {', '.join(sorted(unknown))}")
    return {name: store_value(value) for name, value in (fields or {}).items()}


def _as_read(job: Job | JobRef) -> dict[str, Any]:
    """The job while still in the state it was read in: another run may have moved it since,
    and what this run learnt is then older than what that run wrote."""
    return {"job_id": job.job_id, "status": str(job.status)}


def transition(
    db: Database,
    job: Job,
    new: JobState,
    note: str = "",
    *,
    fields: Fields | None = None,
    reason: FailureReason | None = None,
) -> Job | None:
    """Move `job` from the state it was read in to `new`, recording why, and change `fields`.

    Returns the updated job, or None when another process changed its state first.
    """
    check_transition(job.status, new)
    now = utcnow()
    change: dict[str, Any] = {
        "status": str(new),
        "updated_at": now,
        "waiting": None,  # a job that moves waits for nothing any more
        **_changes(fields),
    }
    if new is JobState.CANCELLED:
        reason = reason or FailureReason.CANCELLED
    if new is JobState.FAILED or new is JobState.CANCELLED:
        if reason is None:
            raise ValueError("a failed job needs a FailureReason")
        change["failure"] = store_value(Failure(reason=reason, message=note))
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


def update(db: Database, job: Job, note: str | None = None, fields: Fields | None = None) -> bool:
    """Change `fields` of a job still in the state it was read in (and add `note` to its
    history); False if it has moved on meanwhile."""
    change: dict[str, Any] = {"$set": _changes(fields)}
    if note is not None:
        change["$push"] = {"history": store_value(history_item(job.status, note, utcnow()))}
    return db.queue.update(_as_read(job), change) > 0


def update_all(db: Database, jobs: Sequence[JobRef], fields: Fields, user: str) -> None:
    """Change `fields` of every job of `user`'s still in the state it was read in: one write
    per state."""
    _set_all(db, jobs, _changes(fields), user)


def mark_waiting(
    db: Database,
    jobs: Sequence[JobRef],
    message: str,
    user: str,
    session: str | None = None,
    *,
    event: NoticeEvent = NoticeEvent.SESSION,
    next_try_at: dt.datetime | None = None,
) -> None:
    """Note on each of `user`'s jobs (still in the state it was read in) what it waits for, and
    when to look again; when it waits for its owner's `session` to a cluster (or, with
    `event=OUTAGE`, for that cluster to be reachable again), with a notice to tell them."""
    now = utcnow()
    change: dict[str, Any] = {"waiting": message}
    if next_try_at is not None:
        change["next_try_at"] = next_try_at
    if session is not None:
        notice = Notice(event=event, at=now, cluster=session, next_try_at=now)
        change.update(_new_notice(f"{event}-{now:%Y%m%dT%H%M%S%f}", notice))
    _set_all(db, jobs, change, user)


def _set_all(db: Database, jobs: Sequence[JobRef], change: Mapping[str, Any], user: str) -> None:
    by_state: dict[JobState, list[str]] = {}
    for job in jobs:
        by_state.setdefault(job.status, []).append(job.job_id)
    for state, ids in by_state.items():
        mine = {"job_id": {"$in": ids}, "status": str(state), "user": user}
        db.queue.update(mine, {"$set": change}, many=True)


def claim(db: Database, filter: Mapping[str, Any], owner: str, lease: dt.timedelta) -> Job | None:
    """Take one job matching `filter` whose lease is free or expired, for `lease`."""
    done = take(db.queue, filter, owner, lease)
    return None if done is None else Job.of(done)


def take(
    collection: Collection, filter: Mapping[str, Any], owner: str, lease: dt.timedelta
) -> Doc | None:
    """Take the oldest document matching `filter` whose lease is free or expired, for `lease`."""
    now = utcnow()
    free = {"$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
    return collection.claim(
        {**filter, **free},
        {"$set": {"owner": owner, "lease_until": now + lease}},
        sort=[("created_at", 1)],
    )


def renew(db: Database, job_ids: Sequence[str], owner: str, lease: dt.timedelta, user: str) -> None:
    """Extend `owner`'s lease on `user`'s jobs it is still working on, in one write."""
    db.queue.update(
        {"job_id": {"$in": list(job_ids)}, "owner": owner, "user": user},
        {"$set": {"lease_until": utcnow() + lease}},
        many=True,
    )


def release(db: Database, job_ids: Sequence[str], owner: str, user: str) -> None:
    """Give up `owner`'s leases on `user`'s jobs, in one write."""
    _free(db, {"job_id": {"$in": list(job_ids)}, "owner": owner, "user": user})


def release_dead(db: Database, owners: Sequence[str], user: str) -> None:
    """Free every lease on `user`'s jobs that one of `owners`, runs known to be dead, held."""
    _free(db, {"owner": {"$in": list(owners)}, "user": user})


def _free(db: Database, leased: Mapping[str, Any]) -> None:
    db.queue.update(leased, {"$set": {"owner": None, "lease_until": None}}, many=True)
