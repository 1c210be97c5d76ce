"""`labctl submit|queue|status|job-types|clusters`: analysis jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from labctl.catalog.fields import parse_assignments
from labctl.cli import App, cli
from labctl.cli.jobactions import FILTER_OPTIONS, F, with_options
from labctl.cli.output import cell, console, echo_document, echo_fitted, echo_json, rich_table
from labctl.cli.reproduce import reproduction_lines
from labctl.clock import age, utcnow
from labctl.config import ClusterConfig, Config
from labctl.config.jobtypes import JobType, JobTypes
from labctl.install.waiting import stale_after, watchdog_notes
from labctl.jobs.declarations import job_types_at
from labctl.jobs.overview import overview, state_label
from labctl.jobs.usage import describe
from labctl.model.job import Job, Transfer
from labctl.model.states import RETRYABLE


@cli.command("submit")
@click.argument("dataset")
@click.option("--cluster", "compute_cluster", required=True, help="Cluster name from the config.")
@click.option("--job-type", required=True, help="Job type (see labctl job-types).")
@click.option(
    "--datafile", "datafiles", multiple=True, help="Processed-data input file. Repeatable."
)
@click.option("--rawfile", "rawfiles", multiple=True, help="Raw-data input file. Repeatable.")
@click.option(
    "--option", "options", multiple=True, metavar="NAME=VALUE", help="Job option. Repeatable."
)
@click.option("--await-transfer", is_flag=True, help="Wait until the dataset is marked complete.")
@click.option("--dry-run", is_flag=True, help="Validate and print the batch script; queue nothing.")
@click.option("--force", is_flag=True, help="Queue even if an identical job is active.")
@click.option("--allow-dirty", is_flag=True, help="Run uncommitted pipelines/ code (recorded).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def submit_cmd(
    app: App,
    dataset: str,
    compute_cluster: str,
    job_type: str,
    datafiles: tuple[str, ...],
    rawfiles: tuple[str, ...],
    options: tuple[str, ...],
    await_transfer: bool,
    dry_run: bool,
    force: bool,
    allow_dirty: bool,
    as_json: bool,
) -> None:
    """Queue an analysis job on DATASET; the watchdog runs it on the cluster."""
    from labctl.jobs.submit import JobRequest  # the submission code: not for listing jobs

    request = JobRequest(
        dataset=dataset,
        compute_cluster=compute_cluster,
        job_type=job_type,
        datafiles=datafiles,
        datarawfiles=rawfiles,
        job_options=parse_assignments(options, "--option"),
        data_transfer_await=await_transfer,
        allow_dirty=allow_dirty,
    )
    if dry_run:
        click.echo(app.lab.batch_script(request), nl=False)
        return
    job = app.lab.submit(request, force=force)
    if as_json:
        echo_json(job.doc())
    else:
        click.echo(f"queued {job.job_id}: {job_type} on {dataset} at {compute_cluster}")


def progress_bar(transfer: Transfer | None, width: int = 12) -> str:
    """`███████░░░░░ 58% 114.8MB/s ETA 0:01:05` from a job's recorded transfer progress."""
    if transfer is None:
        return ""
    if transfer.total == 0 and transfer.percent >= 100:
        return "no inputs"
    percent = transfer.percent
    filled = round(width * percent / 100)
    eta = transfer.eta_seconds
    parts = ["█" * filled + "░" * (width - filled), f"{percent}%", transfer.rate or ""]
    if eta is not None and percent < 100:
        parts.append(f"ETA {dt.timedelta(seconds=int(eta))}")
    return " ".join(p for p in parts if p)


def _queue_options(command: F) -> F:
    limit = click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
    as_json = click.option("--json", "as_json", is_flag=True)
    return with_options(command, [*FILTER_OPTIONS, limit, as_json])


