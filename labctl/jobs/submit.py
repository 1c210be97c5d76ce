"""Submitting analysis jobs: a request validated into a complete queue entry."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from labctl.catalog.experiments import get_entry
from labctl.catalog.fields import coerce, get_dotted
from labctl.clock import utcnow
from labctl.compute.batch import JobLayout, render
from labctl.config import Config
from labctl.config.jobtypes import JobType, Resources, slurm_megabytes, slurm_minutes
from labctl.db import Database
from labctl.errors import DuplicateError, ValidationError
from labctl.jobs.codeversion import code_version
from labctl.jobs.declarations import job_types_at
from labctl.jobs.queue import add_job, history_item, read_job, where
from labctl.model.job import Job
from labctl.model.states import ACTIVE, JobState

SPLIT_OPTIONS = ("split_idx", "num_splits")


class JobRequest(BaseModel):
    """What a lab member asks for (from the CLI, the Python API, the web form or the REST API's
    body); `submit_job` validates it into a queue entry. Through the service, `user` is always
    the token's member."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    compute_cluster: str
    job_type: str
    datafiles: Sequence[str] = ()
    datarawfiles: Sequence[str] = ()
    job_options: dict[str, Any] = Field(default_factory=dict)
    data_transfer_await: bool = False
    user: str | None = Field(default=None, description="whose job; the service sets its caller")
    allow_dirty: bool = False


class NewJob(JobRequest):
    """A request to queue (`POST /jobs`): refused if an identical job is active, unless `force`."""

    force: bool = Field(default=False, description="queue even if an identical job is active")


class BatchScript(BaseModel):
    """The batch script a request would run (`POST /jobs/script`)."""

    batch_script: str


def safe_relative(name: str) -> str:
    """A file name relative to a dataset directory: no absolute path, no `..`, no NUL."""
    path = PurePosixPath(name)
    if not name or "\0" in name or "\n" in name or path.is_absolute() or ".." in path.parts:
        raise ValidationError(f"input file {name!r} must be a path inside the dataset directory")
    return str(path)


def dataset_dirs(entry: Mapping[str, Any], config: Config) -> tuple[Path, Path]:
    """(processed, raw) directories of a dataset; processed falls back to raw."""
    raw = get_dotted(entry, config.data.raw_path_field)
    if not raw:
        raise ValidationError(f"dataset {entry['dataset']} has no {config.data.raw_path_field}")
    processed = get_dotted(entry, config.data.processed_path_field) or raw
    return Path(processed), Path(raw)


def check_inputs(directory: Path, names: Sequence[str], must_exist: bool) -> list[str]:
    """Validate input names against `directory`; symlinks may not lead outside it."""
    checked = []
    root = directory.resolve()
    for name in names:
        rel = safe_relative(name)
        target = (directory / rel).resolve()
        if not target.is_relative_to(root):
            raise ValidationError(f"input file {name!r} leads outside {directory}")
        if must_exist and not target.is_file():
            raise ValidationError(f"input file {name!r} does not exist in {directory}")
        if rel in checked:
            raise ValidationError(f"input file {name!r} is listed twice")
        checked.append(rel)
    return checked


def typed_options(job_type: str, spec: JobType, given: Mapping[str, Any]) -> dict[str, Any]:
    """The job's options: declared, typed, defaults filled in, splits checked."""
    declared = dict(spec.options)
    unknown = sorted(
        set(given) - set(declared) - (set(SPLIT_OPTIONS) if spec.splittable else set())
    )
    if unknown:
        known = sorted(declared) + (list(SPLIT_OPTIONS) if spec.splittable else [])
        raise ValidationError(
            f"job type {job_type} has no option {', '.join(unknown)} "
            f"(options: {', '.join(known) or 'none'})"
        )
    options: dict[str, Any] = {
        name: opt.default for name, opt in declared.items() if opt.default is not None
    }
    for name, value in given.items():
        kind = declared[name].type if name in declared else "int"
        options[name] = coerce(name, value, kind)
    if spec.splittable:
        splits = int(options.setdefault("num_splits", 1))
        if not 1 <= splits <= 10000:
            raise ValidationError("num_splits must be between 1 and 10000")
        index = options.get("split_idx")
        if index is not None and not 0 <= index < splits:
            raise ValidationError(f"split_idx must be between 0 and {splits - 1}")
    return options


RESOURCE_OPTIONS = ("time", "mem", "cpus")


def resource_request(job_type: str, spec: JobType, given: Mapping[str, Any]) -> dict[str, Any]:
    """`time`/`mem`/`cpus` asked for in the job options, checked against the type's limits."""
    asked = {key: given[key] for key in RESOURCE_OPTIONS if key in given}
    if not asked:
        return {}
    limits = spec.max_resources
    if limits is None:
        raise ValidationError(f"job type {job_type} does not let a job change time, mem or cpus")
    try:
        wanted = Resources.model_validate(
            {k: int(v) if k == "cpus" else str(v) for k, v in asked.items()}
        )
    except (ValueError, PydanticValidationError):
        raise ValidationError(
            f"resources {asked} are not SLURM values (e.g. 02:00:00, 8G, 4)"
        ) from None
    measures = {"time": slurm_minutes, "mem": slurm_megabytes, "cpus": float}
    for key in asked:
        limit = getattr(limits, key)
        if limit is None or measures[key](getattr(wanted, key)) > measures[key](limit):
            raise ValidationError(
                f"{key}={asked[key]} is over the limit of job type {job_type} ({limit})"
            )
    return wanted.model_dump(exclude_none=True)


