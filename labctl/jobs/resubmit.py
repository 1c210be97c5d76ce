"""Bounded automatic resubmission: the decision, from how SLURM ended a job's tasks.

A job that hit its time limit or ran out of memory runs again with twice the time or memory,
capped by its job type's `max_resources`; one whose node failed or that was preempted runs again
as it was. Only the tasks of an array that ended so run again. After the cluster's
`resubmit_limit` resubmissions, or when the cap leaves nothing to grow, the job fails saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

from labctl.compute.batch import array_size, resources_of
from labctl.config.jobtypes import JobType, Resources, slurm_megabytes, slurm_minutes
from labctl.model.job import Job, Resubmission, TaskStatus
from labctl.model.states import FailureReason, JobState

GROW = {FailureReason.TIMEOUT: "time", FailureReason.OUT_OF_MEMORY: "mem"}
"""Ends that are resubmitted with twice the named resource."""
AGAIN = frozenset({FailureReason.NODE_FAIL, FailureReason.PREEMPTED})
"""Ends that are resubmitted as they were."""
WORDS = {
    FailureReason.TIMEOUT: "timed out",
    FailureReason.OUT_OF_MEMORY: "ran out of memory",
    FailureReason.NODE_FAIL: "lost its node",
    FailureReason.PREEMPTED: "was preempted",
}


def plan(
    job: Job, job_type: JobType, defaults: Resources, tasks: Sequence[TaskStatus], limit: int
) -> Resubmission | str | None:
    """What to do about a job whose tasks have all ended and some failed: resubmit it (the
    `Resubmission`), give up (the reason, a str), or None when its end is not SLURM's doing.

    `defaults` are the cluster's resources; `limit` its `resubmit_limit`."""
    failed = [t for t in tasks if t.state is not JobState.RETRIEVING]
    if not failed or any(t.reason not in WORDS for t in failed):
        return None
    reasons = sorted({t.reason for t in failed if t.reason is not None})
    before = job.resubmission
    count = before.count if before else 0
    ends = [*(before.ends if before else []), *reasons]
    now = resources_of(job, job_type, defaults)
    grown = now
    capped: list[str] = []
    for reason in reasons:
        if reason in GROW:
            grown, cap = _double(grown, GROW[reason], job_type.max_resources, failed)
            capped += [cap] if cap else []
    what = _describe(now, reasons)
    told = "; ".join(
        f"{WORDS[r]} {ends.count(r)} times" if ends.count(r) > 1 else WORDS[r] for r in reasons
    )
    if count >= limit:
        return f"{told}, last with {what}; resubmit_limit is {limit}"
    if capped and grown == now:
        return f"{told}, last with {what}; {', '.join(capped)}"
    indices = sorted(t.array_task for t in failed if t.array_task is not None)
    return Resubmission(
        count=count + 1,
        resources=grown.model_dump(exclude_none=True),
        tasks=indices if array_size(job) > 1 else [],
        ends=ends,
    )


def _double(
    res: Resources, name: str, limits: Resources | None, failed: Sequence[TaskStatus]
) -> tuple[Resources, str | None]:
    """`res` with twice its time or memory, and what capped it (if anything did)."""
    cap = getattr(limits, name, None) if limits else None
    if name == "time":
        minutes = slurm_minutes(res.time) if res.time else _longest_minutes(failed)
        new = 2 * minutes
        if cap is not None and new >= slurm_minutes(cap):
            return res.model_copy(update={"time": cap}), f"max_resources caps time at {cap}"
        return res.model_copy(update={"time": clock(new)}), None
    megabytes = slurm_megabytes(res.mem) if res.mem else _asked_megabytes(failed)
    new = 2 * megabytes
    if cap is not None and new >= slurm_megabytes(cap):
        return res.model_copy(update={"mem": cap}), f"max_resources caps mem at {cap}"
    return res.model_copy(update={"mem": f"{int(new)}M"}), None


def _longest_minutes(failed: Sequence[TaskStatus]) -> float:
    """Without a time asked for, the time SLURM let the tasks run (at least a minute)."""
    return max([1.0, *(t.usage.elapsed_s / 60 for t in failed if t.usage)])


def _asked_megabytes(failed: Sequence[TaskStatus]) -> float:
    """Without a --mem asked for, what the cluster gave (sacct's ReqMem), else 1 GB."""
    asked = [t.usage.req_mem_bytes for t in failed if t.usage and t.usage.req_mem_bytes]
    return max(asked) / 2**20 if asked else 1024.0


def clock(minutes: float) -> str:
    """Minutes as a SLURM `--time`: `HH:MM:SS`, or `D-HH:MM:SS` from a day."""
    seconds = round(minutes * 60)
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _describe(res: Resources, reasons: Sequence[FailureReason]) -> str:
    """The resources that mattered for these ends: `time 04:00:00`, `mem 8G`, or all."""
    named = [GROW[r] for r in reasons if r in GROW] or ["time", "mem", "cpus"]
    return ", ".join(f"{n} {getattr(res, n)}" for n in named if getattr(res, n) is not None)


def describe_resources(res: Resources) -> str:
    """For the history: `time 00:02:00, mem 1G, cpus 1`."""
    return _describe(res, [])
