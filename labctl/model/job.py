"""The queue document, typed: one analysis job and what each stage recorded about it.

A stored job is read into `Job` (`Job.of(doc)`); stages read its attributes and change it only
through `labctl.jobs.queue`. Fields a newer labctl may add are kept, not lost (`extra="allow"`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labctl.damaged import Damaged, problem
from labctl.errors import LabctlError
from labctl.model.reproduction import Reproduction, RerunOf, ResultFile
from labctl.model.states import FailureReason, JobState

SCHEMA_VERSION = 3
"""Version 2 replaced the job's `slurm` field by the scheduler-neutral `scheduler`; version 3
moved finished jobs no stage works on any more from `queue` to `archive`."""


@dataclass(frozen=True)
class TaskStatus:
    """What a scheduler says about one job or one array task, in labctl's terms.

    `detail` is the scheduler's own word for it (SLURM's `TIMEOUT`, a process's `exited 3`),
    shown to people and never interpreted outside the scheduler that wrote it.
    """

    job_id: str
    state: JobState
    reason: FailureReason | None
    detail: str
    exit_code: int | None
    array_task: int | None = None
    usage: TaskUsage | None = None  # once finished, where the scheduler's accounting has it
    restarts: int = 0  # times the scheduler requeued it, as far as it says (SLURM's RestartCnt)

    @property
    def finished(self) -> bool:
        return self.state not in (JobState.PENDING, JobState.RUNNING)

    @property
    def key(self) -> str:
        """The scheduler's name for it: `138`, or `138_2` for an array task."""
        return self.job_id if self.array_task is None else f"{self.job_id}_{self.array_task}"


class MalformedJob(LabctlError):
    """A stored job that is not a valid job document (edited by hand, say)."""

    def __init__(self, job_id: str, problem: str) -> None:
        super().__init__(f"job {job_id}: {problem}")
        self.job_id = job_id
        self.damaged = Damaged(kind="job", id=job_id, problem=problem)


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class Transfer(_Part):
    """The background rsync that ships a job's inputs, and its progress."""

    host: str
    argv: list[str]
    pid: int
    log: str
    status_path: str
    total: int = 0
    bytes: int = 0
    percent: int = 0
    rate: str | None = None
    rate_bytes_per_s: float | None = None
    eta_seconds: float | None = None
    done: bool = False
    attempts: int = 1
    resume: bool = False
    free_resume: bool = False  # cut by a session's end: resuming spends no attempt
    started_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class SchedulerStatus(_Part):
    """The job at its cluster's scheduler (SLURM, or plain processes)."""

    job_id: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")  # SLURM's, or a pid
    submitting: bool = False  # set just before sbatch: a run that dies there adopts the job
    tasks: int = 1
    state: str | None = None  # the scheduler's word (TaskStatus.detail)
    exit_code: int | None = None
    missing: int = 0  # polls in a row that did not find it (or, finished, its accounting)
    task_states: dict[str, str] = Field(default_factory=dict)
    restarts: dict[str, int] = Field(default_factory=dict)  # by task key, requeues seen so far
    submitted_at: dt.datetime | None = None  # while `submitting`: when the attempt began


class Failure(_Part):
    reason: FailureReason
    message: str = ""


class TaskUsage(_Part):
    """What the scheduler's accounting recorded for one finished job or array task (`sacct`).

    Times are in seconds, memory in bytes; None where the cluster records nothing.
    """

    task: str  # the scheduler's id: `138`, or `138_2` for an array task
    state: str  # the scheduler's word, e.g. `COMPLETED`, `TIMEOUT`
    exit_code: int | None = None
    elapsed_s: float = 0.0  # wall time
    cpu_s: float | None = None  # TotalCPU, user + system, summed over the job's steps
    cpus: int = 1  # AllocCPUS
    max_rss_bytes: int | None = None  # the largest MaxRSS of its steps
    req_mem_bytes: int | None = None  # what it asked for (the whole job's share)
    submit: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    nodes: str = ""


class NoticeEvent(StrEnum):
    """What the job's owner is told of: the job ended, or it waits for their session or for
    its cluster to be reachable again."""

    COMPLETED = JobState.COMPLETED.value
    FAILED = JobState.FAILED.value
    SESSION = "session"  # it cannot go on until `labctl connect CLUSTER`
    OUTAGE = "outage"  # its cluster cannot be reached: it goes on by itself once it is back


class NoticeState(StrEnum):
    """How far telling one event got (see labctl.stages.notices)."""

    NEW = "new"  # to send at `next_try_at` (again, after a failed attempt)
    SENDING = "sending"  # claimed by a run until `lease_until`
    SENT = "sent"
    SKIPPED = "skipped"  # nothing to send (`note` says why)


class Notice(_Part):
    """One event to tell the job's owner of, and what came of telling it."""

    event: NoticeEvent
    at: dt.datetime
    cluster: str = ""
    state: NoticeState = NoticeState.NEW
    next_try_at: dt.datetime | None = None
    digest: bool = False  # held for the owner's daily digest
    owner: str | None = None
    lease_until: dt.datetime | None = None
    claims: int = 0  # a claim past 1 took over from a run that stopped
    attempts: int = 0  # failed attempts to send
    delivered: list[str] = Field(default_factory=list)  # channels that took it
    error: str = ""
    note: str = ""
    sent_at: dt.datetime | None = None


class Resubmission(_Part):
    """An automatic resubmission after SLURM ended the job for reasons of its own (time limit,
    memory, a lost node, preemption); see `labctl.jobs.resubmit`."""

    count: int  # 1 for the first resubmission
    resources: dict[str, Any]  # what this run asks for: time, mem, cpus, partition
    tasks: list[int] = Field(default_factory=list)  # the array tasks run again; empty: all
    ends: list[FailureReason] = Field(default_factory=list)  # why each earlier run ended


