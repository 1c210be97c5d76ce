"""`labctl rerun`: a completed job queued again from its record, its outputs compared; how
`status` shows a rerun and its verdict."""

from __future__ import annotations

from typing import Any

import click

from labctl.cli import App, cli
from labctl.cli.output import echo_json
from labctl.model.job import Job


@cli.command("rerun")
@click.argument("job_id")
@click.option("--cluster", "compute_cluster", help="Run it there (default: where it ran).")
@click.option(
    "--allow-changed-inputs", is_flag=True, help="Run on inputs that changed since (noted)."
)
@click.option("--compare", is_flag=True, help="Once done, compare its outputs with the job's.")
@click.option(
    "--split", type=click.IntRange(min=0), help="Rerun only this task of a split job (an array)."
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=1e-6,
    show_default=True,
    help="Relative tolerance for HDF5 datasets whose file bytes differ.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rerun_cmd(app: App, /, job_id: str, as_json: bool, **asked: Any) -> None:
    """Queue a completed job again exactly as it was recorded: its pipelines commit, options,
    resources and inputs, each input checked against its recorded SHA-256 first."""
    from labctl.jobs.rerun import RerunRequest  # the submission code: not for listing jobs

    job = app.lab.rerun(job_id, RerunRequest(**asked))  # the options, as RerunRequest names them
    if as_json:
        echo_json(job.doc())
        return
    commit = str(job.pipelines.get("commit", ""))[:12]
    click.echo(
        f"queued {job.job_id}: rerun of {job_id} ({job.job_type} on {job.dataset} at "
        f"{job.compute_cluster}, pipelines @ {commit})"
        + ("; its outputs will be compared when it completes" if asked["compare"] else "")
    )


def reproduction_lines(job: Job) -> list[str]:
    """What the job reruns, and how its last compared rerun came out, file by file."""
    lines = []
    if job.rerun and not job.reproduction:
        waits = ", to compare once completed" if job.rerun.compare else ""
        lines.append(f"  rerun of: {job.rerun.job_id}{waits}")
    if job.reproduction:
        first, *files = job.reproduction.lines
        lines += [f"  reproduction: {first}", *(f"    {line}" for line in files)]
    return lines
