"""Stage 3: follow SLURM (one call per cluster), stop what was cancelled, queue merge jobs; the
results of finished jobs come home in `labctl.stages.retrieval`; then tell the members what
happened (`notices`)."""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from labctl.compute.batch import JobLayout, job_name
from labctl.compute.cluster import Cluster
from labctl.compute.scheduler import NotOursError
from labctl.compute.slurm import SchedulerError
from labctl.compute.transport import TransportError, stop_transfer, transfer_alive
from labctl.jobs.work import Work
from labctl.model.job import Job, JobRef, SchedulerStatus, TaskStatus
from labctl.model.states import FailureReason, JobState
from labctl.stages import JOB_ID, StageRun, Unconfigured, recorded
from labctl.stages.notices import send_notices
from labctl.stages.ops import ArchiveSettled, QueueFollowUp
from labctl.stages.resubmitting import resubmit_or_note, run_resubmissions, with_usage
from labctl.stages.retrieval import log_tail, run_retrieval

MISSING_POLLS_BEFORE_FAILING = 3


def run_jobs(run: StageRun) -> None:
    stop_cancelled(run)
    by_cluster: dict[str, list[Job]] = defaultdict(list)
    for job in run.find(Work.AT_SCHEDULER):
        by_cluster[job.compute_cluster].append(job)
    for name, jobs in by_cluster.items():
        poll_cluster(run, name, jobs)
    run_resubmissions(run)
    run_retrieval(run)
    run.each(Work.FOLLOW_UP, partial(queue_follow_up, run))
    send_notices(run)
    lease = run.lease.total_seconds()
    if archived := run.store.run(ArchiveSettled(owner=run.owner, lease_s=lease)):
        run.did["archived"] += len(archived)


def poll_cluster(run: StageRun, name: str, jobs: list[Job]) -> None:
    """Ask the cluster once about all its watched jobs, then follow each on its own."""
    if name not in run.config.clusters:
        for job in jobs:
            run.alone(job, run.cluster)  # fails each, naming the cluster that is gone
        return
    cluster = run.pool.get(name)
    asked = {sid: run.layout(job) for job in jobs if (sid := job.scheduler_id)}
    times = [s.submitted_at for job in jobs if (s := job.scheduler) and s.submitted_at]
    try:
        cluster.require_session()
        statuses = cluster.scheduler.poll(asked, since=min(times, default=None))
    except (TransportError, SchedulerError) as exc:
        if not (isinstance(exc, TransportError) and run.wait_out(jobs, name, exc)):
            run.did["unreachable"] += 1
            run.notes.append(f"{name}: {exc}")
        return
    for job in jobs:
        run.alone(job, partial(follow, run, cluster, statuses=statuses))


def summarize(tasks: Sequence[TaskStatus]) -> tuple[JobState, TaskStatus]:
    """One state for a job from its tasks: running while any runs, else how they ended."""
    for state in (JobState.RUNNING, JobState.PENDING, JobState.FAILED, JobState.CANCELLED):
        for task in tasks:
            if task.state is state:
                return state, task
    return JobState.RETRIEVING, tasks[0]


def follow(
    run: StageRun, cluster: Cluster, job: Job, *, statuses: Mapping[str, TaskStatus]
) -> None:
    """Record what the scheduler says about one job, and move it if its state changed."""
    known = job.scheduler
    assert known is not None and known.job_id is not None  # only such jobs are watched
    tasks = sorted(
        (s for s in statuses.values() if s.job_id == known.job_id),
        key=lambda s: -1 if s.array_task is None else s.array_task,
    )
    if not tasks:
        missing = known.missing + 1
        if missing >= MISSING_POLLS_BEFORE_FAILING:
            note = f"the scheduler has no record of job {known.job_id}"
            run.move(job, JobState.FAILED, note, reason=FailureReason.SLURM)
        else:
            run.update(job, scheduler=known.model_copy(update={"missing": missing}))
        return
    for note in requeues(cluster.scheduler.label, known, tasks):
        run.update(job, note)
    restarts = {**known.restarts, **{t.key: t.restarts for t in tasks if t.restarts}}
    known = known.model_copy(update={"restarts": restarts})
    state, task = summarize(tasks)
    if state not in (JobState.RUNNING, JobState.PENDING) and unaccounted(cluster, known, tasks):
        # slurmdbd records a job's end a moment after squeue shows it: decide with its record
        run.update(job, scheduler=known.model_copy(update={"missing": known.missing + 1}))
        return
    heard = known.model_copy(
        update={
            "state": task.detail,
            "exit_code": task.exit_code,
            "missing": 0,
            "task_states": {str(t.array_task): t.detail for t in tasks if t.array_task is not None},
        }
    )
    fields: dict[str, Any] = {"scheduler": heard}
    if state is job.status or (state is JobState.PENDING and job.status is JobState.RUNNING):
        run.update(job, **fields, waiting=None)
        return
    note = f"{cluster.scheduler.label} {task.detail}"
    if state not in (JobState.RUNNING, JobState.PENDING):
        fields["usage"] = with_usage(job, tasks)
    if state is JobState.FAILED:
        note += f" (exit {task.exit_code})" if task.exit_code else ""
        fields["log_tail"] = log_tail(cluster, run.layout(job))
        failed = resubmit_or_note(run, cluster, job, tasks, note, fields)
        if failed is None:
            return
        note = failed
    run.move(job, state, note, fields=fields, reason=task.reason)


