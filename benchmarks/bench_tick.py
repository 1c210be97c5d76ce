"""Cost of one watchdog tick with a long history of finished jobs vs a queue of active jobs only.

    python -m benchmarks.bench_tick [--finished 100000] [--active 100] [--repeat 5]
                                    [--cron-repeat 3]

Two embedded stores in a temporary folder: "small" holds `--active` active jobs, "big" the same
jobs plus `--finished` finished ones (95% completed with scratch cleaned, 4% failed, 1% cancelled
and cleaned up), each a copy of one job that first ran here through the stages (on the `local`
cluster), with a new job id and creation time. The active jobs follow real jobs their scheduler
answers about: on the testbed (when its env.sh is sourced) SLURM jobs submitted on hold, so the
entries are `pending` and one `squeue` over SSH covers them; without it, sleeping processes on
the `local` cluster, `running` entries (its process scheduler checks each with `ps`).

A tick is `scan`, `transfers`, `jobs`, each run as `labctl.stages.loop.run_stages` runs it,
timed two ways:
- loop: one connection for all ticks (`labctl watchdog tick --loop`): litemongo's in-memory
  indexes are built once and stay warm;
- cron: a fresh connection per stage (the crontab runs each stage as a new process): every stage
  pays `connect()` and rebuilds those indexes on its first query.
Seconds are medians of `--repeat` (loop) or `--cron-repeat` (cron) ticks, small and big
alternated; "x small" is big over small in the same round (median of the rounds).
Goal: tick x small <= 1.2.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DATASET,
    TICK,
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
from labctl.config import ClusterConfig, Config
from labctl.db import Database, connect
from labctl.jobs.queue import archive_settled, get_job
from labctl.jobs.submit import JobRequest, new_job_id, submit_job
from labctl.model.states import TERMINAL
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.seam import LocalStore

Timings = dict[str, float]


def log_dataset(config: Config, data: Path) -> None:
    with connect(config.database) as db:
        log_entries(db, config, [(DATASET, {"user": "charlie", "data_raw_path": str(data)})])


def run_one_job(config: Config) -> dict[str, Any]:
    """Run one small job to `completed`: the model of every finished and running entry."""
    request = JobRequest(
        DATASET, "local", "file_stats", datarawfiles=["fl_a.roli", "fl_b.roli"], allow_dirty=True
    )
    with connect(config.database) as db:
        job_id = submit_job(db, config, request)["job_id"]
        deadline = time.monotonic() + 120
        while (job := get_job(db, job_id))["status"] not in TERMINAL:
            assert time.monotonic() < deadline, f"the model job is stuck: {job['history']}"
            run_stages(LocalStore.of(db, config), config, TICK)
            time.sleep(0.2)
        assert job["status"] == "completed", job["history"]
        # cleans its scratch if not yet, archives it
        run_stages(LocalStore.of(db, config), config, ["jobs"])
        job = get_job(db, job_id)
        assert db.archive.delete({"_id": job_id}) == 1, job
    reap_children()
    return job


def fill(config: Config, model: dict[str, Any], finished: int) -> None:
    """The finished jobs, queued as an older labctl kept them, then moved to the archive as the
    upgrade to schema 3 (and every jobs stage since) does."""
    with connect(config.database) as db:
        for first in range(0, finished, 5000):
            last = min(first + 5000, finished)
            db.queue.insert_many([finished_copy(model, i) for i in range(first, last)])
        start = time.perf_counter()
        moved = len(archive_settled(db, "bench", timedelta(hours=1)))
        print(f"archived {moved} of them in {time.perf_counter() - start:.1f} s")


def finished_copy(model: dict[str, Any], i: int) -> dict[str, Any]:
    """The model job as the i-th finished entry: a new id, an older date, its own end."""
    created = model["created_at"] - timedelta(minutes=15 * (i + 1))
    job = {**model, "job_id": new_job_id(), "created_at": created, "updated_at": created}
    if i % 100 < 5:  # 4 in 100 failed, 1 in 100 cancelled (and stopped on the cluster)
        for field in ("results", "result_dir", "scratch_cleaned"):
            del job[field]
        failure = {"reason": "exit_code", "message": "process exited (exit 1)"}
        job.update(status="failed", failure=failure)
        if i % 100 == 4:
            failure = {"reason": "cancelled", "message": "cancelled by charlie"}
            job.update(status="cancelled", failure=failure, cleanup_pending=False)
    return job


def active_copy(model: dict[str, Any], cluster: str, scheduler_id: str) -> dict[str, Any]:
    """The model job as an active one on `cluster`, following the scheduler's `scheduler_id`."""
    now = utcnow()
    state = "running" if cluster == "local" else "pending"
    scheduler = {"job_id": scheduler_id, "tasks": 1, "submitted_at": now}
    job = {**model, "job_id": new_job_id(), "created_at": now, "updated_at": now}
    job["scheduler"] = scheduler
    job.update(status=state, compute_cluster=cluster, history=model["history"][:3])
    for field in ("results", "result_dir", "scratch_cleaned"):
        job.pop(field, None)
    return job


