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
from labctl.db import Doc
from labctl.errors import LabctlError
from labctl.jobs.bulk import Action, BulkReport, Skipped, summary_line

F = TypeVar("F", bound=Callable[..., Any])
COLUMNS = ("job", "dataset", "user", "state", "reason", "updated", "then")


FILTER_OPTIONS = [
    click.option("--status", multiple=True, help="Only jobs in this state (repeat, or a,b)."),
    click.option(
        "--reason", multiple=True, help="Only jobs failed for this reason (repeat, or a,b)."
    ),
    click.option("--user", help="Only this member's jobs; `me` for yours."),
    click.option("--since", help="Only jobs last changed on or after this date."),
    click.option("--cluster", help="Only jobs on this cluster."),
    click.option("--job-type", help="Only jobs of this type."),
]
"""The options that make a filter (`labctl.jobs.bulk.parse_filter`), here and in `labctl queue`."""


def with_options(command: F, options: list[Callable[[F], F]]) -> F:
    """`command` with `options`, the first listed first in its help."""
    for option in reversed(options):
        command = option(command)
    return command


def _filter_options(command: F) -> F:
    """The options that make a filter, and --yes, --json."""
    return with_options(
        command,
        [
            *FILTER_OPTIONS,
            click.option(
                "--yes", "-y", is_flag=True, help="Act on a filter's jobs without asking."
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="The selection and outcome as JSON."
            ),
        ],
    )


def _row(answer: BulkReport, job: Doc) -> dict[str, str]:
    why = {skip.job_id: skip.why for skip in answer.skipped}.get(job["job_id"])
    failure = job.get("failure") or {}
    return {
        "job": job["job_id"],
        "dataset": job["dataset"],
        "user": job["user"],
        "state": job["status"],
        "reason": failure.get("reason", ""),
        "updated": cell(job["updated_at"]),
        "then": f"skip: {why}" if why else str(answer.action),
    }


def _show(answer: BulkReport) -> None:
    jobs = answer.jobs
    table = rich_table(title=f"{len(jobs)} job(s) match {answer.selection}", header_style="bold")
    for name in COLUMNS:
        table.add_column(name)
    for job in jobs:
        table.add_row(*_row(answer, job).values())
    console().print(table)


def _ready(answer: BulkReport) -> list[str]:
    """The selected jobs the action will touch."""
    skipped = {skip.job_id for skip in answer.skipped}
    return [job["job_id"] for job in answer.jobs if job["job_id"] not in skipped]


def _confirmed(action: Action, count: int, yes: bool, as_json: bool) -> bool:
    """Whether to go on with a filter's jobs: --yes, or a yes typed at a terminal."""
    if yes or not count:
        return True
    if sys.stdin.isatty() and not as_json:
        if click.confirm(f"{action} these {count} job(s)?", default=False):
            return True
        click.echo("nothing done", err=True)
        return False
    click.echo(f"nothing done: add --yes to {action} these {count} job(s)", err=True)
    return False


def _report(answer: BulkReport, as_json: bool, *, summary: bool = True) -> None:
    if as_json:
        echo_json(answer.model_dump())
        return
    if not answer.acted:
        return
    for line in answer.lines:
        click.echo(line)
    for skip in answer.skipped:
        click.echo(f"skipped {skip.job_id}: {skip.detail}")
    if summary:
        click.echo(answer.summary)


def _refusal(skip: Skipped) -> LabctlError:
    """One named job's skip as the error it was, with its exit code."""
    error = LabctlError(skip.detail)
    error.exit_code = skip.exit_code
    return error


def _bulk(
    app: App, action: Action, job_ids: tuple[str, ...], yes: bool, as_json: bool, **filters: Any
) -> None:
    ctx = click.get_current_context()
    if job_ids:  # named jobs: acted on at once, each reported
        answer = app.lab.bulk(action, job_ids, filters, confirm=True)
        skipped = answer.skipped
        if len(job_ids) == 1 and skipped and not as_json:
            raise _refusal(skipped[0])
        _report(answer, as_json, summary=len(job_ids) != 1)  # one job's line says it all
        ctx.exit(max((skip.exit_code for skip in skipped), default=0))
    listed = app.lab.bulk(action, (), filters, confirm=False)
    if not listed.jobs:
        if as_json:
            echo_json(listed.model_dump())
        else:
            click.echo(f"no job matches {listed.selection}")
        return
    if not as_json:
        _show(listed)
    ready = _ready(listed)
    if not _confirmed(action, len(ready), yes, as_json):
        _report(listed, as_json)
        ctx.exit(1)
    if not ready:  # all skipped: nothing to do, say why
        _report(listed.model_copy(update={"acted": True, "lines": []}), as_json)
        return
    # Act on exactly the jobs listed, not on what the filter matches by now.
    done = app.lab.bulk(action, ready, {}, confirm=True)
    skipped = listed.skipped + done.skipped
    whys = [skip.why for skip in skipped]
    update = {"selection": listed.selection, "jobs": listed.jobs, "skipped": skipped}
    _report(
        done.model_copy(update={**update, "summary": summary_line(action, len(done.done), whys)}),
        as_json,
    )


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
