"""Operations on the `users` collection. Passwords are only ever stored as argon2 hashes, API
tokens only as SHA-256 digests (a token is 256 random bits: a fast hash cannot be guessed back)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field

from labctl.catalog.fields import check_field_name
from labctl.clock import utcnow
from labctl.config.notifyconfig import EMAIL, Recipient, check_mode
from labctl.db import Database
from labctl.errors import NotFoundError, PermissionDenied, ValidationError
from labctl.notify.webhook import checked_webhook
from labctl.passwords import check_password

ROLES = ("admin", "member")
Role = Literal["admin", "member"]
_hasher = PasswordHasher()
USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise ValidationError(
            f"username {username!r} must be 1-32 lower-case letters, digits, '_', '.', '-'"
        )
    return username


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role  # type: ignore[return-value]


def new_user(
    username: str,
    full_name: str,
    email: str,
    role: str,
    hpc_accounts: Mapping[str, str],
    now: dt.datetime,
) -> dict[str, Any]:
    """A `users` document without a password; `hash_password` makes the `password_hash`."""
    if email and not EMAIL.fullmatch(email):
        raise ValidationError(f"email {email!r} is not an e-mail address")
    return {
        "username": check_username(username),
        "full_name": full_name,
        "email": email,
        "role": check_role(role),
        "hpc_accounts": {check_field_name(c): account for c, account in hpc_accounts.items()},
        "password_hash": None,
        "created_at": now,
    }


def hash_password(password: str, username: str = "", email: str = "") -> str:
    """The argon2 hash of a password that `check_password` accepts for this member."""
    return _hasher.hash(check_password(password, username, email))


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class User(BaseModel):
    """A lab member as every member may see them: never their password hash or token digest.

    Read from a stored document, the fields it lacks stay unset: `model_dump(exclude_unset=True)`
    is the document's public part as stored (a member who never chose has no `notify_mode`)."""

    model_config = ConfigDict(frozen=True)

    username: str
    full_name: str = ""
    email: str = ""
    role: Role
    hpc_accounts: dict[str, str] = Field(default_factory=dict, description="cluster -> account")
    created_at: dt.datetime
    notify_mode: str | None = Field(default=None, description="each, digest or failures")


class Me(BaseModel):
    """Who labctl acts as, with which role ("no account" without one) and through what."""

    username: str
    role: str
    via: str = Field(description="the labctl service or the database it reaches")


PUBLIC_FIELDS = list(User.model_fields)
TOKEN_PREFIX = "lct_"
MAX_TOKEN_DAYS = 3650


def add_user(
    db: Database,
    username: str,
    *,
    full_name: str = "",
    email: str = "",
    role: str = "member",
    hpc_accounts: Mapping[str, str] | None = None,
    password: str | None = None,
) -> User:
    doc = new_user(username, full_name, email, role, hpc_accounts or {}, utcnow())
    if password is not None:
        doc["password_hash"] = hash_password(password, doc["username"], doc["email"])
    db.users.insert(doc)
    return get_user(db, username)


def get_user(db: Database, username: str) -> User:
    doc = db.users.find_one({"username": username}, PUBLIC_FIELDS)
    if doc is None:
        raise NotFoundError(f"no user {username!r}")
    return User.model_validate(doc)


def list_users(db: Database) -> list[User]:
    found = db.users.find({}, PUBLIC_FIELDS, sort=[("username", 1)])
    return [User.model_validate(doc) for doc in found]


def _change(db: Database, username: str, fields: dict[str, Any]) -> None:
    if db.users.update({"username": username}, {"$set": {**fields, "updated_at": utcnow()}}) == 0:
        raise NotFoundError(f"no user {username!r}")


def set_password(db: Database, username: str, password: str) -> None:
    user = get_user(db, username)
    _change(db, username, {"password_hash": hash_password(password, username, user.email)})


def set_role(db: Database, username: str, role: str) -> None:
    _change(db, username, {"role": check_role(role)})


def check_self_or_admin(db: Database, actor: str, username: str, what: str) -> None:
    """PermissionDenied unless `actor` is `username` or an admin (who alone may do `what`)."""
    if actor == username:
        return
    doc = db.users.find_one({"username": actor}, ["role"])
    if not doc or doc.get("role") != "admin":
        raise PermissionDenied(f"only {username} or an admin may {what}")


def set_notify(
    db: Database,
    username: str,
    mode: str | None = None,
    webhook: str | None = None,
    *,
    actor: str,
) -> None:
    """Change how a member is told of their jobs: `mode`, and their own `webhook` ("": none);
    they do so themselves, or an admin does it for them."""
    check_self_or_admin(db, actor, username, f"change how {username} is notified")
    fields: dict[str, Any] = {}
    if mode is not None:
        fields["notify_mode"] = check_mode(mode)
    if webhook is not None:
        fields["notify_webhook"] = checked_webhook(webhook) if webhook else None
    _change(db, username, fields)


def notify_settings(db: Database, username: str, *, actor: str) -> Recipient:
    """How `username` is told of their jobs, for them or an admin (their webhook is theirs)."""
    check_self_or_admin(db, actor, username, f"see how {username} is notified")
    get_user(db, username)
    return recipient(db, username)


def recipient(db: Database, username: str, fallback_email: str = "") -> Recipient:
    """Where and how `username` is told of their jobs (their config's e-mail if the database
    has none)."""
    doc = db.users.find_one({"username": username}, ["email", "notify_mode", "notify_webhook"])
    doc = doc or {}
    return Recipient(
        username,
        doc.get("email") or fallback_email,
        doc.get("notify_mode") or "each",
        doc.get("notify_webhook"),
    )


@functools.cache
def _dummy_hash() -> str:
    """The hash of a random password nobody knows, made as every stored hash is."""
    return _hasher.hash(secrets.token_urlsafe(32))


def authenticate(db: Database, username: str, password: str) -> User | None:
    """The user's public fields if the password matches its stored hash, else None.

    Without such a user, or without a password, the password is checked against a dummy hash:
    the answer takes as long either way and so does not tell who has an account."""
    doc = db.users.find_one({"username": username})
    stored = doc.get("password_hash") if doc else None
    if doc is None or not stored:
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(stored, password):
        return None
    return User.model_validate(doc)


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Database, username: str, days: float | None = None) -> str:
    """A new API token for `username`, replacing (and so revoking) any earlier one; it expires
    after `days` (without: when replaced)."""
    if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
        raise ValidationError(f"a token lives more than 0 and at most {MAX_TOKEN_DAYS} days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(days=days) if days else None
    _change(db, username, {"api_token_sha256": _token_digest(token), "api_token_expires": expires})
    return token


def token_user(db: Database, token: str) -> User | None:
    """The public fields of the user whose API token this is, if it has not expired; or None."""
    doc = db.users.find_one(
        {"api_token_sha256": _token_digest(token)}, [*PUBLIC_FIELDS, "api_token_expires"]
    )
    if doc is None:
        return None
    expires = doc.get("api_token_expires")
    return None if expires is not None and expires <= utcnow() else User.model_validate(doc)