@contextmanager
def sleepers(count: int) -> Iterator[list[str]]:
    """`count` sleeping processes (the local cluster's jobs), killed at the end."""
    procs = [subprocess.Popen(["sleep", "3600"], start_new_session=True) for _ in range(count)]
    try:
        yield [str(proc.pid) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextmanager
def active_jobs(count: int) -> Iterator[tuple[dict[str, ClusterConfig], list[str]]]:
    """The clusters to configure, and `count` scheduler ids of real jobs on the first one."""
    if testbed_cluster("/") is None:
        with sleepers(count) as pids:
            yield {}, pids
        return
    with testbed_shell() as shell, remote_scratch(shell) as scratch, held_jobs(shell, count) as ids:
        hpc = testbed_cluster(scratch)
        assert hpc is not None
        yield {"hpc": hpc}, ids


def tick(config: Config, db: Database | None) -> Timings:
    """Seconds per stage of one tick: on `db`, or (None) on a fresh connection per stage."""
    seconds: Timings = {}
    for stage in TICK:
        start = time.perf_counter()
        if db is None:
            with connect(config.database) as fresh:
                run_stages(LocalStore.of(fresh, config), config, [stage])
        else:
            run_stages(LocalStore.of(db, config), config, [stage])
        seconds[stage] = time.perf_counter() - start
    seconds["tick"] = sum(seconds.values())
    return seconds


def measure(configs: dict[str, Config], repeat: int, warm: bool) -> dict[str, list[Timings]]:
    """`repeat` ticks of each store, alternating which goes first."""
    dbs = {name: connect(config.database) if warm else None for name, config in configs.items()}
    try:
        for name, config in configs.items():
            if warm:
                tick(config, dbs[name])  # untimed: builds the indexes that `loop` keeps
        found: dict[str, list[Timings]] = {name: [] for name in configs}
        for i in range(repeat):
            for name in list(configs)[:: 1 if i % 2 == 0 else -1]:
                found[name].append(tick(configs[name], dbs[name]))
    finally:
        for db in dbs.values():
            if db is not None:
                db.close()
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", type=int, default=100_000, help="finished jobs in 'big'")
    parser.add_argument("--active", type=int, default=100, help="running jobs in both stores")
    parser.add_argument("--repeat", type=int, default=5, help="timed loop ticks per store")
    parser.add_argument("--cron-repeat", type=int, default=3, help="timed cron ticks per store")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp,
        active_jobs(args.active) as (clusters, ids),
    ):
        cluster = next(iter(clusters), "local")
        configs = {name: bench_config(Path(tmp) / name, **clusters) for name in ("small", "big")}
        data = Path(tmp) / "data"
        data.mkdir()
        for name, size in (("fl_a.roli", 1000), ("fl_b.roli", 2000)):
            (data / name).write_bytes(b"x" * size)
        for config in configs.values():
            log_dataset(config, data)
        model = run_one_job(configs["small"])
        start = time.perf_counter()
        fill(configs["big"], model, args.finished)
        print(f"filled {args.finished} finished jobs in {time.perf_counter() - start:.1f} s")
        active = [active_copy(model, cluster, scheduler_id) for scheduler_id in ids]
        for config in configs.values():
            with connect(config.database) as db:
                db.queue.insert_many(active)
        results = {
            "loop": measure(configs, args.repeat, warm=True),
            "cron": measure(configs, args.cron_repeat, warm=False),
        }

    print(f"\n{args.active} {active[0]['status']} jobs on {cluster}, big adds {args.finished} "
          f"finished; median of {args.repeat} (loop), {args.cron_repeat} (cron) ticks")  # fmt: skip
    print("x small = big / small in the same round")
    print(f"{'mode':<5} {'stage':<10} {'small s':>9} {'big s':>9} {'x small':>8} {'spread':>11}")
    for mode, found in results.items():
        for stage in [*TICK, "tick"]:
            small = [t[stage] for t in found["small"]]
            big = [t[stage] for t in found["big"]]
            ratios = [b / s for s, b in zip(small, big, strict=True)]
            print(f"{mode:<5} {stage:<10} {median(small):>9.4f} {median(big):>9.4f} "
                  f"{median(ratios):>8.2f} {spread(ratios):>11}")  # fmt: skip
    print("goal: tick x small <= 1.2")


if __name__ == "__main__":
    main()
