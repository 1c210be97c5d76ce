"""`labctl watchdog scan|transfers|jobs|tick`: the stages cron runs, or a loop for testing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import click

from labctl.cli import App, cli
from labctl.config import Config
from labctl.db import Database
from labctl.stages import StageRun, stage_run
from labctl.stages.jobs import run_jobs
from labctl.stages.scan import run_scan
from labctl.stages.transfers import run_transfers

STAGES: dict[str, Callable[[StageRun], None]] = {
    "scan": run_scan,
    "transfers": run_transfers,
    "jobs": run_jobs,
}


def reap_children() -> None:
    """Collect background rsyncs that ended, so that a long loop leaves no zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def run_stages(db: Database, config: Config, names: list[str]) -> list[str]:
    """Run the named stages once, in order; return one summary line per stage."""
    lines = []
    for name in names:
        with stage_run(db, config, name) as run:
            STAGES[name](run)
        did = ", ".join(f"{k} {v}" for k, v in sorted(run.did.items())) or "nothing to do"
        lines.append(f"{name}: {did}" + "".join(f"\n  {note}" for note in run.notes))
    return lines


@cli.command("watchdog")
@click.argument("stage", type=click.Choice([*STAGES, "tick"]))
@click.option("--loop", type=click.FloatRange(min=0.1), help="Repeat every SECONDS until stopped.")
@click.option("--runs", type=click.IntRange(min=1), help="With --loop: stop after this many runs.")
@click.pass_obj
def watchdog_cmd(app: App, stage: str, loop: float | None, runs: int | None) -> None:
    """Run a watchdog stage (tick: scan, transfers, jobs in order)."""
    names = list(STAGES) if stage == "tick" else [stage]
    done = 0
    while True:
        for line in run_stages(app.db, app.config, names):
            click.echo(line)
        done += 1
        if loop is None or (runs is not None and done >= runs):
            return
        reap_children()
        time.sleep(loop)
