"""Who is asking: server-side sessions (cookie), API tokens (bearer), CSRF and login throttling.

A session lives in `meta` under the SHA-256 of its cookie value, with its own CSRF token; every
state-changing request made with the cookie must echo that token (form field or header). Bearer
tokens are not sent by browsers on their own, so requests carrying one need no CSRF token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from labctl.clock import utcnow
from labctl.db import Database
from labctl.errors import NotFoundError
from labctl.users import get_user, token_user

SESSION_COOKIE = "labctl_session"
LOGIN_COOKIE = "labctl_login"  # the login form's CSRF token (double submit: no session yet)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class LoginRequired(Exception):
    """No valid session or token: pages redirect to the login, the API answers 401."""


class CsrfError(Exception):
    """A cookie-authenticated write without the session's CSRF token: 403."""


@dataclass(frozen=True)
class Principal:
    """The logged-in lab member; `csrf` is None when they came with an API token."""

    username: str
    role: str
    csrf: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_change(self, owner: str) -> bool:
        """Whether to offer cancel/retry; `labctl.jobs.queue` decides for real."""
        return self.is_admin or owner == self.username


def _session_key(token: str) -> str:
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


def open_session(db: Database, username: str, lifetime: dt.timedelta) -> str:
    """Store a new session for `username` (dropping expired ones); return its cookie value."""
    now = utcnow()
    for old in db.meta.find({"kind": "session", "expires_at": {"$lt": now}}, ["key"]):
        db.meta.delete({"key": old["key"]})
    token = secrets.token_urlsafe(32)
    db.meta.insert(
        {
            "key": _session_key(token),
            "kind": "session",
            "username": username,
            "csrf": secrets.token_urlsafe(32),
            "created_at": now,
            "expires_at": now + lifetime,
        }
    )
    return token


def close_session(db: Database, token: str) -> None:
    db.meta.delete({"key": _session_key(token)})


def session_principal(db: Database, token: str) -> Principal | None:
    """The member of a live session, with their current role, or None."""
    session = db.meta.find_one({"key": _session_key(token)})
    if session is None or session["expires_at"] <= utcnow():
        return None
    try:
        user = get_user(db, session["username"])
    except NotFoundError:
        return None
    return Principal(user.username, user.role, session["csrf"])


def bearer_principal(db: Database, token: str) -> Principal | None:
    user = token_user(db, token)
    return Principal(user.username, user.role, None) if user else None


def same_token(sent: object, expected: str | None) -> bool:
    return isinstance(sent, str) and bool(expected) and hmac.compare_digest(sent, str(expected))


async def check_csrf(request: Request, expected: str | None) -> None:
    """The CSRF token must come back in the header (htmx, scripts) or in the form."""
    sent: object = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        sent = (await request.form()).get(CSRF_FIELD)
    if not same_token(sent, expected):
        raise CsrfError("missing or wrong CSRF token: reload the page and try again")


_LOCAL_PATH = re.compile(r"/(?![/\\])[^\\\x00-\x1f\x7f]*")  # browsers drop tabs: "/\t/x" is "//x"


def safe_next(target: str | None, default: str = "/") -> str:
    """A same-site path to go to after a login or an action; anything else -> `default`."""
    return target if target and _LOCAL_PATH.fullmatch(target) else default


class LoginLimiter:
    """At most `per_user` failed logins per username and `per_address` from one client address
    in any 60 s window: neither many addresses can guess one password nor one address every
    username's."""

    WINDOW = 60.0

    def __init__(
        self, per_user: int, per_address: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = {"user": per_user, "address": per_address}
        self._clock = clock
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, []) if now - t < self.WINDOW]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def _wait(self, key: tuple[str, str], now: float) -> int:
        recent, limit = self._recent(key, now), self._limits[key[0]]
        if len(recent) < limit:
            return 0
        return max(1, int(self.WINDOW - (now - recent[-limit])) + 1)

    def wait_seconds(self, username: str, address: str) -> int:
        """0 if `username` may try to log in from `address` now, else how long to wait."""
        with self._lock:
            now = self._clock()
            return max(self._wait(("user", username), now), self._wait(("address", address), now))

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            if len(self._failures) > 10_000:  # forget stale keys so guessing names costs no memory
                for stale in list(self._failures):
                    self._recent(stale, now)
            for key in (("user", username), ("address", address)):
                self._failures.setdefault(key, []).append(now)

    def succeeded(self, username: str) -> None:
        """The member's own failures are forgotten; their address's count until they expire."""
        with self._lock:
            self._failures.pop(("user", username), None)
