"""The operations a watchdog does to the store (see `labctl.stages.seam`), each carried out for
the member of the `LocalStore` that runs it, and what each returns."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from labctl.catalog.experiments import get_entry, record_result
from labctl.clock import utcnow
from labctl.damaged import Damaged
from labctl.errors import DuplicateError, NotFoundError, ValidationError
from labctl.jobs.noticeboard import NoticeChange, claim_notice, reschedule_notices, settle_notice
from labctl.jobs.queue import (
    add_job,
    archive_settled,
    claim,
    mark_waiting,
    read_job,
    release,
    release_dead,
    renew,
    transition,
    update,
    update_all,
)
from labctl.jobs.work import Selection
from labctl.limits import WATCHDOG_IDS
from labctl.model.job import (
    Job,
    JobRef,
    MalformedJob,
    NoticeEvent,
    NoticeState,
    Progress,
)
from labctl.model.reproduction import Reproduction, ResultFile
from labctl.model.states import FailureReason, JobState
from labctl.stages.memberops import Beat, HasWork, HowNotified, RecordSessions
from labctl.stages.seam import Ids, LeaseSeconds, LocalStore, Name, Note, Op, Owner


class Claimed(BaseModel):
    job: Job | None = None
    damaged: Damaged | None = None


class Found(BaseModel):
    jobs: list[Job] = Field(default_factory=list)
    damaged: list[Damaged] = Field(default_factory=list)


class FollowedUp(BaseModel):
    """The merge job queued now (None: none, or queued before), or why none could be."""

    queued: str | None = None
    problem: str = ""


# A notice's key on its job, as the store makes it (`completed-1-4`, `session-20261207T...`): a
# plain name, never a path into the job's other fields.
NoticeKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")]


def _lease(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


class Claim(Op[Claimed]):
    """Take one job of the selected work whose lease is free or expired."""

    op: Literal["claim"] = "claim"
    selection: Selection
    owner: Owner
    lease_s: LeaseSeconds

    def apply(self, store: LocalStore) -> Claimed:
        try:
            job = claim(
                store.db, self.selection.filter(store.member), self.owner, _lease(self.lease_s)
            )
        except MalformedJob as exc:
            release(store.db, [exc.job_id], self.owner, store.member)
            return Claimed(damaged=exc.damaged)
        return Claimed(job=job)


class Release(Op[None]):
    op: Literal["release"] = "release"
    job_ids: Ids
    owner: Owner

    def apply(self, store: LocalStore) -> None:
        release(store.db, self.job_ids, self.owner, store.member)


class ReleaseDead(Op[None]):
    """Free the leases that the member's runs named here held: runs that died (kill -9)
    without releasing them, as their run files show (`labctl.stages.runlock`)."""

    op: Literal["release_dead"] = "release_dead"
    owners: Annotated[list[Owner], Field(min_length=1, max_length=100)]

    def apply(self, store: LocalStore) -> None:
        release_dead(store.db, self.owners, store.member)


class Renew(Op[None]):
    op: Literal["renew"] = "renew"
    job_ids: Ids
    owner: Owner
    lease_s: LeaseSeconds

    def apply(self, store: LocalStore) -> None:
        renew(store.db, self.job_ids, self.owner, _lease(self.lease_s), store.member)


class Find(Op[Found]):
    """The jobs of the selected work (each that does not read as a job, as damaged)."""

    op: Literal["find"] = "find"
    selection: Selection

    def apply(self, store: LocalStore) -> Found:
        found = Found()
        for doc in store.db.queue.find(self.selection.filter(store.member)):
            try:
                found.jobs.append(Job.of(doc))
            except MalformedJob as exc:
                found.damaged.append(exc.damaged)
        return found


class Read(Op[Job]):
    """One of the member's jobs, in flight or archived."""

    op: Literal["read"] = "read"
    job_id: Name

    def apply(self, store: LocalStore) -> Job:
        job = read_job(store.db, self.job_id)
        if job.user != store.member:
            raise NotFoundError(f"{store.member} has no job {self.job_id}")
        return job


