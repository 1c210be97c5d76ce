"""Regular expressions in RE2's syntax (no backreferences or lookarounds), matched in time linear
in the text: a `~` condition cannot hold a server however it is written."""

from __future__ import annotations

from typing import Any

import re2

from labctl.errors import ValidationError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported as a ValidationError, not on stderr


def compile_linear(pattern: object, where: str) -> Any:
    """`pattern` compiled by RE2; a `ValidationError` naming `where` if it is not one."""
    if not isinstance(pattern, str):
        raise ValidationError(f"bad regular expression {pattern!r} in {where}: not text")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if isinstance(exc.args[0], bytes) else str(exc)
        raise ValidationError(f"bad regular expression {pattern!r} in {where}: {reason}") from None
