"""Rerunning a finished job from its record (`labctl rerun`): the same commit, options,
resources and inputs, each input checked against the SHA-256 the job recorded before anything is
queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labctl.catalog.experiments import get_entry
from labctl.compute.batch import array_size, expected_outputs
from labctl.config import Config
from labctl.db import Database
from labctl.errors import DuplicateError, ValidationError
from labctl.jobs.codeversion import code_version
from labctl.jobs.compare import agrees, sha256_file
from labctl.jobs.declarations import job_types_at
from labctl.jobs.queue import add_job, read_job, update
from labctl.jobs.submit import JobRequest, active_twin, check_inputs, dataset_dirs, prepare_job
from labctl.model.job import Job, Progress, store_value
from labctl.model.reproduction import Reproduction, RerunOf
from labctl.model.states import JobState


class RerunRequest(BaseModel):
    """How to rerun a job (`POST /jobs/{job_id}/rerun`): on its own cluster unless another is
    named; through the service, the rerun is always the caller's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compute_cluster: str | None = Field(default=None, description="default: the original's")
    allow_changed_inputs: bool = False
    compare: bool = Field(default=False, description="compare its outputs with the original's")
    rtol: float = Field(default=1e-6, ge=0, description="HDF5 datasets' relative tolerance")
    split: int | None = Field(default=None, ge=0, description="rerun only this task of an array")
    user: str | None = Field(default=None, description="whose rerun; the service sets its caller")


def rerun_job(db: Database, config: Config, job_id: str, request: RerunRequest) -> Job:
    """Queue a rerun of the completed job `job_id` as it was recorded; return it.

    Refused, with nothing queued: a job not completed, a dirty-tree job whose recorded changes
    are no longer the pipelines folder's, an input whose content is not what the job recorded
    (unless `allow_changed_inputs`), an identical rerun already active."""
    original = read_job(db, job_id)
    if original.status is not JobState.COMPLETED:
        raise ValidationError(
            f"job {job_id} is {original.status}: only a completed job has a record to rerun"
        )
    version = _recorded_code(config, original)
    changed = changed_inputs(db, config, original)
    if changed and not request.allow_changed_inputs:
        raise ValidationError(
            f"input(s) of job {job_id} changed since it ran: {', '.join(changed)} "
            "(rerun with --allow-changed-inputs to run on them as they are now)"
        )
    options = {**original.job_options, **original.resources}
    if request.split is not None:
        ran = original.job_options.get("split_idx")
        tasks = list(range(array_size(original))) if ran is None else [ran]
        if request.split not in tasks:
            raise ValidationError(
                f"job {job_id} ran split(s) {', '.join(map(str, tasks))}, not {request.split}"
            )
        options["split_idx"] = request.split
    asked = JobRequest(
        dataset=original.dataset,
        compute_cluster=request.compute_cluster or original.compute_cluster,
        job_type=original.job_type,
        datafiles=original.datafiles,
        datarawfiles=original.datarawfiles,
        job_options=options,
        user=request.user,
    )
    job = prepare_job(db, config, asked, pipelines=version)
    job.parent_job = original.parent_job
    job.rerun = _rerun_of(db, original, request)
    if request.split is not None:  # one task: no merge after it, its own outputs to compare
        spec = job_types_at(config, version).get(job.job_type, job.compute_cluster)
        assert spec is not None  # prepare_job found it
        own = set(expected_outputs(job, spec))
        kept = [r for r in job.rerun.results if r.name in own]
        job.rerun = job.rerun.model_copy(update={"results": kept, "follow_up": None})
    note = f"rerun of {job_id}" + (f"; inputs changed: {', '.join(changed)}" if changed else "")
    job.history[0].note += f" ({note})"
    twin = active_twin(db, job)
    if twin:
        raise DuplicateError(
            f"an identical job {twin['job_id']} is already {twin['status']} for dataset "
            f"{job.dataset}: wait for it to end"
        )
    add_job(db, job)
    return read_job(db, job.job_id)


def _rerun_of(db: Database, original: Job, request: RerunRequest) -> RerunOf:
    """What the rerun reproduces: `original`, and the merge queued after it (a split job's),
    which the rerun's own merge then reproduces."""
    merge = read_job(db, original.follow_up_job) if original.follow_up_job else None
    return RerunOf(
        job_id=original.job_id,
        compare=request.compare,
        rtol=request.rtol,
        results=original.results,
        follow_up=None if merge is None else _rerun_of(db, merge, request),
    )


def _recorded_code(config: Config, original: Job) -> dict[str, Any]:
    """The code version the original ran, if it can still be shipped: any commit can; a dirty
    tree only while the pipelines folder holds exactly the changes it recorded."""
    version = original.pipelines
    if not version.get("commit"):
        raise ValidationError(f"job {original.job_id} recorded no pipelines commit to rerun")
    if not version.get("dirty"):
        return version
    now = code_version(config.watchdog.pipelines, allow_dirty=True)
    same = now["commit"] == version["commit"] and now["diff_sha256"] == version["diff_sha256"]
    if not same:
        raise ValidationError(
            f"job {original.job_id} ran uncommitted changes to pipelines/ "
            f"({str(version['diff_sha256'])[:12]} on {str(version['commit'])[:12]}) that the "
            "pipelines folder no longer holds: it cannot be rerun as it ran"
        )
    return version


def changed_inputs(db: Database, config: Config, original: Job) -> list[str]:
    """The inputs of `original` whose file here is gone or differs from the size and SHA-256
    recorded when it ran (`data/NAME` or `raw/NAME`)."""
    processed, raw = dataset_dirs(get_entry(db, original.dataset), config)
    recorded = {item["name"]: item for item in original.input_checksums}
    changed = []
    for kind, folder, names in (
        ("data", processed, original.datafiles),
        ("raw", raw, original.datarawfiles),
    ):
        for name in names:
            label = f"{kind}/{name}"
            if not _same(folder, name, recorded.get(label)):
                changed.append(label)
    return changed


def _same(folder: Path, name: str, recorded: dict[str, Any] | None) -> bool:
    if recorded is None:  # the job did not record it: nothing to prove it by
        return False
    try:
        [rel] = check_inputs(folder, [name], must_exist=True)
        path = folder / rel
        same = path.stat().st_size == recorded["size"] and sha256_file(path) == recorded["sha256"]
    except (ValidationError, OSError):
        return False
    return bool(same)


def keep_reproduction(db: Database, rerun: Job, verdict: Reproduction) -> bool:
    """Keep the verdict of comparing the completed `rerun` (as read) with its original on both
    jobs; False if the rerun has moved on meanwhile."""
    if (
        rerun.status is not JobState.COMPLETED
        or rerun.rerun is None
        or (verdict.rerun, verdict.original) != (rerun.job_id, rerun.rerun.job_id)
    ):
        raise ValidationError(f"job {rerun.job_id} is no completed rerun of {verdict.original}")
    if not agrees(verdict, rerun.rerun.results, rerun.results):
        raise ValidationError(
            f"the verdict on rerun {rerun.job_id} does not match the outputs both runs recorded"
        )
    if not update(db, rerun, verdict.line, Progress(reproduction=verdict)):
        return False
    record_reproduction(db, verdict)
    return True


def record_reproduction(db: Database, verdict: Reproduction) -> None:
    """Keep a rerun's verdict on its original, in flight or archived."""
    change = {"$set": {"reproduction": store_value(verdict)}}
    db.queue.update({"job_id": verdict.original}, change)
    db.archive.update({"_id": verdict.original}, change)
