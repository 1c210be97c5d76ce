"""`labctl connect|disconnect|connections`: the SSH session of each cluster."""

from __future__ import annotations

import datetime as dt

import click

from labctl.cli import App, cli
from labctl.cli.output import cell, console, echo_json, rich_table
from labctl.compute.cluster import ssh_target
from labctl.compute.transport import Session, Sessions, SSHTarget
from labctl.config import Config
from labctl.errors import ValidationError


def _target(config: Config, name: str) -> SSHTarget:
    cluster = config.clusters.get(name)
    if cluster is None:
        listed = ", ".join(sorted(config.clusters)) or "none"
        raise ValidationError(f"unknown cluster {name!r} (configured: {listed})")
    target = ssh_target(name, cluster)
    if target is None:
        raise ValidationError(f"cluster {name} is this machine: it needs no session")
    return target


def _lifetime(session: Session) -> str:
    if session.until is None:
        return ""
    left = session.until - dt.datetime.now(dt.UTC)
    hours = max(0, int(left.total_seconds() // 3600))
    return f"until {session.until:%Y-%m-%d %H:%M} UTC ({hours // 24} d {hours % 24} h)"


def _has_terminal() -> bool:
    try:
        open("/dev/tty").close()  # only whether it opens
    except OSError:
        return False
    return True


@cli.command("connect")
@click.argument("cluster")
@click.option(
    "--accept-host-key",
    is_flag=True,
    help="Let ssh show an unknown host key's fingerprint and ask whether to trust it.",
)
@click.pass_obj
def connect_cmd(app: App, cluster: str, accept_host_key: bool) -> None:
    """Open CLUSTER's session on this terminal; ssh asks for your password and one-time password.

    The watchdog then uses the session without ever prompting, until it expires."""
    target = _target(app.config, cluster)
    sessions = Sessions()
    current = sessions.status(target)
    if current.up:
        click.echo(f"the session to {cluster} is already open, {_lifetime(current)}")
        return
    if target.auth == "interactive" and not _has_terminal():
        raise ValidationError(f"labctl connect {cluster} needs a terminal for ssh's prompts")
    via = f" through {target.via}" if target.via else ""
    click.echo(f"opening a session to {cluster}{via}; answer ssh's prompts", err=True)
    session = sessions.connect(target, accept_host_key=accept_host_key)
    click.echo(f"connected to {cluster}{via}: the session stays open {_lifetime(session)}")


@cli.command("disconnect")
@click.argument("cluster")
@click.pass_obj
def disconnect_cmd(app: App, cluster: str) -> None:
    """Close CLUSTER's session."""
    if Sessions().close(_target(app.config, cluster)):
        click.echo(f"closed the session to {cluster}")
    else:
        click.echo(f"no session to {cluster} was open")


@cli.command("connections")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_cmd(app: App, as_json: bool) -> None:
    """Each cluster's session: up or down, since and until when, through which gateway."""
    sessions = Sessions()
    found = [
        sessions.status(target)
        for name, cluster in app.config.clusters.items()
        if (target := ssh_target(name, cluster)) is not None
    ]
    if as_json:
        echo_json([session.as_dict() for session in found])
        return
    table = rich_table(title=f"{len(found)} cluster session(s)", header_style="bold")
    for column in ("cluster", "session", "since", "until", "via", "auth"):
        table.add_column(column)
    for s in found:
        state = "up" if s.up else f"down: {s.detail}; run `labctl connect {s.cluster}`"
        table.add_row(s.cluster, state, cell(s.since), cell(s.until), s.via or "direct", s.auth)
    console().print(table)
