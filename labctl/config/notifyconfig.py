"""The notification settings of the lab config (`notify:`) and each member's choice."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from labctl.errors import ValidationError
from labctl.settings import Settings

MODES = ("each", "digest", "failures")
Mode = Literal["each", "digest", "failures"]
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SMTP_PASSWORD_VAR = "LABCTL_SMTP_PASSWORD"


def check_webhook(url: str) -> str:
    """`url` if it is an http(s) URL with a host; ValidationError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"webhook {shown_url(url)!r} must be an http:// or https:// URL")
    if any(c.isspace() for c in url):
        raise ValidationError("a webhook URL has no spaces")
    return url


def shown_url(url: str) -> str:
    """A webhook URL as it may be shown: its path is its secret, so scheme and host only."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..." if parts.netloc else "..."
    except ValueError:
        return "..."


def check_address(address: str) -> str:
    if not EMAIL.fullmatch(address):
        raise ValidationError(f"{address!r} is not an e-mail address")
    return address


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValidationError(f"notification mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode  # type: ignore[return-value]


@dataclass(frozen=True)
class Recipient:
    """A member as notifications reach them: e-mail, their choice, their own webhook."""

    username: str
    email: str
    mode: Mode
    webhook: str | None


class SmtpConfig(Settings):
    """The lab's mail server, as the watchdog reaches it."""

    host: str = Field(pattern=r"^[A-Za-z0-9_.-]+$|^\[?[0-9A-Fa-f:.]+\]?$")
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    user: str | None = None
    password: str | None = Field(
        default=None, description=f"only in a 0600 config; else ${SMTP_PASSWORD_VAR}"
    )
    from_address: str
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    ca_file: Path | None = Field(default=None, description="the CA that signed the server's cert")

    @field_validator("from_address")
    @classmethod
    def _address(cls, address: str) -> str:
        if not EMAIL.fullmatch(address):
            raise ValueError(f"{address!r} is not an e-mail address")
        return address

    @field_validator("ca_file")
    @classmethod
    def _expand(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path else None

    @model_validator(mode="after")
    def _password_over_tls(self) -> SmtpConfig:
        if self.user and self.security == "none":
            raise ValueError("a login goes over TLS only: set security to starttls or tls")
        return self


class NotifyConfig(Settings):
    """Who is told what, and how: e-mail through `smtp`, and the lab's chat `webhook`."""

    smtp: SmtpConfig | None = None
    webhook: str | None = Field(default=None, description="the lab's incoming webhook (JSON)")
    webhook_timeout_seconds: float = Field(default=10, gt=0, le=600)
    digest_hour: int = Field(default=8, ge=0, le=23, description="local hour of the digest")
    backoff_seconds: float = Field(default=60, ge=0, description="doubles with each attempt")
    max_backoff_seconds: float = Field(default=6 * 3600, ge=0)

    @field_validator("webhook")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None:
            try:
                check_webhook(url)
            except ValidationError as exc:
                raise ValueError(str(exc)) from None
        return url

    @property
    def secrets(self) -> dict[str, str | None]:
        """The password this section may hold, by the variable that could hold it instead."""
        return {SMTP_PASSWORD_VAR: self.smtp.password if self.smtp else None}

    def with_env(self, env: dict[str, str]) -> NotifyConfig:
        """These settings with the SMTP password of the environment, if it has one."""
        password = env.get(SMTP_PASSWORD_VAR)
        if not password or self.smtp is None:
            return self
        return self.model_copy(update={"smtp": self.smtp.model_copy(update={"password": password})})
