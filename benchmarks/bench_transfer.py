"""Transfer throughput through labctl vs plain `rsync -a` over a fresh SSH connection, on the
testbed.

    python -m benchmarks.bench_transfer [--mb 100,1000] [--files 5] [--repeat 5] [--poll 0.1]

For each size, writes `--files` files of random bytes (`--mb` MB in all) under a temporary
folder, logs them as a dataset, then per round, in alternating order:
- labctl: submit a job with the files as inputs; the clock starts before the `scan` stage (which
  checks the cluster's session, makes the job folder over it, stages the inputs and starts the
  background rsync with --info=progress2 through the session) and stops when a `transfers` stage
  run (repeated every `--poll` seconds, each recording the progress it reads) has recorded the
  transfer done;
- plain: `rsync -a` of the same source tree with a plain `ssh -i KEY -p PORT` (a connection and
  key login of its own, as a person would type it), to a fresh destination folder.
Every run sends everything to a new folder, removed afterwards. MB/s is 10^6 bytes of the tree
sent (the inputs plus labctl's small code folder) per second; "x plain" is labctl's over plain's
in the same round, and the median of those ratios is the figure. It splits into "start s" (the
scan stage: SSH connection, mkdir, staging, launch), "rsync x plain" (plain's seconds over the
background rsync's own, from launch to its exit status file's mtime) and "lag s" (from the rsync's
exit to the transfers run that recorded it: polling granularity plus one stage run).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from labctl.compute.transport import SSHRunner
from labctl.config import ClusterConfig, Config
from labctl.db import Database, connect
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.seam import LocalStore

PROGRESS = "--info=progress2,stats1"


def write_data(folder: Path, megabytes: int, files: int) -> list[str]:
    """`files` files of random bytes, `megabytes` MB in all; their names."""
    folder.mkdir(parents=True)
    size = megabytes * 10**6 // files
    names = [f"part_{i}.bin" for i in range(files)]
    for name in names:
        with (folder / name).open("wb") as out:
            for _ in range(size // 2**20):
                out.write(os.urandom(2**20))
            out.write(os.urandom(size % 2**20))
    return names


def tree_bytes(root: Path) -> int:
    """Bytes rsync --copy-links --exclude=__pycache__ sends from `root` (symlinks followed)."""
    total = 0
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        total += sum(os.stat(Path(folder) / name).st_size for name in files)
    return total


def labctl_run(
    db: Database, config: Config, shell: SSHRunner, inputs: list[str], poll: float
) -> dict[str, Any]:
    """One transfer through the stages; its seconds, the rsync's own end, the polls made."""
    request = JobRequest(DATASET, "hpc", "file_stats", datarawfiles=inputs, allow_dirty=True)
    job = submit_job(db, config, request, force=True)
    start, start_wall = time.perf_counter(), time.time()
    run_stages(LocalStore.of(db, config), config, ["scan"])
    started = time.perf_counter() - start  # the rsync runs from (just before) here
    polls, seen = 0, set()
    while True:
        run_stages(LocalStore.of(db, config), config, ["transfers"])
        polls += 1
        found = get_job(db, job["job_id"])
        transfer = found["transfer"]
        seen.add(transfer["bytes"])
        if transfer["done"]:
            seconds = time.perf_counter() - start
            break
        if found["status"] != "transferring" or transfer.get("resume"):
            raise RuntimeError(f"the transfer broke: {found['history']}")
        time.sleep(poll)
    ended = os.stat(transfer["status_path"]).st_mtime - start_wall  # written as rsync exits
    reap_children()
    db.queue.delete({"job_id": job["job_id"]})  # never submitted: no later scan may take it
    shell.run(["rm", "-rf", "--", found["remote_dir"]], timeout=300)
    return {
        "seconds": seconds,
        "start": started,
        "rsync": ended - started,
        "lag": seconds - ended,
        "polls": polls,
        "updates": len(seen),
        "argv": transfer["argv"],
    }


