"""`labctl watchdog scan|transfers|jobs|tick`: the stages cron runs, or a loop for testing.

On a member's machine that reaches the lab through the service (`service:`), the watchdog works
through it too, as the member whose token it holds (whatever the config's `user` says).
"""

from __future__ import annotations

import click

from labctl.cli import App, cli
from labctl.clock import utcnow
from labctl.config import Config
from labctl.db import Database
from labctl.install.waiting import stale_after, watchdog_notes
from labctl.jobs.queue import list_jobs
from labctl.model.states import ACTIVE
from labctl.stages.heartbeat import latest
from labctl.stages.loop import STAGES, run_loop, run_stages
from labctl.stages.seam import LocalStore, WatchdogStore


def watchdog_store(app: App) -> tuple[WatchdogStore, Config]:
    """The store the member's watchdog works on, and its config acting as that member."""
    if app.config.service is None:
        return LocalStore.of(app.db, app.config), app.config
    from labctl.access.servicedb import member_watchdog

    return member_watchdog(app.config, app.config.service)


def others_unmoved(db: Database, config: Config) -> list[str]:
    """A line for each other member whose jobs this watchdog skipped and whose own watchdog is
    not running: they wait for it."""
    others = {"user": {"$ne": config.user}, "status": {"$in": sorted(map(str, ACTIVE))}}
    jobs = list_jobs(db, matching=others).items
    beats = latest(db).items
    notes = watchdog_notes(jobs, beats, utcnow(), stale_after(config.watchdog.cron_minutes))
    skipped: dict[str, list[str]] = {}
    for job in jobs:
        if job.job_id in notes:
            skipped.setdefault(job.user, []).append(job.job_id)
    return [
        f"skipped {user}'s job(s) {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}: "
        f"{notes[ids[0]]}"
        for user, ids in skipped.items()
    ]


@cli.command("watchdog")
@click.argument("stage", type=click.Choice([*STAGES, "tick"]))
@click.option("--loop", type=click.FloatRange(min=0.1), help="Repeat every SECONDS until stopped.")
@click.option("--runs", type=click.IntRange(min=1), help="With --loop: stop after this many runs.")
@click.pass_obj
def watchdog_cmd(app: App, stage: str, loop: float | None, runs: int | None) -> None:
    """Run a watchdog stage (tick: scan, transfers, jobs in order)."""
    names = list(STAGES) if stage == "tick" else [stage]
    store, config = watchdog_store(app)
    if loop is None:
        for line in run_stages(store, config, names):
            click.echo(line)
        if app.config.service is None:  # through the service, a member sees only their own jobs
            for line in others_unmoved(app.db, config):
                click.echo(line)
    else:
        run_loop(store, config, names, loop, runs, click.echo)
