"""The monitor pages: the queue (updated live by htmx, filtered as `labctl retry|cancel` filter),
one job, and cancel/retry for its owner, of one job or of those ticked in the list (after a page
that lists them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from labctl.access.cancel import cancel_and_stop, carry_out_plan
from labctl.damaged import Listing
from labctl.db import Database
from labctl.errors import ValidationError
from labctl.jobs.actions import retry_job
from labctl.jobs.bulk import Selection, parse_action, parse_filter, plan
from labctl.jobs.queue import list_rows, read_job
from labctl.model.job import JobRow
from labctl.model.states import FailureReason, JobState
from labctl.stages.heartbeat import Heartbeats, heartbeats
from labctl.web.auth import Principal, safe_next
from labctl.web.deps import PageUser, state
from labctl.web.render import render

router = APIRouter(include_in_schema=False)
POLL_SECONDS = 2
QUEUE_LIMIT = 200


@dataclass(frozen=True)
class Queue:
    """The jobs, the watchdog's heartbeats and the clusters' sessions, each with the damaged."""

    jobs: Listing[JobRow]
    watchdog: Heartbeats


def _queue(db: Database, filter: Selection) -> Queue:
    return Queue(list_rows(db, filter.query(), limit=QUEUE_LIMIT), heartbeats(db))


@dataclass(frozen=True)
class Wanted:
    """The job list's filter as typed in its form (the query string)."""

    user: str = ""
    status: str = ""
    reason: str = ""
    since: str = ""
    cluster: str = ""
    job_type: str = ""

    def parsed(self, caller: str) -> Selection:
        return parse_filter(
            caller,
            status=[self.status],
            reason=[self.reason],
            user=self.user,
            since=self.since,
            cluster=self.cluster,
            job_type=self.job_type,
        )


async def _render_queue(
    request: Request, user: Principal, name: str, wanted: Wanted
) -> HTMLResponse:
    error = ""
    listed = Queue(Listing(), Heartbeats(heartbeats=[]))
    try:
        listed = await state(request).store.run(_queue, wanted.parsed(user.username))
    except ValidationError as exc:
        error = str(exc)
    return render(
        request,
        name,
        user,
        status=400 if error else 200,
        error=error,
        jobs=listed.jobs.items,
        damaged_jobs=listed.jobs.damaged,
        beats=listed.watchdog.heartbeats,
        sessions=listed.watchdog.sessions,
        damaged_records=listed.watchdog.damaged,
        wanted=wanted,
        states=list(JobState),
        reasons=list(FailureReason),
        poll=POLL_SECONDS,
        live_url="/monitor/live" + (f"?{request.url.query}" if request.url.query else ""),
    )


@router.get("/monitor")
async def monitor(
    request: Request, user: PageUser, wanted: Annotated[Wanted, Depends()]
) -> HTMLResponse:
    return await _render_queue(request, user, "monitor.html", wanted)


@router.get("/monitor/live")
async def monitor_live(
    request: Request, user: PageUser, wanted: Annotated[Wanted, Depends()]
) -> HTMLResponse:
    """The queue table, the watchdog heartbeats and the clusters' sessions alone: htmx swaps
    them in every few seconds."""
    return await _render_queue(request, user, "_queue.html", wanted)


Picked = Annotated[list[str], Query(alias="job")]


@router.get("/monitor/confirm")
async def confirm(
    request: Request,
    user: PageUser,
    action: str = "",
    picked: Picked = [],  # noqa: B006
) -> HTMLResponse:
    """The jobs ticked in the list, and what `action` would do to each: nothing is done yet."""
    return await _bulk_page(request, user, action, picked, act=False)


@router.post("/monitor/bulk")
async def bulk(
    request: Request,
    user: PageUser,
    action: Annotated[str, Form()] = "",
    picked: Annotated[list[str], Form(alias="job")] = [],  # noqa: B006
) -> HTMLResponse:
    """Do what the confirmation page listed, to each job still in a state that allows it."""
    return await _bulk_page(request, user, action, picked, act=True)


async def _bulk_page(
    request: Request, user: Principal, action: str, picked: list[str], act: bool
) -> HTMLResponse:
    web = state(request)
    chosen = outcome = None
    error = "" if picked else "tick one or more jobs in the list first"
    if picked:
        try:
            chosen = await web.store.run(
                plan, parse_action(action), Selection(ids=tuple(picked)), user.username
            )
        except ValidationError as exc:
            error = str(exc)
    if chosen and act:
        outcome = await web.store.run(carry_out_plan, web.config, chosen, user.username)
    return render(
        request,
        "bulk.html",
        user,
        status=400 if error else 200,
        error=error,
        chosen=chosen,
        outcome=outcome,
    )


@router.get("/jobs/{job_id}")
async def job_page(request: Request, user: PageUser, job_id: str) -> HTMLResponse:
    job = await state(request).store.run(read_job, job_id)
    return render(request, "job.html", user, job=job, poll=POLL_SECONDS)


@router.get("/jobs/{job_id}/live")
async def job_live(request: Request, user: PageUser, job_id: str) -> HTMLResponse:
    job = await state(request).store.run(read_job, job_id)
    return render(request, "_job_live.html", user, job=job, poll=POLL_SECONDS)


Action = Callable[[Database, str, str], dict[str, Any]]


async def _act(
    request: Request, user: Principal, action: Action, job_id: str, back: str | None
) -> RedirectResponse:
    await state(request).store.run(action, job_id, user.username)
    return RedirectResponse(safe_next(back, f"/jobs/{job_id}"), status_code=303)


@router.post("/jobs/{job_id}/cancel")
async def cancel(
    request: Request, user: PageUser, job_id: str, back: Annotated[str | None, Form()] = None
) -> RedirectResponse:
    web = state(request)
    await web.store.run(cancel_and_stop, web.config, job_id, user.username)
    return RedirectResponse(safe_next(back, f"/jobs/{job_id}"), status_code=303)


@router.post("/jobs/{job_id}/retry")
async def retry(
    request: Request, user: PageUser, job_id: str, back: Annotated[str | None, Form()] = None
) -> RedirectResponse:
    return await _act(request, user, retry_job, job_id, back)
