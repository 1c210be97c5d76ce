"""Formatting for the terminal: Rich tables, JSON and CSV. Only the CLI imports this; Rich is
loaded when something is printed with it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import textwrap
from collections.abc import Collection, Mapping, Sequence
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
    docs: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
    give_way: Sequence[str] | None = None,
) -> None:
    """A Rich table with a row number and the given dotted columns; at a narrow terminal the
    columns `give_way` names (default: from the last) are left out in turn; the first, an id,
    is never cut."""
    rows = [[str(n), *(cell(v) for v in row)] for n, row in enumerate(rows_of(docs, columns), 1)]
    echo_fitted(
        title,
        ["#", *columns],
        rows,
        keys={"#", *columns[:1]},
        give_way=columns[:0:-1] if give_way is None else give_way,
        hint="name the fields to show, or use --json or --csv",
    )


# Below this, a column that may wrap is not worth showing: it gives way to the others.
NARROWEST = 10
# What a column adds to the table beyond its text: a space either side and its border.
COLUMN_FRAME = 3


def fitting(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    keys: Collection[str],
    give_way: Sequence[str],
) -> list[int]:
    """The columns (their indexes) a table of `width` characters shows: every key column at its
    full width (ids are never cut), the others at least `NARROWEST` wide (they wrap), those in
    `give_way` left out in its order until the table fits."""
    needs = widths_needed(headers, rows, keys)
    kept = list(range(len(headers)))
    for name in give_way:
        if sum(needs[i] + COLUMN_FRAME for i in kept) + 1 <= width:
            break
        kept.remove(headers.index(name))
    return kept


def widths_needed(
    headers: Sequence[str], rows: Sequence[Sequence[str]], keys: Collection[str]
) -> list[int]:
    """Each column's narrowest width: a key column's widest cell, another's header or
    `NARROWEST`, whichever is wider, unless its cells are all narrower."""
    needs = []
    for i, header in enumerate(headers):
        widest = max([len(header), *(len(line) for row in rows for line in row[i].splitlines())])
        needs.append(widest if header in keys else min(widest, max(NARROWEST, len(header))))
    return needs


def echo_fitted(
    title: str | None,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    keys: Collection[str],
    give_way: Sequence[str],
    hint: str,
) -> None:
    """A Rich table of text cells that fits the terminal (see `fitting`): key columns never
    wrap, the others fold; a line names the columns left out, and `hint` how to see them."""
    out = console()
    kept = fitting(headers, rows, out.width, keys, give_way)
    needs = widths_needed(headers, rows, keys)
    table = rich_table(title=title, header_style="bold")
    for i in kept:
        table.add_column(
            headers[i], no_wrap=headers[i] in keys, overflow="fold", min_width=needs[i]
        )
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    out.print(table)
    left_out = [h for i, h in enumerate(headers) if i not in kept]
    if left_out:
        left = f"not shown at {out.width} columns: {', '.join(left_out)} ({hint})"
        click.echo(textwrap.fill(left, width=out.width, break_on_hyphens=False))


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
