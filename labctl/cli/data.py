"""`labctl log`, `labctl query`, `labctl show`: experiments in the `data` collection."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from labctl.access.lab import Query
from labctl.catalog import yamltext
from labctl.catalog.experiments import NewEntry, prepare_schema
from labctl.catalog.fields import (
    MANAGED_FIELDS,
    check_field_name,
    dataset_text,
    flatten,
    parse_assignments,
)
from labctl.catalog.query import result_columns
from labctl.cli import App, cli
from labctl.cli.output import columns_of, echo_csv, echo_document, echo_json, echo_table
from labctl.config import DataSchema
from labctl.errors import ValidationError


def read_entries_file(path: Path) -> list[NewEntry]:
    """A YAML file with one entry (a mapping with `dataset`) or a list of them."""
    try:
        loaded = yamltext.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError:
        raise ValidationError(f"{path} is not valid YAML") from None
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc}") from None
    items = loaded if isinstance(loaded, list) else [loaded]
    entries: list[NewEntry] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "dataset" not in item:
            raise ValidationError(f"{path}: entry {number} must be a mapping with a 'dataset' key")
        fields = dict(item)
        try:
            dataset = dataset_text(fields.pop("dataset"))
        except ValidationError as exc:
            raise ValidationError(f"{path}: entry {number}: {exc}") from None
        entries.append((dataset, flatten(fields)))
    return entries


def prompt_missing(fields: dict[str, Any], schema: DataSchema) -> None:
    """Ask for each required field that was not given."""
    for name in schema.required:
        if fields.get(name) in (None, ""):
            spec = schema.fields[name]
            fields[name] = click.prompt(f"{name} ({spec.help or spec.type})")


@cli.command("log")
@click.argument("dataset", required=False)
@click.option("--user", "user", help="Who acquired the data (field 'user').")
@click.option("--raw-path", help="Where the raw data lie (field 'data_raw_path').")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Any field, nested with dots (runclass.id=ARB). Repeatable.",
)
@click.option(
    "--from-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file with one entry or a list of entries.",
)
@click.option("--update", is_flag=True, help="Change existing entries instead of adding.")
@click.option("--json", "as_json", is_flag=True, help="Print what was stored as JSON.")
@click.pass_obj
def log_cmd(
    app: App,
    dataset: str | None,
    user: str | None,
    raw_path: str | None,
    assignments: tuple[str, ...],
    from_file: Path | None,
    update: bool,
    as_json: bool,
) -> None:
    """Add an experiment, keyed by its acquisition timestamp YYYYMMDD_HHMMSS."""
    if from_file and (dataset or user or raw_path or assignments):
        raise click.UsageError("--from-file cannot be combined with a dataset or field options")
    if from_file:
        entries = read_entries_file(from_file)
    elif dataset:
        fields: dict[str, Any] = dict(parse_assignments(assignments, "--set"))
        fields.update({k: v for k, v in (("user", user), ("data_raw_path", raw_path)) if v})
        if not update and sys.stdin.isatty():
            prompt_missing(fields, app.lab.schema())
        entries = [(dataset, fields)]
    else:
        raise click.UsageError("give a DATASET id or --from-file")
    stored = app.lab.log(entries, update=update)
    if as_json:
        echo_json(stored)
        return
    verb = "updated" if update else "logged"
    for doc in stored:
        echo_document(doc, title=f"{verb} {doc['dataset']}")


@cli.command("query")
@click.argument("fields", nargs=-1)
@click.option(
    "--where",
    "-w",
    "conditions",
    multiple=True,
    metavar="COND",
    help="FIELD=VALUE, != > >= < <=, FIELD~REGEX, 'FIELD in A,B'. Repeatable (AND).",
)
@click.option("--since", help="Acquired on or after this date (YYYY-MM-DD).")
@click.option("--until", help="Acquired on or before this date (YYYY-MM-DD).")
@click.option(
    "--sort",
    "sort_specs",
    multiple=True,
    metavar="FIELD",
    help="Sort by FIELD; -FIELD for descending. Repeatable.",
)
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
@click.pass_obj
def query_cmd(
    app: App,
    fields: tuple[str, ...],
    conditions: tuple[str, ...],
    since: str | None,
    until: str | None,
    sort_specs: tuple[str, ...],
    limit: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Find experiments and show the chosen FIELDS (all fields when none are named)."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    names = [check_field_name(f) for f in fields]
    docs = app.lab.query(Query(names, conditions, since, until, sort=sort_specs, limit=limit))
    if names:
        columns = result_columns(names)
    else:
        columns = columns_of(docs, ["dataset", *app.lab.schema().required])
    if as_json:
        echo_json(docs)
    elif as_csv:
        echo_csv(docs, columns)
    else:
        # At a narrow terminal, who changed an entry when gives way first, required fields last.
        audit = [c for c in columns if c in MANAGED_FIELDS[2:]]
        others = [c for c in columns[:0:-1] if c not in audit]
        echo_table(docs, columns, f"{len(docs)} experiment(s)", give_way=[*audit, *others])


@cli.command("show")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def show_cmd(app: App, dataset: str, as_json: bool) -> None:
    """Print one experiment whole."""
    doc = app.lab.show(dataset)
    if as_json:
        echo_json(doc)
    else:
        echo_document(doc, title=dataset)


@cli.group("db")
def db_group() -> None:
    """Database administration."""


@db_group.command("init")
@click.pass_obj
def db_init(app: App) -> None:
    """Create the indexes, the validator that enforces the required fields (MongoDB), and
    upgrade jobs stored by an older labctl.

    Run once by a database admin (the validator needs the dbAdmin role), and again after
    changing the required fields in the config.
    """
    from labctl.jobs.migrate import migrate  # the jobs' code: not for logging and querying

    app.db.ensure_indexes()
    prepare_schema(app.db, app.config)
    upgraded = migrate(app.db, app.config)
    required = ", ".join(["dataset", "acquired_at", *app.config.data.required])
    click.echo(
        f"{app.db.where}: indexes ready, {upgraded} job(s) upgraded; "
        f"data entries must have {required}"
    )


@db_group.command("migrate")
@click.pass_obj
def db_migrate(app: App) -> None:
    """Upgrade jobs stored by an older labctl to the current format (safe to rerun)."""
    from labctl.jobs.migrate import migrate

    upgraded = migrate(app.db, app.config)
    click.echo(f"{app.db.where}: {upgraded} job(s) upgraded to the current format")
