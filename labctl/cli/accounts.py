"""`labctl user ...`: lab members, their roles, HPC accounts and web passwords."""

from __future__ import annotations

import os
from pathlib import Path

import click
import yaml
from pydantic import ValidationError as PydanticValidationError

from labctl.access.lab import NewUser
from labctl.catalog.fields import parse_assignments
from labctl.cli import App, cli
from labctl.cli.output import echo_json, echo_table
from labctl.config import default_config_path
from labctl.errors import ValidationError
from labctl.private import private_dir, write_private
from labctl.settings import ServiceConfig, describe
from labctl.users import MAX_TOKEN_DAYS, ROLES


def ask_password() -> str:
    """Prompted, hidden and confirmed: a password never appears on the command line."""
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@cli.group("user")
def user_group() -> None:
    """Manage lab members (admin operations)."""


@user_group.command("add")
@click.argument("username")
@click.option("--name", "full_name", default="", help="Full name.")
@click.option("--email", default="", help="E-mail address.")
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@click.option(
    "--hpc",
    "hpc",
    multiple=True,
    metavar="CLUSTER=ACCOUNT",
    help="HPC account on a cluster, e.g. raven=abc123. Repeatable.",
)
@click.option(
    "--password/--no-password",
    "with_password",
    default=True,
    help="Ask for a web login password (default) or add the user without one.",
)
@click.pass_obj
def user_add(
    app: App,
    username: str,
    full_name: str,
    email: str,
    role: str,
    hpc: tuple[str, ...],
    with_password: bool,
) -> None:
    """Add a lab member; asks for their web password."""
    accounts = parse_assignments(hpc, "--hpc")
    password = ask_password() if with_password else None
    user = app.lab.add_user(NewUser(username, full_name, email, role, accounts, password))
    click.echo(f"added {user.username} ({user.role})")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def user_list(app: App, as_json: bool) -> None:
    """List lab members (never their password hashes)."""
    users = [user.model_dump(exclude_unset=True) for user in app.lab.users()]
    if as_json:
        echo_json(users)
    else:
        echo_table(users, ["username", "full_name", "email", "role", "hpc_accounts"])


@user_group.command("passwd")
@click.argument("username")
@click.pass_obj
def user_passwd(app: App, username: str) -> None:
    """Set a member's web password (prompted); yours through the service asks for your current
    one first."""
    app.lab.user(username)
    mine = app.config.service is not None and app.lab.whoami().username == username
    current = str(click.prompt("Current password", hide_input=True)) if mine else None
    app.lab.set_password(username, ask_password(), current)
    click.echo(f"password of {username} changed")


@user_group.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
@click.pass_obj
def user_set_role(app: App, username: str, role: str) -> None:
    """Make a member an admin or a member."""
    app.lab.set_role(username, role)
    click.echo(f"{username} is now {role}")


DAYS = click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True, max=MAX_TOKEN_DAYS),
    help="The token expires after this many days (default: when replaced).",
)


@user_group.command("token")
@click.argument("username")
@DAYS
@click.pass_obj
def user_token(app: App, username: str, days: float | None) -> None:
    """Create an API token for USERNAME, replacing any earlier one; it is shown only once."""
    click.echo(app.lab.new_token(username, days))
    click.echo(
        "keep it now: only its hash is stored; use it as 'Authorization: Bearer TOKEN'", err=True
    )


@cli.command("whoami")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def whoami_cmd(app: App, as_json: bool) -> None:
    """Who labctl acts as, with which role, and through what (the service or a database)."""
    me = app.lab.whoami()
    if as_json:
        echo_json(me.model_dump())
    else:
        click.echo(f"{me.username} ({me.role}) via {me.via}")


@cli.command("login")
@click.argument("url")
@click.option("--username", help="Your lab username (asked for if not given).")
@click.option(
    "--token", "paste", is_flag=True, help="Paste a token an admin gave you instead of logging in."
)
@DAYS
@click.pass_obj
def login_cmd(app: App, url: str, username: str | None, paste: bool, days: float | None) -> None:
    """Log in to the labctl service at URL and keep its token for the CLI and the Python API.

    With your password, the service makes a new token (replacing your earlier one, on any
    machine). The token is kept in a file only you may read (service.token_file)."""
    from labctl.access.service import TOKEN, ServiceLab, obtain_token

    service = service_at(app, url)
    if paste:
        token = str(click.prompt("Token", hide_input=True)).strip()
        if not TOKEN.fullmatch(token):
            raise ValidationError("that is not a labctl API token (lct_...)")
    else:
        name = username or str(click.prompt("Username"))
        token = obtain_token(service, name, str(click.prompt("Password", hide_input=True)), days)
    lab = ServiceLab(service, token)
    me = lab.whoami()  # the token works, and is the member's
    private_dir(service.token_file.parent)
    write_private(service.token_file, token + "\n")
    click.echo(
        f"logged in to {service.url} as {me.username} ({me.role}); "
        f"token kept in {service.token_file}"
    )
    if app.config.service is not None and app.config.service.url == service.url:
        return
    path = app.config_path or Path(os.environ.get("LABCTL_CONFIG") or default_config_path())
    if path.exists():
        click.echo(f"add to {path}:\nservice:\n  url: {service.url}", err=True)
    else:
        private_dir(path.parent)
        write_private(path, yaml.safe_dump({"service": {"url": service.url}}))
        click.echo(f"wrote {path}: labctl now goes through {service.url}")


def service_at(app: App, url: str) -> ServiceConfig:
    """The service at `url`, with the configured token file (else the default one)."""
    known = {"token_file": app.config.service.token_file} if app.config.service else {}
    try:
        return ServiceConfig.model_validate({"url": url, **known})
    except PydanticValidationError as exc:
        raise ValidationError(f"URL: {describe(exc)}") from None
