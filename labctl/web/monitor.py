"""The monitor pages: the queue (updated live by htmx), one job, and cancel/retry for its owner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from labctl.db import Database
from labctl.jobs.queue import get_job, list_jobs, retry_job
from labctl.jobs.states import JobState
from labctl.stages.cancel import cancel_and_stop
from labctl.stages.heartbeat import latest, sessions_seen
from labctl.web.auth import Principal, safe_next
from labctl.web.deps import PageUser, state
from labctl.web.render import render

router = APIRouter(include_in_schema=False)
POLL_SECONDS = 2
QUEUE_LIMIT = 200


def _queue(
    db: Database, member: str | None, status: JobState | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    jobs = list_jobs(db, user=member, status=status, limit=QUEUE_LIMIT)
    return jobs, latest(db), sessions_seen(db)


async def _render_queue(
    request: Request, user: Principal, name: str, member: str, status: JobState | None
) -> HTMLResponse:
    jobs, beats, sessions = await state(request).store.run(_queue, member or None, status)
    return render(
        request,
        name,
        user,
        jobs=jobs,
        beats=beats,
        sessions=sessions,
        member=member,
        wanted=status or "",
        states=list(JobState),
        poll=POLL_SECONDS,
        live_url="/monitor/live" + (f"?{request.url.query}" if request.url.query else ""),
    )


Member = Annotated[str, Query(alias="user")]


@router.get("/monitor")
async def monitor(
    request: Request, user: PageUser, member: Member = "", status: JobState | None = None
) -> HTMLResponse:
    return await _render_queue(request, user, "monitor.html", member, status)


@router.get("/monitor/live")
async def monitor_live(
    request: Request, user: PageUser, member: Member = "", status: JobState | None = None
) -> HTMLResponse:
    """The queue table, the watchdog heartbeats and the clusters' sessions alone: htmx swaps
    them in every few seconds."""
    return await _render_queue(request, user, "_queue.html", member, status)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, user: PageUser, job_id: str) -> HTMLResponse:
    job = await state(request).store.run(get_job, job_id)
    return render(request, "job.html", user, job=job, poll=POLL_SECONDS)


@router.get("/jobs/{job_id}/live")
async def job_live(request: Request, user: PageUser, job_id: str) -> HTMLResponse:
    job = await state(request).store.run(get_job, job_id)
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
