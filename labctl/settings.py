"""What every settings model shares: frozen, typed, unknown keys refused, errors in one line."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError


class Settings(BaseModel):
    """A frozen, typed model of settings that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def describe(exc: PydanticValidationError) -> str:
    """The first problem pydantic found, as one line, and how many more there are."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"unknown key '{where}'"
    else:
        text = f"{where}: {first['msg']}"
    return text + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")


def xdg(var: str, fallback: str) -> Path:
    """An XDG base directory: `$var`, else `~/fallback`."""
    return Path(os.environ.get(var) or Path.home() / fallback)


LOOPBACK = ("localhost", "127.0.0.1", "::1")


class ServiceConfig(Settings):
    """`service:`, on a member's machine: reach the lab's data through the labctl service (its
    REST API) with a token, instead of through the database."""

    url: str = Field(description="the service's address, e.g. https://lab.example.org")
    token_file: Path = Field(
        default_factory=lambda: xdg("XDG_CONFIG_HOME", ".config") / "labctl" / "token",
        description="the member's API token (0600; LABCTL_TOKEN overrides it)",
    )
    timeout_seconds: float = Field(default=30, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        """https, or http to this machine only: a token must not cross the network in clear."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) address")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK:
            raise ValueError(f"{url!r}: use https (http only to localhost)")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"{url!r}: give the service's address only")
        return url.rstrip("/")

    @field_validator("token_file")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser()
