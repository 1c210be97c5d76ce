"""`labctl setup|cron|mount|umount|doctor`: install labctl for one lab member and check it."""

from __future__ import annotations

import dataclasses
import getpass
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import click

from labctl.cli import App, cli
from labctl.cli.output import echo_json
from labctl.compute.mount import mount, mount_spec, umount
from labctl.compute.transport import LocalRunner
from labctl.config import EMBEDDED, ClusterConfig, Config, RawSettings
from labctl.config.notifyconfig import SMTP_PASSWORD_VAR
from labctl.errors import ConfigError, LabctlError, ValidationError, redact
from labctl.install import cron
from labctl.install.doctor import Check, run_checks
from labctl.install.onboarding import (
    Answers,
    ClusterAnswer,
    apply,
    authorized_keys_line,
    check_writable,
    config_file,
    key_comment,
    merge,
    read_settings,
    require_clusters,
    write_config,
)
from labctl.install.onboarding import create_key as create_key_pair

DEFAULT_KEY = "~/.ssh/id_ed25519"


def _per_cluster(items: Iterable[str], option: str) -> dict[str, str]:
    """`("raven=abc", ...)` -> `{"raven": "abc"}`."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValidationError(f"{option} {item!r} must look like CLUSTER=VALUE")
        found[name] = value
    return found


def _ask(interactive: bool, given: str | None, text: str, default: str | None) -> str | None:
    """The flag's value, else on a terminal the answer to a prompt (`default` None: an answer is
    required), else None: keep what the config has."""
    if given is not None or not interactive:
        return given
    shown = f"{text} [{redact(default)}]" if default else text  # a URI's password stays hidden
    return str(click.prompt(shown, default=default, show_default=False))


def _ask_password(interactive: bool, store: bool, uri: str) -> str | None:
    """A database password to keep in the 0600 config (cron has no other way to get it)."""
    if store:
        password = os.environ.get("LABCTL_DB_PASSWORD")
        if not password:
            raise ConfigError("--store-db-password takes the password from LABCTL_DB_PASSWORD")
        return password
    parts = urlsplit(uri) if uri != EMBEDDED else None
    if not interactive or parts is None or not parts.username or parts.password:
        return None
    answer = click.prompt(
        f"Database password of {parts.username} (kept in your 0600 config for cron; empty: none)",
        default="",
        hide_input=True,
        show_default=False,
    )
    return str(answer) or None


def _logs_in_with_key(cluster: RawSettings) -> bool:
    """An SSH cluster that the watchdog logs in to by itself (not password + one-time password)."""
    return cluster.get("type") != "local" and cluster.get("auth", "key") == "key"


def _ask_clusters(
    clusters: RawSettings, interactive: bool, users: dict[str, str], keys: dict[str, str]
) -> dict[str, ClusterAnswer]:
    """Each SSH cluster's HPC username, and private key where it logs in with one."""
    require_clusters(clusters, [*users, *keys])
    answers = {}
    for name, settings in sorted(clusters.items()):
        current = settings or {}
        if current.get("type") == "local":
            continue
        user = users.get(name)
        if not current.get("ssh_alias"):  # else ~/.ssh/config names the account
            user = _ask(interactive, user, f"HPC username on {name}", current.get("user"))
        if not _logs_in_with_key(current):
            answers[name] = ClusterAnswer(user, None)
            continue
        default_key = str(current.get("key_file") or DEFAULT_KEY)
        key = _ask(interactive, keys.get(name), f"SSH private key for {name}", default_key)
        path = Path(key).expanduser().absolute() if key else None
        answers[name] = ClusterAnswer(user, path)
    return answers


def _keys_to_create(settings: RawSettings, interactive: bool, create: bool) -> dict[str, Path]:
    """The missing keys of SSH clusters that may be created (--create-key, or yes on a terminal)."""
    wanted: dict[str, Path] = {}
    for name, cluster in (settings.get("clusters") or {}).items():
        if not _logs_in_with_key(cluster):
            continue
        path = Path(cluster.get("key_file") or DEFAULT_KEY).expanduser()
        if path.exists():
            continue
        ask = f"{path} (for {name}) does not exist. Create an ed25519 key pair?"
        if create or (interactive and click.confirm(ask, default=True)):
            wanted[name] = path
    return wanted