def options_key(options: Mapping[str, Any]) -> str:
    """A canonical text of the options, so that identical jobs can be found by equality: a
    whole number is the same whether given as `0` or `0.0`."""
    canonical = {
        name: int(value) if isinstance(value, float) and value.is_integer() else value
        for name, value in options.items()
    }
    return json.dumps(canonical, sort_keys=True, default=str)


def new_job_id() -> str:
    return "j" + uuid.uuid4().hex[:11]


def prepare_job(
    db: Database, config: Config, request: JobRequest, *, pipelines: dict[str, Any] | None = None
) -> Job:
    """Validate a request into a complete queue entry, without storing it.

    `pipelines` gives the code version (a follow-up job runs its parent's); by default it is the
    version of the pipelines folder now. The job type is checked as that version declares it.
    """
    version = pipelines or code_version(config.watchdog.pipelines, allow_dirty=request.allow_dirty)
    types = job_types_at(config, version)
    spec = types.get(request.job_type, request.compute_cluster)
    if spec is None:
        known = ", ".join(types.names()) or "none"
        raise ValidationError(f"unknown job type {request.job_type!r} (known: {known})")
    if request.compute_cluster not in config.clusters:
        raise ValidationError(
            f"unknown cluster {request.compute_cluster!r} "
            f"(known: {', '.join(config.clusters) or 'none configured'})"
        )
    entry = get_entry(db, request.dataset)
    processed, raw = dataset_dirs(entry, config)
    wait = request.data_transfer_await
    resources = resource_request(request.job_type, spec, request.job_options)
    given = {k: v for k, v in request.job_options.items() if k not in RESOURCE_OPTIONS}
    options = typed_options(request.job_type, spec, given)
    now = utcnow()
    return Job(
        job_id=new_job_id(),
        dataset=request.dataset,
        user=request.user or config.user,
        compute_cluster=request.compute_cluster,
        job_type=request.job_type,
        data_transfer_await=wait,
        datafiles=check_inputs(processed, request.datafiles, must_exist=not wait),
        datarawfiles=check_inputs(raw, request.datarawfiles, must_exist=not wait),
        job_options=options,
        options_key=options_key({**options, **resources}),
        resources=resources,
        pipelines=version,
        status=JobState.QUEUED,
        history=[history_item(JobState.QUEUED, f"submitted by {config.user}", now)],
        created_at=now,
        updated_at=now,
        next_try_at=now,
    )


def active_twin(db: Database, job: Job) -> dict[str, Any] | None:
    """An active job identical to `job`: same dataset, job type, cluster, options and inputs
    (in any order)."""
    same = {
        "dataset": job.dataset,
        "job_type": job.job_type,
        "compute_cluster": job.compute_cluster,
        "options_key": job.options_key,
    }
    fields = ["job_id", "status", "datafiles", "datarawfiles"]
    for twin in db.queue.find({**same, **where(*ACTIVE)}, fields):
        if sorted(twin.get("datafiles") or []) == sorted(job.datafiles) and sorted(
            twin.get("datarawfiles") or []
        ) == sorted(job.datarawfiles):
            return twin
    return None


def submit_job(
    db: Database, config: Config, request: JobRequest, *, force: bool = False
) -> dict[str, Any]:
    """Validate a request and add it to the queue; return the new queue entry.

    An identical job (same dataset, job type, cluster, inputs and options) still active is
    refused unless `force`.
    """
    return submit_jobs(db, config, [request], force=force)[0].doc()


def submit_jobs(
    db: Database, config: Config, requests: Sequence[JobRequest], *, force: bool = False
) -> list[Job]:
    """Validate every request as `submit_job` does, then queue them all: if one is refused,
    none is queued. Return the new queue entries."""
    jobs = [prepare_job(db, config, request) for request in requests]
    for job in jobs:
        twin = active_twin(db, job)
        if twin and not force:
            raise DuplicateError(
                f"an identical job {twin['job_id']} is already {twin['status']} for dataset "
                f"{job.dataset}; use --force to add another"
            )
    for job in jobs:
        add_job(db, job)
    return [read_job(db, job.job_id) for job in jobs]


PREVIEW_SCRATCH = PurePosixPath("<scratch>")


def batch_script(db: Database, config: Config, request: JobRequest) -> str:
    """The batch script a request would run, validated as `submit_job` validates it; nothing is
    queued (`labctl submit --dry-run`). Its folder is under `PREVIEW_SCRATCH`: where the job
    will run is for the member's watchdog to say, not for the server to show."""
    planned = prepare_job(db, config, request)
    cluster = config.clusters[request.compute_cluster]
    spec = job_types_at(config, planned.pipelines).get(request.job_type, request.compute_cluster)
    assert spec is not None  # prepare_job found it
    return render(planned, spec, cluster, JobLayout(PREVIEW_SCRATCH / planned.job_id))
