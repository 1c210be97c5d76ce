"""`labctl watchdog scan|transfers|jobs|tick`: the stages cron runs, or a loop for testing."""

from __future__ import annotations

import click

from labctl.cli import App, cli
from labctl.stages.loop import STAGES, run_loop, run_stages


@cli.command("watchdog")
@click.argument("stage", type=click.Choice([*STAGES, "tick"]))
@click.option("--loop", type=click.FloatRange(min=0.1), help="Repeat every SECONDS until stopped.")
@click.option("--runs", type=click.IntRange(min=1), help="With --loop: stop after this many runs.")
@click.pass_obj
def watchdog_cmd(app: App, stage: str, loop: float | None, runs: int | None) -> None:
    """Run a watchdog stage (tick: scan, transfers, jobs in order)."""
    names = list(STAGES) if stage == "tick" else [stage]
    if loop is None:
        for line in run_stages(app.db, app.config, names):
            click.echo(line)
    else:
        run_loop(app.db, app.config, names, loop, runs, click.echo)
