"""Formatting for the terminal: Rich tables, JSON and CSV. Only the CLI imports this; Rich is
loaded when something is printed with it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from labctl.catalog.fields import flatten, get_dotted

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def console() -> Console:
    """Rich output; when piped or captured, wide enough that no value is cut short."""
    from rich.console import Console

    terminal = Console(soft_wrap=False)
    return terminal if terminal.is_terminal else Console(soft_wrap=False, width=250)


def rich_table(**options: Any) -> Table:
    """A Rich table (`title=`, `header_style=`, ...) to fill and print on `console()`."""
    from rich.table import Table

    return Table(**options)


def plain(value: Any) -> Any:
    """A value as JSON can carry it (date-times as ISO 8601)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (Mapping, list)):
        return json.dumps(plain(value))
    return str(value)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(plain(value), indent=2))


def rows_of(docs: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    return [[get_dotted(doc, col) for col in columns] for doc in docs]


def echo_table(
    docs: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None
) -> None:
    """A Rich table with a row number and the given dotted columns."""
    table = rich_table(title=title, header_style="bold")
    table.add_column("#", justify="right", style="dim")
    for col in columns:
        table.add_column(col)
    for number, row in enumerate(rows_of(docs, columns), start=1):
        table.add_row(str(number), *(cell(v) for v in row))
    console().print(table)


def echo_csv(docs: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[cell(v) for v in row] for row in rows_of(docs, columns)])
    click.echo(out.getvalue(), nl=False)


def echo_document(doc: Mapping[str, Any], title: str) -> None:
    """One document whole: a two-column table of its dotted fields."""
    table = rich_table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for name, value in flatten(doc).items():
        table.add_row(name, cell(value))
    console().print(table)


def columns_of(docs: Sequence[Mapping[str, Any]], first: Sequence[str]) -> list[str]:
    """`first`, then every other dotted field found in `docs`, in order of appearance."""
    seen = dict.fromkeys(first)
    for doc in docs:
        seen.update(dict.fromkeys(flatten(doc)))
    return list(seen)
