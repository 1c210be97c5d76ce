"""A filter as the embedded store (litemongo) must be given it to mean what it means to MongoDB."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labctl.regex import LinearRegex


def embedded_filter(filter: Any) -> Any:
    """`filter` for litemongo: every `$regex` matched by RE2 (`LinearRegex`), and `{"$ne": None}`
    false where the path runs through a null (`scheduler.job_id` of `scheduler: null`), as in
    MongoDB; litemongo alone would match it."""
    if isinstance(filter, Mapping):
        items = filter.items()
        out = {k: LinearRegex(v) if k == "$regex" else embedded_filter(v) for k, v in items}
        if "$ne" in out and out["$ne"] is None and "$exists" not in out:
            out["$exists"] = True
        return out
    if isinstance(filter, list):
        return [embedded_filter(item) for item in filter]
    return filter
