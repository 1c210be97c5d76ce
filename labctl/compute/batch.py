"""The batch script of a job, rendered from its job type and cluster: pure text out.

Values from users (dataset id, options) reach the script only through `shlex.quote`; `#SBATCH`
lines carry only values validated by the config models and labctl's own job ids.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from labctl.config import ClusterConfig
from labctl.config.jobtypes import JobType, Resources
from labctl.model.job import Job


@dataclass(frozen=True)
class JobLayout:
    """Where a job's files live on the cluster: one folder per job under the scratch root."""

    root: PurePosixPath

    @classmethod
    def of(cls, cluster: ClusterConfig, job_id: str) -> JobLayout:
        return cls(PurePosixPath(cluster.scratch) / job_id)

    @property
    def inputs(self) -> PurePosixPath:
        return self.root / "inputs"

    @property
    def outputs(self) -> PurePosixPath:
        return self.root / "outputs"

    @property
    def code(self) -> PurePosixPath:
        return self.root / "code"

    def shared_code(self, commit: str) -> PurePosixPath:
        """The read-only copy of pipelines commit `commit` that the cluster's jobs share, beside
        the job folders: `<scratch>/code/<commit>` (job ids start with `j`: no job folder is
        called `code`)."""
        return self.root.parent / "code" / commit

    @property
    def script(self) -> PurePosixPath:
        return self.root / "job.sh"

    @property
    def logs(self) -> PurePosixPath:
        return self.root / "logs"


def array_size(job: Job) -> int:
    """Tasks of the SLURM array: `num_splits` when no single `split_idx` was asked for, else 1."""
    options = job.job_options
    if options.get("split_idx") is None and int(options.get("num_splits") or 1) > 1:
        return int(options["num_splits"])
    return 1


ENVIRONMENT = "environment.json"
"""Every pipeline run reports its environment here (`environment_{split_idx}.json` for a split)."""


def expected_outputs(job: Job, job_type: JobType) -> list[str]:
    """Files the job must produce: the job type's outputs, `{split_idx}` expanded to every
    task's index, and the environment report of each run."""
    options = job.job_options
    splits = (
        [options["split_idx"]]
        if options.get("split_idx") is not None
        else list(range(array_size(job)))
    )
    environment = "environment_{split_idx}.json" if job_type.splittable else ENVIRONMENT
    names: list[str] = []
    for name in [*job_type.outputs, environment]:
        if "{split_idx}" in name:
            names += [name.replace("{split_idx}", str(i)) for i in splits]
        else:
            names.append(name)
    return names


def job_name(job: Job) -> str:
    """The scheduler's name for the job's current submission: `labctl-ID`, `labctl-ID-r1`
    for its first automatic resubmission (so that a killed run adopts the right one)."""
    again = job.resubmission
    return f"labctl-{job.job_id}" + (f"-r{again.count}" if again else "")


def resources_of(job: Job, job_type: JobType, defaults: Resources) -> Resources:
    """What the job's current submission asks for: as resubmitted, else as the job asked,
    its type declares and its cluster defaults (`defaults`)."""
    if job.resubmission:
        return Resources.model_validate(job.resubmission.resources)
    asked = Resources.model_validate(job.resources)
    return asked.over(job_type.resources.over(defaults))


def submitted_tasks(job: Job) -> list[int]:
    """The array tasks the job's current submission runs (`[]` for a single job)."""
    if job.resubmission and job.resubmission.tasks:
        return job.resubmission.tasks
    tasks = array_size(job)
    return list(range(tasks)) if tasks > 1 else []


def render(job: Job, job_type: JobType, cluster: ClusterConfig, layout: JobLayout) -> str:
    """The complete batch script for `job` (for a resubmission: only the tasks it runs again)."""
    res = resources_of(job, job_type, cluster.resources)
    tasks = submitted_tasks(job)
    log_name = "slurm-%A_%a.out" if array_size(job) > 1 else "slurm-%j.out"
    directives = [
        f"--job-name={job_name(job)}",
        f"--output={layout.logs / log_name}",
        *_resource_directives(res),
        *([f"--account={cluster.account}"] if cluster.account else []),
        *([f"--array={_task_ranges(tasks)}"] if tasks else []),
    ]
    options = job.job_options
    split = options.get("split_idx")
    command = [
        cluster.python,
        "-m",
        "pipelines",
        "run",
        job_type.entry,
        "--dataset",
        job.dataset,
        "--inputs",
        str(layout.inputs),
        "--outputs",
        str(layout.outputs),
        "--options",
        json.dumps(options, sort_keys=True),
    ]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        f"# labctl job {job.job_id}: {job_type.entry} on dataset {job.dataset}",
        "set -euo pipefail",
        *cluster.setup,
        f"cd {shlex.quote(str(layout.root))}",
        f"export PYTHONPATH={shlex.quote(job.code_dir or str(layout.code))}",
    ]
    if job_type.splittable:  # a splittable job always runs as split k of n (n may be 1)
        task = "${SLURM_ARRAY_TASK_ID}" if tasks else shlex.quote(str(split or 0))
        lines.append(f"split_idx={task}")
        tail = ' --split-idx "$split_idx" --num-splits ' + shlex.quote(str(options["num_splits"]))
    else:
        tail = ""
    lines.append("exec " + shlex.join(command) + tail)
    return "\n".join(lines) + "\n"


def _task_ranges(tasks: list[int]) -> str:
    """`--array` of these tasks: `0-39`, or `3,7` for tasks run again."""
    if len(tasks) > 1 and tasks == list(range(tasks[0], tasks[-1] + 1)):
        return f"{tasks[0]}-{tasks[-1]}"
    return ",".join(str(t) for t in tasks)


def _resource_directives(res: Resources) -> list[str]:
    pairs = [
        ("time", res.time),
        ("mem", res.mem),
        ("cpus-per-task", res.cpus),
        ("partition", res.partition),
    ]
    return [f"--{name}={value}" for name, value in pairs if value is not None]
