"""Stage 3: follow SLURM (one call per cluster), bring results home, verify and record them."""

from __future__ import annotations

import hashlib
import json
import socket
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from labctl.catalog.experiments import record_result
from labctl.clock import utcnow
from labctl.compute.cluster import Cluster
from labctl.compute.slurm import SchedulerError
from labctl.compute.transport import (
    CommandError,
    LocalRunner,
    SessionDownError,
    TransportError,
    rsync_argv,
)
from labctl.errors import DuplicateError, NotFoundError, ValidationError
from labctl.jobs.batch import JobLayout, array_size, expected_outputs
from labctl.jobs.job import Job, ResultFile, TaskStatus, store_value
from labctl.jobs.queue import add_job, archive_settled, find_jobs, update, where
from labctl.jobs.states import WATCHED, FailureReason, JobState
from labctl.jobs.submit import JobRequest, dataset_dirs, prepare_job
from labctl.private import write_private
from labctl.stages import StageRun, Unconfigured

MISSING_POLLS_BEFORE_FAILING = 3

# For each file name argument: "SIZE SHA256" if it is a file, else "-". One line per name.
_CHECKSUMS = r"""
cd "$1" || exit 3; shift
for f in "$@"; do
  if [ -f "$f" ]; then
    printf '%s %s\n' "$(stat -c %s -- "$f")" "$(sha256sum -- "$f" | cut -d' ' -f1)"
  else echo -; fi
done
"""
_LOG_TAIL = r'for f in "$1"/*; do [ -f "$f" ] && { echo "== ${f##*/}"; tail -n 20 -- "$f"; }; done'


def run_jobs(run: StageRun) -> None:
    stop_cancelled(run)
    by_cluster: dict[str, list[Job]] = defaultdict(list)
    watched = where(*WATCHED, scheduler__job_id={"$ne": None})
    for job in find_jobs(run.db, run.mine(watched), run.malformed):
        by_cluster[job.compute_cluster].append(job)
    for name, jobs in by_cluster.items():
        poll_cluster(run, name, jobs)
    due = where(JobState.RETRIEVING, next_try_at={"$lte": utcnow()})
    run.each(due, partial(retrieve, run))
    run.each(where(JobState.COMPLETED, scratch_cleaned=False), partial(clean_scratch, run))
    run.each(where(JobState.COMPLETED, follow_up_pending=True), partial(queue_follow_up, run))
    if archived := archive_settled(run.db, run.owner, run.lease, run.config.user):
        run.did["archived"] += len(archived)


def poll_cluster(run: StageRun, name: str, jobs: list[Job]) -> None:
    """Ask the cluster once about all its watched jobs, then follow each on its own."""
    if name not in run.config.clusters:
        for job in jobs:
            run.alone(job, run.cluster)  # fails each, naming the cluster that is gone
        return
    cluster = run.pool.get(name)
    asked = {sid: run.layout(job) for job in jobs if (sid := job.scheduler_id)}
    try:
        cluster.require_session()
        statuses = cluster.scheduler.poll(asked)
    except SessionDownError:
        run.wait_for_session(jobs, name)
        return
    except (TransportError, SchedulerError) as exc:
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
            update(run.db, job, scheduler=known.model_copy(update={"missing": missing}))
        return
    state, task = summarize(tasks)
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
        update(run.db, job, **fields, waiting=None)
        return
    note = f"{cluster.scheduler.label} {task.detail}"
    if state is JobState.FAILED:
        note += f" (exit {task.exit_code})" if task.exit_code else ""
        fields["log_tail"] = log_tail(cluster, run.layout(job))
    run.move(job, state, note, fields=fields, reason=task.reason)


def log_tail(cluster: Cluster, layout: JobLayout) -> str:
    try:
        result = cluster.runner.run(["sh", "-c", _LOG_TAIL, "tail", str(layout.logs)], check=False)
    except TransportError as exc:
        return f"(log not readable: {exc})"
    return result.stdout[-4000:]


