"""Stage 1: take new jobs, stage their inputs, start the rsync; submit jobs whose data arrived."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from labctl.catalog.fields import get_dotted
from labctl.clock import utcnow
from labctl.compute.batch import job_name, render, resources_of, submitted_tasks
from labctl.compute.scheduler import SubmitLimitError
from labctl.compute.slurm import SchedulerError
from labctl.compute.transport import TransferError, TransferHandle, TransportError
from labctl.compute.transport import start_background as start_rsync
from labctl.errors import ValidationError
from labctl.jobs.resubmit import describe_resources
from labctl.jobs.submit import check_inputs, dataset_dirs
from labctl.jobs.work import Work
from labctl.model.job import Job, SchedulerStatus, Transfer
from labctl.model.states import FailureReason, JobState
from labctl.private import write_private
from labctl.stages import RECORD, StageRun, recorded
from labctl.stages.shipping import code_folder, shared_code


def run_scan(run: StageRun) -> None:
    run.each(Work.NEW, partial(start, run))
    run.each(Work.ARRIVED, partial(submit, run))


def stage_inputs(run: StageRun, job: Job, processed: Path, raw: Path, *, code: bool) -> Path:
    """A local tree of symlinks shaped like the job folder: rsync -L copies what they point at.
    With `code`, the job carries its pipelines code (a dirty tree's) in its own `code/`."""
    staging = run.state_dir(job.job_id) / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    staging.chmod(0o700)  # rsync gives the job folder this mode, whatever the umask
    for base, sub, names in (
        (processed, "data", job.datafiles),
        (raw, "raw", job.datarawfiles),
    ):
        for name in names:
            link = staging / "inputs" / sub / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(base / name)
    if code:
        (staging / "code").mkdir()
        (staging / "code" / "pipelines").symlink_to(code_folder(run, job))
    return staging


def start(run: StageRun, job: Job) -> None:
    """queued/awaiting_data -> transferring (or awaiting_data while the data are incomplete)."""
    entry = run.entry_or_fail(job, FailureReason.TRANSFER)
    if entry is None:
        return
    if job.data_transfer_await and not get_dotted(entry, run.config.data.complete_field):
        if job.status is JobState.QUEUED:
            run.move(
                job,
                JobState.AWAITING_DATA,
                f"waiting until {run.config.data.complete_field} is true",
            )
        return
    try:
        processed, raw = dataset_dirs(entry, run.config)
        check_inputs(processed, job.datafiles, must_exist=True)
        check_inputs(raw, job.datarawfiles, must_exist=True)
    except ValidationError as exc:
        run.move(job, JobState.FAILED, str(exc), reason=FailureReason.TRANSFER)
        return
    cluster = run.cluster(job)
    layout = run.layout(job)
    try:
        cluster.scheduler.prepare(layout)
        code_dir = shared_code(run, cluster, job, layout)
    except SchedulerError as exc:
        run.move(job, JobState.FAILED, str(exc), reason=FailureReason.SUBMIT)
        return
    except TransportError as exc:
        run.setback(job, exc, FailureReason.TRANSFER)
        return
    staging = stage_inputs(run, job, processed, raw, code=code_dir is None)
    argv = run.push_argv(cluster, staging, layout.root)
    handle = launch(run.state_dir(job.job_id), argv)
    if handle is None:
        return  # an rsync a dead run started is still going; start afresh once it ends
    total = sum(p.stat().st_size for p in (staging / "inputs").rglob("*") if p.is_file())
    transfer = Transfer(
        host=socket.gethostname(),
        argv=argv,
        pid=handle.pid,
        log=handle.log_path,
        status_path=handle.status_path,
        total=total,
        started_at=utcnow(),
    )
    fields = {"transfer": transfer, "remote_dir": str(layout.root), "code_dir": code_dir}
    note = f"rsync of {total} bytes to {cluster.name} started"
    if run.move(job, JobState.TRANSFERRING, note, fields=fields) is None:
        stop_if_cancelled(run, job, fields)


def stop_if_cancelled(run: StageRun, job: Job, fields: Mapping[str, Any]) -> None:
    """The job was cancelled while this run started its rsync or sbatch: record what was
    started so that the jobs stage stops it."""
    current = run.read(job)
    if current.status is JobState.CANCELLED:
        run.update(current, **fields, cleanup_pending=True)


def launch(state_dir: Path, argv: list[str]) -> TransferHandle | None:
    """Start (or, if a killed run left it going, adopt) the job's background rsync; None if a
    run died after starting it but before recording how to follow it."""
    try:
        handle = start_rsync(argv, state_dir / "rsync.log")
    except TransferError:  # still running from a run that died before recording it
        return recorded(state_dir)
    write_private(state_dir / RECORD, json.dumps(handle.__dict__))
    return handle


def submit(run: StageRun, job: Job) -> None:
    """transferring (data arrived) -> submitted, or a resubmission (submitted, no scheduler id
    yet): upload the batch script and submit it once. A cluster's submit limit (its own, or
    `max_submitted`) leaves the job waiting to try again, not failed and no retry spent."""
    cluster = run.cluster(job)
    layout = run.layout(job)
    spec = run.job_type(job)
    script = render(job, spec, cluster.config, layout)
    tasks = max(1, len(submitted_tasks(job)))
    if not room_for(run, job, tasks):
        return
    try:
        scheduler_id = None
        tried = job.scheduler
        if tried and tried.submitting:  # a run died around sbatch: adopt what it submitted
            scheduler_id = cluster.scheduler.find(job_name(job), layout, tried.submitted_at)
        if scheduler_id is None:
            cluster.runner.write_file(str(layout.script), script, 0o755)
            attempt = SchedulerStatus(submitting=True, submitted_at=utcnow())
            run.update(job, scheduler=attempt)
            scheduler_id = cluster.scheduler.submit(layout, tasks)
    except SubmitLimitError as exc:
        wait_to_submit(run, job, f"{exc}; trying again later")
        return
    except SchedulerError as exc:
        run.move(job, JobState.FAILED, str(exc), reason=FailureReason.SUBMIT)
        return
    except TransportError as exc:
        run.setback(job, exc, FailureReason.SUBMIT)
        return
    status = SchedulerStatus(job_id=scheduler_id, tasks=tasks, submitted_at=utcnow())
    fields = {"scheduler": status, "batch_script": script}
    asked = describe_resources(resources_of(job, spec, cluster.config.resources))
    note = f"job {scheduler_id} submitted on {cluster.name} ({asked})"
    if job.status is JobState.SUBMITTED:  # a resubmission: it stays submitted
        if not run.update(job, note, **fields, waiting=None):
            stop_if_cancelled(run, job, fields)
        run.did["resubmitted"] += 1
    elif run.move(job, JobState.SUBMITTED, note, fields=fields) is None:
        stop_if_cancelled(run, job, fields)


def room_for(run: StageRun, job: Job, tasks: int) -> bool:
    """Whether `tasks` more jobs fit under the cluster's `max_submitted`, counting each array
    task as SLURM does. The count is this member's jobs at the cluster's scheduler as the queue
    records them (no extra scheduler call, the same in every stage), which is never less than
    SLURM's own: an array's finished tasks count until the whole array has ended."""
    limit = run.cluster(job).config.max_submitted
    if limit is None:
        return True
    if tasks > limit:
        note = f"the job has {tasks} tasks but max_submitted on {job.compute_cluster} is {limit}"
        run.move(job, JobState.FAILED, note, reason=FailureReason.CONFIG)
        return False
    others = run.find(Work.SUBMITTED_ON, cluster=job.compute_cluster, exclude=[job.job_id])
    submitted = sum(other.scheduler.tasks if other.scheduler else 1 for other in others)
    if submitted + tasks <= limit:
        return True
    wait_to_submit(
        run,
        job,
        f"{submitted} of max_submitted {limit} jobs are submitted on "
        f"{job.compute_cluster}; waiting for room",
    )
    return False


def wait_to_submit(run: StageRun, job: Job, message: str) -> None:
    """Leave the job where it is, to be submitted by a later run (noted once in its history)."""
    delay = run.config.watchdog.backoff_seconds
    note = message if job.waiting != message else None
    later = utcnow() + dt.timedelta(seconds=delay)
    run.update(job, note, scheduler=SchedulerStatus(), waiting=message, next_try_at=later)
    run.did["waiting to submit"] += 1
