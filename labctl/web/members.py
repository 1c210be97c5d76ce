"""The REST API's lab members: who they are, and the admin's operations on them.

A member may read the list, set their own password and make their own token; roles, new members,
other members' passwords and tokens take an admin's token or session. `POST /token` trades a
username and password for a token (throttled as the login form is), for `labctl login`.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from labctl.config.notifyconfig import Recipient
from labctl.errors import PermissionDenied
from labctl.users import (
    MAX_TOKEN_DAYS,
    Role,
    User,
    add_user,
    authenticate,
    create_token,
    get_user,
    list_users,
    notify_settings,
    set_notify,
    set_password,
    set_role,
)
from labctl.web.auth import LoginRequired, Principal
from labctl.web.deps import ApiUser, state
from labctl.web.rest import _errors, _In

router = APIRouter(prefix="/api/v1", responses=_errors(400, 401, 403, 404, 422))


class NewMember(_In):
    username: str
    full_name: str = ""
    email: str = ""
    role: Role = "member"
    hpc_accounts: dict[str, str] = Field(default_factory=dict, description="cluster -> account")
    password: str | None = Field(default=None, description="none: no web login until one is set")


class RoleChange(_In):
    role: Role


class PasswordChange(_In):
    password: str
    current_password: str | None = Field(
        default=None, description="your current password: needed to change your own"
    )


class TokenWish(_In):
    days: float | None = Field(
        default=None, gt=0, le=MAX_TOKEN_DAYS, description="expires after; none: when replaced"
    )


class Credentials(TokenWish):
    username: str
    password: str


class NotifyChange(_In):
    mode: str | None = Field(default=None, description="each, digest or failures; none: as is")
    webhook: str | None = Field(default=None, description='their own webhook; "": none')


class Members(BaseModel):
    items: list[User]


class Token(BaseModel):
    username: str
    token: str = Field(description="shown once; it replaces (revokes) the member's earlier token")


def _admin(user: Principal, what: str) -> None:
    if not user.is_admin:
        raise PermissionDenied(f"only an admin may {what}")


def _self_or_admin(user: Principal, username: str, what: str) -> None:
    if username != user.username and not user.is_admin:
        raise PermissionDenied(f"only {username} or an admin may {what}")


@router.get("/users", response_model_exclude_unset=True)
async def members(request: Request, user: ApiUser) -> Members:
    """The lab's members (never their password hashes or tokens)."""
    return Members(items=await state(request).store.run(list_users))


@router.get("/users/{username}", response_model_exclude_unset=True)
async def member(request: Request, user: ApiUser, username: str) -> User:
    return await state(request).store.run(get_user, username)


@router.post("/users", status_code=201, responses=_errors(409), response_model_exclude_unset=True)
async def add_member(request: Request, user: ApiUser, body: NewMember) -> User:
    """Add a lab member (admins only)."""
    _admin(user, "add lab members")
    return await state(request).store.run(add_user, **body.model_dump())


@router.put("/users/{username}/role", response_model_exclude_unset=True)
async def change_role(request: Request, user: ApiUser, username: str, body: RoleChange) -> User:
    """Make a member an admin or a member (admins only)."""
    _admin(user, "change roles")
    store = state(request).store
    await store.run(set_role, username, body.role)
    return await store.run(get_user, username)


@router.put("/users/{username}/password", response_model_exclude_unset=True)
async def change_password(
    request: Request, user: ApiUser, username: str, body: PasswordChange
) -> User:
    """Set a member's web password: your own, with your current one; anyone else's as an admin.
    A wrong current password counts as a failed login."""
    _self_or_admin(user, username, "set their password")
    if username == user.username and not await _checked(request, username, body.current_password):
        raise PermissionDenied("your current password is wrong (without one, ask an admin)")
    store = state(request).store
    await store.run(set_password, username, body.password)
    return await store.run(get_user, username)


@router.post("/users/{username}/token")
async def new_token(request: Request, user: ApiUser, username: str, body: TokenWish) -> Token:
    """A new API token: your own, or anyone's as an admin. It replaces the earlier one."""
    _self_or_admin(user, username, "make their token")
    token = await state(request).store.run(create_token, username, body.days)
    return Token(username=username, token=token)


@router.get("/users/{username}/notify")
async def notify_of(request: Request, user: ApiUser, username: str) -> Recipient:
    """How a member is told of their jobs: yours, or anyone's as an admin."""
    return await state(request).store.run(notify_settings, username, actor=user.username)


@router.put("/users/{username}/notify")
async def change_notify(
    request: Request, user: ApiUser, username: str, body: NotifyChange
) -> Recipient:
    """Change how a member is told of their jobs: yours, or anyone's as an admin."""
    store = state(request).store
    await store.run(notify_settings, username, actor=user.username)  # theirs to change
    await store.run(set_notify, username, body.mode, body.webhook, actor=user.username)
    return await store.run(notify_settings, username, actor=user.username)


@router.post("/token", responses=_errors(429))
async def token_for_password(request: Request, body: Credentials) -> Token:
    """Your username and password for a new token (`labctl login`): it replaces your earlier
    one. Failed attempts are throttled as the login form's are."""
    found = await _checked(request, body.username, body.password)
    if found is None:
        raise LoginRequired("wrong username or password")
    token = await state(request).store.run(create_token, found.username, body.days)
    return Token(username=found.username, token=token)


async def _checked(request: Request, username: str, password: str | None) -> User | None:
    """The member if `password` is theirs; else None, counted as a failed login (429 with
    Retry-After beyond the limits, as the login form's)."""
    web = state(request)
    address = request.client.host if request.client else ""
    wait = web.limiter.wait_seconds(username, address)
    if wait:
        detail = f"too many failed logins: try again in {wait} s"
        raise HTTPException(429, detail, headers={"Retry-After": str(wait)})
    found = await web.store.run(authenticate, username, password or "")
    if found is None:
        web.limiter.failed(username, address)
        return None
    web.limiter.succeeded(username)
    return found
