"""A config with clusters and job types, and a dataset with real files, for job tests."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from labctl.catalog.experiments import log_entries
from labctl.cli import cli
from labctl.config import ClusterConfig, Config, DatabaseConfig, WatchdogConfig
from labctl.config.jobtypes import JobTypeConfig, Resources
from labctl.db import Database, connect
from labctl.jobs.queue import transition
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.job import Job
from labctl.model.states import FailureReason, JobState

DATASET = "20211215_093527"
REPO = Path(__file__).resolve().parent.parent


@functools.cache
def committed_pipelines() -> Path:
    """A committed copy of this checkout's pipelines/, so job tests never depend on whether the
    developer's own tree has uncommitted changes (a dirty tree is refused at submit)."""
    repo = Path(tempfile.mkdtemp(prefix="labctl-pipelines-"))
    shutil.copytree(
        REPO / "pipelines",
        repo / "pipelines",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    git = ["git", "-C", str(repo), "-c", "user.name=labctl tests", "-c", "user.email=t@lab"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "pipelines for tests"]):
        subprocess.run(git + args, check=True)
    return repo / "pipelines"


REGISTRATION_TYPES = {
    "diff_registration": JobTypeConfig(
        entry="diff_registration",
        splittable=True,
        merge_with="merge_splits",
        outputs=["registration_{split_idx}.h5"],
        resources=Resources(cpus=1),
    ),
    "merge_splits": JobTypeConfig(entry="merge_splits", outputs=["registration.h5"]),
}
"""The pipelines' split registration and the merge labctl queues after its array."""


def watchdog(tmp_path: Path, **settings: Any) -> WatchdogConfig:
    """Watchdog settings for a test: state under tmp_path, no backoff, committed pipelines."""
    defaults: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "backoff_seconds": 0,
        "pipelines_dir": committed_pipelines(),
    }
    return WatchdogConfig(**{**defaults, **settings})


def job_config(base: Config, scratch: Path, **clusters: ClusterConfig) -> Config:
    """`base` plus a `local` cluster (process scheduler), watchdog settings for tests (state next
    to `scratch`) and, besides the job types the pipelines declare, a split variant of
    `file_stats` defined in the config."""
    return base.model_copy(
        update={
            "watchdog": watchdog(scratch.parent),
            "clusters": {
                "local": ClusterConfig(type="local", scratch=str(scratch), scheduler="process"),
                **clusters,
            },
            "job_types": {
                "file_stats_split": JobTypeConfig(
                    entry="file_stats",
                    outputs=["file_stats_{split_idx}.json"],
                    splittable=True,
                ),
            },
        }
    )


def dataset_with_files(db: Database, config: Config, root: Path, dataset: str = DATASET) -> Path:
    """Log `dataset` with raw and processed folders holding a few files; return its root."""
    raw, processed = root / "raw", root / "processed"
    raw.mkdir(parents=True)
    processed.mkdir(parents=True)
    (raw / "fl_a.roli").write_bytes(b"a" * 1000)
    (raw / "fl b $(x).roli").write_bytes(b"b" * 2000)
    (processed / "phase.h5").write_bytes(b"p" * 3000)
    fields = {"user": "charlie", "data_raw_path": str(raw), "data_path": str(processed)}
    log_entries(db, config, [(dataset, fields)])
    return root


def local_jobs(config: Config, db: Database, tmp_path: Path) -> Config:
    """`config` set up for job tests on the `local` cluster (at most 2 retries), with the
    dataset and its files logged."""
    base = job_config(config, tmp_path / "scratch")
    cfg = base.model_copy(update={"watchdog": watchdog(tmp_path, max_retries=2)})
    dataset_with_files(db, cfg, tmp_path / "data")
    return cfg


@contextmanager
def embedded_jobs(tmp_path: Path) -> Iterator[tuple[Database, Config]]:
    """`local_jobs` on the embedded store alone, for tests whose subject is not the store."""
    base = Config(user="tester", database=DatabaseConfig(path=tmp_path / "store"))
    with connect(base.database) as db:
        yield db, local_jobs(base, db, tmp_path)


def transfer_record(**progress: Any) -> dict[str, Any]:
    """A transfer as the scan stage records it (no rsync behind it), with `progress` set."""
    return {
        "host": "lab-server",
        "argv": ["rsync"],
        "pid": 1,
        "log": "/nonexistent/rsync.log",
        "status_path": "/nonexistent/rsync.status",
        **progress,
    }


def submit_as(db: Database, config: Config, user: str = "alice") -> dict[str, Any]:
    """A new `file_stats` job of `user` on DATASET, queued as they would queue it."""
    request = JobRequest(
        dataset=DATASET,
        compute_cluster="local",
        job_type="file_stats",
        datarawfiles=["fl_a.roli"],
        user=user,
    )
    return submit_job(db, config.model_copy(update={"user": user}), request, force=True)


def job_in_state(
    db: Database,
    config: Config,
    state: JobState = JobState.QUEUED,
    user: str = "alice",
    reason: FailureReason = FailureReason.TIMEOUT,
) -> str:
    """The id of a new `file_stats` job of `user` moved to `state` (queued, transferring, failed
    for `reason`, or cancelled) as the watchdog would move it, with no process behind it."""
    job: Job | None = Job.of(submit_as(db, config, user))
    if state is not JobState.QUEUED:
        assert job is not None
        why = reason if state is JobState.FAILED else None
        job = transition(db, job, state, "moved by the test", reason=why)
    assert job is not None
    return job.job_id


def cli_on(db: Database, config: Config, tmp_path: Path) -> Callable[..., Result]:
    """`labctl --config FILE ARGS...` on `config` saved under `tmp_path`, with the dataset and
    its files logged."""
    dataset_with_files(db, config, tmp_path / "data")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(path), *args])

    return invoke
