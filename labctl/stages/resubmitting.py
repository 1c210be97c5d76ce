"""Stage 3, continued: resubmit the jobs SLURM ended for reasons of its own.

`follow` asks `labctl.jobs.resubmit.plan` about a failed job; a job to resubmit becomes
`submitted` without a scheduler id, and `run_resubmissions` submits it in the same run (the scan
stage's `submit`: adoption after a killed run, submit limits). Its history notes each attempt with
the resources it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from labctl.clock import utcnow
from labctl.compute.cluster import Cluster
from labctl.config.jobtypes import Resources
from labctl.jobs.resubmit import describe_resources, plan
from labctl.jobs.work import Work
from labctl.model.job import Job, Resubmission, SchedulerStatus, TaskStatus, TaskUsage
from labctl.model.states import JobState
from labctl.stages import StageRun
from labctl.stages.scan import submit


def run_resubmissions(run: StageRun) -> None:
    """Submit the jobs marked for resubmission whose time has come."""
    run.each(Work.RESUBMIT, partial(submit, run))


def resubmit_or_note(
    run: StageRun,
    cluster: Cluster,
    job: Job,
    tasks: Sequence[TaskStatus],
    note: str,
    fields: dict[str, Any],
) -> str | None:
    """For a job whose tasks ended and some failed: mark it for resubmission (None), or the
    note to fail it with (saying why it is not resubmitted, when it gave up)."""
    limit = cluster.config.resubmit_limit
    outcome = plan(job, run.job_type(job), cluster.config.resources, tasks, limit)
    if outcome is None:
        return note
    if isinstance(outcome, str):
        return f"{note}: {outcome}"
    note += f"; resubmitting{_which(outcome)} with {_asks(outcome)}"
    note += f" (resubmission {outcome.count} of {limit})"
    fields.update(scheduler=SchedulerStatus(), resubmission=outcome, next_try_at=utcnow())
    run.move(job, JobState.SUBMITTED, note, fields=fields)
    return None


def with_usage(job: Job, tasks: Sequence[TaskStatus]) -> list[TaskUsage]:
    """The job's usage records, with those of these finished tasks added (or replaced)."""
    found = {u.task: u for u in job.usage}
    found.update({t.usage.task: t.usage for t in tasks if t.usage is not None})
    return list(found.values())


def _which(again: Resubmission) -> str:
    return f" tasks {','.join(str(t) for t in again.tasks)}" if again.tasks else ""


def _asks(again: Resubmission) -> str:
    return describe_resources(Resources.model_validate(again.resources))