def remote_checksums(
    cluster: Cluster, folder: str, names: Sequence[str]
) -> dict[str, tuple[int, str] | None]:
    """Size and SHA-256 of each named file in a remote folder; None for a missing file."""
    out = cluster.runner.run(["sh", "-c", _CHECKSUMS, "sums", folder, *names]).stdout.splitlines()
    found: dict[str, tuple[int, str] | None] = {}
    for name, line in zip(names, out, strict=True):
        size, _, digest = line.partition(" ")
        found[name] = None if line == "-" else (int(size), digest)
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def retrieve(run: StageRun, job: Job) -> None:
    """retrieving -> completed: check outputs, rsync them home, verify, record; else fail."""
    cluster = run.cluster(job)
    layout = run.layout(job)
    spec = run.job_type(job)
    names = expected_outputs(job, spec)
    entry = run.entry_or_fail(job, FailureReason.RETRIEVE)
    if entry is None:
        return
    dest = dataset_dirs(entry, run.config)[0] / "results" / job.job_id
    try:
        remote = remote_checksums(cluster, str(layout.outputs), names)
        missing = [name for name, found in remote.items() if found is None]
        if missing:
            tail = log_tail(cluster, layout)
            run.move(
                job,
                JobState.FAILED,
                f"the job did not write {', '.join(missing)}",
                fields={"log_tail": tail},
                reason=FailureReason.RETRIEVE,
            )
            return
        pull(run, cluster, layout, names, dest, renew=partial(run.renew, job))
    except TransportError as exc:
        run.setback(job, exc, FailureReason.RETRIEVE)
        return
    results: list[ResultFile] = []
    for name in names:
        size, digest = remote[name] or (0, "")
        local = dest / name
        if local.stat().st_size != size or sha256_file(local) != digest:
            run.retry_later(
                job,
                f"{name} arrived damaged (size or checksum differs)",
                transient=True,
                attempt=job.retries + 1,
                reason=FailureReason.RETRIEVE,
                fields={"retries": job.retries + 1},
            )
            return
        results.append(ResultFile(name=name, path=str(local), size=size, sha256=digest))
    try:
        inputs = input_checksums(cluster, layout, job)
    except TransportError as exc:
        run.setback(job, exc, FailureReason.RETRIEVE)
        return
    try:
        environments = [
            json.loads((dest / r.name).read_text())
            for r in results
            if r.name.startswith("environment")
        ]
    except ValueError as exc:  # before anything is recorded: the job fails, nothing half-done
        note = f"an environment report brought home is not valid JSON ({exc})"
        run.move(job, JobState.FAILED, note, reason=FailureReason.RETRIEVE)
        return
    record = {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "dir": str(dest),
        "files": store_value(results),
        "at": utcnow(),
    }
    record_result(run.db, job.dataset, job.job_id, record)
    done = run.move(
        job,
        JobState.COMPLETED,
        f"{len(results)} result file(s) verified in {dest}",
        fields={
            "results": results,
            "result_dir": str(dest),
            "scratch_cleaned": False,
            "input_checksums": inputs,
            "environment": environments,
            "follow_up_pending": bool(spec.merge_with) and array_size(job) > 1,
        },
    )
    if done is not None:
        clean_scratch(run, done)


def input_checksums(cluster: Cluster, layout: JobLayout, job: Job) -> list[dict[str, Any]]:
    """Size and SHA-256 of every input as the job saw it, computed on the cluster."""
    names = [f"data/{f}" for f in job.datafiles] + [f"raw/{f}" for f in job.datarawfiles]
    found = remote_checksums(cluster, str(layout.inputs), names) if names else {}
    return [
        {"name": name, "size": sums[0], "sha256": sums[1]}
        for name, sums in found.items()
        if sums is not None
    ]


