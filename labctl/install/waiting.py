"""Whose watchdog a job waits for. Each member's watchdog moves only that member's jobs, so a job
queued for a member whose watchdog never ran (or stopped) stays where it is: `labctl queue`,
`labctl status` and the tick say so, and how to start it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from labctl.clock import age
from labctl.model.job import Job
from labctl.model.states import ACTIVE

HEARTBEAT_MAX_AGE = dt.timedelta(minutes=5)


def stale_after(cron_minutes: int) -> dt.timedelta:
    """How long a watchdog may be silent before it counts as not running: two cron intervals,
    at least HEARTBEAT_MAX_AGE."""
    return max(HEARTBEAT_MAX_AGE, dt.timedelta(minutes=2 * cron_minutes))


def watchdog_note(
    user: str, beats: Iterable[Mapping[str, Any]], now: dt.datetime, max_age: dt.timedelta
) -> str | None:
    """What a job of `user` waits for when `user`'s watchdog has not run within `max_age`
    (`beats`: the heartbeats, which record whose watchdog ran); None when it runs."""
    times = [beat["at"] for beat in beats if beat.get("user") == user]
    how = f"{user} runs 'labctl watchdog tick', or installs its cron with install.py"
    if not times:
        return f"waits for {user}'s watchdog, which has never run: {how}"
    if now - max(times) <= max_age:
        return None
    return f"waits for {user}'s watchdog, last run {age(max(times), now)} ago: {how}"


def watchdog_notes(
    jobs: Sequence[Job],
    beats: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    max_age: dt.timedelta,
) -> dict[str, str]:
    """`{job_id: note}` for each job still to move whose member's watchdog is not running."""
    moving = [job for job in jobs if job.status in ACTIVE]
    notes = {user: watchdog_note(user, beats, now, max_age) for user in {j.user for j in moving}}
    return {job.job_id: note for job in moving if (note := notes[job.user]) is not None}
