"""The web dashboard (add, browse, submit, monitor) and the REST API, behind a login.

`create_app(config)` builds the ASGI app with one database for its whole life; `serve` runs it
with uvicorn. Pages are server-rendered Jinja templates; the monitor updates itself with htmx,
shipped in `static/` (no CDN, no front-end build).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from labctl.config import Config
from labctl.jobs.migrate import migrate_if_needed
from labctl.limits import KEEP_ALIVE_SECONDS
from labctl.web import deputy, login, members, monitor, pages, submitpage
from labctl.web import problems as errors
from labctl.web import rest as api
from labctl.web.auth import LoginLimiter
from labctl.web.bodylimit import BodyLimit
from labctl.web.deps import WebState
from labctl.web.render import make_templates
from labctl.web.slowclients import BoundedReads
from labctl.web.store import Store

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(config: Config) -> FastAPI:
    """The dashboard and API over the configured database (opened now, closed at shutdown)."""
    store = Store(config.database, config.web)
    # Members' watchdogs reach the store through this service, and may not upgrade it: it is
    # brought up to this labctl's schema before anything is served.
    store.call(migrate_if_needed, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="labctl",
        version=version("labctl"),
        description="The lab's experiment database and analysis jobs. Authenticate with "
        "`Authorization: Bearer TOKEN` (a token from `labctl user token USERNAME`).",
        lifespan=lifespan,
        openapi_url=None,  # served by the API itself, behind the login
        docs_url=None,
        redoc_url=None,
    )
    settings = config.web
    limiter = LoginLimiter(
        settings.login_attempts_per_minute, settings.login_attempts_per_address_per_minute
    )
    app.state.web = WebState(config, store, limiter, make_templates())
    app.mount("/static", StaticFiles(packages=[("labctl.web", "static")]), name="static")
    for module in (login, pages, submitpage, monitor, api, members, deputy):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(BodyLimit)  # inside the next, which would wrap its 413 in an exception group
    app.middleware("http")(_security_headers)
    if settings.trusted_proxies:  # outermost: every route sees the proxy's client
        proxies = [str(network) for network in settings.trusted_proxies]
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    return app


def server_config(config: Config, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for the app. X-Forwarded-* are believed only from
    `web.trusted_proxies` (the app sees to it), never from uvicorn's default 127.0.0.1 or
    FORWARDED_ALLOW_IPS; a request must arrive in time (`BoundedReads`), an idle connection is
    closed after `limits.KEEP_ALIVE_SECONDS`."""
    return uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        http=BoundedReads,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def serve(config: Config, host: str, port: int) -> None:
    """Serve until interrupted."""
    uvicorn.Server(server_config(config, host, port)).run()
