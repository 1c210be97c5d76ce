"""`labctl usage`: where the compute time went, per user, job type, cluster or month."""

from __future__ import annotations

from typing import Any

import click

from labctl.cli import App, cli
from labctl.cli.output import console, echo_csv, echo_json, rich_table
from labctl.jobs.usage import GROUPINGS, UsageGroup, clock, percent, unaccounted

FIGURES = [
    "jobs",
    "tasks",
    "cpu_hours",
    "wall_hours",
    "median_wait_s",
    "cpu_efficiency",
    "memory_efficiency",
]
HEADINGS = ["jobs", "tasks", "CPU-hours", "wall-hours", "median wait", "CPU eff.", "memory eff."]


@cli.command("usage")
@click.option(
    "--by",
    "by",
    multiple=True,
    type=click.Choice(list(GROUPINGS)),
    help="Group by this (default: user); repeat to group by several, e.g. month and user.",
)
@click.option("--since", help="Only tasks that ended on or after this date (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.pass_obj
def usage_cmd(
    app: App, by: tuple[str, ...], since: str | None, as_json: bool, as_csv: bool
) -> None:
    """CPU-hours (cores x elapsed), wall-hours, median queue wait, and CPU and memory
    efficiency (as seff reports them) of the finished jobs' tasks."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are exclusive")
    report = app.lab.usage(by, since)
    keys = [GROUPINGS[name] for name in report.by]
    if as_json:
        echo_json(report.model_dump(exclude_unset=True))
        return
    if as_csv:
        echo_csv([_rounded(group) for group in report.groups], [*keys, *FIGURES])
    else:
        since_text = f" since {since}" if since else ""
        table = rich_table(title=f"usage{since_text}", header_style="bold")
        for name in report.by:
            table.add_column(name)
        for heading in HEADINGS:
            table.add_column(heading, justify="right")
        for group in report.groups:
            table.add_row(*(getattr(group, key) for key in keys), *_shown(group))
        console().print(table)
        if not report.groups:
            why = unaccounted(app.config)
            click.echo(f"no finished task recorded{since_text}{': ' + why if why else ''}")
    for damaged in report.damaged:  # on stderr beside the CSV
        click.echo(f"damaged {damaged.line}: not counted", err=as_csv)


def _rounded(group: UsageGroup) -> dict[str, Any]:
    shown = group.model_dump(exclude_unset=True)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()}


def _shown(group: UsageGroup) -> list[str]:
    wait = group.median_wait_s
    return [
        str(group.jobs),
        str(group.tasks),
        f"{group.cpu_hours:.1f}",
        f"{group.wall_hours:.1f}",
        "unknown" if wait is None else clock(wait),
        _share(group.cpu_efficiency),
        _share(group.memory_efficiency),
    ]


def _share(value: float | None) -> str:
    return "unknown" if value is None else percent(value)
