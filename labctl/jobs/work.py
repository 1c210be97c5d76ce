"""The watchdog's work, as one table: each kind of work a stage takes from the queue, and the
queue filter that selects it. A stage names the work (`Selection`), never a filter: the store
builds the filter here and narrows it to the member it works for, so that what a watchdog may
select is decided by this table, not by what a client sends. `has_work` derives from it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labctl.clock import utcnow
from labctl.jobs.queue import settled, where
from labctl.limits import WATCHDOG_IDS
from labctl.model.states import ACTIVE, WATCHED, JobState


class Work(StrEnum):
    NEW = "new"  # scan: queued or awaiting data, to ship
    ARRIVED = "arrived"  # scan: its inputs arrived, to submit
    IN_TRANSIT = "in_transit"  # transfers: an rsync on `host` to follow
    RESUBMIT = "resubmit"  # jobs: an automatic resubmission to submit
    AT_SCHEDULER = "at_scheduler"  # jobs: at the cluster's scheduler, to poll
    SUBMITTED_ON = "submitted_on"  # scan: at (or being given to) `cluster`'s scheduler
    TO_STOP = "to_stop"  # jobs: cancelled, its transfer or scheduler job still to stop
    TO_RETRIEVE = "to_retrieve"  # jobs: finished at the scheduler, results to bring home
    TO_CLEAN = "to_clean"  # jobs: completed or stopped cancelled, its folders still to remove
    FOLLOW_UP = "follow_up"  # jobs: a finished array whose merge is still to queue
    NOTICE_DUE = "notice_due"  # jobs: a notice to send
    WAITING = "waiting"  # jobs: waiting for the same thing (`waiting`) as another
    SETTLED = "settled"  # jobs: nothing left to do but archive it


class Selection(BaseModel):
    """Which of a member's jobs a stage asks for: a kind of work, narrowed by the parameters
    that kind takes (the others are ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    work: Work
    job_id: str | None = Field(default=None, max_length=200)
    host: str | None = Field(default=None, max_length=300)  # IN_TRANSIT
    cluster: str | None = Field(default=None, max_length=200)  # SUBMITTED_ON
    waiting: str | None = Field(default=None, max_length=2000)  # WAITING
    exclude: list[str] = Field(default_factory=list, max_length=WATCHDOG_IDS)

    def filter(self, member: str) -> dict[str, Any]:
        """The queue filter: this work's, of `member`'s jobs, narrowed by the parameters."""
        found = {**TABLE[self.work](self), "user": member}
        ids: dict[str, Any] = {}
        if self.job_id is not None:
            ids["$eq"] = self.job_id
        if self.exclude:
            ids["$nin"] = list(self.exclude)
        if ids:
            found["job_id"] = ids
        return found


def _due() -> dict[str, Any]:
    return {"$lte": utcnow()}


def _at_scheduler_on(s: Selection) -> dict[str, Any]:
    at_scheduler = {"$or": [{"scheduler.job_id": {"$ne": None}}, {"scheduler.submitting": True}]}
    return {**where(JobState.TRANSFERRING, *WATCHED, compute_cluster=s.cluster), **at_scheduler}


TABLE: dict[Work, Callable[[Selection], dict[str, Any]]] = {
    Work.NEW: lambda s: where(JobState.QUEUED, JobState.AWAITING_DATA, next_try_at=_due()),
    Work.ARRIVED: lambda s: where(JobState.TRANSFERRING, transfer__done=True, next_try_at=_due()),
    Work.IN_TRANSIT: lambda s: where(
        JobState.TRANSFERRING,
        transfer__done=False,
        transfer__host=s.host,
        next_try_at=_due(),
    ),
    Work.RESUBMIT: lambda s: where(JobState.SUBMITTED, scheduler__job_id=None, next_try_at=_due()),
    Work.AT_SCHEDULER: lambda s: where(*WATCHED, scheduler__job_id={"$ne": None}),
    Work.SUBMITTED_ON: _at_scheduler_on,
    Work.TO_STOP: lambda s: where(JobState.CANCELLED, cleanup_pending=True),
    Work.TO_RETRIEVE: lambda s: where(JobState.RETRIEVING, next_try_at=_due()),
    Work.TO_CLEAN: lambda s: where(  # no completed job is ever pending cleanup
        JobState.COMPLETED, JobState.CANCELLED, scratch_cleaned=False, cleanup_pending=False
    ),
    Work.FOLLOW_UP: lambda s: where(JobState.COMPLETED, follow_up_pending=True),
    Work.NOTICE_DUE: lambda s: {"notify_at": _due()},
    Work.WAITING: lambda s: {"waiting": s.waiting},
    Work.SETTLED: lambda s: settled(),
}

# The work that is there whatever a job waits for (a retry's time, its data): what keeps a
# member's watchdog from idling.
_PENDING = (Work.TO_STOP, Work.TO_CLEAN, Work.FOLLOW_UP, Work.NOTICE_DUE, Work.SETTLED)


def pending_filter(member: str) -> dict[str, Any]:
    """A queue filter for `member`'s jobs a watchdog stage may have something to do for: an
    active job, or any work of the table that does not wait for anything."""
    anything = [where(*ACTIVE), *(TABLE[work](Selection(work=work)) for work in _PENDING)]
    return {"user": member, "$or": anything}
