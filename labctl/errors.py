"""Typed errors. The CLI turns every `LabctlError` into one line on stderr and a non-zero exit.

No message shows a password: a database URI's `user:password@` reads `user:***@` (`redact`).
"""

import re

_CREDENTIALS = re.compile(r"(?P<user>[A-Za-z][A-Za-z0-9+.-]*://[^:/\s]*):\S*@")


def redact(text: str) -> str:
    """`text` with the password of every URI in it replaced by `***` (up to the URI's last `@`:
    an unescaped `@` in a malformed URI's password is hidden too)."""
    return _CREDENTIALS.sub(r"\g<user>:***@", text)


class LabctlError(Exception):
    """Base of every error a user can cause or fix; its text never holds a password."""

    exit_code = 1

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(LabctlError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


class ValidationError(LabctlError):
    """A value given by the user does not fit the schema."""

    exit_code = 2


class NotFoundError(LabctlError):
    """A dataset, job or user that was asked for does not exist."""


class DatabaseError(LabctlError):
    """The store refused or failed an operation."""


class DuplicateError(DatabaseError):
    """A unique key (dataset id, username) already exists."""


class DatabaseUnreachable(DatabaseError):
    """The MongoDB server could not be reached in time."""


class PermissionDenied(LabctlError):
    """The user may not do this (someone else's job or experiment, an admin's operation)."""

    exit_code = 3


class QueryTimeout(DatabaseError):
    """A query ran longer than its time limit and the store stopped it."""

    exit_code = 2


class ServiceError(LabctlError):
    """The labctl service could not be reached, or did not answer as labctl's service does."""


class TokenRefused(ServiceError):
    """The service did not accept the member's token (unknown, expired or replaced)."""

    exit_code = 3