@cli.command("setup")
@click.option("--non-interactive", is_flag=True, help="Ask nothing: flags and the config only.")
@click.option(
    "--lab-config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The lab's shared settings (clusters, job types, data fields) to merge in.",
)
@click.option("--user", help="Your lab username.")
@click.option("--email", help="Your e-mail address.")
@click.option("--db-uri", help="MongoDB URI (mongodb://USER@HOST/...) or 'embedded'.")
@click.option(
    "--store-db-password",
    is_flag=True,
    help="Keep $LABCTL_DB_PASSWORD in the (0600) config, for cron.",
)
@click.option(
    "--store-smtp-password",
    is_flag=True,
    help="Keep $LABCTL_SMTP_PASSWORD in the (0600) config, for cron's notifications.",
)
@click.option("--hpc-user", multiple=True, metavar="CLUSTER=USER", help="Repeatable.")
@click.option("--key", multiple=True, metavar="CLUSTER=PATH", help="SSH private key. Repeatable.")
@click.option("--create-key", is_flag=True, help="Create missing keys (ed25519, no passphrase).")
@click.option("--verify/--no-verify", default=True, help="Log in to each cluster before writing.")
@click.option("--cron/--no-cron", "install_cron", default=True, help="Install the crontab block.")
@click.option("--mount/--no-mount", "do_mount", default=None, help="Mount configured sshfs dirs.")
@click.pass_obj
def setup_cmd(
    app: App,
    non_interactive: bool,
    lab_config: Path | None,
    user: str | None,
    email: str | None,
    db_uri: str | None,
    store_db_password: bool,
    store_smtp_password: bool,
    hpc_user: tuple[str, ...],
    key: tuple[str, ...],
    create_key: bool,
    verify: bool,
    install_cron: bool,
    do_mount: bool | None,
) -> None:
    """Write your config (0600), make an SSH key if needed, install the crontab block."""
    interactive = not non_interactive
    path = config_file(app.config_path)
    check_writable(path)
    if lab_config is not None and not lab_config.is_file():
        raise ConfigError(f"no lab config at {lab_config}")
    settings = merge(read_settings(path), read_settings(lab_config))
    user = _ask(interactive, user, "Lab username", settings.get("user") or getpass.getuser())
    email = _ask(interactive, email, "E-mail", settings.get("email", ""))
    password = None
    if not settings.get("service"):  # else the lab is reached through the service (labctl login)
        current_uri = (settings.get("database") or {}).get("uri", EMBEDDED)
        db_uri = _ask(interactive, db_uri, "MongoDB URI ('embedded': no server)", current_uri)
        password = _ask_password(interactive, store_db_password, db_uri or current_uri)
    elif db_uri is not None:
        raise ConfigError("this config reaches the lab through its service: it takes no --db-uri")
    clusters = _ask_clusters(
        settings.get("clusters") or {},
        interactive,
        _per_cluster(hpc_user, "--hpc-user"),
        _per_cluster(key, "--key"),
    )
    smtp_password = os.environ.get(SMTP_PASSWORD_VAR) if store_smtp_password else None
    if store_smtp_password and not smtp_password:
        raise ConfigError(f"--store-smtp-password takes the password from {SMTP_PASSWORD_VAR}")
    answered = Answers(user, email, db_uri, password, clusters, smtp_password=smtp_password)
    new_settings = apply(settings, answered)
    to_create = _keys_to_create(new_settings, interactive, create_key)
    lines = {}
    for name, key_path in to_create.items():
        if not key_path.exists():  # two clusters may share one key
            create_key_pair(key_path, key_comment(user or getpass.getuser()))
            click.echo(f"created {key_path} (ed25519, no passphrase: cron uses it unattended)")
        lines[name] = authorized_keys_line(key_path)
    clusters_set = new_settings.get("clusters") or {}
    keyed = [n for n, c in clusters_set.items() if _logs_in_with_key(c)]
    config = write_config(
        path,
        new_settings,
        verify_clusters=[n for n in keyed if n not in to_create] if verify else [],
        verify_database=verify,
        then=(lambda c: _install_cron(c, path)) if install_cron else None,
    )
    click.echo(f"wrote {path} (mode 0600)")
    for name, line in lines.items():
        c = config.clusters[name]
        click.echo(f"add this line to ~/.ssh/authorized_keys of {c.user} on {c.host} ({name}):")
        click.echo(f"  {line}")
    for name, cluster in config.clusters.items():
        if cluster.type == "ssh" and cluster.auth == "interactive":
            click.echo(
                f"{name} asks for a password and a one-time password: run 'labctl connect "
                f"{name}' to open its session; the watchdog waits for it"
            )
    _offer_mounts(config, interactive, do_mount)
    click.echo("next: run 'labctl doctor' to check everything")