@cli.command("queue")
@_queue_options
@click.pass_obj
def queue_cmd(
    app: App,
    /,
    limit: int,
    as_json: bool,
    **filter: Any,  # FILTER_OPTIONS' values
) -> None:
    """List jobs with their state, transfer progress, scheduler id and age; a filter as
    `labctl retry|cancel` take it narrows them."""
    listed = app.lab.jobs(filter, limit=limit)
    watchdog = app.lab.heartbeats()
    jobs, beats = listed.items, watchdog.heartbeats
    damaged = [*listed.damaged, *watchdog.damaged]
    if as_json:
        shown = [record.model_dump() for record in damaged]
        echo_json({"jobs": [job.doc() for job in jobs], "heartbeats": beats, "damaged": shown})
        return
    now = utcnow()
    unmoved = watchdog_notes(jobs, beats, now, stale_after(app.config.watchdog.cron_minutes))
    rows = []
    for job in jobs:
        state = state_label(job.status, job.failure.reason if job.failure else None)
        for note in (job.waiting, unmoved.get(job.job_id)):
            state += f"\n{note}" if note else ""
        rows.append(
            [
                job.job_id,
                job.dataset,
                job.job_type,
                job.compute_cluster,
                job.user,
                state,
                progress_bar(job.transfer),
                job.scheduler_id or "",
                age(job.created_at, now),
            ]
        )
    echo_fitted(
        f"{len(jobs)} job(s)",
        ["job", "dataset", "type", "cluster", "user", "state", "transfer", "scheduler", "age"],
        rows,
        keys={"job", "dataset"},
        give_way=["scheduler", "user", "cluster", "transfer", "type", "age"],
        hint="use --json",
    )
    for record in damaged:
        click.echo(f"damaged {record.line}")
    if not beats:
        click.echo("watchdog: no run recorded yet (is its crontab installed?)")
    for beat in beats:
        did = ", ".join(f"{k} {v}" for k, v in beat.get("did", {}).items()) or "nothing"
        click.echo(
            f"watchdog {beat['stage']} on {beat['host']}: {age(beat['at'], now)} ago ({did})"
        )


HIDDEN_IN_STATUS = (
    "history",
    "batch_script",
    "options_key",
    "log_tail",
    "owner",
    "lease_until",
    "usage",  # summed up in one line; --json shows each task's
)


