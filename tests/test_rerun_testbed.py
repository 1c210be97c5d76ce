"""Determinism of the shipped job types on the SLURM testbed: each reruns, from its record, to
the same bytes on the same cluster (`labctl rerun --compare`): the split registration (a 4-task
array) and the merge queued after it, summary_stats and file_stats."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from labctl.catalog.experiments import log_entries
from labctl.config import Config, DatabaseConfig
from labctl.db import Database, connect
from labctl.jobs.queue import get_job
from labctl.jobs.rerun import RerunRequest, rerun_job
from labctl.jobs.submit import JobRequest, submit_job
from tests.jobfixtures import REGISTRATION_TYPES
from tests.testbed import hpc_config, needs_testbed, remote_scratch, status_in, tick_until

DATASET = "20220301_101500"
pytestmark = [pytest.mark.testbed, needs_testbed]


@dataclass
class Bed:
    db: Database
    config: Config

    def completed(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        done = status_in(self.db, job_id, "completed", "failed")
        tick_until(self.db, self.config, done, timeout=timeout)
        job = get_job(self.db, job_id)
        assert job["status"] == "completed", (job["history"], job.get("log_tail"))
        return job

    def submit(self, job_type: str, **asked: Any) -> str:
        request = JobRequest(dataset=DATASET, compute_cluster="hpc", job_type=job_type, **asked)
        return str(submit_job(self.db, self.config, request)["job_id"])

    def rerun(self, job_id: str) -> str:
        request = RerunRequest(compare=True)
        return rerun_job(self.db, self.config, job_id, request).job_id


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """The testbed's SLURM as cluster `hpc`, and a dataset holding a synthetic stack."""
    tmp_path = tmp_path_factory.mktemp("determinism")
    raw, processed = tmp_path / "data" / "raw", tmp_path / "data" / "processed"
    generate = [sys.executable, "-m", "pipelines", "generate", "--out", str(raw)]
    sizes = ["--frames", "24", "--height", "64", "--width", "64", "--seed", "3"]
    subprocess.run([*generate, *sizes], check=True)
    processed.mkdir()
    base = Config(user="tester", database=DatabaseConfig(path=tmp_path / "store"))
    with remote_scratch() as scratch, connect(base.database) as db:
        cfg = hpc_config(base, scratch, tmp_path)
        cfg = cfg.model_copy(update={"job_types": {**cfg.job_types, **REGISTRATION_TYPES}})
        fields = {"user": "dana", "data_raw_path": str(raw), "data_path": str(processed)}
        log_entries(db, cfg, [(DATASET, fields)])
        yield Bed(db, cfg)


def identical(job: dict[str, Any], original: str, outputs: set[str]) -> None:
    """The job's verdict: a rerun of `original` whose every output is byte for byte the same."""
    verdict = job["reproduction"]
    files = {f["name"]: f["match"] for f in verdict["files"]}
    assert files == dict.fromkeys(outputs, "identical"), verdict
    assert verdict["match"] == "identical" and verdict["original"] == original


def test_split_registration_and_its_merge_rerun_to_identical_bytes(bed: Bed) -> None:
    array = bed.submit(
        "diff_registration", datarawfiles=["stack.h5"], job_options={"num_splits": 4}
    )
    bed.completed(array)
    merge = bed.completed(f"{array}m")

    again = bed.rerun(array)
    rerun_array = bed.completed(again)
    shards = {f"registration_{k}.h5" for k in range(4)}
    identical(rerun_array, array, shards)
    assert rerun_array["scheduler"]["tasks"] == 4
    rerun_merge = bed.completed(f"{again}m")  # the rerun's own merge reproduces the original's
    assert rerun_merge["rerun"]["job_id"] == merge["job_id"]
    identical(rerun_merge, merge["job_id"], {"registration.h5"})
    assert get_job(bed.db, merge["job_id"])["reproduction"] == rerun_merge["reproduction"]


def test_summary_stats_reruns_to_identical_bytes(bed: Bed) -> None:
    first = bed.submit("summary_stats", datarawfiles=["stack.h5"])
    bed.completed(first)
    identical(bed.completed(bed.rerun(first)), first, {"summary_stats.h5", "summary_stats.png"})


def test_file_stats_reruns_to_identical_bytes(bed: Bed) -> None:
    first = bed.submit("file_stats", datarawfiles=["stack.h5", "true_shifts.h5"])
    bed.completed(first)
    identical(bed.completed(bed.rerun(first)), first, {"file_stats.json"})
