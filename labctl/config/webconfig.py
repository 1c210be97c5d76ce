"""The web dashboard's and REST API's settings (`web:` in the config)."""

from __future__ import annotations

from pydantic import Field, IPvAnyNetwork

from labctl.limits import MEMBER_CALLS, MEMBER_WAIT_SECONDS
from labctl.settings import Settings


class WebConfig(Settings):
    """The web dashboard and REST API (`labctl web`)."""

    secure_cookies: bool = Field(
        default=False, description="send cookies over HTTPS only (set when served behind HTTPS)"
    )
    session_hours: float = Field(default=12, gt=0, le=24 * 30, description="login lifetime")
    login_attempts_per_minute: int = Field(
        default=5, ge=1, le=1000, description="failed logins per username before a pause"
    )
    login_attempts_per_address_per_minute: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="failed logins from one client address, for any usernames, before a pause",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="addresses or networks of the reverse proxies in front, whose "
        "X-Forwarded-For/-Proto are believed; none: the connection's own address counts",
    )
    member_calls: int = Field(
        default=MEMBER_CALLS,
        ge=1,
        le=100,
        description="store calls one member has queued or running at once: each member's share",
    )
    member_wait_seconds: float = Field(
        default=MEMBER_WAIT_SECONDS,
        ge=0,
        le=60,
        description="how long a member's further call waits for its turn before a 429",
    )
