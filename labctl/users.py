"""Operations on the `users` collection. Passwords are only ever stored as argon2 hashes, API
tokens only as SHA-256 digests (a token is 256 random bits: a fast hash cannot be guessed back)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from labctl.db import Database
from labctl.errors import NotFoundError
from labctl.models import check_role, hash_password, new_user, utcnow, verify_password

PUBLIC_FIELDS = ["username", "full_name", "email", "role", "hpc_accounts", "created_at"]
TOKEN_PREFIX = "lct_"


def add_user(
    db: Database,
    username: str,
    *,
    full_name: str = "",
    email: str = "",
    role: str = "member",
    hpc_accounts: Mapping[str, str] | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    doc = new_user(username, full_name, email, role, hpc_accounts or {}, utcnow())
    if password is not None:
        doc["password_hash"] = hash_password(password)
    db.users.insert(doc)
    return get_user(db, username)


def get_user(db: Database, username: str) -> dict[str, Any]:
    doc = db.users.find_one({"username": username}, PUBLIC_FIELDS)
    if doc is None:
        raise NotFoundError(f"no user {username!r}")
    return doc


def list_users(db: Database) -> list[dict[str, Any]]:
    return db.users.find({}, PUBLIC_FIELDS, sort=[("username", 1)])


def _change(db: Database, username: str, fields: dict[str, Any]) -> None:
    if db.users.update({"username": username}, {"$set": {**fields, "updated_at": utcnow()}}) == 0:
        raise NotFoundError(f"no user {username!r}")


def set_password(db: Database, username: str, password: str) -> None:
    _change(db, username, {"password_hash": hash_password(password)})


def set_role(db: Database, username: str, role: str) -> None:
    _change(db, username, {"role": check_role(role)})


def authenticate(db: Database, username: str, password: str) -> dict[str, Any] | None:
    """The user's public fields if the password matches its stored hash, else None."""
    doc = db.users.find_one({"username": username})
    if doc is None or not verify_password(doc.get("password_hash"), password):
        return None
    return {k: doc.get(k) for k in PUBLIC_FIELDS}


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Database, username: str) -> str:
    """A new API token for `username`, replacing (and so revoking) any earlier one."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    _change(db, username, {"api_token_sha256": _token_digest(token)})
    return token


def token_user(db: Database, token: str) -> dict[str, Any] | None:
    """The public fields of the user whose API token this is, or None."""
    return db.users.find_one({"api_token_sha256": _token_digest(token)}, PUBLIC_FIELDS)