def plain_argv(recorded: Sequence[str], cluster: ClusterConfig, dest: str) -> list[str]:
    """`rsync -a` of the tree labctl sent, over a fresh ssh connection of its own."""
    ssh = ["ssh", "-p", str(cluster.port), "-i", str(cluster.key_file), "-o", "ControlPath=none",
           "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-o", "BatchMode=yes"]  # fmt: skip
    source = recorded[-2]  # labctl's staging tree: symlinks to the inputs, hence -L
    return ["rsync", "-a", "-L", "-e", shlex.join(ssh), source,
            f"{cluster.user}@{cluster.host}:{dest}/"]  # fmt: skip


def plain_run(argv: list[str], shell: SSHRunner, dest: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    shell.run(["rm", "-rf", "--", dest], timeout=300)
    return seconds


def measure(
    mb_in: int, args: argparse.Namespace, shell: SSHRunner, scratch: str, tmp: Path
) -> None:
    """The rounds of one size, and their table."""
    hpc = testbed_cluster(scratch)
    assert hpc is not None
    config = bench_config(tmp, hpc=hpc)
    started = time.perf_counter()
    inputs = write_data(tmp / "raw", mb_in, args.files)
    print(f"wrote {mb_in} MB in {args.files} files in {time.perf_counter() - started:.1f} s")
    with connect(config.database) as db:
        log_entries(db, config, [(DATASET, {"user": "bench", "data_raw_path": f"{tmp}/raw"})])
        # Untimed: fills the page cache and opens the session; plain then sends its staging tree.
        warm = labctl_run(db, config, shell, inputs, args.poll)
        plain = plain_argv(warm["argv"], hpc, f"{scratch}/plain")
        size = tree_bytes(Path(plain[-2]))
        rows: list[tuple[float, dict[str, Any]]] = []
        for i in range(args.repeat):
            if i % 2 == 0:
                ours = labctl_run(db, config, shell, inputs, args.poll)
                theirs = plain_run(plain, shell, f"{scratch}/plain")
            else:
                theirs = plain_run(plain, shell, f"{scratch}/plain")
                ours = labctl_run(db, config, shell, inputs, args.poll)
            rows.append((theirs, ours))

    mb = size / 1e6
    print(f"\n{mb:.1f} MB per run, {args.repeat} rounds, polled every {args.poll} s")
    print(f"plain: {shlex.join(plain)}")
    print(f"{'round':<6} {'plain MB/s':>10} {'labctl MB/s':>11} {'x plain':>8} {'start s':>8} "
          f"{'rsync x plain':>13} {'lag s':>6} {'polls':>6} {'updates':>8}")  # fmt: skip
    ratios, rsync_ratios = [], []
    for i, (theirs, ours) in enumerate(rows):
        ratios.append(theirs / ours["seconds"])
        rsync_ratios.append(theirs / ours["rsync"])
        print(f"{i:<6} {mb / theirs:>10.1f} {mb / ours['seconds']:>11.1f} {ratios[-1]:>8.3f} "
              f"{ours['start']:>8.3f} {rsync_ratios[-1]:>13.3f} {ours['lag']:>6.3f} "
              f"{ours['polls']:>6} {ours['updates']:>8}")  # fmt: skip
    plain_rates = [mb / theirs for theirs, _ in rows]
    ours_rates = [mb / ours["seconds"] for _, ours in rows]
    print(f"{'median':<6} {median(plain_rates):>10.1f} {median(ours_rates):>11.1f} "
          f"{median(ratios):>8.3f} {median([o['start'] for _, o in rows]):>8.3f} "
          f"{median(rsync_ratios):>13.3f} {median([o['lag'] for _, o in rows]):>6.3f}")  # fmt: skip
    print(f"x plain over the rounds at {mb_in} MB: {spread(ratios)}; goal >= 0.97\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", default="100,1000", help="MB of input data in all, per size")
    parser.add_argument("--files", type=int, default=5, help="number of input files")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (one run of each)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between transfers runs")
    args = parser.parse_args(argv)
    if testbed_cluster("/") is None:
        print(f"bench_transfer skipped: {TESTBED_HINT}")
        return
    with testbed_shell() as shell, remote_scratch(shell) as scratch:
        for mb in (int(size) for size in args.mb.split(",")):
            with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
                measure(mb, args, shell, scratch, Path(tmp))


if __name__ == "__main__":
    main()
