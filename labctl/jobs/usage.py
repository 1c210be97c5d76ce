"""Where the compute time went: the scheduler's accounting of finished tasks (`Job.usage`),
summed per user, job type, cluster or month, and one job's efficiency as `seff` reports it.

CPU-hours are what a cluster bills: allocated cores x elapsed time. CPU efficiency is the CPU
time used over that (TotalCPU / (cores x elapsed)); memory efficiency is the peak resident memory
over the memory asked for (MaxRSS / ReqMem). A group's efficiency is the ratio of its sums over
the tasks whose figures are known; where none is (a cluster that records no MaxRSS) it is
unknown (None), never 0.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labctl.catalog.query import parse_day
from labctl.config import Config
from labctl.damaged import Damaged, Listing, validated
from labctl.db import Database
from labctl.errors import ValidationError
from labctl.jobs.queue import job_fields
from labctl.model.job import TaskUsage

GROUPINGS = {"user": "user", "job-type": "job_type", "cluster": "cluster", "month": "month"}
"""What `--by` takes, and the key each names in a group."""

BINS = 10
"""Efficiency distributions count tasks in tenths: 0-10%, ..., 90% and over."""


@dataclass(frozen=True)
class Task:
    """One finished task's usage, with the job fields it is grouped by."""

    job_id: str
    user: str
    job_type: str
    cluster: str
    month: str  # YYYY-MM of its end (UTC)
    usage: TaskUsage


def check_by(names: Iterable[str]) -> list[str]:
    """The groupings asked for, each one of GROUPINGS (user by default)."""
    names = list(names) or ["user"]
    for name in names:
        if name not in GROUPINGS:
            raise ValidationError(f"--by takes {', '.join(GROUPINGS)}, not {name!r}")
    return names


class _Finished(BaseModel):
    """What a report reads of a job."""

    job_id: str
    user: str
    job_type: str
    compute_cluster: str
    updated_at: dt.datetime
    usage: list[TaskUsage]


def read_tasks(db: Database, since: dt.datetime | None = None) -> Listing[Task]:
    """Every recorded task that ended on or after `since` (all when None), and the jobs whose
    record cannot be read.

    Only the fields a report needs are read. A task's usage is recorded after it ends, so a job
    last changed before `since` has none to count."""
    filter: dict[str, Any] = {"usage.0": {"$exists": True}}
    if since is not None:
        filter["updated_at"] = {"$gte": since}
    read = job_fields(db, filter, list(_Finished.model_fields))  # only what a report needs
    jobs = validated(_Finished, read, "job", "job_id")
    tasks = []
    for job in jobs.items:
        for usage in job.usage:
            when = usage.end or usage.start or usage.submit or job.updated_at
            if since is not None and when < since:
                continue
            month = when.astimezone(dt.UTC).strftime("%Y-%m")
            cluster = job.compute_cluster
            tasks.append(Task(job.job_id, job.user, job.job_type, cluster, month, usage))
    return Listing(tasks, jobs.damaged)


def core_seconds(task: TaskUsage) -> float:
    """What the cluster bills: allocated cores x elapsed."""
    return task.cpus * task.elapsed_s


def cpu_efficiency(task: TaskUsage) -> float | None:
    core_s = core_seconds(task)
    return None if task.cpu_s is None or core_s <= 0 else task.cpu_s / core_s


def memory_efficiency(task: TaskUsage) -> float | None:
    if task.max_rss_bytes is None or not task.req_mem_bytes:
        return None
    return task.max_rss_bytes / task.req_mem_bytes


def queue_wait(task: TaskUsage) -> float | None:
    if task.submit is None or task.start is None:
        return None
    return max(0.0, (task.start - task.submit).total_seconds())


def _ratio(pairs: Iterable[tuple[float | None, float | None]]) -> float | None:
    """sum(used) / sum(had) over the pairs where both are known; None if none is."""
    used_sum = had_sum = 0.0
    for used, had in pairs:
        if used is not None and had:
            used_sum, had_sum = used_sum + used, had_sum + had
    return used_sum / had_sum if had_sum else None


def bins(values: Iterable[float | None]) -> list[int]:
    """How many known values fall in each tenth (90% and over in the last)."""
    counts = [0] * BINS
    for value in values:
        if value is not None:
            counts[min(int(value * BINS), BINS - 1)] += 1
    return counts


class Figures(BaseModel):
    """The figures of some tasks, as `labctl usage` reports them."""

    model_config = ConfigDict(frozen=True)

    jobs: int
    tasks: int
    cpu_hours: float
    wall_hours: float
    median_wait_s: float | None
    cpu_efficiency: float | None
    memory_efficiency: float | None
    cpu_efficiency_bins: list[int]
    memory_efficiency_bins: list[int]

    @classmethod
    def of(cls, job_ids: Iterable[str], tasks: Sequence[TaskUsage]) -> Figures:
        waits = [w for t in tasks if (w := queue_wait(t)) is not None]
        return cls(
            jobs=len(set(job_ids)),
            tasks=len(tasks),
            cpu_hours=sum(core_seconds(t) for t in tasks) / 3600,
            wall_hours=sum(t.elapsed_s for t in tasks) / 3600,
            median_wait_s=statistics.median(waits) if waits else None,
            cpu_efficiency=_ratio((t.cpu_s, core_seconds(t)) for t in tasks),
            memory_efficiency=_ratio((t.max_rss_bytes, t.req_mem_bytes) for t in tasks),
            cpu_efficiency_bins=bins(cpu_efficiency(t) for t in tasks),
            memory_efficiency_bins=bins(memory_efficiency(t) for t in tasks),
        )


