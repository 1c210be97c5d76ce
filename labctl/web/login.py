"""Log in (throttled, CSRF-checked by double submit) and log out."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from labctl.users import authenticate
from labctl.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CsrfError,
    close_session,
    open_session,
    safe_next,
    same_token,
)
from labctl.web.deps import PageUser, state
from labctl.web.render import render
from labctl.web.store import take_lane

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form()]


def set_cookie(response: Response, request: Request, name: str, value: str, seconds: int) -> None:
    """HttpOnly, SameSite=Lax, and Secure when configured or the request came over HTTPS."""
    secure = state(request).config.web.secure_cookies or request.url.scheme == "https"
    response.set_cookie(
        name, value, max_age=seconds, path="/", httponly=True, samesite="lax", secure=secure
    )


def _login_page(
    request: Request, next: str, error: str = "", status: int = 200, retry_after: int = 0
) -> HTMLResponse:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    response = render(
        request, "login.html", None, status, headers, csrf=token, next=next, error=error
    )
    set_cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    username: Text = "",
    password: Text = "",
    csrf_token: Text = "",
    next: Text = "/",
) -> Response:
    web = state(request)
    if not same_token(csrf_token, request.cookies.get(LOGIN_COOKIE)):
        raise CsrfError("the login form expired: reload the page and try again")
    target = safe_next(next)
    address = request.client.host if request.client else ""  # a trusted proxy's client's
    wait = web.limiter.wait_seconds(username, address)
    if wait:
        error = f"too many failed logins: try again in {wait} s"
        return _login_page(request, target, error, status=429, retry_after=wait)
    take_lane(username)  # an attempt counts against the share of the member it names
    user = await web.store.run(authenticate, username, password)
    if user is None:
        web.limiter.failed(username, address)
        return _login_page(request, target, "wrong username or password", status=401)
    web.limiter.succeeded(username)
    lifetime = dt.timedelta(hours=web.config.web.session_hours)
    token = await web.store.run(open_session, user.username, lifetime)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, request, SESSION_COOKIE, token, int(lifetime.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, user: PageUser) -> RedirectResponse:
    await state(request).store.run(close_session, request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
