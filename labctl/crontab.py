"""Pure crontab text: render crontab.template, and put in, find or take out labctl's marked block.

Everything outside the markers belongs to the user and is kept byte for byte.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from string import Template

from labctl.errors import LabctlError

BEGIN = "# >>> labctl >>>"
END = "# <<< labctl <<<"


class CronError(LabctlError):
    """The crontab or its template cannot be read, rendered or written."""


def cron_quote(value: str) -> str:
    """`value` as one shell word, escaped against cron's own reading of `%` and backslashes."""
    if "\n" in value or "\r" in value:
        raise CronError(f"a crontab line cannot hold a line break: {value!r}")
    return shlex.quote(value).replace("\\", "\\\\").replace("%", "\\%")


def render(template: str, values: Mapping[str, str]) -> str:
    """The block: the template with each `$name` replaced by its quoted value, between markers.

    `schedule` is inserted as it is (five cron fields); every other value is quoted."""
    words = {
        name: value if name == "schedule" else cron_quote(value) for name, value in values.items()
    }
    try:
        body = Template(template).substitute(words)
    except KeyError as exc:
        raise CronError(
            f"crontab template uses ${exc.args[0]}, which labctl does not set"
        ) from None
    except ValueError as exc:
        raise CronError(f"crontab template: {exc}") from None
    lines = [line for line in body.splitlines() if line.strip()]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def _span(text: str) -> tuple[int, int] | None:
    """Line indexes of our BEGIN and END markers, or None when there is no block."""
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise CronError(
            f"the crontab's labctl markers are broken ({len(begins)} '{BEGIN}', "
            f"{len(ends)} '{END}'): fix them with 'crontab -e'"
        )
    return begins[0], ends[0]


def find_block(text: str) -> str | None:
    """Our block (markers included, newline-terminated), or None."""
    span = _span(text)
    if span is None:
        return None
    return "\n".join(text.splitlines()[span[0] : span[1] + 1]) + "\n"


def remove_block(text: str) -> str:
    """The crontab without our block; every other line kept as it was."""
    span = _span(text)
    if span is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[: span[0]] + lines[span[1] + 1 :])


def merge_block(text: str, block: str) -> str:
    """The crontab with `block` as its last lines (our MAILTO must not reach the user's lines)."""
    rest = remove_block(text)
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block
