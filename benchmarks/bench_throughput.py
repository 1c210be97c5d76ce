"""N trivial jobs through labctl against the raw scheduler floor, on the testbed's SLURM.

    python -m benchmarks.bench_throughput [--jobs 50] [--local]

The floor: N `sbatch --wrap true` over one SSH session, then one `squeue` a second until SLURM
lists none of them. labctl, on each backend (the embedded store; the MongoDB driver against a
wire server): N `selftest` jobs queued from one Python process with `dbqueue_job`, then `labctl
watchdog tick --loop 1` until every job is completed. It reports the wall time (as a ratio to
the floor of the same run), the watchdog's CPU per job (its whole process tree: rsync and ssh
children included), SSH logins per job, and, from a second pass that runs the same loop inside
this process, database operations, rsync processes and the cluster's commands (remote execs) per
job, and remote execs per tick. The `service` row is a member's watchdog through the labctl
service (`labctl web` in its own process, over an embedded store) with a token: its DB
operations are the service's requests. `--local` runs that counted pass alone on the `local`
cluster (plain processes on this machine: no testbed, no floor).
SSH logins count what the testbed's sshd logged during the loop: the benchmark's own session to
the cluster is open already, as `labctl connect` leaves it, so 0 means the watchdog rode it.
Goals (issue 12): wall <= 1.5x the floor, CPU <= 25 ms/job, 1 login per cluster, <= 12 DB
operations per job, code shipped once per (cluster, commit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DATASET,
    TESTBED_HINT,
    TICK,
    bench_config,
    remote_scratch,
    testbed_cluster,
    testbed_shell,
)
from labctl.access.service import ServiceLab
from labctl.access.servicedb import ServiceStore, member_watchdog
from labctl.api import dbqueue_job
from labctl.catalog.experiments import log_entries
from labctl.compute import cluster as clusters
from labctl.compute.cluster import Cluster
from labctl.compute.transport import Result, SSHRunner, TransferHandle
from labctl.config import ClusterConfig, Config, DatabaseConfig
from labctl.db import Collection, Database, connect
from labctl.errors import ServiceError
from labctl.model.states import JobState
from labctl.private import write_private
from labctl.settings import ServiceConfig
from labctl.stages import scan
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.seam import LocalStore, WatchdogStore
from labctl.users import add_user, create_token
from tests.mongoserver import free_port, secantus
from tests.testbed import sshd_logins, write_config

LABCTL = str(Path(sys.executable).parent / "labctl")
DB_OPERATIONS = ("find", "find_one", "claim", "update", "insert", "insert_many", "count", "delete")


@dataclass
class Pass:
    wall: float
    cpu_per_job: float = 0.0
    logins: int = 0
    db_ops_per_job: float = 0.0
    rsyncs_per_job: float = 0.0
    execs_per_job: float = 0.0
    execs_per_tick: float = 0.0


def logins() -> int:
    return sshd_logins(Path(os.environ["HPC_SSHD_LOG"]))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor(shell: SSHRunner, jobs: int) -> float:
    """Seconds for `jobs` bare sbatch calls and one squeue a second until all are gone."""
    submit = (
        'for i in $(seq "$1"); do sbatch --parsable --partition=debug --output=/dev/null '
        "--wrap true || exit; done"
    )
    start = time.perf_counter()
    ids = shell.run(["sh", "-c", submit, "submit", str(jobs)], timeout=600).stdout.split()
    while shell.run(["squeue", "--noheader", f"--jobs={','.join(ids)}"], check=False).stdout:
        time.sleep(1)
    return time.perf_counter() - start


@contextmanager
def counting(counts: Counter[str]) -> Iterator[None]:
    """Count database operations through the seam, rsyncs started (in the background by the
    scan stage, in the foreground for code and results) and the clusters' commands, meanwhile."""
    originals: dict[str, Callable[..., Any]] = {n: getattr(Collection, n) for n in DB_OPERATIONS}

    def counted(name: str) -> Callable[..., Any]:
        def call(self: Collection, *args: Any, **kwargs: Any) -> Any:
            counts["db"] += 1
            return originals[name](self, *args, **kwargs)

        return call

    popen = subprocess.Popen.__init__

    def started(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        if isinstance(args, list | tuple) and args and Path(str(args[0])).name == "rsync":
            counts["rsync"] += 1
        popen(self, args, *rest, **kwargs)

    background = scan.start_rsync
    sent = ServiceStore.run

    def sent_op(self: ServiceStore, op: Any) -> Any:
        counts["db"] += 1  # through the service: one request per operation
        return sent(self, op)

    def transfer(argv: Sequence[str], log: str | os.PathLike[str]) -> TransferHandle:
        counts["rsync"] += 1
        return background(argv, log)

    opener = clusters.open_cluster

    def opened(name: str, config: ClusterConfig) -> Cluster:
        cluster = opener(name, config)
        run = cluster.runner.run  # its scheduler's commands go through it too

        def command(argv: Sequence[str], **kwargs: Any) -> Result:
            counts["exec"] += 1
            return run(argv, **kwargs)

        cluster.runner.run = command  # type: ignore[method-assign]
        return cluster

    for name in DB_OPERATIONS:
        setattr(Collection, name, counted(name))
    subprocess.Popen.__init__ = started  # type: ignore[method-assign]
    scan.start_rsync = transfer
    clusters.open_cluster = opened
    ServiceStore.run = sent_op  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(Collection, name, original)
        subprocess.Popen.__init__ = popen  # type: ignore[method-assign]
        scan.start_rsync = background
        clusters.open_cluster = opener
        ServiceStore.run = sent  # type: ignore[method-assign]


@dataclass(frozen=True)
class Setup:
    """The watchdog's config (and its file), and the store where the benchmark watches jobs."""

    config: Config
    path: Path
    store: DatabaseConfig


def prepared(tmp: Path, database: DatabaseConfig, scratch: str) -> Setup:
    """A fresh config on `database` with the testbed cluster, the dataset logged."""
    hpc = testbed_cluster(scratch)
    assert hpc is not None
    tmp.mkdir(parents=True, exist_ok=True)
    config = bench_config(tmp, hpc=hpc).model_copy(update={"database": database})
    with connect(config.database) as db:
        log_entries(db, config, [(DATASET, {"user": config.user, "data_raw_path": str(tmp)})])
    return Setup(config, write_config(config, tmp / "config.yaml"), database)


@contextmanager
def through_the_service(tmp: Path, scratch: str) -> Iterator[Setup]:
    """`labctl web` for the lab server's store (`prepared`), in its own process, and a member's
    config that reaches it with their token only."""
    server = prepared(tmp / "server", DatabaseConfig(path=tmp / "server" / "store"), scratch)
    with connect(server.store) as db:
        add_user(db, server.config.user)
        token = create_token(db, server.config.user)
    token_file = tmp / "token"
    write_private(token_file, token)
    port = free_port()
    service = ServiceConfig(url=f"http://127.0.0.1:{port}", token_file=token_file)
    web = subprocess.Popen([LABCTL, "--config", str(server.path), "web", "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ServiceLab(service, token).whoami()
                break
            except ServiceError:
                if web.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("labctl web did not start") from None
                time.sleep(0.2)
        hpc = testbed_cluster(scratch)
        assert hpc is not None
        member = bench_config(tmp, hpc=hpc).model_copy(update={"service": service})
        yield Setup(member, write_config(member, tmp / "config.yaml"), server.store)
    finally:
        web.terminate()
        web.wait(timeout=30)


@contextmanager
def setup_for(backend: str, where: Path, scratch: str, mongo: str) -> Iterator[Setup]:
    if backend == "service":
        with through_the_service(where, scratch) as setup:
            yield setup
        return
    database = (
        DatabaseConfig(uri="embedded", path=where / "store")
        if backend == "embedded"
        else DatabaseConfig(uri=mongo, name=f"bench_{where.name}")
    )
    yield prepared(where, database, scratch)


def submit_all(path: Path, jobs: int, cluster: str = "hpc") -> list[str]:
    return [
        dbqueue_job(
            DATASET,
            cluster,
            "selftest",
            job_options={"sleep_seconds": i / 1e6},
            allow_dirty=True,
            config=path,
        )
        for i in range(jobs)
    ]


def all_completed(db: Database, ids: Sequence[str]) -> bool:
    found = db.queue.find({"job_id": {"$in": list(ids)}}, ["status", "failure"])
    failed = [job for job in found if job["status"] in (JobState.FAILED, JobState.CANCELLED)]
    if failed:
        raise RuntimeError(f"a benchmark job failed: {failed[0]}")
    return all(job["status"] == JobState.COMPLETED for job in found)


def as_cron_runs_it(setup: Setup, jobs: int) -> Pass:
    """`labctl watchdog tick --loop 1` in its own process until the jobs are completed."""
    ids = submit_all(setup.path, jobs)
    cpu, seen = children_cpu(), logins()
    start = time.perf_counter()
    loop = subprocess.Popen([LABCTL, "--config", str(setup.path), "watchdog", "tick", "--loop",
                             "1"], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        with connect(setup.store) as db:
            while not all_completed(db, ids):
                if loop.poll() is not None:
                    raise RuntimeError(f"the watchdog loop ended with {loop.returncode}")
                time.sleep(0.2)
        wall = time.perf_counter() - start
    finally:
        loop.terminate()
        loop.wait(timeout=60)
    return Pass(wall, (children_cpu() - cpu) / jobs, logins() - seen)


def counted_in_process(setup: Setup, jobs: int, cluster: str = "hpc") -> Pass:
    """The same, with the loop in this process so that its operations can be counted."""
    counts: Counter[str] = Counter()
    service = setup.config.service
    config = setup.config
    with contextlib.ExitStack() as held:
        if service is None:
            watchdog: WatchdogStore = LocalStore.of(
                held.enter_context(connect(config.database)), config
            )
        else:
            watchdog, config = member_watchdog(config, service)
        return _counted(setup, watchdog, config, jobs, cluster, counts)


def _counted(
    setup: Setup,
    watchdog: WatchdogStore,
    config: Config,
    jobs: int,
    cluster: str,
    counts: Counter[str],
) -> Pass:
    start = time.perf_counter()
    with counting(counts), connect(setup.store) as store:
        ids = submit_all(setup.path, jobs, cluster)
        while True:
            run_stages(watchdog, config, TICK)
            counts["tick"] += 1
            reap_children()
            with _uncounted(counts):
                if all_completed(store, ids):
                    break
            time.sleep(1)
    wall = time.perf_counter() - start
    return Pass(
        wall,
        db_ops_per_job=counts["db"] / jobs,
        rsyncs_per_job=counts["rsync"] / jobs,
        execs_per_job=counts["exec"] / jobs,
        execs_per_tick=counts["exec"] / counts["tick"],
    )


def on_this_machine(jobs: int) -> None:
    """The counted pass on the `local` cluster, embedded store: no testbed needed."""
    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        config = bench_config(Path(tmp))
        with connect(config.database) as db:
            log_entries(db, config, [(DATASET, {"user": config.user, "data_raw_path": tmp})])
        path = write_config(config, Path(tmp) / "config.yaml")
        found = counted_in_process(Setup(config, path, config.database), jobs, "local")
    print(f"\n{jobs} selftest jobs on the local cluster (plain processes), embedded store, "
          f"in {found.wall:.1f} s")  # fmt: skip
    print(f"{'DB ops/job':>11} {'rsyncs/job':>11} {'execs/job':>10} {'execs/tick':>11}")
    print(f"{found.db_ops_per_job:>11.1f} {found.rsyncs_per_job:>11.2f} "
          f"{found.execs_per_job:>10.2f} {found.execs_per_tick:>11.1f}")  # fmt: skip


@contextmanager
def _uncounted(counts: Counter[str]) -> Iterator[None]:
    """The benchmark's own look at the queue is not labctl's work."""
    before = counts.copy()
    yield
    counts.clear()
    counts.update(before)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--local", action="store_true", help="the counted pass alone, locally")
    args = parser.parse_args(argv)
    if args.local:
        on_this_machine(args.jobs)
        return
    if testbed_cluster("/") is None:
        print(f"bench_throughput skipped: {TESTBED_HINT}")
        return
    rows: list[tuple[str, Pass, Pass]] = []
    with (
        tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp,
        testbed_shell() as shell,
        remote_scratch(shell) as scratch,
        secantus(Path(tmp) / "mongo") as uri,
    ):
        raw = floor(shell, args.jobs)
        for backend in ("embedded", "mongodb", "service"):
            passes = []
            for kind, run in (("cron", as_cron_runs_it), ("counted", counted_in_process)):
                with setup_for(backend, Path(tmp) / backend / kind, scratch, uri) as setup:
                    passes.append(run(setup, args.jobs))
            rows.append((backend, passes[0], passes[1]))

    print(f"\n{args.jobs} selftest jobs on the testbed's SLURM; floor: {args.jobs} sbatch over one "
          f"ssh session + squeue each second until gone = {raw:.1f} s")  # fmt: skip
    print(f"{'backend':<10} {'wall s':>7} {'x floor':>8} {'CPU ms/job':>11} {'ssh logins':>11} "
          f"{'DB ops/job':>11} {'rsyncs/job':>11} {'execs/job':>10} "
          f"{'execs/tick':>11}")  # fmt: skip
    for backend, cron, counted in rows:
        print(f"{backend:<10} {cron.wall:>7.1f} {cron.wall / raw:>8.2f} "
              f"{cron.cpu_per_job * 1000:>11.0f} {cron.logins:>11} "
              f"{counted.db_ops_per_job:>11.1f} {counted.rsyncs_per_job:>11.2f} "
              f"{counted.execs_per_job:>10.2f} {counted.execs_per_tick:>11.1f}")  # fmt: skip
    print("goals: x floor <= 1.5, CPU <= 25 ms/job, 1 login per cluster and run, DB ops <= 12, "
          "code shipped once per (cluster, commit)")  # fmt: skip


if __name__ == "__main__":
    main()
