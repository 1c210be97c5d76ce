"""Cancelling a job, the same from the CLI, the dashboard and the REST API: mark it cancelled,
then stop it on the cluster at once (scancel, or kill a process job or a transfer) and remove its
folders there and here; where the cluster cannot be reached now (or a transfer is still ending),
the watchdog's next `jobs` run does. A user action, above the
watchdog's stages whose code it runs: the acting member is passed in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labctl.compute.cluster import ClusterPool
from labctl.config import Config
from labctl.db import Database, Doc
from labctl.jobs.actions import cancel_job
from labctl.jobs.bulk import (
    Action,
    BulkReport,
    Outcome,
    Plan,
    carry_out,
    choose,
    parse_filter,
    plan,
    report,
)
from labctl.jobs.queue import get_job
from labctl.stages import StageRun
from labctl.stages.cleanup import clean_up
from labctl.stages.seam import LocalStore
from labctl.stages.tracking import stop_cancelled


@dataclass(frozen=True)
class Cancelled:
    """The cancelled job as it is now, whether nothing of it is left to stop on its cluster,
    and what stopping it noted (why something was left alone, or must wait)."""

    job: Doc
    stopped: bool
    noted: str = ""

    @property
    def message(self) -> str:
        job_id, cluster = self.job["job_id"], self.job["compute_cluster"]
        if not self.stopped:
            why = f" ({self.noted})" if self.noted else ""
            return f"cancelled {job_id}; the watchdog stops it on the cluster on its next run{why}"
        if self.noted:
            return f"cancelled {job_id}; {self.noted}"
        return f"cancelled {job_id} and stopped it on {cluster}"


def cancel_and_stop(db: Database, config: Config, job_id: str, username: str) -> Cancelled:
    """Cancel `job_id` as `username` (its owner or an admin) and, if it is their own, stop it on
    its cluster now; another member's job is stopped by its owner's watchdog on its next run."""
    cancel_job(db, job_id, username)
    [done] = _stop_now(db, config, [job_id], username)
    return done


def cancel_many(db: Database, config: Config, plan: Plan, username: str) -> Outcome:
    """Cancel the plan's ready jobs as `username`, then stop those that are theirs on their
    clusters (one session per cluster for all); each job's line says whether it was stopped."""
    assert plan.action is Action.CANCEL
    outcome = carry_out(db, plan, username)
    done = _stop_now(db, config, [job["job_id"] for job in outcome.done], username)
    outcome.done = [cancelled.job for cancelled in done]
    outcome.lines = [cancelled.message for cancelled in done]
    return outcome


def _stop_now(db: Database, config: Config, job_ids: list[str], username: str) -> list[Cancelled]:
    """Stop the cancelled `job_ids` that are `username`'s own on their clusters now."""
    acting = config.model_copy(update={"user": username})  # stops only their own jobs now
    run = StageRun(LocalStore(db, acting, username), acting, "cancel", ClusterPool(acting))
    try:
        for job_id in job_ids:
            stop_cancelled(run, job_id)
            clean_up(run, job_id)  # its folders, once stopped (else the watchdog does)
    finally:
        run.pool.close()
    jobs = [get_job(db, job_id) for job_id in job_ids]
    return [Cancelled(job, not job["cleanup_pending"], _noted(run, job["job_id"])) for job in jobs]


def _noted(run: StageRun, job_id: str) -> str:
    """What stopping job `job_id` noted, without each note's `cancel ID: `."""
    own = [note for note in run.notes if job_id in note]
    return "; ".join(note.removeprefix(f"cancel {job_id}: ") for note in own)


def carry_out_plan(db: Database, config: Config, plan: Plan, username: str) -> Outcome:
    """A bulk action as the CLI, the dashboard and the API do it: retry in the queue, or cancel
    and stop at once (`cancel_many`)."""
    if plan.action is Action.CANCEL:
        return cancel_many(db, config, plan, username)
    return carry_out(db, plan, username)


def bulk_action(
    db: Database,
    config: Config,
    action: Action,
    ids: Sequence[str],
    filter: Mapping[str, Any],
    caller: str,
    *,
    confirm: bool,
) -> BulkReport:
    """`labctl retry|cancel` and `POST /jobs/bulk`: the jobs `ids` or `filter` select for
    `caller`, and, if `confirm`, what acting on them did (`labctl.jobs.bulk.report`)."""
    chosen = plan(db, action, choose(ids, parse_filter(caller, **filter)), caller)
    return report(chosen, carry_out_plan(db, config, chosen, caller) if confirm else None)
