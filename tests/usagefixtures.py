"""Finished jobs with the scheduler's accounting recorded (`Job.usage`), for usage reports.

Five jobs of three members on three clusters, over October and November 2026; what each group
adds up to is worked out by hand in tests/test_usage.py.
"""

from __future__ import annotations

import datetime as dt

from labctl.db import Database
from labctl.jobs.queue import add_job
from labctl.model.job import Job, TaskUsage
from labctl.model.states import JobState

GB = 1024**3


def task(
    key: str,
    end: str,
    *,
    hours: float,
    cpus: int,
    cpu_eff: float | None,
    wait_minutes: float,
    rss_gb: float | None = None,
    req_gb: float | None = None,
) -> TaskUsage:
    """A task that ran `hours` on `cpus` cores up to `end` (UTC), `cpu_eff` of them busy, after
    waiting `wait_minutes` in the queue; peak `rss_gb` of `req_gb` asked for."""
    finished = dt.datetime.fromisoformat(end).replace(tzinfo=dt.UTC)
    start = finished - dt.timedelta(hours=hours)
    elapsed = hours * 3600
    return TaskUsage(
        task=key,
        state="COMPLETED",
        exit_code=0,
        elapsed_s=elapsed,
        cpu_s=None if cpu_eff is None else round(cpu_eff * cpus * elapsed),
        cpus=cpus,
        max_rss_bytes=None if rss_gb is None else int(rss_gb * GB),
        req_mem_bytes=None if req_gb is None else int(req_gb * GB),
        submit=start - dt.timedelta(minutes=wait_minutes),
        start=start,
        end=finished,
        nodes="node01",
    )


def finished_job(job_id: str, user: str, job_type: str, cluster: str, *tasks: TaskUsage) -> Job:
    ends = [t.end for t in tasks if t.end] or [dt.datetime(2026, 9, 1, tzinfo=dt.UTC)]
    created = min([t.submit for t in tasks if t.submit] or ends)
    return Job(
        job_id=job_id,
        dataset="20211215_093527",
        user=user,
        compute_cluster=cluster,
        job_type=job_type,
        status=JobState.COMPLETED,
        created_at=created,
        updated_at=max(ends),
        usage=list(tasks),
    )


LAB = [
    finished_job(
        "j-a1",
        "alice",
        "diff_registration",
        "raven",
        task(
            "101",
            "2026-10-15T12:00",
            hours=2,
            cpus=8,
            cpu_eff=0.85,
            wait_minutes=30,
            rss_gb=4,
            req_gb=64,
        ),
    ),
    finished_job(
        "j-a2",
        "alice",
        "diff_registration",
        "raven",
        *(
            task(
                f"102_{i}",
                end,
                hours=1,
                cpus=4,
                cpu_eff=0.5,
                wait_minutes=wait,
                rss_gb=8,
                req_gb=16,
            )
            for i, (end, wait) in enumerate(
                [("2026-10-31T20:00", 10), ("2026-11-03T08:00", 20), ("2026-11-03T09:00", 60)]
            )
        ),
    ),
    finished_job(  # a cluster that records no MaxRSS, ending just before November
        "j-b1",
        "bob",
        "file_stats",
        "local",
        task("7", "2026-10-31T23:30", hours=0.5, cpus=1, cpu_eff=0.95, wait_minutes=1),
    ),
    finished_job(
        "j-b2",
        "bob",
        "file_stats",
        "local",
        task("8", "2026-11-01T00:10", hours=1, cpus=2, cpu_eff=0.25, wait_minutes=2),
    ),
    finished_job(
        "j-r1",
        "root",
        "merge_splits",
        "viper",
        task(
            "555",
            "2026-11-20T18:00",
            hours=3,
            cpus=16,
            cpu_eff=0.7,
            wait_minutes=240,
            rss_gb=100,
            req_gb=128,
        ),
    ),
]


def seed_usage(db: Database) -> None:
    """LAB, and a job still running (no usage yet), which no report counts."""
    for job in LAB:
        add_job(db, job)
    running = finished_job("j-run", "alice", "diff_registration", "raven")
    add_job(db, running.model_copy(update={"status": JobState.RUNNING}))
