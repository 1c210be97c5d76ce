"""The `labctl` command line: thin Click commands over the library, formatted with Rich.

Every error a user can cause reaches the terminal as one line on stderr and a non-zero exit code;
set LABCTL_DEBUG=1 to see the traceback of an unexpected error.

A command's module is imported when the command is run (or help lists it): `labctl submit`
loads neither the dashboard nor the setup code.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import click

from labctl.errors import ConfigError, LabctlError, redact

if TYPE_CHECKING:
    from labctl.access.lab import Lab
    from labctl.config import Config
    from labctl.db import Database


class Lazy(NamedTuple):
    """A command's module of labctl.cli (which registers it on `cli`), and its line in `labctl
    --help`: listing the commands imports none of them."""

    module: str
    summary: str


COMMANDS = {
    "cancel": Lazy("jobactions", "Cancel jobs and stop them on their clusters."),
    "clusters": Lazy("analysis", "List the configured clusters."),
    "connect": Lazy("connections", "Open CLUSTER's session on this terminal."),
    "connections": Lazy("connections", "Each cluster's session: up or down, until when."),
    "cron": Lazy("admin", "The watchdog's block in your crontab."),
    "db": Lazy("data", "Database administration."),
    "demo": Lazy("demo", "Log and query experiments, then run a job."),
    "disconnect": Lazy("connections", "Close CLUSTER's session."),
    "doctor": Lazy("admin", "Check the config, database, clusters, cron and mounts."),
    "job-types": Lazy("analysis", "List the job types offered, with their options."),
    "lineage": Lazy("datasets", "How DATASET's results were derived: files, jobs, outputs."),
    "log": Lazy("data", "Add an experiment, keyed by YYYYMMDD_HHMMSS."),
    "login": Lazy("accounts", "Log in to the labctl service at URL and keep its token."),
    "mount": Lazy("admin", "Mount CLUSTER's data_dir with sshfs."),
    "notify": Lazy("notifications", "How you hear of your jobs."),
    "provenance": Lazy("datasets", "Every result of DATASET: job, commit, options, checksums."),
    "query": Lazy("data", "Find experiments and show the chosen FIELDS."),
    "queue": Lazy("analysis", "List jobs with their state, progress and age."),
    "rerun": Lazy("reproduce", "Queue a completed job again as recorded; --compare its outputs."),
    "retry": Lazy("jobactions", "Queue failed or cancelled jobs again."),
    "setup": Lazy("admin", "Write your config, make an SSH key, install the crontab."),
    "show": Lazy("data", "Print one experiment whole."),
    "status": Lazy("analysis", "One job: its state, why, what to do, and its results."),
    "submit": Lazy("analysis", "Queue an analysis job on DATASET."),
    "timeline": Lazy("datasets", "Time to result for DATASET: where its jobs' time went."),
    "umount": Lazy("admin", "Unmount CLUSTER's mount_point."),
    "usage": Lazy("reports", "CPU-hours, wall-hours, queue wait and efficiency."),
    "user": Lazy("accounts", "Manage lab members (admin operations)."),
    "watchdog": Lazy("watchdog", "Run a watchdog stage (tick: scan, transfers, jobs)."),
    "web": Lazy("serve", "Serve the web dashboard and the REST API."),
    "whoami": Lazy("accounts", "Who labctl acts as, with which role, and through what."),
}


@dataclass
class App:
    """What every command shares: the config (read once), the lab's data (the service, or the
    database opened once)."""

    config_path: Path | None
    _config: Config | None = field(default=None, repr=False)
    _db: Database | None = field(default=None, repr=False)
    _lab: Lab | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from labctl.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def lab(self) -> Lab:
        """Where the member's commands go: the service if configured, else the database."""
        if self._lab is None:
            from labctl.access import open_lab

            self._lab = open_lab(self.config, lambda: self.db)
        return self._lab

    @property
    def db(self) -> Database:
        """The database itself, for what only its holder does (the watchdog, `db init`)."""
        if self._db is None:
            from labctl.config import EMBEDDED
            from labctl.db import connect

            service = self.config.service
            if service is not None and self.config.database.uri == EMBEDDED:
                raise ConfigError(
                    f"this command needs the database itself; this machine reaches the lab "
                    f"through {service.url}: run it where the database is (the lab server)"
                )
            self._db = connect(self.config.database)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, without passwords (an internal error may quote a URI), and exit."""
    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


class SuggestingGroup(click.Group):
    """A group that names the closest commands to one it does not have (`labctl quer`)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            ctx.fail(f"No such command {name!r}{hint}")
        return super().resolve_command(ctx, args)


class LabctlGroup(SuggestingGroup):
    """A group whose `main` turns every error into one line and an exit code, and whose commands
    are imported when first asked for (see COMMANDS)."""

    group_class = SuggestingGroup

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"labctl.cli.{COMMANDS[cmd_name].module}")
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands with their summaries (COMMANDS), none of them imported."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, lazy.summary) for name, lazy in sorted(COMMANDS.items())])

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except (click.exceptions.Abort, EOFError, KeyboardInterrupt):
            fail("aborted", 130)
        except click.ClickException as exc:
            where = exc.ctx if isinstance(exc, click.UsageError) else None
            hint = f" (see '{where.command_path} --help')" if where else ""
            fail(exc.format_message() + hint, exc.exit_code)
        except LabctlError as exc:
            fail(str(exc), exc.exit_code)
        except Exception as exc:
            if os.environ.get("LABCTL_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (LABCTL_DEBUG=1 shows more)", 70)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=LabctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: $LABCTL_CONFIG, then ~/.config/labctl/config.yaml).",
)
@click.version_option(package_name="labctl")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """labctl: the lab's experiment database and analysis jobs."""
    app = App(config_path)
    ctx.obj = app
    ctx.call_on_close(app.close)


def main() -> None:
    cli()


__all__ = ["COMMANDS", "App", "cli", "main"]
