"""`labctl demo`: the main job end to end on a throw-away embedded store."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from labctl.cli import App, cli
from labctl.cli.data import log_cmd, query_cmd, show_cmd
from labctl.cli.output import console
from labctl.config import Config, DatabaseConfig

EXPERIMENTS = [
    (
        "20211215_093527",
        "charlie",
        {"runclass.id": "ARB-diff", "n_planes": "12", "fish.age_dpf": "6"},
    ),
    (
        "20211215_141002",
        "charlie",
        {"runclass.id": "ARB-diff", "n_planes": "8", "fish.age_dpf": "6"},
    ),
    (
        "20220103_110045",
        "dana",
        {"runclass.id": "spontaneous", "n_planes": "20", "fish.age_dpf": "7"},
    ),
]


def _step(ctx: click.Context, command: click.Command, shown: str, **params: Any) -> None:
    console().rule(f"[bold]$ labctl {shown}", align="left")
    ctx.invoke(command, **params)


@cli.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo store here (default: a temporary directory, removed after).",
)
@click.pass_context
def demo_cmd(ctx: click.Context, directory: Path | None) -> None:
    """Log a few experiments into a fresh embedded store and query them."""
    with tempfile.TemporaryDirectory(prefix="labctl-demo-") as tmp:
        root = directory or Path(tmp)
        config = Config(user="demo", database=DatabaseConfig(path=root / "db"))
        ctx.obj = App(None, _config=config)
        ctx.call_on_close(ctx.obj.close)
        click.echo(f"labctl demo: embedded store at {root / 'db'}")
        for dataset, user, fields in EXPERIMENTS:
            raw = f"/nfs/lab/{user}/{dataset}"
            sets = tuple(f"{k}={v}" for k, v in fields.items())
            shown = f"log {dataset} --user {user} --raw-path {raw} " + " ".join(
                f"--set {s}" for s in sets
            )
            _step(ctx, log_cmd, shown, dataset=dataset, user=user, raw_path=raw, assignments=sets)
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
        _step(ctx, show_cmd, f"show {EXPERIMENTS[0][0]}", dataset=EXPERIMENTS[0][0])
        click.echo("demo finished: 3 experiments logged and queried")
