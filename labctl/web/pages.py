"""The data pages: add an experiment, browse them, one entry with its jobs (and its edit), and
the lab's compute usage."""

from __future__ import annotations

import asyncio
import shutil
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labctl.catalog import Entry
from labctl.catalog.experiments import get_entry, log_entries, query_page
from labctl.catalog.fields import MANAGED_FIELDS, flatten, is_field_name
from labctl.catalog.query import build_filter, parse_day, parse_sort
from labctl.clock import utcnow
from labctl.compute.transport import LocalRunner, TransportError
from labctl.config import DataSchema
from labctl.damaged import Listing
from labctl.db import Database
from labctl.errors import DuplicateError, PermissionDenied, ValidationError
from labctl.jobs.lineage import Lineage
from labctl.jobs.queue import list_jobs, list_rows
from labctl.jobs.timeline import PHASES, DatasetTimeline
from labctl.jobs.usage import unaccounted
from labctl.limits import QUERY_TERMS
from labctl.model.job import JobRow
from labctl.web.auth import Principal
from labctl.web.deps import PageUser, state
from labctl.web.forms import FieldsForm, check_dataset, collect, read_form
from labctl.web.render import render, text

router = APIRouter(include_in_schema=False)
RESULTS = "results"  # where the watchdog records an entry's results: shown with the jobs


@router.get("/")
async def home(user: PageUser) -> RedirectResponse:
    return RedirectResponse("/browse", status_code=303)


@router.get("/add")
async def add_form(request: Request, user: PageUser) -> HTMLResponse:
    """The form, with the owner field (`user`) filled in with the member."""
    owner = state(request).config.data.owner_field
    form = FieldsForm(values={owner: user.username})
    return render(request, "add.html", user, form=form, dataset="")


@router.get("/add/row")
async def add_row(request: Request, user: PageUser) -> HTMLResponse:
    """One more empty key/value row (htmx appends it to the form)."""
    return render(request, "_extra_row.html", user, key="", value="", error="")


@router.post("/add")
async def add(request: Request, user: PageUser) -> Response:
    """Store the entry if every field is valid; else show the form again with the errors."""
    web = state(request)
    schema = web.config.data
    posted = await request.form()
    dataset = str(posted.get("dataset") or "").strip()
    form = read_form(posted, schema.fields)
    check_dataset(form, dataset)
    given = {
        name: value
        for name in schema.fields
        if (value := form.values.get(name, "")) or name in schema.required
    }
    fields = collect(form, given, schema, schema.required)
    status = 422
    if not form.errors:
        try:
            await web.store.run(
                log_entries, web.config_of(user), [(dataset, fields)], actor=web.actor_of(user)
            )
            return RedirectResponse(f"/entry/{dataset}?created=1", status_code=303)
        except DuplicateError as exc:
            form.errors["dataset"] = str(exc)
        except ValidationError as exc:
            form.errors["_form"] = str(exc)
        except PermissionDenied as exc:  # another member's: said on the form, kept as typed
            form.errors["_form"], status = str(exc), 403
    return render(request, "add.html", user, status=status, form=form, dataset=dataset)


def default_columns(schema: DataSchema) -> list[str]:
    return ["dataset", "acquired_at", *schema.fields]


def column_choices(schema: DataSchema, docs: list[Entry]) -> list[str]:
    """Schema fields, labctl's own, and every other field on this page (results aside)."""
    seen = dict.fromkeys([*default_columns(schema), *MANAGED_FIELDS])
    for doc in docs:
        seen.update(dict.fromkeys(k for k in flatten(doc) if k.split(".")[0] != RESULTS))
    return list(seen)


