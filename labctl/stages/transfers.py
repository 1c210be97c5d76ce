"""Stage 2: record the progress of each running rsync, end finished ones, resume broken ones."""

from __future__ import annotations

from functools import partial

from labctl.clock import utcnow
from labctl.compute.transport import (
    Progress,
    TransferError,
    TransferHandle,
    TransferState,
    TransferStatus,
    TransportError,
    poll,
)
from labctl.jobs.work import Work
from labctl.model.job import Job, Transfer
from labctl.model.states import FailureReason
from labctl.stages import StageRun
from labctl.stages.scan import launch


def run_transfers(run: StageRun) -> None:
    run.each(Work.IN_TRANSIT, partial(follow, run), host=run.host)


def with_progress(transfer: Transfer, progress: Progress | None) -> Transfer:
    """The transfer with what rsync last reported: bytes, total, percent, rate and ETA."""
    if progress is None:
        return transfer
    return transfer.model_copy(
        update={
            "bytes": progress.bytes_done,
            "total": progress.total_bytes or transfer.total,
            "percent": progress.percent,
            "rate": progress.rate,
            "rate_bytes_per_s": progress.rate_bytes_per_s,
            "eta_seconds": progress.eta_seconds,
            "updated_at": utcnow(),
        }
    )


def _status(transfer: Transfer) -> TransferStatus:
    handle = TransferHandle(transfer.pid, transfer.log, transfer.status_path)
    try:
        return poll(handle)
    except TransferError as exc:  # the log is gone: treat like a killed transfer
        return TransferStatus(TransferState.VANISHED, None, None, str(exc), transient=True)


def follow(run: StageRun, job: Job) -> None:
    assert job.transfer is not None  # a transferring job has one
    if job.transfer.resume:
        resume(run, job, job.transfer)
        return
    status = _status(job.transfer)
    transfer = with_progress(job.transfer, status.progress)
    if status.state is TransferState.RUNNING:
        run.update(job, transfer=transfer, waiting=None)
        run.did["progress"] += 1
    elif status.state is TransferState.SUCCEEDED:
        done = transfer.model_copy(
            update={
                "done": True,
                "percent": 100,
                "bytes": transfer.total,
                "eta_seconds": 0,
                "finished_at": utcnow(),
            }
        )
        run.update(job, transfer=done)
        run.did["transferred"] += 1
    else:
        broken(run, job, status, transfer)


def broken(run: StageRun, job: Job, status: TransferStatus, transfer: Transfer) -> None:
    """An rsync that failed or was killed: resume it once its cluster is back (its session,
    or after an outage), for free; else after a backoff, or fail the job."""
    if cluster_away(run, job) or status.unreachable:  # the cluster's doing, not the job's
        free = transfer.model_copy(update={"resume": True, "free_resume": True})
        run.update(job, transfer=free)
        run.did["interrupted"] += 1
        return
    what = "was killed" if status.state is TransferState.VANISHED else f"exited {status.exit_code}"
    message = f"rsync {what}" + (f": {status.message}" if status.message else "")
    run.retry_later(
        job,
        message,
        transient=status.transient,
        attempt=transfer.attempts,
        reason=FailureReason.TRANSFER,
        fields={"transfer": transfer.model_copy(update={"resume": True})},
    )
    run.did["interrupted"] += 1


def cluster_away(run: StageRun, job: Job) -> bool:
    """Whether the job's cluster has no session now or cannot be reached (the job is then
    marked as waiting for it)."""
    try:
        run.cluster(job).require_session(fresh=True)
    except TransportError as exc:
        return run.wait_out([job], job.compute_cluster, exc)
    return False


def resume(run: StageRun, job: Job, transfer: Transfer) -> None:
    """Start the same rsync again: --partial lets it continue where it stopped."""
    if cluster_away(run, job):
        return
    handle = launch(run.state_dir(job.job_id), transfer.argv)
    if handle is None:
        return  # the previous rsync is somehow still going: look again next run
    attempt = transfer.attempts + (0 if transfer.free_resume else 1)
    resumed = transfer.model_copy(
        update={
            "pid": handle.pid,
            "log": handle.log_path,
            "status_path": handle.status_path,
            "resume": False,
            "free_resume": False,
            "attempts": attempt,
        }
    )
    run.update(job, f"rsync resumed (attempt {attempt})", transfer=resumed, waiting=None)
    run.did["resumed"] += 1
