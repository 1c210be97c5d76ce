"""The notification settings of the lab config (`notify:`) and each member's choice."""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from labctl import limits
from labctl.errors import ValidationError
from labctl.settings import Settings

MODES = ("each", "digest", "failures")
Mode = Literal["each", "digest", "failures"]
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SMTP_PASSWORD_VAR = "LABCTL_SMTP_PASSWORD"


@dataclass(frozen=True)
class WebhookUrl:
    """A webhook URL taken apart: `host` as it is looked up (IDNA, ASCII; an IPv6 address without
    brackets), `target` the path and query that are posted to."""

    scheme: str
    host: str
    port: int
    target: str


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_KINDS = ("loopback", "unspecified", "link_local", "multicast", "private", "reserved")


def address_kind(ip: IpAddress) -> str | None:
    """Why a webhook may not reach `ip` ("loopback", "private", ...), None if it is public or in
    `limits.WEBHOOK_NETWORKS`. An IPv4 address inside an IPv6 one counts as itself."""
    if any(ip in ipaddress.ip_network(net) for net in limits.WEBHOOK_NETWORKS):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return address_kind(inner)
    kind = next((kind for kind in _KINDS if getattr(ip, f"is_{kind}")), None)
    if kind is None and not ip.is_global:
        kind = "non-public"
    return kind.replace("_", "-") if kind else None


def refuse_internal(ip: IpAddress, host: str) -> None:
    """ValidationError if a webhook may not reach `ip` (which `host` names)."""
    kind = address_kind(ip)
    if kind:
        named = "" if host == str(ip) else f"{host} resolves to "
        raise ValidationError(f"{named}{ip} ({kind}): a webhook reaches public addresses only")


def _ip_literal(host: str) -> IpAddress | None:
    """The address `host` spells, also as inet_aton reads it (`0x7f.1`, `2130706433`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fx.]+", host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _ascii_host(host: str) -> str:
    try:
        ascii_host = host.encode("idna").decode()
    except UnicodeError:
        ascii_host = ""
    labels = ascii_host.removesuffix(".").split(".")
    if not all(re.fullmatch(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", label) for label in labels):
        raise ValidationError(f"{host!r} is not a valid host name")
    return ascii_host


def parse_webhook(url: str) -> WebhookUrl:
    """`url` taken apart if it is an http(s) URL a webhook may have; ValidationError (one line,
    without a subject) otherwise. A host given as an address must be a public one; a name is
    checked when it is looked up (`labctl.notify.webhook`)."""
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in url):
        raise ValidationError("a webhook URL has no spaces or control characters")
    bad = ValidationError("must be an http:// or https:// URL, with a valid host and port")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    if "@" in parts.netloc:
        raise ValidationError("a webhook URL has no user:password@")
    if port == 0:
        raise ValidationError("port 0 is not a port")
    ip = _ip_literal(parts.hostname)
    if ip is not None:
        refuse_internal(ip, str(ip))
    host = str(ip) if ip is not None else _ascii_host(parts.hostname)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return WebhookUrl(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target)


def check_webhook(url: str) -> str:
    """`url` if it is a webhook URL `parse_webhook` takes; ValidationError naming it otherwise."""
    try:
        parse_webhook(url)
    except ValidationError as exc:
        raise ValidationError(f"webhook {shown_url(url)!r}: {exc}") from None
    return url


def shown_url(url: str) -> str:
    """A webhook URL as it may be shown: its path is its secret, so scheme and host only, and
    nothing unprintable."""
    try:
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..." if parts.netloc else "..."
    except ValueError:
        return "..."
    return "".join(c if c.isprintable() else "?" for c in shown)


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