def _install_cron(config: Config, path: Path) -> None:
    changed = cron.install(LocalRunner(), cron.CronSpec(config, path))
    click.echo("crontab: labctl block " + ("installed" if changed else "already up to date"))


def _offer_mounts(config: Config, interactive: bool, wanted: bool | None) -> None:
    """Mount what is configured if asked; a failed mount is a warning, setup is done."""
    if wanted is False or (wanted is None and not interactive):
        return
    for name, cluster in config.clusters.items():
        if cluster.mount_point is None:
            continue
        spec = mount_spec(name, cluster)
        if wanted or click.confirm(f"Mount {spec.source} at {spec.mount_point}?", default=True):
            try:
                _report_mount(spec.mount_point, mount(name, cluster))
            except LabctlError as exc:
                click.echo(f"warning: {exc}; try 'labctl mount {name}' later", err=True)


def _report_mount(where: Path, changed: bool) -> None:
    click.echo(f"mounted {where}" if changed else f"{where} is mounted already")


@cli.group("cron")
def cron_group() -> None:
    """The watchdog's block in your crontab."""


def _spec(app: App, python: Path | None) -> cron.CronSpec:
    spec = cron.CronSpec(app.config, config_file(app.config_path))
    return dataclasses.replace(spec, python=python) if python else spec


PYTHON = click.option(
    "--python",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The python cron runs (default: this labctl's).",
)


@cron_group.command("install")
@PYTHON
@click.pass_obj
def cron_install(app: App, python: Path | None) -> None:
    """Put the rendered block into your crontab (again: changes nothing)."""
    changed = cron.install(LocalRunner(), _spec(app, python))
    click.echo("installed the labctl block" if changed else "the labctl block is up to date")


@cron_group.command("show")
@PYTHON
@click.pass_obj
def cron_show(app: App, python: Path | None) -> None:
    """Print the block as installed (or as it would be installed)."""
    block = cron.installed_block(LocalRunner())
    if block is None:
        click.echo("# not installed; 'labctl cron install' would add:", err=True)
        block = _spec(app, python).block()
    click.echo(block, nl=False)


@cron_group.command("remove")
def cron_remove() -> None:
    """Take the labctl block out of your crontab, keeping every other line."""
    changed = cron.remove(LocalRunner())
    click.echo("removed the labctl block" if changed else "no labctl block to remove")


def _mounts(config: Config, name: str | None) -> dict[str, ClusterConfig]:
    """The named cluster, or every cluster with a mount_point."""
    if name is None:
        return {n: c for n, c in config.clusters.items() if c.mount_point is not None}
    require_clusters(config.clusters, [name])
    return {name: config.clusters[name]}


@cli.command("mount")
@click.argument("cluster", required=False)
@click.pass_obj
def mount_cmd(app: App, cluster: str | None) -> None:
    """Mount CLUSTER's data_dir at its mount_point with sshfs (default: every configured one)."""
    mounts = _mounts(app.config, cluster)
    if not mounts:
        raise ConfigError("no cluster has data_dir and mount_point in the config")
    for name, config in mounts.items():
        _report_mount(mount_spec(name, config).mount_point, mount(name, config))


@cli.command("umount")
@click.argument("cluster", required=False)
@click.pass_obj
def umount_cmd(app: App, cluster: str | None) -> None:
    """Unmount CLUSTER's mount_point (default: every configured one)."""
    mounts = _mounts(app.config, cluster)
    if not mounts:
        click.echo("no cluster has a mount_point: nothing to unmount")
    for name, config in mounts.items():
        where = mount_spec(name, config).mount_point
        click.echo(f"unmounted {where}" if umount(name, config) else f"{where} is not mounted")


def _line(check: Check) -> str:
    mark = click.style("✓", fg="green") if check.ok else click.style("✗", fg="red")
    text = f"{mark} {check.name}: {check.detail}"
    return text + (f"\n    fix: {check.hint}" if check.hint and not check.ok else "")


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True)
@click.option("--clean", is_flag=True, help="Remove what finished jobs left behind.")
@click.pass_context
def doctor_cmd(ctx: click.Context, as_json: bool, clean: bool) -> None:
    """Check the config, database, clusters, crontab, watchdog, mounts and leftovers of finished
    jobs; exit 1 if any fails."""
    checks = []
    for check in run_checks(ctx.obj.config_path, clean=clean):
        checks.append(check)
        if not as_json:
            click.echo(_line(check))
    ok = all(c.ok for c in checks)
    if as_json:
        echo_json({"ok": ok, "checks": [dataclasses.asdict(c) for c in checks]})
    if not ok:
        ctx.exit(1)