@cli.command("status")
@click.argument("job_id")
@click.option("--all", "show_all", is_flag=True, help="Every field, the history and the log tail.")
@click.option("--script", is_flag=True, help="Print the job's batch script instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status_cmd(app: App, job_id: str, show_all: bool, script: bool, as_json: bool) -> None:
    """One job: its state, why, what to do, how long in each state, and its results."""
    job = app.lab.job(job_id)
    if as_json:
        echo_json(job.doc())
    elif script:
        click.echo(job.batch_script or f"job {job_id} has no batch script yet", nl=False)
    else:
        (echo_whole_job if show_all else echo_overview)(job)
        max_age = stale_after(app.config.watchdog.cron_minutes)
        beats = app.lab.heartbeats().heartbeats
        for note in watchdog_notes([job], beats, utcnow(), max_age).values():
            click.echo(f"note: this job {note}")


TAIL_LINES = 5  # of the log tail under a failed job's overview


def echo_overview(job: Job) -> None:
    now = utcnow()
    seen = overview(job, now)
    lines = [
        f"job {job.job_id}: {seen.state}",
        f"  {job.job_type} on {job.dataset} at {job.compute_cluster}, by {job.user}",
        f"  why:      {seen.why}",
        f"  to do:    {seen.todo}",
        f"  created:  {cell(seen.created_at)} ({age(seen.created_at, now)} ago), "
        f"updated {age(seen.updated_at, now)} ago",
    ]
    if seen.time_in:
        lines.append("  time in:  " + ", ".join(f"{s} {t}" for s, t in seen.time_in.items()))
    if seen.results:
        names = ", ".join(r.name for r in seen.results)
        lines.append(f"  results:  {names} in {seen.result_dir}")
    if efficiency := describe(job.usage):
        lines.append(f"  efficiency: {efficiency}")
    lines += reproduction_lines(job)
    click.echo("\n".join(lines))
    tail = (job.log_tail or "").rstrip("\n").splitlines()[-TAIL_LINES:]
    if tail and job.status in RETRYABLE:
        click.echo(f"  log tail (last {len(tail)} lines):")
        click.echo("\n".join(f"    {line}" for line in tail))
    click.echo(f"more: labctl status {job.job_id} --all (or --json)")


def echo_whole_job(job: Job) -> None:
    """Every field, its efficiency, its history and its log tail."""
    doc = job.doc()
    if job.transfer:
        doc["transfer"].pop("argv", None)
    shown = {k: v for k, v in doc.items() if k not in HIDDEN_IN_STATUS and v not in (None, [], {})}
    echo_document(shown, title=f"job {job.job_id}")
    if efficiency := describe(job.usage):
        click.echo(f"efficiency: {efficiency}")
    table = rich_table(title="history", title_justify="left", header_style="bold")
    for name in ("at", "state", "note"):
        table.add_column(name)
    for item in job.history:
        table.add_row(cell(item.at), item.state, item.note)
    console().print(table)
    tail = job.log_tail
    if tail:
        console().rule("log tail", align="left")
        click.echo(tail)


@cli.command("job-types")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def job_types_cmd(app: App, as_json: bool) -> None:
    """List the job types offered: as pipelines/ declares them, adjusted by the config, with
    the resources a job gets on each cluster."""
    types = job_types_at(app.config)
    listed = types.listing()
    on = asks_per_cluster(app.config, types)
    if as_json:
        echo_json(
            {name: {**spec.model_dump(), "clusters": on[name]} for name, spec in listed.items()}
        )
        return
    pipelines = app.config.watchdog.pipelines
    table = rich_table(title=f"{len(listed)} job type(s) in {pipelines}", header_style="bold")
    for column in ("job type", "entry", "options (default)", "outputs", "resources"):
        table.add_column(column)
    for name, spec in listed.items():
        opts = [f"{o}: {s.type} ({s.default})" for o, s in spec.options.items()]
        if spec.splittable:
            opts.append("split_idx / num_splits: int")
        res = [
            f"{cluster}: " + ", ".join(f"{k}={v}" for k, v in asks["resources"].items())
            for cluster, asks in on[name].items()
        ]
        table.add_row(
            f"{name}\n{spec.help}",
            spec.entry,
            "\n".join(opts),
            "\n".join(spec.outputs),
            "\n".join(res),
        )
    console().print(table)


def asks_per_cluster(config: Config, types: JobTypes) -> dict[str, dict[str, Any]]:
    """For each job type and cluster, what a job asks for: its resources (over the cluster's
    defaults) and the limits up to which its options may ask for more."""
    on = {cluster: types.listing(cluster) for cluster in config.clusters}
    return {
        name: {cluster: _asks(on[cluster][name], config.clusters[cluster]) for cluster in on}
        for name in types.names()
    }


def _asks(spec: JobType, cluster: ClusterConfig) -> dict[str, Any]:
    limits = spec.max_resources
    return {
        "resources": spec.resources.over(cluster.resources).model_dump(exclude_none=True),
        "max_resources": limits.model_dump(exclude_none=True) if limits else None,
    }


@cli.command("clusters")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def clusters_cmd(app: App, as_json: bool) -> None:
    """List the configured clusters."""
    clusters = {name: c.model_dump(mode="json") for name, c in app.config.clusters.items()}
    if as_json:
        echo_json(clusters)
        return
    table = rich_table(title=f"{len(clusters)} cluster(s)", header_style="bold")
    for name in ("cluster", "type", "host", "user", "scratch", "scheduler"):
        table.add_column(name)
    for name, c in app.config.clusters.items():
        host = f"{c.host}:{c.port}" if c.host else "this machine"
        table.add_row(name, c.type, host, c.user or "", c.scratch, c.scheduler)
    console().print(table)
