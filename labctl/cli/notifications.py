"""`labctl notify set|show|test`: how a member hears of their jobs (`labctl.notify`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import click

from labctl.cli import App, cli
from labctl.cli.output import echo_json
from labctl.config.notifyconfig import MODES, Recipient, shown_url
from labctl.errors import LabctlError, NotFoundError
from labctl.notify.channels import send_test


class TestFailed(LabctlError):
    """A channel did not take the test message."""


@cli.group("notify")
def notify_group() -> None:
    """How you hear of your jobs: each job, a daily digest, or failures only."""


_USER = click.option("--user", "username", help="Another member (admins only); default: you.")


@notify_group.command("set")
@_USER
@click.option("--mode", type=click.Choice(MODES), help="each job, a daily digest, failures only.")
@click.option("--webhook", help="Your own incoming webhook URL (http/https).")
@click.option("--no-webhook", is_flag=True, help="Remove your own webhook.")
@click.pass_obj
def notify_set(
    app: App, username: str | None, mode: str | None, webhook: str | None, no_webhook: bool
) -> None:
    """Choose how you (or, for an admin, another member) are told of jobs."""
    if webhook is not None and no_webhook:
        raise click.UsageError("--webhook and --no-webhook exclude each other")
    if mode is None and webhook is None and not no_webhook:
        raise click.UsageError("say what to change: --mode, --webhook or --no-webhook")
    who = username or _me(app)
    with _known_member(who):
        app.lab.set_notify(who, mode, "" if no_webhook else webhook)
    click.echo(f"notifications of {who}: {app.lab.notify_of(who).mode}")


def _me(app: App) -> str:
    """Who you are to the lab: your token's owner through the service, else the config's user."""
    return app.lab.whoami().username


@contextmanager
def _known_member(username: str) -> Iterator[None]:
    """An unknown member's error says how to add them."""
    try:
        yield
    except NotFoundError as exc:
        raise NotFoundError(
            f"{exc} in the lab's store: an admin adds the member with 'labctl user add "
            f"{username} --email ADDRESS', or set 'user:' in your config to your lab username"
        ) from None


def _recipient(app: App, username: str | None) -> Recipient:
    """How the member (you, or for an admin USER) is told of jobs; your config's e-mail if the
    lab has none for you."""
    me = _me(app)
    with _known_member(username or me):
        found = app.lab.notify_of(username or me)
    mine = found.username == me
    return replace(found, email=found.email or (app.config.email if mine else ""))


@notify_group.command("show")
@_USER
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def notify_show(app: App, username: str | None, as_json: bool) -> None:
    """Where and how you (or USER) are told of jobs, and what the lab config sends through."""
    who = _recipient(app, username)
    smtp = app.config.notify.smtp
    shown = {
        "user": who.username,
        "mode": who.mode,
        "email": who.email or None,
        "webhook": shown_url(who.webhook) if who.webhook else None,
        "smtp": f"{smtp.host}:{smtp.port} ({smtp.security})" if smtp else None,
        "lab_webhook": shown_url(app.config.notify.webhook) if app.config.notify.webhook else None,
    }
    if as_json:
        echo_json(shown)
        return
    for name, value in shown.items():
        click.echo(f"{name}: {value if value is not None else '-'}")


@notify_group.command("test")
@_USER
@click.pass_obj
def notify_test(app: App, username: str | None) -> None:
    """Send a test message through every channel now, and say what each did."""
    who = _recipient(app, username)
    outcome = send_test(app.config.notify, who)
    if not outcome:
        raise TestFailed(
            f"nowhere to send to: {who.username} has no e-mail address with an SMTP server "
            "(notify.smtp) and no webhook"
        )
    for name, error in outcome:
        click.echo(f"{name}: {error or 'sent'}")
    failed = [name for name, error in outcome if error]
    if failed:
        raise TestFailed(f"the test message did not go through: {', '.join(failed)}")