class HistoryItem(_Part):
    state: JobState
    at: dt.datetime
    note: str = ""


class JobSpec(_Part):
    """What a member asked for, and whose it is: set when the job is queued, never changed by a
    watchdog (`labctl.stages.seam` writes only `Progress` and its own bookkeeping)."""

    job_id: str
    dataset: str
    user: str
    compute_cluster: str
    job_type: str
    data_transfer_await: bool = False
    datafiles: list[str] = Field(default_factory=list)
    datarawfiles: list[str] = Field(default_factory=list)
    job_options: dict[str, Any] = Field(default_factory=dict)
    options_key: str = ""
    resources: dict[str, Any] = Field(default_factory=dict)
    pipelines: dict[str, Any] = Field(default_factory=dict)  # codeversion.code_version
    created_at: dt.datetime
    attempt: int = 1  # how many times a person queued it (retry adds one)
    parent_job: str | None = None
    rerun: RerunOf | None = None  # set on a rerun of a finished job


class Progress(BaseModel):
    """What a watchdog records on a job as it works on it: the only fields it may write. As an
    update, only the fields given are written (`changes`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    retries: int = 0  # automatic retries spent in this attempt
    next_try_at: dt.datetime | None = None
    waiting: str | None = None  # what it waits for, e.g. a cluster's session
    remote_dir: str | None = None
    code_dir: str | None = None  # its commit's shared copy on the cluster; None: in remote_dir
    transfer: Transfer | None = None
    scheduler: SchedulerStatus | None = None
    batch_script: str | None = None
    log_tail: str | None = None
    results: list[ResultFile] = Field(default_factory=list)
    result_dir: str | None = None
    input_checksums: list[dict[str, Any]] = Field(default_factory=list)
    environment: list[dict[str, Any]] = Field(default_factory=list)
    scratch_cleaned: bool = False
    cleanup_pending: bool = False  # cancelled: its transfer or scheduler job is still to stop
    follow_up_pending: bool = False  # a finished array whose merge job is still to queue
    follow_up_job: str | None = None
    usage: list[TaskUsage] = Field(default_factory=list)  # per task, once it has finished
    resubmission: Resubmission | None = None  # the latest automatic resubmission, if any
    reproduction: Reproduction | None = (
        None  # a compared rerun's verdict; on its original: the last
    )

    def changes(self) -> dict[str, Any]:
        """The fields given, as the `$set` of stored values."""
        return {name: store_value(getattr(self, name)) for name in self.model_fields_set}


class Job(Progress, JobSpec):
    """One queue entry: what was asked (`JobSpec`), what the watchdog recorded (`Progress`),
    and the store's own bookkeeping of its state, lease and notices."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    status: JobState
    history: list[HistoryItem] = Field(default_factory=list)
    updated_at: dt.datetime
    owner: str | None = None
    lease_until: dt.datetime | None = None
    failure: Failure | None = None
    notices: dict[str, Notice] = Field(default_factory=dict)  # by event key
    notify_at: dt.datetime | None = None  # the earliest time a notice is due

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, doc: Any) -> Any:
        return upgrade(doc) if isinstance(doc, Mapping) else doc

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Job:
        """A stored document as a job (the store's own `_id` is not part of it)."""
        try:
            return cls.model_validate({k: v for k, v in doc.items() if k != "_id"})
        except ValidationError as exc:
            raise MalformedJob(str(doc.get("job_id")), problem(exc)) from None

    def doc(self) -> dict[str, Any]:
        """The document to store: plain values only."""
        return store_value(self)  # type: ignore[no-any-return]

    @property
    def scheduler_id(self) -> str | None:
        return self.scheduler.job_id if self.scheduler else None


class JobRow(BaseModel):
    """A job as a page's listing shows it (the monitor's queue, a dataset's jobs): only these
    fields are read from the store (`ROW_FIELDS`), so a row never carries a job's history, log
    tail or batch script."""

    model_config = ConfigDict(defer_build=True)  # the store's `_id` is ignored

    job_id: str
    dataset: str
    user: str
    compute_cluster: str
    job_type: str
    status: JobState
    created_at: dt.datetime
    updated_at: dt.datetime
    waiting: str | None = None
    failure: Failure | None = None
    transfer: Transfer | None = None
    scheduler: SchedulerStatus | None = None
    results: list[ResultFile] = Field(default_factory=list)


ROW_FIELDS = list(JobRow.model_fields)


class JobList(BaseModel):
    """Jobs as a listing gives them (the REST API's `GET /jobs`), and the damaged beside them."""

    items: list[Job]
    damaged: list[Damaged] = Field(
        default_factory=list, description="the selected jobs whose stored record does not validate"
    )


class JobRef(BaseModel):
    """A job as a stage read it: which, and in what state (a write lands only if it still is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(min_length=1, max_length=200)
    status: JobState

    @classmethod
    def of(cls, job: Job) -> JobRef:
        return cls(job_id=job.job_id, status=job.status)


def store_value(value: Any) -> Any:
    """A value as the store keeps it: models become documents, enums their text."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, Mapping):
        return {k: store_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [store_value(v) for v in value]
    return value


def upgrade(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A job document of an older labctl in today's shape (see SCHEMA_VERSION)."""
    doc = dict(doc)
    if "slurm" in doc:
        old = doc.pop("slurm")
        doc.setdefault("scheduler", old)
    return doc
