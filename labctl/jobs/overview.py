"""A job in a few lines, for someone who wants to know where it is and what to do: its state,
why it is there, the next step, how long it spent in each state, and what it brought home.

Pure: it takes a stored job and the time now; the CLI (`labctl status`) prints it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labctl.clock import age
from labctl.jobs.timeline import seconds_in
from labctl.model.job import Job
from labctl.model.reproduction import ResultFile
from labctl.model.states import JobState

_WHY = {
    JobState.QUEUED: "waiting for the watchdog to send its inputs to {cluster}",
    JobState.AWAITING_DATA: "waiting for its data to be complete",
    JobState.TRANSFERRING: "sending its inputs to {cluster}",
    JobState.SUBMITTED: "handed to the scheduler on {cluster}",
    JobState.PENDING: "waiting in the scheduler's queue on {cluster}",
    JobState.RUNNING: "running on {cluster}",
    JobState.RETRIEVING: "bringing its results home from {cluster}",
    JobState.COMPLETED: "done",
}


@dataclass(frozen=True)
class Overview:
    state: str  # `failed (timeout)`; the reason only where it says more than the state
    why: str
    todo: str
    created_at: dt.datetime
    updated_at: dt.datetime
    time_in: dict[str, str]  # how long in each state, in the order it went through them
    results: list[ResultFile]
    result_dir: str | None


def state_label(status: str, reason: str | None) -> str:
    """`failed (timeout)`; `cancelled`, not `cancelled (cancelled)`."""
    return f"{status} ({reason})" if reason and reason != status else status


def overview(doc: Job | Mapping[str, Any], now: dt.datetime) -> Overview:
    job = doc if isinstance(doc, Job) else Job.of(doc)
    failure = job.failure
    if failure is not None:
        why = failure.message or str(failure.reason)
    elif job.waiting:
        why = job.waiting
    else:
        why = _WHY[job.status].format(cluster=job.compute_cluster)
    return Overview(
        state=state_label(job.status, failure.reason if failure else None),
        why=why,
        todo=_todo(job, now),
        created_at=job.created_at,
        updated_at=job.updated_at,
        time_in=_time_in(job, now),
        results=job.results,
        result_dir=job.result_dir,
    )


def _todo(job: Job, now: dt.datetime) -> str:
    from labctl.compute.transport.sessions import waiting_message  # SSH: for one job, not lists

    if job.status is JobState.CANCELLED:
        return f"labctl retry {job.job_id} to run it again"
    if job.status is JobState.FAILED:
        return f"labctl retry {job.job_id} (once the cause is fixed)"
    if job.status is JobState.COMPLETED:
        return f"its results are in {job.result_dir}" if job.result_dir else "nothing"
    if job.waiting == waiting_message(job.compute_cluster):
        return f"labctl connect {job.compute_cluster}"
    if job.next_try_at is not None and job.next_try_at > now:
        return f"wait: the watchdog tries again in {age(now, job.next_try_at)}"
    return "wait: the watchdog moves it on (labctl queue shows its last run)"


def _time_in(job: Job, now: dt.datetime) -> dict[str, str]:
    """How long in each state, summed over visits; the last one until now unless it is an end."""
    spent = seconds_in(job, now)
    return {state: age(now - dt.timedelta(seconds=s), now) for state, s in spent.items()}
