"""SSH connections and SLURM calls per watchdog tick as the active jobs grow, on the testbed.

    python -m benchmarks.bench_calls [--sizes 1,10,100,500] [--repeat 3]

Submits max(--sizes) real SLURM jobs on hold on the testbed (pending and never started, so they
take no CPU from anyone), then for each size N fills a fresh embedded store with N `pending`
queue entries following N distinct jobs among them, and runs `--repeat` ticks (scan, transfers,
jobs, each as `labctl.cli.watchdog.run_stages` runs it, in one process), counting, for every
cluster a stage opened, its `SSHRunner.connections_opened` and its scheduler's `calls`. Rows
marked "+1 gone" add an entry whose job SLURM no longer lists (an id it never had: squeue leaves
it out, so labctl must ask accounting, `sacct`); "gone only" is that entry alone. The rsync
processes of transfers open their own ssh connections; no transfer runs here.
Goal: constant: 1 connection per tick, 1 SLURM call (2 when some job left squeue) per cluster.
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
    TICK,
    bench_config,
    held_jobs,
    median,
    remote_scratch,
    testbed_cluster,
    testbed_shell,
)
from labctl.cli.watchdog import STAGES
from labctl.config import Config
from labctl.db import Database, connect
from labctl.experiments import log_entries
from labctl.jobs import JobRequest, new_job_id, prepare_job
from labctl.models import utcnow
from labctl.scheduler import SlurmScheduler
from labctl.stages import stage_run
from labctl.transport import SSHRunner


def add_pending(db: Database, config: Config, scheduler_ids: Sequence[str]) -> None:
    """One validated queue entry per SLURM job, as the scan stage leaves it once SLURM has it."""
    base = prepare_job(db, config, JobRequest(DATASET, "hpc", "file_stats", allow_dirty=True))
    now = utcnow()
    db.queue.insert_many(
        [
            {
                **base,
                "job_id": new_job_id(),
                "status": "pending",
                "slurm": {"job_id": i, "tasks": 1, "state": "PENDING", "submitted_at": now},
            }
            for i in scheduler_ids
        ]
    )


def counted_tick(db: Database, config: Config) -> tuple[list[int], int, float, list[str]]:
    """One tick: SSH connections per stage, SLURM calls, seconds of `jobs`, the stages' notes."""
    connections, calls, seconds, notes = [], 0, 0.0, []
    for name in TICK:
        start = time.perf_counter()
        with stage_run(db, config, name) as run:  # what run_stages does, counting before close
            STAGES[name](run)
            opened = run.pool.opened.values()
            connections.append(
                sum(c.runner.connections_opened for c in opened if isinstance(c.runner, SSHRunner))
            )
            calls += sum(
                c.scheduler.calls for c in opened if isinstance(c.scheduler, SlurmScheduler)
            )
        if name == "jobs":
            seconds = time.perf_counter() - start
        notes += run.notes
    return connections, calls, seconds, notes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100,500", help="numbers of active jobs")
    parser.add_argument("--repeat", type=int, default=3, help="ticks per size")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    if testbed_cluster("/") is None:
        print(f"bench_calls skipped: {TESTBED_HINT}")
        return

    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp,
        testbed_shell() as shell,
        remote_scratch(shell) as scratch,
    ):
        start = time.perf_counter()
        with held_jobs(shell, max(sizes)) as ids:
            print(f"submitted {len(ids)} held jobs in {time.perf_counter() - start:.1f} s")
            gone = str(int(ids[-1]) + 10**6)  # never submitted: neither squeue nor sacct has it
            middle = sizes[len(sizes) // 2]
            cases = [(f"{n}", ids[:n]) for n in sizes]
            cases += [(f"{middle} +1 gone", [*ids[:middle], gone]), ("gone only", [gone])]
            for case, (label, chosen) in enumerate(cases):
                hpc = testbed_cluster(scratch)
                assert hpc is not None
                config = bench_config(Path(tmp) / f"case{case}", hpc=hpc)
                with connect(config.database) as db:
                    fields = {"user": "bench", "data_raw_path": tmp}
                    log_entries(db, config, [(DATASET, fields)])
                    add_pending(db, config, chosen)
                    ticks = []
                    for _ in range(args.repeat):  # `missing` stays below the count that fails
                        db.queue.update({}, {"$set": {"slurm.missing": 0}}, many=True)
                        ticks.append(counted_tick(db, config))
                rows.append((label, ticks))

    print(f"\n{args.repeat} ticks per row; connections are per stage: scan/transfers/jobs")
    print(f"{'active jobs':<16} {'ssh conn.':>10} {'slurm calls':>12} {'jobs s':>8}  notes")
    for label, ticks in rows:
        conns = {"/".join(map(str, t[0])) for t in ticks}
        calls = {str(t[1]) for t in ticks}
        notes = sorted({note for t in ticks for note in t[3]})
        print(f"{label:<16} {','.join(sorted(conns)):>10} {','.join(sorted(calls)):>12} "
              f"{median([t[2] for t in ticks]):>8.3f}  {'; '.join(notes)}")  # fmt: skip
    print("goal: 0/0/1 connections and 1-2 SLURM calls on every row")


if __name__ == "__main__":
    main()
