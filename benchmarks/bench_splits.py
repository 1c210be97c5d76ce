"""Wall time of a registration job split into 4 SLURM array tasks vs the same job unsplit.

Both run through labctl on the testbed SLURM (scripts/testbed.sh): submit, transfer, SLURM, results
home and verified. The split run is timed to its merged result (the array, then the merge job
labctl queues). Speed-up = unsplit seconds / split seconds, measured in the same run; the ideal is
min(4, cores), and this machine has 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    DATASET,
    TESTBED_HINT,
    bench_config,
    median,
    remote_scratch,
    spread,
    testbed_cluster,
    testbed_shell,
)
from labctl.catalog.experiments import log_entries
from labctl.config import Config
from labctl.db import connect
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import REGISTRATION_TYPES


def run_job(config: Config, splits: int) -> tuple[float, float]:
    """Seconds from submit to the job's own verified results, and to the final result (the
    merge, for a split job)."""
    with connect(config.database) as db:
        request = JobRequest(
            dataset=DATASET,
            compute_cluster="hpc",
            job_type="diff_registration",
            datarawfiles=["stack.h5"],
            job_options={"num_splits": splits},
            allow_dirty=True,
        )
        start = time.monotonic()
        job_id = submit_job(db, config, request, force=True)["job_id"]
        final = f"{job_id}m" if splits > 1 else job_id
        own = 0.0
        while True:
            run_stages(LocalStore.of(db, config), config, ["scan", "transfers", "jobs"])
            if not own and get_job(db, job_id)["status"] == "completed":
                own = time.monotonic() - start
            found = db.queue.find_one({"job_id": final}, ["status"])
            if found and found["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        seconds = time.monotonic() - start
        done = get_job(db, final)
        if done["status"] != "completed":
            raise RuntimeError(f"job {final} ended {done['status']}: {done['history'][-1]}")
        return own, seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if testbed_cluster("/") is None:
        sys.exit(f"bench_splits: {TESTBED_HINT}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        testbed_shell() as shell,
        remote_scratch(shell) as scratch,
    ):
        root = Path(tmp)
        raw = root / "data" / "raw"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipelines",
                "generate",
                "--out",
                str(raw),
                "--frames",
                str(args.frames),
                "--height",
                str(args.size),
                "--width",
                str(args.size),
                "--seed",
                "1",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        cluster = testbed_cluster(scratch)
        assert cluster is not None
        config = bench_config(root, hpc=cluster)
        config = config.model_copy(update={"job_types": {**config.job_types, **REGISTRATION_TYPES}})
        with connect(config.database) as db:
            log_entries(db, config, [(DATASET, {"user": "bench", "data_raw_path": str(raw)})])
        unsplit: list[float] = []
        array: list[float] = []
        merged: list[float] = []
        for _ in range(args.repeat):
            unsplit.append(run_job(config, 1)[1])
            own, final = run_job(config, 4)
            array.append(own)
            merged.append(final)
    one = median(unsplit)
    print(
        f"registration of {args.frames} frames of {args.size}x{args.size} on the testbed "
        f"SLURM ({os.cpu_count()} cores), median of {args.repeat}, submit to verified results"
    )
    print(f"{'run':>24} {'seconds':>8} {'speed-up':>8}  spread")
    for name, values in (
        ("num_splits=1", unsplit),
        ("num_splits=4, array", array),
        ("num_splits=4, + merge", merged),
    ):
        print(f"{name:>24} {median(values):8.2f} {one / median(values):7.2f}x  {spread(values)}")


if __name__ == "__main__":
    main()
