"""The watchdog: three stages that cron runs every minute, each safe to rerun or kill anywhere.

1. `scan`: takes new queue entries, stages their inputs and starts the rsync to the cluster;
   submits the batch script of jobs whose data have arrived.
2. `transfers`: records the progress of running rsyncs, resumes interrupted ones, ends them.
3. `jobs`: asks each cluster once about all its active jobs, follows SLURM's states, brings
   results home, verifies them and records them.

Each stage takes a job with an owner and a lease (`labctl.jobs.queue.claim`) and moves it only with
compare-and-set transitions, so overlapping runs never act on the same job twice.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from labctl.catalog.experiments import get_entry
from labctl.clock import utcnow
from labctl.compute.cluster import Cluster, ClusterPool
from labctl.compute.transport import (
    SessionDownError,
    TransportError,
    rsync_argv,
    waiting_message,
)
from labctl.config import Config
from labctl.db import Database
from labctl.errors import LabctlError, NotFoundError
from labctl.jobs.batch import JobLayout
from labctl.jobs.codeversion import shipped_commit
from labctl.jobs.job import Job, MalformedJob
from labctl.jobs.jobtypes import JobType, JobTypes, job_types_at
from labctl.jobs.migrate import migrate_if_needed
from labctl.jobs.queue import (
    claim,
    mark_waiting,
    read_job,
    release,
    renew,
    transition,
    update,
)
from labctl.jobs.states import TERMINAL, FailureReason, JobState
from labctl.private import private_dir

if TYPE_CHECKING:
    from labctl.stages.heartbeat import Pacer


class Unconfigured(LabctlError):
    """A job names a cluster the config no longer has, or a job type neither its pipelines
    commit declares nor the config defines (any more)."""


@dataclass
class StageRun:
    """One run of one stage: the database, the clusters it opened, and what it did."""

    db: Database
    config: Config
    stage: str
    pool: ClusterPool
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    did: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    shipped: set[tuple[str, PurePosixPath]] = field(default_factory=set)  # (cluster, code folder)
    _types_at: dict[str | None, JobTypes] = field(default_factory=dict, init=False, repr=False)

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.config.watchdog.lease_seconds)

    def state_dir(self, job_id: str) -> Path:
        """This machine's folder for one job: its staging tree and transfer log (0700, in the
        0700 state directory: they name the job's files and paths)."""
        return private_dir(private_dir(self.config.watchdog.state_dir) / job_id)

    def mine(self, filter: Mapping[str, Any]) -> dict[str, Any]:
        """`filter` narrowed to the jobs of the member this watchdog runs for: it never acts,
        with their HPC account and their file rights, for anyone else."""
        return {**filter, "user": self.config.user}

    def cluster(self, job: Job) -> Cluster:
        """The job's cluster, opened once per run; Unconfigured if the config has it no more."""
        if job.compute_cluster not in self.config.clusters:
            raise Unconfigured(f"cluster {job.compute_cluster!r} is no longer configured")
        return self.pool.get(job.compute_cluster)

    def job_type(self, job: Job) -> JobType:
        """The job's type on its cluster, as its pipelines version declares it and the config
        adjusts it (read once per version and run); Unconfigured if neither has it (now)."""
        commit = shipped_commit(job.pipelines)
        if commit not in self._types_at:
            self._types_at[commit] = job_types_at(self.config, job.pipelines)
        spec = self._types_at[commit].get(job.job_type, job.compute_cluster)
        if spec is None:
            raise Unconfigured(f"job type {job.job_type!r} is no longer configured")
        return spec

    def layout(self, job: Job) -> JobLayout:
        """The job's folder on the cluster: where it was made, as recorded, else (before it is
        made) where the cluster's current scratch puts it."""
        if job.remote_dir:
            return JobLayout(PurePosixPath(job.remote_dir))
        return JobLayout.of(self.cluster(job).config, job.job_id)

    def push_argv(self, cluster: Cluster, source: Path, dest: PurePosixPath) -> list[str]:
        """The rsync that ships a local folder's contents (links followed, no `__pycache__`)
        into `dest` on the cluster, at the watchdog's bandwidth limit."""
        return rsync_argv(
            [f"{source}/"],
            f"{dest}/",
            target=cluster.target,
            copy_links=True,
            exclude=["__pycache__"],
            bwlimit_kib=self.config.watchdog.bwlimit_kib,
        )

    def renew(self, *jobs: Job) -> None:
        """Extend this run's lease on jobs it is still working on (e.g. during a long pull)."""
        renew(self.db, jobs, self.owner, self.lease)

    def each(self, filter: Mapping[str, Any], handle: Callable[[Job], object]) -> None:
        """Claim the matching jobs one at a time and handle each on its own (see `alone`)."""
        for job in self.claimed(filter):
            self.alone(job, handle)

    def alone(self, job: Job, handle: Callable[[Job], object]) -> None:
        """`handle(job)`, so that one job cannot stop the others: a job whose cluster or job
        type left the config fails, naming it; an unexpected error is noted and the job left
        as it is for the next run."""
        try:
            handle(job)
        except Unconfigured as exc:
            current = read_job(self.db, job.job_id)
            if current.status not in TERMINAL:
                self.move(current, JobState.FAILED, str(exc), reason=FailureReason.CONFIG)
        except Exception as exc:  # a surprise in one job: the run goes on with the next
            self.notes.append(f"{job.job_id}: {type(exc).__name__}: {exc}")
            self.did["errors"] += 1

    def claimed(self, filter: Mapping[str, Any]) -> Iterator[Job]:
        """Claim matching jobs one at a time (each once per run), releasing each after use."""
        for [job] in self.batches(filter, 1):
            yield job

    def batches(self, filter: Mapping[str, Any], size: int) -> Iterator[list[Job]]:
        """Claim matching jobs up to `size` at a time (each once per run), holding a batch's
        leases while it is used and releasing them after."""
        seen: list[str] = []
        while True:
            jobs: list[Job] = []
            try:
                while len(jobs) < size and (job := self._claim(filter, seen)) is not None:
                    jobs.append(job)
                if not jobs:
                    return
                yield jobs
            finally:
                if jobs:
                    release(self.db, [job.job_id for job in jobs], self.owner)

    def _claim(self, filter: Mapping[str, Any], seen: list[str]) -> Job | None:
        """Claim one matching job not `seen` yet (and add it); None when there is none."""
        while True:
            try:
                mine = {**self.mine(filter), "job_id": {"$nin": seen}}
                job = claim(self.db, mine, self.owner, self.lease)
            except MalformedJob as exc:
                seen.append(exc.job_id)
                release(self.db, [exc.job_id], self.owner)
                self.malformed(exc)
                continue
            if job is not None:
                seen.append(job.job_id)
            return job

    def malformed(self, exc: MalformedJob) -> None:
        """A stored job that cannot be read is left as it is, for a person to look at."""
        self.notes.append(str(exc))
        self.did["errors"] += 1

    def move(
        self,
        job: Job,
        new: JobState,
        note: str = "",
        *,
        fields: Mapping[str, Any] | None = None,
        reason: FailureReason | None = None,
    ) -> Job | None:
        moved = transition(self.db, job, new, note, fields=fields, reason=reason)
        if moved is not None:
            self.did[str(new)] += 1
        return moved

    def entry_or_fail(self, job: Job, reason: FailureReason) -> dict[str, Any] | None:
        """The job's dataset entry; if it was deleted meanwhile, fail the job and return None."""
        try:
            return get_entry(self.db, job.dataset)
        except NotFoundError:
            note = f"dataset {job.dataset} is no longer in the database"
            self.move(job, JobState.FAILED, note, reason=reason)
            return None

    def retry_later(
        self,
        job: Job,
        message: str,
        *,
        transient: bool,
        attempt: int,
        reason: FailureReason,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Try again after a doubling backoff, or fail the job if it cannot or may not."""
        settings = self.config.watchdog
        if not transient or attempt > settings.max_retries:
            tries = f" (gave up after {attempt - 1} retries)" if transient else ""
            self.move(job, JobState.FAILED, message + tries, fields=fields, reason=reason)
            return
        delay = dt.timedelta(seconds=settings.backoff_seconds * 2 ** (attempt - 1))
        note = f"{message}; retry {attempt} in {delay}"
        update(self.db, job, note, **(fields or {}), next_try_at=utcnow() + delay)
        self.did["retries"] += 1

    def wait_for_session(self, jobs: Sequence[Job], cluster: str) -> None:
        """Jobs stay where they are until `labctl connect CLUSTER`: not failed, no retry spent;
        their owner is told. Only jobs not yet marked are written."""
        mark_waiting(self.db, jobs, waiting_message(cluster), session=cluster)
        self.did[f"waiting for {cluster}"] += len(jobs)

    def setback(self, job: Job, error: TransportError, reason: FailureReason) -> None:
        """A cluster could not be reached or refused: wait for its session, retry with backoff,
        or fail."""
        if isinstance(error, SessionDownError):
            self.wait_for_session([job], job.compute_cluster)
            return
        attempt = job.retries + 1
        self.retry_later(
            job,
            str(error),
            transient=error.transient,
            attempt=attempt,
            reason=reason,
            fields={"retries": attempt},
        )


@contextmanager
def stage_run(
    db: Database, config: Config, stage: str, pacer: Pacer | None = None
) -> Iterator[StageRun]:
    """A stage run that closes its cluster connections and writes its heartbeat at the end
    (with a `pacer`, that of a run that did nothing only when due)."""
    from labctl.stages.heartbeat import Pacer, record_sessions

    migrate_if_needed(db, config)
    run = StageRun(db, config, stage, ClusterPool(config))
    try:
        yield run
    finally:
        try:
            record_sessions(db, run.pool.sessions(every=stage == "jobs"), config.user)
        except TransportError as exc:
            run.notes.append(f"sessions: {exc}")
        run.pool.close()
        (pacer or Pacer()).beat(db, stage, run.did, config.user)
