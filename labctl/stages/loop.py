"""Running the watchdog's stages: once each, in order (what cron's three lines do over a minute),
or in a loop that, while there is nothing to do, costs one read per run and, once a minute, each
stage's heartbeat (and the schema check every stage run makes); and collecting the background
transfers that ended, for a long-running loop."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from labctl.config import Config
from labctl.stages import StageRun, stage_run
from labctl.stages.heartbeat import Pacer
from labctl.stages.memberops import HasWork
from labctl.stages.scan import run_scan
from labctl.stages.seam import WatchdogStore
from labctl.stages.tracking import run_jobs
from labctl.stages.transfers import run_transfers

STAGES: dict[str, Callable[[StageRun], None]] = {
    "scan": run_scan,
    "transfers": run_transfers,
    "jobs": run_jobs,
}


def run_stages(
    store: WatchdogStore,
    config: Config,
    names: list[str],
    pacer: Pacer | None = None,
    *,
    idle: bool = False,
) -> list[str]:
    """Run the named stages once, in order; return one summary line per stage. `idle`: there is
    nothing to do, the runs only record their heartbeat (and the clusters' sessions)."""
    lines = []
    for name in names:
        with stage_run(store, config, name, pacer) as run:
            if not idle:
                STAGES[name](run)
        did = ", ".join(f"{k} {v}" for k, v in sorted(run.did.items())) or "nothing to do"
        lines.append(f"{name}: {did}" + "".join(f"\n  {note}" for note in run.notes))
    return lines


def run_loop(
    store: WatchdogStore,
    config: Config,
    names: list[str],
    every: float,
    runs: int | None = None,
    echo: Callable[[str], object] = print,
) -> None:
    """Run the stages every `every` seconds (`runs` times, or until stopped). While no job of
    this member needs a stage, a run is one read, and once a minute each stage only records its
    heartbeat."""
    pacer = Pacer()
    done = 0
    while True:
        idle = not store.run(HasWork())
        if idle and not any(pacer.due(name) for name in names):
            lines = [f"{name}: nothing to do" for name in names]
        else:
            lines = run_stages(store, config, names, pacer, idle=idle)
        for line in lines:
            echo(line)
        done += 1
        if runs is not None and done >= runs:
            return
        reap_children()
        time.sleep(every)


def reap_children() -> None:
    """Collect background rsyncs that ended, so that a long loop leaves no zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
