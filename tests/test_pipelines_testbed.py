"""The lab's registration pipeline end to end on the SLURM testbed: a 4-task array, the merge
that follows it, results verified against the synthetic data's known shifts, and provenance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from labctl.catalog.experiments import log_entries
from labctl.config import Config, DatabaseConfig
from labctl.db import connect
from labctl.errors import ValidationError
from labctl.jobs.lineage import Lineage
from labctl.jobs.provenance import provenance
from labctl.jobs.queue import get_job, list_jobs
from labctl.jobs.submit import JobRequest, submit_job
from tests.jobfixtures import REGISTRATION_TYPES
from tests.testbed import hpc_config, needs_testbed, remote_scratch, status_in, tick_until

DATASET = "20220301_101500"
pytestmark = pytest.mark.testbed


@needs_testbed
def test_split_registration_merges_and_recovers_known_shifts(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "generate",
            "--out",
            str(raw),
            "--frames",
            "24",
            "--height",
            "64",
            "--width",
            "64",
            "--seed",
            "3",
        ],
        check=True,
    )
    base = Config(user="tester", database=DatabaseConfig(path=tmp_path / "store"))
    with remote_scratch() as scratch, connect(base.database) as db:
        cfg = hpc_config(base, scratch, tmp_path)
        cfg = cfg.model_copy(update={"job_types": {**cfg.job_types, **REGISTRATION_TYPES}})
        log_entries(
            db,
            cfg,
            [
                (
                    DATASET,
                    {
                        "user": "dana",
                        "data_raw_path": str(raw),
                        "data_path": str(tmp_path / "data" / "processed"),
                    },
                )
            ],
        )
        (tmp_path / "data" / "processed").mkdir()
        request = JobRequest(
            dataset=DATASET,
            compute_cluster="hpc",
            job_type="diff_registration",
            datarawfiles=["stack.h5"],
            job_options={"num_splits": 4},
        )
        array = submit_job(db, cfg, request)
        merge_id = f"{array['job_id']}m"
        tick_until(db, cfg, status_in(db, array["job_id"], "completed", "failed"), timeout=120)
        array = get_job(db, array["job_id"])
        assert array["status"] == "completed", (array["history"], array.get("log_tail"))
        assert array["scheduler"]["tasks"] == 4
        tick_until(db, cfg, lambda: db.queue.count({"job_id": merge_id}) == 1, timeout=30)
        assert sorted(array["scheduler"]["task_states"].values()) == ["COMPLETED"] * 4
        tick_until(db, cfg, status_in(db, merge_id, "completed", "failed"), timeout=120)
        merge = get_job(db, merge_id)
        assert merge["status"] == "completed", merge["history"]
        assert merge["parent_job"] == array["job_id"]
        assert merge["pipelines"] == array["pipelines"]  # the merge runs the array's code
        merged = Path(merge["result_dir"]) / "registration.h5"
        with h5py.File(merged) as out, h5py.File(raw / "stack.h5") as stack:
            assert list(out["frames"][:]) == list(range(24))
            assert out["registered"].shape == stack["data"].shape
            found = out["shifts"][:]
        with h5py.File(raw / "true_shifts.h5") as truth:
            expected = truth["shifts"][:]
        error = np.abs(found - expected).max()
        assert error < 0.5, f"registration is off by up to {error:.3f} px"

        records = {r["job_id"]: r for r in provenance(db, DATASET).items}
        assert set(records) == {array["job_id"], merge_id}
        commit = array["pipelines"]["commit"]
        assert len(commit) == 40 and records[merge_id]["pipelines"]["commit"] == commit
        [stack_input] = records[array["job_id"]]["inputs"]
        assert stack_input["name"] == "raw/stack.h5"
        assert stack_input["sha256"] == _sha256(raw / "stack.h5")
        assert {e["split_idx"] for e in records[array["job_id"]]["environment"]} == {0, 1, 2, 3}
        assert all(e["packages"]["h5py"] for e in records[array["job_id"]]["environment"])

        summary = submit_job(db, cfg, request.model_copy(update={"job_type": "summary_stats",
                                                                  "job_options": {}}))  # fmt: skip
        tick_until(db, cfg, status_in(db, summary["job_id"], "completed", "failed"), timeout=120)
        assert get_job(db, summary["job_id"])["status"] == "completed"
        jobs = list_jobs(db, dataset=DATASET).items
        lineage = Lineage.of(DATASET, jobs)
        stack = f"file:{stack_input['sha256']}"
        assert lineage.roots == [stack]  # the raw stack leads to everything
        assert lineage.children(stack) == [f"job:{array['job_id']}", f"job:{summary['job_id']}"]
        shards = lineage.children(f"job:{array['job_id']}")
        labels = {lineage.nodes[shard].label for shard in shards}
        assert {f"registration_{k}.h5" for k in range(4)} <= labels
        for shard in shards:
            if lineage.nodes[shard].label.startswith("registration_"):
                assert lineage.children(shard) == [f"job:{merge_id}"]  # the merge read it there
        merged_node = f"file:{_sha256(merged)}"
        assert merged_node in lineage.children(f"job:{merge_id}")
        tree = "\n".join(lineage.tree())
        for job_id in (array["job_id"], merge_id, summary["job_id"]):
            assert job_id in tree
        drawn = subprocess.run(["dot", "-Tsvg"], input=lineage.dot(), capture_output=True,
                               text=True, check=True)  # fmt: skip
        assert drawn.stdout.count('class="node"') == len(lineage.nodes)

        pipelines = cfg.watchdog.pipelines_dir
        (pipelines / "merge_splits.py").write_text("raise SystemExit('uncommitted')\n")
        try:
            with pytest.raises(ValidationError, match="uncommitted change"):
                submit_job(db, cfg, request, force=True)
        finally:
            subprocess.run(["git", "-C", str(pipelines), "checkout", "--", "."], check=True)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
