"""The shipped job types are deterministic: run twice on the testbed's SLURM, on the same inputs
with the same code and options, each writes the same bytes. Only the run's own record
(`environment.json`: when, how long, where) differs, and it is no product of the job type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labctl.catalog.experiments import log_entries
from labctl.compute.batch import ENVIRONMENT
from labctl.config import Config, DatabaseConfig
from labctl.db import connect
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from tests.jobfixtures import REGISTRATION_TYPES
from tests.testbed import hpc_config, needs_testbed, remote_scratch, tick_until

pytestmark = pytest.mark.testbed
DATASET = "20220302_101500"


def products(job: dict[str, object]) -> dict[str, str]:
    """A completed job's outputs, name to SHA-256, without the run's environment record."""
    results = job["results"]
    assert isinstance(results, list)
    environment = (ENVIRONMENT.removesuffix(".json"), ".json")
    return {
        r["name"]: r["sha256"]
        for r in results
        if not (r["name"].startswith(environment[0]) and r["name"].endswith(environment[1]))
    }


@needs_testbed
def test_each_shipped_job_type_writes_the_same_bytes_twice(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    generate = [sys.executable, "-m", "pipelines", "generate", "--out", str(raw), "--frames",
                "16", "--height", "48", "--width", "48", "--seed", "5"]  # fmt: skip
    subprocess.run(generate, check=True)
    (tmp_path / "data" / "processed").mkdir()
    base = Config(user="tester", database=DatabaseConfig(path=tmp_path / "store"))
    with remote_scratch() as scratch, connect(base.database) as db:
        cfg = hpc_config(base, scratch, tmp_path)
        cfg = cfg.model_copy(update={"job_types": {**cfg.job_types, **REGISTRATION_TYPES}})
        fields = {"user": "dana", "data_raw_path": str(raw),
                  "data_path": str(tmp_path / "data" / "processed")}  # fmt: skip
        log_entries(db, cfg, [(DATASET, fields)])
        asked = {
            "diff_registration": {"num_splits": 2},
            "summary_stats": {},
            "file_stats": {},
        }
        pairs: dict[str, list[str]] = {}
        for job_type, options in asked.items():
            request = JobRequest(dataset=DATASET, compute_cluster="hpc", job_type=job_type,
                                 datarawfiles=["stack.h5"], job_options=options)  # fmt: skip
            pairs[job_type] = [str(submit_job(db, cfg, request, force=True)["job_id"])
                               for _ in range(2)]  # fmt: skip
        pairs["merge_splits"] = [f"{job_id}m" for job_id in pairs["diff_registration"]]
        every = [job_id for ids in pairs.values() for job_id in ids]

        def settled() -> bool:
            found = [db.queue.find_one({"job_id": j}) or db.archive.find_one({"_id": j})
                     for j in every]  # fmt: skip
            return all(doc and doc["status"] in ("completed", "failed") for doc in found)

        tick_until(db, cfg, settled, timeout=240)
        for job_type, (first, second) in pairs.items():
            one, other = get_job(db, first), get_job(db, second)
            assert (one["status"], other["status"]) == ("completed", "completed"), job_type
            assert products(one), f"{job_type} brought nothing home"
            assert products(one) == products(other), f"{job_type} is not deterministic"
