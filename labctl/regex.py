"""Regular expressions in RE2's syntax (no backreferences or lookarounds), matched in time linear
in the text: a `~` condition cannot hold a server however it is written."""

from __future__ import annotations

from typing import Any

import re2
from bson.regex import Regex

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


class LinearRegex(Regex[str]):
    """A `$regex` for the embedded store, matched by RE2: its matcher (mongomock's) compiles a
    bson `Regex` with `try_compile()` and only calls `search` on the result."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self._compiled = compile_linear(pattern, "$regex")

    def try_compile(self) -> Any:
        return self._compiled