class Move(Op[Job | None]):
    """Move a job from the state it was read in to `to`, recording why and what was learnt;
    None if it has moved on meanwhile."""

    op: Literal["move"] = "move"
    job: JobRef
    to: JobState
    note: Note = ""
    progress: Progress = Field(default_factory=Progress)
    reason: FailureReason | None = None

    def apply(self, store: LocalStore) -> Job | None:
        job = store.own(self.job)
        if job is None:
            return None
        return transition(
            store.db, job, self.to, self.note, fields=self.progress, reason=self.reason
        )


class Update(Op[bool]):
    """Record what was learnt on a job still in the state it was read in (and a note in its
    history); False if it has moved on."""

    op: Literal["update"] = "update"
    job: JobRef
    note: Note | None = None
    progress: Progress

    def apply(self, store: LocalStore) -> bool:
        job = store.own(self.job)
        return job is not None and update(store.db, job, self.note, self.progress)


class UpdateAll(Op[None]):
    op: Literal["update_all"] = "update_all"
    jobs: Annotated[list[JobRef], Field(max_length=WATCHDOG_IDS)]
    progress: Progress

    def apply(self, store: LocalStore) -> None:
        update_all(store.db, self.jobs, self.progress, store.member)


class MarkWaiting(Op[None]):
    """Note on jobs what they wait for (and, with `next_try_at`, when a stage looks again); for
    their owner's `session` to a cluster, with a notice to tell them; with `outage`, the
    notice tells that this cluster cannot be reached (the jobs go on by themselves)."""

    op: Literal["mark_waiting"] = "mark_waiting"
    jobs: Annotated[list[JobRef], Field(max_length=WATCHDOG_IDS)]
    message: Note
    session: Name | None = None
    outage: bool = False
    next_try_at: dt.datetime | None = None

    def apply(self, store: LocalStore) -> None:
        event = NoticeEvent.OUTAGE if self.outage else NoticeEvent.SESSION
        mark_waiting(
            store.db,
            self.jobs,
            self.message,
            store.member,
            session=self.session,
            event=event,
            next_try_at=self.next_try_at,
        )


class ArchiveSettled(Op[list[str]]):
    op: Literal["archive_settled"] = "archive_settled"
    owner: Owner
    lease_s: LeaseSeconds

    def apply(self, store: LocalStore) -> list[str]:
        return archive_settled(store.db, self.owner, _lease(self.lease_s), store.member)


class QueueFollowUp(Op[FollowedUp]):
    """Queue the merge of a completed array of the member's, as its job type declares it, with
    the same code version. Its id derives from the array's, so a run that dies half-way cannot
    queue it twice."""

    op: Literal["queue_follow_up"] = "queue_follow_up"
    job: JobRef

    def apply(self, store: LocalStore) -> FollowedUp:
        from labctl.jobs.declarations import job_types_at
        from labctl.jobs.submit import JobRequest, prepare_job

        job = store.own(self.job)
        if job is None or job.status is not JobState.COMPLETED or not job.follow_up_pending:
            return FollowedUp()  # another run has done it
        spec = job_types_at(store.config, job.pipelines).get(job.job_type, job.compute_cluster)
        merge_type = spec.merge_with if spec else None
        done = FollowedUp(queued=f"{job.job_id}m")
        try:
            if merge_type is None:
                raise ValidationError(f"job type {job.job_type!r} declares no merge")
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
            acting = store.config.model_copy(update={"user": store.member})
            follow = prepare_job(store.db, acting, request, pipelines=job.pipelines)
            follow.job_id, follow.parent_job = f"{job.job_id}m", job.job_id
            follow.rerun = job.rerun.follow_up if job.rerun else None
            follow.history[0].note = f"queued by the watchdog to merge job {job.job_id}"
            add_job(store.db, follow)
        except DuplicateError:  # queued by a run that died before noting it
            done = FollowedUp()
        except (ValidationError, NotFoundError) as exc:
            done = FollowedUp(problem=f"cannot queue {merge_type} after {job.job_id}: {exc}")
        follow_id = None if done.problem else f"{job.job_id}m"
        update(store.db, job, None, Progress(follow_up_pending=False, follow_up_job=follow_id))
        return done