def pull(
    run: StageRun,
    cluster: Cluster,
    layout: JobLayout,
    names: Sequence[str],
    dest: Path,
    *,
    renew: Callable[[], None],
) -> None:
    """rsync the named outputs home (in the foreground: results are smaller than inputs),
    renewing the job's lease while it runs."""
    dest.mkdir(mode=0o750, parents=True, exist_ok=True)
    listing = run.state_dir(layout.root.name) / "outputs.list"
    write_private(listing, "".join(f"{name}\n" for name in names))
    argv = rsync_argv(
        [f"{layout.outputs}/"],
        f"{dest}/",
        target=cluster.target,
        direction="pull",
        files_from=str(listing),
        bwlimit_kib=run.config.watchdog.bwlimit_kib,
        chmod="go-w,o-rwx",  # the member's results: their group may read them, no one else
    )
    try:
        every = max(1.0, run.lease.total_seconds() / 3)
        LocalRunner().run(argv, timeout=24 * 3600, every=(every, renew))
    except CommandError as exc:
        cluster.require_session(fresh=True)  # dropped meanwhile: wait for it, spend no retry
        raise TransportError(f"bringing results home failed: {exc}") from None


def queue_follow_up(run: StageRun, job: Job) -> None:
    """Queue the job type that merges a finished array's outputs, with the same code version.

    Its id derives from the array's, so a run that dies half-way cannot queue it twice.
    """
    merge_type = run.job_type(job).merge_with
    assert merge_type is not None  # only such jobs are marked follow_up_pending
    shards = [
        f"results/{job.job_id}/{r.name}"
        for r in job.results
        if not r.name.startswith("environment")
    ]
    request = JobRequest(
        dataset=job.dataset,
        compute_cluster=job.compute_cluster,
        job_type=merge_type,
        datafiles=shards,
        user=job.user,
    )
    follow_id: str | None = f"{job.job_id}m"
    try:
        follow = prepare_job(run.db, run.config, request, pipelines=job.pipelines)
        follow.job_id, follow.parent_job = f"{job.job_id}m", job.job_id
        follow.history[0].note = f"queued by the watchdog to merge job {job.job_id}"
        add_job(run.db, follow)
        run.did["merges queued"] += 1
    except DuplicateError:
        pass  # queued by a run that died before noting it
    except (ValidationError, NotFoundError) as exc:
        run.notes.append(f"cannot queue {merge_type} after {job.job_id}: {exc}")
        follow_id = None
    update(run.db, job, follow_up_pending=False, follow_up_job=follow_id)


def clean_scratch(run: StageRun, job: Job) -> None:
    """Remove the job folder on the cluster once its results are verified at home."""
    cluster = run.cluster(job)
    root = run.layout(job).root  # where the job's folder was made, whatever the config says now
    if root.name != job.job_id or ".." in root.parts or len(root.parts) < 3:
        raise ValueError(f"refusing to delete {root}: not the folder of job {job.job_id}")
    try:
        cluster.runner.run(["rm", "-rf", "--", str(root)])
    except TransportError:
        return  # the next run tries again
    update(run.db, job, scratch_cleaned=True)
    run.did["cleaned"] += 1


def stop_cancelled(run: StageRun, job_id: str | None = None) -> None:
    """Stop on the cluster what users cancelled (or just job `job_id`): the scheduler's job,
    or a transfer on this host."""
    pending = where(
        JobState.CANCELLED, cleanup_pending=True, **({"job_id": job_id} if job_id else {})
    )
    run.each(pending, partial(stop_one, run))


def stop_one(run: StageRun, job: Job) -> None:
    """Stop one cancelled job's scheduler job, or its transfer on this host."""
    try:
        if job.scheduler_id:
            run.cluster(job).scheduler.cancel(job.scheduler_id, run.layout(job))
    except Unconfigured as exc:
        run.notes.append(f"cancel {job.job_id}: {exc}: nothing to stop there")
    except (TransportError, SchedulerError) as exc:
        run.notes.append(f"cancel {job.job_id}: {exc}")
        return
    transfer = job.transfer
    if transfer and transfer.host == socket.gethostname():
        # The transfer's process group (it leads its own session); gone already is fine.
        LocalRunner().run(["kill", "-s", "TERM", "--", f"-{transfer.pid}"], check=False)
    update(run.db, job, cleanup_pending=False)
    run.did["stopped"] += 1
