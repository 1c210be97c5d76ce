"""The watchdog: three stages that cron runs every minute, each safe to rerun or kill anywhere.

1. `scan`: takes new queue entries, stages their inputs and starts the rsync to the cluster;
   submits the batch script of jobs whose data have arrived.
2. `transfers`: records the progress of running rsyncs, resumes interrupted ones, ends them.
3. `jobs`: asks each cluster once about all its active jobs, follows SLURM's states, brings
   results home, verifies them and records them.

Each stage takes a job with an owner and a lease and moves it only with compare-and-set
transitions, so overlapping runs never act on the same job twice; the leases of a run killed
on this machine are freed by the next run (`labctl.stages.runlock`), not when they expire.
Stages reach the store only through the typed operations of `labctl.stages.seam`, for the
member they run for.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from labctl.clock import utcnow
from labctl.compute.batch import JobLayout
from labctl.compute.cluster import Cluster, ClusterPool
from labctl.compute.transport import (
    ConnectError,
    SessionDownError,
    TransferHandle,
    TransportError,
    outage_message,
    rsync_argv,
    transfer_alive,
    waiting_message,
)
from labctl.config import Config
from labctl.config.jobtypes import JobType, JobTypes
from labctl.damaged import Damaged
from labctl.errors import LabctlError
from labctl.jobs.codeversion import shipped_commit
from labctl.jobs.declarations import job_types_at
from labctl.jobs.work import Selection, Work
from labctl.model.job import Job, JobRef, Progress
from labctl.model.states import TERMINAL, FailureReason, JobState
from labctl.private import private_dir
from labctl.stages.heartbeat import Pacer, SessionReport
from labctl.stages.memberops import Beat, RecordSessions
from labctl.stages.ops import (
    Claim,
    Entry,
    Find,
    MarkWaiting,
    Move,
    Read,
    Release,
    ReleaseDead,
    Renew,
    Update,
)
from labctl.stages.runlock import Mark, dead, hold, new_owner
from labctl.stages.seam import WatchdogStore

RECORD = "transfer.json"
# The job ids labctl gives (`new_job_id`, and a merge job's `...m`): one plain name, safe as a
# folder's; no other job is labctl's to stop or to remove folders of.
JOB_ID = re.compile(r"[A-Za-z0-9_-]+")
CODE = "code"
"""The state directory's folder of exported pipelines code, beside the jobs' folders."""


def own_job_id(job_id: str) -> bool:
    """Whether `job_id` can name a job's folder here and on a cluster (not `CODE`)."""
    return bool(JOB_ID.fullmatch(job_id)) and job_id != CODE


def recorded(state_dir: Path) -> TransferHandle | None:
    """The job's latest rsync as `scan.launch` recorded it in the job's state folder (0600, in
    this account's 0700 state directory: what no member's document can change); None if none."""
    try:
        return TransferHandle(**json.loads((state_dir / RECORD).read_text()))
    except FileNotFoundError:
        return None


class Unconfigured(LabctlError):
    """A job names a cluster the config no longer has, or a job type neither its pipelines
    commit declares nor the config defines (any more)."""


