"""`labctl demo`: the main job end to end on a throw-away embedded store and this machine.

It logs three experiments, queries them, submits an analysis job to the `local` cluster (local
SLURM when it answers, else plain background processes) and runs the watchdog until the job's
results are home and verified.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import click

from labctl.cli import App, cli
from labctl.cli.analysis import queue_cmd, status_cmd, submit_cmd
from labctl.cli.data import log_cmd, query_cmd, show_cmd
from labctl.cli.output import console
from labctl.compute.transport import CommandTimeoutError, LocalRunner
from labctl.config import (
    ClusterConfig,
    Config,
    DatabaseConfig,
    WatchdogConfig,
    source_pipelines,
)
from labctl.jobs.codeversion import code_version
from labctl.jobs.queue import list_jobs, read_job
from labctl.model.states import TERMINAL, JobState
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.seam import LocalStore

EXPERIMENTS = [
    ("20211215_093527", "charlie", {"runclass.id": "ARB-diff", "n_planes": "12"}),
    ("20211215_141002", "charlie", {"runclass.id": "ARB-diff", "n_planes": "8"}),
    ("20220103_110045", "dana", {"runclass.id": "spontaneous", "n_planes": "20"}),
]
RAW_FILES = {"fl_a.roli": 3_000_000, "fl_b.roli": 2_000_000}
EXAMPLE = Path(__file__).resolve().parent.parent / "install" / "example" / "pipelines"
"""The few files of the lab's pipelines/ the demo's job runs (file_stats), shipped in the package
for a labctl installed without a checkout of the lab's repository."""


def _step(ctx: click.Context, command: click.Command, shown: str, **params: Any) -> None:
    console().rule(f"[bold]$ labctl {shown}", align="left")
    ctx.invoke(command, **params)


def local_slurm_answers() -> bool:
    """True when `sinfo` on this machine reaches a SLURM controller."""
    if shutil.which("sbatch") is None:
        return False
    try:
        done = LocalRunner().run(["sinfo", "-h"], check=False, timeout=5)
    except CommandTimeoutError:
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def demo_config(root: Path, pipelines: Path | None = None) -> Config:
    scheduler: Literal["slurm", "process"] = "slurm" if local_slurm_answers() else "process"
    return Config(
        user="charlie",
        database=DatabaseConfig(path=root / "db"),
        clusters={
            "local": ClusterConfig(
                type="local",
                scratch=str(root / "scratch"),
                scheduler=scheduler,
                accounting="jobcomp",
            )
        },
        watchdog=WatchdogConfig(
            state_dir=root / "watchdog", backoff_seconds=1, pipelines_dir=pipelines
        ),
    )


def example_checkout(root: Path) -> Path:
    """A git repository under `root` holding the example pipelines (made once)."""
    repo = root / "example-pipelines"
    if not (repo / ".git").is_dir():
        shutil.copytree(EXAMPLE, repo / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
        git = ["git", "-C", str(repo), "-c", "user.name=labctl demo", "-c", "user.email=demo@lab"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "example pipelines"]):
            LocalRunner().run([*git, *args], timeout=60)
    return repo / "pipelines"


def make_raw_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in RAW_FILES.items():
        (folder / name).write_bytes(os.urandom(size))


@cli.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo's store and data here (default: a temporary directory).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120,
    show_default=True,
    help="Give up waiting for the job after this many seconds.",
)
@click.option(
    "--pipelines",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The lab's pipelines/ checkout (default: the one beside labctl's own source, else the "
    "example labctl ships).",
)
@click.pass_context
def demo_cmd(
    ctx: click.Context, directory: Path | None, timeout: float, pipelines: Path | None
) -> None:
    """Log and query experiments, then run an analysis job through the watchdog."""
    with tempfile.TemporaryDirectory(prefix="labctl-demo-") as tmp:
        root = (directory or Path(tmp)).resolve()
        if pipelines is None and source_pipelines() is None:
            click.echo("no checkout of the lab's repository: the demo runs labctl's example")
            click.echo("pipelines (file_stats alone); --pipelines names the lab's pipelines/")
            pipelines = example_checkout(root)
        config = demo_config(root, pipelines and pipelines.resolve())
        checkout = config.watchdog.pipelines  # a clear error now, not half-way
        app = App(None, _config=config)
        ctx.obj = app
        ctx.call_on_close(app.close)
        scheduler = config.clusters["local"].scheduler
        click.echo(
            f"labctl demo in {root} (embedded store; local cluster runs jobs with {scheduler})"
        )
        for dataset, user, fields in EXPERIMENTS:
            raw = root / "data" / dataset / "raw"
            make_raw_data(raw)
            sets = tuple(f"{k}={v}" for k, v in fields.items())
            shown = f"log {dataset} --user {user} --raw-path {raw} " + " ".join(
                f"--set {s}" for s in sets
            )
            _step(
                ctx, log_cmd, shown, dataset=dataset, user=user, raw_path=str(raw), assignments=sets
            )
        _step(
            ctx,
            query_cmd,
            "query data_raw_path runclass.id --where user=charlie",
            fields=("data_raw_path", "runclass.id"),
            conditions=("user=charlie",),
        )
        _step(
            ctx,
            query_cmd,
            "query user n_planes --where 'n_planes>=10' --sort -n_planes",
            fields=("user", "n_planes"),
            conditions=("n_planes>=10",),
            sort_specs=("-n_planes",),
        )
        dataset = EXPERIMENTS[0][0]
        dirty = code_version(checkout, allow_dirty=True)["dirty"]
        if dirty:
            click.echo("note: pipelines/ has uncommitted changes; the demo job records them")
        rawfiles = tuple(RAW_FILES)
        _step(
            ctx,
            submit_cmd,
            f"submit {dataset} --cluster local --job-type file_stats "
            + " ".join(f"--rawfile {f}" for f in rawfiles)
            + (" --allow-dirty" if dirty else ""),
            dataset=dataset,
            compute_cluster="local",
            job_type="file_stats",
            rawfiles=rawfiles,
            allow_dirty=dirty,
        )
        job_id = list_jobs(app.db, limit=1).items[0].job_id
        console().rule("[bold]$ labctl watchdog tick   (cron runs this every minute)", align="left")
        state = watch(app, job_id, timeout)
        _step(ctx, queue_cmd, "queue", limit=10)
        _step(ctx, status_cmd, f"status {job_id}", job_id=job_id)
        _step(ctx, show_cmd, f"show {dataset}", dataset=dataset)
        if state is not JobState.COMPLETED:
            raise click.ClickException(f"the demo job ended {state}; see 'labctl status' above")
        click.echo(
            f"demo finished: 3 experiments logged and queried, job {job_id} completed "
            "with verified results"
        )


def watch(app: App, job_id: str, timeout: float) -> JobState:
    """Run watchdog ticks until the job reaches a final state; print each state change."""
    deadline = time.monotonic() + timeout
    last: JobState | None = None
    while True:
        run_stages(LocalStore.of(app.db, app.config), app.config, ["scan", "transfers", "jobs"])
        state = read_job(app.db, job_id).status
        if state != last:
            click.echo(f"  job {job_id}: {state}")
            last = state
        if state in TERMINAL or time.monotonic() > deadline:
            return state
        reap_children()
        time.sleep(0.5)
