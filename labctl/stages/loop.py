"""Running the watchdog's stages: once each, in order (what cron's three lines do over a minute),
and collecting the background transfers that ended, for a long-running loop."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from labctl.config import Config
from labctl.db import Database
from labctl.stages import StageRun, stage_run
from labctl.stages.scan import run_scan
from labctl.stages.tracking import run_jobs
from labctl.stages.transfers import run_transfers

STAGES: dict[str, Callable[[StageRun], None]] = {
    "scan": run_scan,
    "transfers": run_transfers,
    "jobs": run_jobs,
}


def run_stages(db: Database, config: Config, names: list[str]) -> list[str]:
    """Run the named stages once, in order; return one summary line per stage."""
    lines = []
    for name in names:
        with stage_run(db, config, name) as run:
            STAGES[name](run)
        did = ", ".join(f"{k} {v}" for k, v in sorted(run.did.items())) or "nothing to do"
        lines.append(f"{name}: {did}" + "".join(f"\n  {note}" for note in run.notes))
    return lines


def reap_children() -> None:
    """Collect background rsyncs that ended, so that a long loop leaves no zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
