"""`labctl user ...`: lab members, their roles, HPC accounts and web passwords."""

from __future__ import annotations

import click

from labctl.catalog.fields import parse_assignments
from labctl.cli import App, cli
from labctl.cli.output import echo_json, echo_table
from labctl.users import ROLES, add_user, create_token, get_user, list_users, set_password, set_role


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
    user = add_user(
        app.db,
        username,
        full_name=full_name,
        email=email,
        role=role,
        hpc_accounts=accounts,
        password=password,
    )
    click.echo(f"added {user['username']} ({user['role']})")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def user_list(app: App, as_json: bool) -> None:
    """List lab members (never their password hashes)."""
    users = list_users(app.db)
    if as_json:
        echo_json(users)
    else:
        echo_table(users, ["username", "full_name", "email", "role", "hpc_accounts"])


@user_group.command("passwd")
@click.argument("username")
@click.pass_obj
def user_passwd(app: App, username: str) -> None:
    """Set a member's web password (prompted)."""
    get_user(app.db, username)
    set_password(app.db, username, ask_password())
    click.echo(f"password of {username} changed")


@user_group.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
@click.pass_obj
def user_set_role(app: App, username: str, role: str) -> None:
    """Make a member an admin or a member."""
    set_role(app.db, username, role)
    click.echo(f"{username} is now {role}")


@user_group.command("token")
@click.argument("username")
@click.pass_obj
def user_token(app: App, username: str) -> None:
    """Create an API token for USERNAME, replacing any earlier one; it is shown only once."""
    click.echo(create_token(app.db, username))
    click.echo(
        "keep it now: only its hash is stored; use it as 'Authorization: Bearer TOKEN'", err=True
    )