def requeues(label: str, known: SchedulerStatus, tasks: Sequence[TaskStatus]) -> list[str]:
    """A history note for each time the scheduler requeued the job (or one of its tasks) since
    it was last asked: `scontrol requeue` behind labctl's back, or SLURM's own after a node
    failure. It runs again under the same id."""
    notes = []
    for task in tasks:
        which = "" if task.array_task is None else f"task {task.array_task} "
        for count in range(known.restarts.get(task.key, 0) + 1, task.restarts + 1):
            notes.append(f"{which}requeued by {label} (restart {count})")
    return notes


def unaccounted(cluster: Cluster, known: SchedulerStatus, tasks: Sequence[TaskStatus]) -> bool:
    """Whether a finished job's accounting record is still incomplete (for a few polls)."""
    if not cluster.scheduler.accounts or known.missing >= MISSING_POLLS_BEFORE_FAILING:
        return False
    return any(t.usage is None or t.usage.req_mem_bytes is None for t in tasks)


def queue_follow_up(run: StageRun, job: Job) -> None:
    """Queue the job type that merges a finished array's outputs (the store builds it)."""
    done = run.store.run(QueueFollowUp(job=JobRef.of(job)))
    if done.problem:
        run.notes.append(done.problem)
    elif done.queued:
        run.did["merges queued"] += 1


def stop_cancelled(run: StageRun, job_id: str | None = None) -> None:
    """Stop on the cluster what users cancelled (or just job `job_id`): the scheduler's job,
    or a transfer on this host."""
    run.each(Work.TO_STOP, partial(stop_one, run), job_id=job_id)


def stop_one(run: StageRun, job: Job) -> None:
    """Stop one cancelled job's scheduler job and its transfer on this host: only what labctl
    started for it, as the host and this account's own records show (never whatever process
    the job document names); anything else is left alone, with a note."""
    if not JOB_ID.fullmatch(job.job_id):
        run.notes.append(f"cancel {job.job_id}: not a labctl job id: nothing stopped")
    elif not (stop_scheduled(run, job) and stop_own_transfer(run, job)):
        return
    run.update(job, cleanup_pending=False)
    run.did["stopped"] += 1


def stop_scheduled(run: StageRun, job: Job) -> bool:
    """Cancel the job at its cluster's scheduler if it is labctl's job there, named and placed
    as labctl names and places this job; False if it must wait for a later run."""
    if not job.scheduler_id:
        return True
    try:
        cluster = run.cluster(job)
        layout = JobLayout.of(cluster.config, job.job_id)
        if job.remote_dir is not None and PurePosixPath(job.remote_dir) != layout.root:
            where = f"its folder {job.remote_dir} is not {layout.root}, where labctl puts it"
            raise NotOursError(f"{where}: job {job.scheduler_id} left alone")
        cluster.scheduler.cancel(job.scheduler_id, layout, job_name(job))
    except Unconfigured as exc:
        run.notes.append(f"cancel {job.job_id}: {exc}: nothing to stop there")
    except NotOursError as exc:
        run.notes.append(f"cancel {job.job_id}: {exc}")
    except (TransportError, SchedulerError) as exc:
        run.notes.append(f"cancel {job.job_id}: {exc}")
        return False
    return True


def stop_own_transfer(run: StageRun, job: Job) -> bool:
    """Stop the job's rsync on this host if this account started it: its record names the pid
    the job does, and that very process still runs (`transfer_alive`). False while a transfer
    of ours goes on that this did not stop."""
    transfer = job.transfer
    if transfer is None or transfer.host != socket.gethostname():
        return True
    record = recorded(run.config.watchdog.state_dir / job.job_id)
    if record is None:
        run.notes.append(f"cancel {job.job_id}: this account started no transfer for it here")
        return True
    if record.pid != transfer.pid:
        mismatch = f"its transfer pid {transfer.pid} is not the recorded {record.pid}"
        run.notes.append(f"cancel {job.job_id}: {mismatch}: nothing stopped")
        return not transfer_alive(record)
    stop_transfer(record)
    return True
