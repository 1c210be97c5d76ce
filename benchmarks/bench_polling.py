"""Scheduler calls and the watchdog's own CPU per `jobs` run as the active jobs grow (testbed).

    python -m benchmarks.bench_polling [--sizes 1,100,1000] [--repeat 3]

Submits max(--sizes) real SLURM jobs on hold (pending, never started). For each size N a fresh
embedded store gets N `pending` queue entries following N distinct held jobs, plus one whose job
SLURM never had (so that the run's `sacct` is asked too), and `--repeat` jobs-stage runs follow
them all. Per run it counts the scheduler calls (the goal: one squeue and one sacct, whatever N)
and this process's CPU time (user + system, `time.process_time`: the watchdog's own work, not
ssh's); "ms/job" is the CPU above the same run's 1-job row, per extra job (goal: <= 5 ms).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    DATASET,
    TESTBED_HINT,
    bench_config,
    held_jobs,
    median,
    remote_scratch,
    spread,
    testbed_cluster,
    testbed_shell,
)
from labctl.catalog.experiments import log_entries
from labctl.clock import utcnow
from labctl.compute.scheduler import SlurmScheduler
from labctl.config import Config
from labctl.db import Database, connect
from labctl.jobs.submit import JobRequest, new_job_id, prepare_job
from labctl.stages import stage_run
from labctl.stages.seam import LocalStore
from labctl.stages.tracking import run_jobs


def add_pending(db: Database, config: Config, ids: Sequence[str]) -> None:
    """One validated `pending` queue entry per SLURM job id, as the scan stage leaves it."""
    base = prepare_job(db, config, JobRequest(DATASET, "hpc", "file_stats", allow_dirty=True))
    scheduler = {"tasks": 1, "state": "PENDING", "submitted_at": utcnow()}
    entry = {**base.doc(), "status": "pending"}
    db.queue.insert_many(
        [{**entry, "job_id": new_job_id(), "scheduler": {**scheduler, "job_id": i}} for i in ids]
    )


def jobs_run(db: Database, config: Config) -> tuple[int, float]:
    """One jobs-stage run: its scheduler calls and this process's CPU seconds."""
    db.queue.update({}, {"$set": {"scheduler.missing": 0}}, many=True)  # the gone one stays
    cpu = time.process_time()
    with stage_run(LocalStore.of(db, config), config, "jobs") as run:
        run_jobs(run)
        scheduler = run.pool.get("hpc").scheduler
        assert isinstance(scheduler, SlurmScheduler)
        calls = scheduler.calls
    return calls, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="active jobs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    if testbed_cluster("/") is None:
        print(f"bench_polling skipped: {TESTBED_HINT}")
        return
    rows: list[tuple[int, list[int], list[float]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp,
        testbed_shell() as shell,
        remote_scratch(shell) as scratch,
        held_jobs(shell, max(sizes)) as ids,
    ):
        hpc = testbed_cluster(scratch)
        assert hpc is not None
        gone = str(int(ids[-1]) + 10**6)  # never submitted: neither squeue nor sacct has it
        for n in sizes:
            config = bench_config(Path(tmp) / f"n{n}", hpc=hpc)
            with connect(config.database) as db:
                log_entries(db, config, [(DATASET, {"user": "bench", "data_raw_path": tmp})])
                add_pending(db, config, [*ids[:n], gone])
                jobs_run(db, config)  # warm-up: the session, the imports, the store's indexes
                runs = [jobs_run(db, config) for _ in range(args.repeat)]
            rows.append((n, [c for c, _ in runs], [s for _, s in runs]))

    base = median(rows[0][2])
    print(f"\n{args.repeat} jobs-stage runs per row; CPU of this process (the watchdog's own)")
    print(f"{'active jobs':>12} {'sched. calls':>13} {'CPU ms':>8} {'spread':>13} {'ms/job':>7}")
    for n, calls, cpu in rows:
        extra = (median(cpu) - base) / (n - sizes[0]) * 1000 if n > sizes[0] else 0.0
        each = ",".join(sorted({str(c) for c in calls}))
        print(
            f"{n + 1:>12} {each:>13} {median(cpu) * 1000:>8.1f} "
            f"{spread([c * 1000 for c in cpu]):>13} {extra:>7.2f}"
        )
    print("goal: scheduler calls constant (1 squeue + 1 sacct); ms/job <= 5 over the 1-job row")


if __name__ == "__main__":
    main()
