"""HTML: the Jinja templates shipped in the package, the filters they use, one render helper."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from labctl.catalog.fields import get_dotted
from labctl.clock import age, utcnow
from labctl.jobs.timeline import bytes_text
from labctl.jobs.usage import describe
from labctl.model.job import TaskUsage
from labctl.model.states import ACTIVE, RETRYABLE
from labctl.web.auth import CSRF_FIELD, CSRF_HEADER, Principal
from labctl.web.deps import state


def text(value: Any) -> str:
    """A stored value as one line that reads well and, edited, types back the same (YAML/ISO)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, default=text)
    return str(value)


def duration(seconds: float | None) -> str:
    return "" if seconds is None else str(dt.timedelta(seconds=int(seconds)))


def efficiency(usage: list[TaskUsage]) -> str | None:
    """A job's usage in a line, as `labctl status` says it."""
    return describe(usage)


def since(value: dt.datetime | None) -> str:
    return age(value, utcnow())


SELECTOR_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def dom_id(value: str) -> str:
    """A job id as part of an element id that any CSS selector can name (htmx looks preserved
    elements up by `#id`, unescaped): letters, digits, `_` and `-` as they are, else the id in
    hex behind an `x`."""
    if SELECTOR_SAFE.fullmatch(value):
        return value
    return "x" + value.encode().hex()


def with_query(request: Request, **changes: Any) -> str:
    """This page's query string with some parameters replaced: `?sort=-n_planes&page=1`."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    return "?" + urlencode([*items, *((k, str(v)) for k, v in changes.items())])


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("labctl.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        text=text,
        size=bytes_text,
        duration=duration,
        age=since,
        dotted=get_dotted,
        efficiency=efficiency,
        dom_id=dom_id,
    )
    env.globals.update(
        CSRF_FIELD=CSRF_FIELD,
        CSRF_HEADER=CSRF_HEADER,
        ACTIVE=ACTIVE,
        RETRYABLE=RETRYABLE,
        with_query=with_query,
    )
    return Jinja2Templates(env=env)


def render(
    request: Request,
    name: str,
    user: Principal | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The template `name` with the member (for the menu and the CSRF token) and `context`."""
    templates = state(request).templates
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "schema": state(request).config.data, **context},
        status_code=status,
        headers=dict(headers or {}),
    )
