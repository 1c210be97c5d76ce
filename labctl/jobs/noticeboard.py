"""The notices on a job, one event each (see `Job.notices`): claimed by one run with a lease
before it is sent, settled after; what to tell and how is `labctl.stages.notices`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from labctl.clock import utcnow
from labctl.db import Database
from labctl.jobs.queue import read_job
from labctl.model.job import Job, NoticeState, store_value


class NoticeChange(BaseModel):
    """What settling a notice records of telling it (the fields given); `delivered` names
    channels that took it, added to those that took it before."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivered: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list)
    digest: bool | None = None
    attempts: int | None = None
    next_try_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    error: Annotated[str, Field(max_length=10_000)] | None = None
    note: Annotated[str, Field(max_length=10_000)] | None = None


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
    db: Database, job_id: str, key: str, owner: str, state: NoticeState, change: NoticeChange
) -> bool:
    """Change a notice that `owner` has claimed to `state` (releasing it unless it stays
    `SENDING`), with what `change` gives. False if `owner` does not hold it (any more)."""
    n = f"notices.{key}"
    guard = {f"{n}.owner": owner, f"{n}.state": str(NoticeState.SENDING)}
    fields: dict[str, Any] = {f"{n}.state": str(state)}
    if state is not NoticeState.SENDING:
        fields.update({f"{n}.owner": None, f"{n}.lease_until": None})
    given = change.model_fields_set - {"delivered"}
    fields.update({f"{n}.{name}": store_value(getattr(change, name)) for name in given})
    update: dict[str, Any] = {"$set": fields}
    if change.delivered:
        update["$addToSet"] = {f"{n}.delivered": {"$each": list(change.delivered)}}
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