class RecordResult(Op[None]):
    """Note on the job's experiment what the job, being retrieved, brought home."""

    op: Literal["record_result"] = "record_result"
    job: JobRef
    dir: Annotated[str, Field(max_length=4096)]
    files: Annotated[list[ResultFile], Field(max_length=WATCHDOG_IDS)]

    def apply(self, store: LocalStore) -> None:
        job = store.own(self.job)
        if job is None or job.status is not JobState.RETRIEVING:
            raise ValidationError("results are recorded only for a job being retrieved")
        files = [f.model_dump(include={"name", "path", "size", "sha256"}) for f in self.files]
        record = {
            "job_id": job.job_id,
            "job_type": job.job_type,
            "dir": self.dir,
            "files": files,
            "at": utcnow(),
        }
        record_result(store.db, job.dataset, job.job_id, record)


class RecordReproduction(Op[bool]):
    """Keep the verdict of comparing the member's completed rerun with its original on both
    jobs (the original may be anyone's: the verdict names the rerun that gave it); False if the
    rerun has moved on."""

    op: Literal["record_reproduction"] = "record_reproduction"
    job: JobRef
    reproduction: Reproduction

    def apply(self, store: LocalStore) -> bool:
        from labctl.jobs.rerun import keep_reproduction  # the submission code: only here

        job = store.own(self.job)
        return job is not None and keep_reproduction(store.db, job, self.reproduction)


class Entry(Op[dict[str, Any] | None]):
    """The experiment entry of one of the member's jobs; None if it was deleted."""

    op: Literal["entry"] = "entry"
    job_id: Name

    def apply(self, store: LocalStore) -> dict[str, Any] | None:
        job = Read(job_id=self.job_id).apply(store)
        try:
            return get_entry(store.db, job.dataset)
        except NotFoundError:
            return None


class ClaimNotice(Op[Job | None]):
    op: Literal["claim_notice"] = "claim_notice"
    job_id: Name
    key: NoticeKey
    owner: Owner
    lease_s: LeaseSeconds

    def apply(self, store: LocalStore) -> Job | None:
        Read(job_id=self.job_id).apply(store)
        return claim_notice(store.db, self.job_id, self.key, self.owner, _lease(self.lease_s))


class SettleNotice(Op[bool]):
    op: Literal["settle_notice"] = "settle_notice"
    job_id: Name
    key: NoticeKey
    owner: Owner
    state: NoticeState
    change: NoticeChange = Field(default_factory=NoticeChange)

    def apply(self, store: LocalStore) -> bool:
        Read(job_id=self.job_id).apply(store)
        return settle_notice(store.db, self.job_id, self.key, self.owner, self.state, self.change)


class RescheduleNotices(Op[None]):
    op: Literal["reschedule_notices"] = "reschedule_notices"
    job_id: Name

    def apply(self, store: LocalStore) -> None:
        Read(job_id=self.job_id).apply(store)
        reschedule_notices(store.db, self.job_id)


AnyOp = Annotated[
    Claim
    | Release
    | ReleaseDead
    | Renew
    | Find
    | Read
    | Move
    | Update
    | UpdateAll
    | MarkWaiting
    | ArchiveSettled
    | QueueFollowUp
    | RecordResult
    | RecordReproduction
    | Entry
    | ClaimNotice
    | SettleNotice
    | RescheduleNotices
    | HowNotified
    | Beat
    | RecordSessions
    | HasWork,
    Field(discriminator="op"),
]
