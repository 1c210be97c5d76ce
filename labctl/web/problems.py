"""labctl's typed errors as HTTP answers: JSON under /api, a small page elsewhere."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from labctl.errors import (
    DatabaseError,
    DatabaseUnreachable,
    DuplicateError,
    LabctlError,
    NotFoundError,
    PermissionDenied,
    QueryTimeout,
    ValidationError,
)
from labctl.limits import REQUEST_BYTES
from labctl.model.job import MalformedJob
from labctl.model.states import InvalidTransition
from labctl.web.auth import CsrfError, LoginRequired
from labctl.web.render import render

API_PREFIX = "/api/"
# First match wins: subclasses before their bases.
STATUS: tuple[tuple[type[LabctlError], int], ...] = (
    (NotFoundError, 404),
    (PermissionDenied, 403),
    (DuplicateError, 409),
    (InvalidTransition, 409),
    (ValidationError, 422),
    (MalformedJob, 422),
    (QueryTimeout, 422),
    (DatabaseUnreachable, 503),
    (DatabaseError, 500),
)


def status_of(exc: LabctlError) -> int:
    """The HTTP status of a labctl error; any other one a user can cause is a bad request."""
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 400)


def _answer(request: Request, status: int, message: str, headers: dict[str, str]) -> Response:
    if request.url.path.startswith(API_PREFIX):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    return render(request, "error.html", None, status=status, headers=headers, message=message)


async def labctl_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LabctlError)
    return _answer(request, status_of(exc), str(exc), {})


async def too_large(request: Request, exc: Exception) -> Response:
    """A body beyond `limits.REQUEST_BYTES`, refused before it was read."""
    return _answer(request, 413, f"the request body is larger than {REQUEST_BYTES:,} bytes", {})


async def csrf_error(request: Request, exc: Exception) -> Response:
    return _answer(request, 403, str(exc), {})


async def login_required(request: Request, exc: Exception) -> Response:
    """401 for the API and for htmx (which then loads the login page), else a redirect."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = "/login?next=" + quote(here)
    if request.url.path.startswith(API_PREFIX):
        return JSONResponse({"detail": str(exc)}, 401, headers={"WWW-Authenticate": "Bearer"})
    if request.headers.get("HX-Request"):
        return Response(status_code=401, headers={"HX-Redirect": login})
    return RedirectResponse(login, status_code=303)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LabctlError, labctl_error)
    app.add_exception_handler(CsrfError, csrf_error)
    app.add_exception_handler(413, too_large)
    app.add_exception_handler(LoginRequired, login_required)
