"""Stage 2: record the progress of each running rsync, end finished ones, resume broken ones."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from functools import partial
from typing import Any

from labctl.clock import utcnow
from labctl.compute.transport import (
    Progress,
    SessionDownError,
    TransferError,
    TransferHandle,
    TransferState,
    TransferStatus,
    TransportError,
    poll,
)
from labctl.jobs.queue import history_item
from labctl.jobs.states import FailureReason, JobState
from labctl.stages import StageRun
from labctl.stages.scan import launch


def run_transfers(run: StageRun) -> None:
    mine = {
        "status": "transferring",
        "transfer.done": False,
        "transfer.host": socket.gethostname(),
        "next_try_at": {"$lte": utcnow()},
    }
    run.each(mine, partial(follow, run))


def progress_fields(progress: Progress | None, total: int) -> dict[str, Any]:
    """What the queue shows of a transfer: bytes, total, percent, rate and ETA."""
    if progress is None:
        return {}
    return {
        "transfer.bytes": progress.bytes_done,
        "transfer.total": progress.total_bytes or total,
        "transfer.percent": progress.percent,
        "transfer.rate": progress.rate,
        "transfer.rate_bytes_per_s": progress.rate_bytes_per_s,
        "transfer.eta_seconds": progress.eta_seconds,
        "transfer.updated_at": utcnow(),
    }


def _status(transfer: Mapping[str, Any]) -> TransferStatus:
    handle = TransferHandle(transfer["pid"], transfer["log"], transfer["status_path"])
    try:
        return poll(handle)
    except TransferError as exc:  # the log is gone: treat like a killed transfer
        return TransferStatus(TransferState.VANISHED, None, None, str(exc), transient=True)


def follow(run: StageRun, job: dict[str, Any]) -> None:
    transfer = job["transfer"]
    if transfer.get("resume"):
        resume(run, job)
        return
    status = _status(transfer)
    fields = progress_fields(status.progress, transfer["total"])
    if status.state is TransferState.RUNNING:
        run.db.queue.update({"job_id": job["job_id"]}, {"$set": {**fields, "waiting": None}})
        run.did["progress"] += 1
    elif status.state is TransferState.SUCCEEDED:
        total = fields.get("transfer.total", transfer["total"])
        done = {
            **fields,
            "transfer.done": True,
            "transfer.percent": 100,
            "transfer.total": total,
            "transfer.bytes": total,
            "transfer.eta_seconds": 0,
            "transfer.finished_at": utcnow(),
        }
        run.db.queue.update({"job_id": job["job_id"]}, {"$set": done})
        run.did["transferred"] += 1
    else:
        broken(run, job, status, fields)


def broken(
    run: StageRun, job: dict[str, Any], status: TransferStatus, fields: dict[str, Any]
) -> None:
    """An rsync that failed or was killed: resume it once the session is back, or after a
    backoff, or fail the job."""
    if session_down(run, job):  # cut by the session's end: resume once it is back, for free
        resume_later = {**fields, "transfer.resume": True, "transfer.free_resume": True}
        run.db.queue.update({"job_id": job["job_id"]}, {"$set": resume_later})
        run.did["interrupted"] += 1
        return
    what = "was killed" if status.state is TransferState.VANISHED else f"exited {status.exit_code}"
    message = f"rsync {what}" + (f": {status.message}" if status.message else "")
    run.retry_later(
        job,
        message,
        transient=status.transient,
        attempt=int(job["transfer"].get("attempts") or 1),
        reason=FailureReason.TRANSFER,
        fields={**fields, "transfer.resume": True},
    )
    run.did["interrupted"] += 1


def session_down(run: StageRun, job: Mapping[str, Any]) -> bool:
    """Whether the job's cluster has no session now (the job is then marked as waiting)."""
    try:
        run.cluster(job).require_session(fresh=True)
    except SessionDownError:
        run.wait_for_session([job], job["compute_cluster"])
        return True
    except TransportError:
        return False  # unreachable: the usual backoff applies
    return False


def resume(run: StageRun, job: dict[str, Any]) -> None:
    """Start the same rsync again: --partial lets it continue where it stopped."""
    if session_down(run, job):
        return
    transfer = job["transfer"]
    handle = launch(run.state_dir(job["job_id"]), transfer["argv"])
    if handle is None:
        return  # the previous rsync is somehow still going: look again next run
    attempt = int(transfer.get("attempts") or 1) + (0 if transfer.get("free_resume") else 1)
    note = history_item(JobState.TRANSFERRING, f"rsync resumed (attempt {attempt})", utcnow())
    run.db.queue.update(
        {"job_id": job["job_id"], "status": "transferring"},
        {
            "$set": {
                "transfer.pid": handle.pid,
                "transfer.log": handle.log_path,
                "transfer.status_path": handle.status_path,
                "transfer.resume": False,
                "transfer.free_resume": False,
                "transfer.attempts": attempt,
            },
            "$push": {"history": note},
        },
    )
    run.did["resumed"] += 1
