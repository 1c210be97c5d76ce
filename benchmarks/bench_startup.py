"""CPU of one `labctl` command line call against a bare `python -c pass`.

    python -m benchmarks.bench_startup [--repeat 15]

A throw-away embedded store with one dataset logged and a `local` cluster. Each round runs, as
new processes, `python -c pass` (the raw floor), the libraries a call needs and nothing of labctl
(Click, YAML, pydantic, litemongo opening the store: the floor under any call on that store),
then `labctl --help`, `labctl submit` (a `file_stats` job on the dataset), `labctl query` and
`labctl queue`, the CPU of each (user + system, its children included, e.g. git) read from the
kernel's accounting of the finished child. Bytecode is written once by an untimed warm-up, as an
installed labctl has it. "x raw" is a command's CPU over the floor's in the same round (median of
the rounds). Goal: `--help`, `query` and `queue` <= 150 ms CPU; the libraries alone bound what
a call on the store can reach (litemongo imports pymongo whole).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from benchmarks.common import DATASET, bench_config, median, spread
from labctl.catalog.experiments import log_entries
from labctl.db import connect

# What any labctl call on the embedded store needs of its libraries, and nothing of labctl: Click,
# YAML, one pydantic model validated, litemongo (which imports pymongo whole) opening a store.
LIBRARIES = """
import click, yaml, litemongo, pydantic, sys
class Model(pydantic.BaseModel):
    name: str
Model(name="x")
litemongo.connect(sys.argv[1])["labctl"]["data"].find_one({})
"""
GOAL_MS = 150


def commands(config_file: Path) -> dict[str, list[str]]:
    labctl = [sys.executable, "-m", "labctl"]
    store = str(config_file.parent / "store")
    submit = ["submit", DATASET, "--cluster", "local", "--job-type", "file_stats", "--force"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "libraries only": [sys.executable, "-c", LIBRARIES, store],
        "labctl --help": [*labctl, "--help"],
        "labctl submit": [*labctl, "--config", str(config_file), *submit, "--allow-dirty"],
        "labctl query": [*labctl, "--config", str(config_file), "query"],
        "labctl queue": [*labctl, "--config", str(config_file), "queue"],
    }


def cpu_and_wall(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds of CPU (the child and what it waited for) and of wall time for one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def setup(tmp: Path) -> Path:
    """The store with the dataset logged, and the config file that names it."""
    config = bench_config(tmp)
    raw = tmp / "raw"
    raw.mkdir()
    (raw / "fl_a.roli").write_bytes(b"x" * 1000)
    with connect(config.database) as db:
        log_entries(db, config, [(DATASET, {"user": "bench", "data_raw_path": str(raw)})])
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's labctl

    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        runs = commands(setup(Path(tmp)))
        for command in runs.values():
            cpu_and_wall(command, env)  # untimed: writes the bytecode
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, command in runs.items():
                found[name].append(cpu_and_wall(command, env))

    raw = [cpu for cpu, _ in found["python -c pass"]]
    print(f"median of {args.repeat} rounds; x raw = CPU / CPU of python -c pass in the same round")
    print(f"{'command':<15} {'CPU ms':>7} {'wall ms':>8} {'x raw':>6} {'spread':>12}")
    for name, times in found.items():
        ratios = [cpu / floor for (cpu, _), floor in zip(times, raw, strict=True)]
        cpu_ms = median([cpu for cpu, _ in times]) * 1000
        wall_ms = median([wall for _, wall in times]) * 1000
        print(f"{name:<15} {cpu_ms:>7.0f} {wall_ms:>8.0f} {median(ratios):>6.1f} "
              f"{spread(ratios):>12}")  # fmt: skip
    print(f"goal: labctl --help, query and queue <= {GOAL_MS} ms CPU")


if __name__ == "__main__":
    main()
