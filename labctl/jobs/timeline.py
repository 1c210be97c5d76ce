"""Time to result for a dataset: where each of its jobs spent its time (queued, sending its
inputs, waiting in the scheduler, computing, bringing results home), what crossed the link each
way and how fast, and the totals, so that a member sees where the days went.

Pure: it takes stored jobs and the time now; `labctl timeline` and the dataset's page show it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from labctl.model.job import Job
from labctl.model.states import TERMINAL, JobState

_QUEUED, _TRANSFERRING, _RETRIEVING = (
    str(state) for state in (JobState.QUEUED, JobState.TRANSFERRING, JobState.RETRIEVING)
)
PHASES = (_QUEUED, _TRANSFERRING, "waiting", "computing", _RETRIEVING)
"""A job's way to its result, in order: named as its states are, waiting in the scheduler's queue
(submitted or pending) and computing (running)."""

_PHASE_OF = {
    JobState.QUEUED: _QUEUED,
    JobState.AWAITING_DATA: _QUEUED,
    JobState.TRANSFERRING: _TRANSFERRING,
    JobState.SUBMITTED: "waiting",
    JobState.PENDING: "waiting",
    JobState.RUNNING: "computing",
    JobState.RETRIEVING: _RETRIEVING,
}


def seconds_in(job: Job, now: dt.datetime) -> dict[JobState, float]:
    """How long the job was in each state, from its history, summed over visits, in the order
    it went through them; the last state until now unless it is an end."""
    spent: dict[JobState, float] = {}
    items = job.history
    for item, after in zip(items, [*items[1:], None], strict=False):  # none after the last
        if after is None and item.state in TERMINAL:
            break
        seconds = max(0.0, ((after.at if after else now) - item.at).total_seconds())
        spent[item.state] = spent.get(item.state, 0.0) + seconds
    return spent


@dataclass(frozen=True)
class JobTimeline:
    """One job's way to its result."""

    job_id: str
    job_type: str
    cluster: str
    status: JobState
    start: dt.datetime
    end: dt.datetime | None  # when it ended; None while it is on its way
    phases: dict[str, float]  # seconds in each of PHASES (all of them, 0 where none)
    bytes_out: int  # its inputs, as shipped to the cluster
    seconds_out: float | None  # how long shipping them took
    bytes_home: int  # its results, as brought home

    @classmethod
    def of(cls, job: Job, now: dt.datetime) -> JobTimeline:
        phases = dict.fromkeys(PHASES, 0.0)
        for state, seconds in seconds_in(job, now).items():
            if state in _PHASE_OF:
                phases[_PHASE_OF[state]] += seconds
        last = job.history[-1] if job.history else None
        ended = last.at if last is not None and last.state in TERMINAL else None
        transfer = job.transfer
        shipped = transfer.bytes or transfer.total if transfer else 0
        took = None
        if transfer and transfer.started_at and transfer.finished_at:
            took = max(0.0, (transfer.finished_at - transfer.started_at).total_seconds())
        return cls(
            job_id=job.job_id,
            job_type=job.job_type,
            cluster=job.compute_cluster,
            status=job.status,
            start=job.created_at,
            end=ended,
            phases=phases,
            bytes_out=shipped,
            seconds_out=took,
            bytes_home=sum(result.size for result in job.results),
        )

    @property
    def rate_out(self) -> float | None:
        """Bytes per second of its inputs' transfer; None if it did not take measurable time."""
        if not self.bytes_out or not self.seconds_out:
            return None
        return self.bytes_out / self.seconds_out


@dataclass(frozen=True)
class DatasetTimeline:
    """A dataset's jobs, oldest first, and their totals."""

    dataset: str
    jobs: list[JobTimeline]
    now: dt.datetime

    @classmethod
    def of(cls, dataset: str, jobs: Sequence[Job], now: dt.datetime) -> DatasetTimeline:
        ordered = sorted(jobs, key=lambda job: job.created_at)
        return cls(dataset, [JobTimeline.of(job, now) for job in ordered], now)

    @property
    def span(self) -> float:
        """Seconds from its first job's queueing to its last job's end (or now, if one is still
        on its way)."""
        if not self.jobs:
            return 0.0
        ends = [job.end for job in self.jobs]
        last = self.now if None in ends else max(end for end in ends if end is not None)
        return max(0.0, (last - self.jobs[0].start).total_seconds())

    @property
    def phases(self) -> dict[str, float]:
        """Seconds in each phase, summed over its jobs (jobs that overlap count each)."""
        return {phase: sum(job.phases[phase] for job in self.jobs) for phase in PHASES}

    @property
    def bytes_out(self) -> int:
        return sum(job.bytes_out for job in self.jobs)

    @property
    def bytes_home(self) -> int:
        return sum(job.bytes_home for job in self.jobs)


def bytes_text(value: float | None) -> str:
    """Bytes in decimal units: `1.5 MB`; empty for None."""
    if value is None:
        return ""
    amount, unit = float(value), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if abs(amount) < 1000:
            break
        amount, unit = amount / 1000, bigger
    return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"


def clock_text(seconds: float) -> str:
    """`0:03:12`, `2 days, 1:00:00`."""
    return str(dt.timedelta(seconds=int(seconds)))
