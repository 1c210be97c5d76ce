"""`labctl provenance|timeline|lineage`: what became of a dataset: each result's record, where its
jobs' time and bytes went, and how its results were derived."""

from __future__ import annotations

import click

from labctl.cli import App, cli
from labctl.cli.output import cell, console, echo_json, rich_table
from labctl.clock import utcnow
from labctl.jobs.lineage import Lineage
from labctl.jobs.provenance import provenance
from labctl.jobs.timeline import PHASES, DatasetTimeline, bytes_text, clock_text
from labctl.model.reproduction import Reproduction


@cli.command("timeline")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def timeline_cmd(app: App, dataset: str, as_json: bool) -> None:
    """Time to result for DATASET: each job's time queued, sending its inputs, waiting in the
    scheduler, computing and bringing results home, the bytes each way, and the totals."""
    found = app.lab.jobs({"dataset": dataset}, limit=1000)
    seen = DatasetTimeline.of(dataset, found.items, utcnow())
    if as_json:
        echo_json(
            {
                "dataset": dataset,
                "span_seconds": seen.span,
                "phases_seconds": seen.phases,
                "bytes_out": seen.bytes_out,
                "bytes_home": seen.bytes_home,
                "jobs": [{**vars(job), "rate_out_bytes_per_s": job.rate_out} for job in seen.jobs],
            }
        )
        return
    for damaged in found.damaged:
        click.echo(f"damaged {damaged.line}")
    if not seen.jobs:
        click.echo(f"no job for {dataset} yet")
        return
    table = rich_table(title=f"time to result for {dataset}", title_justify="left")
    for name in ("job", "type", "state", *PHASES, "sent", "home"):
        table.add_column(name, justify="right" if name in (*PHASES, "sent", "home") else "left")
    for job in seen.jobs:
        rate = f" at {bytes_text(job.rate_out)}/s" if job.rate_out else ""
        table.add_row(
            job.job_id,
            f"{job.job_type} @ {job.cluster}",
            str(job.status),
            *(clock_text(job.phases[phase]) for phase in PHASES),
            bytes_text(job.bytes_out) + rate,
            bytes_text(job.bytes_home),
        )
    console().print(table)
    busy = ", ".join(f"{phase} {clock_text(seen.phases[phase])}" for phase in PHASES)
    still = any(job.end is None for job in seen.jobs)
    click.echo(
        f"{len(seen.jobs)} job(s) over {clock_text(seen.span)}"
        + (" so far" if still else "")
        + f"; sent {bytes_text(seen.bytes_out)}, brought home {bytes_text(seen.bytes_home)}"
    )
    click.echo(f"summed over the jobs: {busy}")


@cli.command("lineage")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True)
@click.option("--dot", "as_dot", is_flag=True, help="Graphviz DOT (e.g. | dot -Tsvg > l.svg).")
@click.pass_obj
def lineage_cmd(app: App, dataset: str, as_json: bool, as_dot: bool) -> None:
    """How DATASET's results were derived: its files, the jobs that read them, what they wrote,
    and the jobs that read that in turn."""
    found = app.lab.jobs({"dataset": dataset}, limit=1000)
    seen = Lineage.of(dataset, found.items)
    if as_json:
        echo_json(seen.as_json())
        return
    if as_dot:
        click.echo(seen.dot(), nl=False)
        return
    for damaged in found.damaged:
        click.echo(f"damaged {damaged.line}")
    if not seen.nodes:
        click.echo(f"no job for {dataset} yet")
        return
    for line in seen.tree():
        click.echo(line)


@cli.command("provenance")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def provenance_cmd(app: App, dataset: str, as_json: bool) -> None:
    """Every result of DATASET: its job, code commit, options, input and output checksums."""
    found = provenance(app.db, dataset)
    records = found.items
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo(f"no completed job for {dataset} yet")
    for damaged in found.damaged:
        click.echo(f"damaged {damaged.line}")
    for record in records:
        code = record["pipelines"] or {}
        dirty = f" + uncommitted changes {code['diff_sha256'][:12]}" if code.get("dirty") else ""
        table = rich_table(
            title=f"{record['job_id']}: {record['job_type']} by {record['user']} on "
            f"{record['cluster']}, completed {cell(record['completed_at'])}",
            title_justify="left",
            header_style="bold",
        )
        for name in ("", "file", "size", "sha256"):
            table.add_column(name)
        table.add_row("code", f"pipelines @ {code.get('commit', 'unknown')}{dirty}", "", "")
        table.add_row("options", cell(record["options"]), "", "")
        if record["rerun_of"]:
            table.add_row("rerun of", record["rerun_of"], "", "")
        if record["reproduction"]:
            verdict = Reproduction.model_validate(record["reproduction"]).lines
            for at, line in enumerate(verdict):
                table.add_row("" if at else "reproduced", line, "", "")
        for kind in ("inputs", "outputs"):
            for item in record[kind]:
                table.add_row(
                    kind[:-1], item.get("path") or item["name"], str(item["size"]), item["sha256"]
                )
        console().print(table)
