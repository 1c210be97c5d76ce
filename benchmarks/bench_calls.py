"""SSH logins, ssh processes and SLURM calls per watchdog run as the active jobs grow, on two
connected clusters of the testbed: `hpc` (key) and `mfa` (password + OTP through the gateway).

    python -m benchmarks.bench_calls [--sizes 1,10,100] [--repeat 3]

Submits max(--sizes) real SLURM jobs on hold (pending and never started, so they take no CPU
from anyone). `labctl connect mfa` is answered on a pseudo-terminal as a person would (one login
at the gateway, one at the login host); the key cluster's session opens by itself in a warm-up
tick. Then for each size N a fresh embedded store gets N `pending` queue entries per cluster,
following N distinct held jobs, and `--repeat` ticks run (scan, transfers, jobs, in one process as
`run_stages` runs them). Per tick it counts the logins the three sshds logged (key host, login
host, gateway: the raw floor is 0, riding the sessions), the ssh processes labctl started (its
runners' count: session checks and commands) and the SLURM calls. Rows marked "+1 gone" add an
entry whose job SLURM no longer lists, so that `sacct` must answer too.
Goal: 0 logins on every row; ssh processes and SLURM calls constant in N.
"""

from __future__ import annotations

import argparse
import os
import sys
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
from labctl.catalog.experiments import log_entries
from labctl.clock import utcnow
from labctl.compute.cluster import ssh_target
from labctl.compute.scheduler import SlurmScheduler
from labctl.compute.transport import Sessions, SSHRunner
from labctl.config import Config
from labctl.db import Database, connect
from labctl.jobs.submit import JobRequest, new_job_id, prepare_job
from labctl.stages import stage_run
from labctl.stages.loop import STAGES
from labctl.stages.seam import LocalStore
from tests.mfa import connect_answers, run_on_pty
from tests.testbed import mfa_cluster, sshd_logins, write_config

CLUSTERS = ("hpc", "mfa")
LOGS = ("HPC_SSHD_LOG", "HPC_MFA_LOG", "HPC_GW_LOG")


def add_pending(db: Database, config: Config, ids: Sequence[str]) -> None:
    """Per cluster, one validated queue entry per SLURM job, as the scan stage leaves it."""
    now = utcnow()
    for cluster in CLUSTERS:
        request = JobRequest(DATASET, cluster, "file_stats", allow_dirty=True)
        base = prepare_job(db, config, request).doc()
        scheduler = {"tasks": 1, "state": "PENDING", "submitted_at": now}
        entry = {**base, "status": "pending"}
        db.queue.insert_many(
            [
                {**entry, "job_id": new_job_id(), "scheduler": {**scheduler, "job_id": i}}
                for i in ids
            ]
        )


def logins() -> list[int]:
    return [sshd_logins(Path(os.environ[log])) for log in LOGS]


def counted_tick(db: Database, config: Config) -> tuple[list[int], int, int, float, list[str]]:
    """One tick: new logins per sshd, ssh processes, SLURM calls, seconds, the stages' notes."""
    before, processes, calls, notes = logins(), 0, 0, []
    start = time.perf_counter()
    for name in TICK:
        # what run_stages does, counting before close
        with stage_run(LocalStore.of(db, config), config, name) as run:
            STAGES[name](run)
            opened = list(run.pool.opened.values())
        processes += sum(c.runner.ssh_processes for c in opened if isinstance(c.runner, SSHRunner))
        calls += sum(c.scheduler.calls for c in opened if isinstance(c.scheduler, SlurmScheduler))
        notes += run.notes
    seconds = time.perf_counter() - start
    return [a - b for a, b in zip(logins(), before, strict=True)], processes, calls, seconds, notes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100", help="active jobs per cluster")
    parser.add_argument("--repeat", type=int, default=3, help="ticks per size")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    if testbed_cluster("/") is None or "HPC_MFA_PORT" not in os.environ:
        print(f"bench_calls skipped: {TESTBED_HINT} (with the MFA host)")
        return

    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp,
        testbed_shell() as shell,
        remote_scratch(shell) as scratch,
        held_jobs(shell, max(sizes)) as ids,
    ):
        hpc, mfa = testbed_cluster(scratch), mfa_cluster("/tmp")
        assert hpc is not None
        base = bench_config(Path(tmp) / "base", hpc=hpc, mfa=mfa)
        path = write_config(base, Path(tmp) / "config.yaml")
        labctl = str(Path(sys.executable).parent / "labctl")
        opened = run_on_pty([labctl, "--config", str(path), "connect", "mfa"], connect_answers())
        if opened.returncode != 0:
            raise RuntimeError(f"labctl connect mfa failed: {opened}")
        try:
            gone = str(int(ids[-1]) + 10**6)  # never submitted: neither squeue nor sacct has it
            middle = sizes[len(sizes) // 2]
            cases = [(f"{n}", ids[:n]) for n in sizes]
            cases += [(f"{middle} +1 gone", [*ids[:middle], gone])]
            for case, (label, chosen) in enumerate(cases):
                config = bench_config(Path(tmp) / f"case{case}", hpc=hpc, mfa=mfa)
                with connect(config.database) as db:
                    fields = {"user": "bench", "data_raw_path": tmp}
                    log_entries(db, config, [(DATASET, fields)])
                    add_pending(db, config, chosen)
                    counted_tick(db, config)  # warm-up: opens the key cluster's session once
                    ticks = []
                    for _ in range(args.repeat):  # `missing` stays below the count that fails
                        db.queue.update({}, {"$set": {"scheduler.missing": 0}}, many=True)
                        ticks.append(counted_tick(db, config))
                rows.append((label, ticks))
        finally:
            for name, cluster in (("hpc", hpc), ("mfa", mfa)):
                target = ssh_target(name, cluster)
                assert target is not None
                Sessions().close(target)

    print(f"\n{args.repeat} ticks per row, {len(CLUSTERS)} clusters (hpc: key, mfa: password + OTP "
          "through a gateway); logins per tick at the key host/login host/gateway")  # fmt: skip
    print(f"{'active jobs':<14} {'logins':>8} {'ssh procs':>10} {'slurm calls':>12} {'tick s':>7}"
          "  notes")  # fmt: skip
    for label, ticks in rows:
        seen = {"/".join(map(str, t[0])) for t in ticks}
        procs = {str(t[1]) for t in ticks}
        calls = {str(t[2]) for t in ticks}
        notes = sorted({note for t in ticks for note in t[4]})
        print(f"{label + ' x2':<14} {','.join(sorted(seen)):>8} {','.join(sorted(procs)):>10} "
              f"{','.join(sorted(calls)):>12} {median([t[3] for t in ticks]):>7.3f}  "
              f"{'; '.join(notes)}")  # fmt: skip
    print(
        "goal: 0/0/0 logins on every row (the raw floor, riding the sessions); ssh processes "
        "and SLURM calls constant as the jobs grow"
    )


if __name__ == "__main__":
    main()
