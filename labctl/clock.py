"""Time as labctl stores and shows it: aware UTC datetimes."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def age(since: dt.datetime | None, now: dt.datetime) -> str:
    """How long ago `since` was, in its largest whole unit: `42s`, `5m`, `3h`, `2d`."""
    if since is None:
        return ""
    seconds = int((now - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
