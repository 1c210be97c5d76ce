"""What every route shares: the app's state and the dependencies that say who is asking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates

from labctl.catalog.rights import Actor
from labctl.config import Config
from labctl.web.auth import (
    SAFE_METHODS,
    SESSION_COOKIE,
    LoginLimiter,
    LoginRequired,
    Principal,
    bearer_principal,
    check_csrf,
    session_principal,
)
from labctl.web.store import Store, take_credential_lane, take_lane


@dataclass(frozen=True)
class WebState:
    """One per app: the config, the database, the login limiter and the templates."""

    config: Config
    store: Store
    limiter: LoginLimiter
    templates: Jinja2Templates

    def config_of(self, user: Principal) -> Config:
        """The config acting as `user`: labctl records them as created_by / updated_by."""
        return self.config.model_copy(update={"user": user.username})

    @staticmethod
    def actor_of(user: Principal) -> Actor:
        """`user` as the catalog knows them, with their rights."""
        return Actor(user.username, user.is_admin)


def state(request: Request) -> WebState:
    web: WebState = request.app.state.web
    return web


async def _principal(request: Request, token: str | None) -> Principal:
    """Who is asking; their calls to the store count against their share from then on."""
    store = state(request).store
    if token is not None:
        take_credential_lane(token)
        found = await store.run(bearer_principal, token)
        if found is None:
            raise LoginRequired("invalid, expired or replaced API token")
        take_lane(found.username)
        return found
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        take_credential_lane(cookie)
    found = await store.run(session_principal, cookie) if cookie else None
    if found is None:
        raise LoginRequired("log in first, or send an API token")
    take_lane(found.username)
    if request.method not in SAFE_METHODS:
        await check_csrf(request, found.csrf)
    return found


async def page_user(request: Request) -> Principal:
    """Pages take a session only."""
    return await _principal(request, None)


bearer = HTTPBearer(auto_error=False, description="an API token made by `labctl user token`")


async def api_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The API takes a bearer token, or a session (with its CSRF token on writes)."""
    return await _principal(request, credentials.credentials if credentials else None)


PageUser = Annotated[Principal, Depends(page_user)]
ApiUser = Annotated[Principal, Depends(api_user)]