class _GroupKeys(BaseModel):
    """What a group is by: only the keys asked for are set (and dumped, `exclude_unset`)."""

    user: str | None = None
    job_type: str | None = None
    cluster: str | None = None
    month: str | None = Field(default=None, description="YYYY-MM")


class UsageGroup(Figures, _GroupKeys):
    """One group's keys, then its figures."""


def summarize(tasks: Sequence[Task], by: Sequence[str]) -> list[UsageGroup]:
    """One group per distinct value of the `by` keys (sorted), with its figures."""
    keys = [GROUPINGS[name] for name in check_by(by)]
    groups: dict[tuple[str, ...], list[Task]] = {}
    for task in tasks:
        groups.setdefault(tuple(getattr(task, key) for key in keys), []).append(task)
    return [
        UsageGroup.model_validate(
            {
                **dict(zip(keys, values, strict=True)),
                **dict(Figures.of([t.job_id for t in members], [t.usage for t in members])),
            }
        )
        for values, members in sorted(groups.items())
    ]


class UsageReport(BaseModel):
    """The report of `labctl usage` and the REST API; its JSON is `model_dump(exclude_unset=True)`
    (a group carries only the keys it is by)."""

    by: list[str] = Field(description="what the groups are by: user, job-type, cluster, month")
    since: str | None = Field(description="only tasks that ended from then on")
    groups: list[UsageGroup] = Field(
        description="per group, its keys (user, job_type, cluster, month) and figures: jobs, "
        "tasks, cpu_hours (cores x elapsed), wall_hours, median_wait_s, cpu_efficiency, "
        "memory_efficiency (null where unknown), and how many tasks fall in each tenth of "
        "efficiency (cpu_efficiency_bins, memory_efficiency_bins)"
    )
    damaged: list[Damaged] = Field(
        default_factory=list, description="jobs whose recorded usage cannot be read: not counted"
    )

    @field_validator("since", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        """The service's JSON arrives with its date-times read (`labctl.access.service`): as
        sent."""
        return value.isoformat() if isinstance(value, dt.datetime) else value


def usage_report(db: Database, by: Sequence[str] = (), since: str | None = None) -> UsageReport:
    """The groups, what was asked, and the jobs whose recorded usage cannot be read (`Damaged`,
    not counted)."""
    names = check_by(by)
    start = parse_day(since, "--since") if since else None
    tasks = read_tasks(db, start)
    return UsageReport(
        by=names,
        since=start.isoformat() if start else None,
        groups=summarize(tasks.items, names),
        damaged=tasks.damaged,
    )


def memory_text(size: float) -> str:
    """Memory in SLURM's units, as `seff` prints it (1 GB = 1024**3 bytes): `64 GB`, `1.5 GB`."""
    amount, unit = float(size), "B"
    for bigger in ("KB", "MB", "GB", "TB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{amount:.0f} {unit}" if amount >= 10 or unit == "B" else f"{amount:.1f} {unit}"


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def describe(tasks: Sequence[TaskUsage]) -> str | None:
    """One job's efficiency in a line: `used 6% of its 64 GB memory, 85% of 8 cores over
    1:02:03`; an array's over all its tasks. None before any task's usage is recorded."""
    if not tasks:
        return None
    figures = Figures.of([], tasks)
    if len(tasks) == 1:
        subject, whose, cores = "", "its", tasks[0].cpus
        time = f"{cores} core{'s' * (cores != 1)} over {clock(tasks[0].elapsed_s)}"
    else:
        subject, whose, time = f"{len(tasks)} tasks ", "their", f"{figures.cpu_hours:.1f} CPU-hours"
    used = []
    if figures.memory_efficiency is not None:
        asked = sum(t.req_mem_bytes or 0 for t in tasks if t.max_rss_bytes is not None)
        used.append(f"{percent(figures.memory_efficiency)} of {whose} {memory_text(asked)} memory")
    if figures.cpu_efficiency is not None:
        used.append(f"{percent(figures.cpu_efficiency)} of {time}")
    line = f"{subject}used {', '.join(used)}" if used else f"{subject}ran"
    if figures.cpu_efficiency is None:
        line += f" on {time}"
    unknown = [
        name
        for name, value in (("CPU", figures.cpu_efficiency), ("memory", figures.memory_efficiency))
        if value is None
    ]
    return line + (f"; {' and '.join(unknown)} use unknown" if unknown else "")


def clock(seconds: float) -> str:
    """`1:02:03`."""
    return str(dt.timedelta(seconds=int(seconds)))


def unaccounted(config: Config) -> str:
    """Which configured clusters keep no accounting, in words ("" if all do): their jobs are in
    no usage report."""
    plain = [name for name, cluster in config.clusters.items() if cluster.scheduler == "process"]
    if not plain:
        return ""
    return (
        f"{', '.join(plain)} runs jobs as plain processes, which keep no accounting "
        "(only jobs on SLURM are counted)"
    )