@dataclass
class StageRun:
    """One run of one stage for one member: their store, the clusters it opened, and what it
    did."""

    store: WatchdogStore
    config: Config
    stage: str
    pool: ClusterPool
    owner: str = field(default_factory=lambda: new_owner(socket.gethostname()))
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

    def transfer_running(self, job: Job) -> bool:
        """Whether a transfer this account recorded here for the job still runs."""
        record = recorded(self.config.watchdog.state_dir / job.job_id)
        return record is not None and transfer_alive(record)

    def forget(self, job: Job) -> None:
        """Remove the job's folder on this machine (staging links, rsync log, transfer record)
        once no transfer it records runs; links in it are removed, never followed."""
        if own_job_id(job.job_id) and not self.transfer_running(job):
            shutil.rmtree(self.config.watchdog.state_dir / job.job_id, ignore_errors=True)

    @property
    def host(self) -> str:
        return socket.gethostname()

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
        ids = [job.job_id for job in jobs]
        self.store.run(Renew(job_ids=ids, owner=self.owner, lease_s=self.lease.total_seconds()))

    def find(self, work: Work, **narrowed: Any) -> list[Job]:
        """The member's jobs of `work` (narrowed as `Selection` allows), without claiming them;
        each that cannot be read is noted instead."""
        found = self.store.run(Find(selection=Selection(work=work, **narrowed)))
        for damaged in found.damaged:
            self.malformed(damaged)
        return found.jobs

    def read(self, job: Job) -> Job:
        """The job as it is stored now."""
        return self.store.run(Read(job_id=job.job_id))

    def each(self, work: Work, handle: Callable[[Job], object], **narrowed: Any) -> None:
        """Claim the jobs of `work` one at a time and handle each on its own (see `alone`)."""
        for job in self.claimed(Selection(work=work, **narrowed)):
            self.alone(job, handle)

    def alone(self, job: Job, handle: Callable[[Job], object]) -> None:
        """`handle(job)`, so that one job cannot stop the others: a job whose cluster or job
        type left the config fails, naming it; an unexpected error is noted and the job left
        as it is for the next run."""
        try:
            handle(job)
        except Unconfigured as exc:
            current = self.read(job)
            if current.status not in TERMINAL:
                self.move(current, JobState.FAILED, str(exc), reason=FailureReason.CONFIG)
        except Exception as exc:  # a surprise in one job: the run goes on with the next
            self.notes.append(f"{job.job_id}: {type(exc).__name__}: {exc}")
            self.did["errors"] += 1

    def claimed(self, selection: Selection) -> Iterator[Job]:
        """Claim selected jobs one at a time (each once per run), releasing each after use."""
        for [job] in self.batches(selection, 1):
            yield job

    def batches(self, selection: Selection, size: int) -> Iterator[list[Job]]:
        """Claim matching jobs up to `size` at a time (each once per run), holding a batch's
        leases while it is used and releasing them after."""
        seen: list[str] = []
        while True:
            jobs: list[Job] = []
            try:
                while len(jobs) < size and (job := self._claim(selection, seen)) is not None:
                    jobs.append(job)
                if not jobs:
                    return
                yield jobs
            finally:
                if jobs:
                    ids = [job.job_id for job in jobs]
                    self.store.run(Release(job_ids=ids, owner=self.owner))

    def _claim(self, selection: Selection, seen: list[str]) -> Job | None:
        """Claim one selected job not `seen` yet (and add it); None when there is none."""
        while True:
            unseen = selection.model_copy(update={"exclude": [*selection.exclude, *seen]})
            lease = self.lease.total_seconds()
            claimed = self.store.run(Claim(selection=unseen, owner=self.owner, lease_s=lease))
            if claimed.damaged is not None:  # released again by the store
                seen.append(claimed.damaged.id)
                self.malformed(claimed.damaged)
                continue
            if claimed.job is not None:
                seen.append(claimed.job.job_id)
            return claimed.job

    def malformed(self, damaged: Damaged) -> None:
        """A stored job that cannot be read is left as it is, for a person to look at."""
        self.notes.append(damaged.line)
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
        progress = Progress.model_validate(dict(fields or {}))
        moved = self.store.run(
            Move(job=JobRef.of(job), to=new, note=note, progress=progress, reason=reason)
        )
        if moved is not None:
            self.did[str(new)] += 1
            if new is JobState.FAILED:  # a retry starts from the queue, staging afresh
                self.forget(moved)
        return moved

    def update(self, job: Job, note: str | None = None, **fields: Any) -> bool:
        """Record `fields` (of `Progress`) on a job still in the state it was read in, and
        `note` in its history; False if it has moved on meanwhile."""
        progress = Progress.model_validate(fields)
        return self.store.run(Update(job=JobRef.of(job), note=note, progress=progress))

    def entry_or_fail(self, job: Job, reason: FailureReason) -> dict[str, Any] | None:
        """The job's dataset entry; if it was deleted meanwhile, fail the job and return None."""
        entry = self.store.run(Entry(job_id=job.job_id))
        if entry is None:
            note = f"dataset {job.dataset} is no longer in the database"
            self.move(job, JobState.FAILED, note, reason=reason)
        return entry

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
        later = utcnow() + delay  # an error of its own: it waits for nothing else any more
        self.update(job, note, **(fields or {}), next_try_at=later, waiting=None)
        self.did["retries"] += 1

    def wait_for_session(self, jobs: Sequence[Job], cluster: str) -> None:
        """Jobs stay where they are until `labctl connect CLUSTER`: not failed, no retry spent;
        their owner is told. Only jobs not yet marked are written."""
        message = waiting_message(cluster)
        refs = [JobRef.of(job) for job in jobs if job.waiting != message]
        if refs:
            self.store.run(MarkWaiting(jobs=refs, message=message, session=cluster))
        self.did[f"waiting for {cluster}"] += len(jobs)

    def wait_for_cluster(self, jobs: Sequence[Job], cluster: str) -> None:
        """An outage: the cluster cannot be reached. Jobs stay where they are, not failed and
        no retry spent, and are looked at again after `backoff_seconds` (never given up); their
        owner is told once per outage. Only jobs not yet marked are written."""
        message = outage_message(cluster, self.pool.get(cluster).down_since())
        later = utcnow() + dt.timedelta(seconds=self.config.watchdog.backoff_seconds)
        new = [JobRef.of(job) for job in jobs if job.waiting != message]
        known = [JobRef.of(job) for job in jobs if job.waiting == message]
        if new:  # with the notice that tells their owner
            told = MarkWaiting(
                jobs=new, message=message, session=cluster, outage=True, next_try_at=later
            )
            self.store.run(told)
        if known:
            self.store.run(MarkWaiting(jobs=known, message=message, next_try_at=later))
        self.did[f"waiting for {cluster} (unreachable)"] += len(jobs)

    def wait_out(self, jobs: Sequence[Job], cluster: str, error: TransportError) -> bool:
        """Whether `error` is the cluster's not the jobs' (its session is down, or it cannot be
        reached): if so, the jobs wait for it, spending no retry."""
        if isinstance(error, SessionDownError):
            self.wait_for_session(jobs, cluster)
        elif isinstance(error, ConnectError):
            self.wait_for_cluster(jobs, cluster)
        else:
            return False
        return True

    def setback(self, job: Job, error: TransportError, reason: FailureReason) -> None:
        """A cluster could not be reached or refused: wait for its session or for it to be
        back, else retry with backoff, or fail."""
        if self.wait_out([job], job.compute_cluster, error):
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
    store: WatchdogStore, config: Config, stage: str, pacer: Pacer | None = None
) -> Iterator[StageRun]:
    """A stage run that closes its cluster connections and writes its heartbeat at the end
    (with a `pacer`, that of a run that did nothing only when due)."""
    store.prepare()
    run = StageRun(store, config, stage, ClusterPool(config))
    mark = Mark(owner=run.owner, member=store.member, host=run.host)
    with hold(config.watchdog.state_dir, mark):  # until the end: see labctl.stages.runlock
        try:
            free_dead_runs(run)
            yield run
        finally:
            try:
                found = run.pool.sessions(every=stage == "jobs")
                reports = [SessionReport.of(session) for session in found]
                if reports:
                    store.run(RecordSessions(host=run.host, sessions=reports))
            except TransportError as exc:
                run.notes.append(f"sessions: {exc}")
            run.pool.close()
            if (pacer or Pacer()).beats(stage, run.did):
                store.run(Beat(stage=stage, host=run.host, did=dict(run.did)))


def free_dead_runs(run: StageRun) -> None:
    """Free the leases of the member's runs on this machine that died holding them (their run
    files are unlocked), so their jobs wait for no lease; then remove those files."""
    state_dir = run.config.watchdog.state_dir
    while found := dead(state_dir, run.store.member, run.host, limit=100):
        freed = False
        try:
            run.store.run(ReleaseDead(owners=[lock.mark.owner for lock in found]))
            freed = True
        finally:  # a file is removed only once its leases are free
            for lock in found:
                lock.drop(remove=freed)
        run.did["dead runs"] += len(found)
