"""Typed errors. The CLI turns every `LabctlError` into one line on stderr and a non-zero exit."""


class LabctlError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code = 1


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
