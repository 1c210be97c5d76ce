"""`labctl retry|cancel`: one job, several, or every job a filter selects.

Named jobs are acted on at once. A filter first lists what it selects; it acts with `--yes`, or
on a terminal after a yes at the prompt; without either it changes nothing and exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from labctl.cli import App, cli
from labctl.cli.output import cell, console, echo_json, rich_table
from labctl.jobs.bulk import Action, Outcome, Plan, choose, parse_filter, plan, report
from labctl.jobs.job import Job

F = TypeVar("F", bound=Callable[..., Any])
COLUMNS = ("job", "dataset", "user", "state", "reason", "updated", "then")


def _filter_options(command: F) -> F:
    """The options that make a filter, and --yes, --json."""
    options = [
        click.option("--status", multiple=True, help="Only jobs in this state (repeat, or a,b)."),
        click.option(
            "--reason", multiple=True, help="Only jobs failed for this reason (repeat, or a,b)."
        ),
        click.option("--user", help="Only this member's jobs; `me` for yours."),
        click.option("--since", help="Only jobs last changed on or after this date."),
        click.option("--cluster", help="Only jobs on this cluster."),
        click.option("--job-type", help="Only jobs of this type."),
        click.option("--yes", "-y", is_flag=True, help="Act on a filter's jobs without asking."),
        click.option("--json", "as_json", is_flag=True, help="The selection and outcome as JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _row(chosen: Plan, job: Job) -> dict[str, str]:
    why = chosen.why_not(job.job_id)
    return {
        "job": job.job_id,
        "dataset": job.dataset,
        "user": job.user,
        "state": str(job.status),
        "reason": str(job.failure.reason) if job.failure else "",
        "updated": cell(job.updated_at),
        "then": f"skip: {why}" if why else str(chosen.action),
    }


def _show(chosen: Plan) -> None:
    table = rich_table(
        title=f"{len(chosen.jobs)} job(s) match {chosen.selection.describe()}",
        header_style="bold",
    )
    for name in COLUMNS:
        table.add_column(name)
    for job in chosen.jobs:
        table.add_row(*_row(chosen, job).values())
    console().print(table)


def _confirmed(chosen: Plan, yes: bool, as_json: bool) -> bool:
    """Whether to go on with a filter's jobs: --yes, or a yes typed at a terminal."""
    count = len(chosen.ready)
    if yes or not count:
        return True
    if sys.stdin.isatty() and not as_json:
        if click.confirm(f"{chosen.action} these {count} job(s)?", default=False):
            return True
        click.echo("nothing done", err=True)
        return False
    click.echo(f"nothing done: add --yes to {chosen.action} these {count} job(s)", err=True)
    return False


def _act(app: App, chosen: Plan) -> Outcome:
    from labctl.stages.cancel import carry_out_plan  # the watchdog's code: only to act

    return carry_out_plan(app.db, app.config, chosen, app.config.user)


def _report(chosen: Plan, outcome: Outcome | None, as_json: bool) -> None:
    if as_json:
        echo_json(report(chosen, outcome))
        return
    if outcome is None:
        return
    for line in outcome.lines:
        click.echo(line)
    for skip in outcome.skipped:
        click.echo(f"skipped {skip.job_id}: {skip.error}")
    if len(chosen.selection.ids) != 1:  # one named job's line says it all
        click.echo(outcome.summary())


def _bulk(
    app: App, action: Action, job_ids: tuple[str, ...], yes: bool, as_json: bool, **filters: Any
) -> None:
    caller = app.config.user
    selection = choose(job_ids, parse_filter(caller, **filters))
    chosen = plan(app.db, action, selection, caller)
    ctx = click.get_current_context()
    if selection.ids:  # named jobs: acted on at once, each reported
        outcome = _act(app, chosen)
        if len(selection.ids) == 1 and outcome.skipped and not as_json:
            raise outcome.skipped[0].error
        _report(chosen, outcome, as_json)
        ctx.exit(outcome.exit_code)
    if not chosen.jobs:
        if as_json:
            _report(chosen, None, as_json)
        else:
            click.echo(f"no job matches {chosen.selection.describe()}")
        return
    if not as_json:
        _show(chosen)
    if not _confirmed(chosen, yes, as_json):
        _report(chosen, None, as_json)
        ctx.exit(1)
    _report(chosen, _act(app, chosen), as_json)


@cli.command("retry")
@click.argument("job_ids", nargs=-1)
@_filter_options
@click.pass_obj
def retry_cmd(app: App, /, job_ids: tuple[str, ...], **options: Any) -> None:
    """Queue failed or cancelled jobs again: the JOB_IDS named, or those a filter selects
    (listed first; --yes to go on). A member touches only their own jobs, an admin anyone's."""
    _bulk(app, Action.RETRY, job_ids, **options)


@cli.command("cancel")
@click.argument("job_ids", nargs=-1)
@_filter_options
@click.pass_obj
def cancel_cmd(app: App, /, job_ids: tuple[str, ...], **options: Any) -> None:
    """Cancel jobs and stop them on their clusters (scancel): the JOB_IDS named, or those a
    filter selects (listed first; --yes to go on). A member touches only their own jobs, an
    admin anyone's."""
    _bulk(app, Action.CANCEL, job_ids, **options)