@router.get("/browse")
async def browse(
    request: Request,
    user: PageUser,
    where: str = "",
    member: Annotated[str, Query(alias="user")] = "",
    since: str = "",
    until: str = "",
    sort: str = "-acquired_at",
    col: Annotated[list[str], Query(max_length=QUERY_TERMS)] = [],  # noqa: B006 (FastAPI copies defaults)
    page: Annotated[int, Query(ge=1)] = 1,
    per: Annotated[int, Query(ge=1, le=500)] = 25,
) -> HTMLResponse:
    """The entries matching the filters (the `--where` language), one page of them."""
    web = state(request)
    schema = web.config.data
    conditions = [line for line in where.splitlines() if line.strip()]
    if member:
        conditions.append(f"user={member}")
    total, error = 0, ""
    docs: list[Entry] = []
    try:
        filter = build_filter(conditions, schema, since or None, until or None)
        order = parse_sort([sort]) if sort else []
        total, docs = await web.store.run(query_page, [], filter, order, per, (page - 1) * per)
    except ValidationError as exc:
        error = str(exc)
    return render(
        request,
        "browse.html",
        user,
        status=400 if error else 200,
        error=error,
        docs=docs,
        total=total,
        columns=col or default_columns(schema),
        choices=column_choices(schema, docs),
        where=where,
        member=member,
        since=since,
        until=until,
        sort=sort,
        page=page,
        per=per,
        pages=max(1, -(-total // per)),
    )


def editable(entry: Entry) -> dict[str, str]:
    """The fields a member may edit (not labctl's own, not results), as text. A field whose name
    labctl would refuse (`cond.$gt`, written by other means) is shown but not offered."""
    return {
        name: text(value)
        for name, value in flatten(entry).items()
        if name not in MANAGED_FIELDS and name.split(".")[0] != RESULTS and is_field_name(name)
    }


def _entry_and_jobs(
    db: Database, dataset: str
) -> tuple[dict[str, Any], Listing[JobRow], DatasetTimeline]:
    entry, rows = get_entry(db, dataset), list_rows(db, {"dataset": dataset})
    return entry, rows, DatasetTimeline.of(dataset, list_jobs(db, dataset=dataset).items, utcnow())


async def _entry_page(
    request: Request, user: Principal, dataset: str, form: FieldsForm, status: int = 200
) -> HTMLResponse:
    entry, jobs, timeline = await state(request).store.run(_entry_and_jobs, dataset)
    fields = {k: v for k, v in flatten(entry).items() if k.split(".")[0] != RESULTS}
    return render(
        request,
        "entry.html",
        user,
        status=status,
        entry=entry,
        fields=fields,
        editable=editable(entry),
        jobs=jobs.items,
        damaged_jobs=jobs.damaged,
        timeline=timeline,
        phases=PHASES,
        drawable=shutil.which(GRAPHVIZ) is not None,
        form=form,
        created="created" in request.query_params,
        saved="saved" in request.query_params,
    )


@router.get("/entry/{dataset}")
async def entry_page(request: Request, user: PageUser, dataset: str) -> HTMLResponse:
    return await _entry_page(request, user, dataset, FieldsForm())


GRAPHVIZ = "dot"
DRAW_SECONDS = 20


def _lineage(db: Database, dataset: str) -> Lineage:
    get_entry(db, dataset)  # 404 for a dataset that is not there, 422 for a malformed id
    return Lineage.of(dataset, list_jobs(db, dataset=dataset).items)


@router.get("/entry/{dataset}/lineage.svg")
async def lineage_picture(request: Request, user: PageUser, dataset: str) -> Response:
    """The dataset's lineage drawn by graphviz (`dot -Tsvg`), as an image of the page."""
    lineage = await state(request).store.run(_lineage, dataset)
    draw = partial(LocalRunner().run, [GRAPHVIZ, "-Tsvg"], input=lineage.dot(), check=False)
    try:
        drawn = await asyncio.to_thread(draw, timeout=DRAW_SECONDS)
    except TransportError:  # it took too long
        drawn = None
    if drawn is None or drawn.returncode != 0:
        return Response("graphviz could not draw the lineage", 503, media_type="text/plain")
    return Response(drawn.stdout, media_type="image/svg+xml")


@router.post("/entry/{dataset}")
async def edit_entry(request: Request, user: PageUser, dataset: str) -> Response:
    """Store the fields whose text changed, and new free fields; labctl sets updated_by/at."""
    web = state(request)
    schema = web.config.data
    entry = await web.store.run(get_entry, dataset)
    before = editable(entry)
    form = read_form(await request.form(), before)
    changed = {name: value for name, value in form.values.items() if value != before[name].strip()}
    fields = collect(form, changed, schema, schema.required)
    status = 422
    if not form.errors and fields:
        try:
            await web.store.run(
                log_entries,
                web.config_of(user),
                [(dataset, fields)],
                update=True,
                actor=web.actor_of(user),
            )
        except ValidationError as exc:
            form.errors["_form"] = str(exc)
        except PermissionDenied as exc:
            form.errors["_form"], status = str(exc), 403
    if form.errors:
        return await _entry_page(request, user, dataset, form, status=status)
    return RedirectResponse(f"/entry/{dataset}?saved={len(fields)}", status_code=303)


@router.get("/usage")
async def usage_page(request: Request, user: PageUser, since: str = "") -> HTMLResponse:
    """Charts of where the lab's compute time went; the page's script reads /api/v1/usage."""
    error = ""
    try:
        if since:
            parse_day(since, "since")
    except ValidationError as exc:
        error = str(exc)
    return render(
        request,
        "usage.html",
        user,
        status=400 if error else 200,
        since=since,
        error=error,
        unaccounted=unaccounted(state(request).config),
    )
