"""Retrying or cancelling many jobs at once: which jobs a filter (or a list of ids) selects, which
of them the caller may touch in their state, and what happened to each.

The CLI (`labctl retry|cancel`), the REST API (`POST /api/v1/jobs/bulk`) and the dashboard's job
list all select here; jobs are read and changed through `labctl.jobs.queue` alone.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from labctl.catalog.query import parse_day
from labctl.db import Database, Doc
from labctl.errors import LabctlError, NotFoundError, PermissionDenied, ValidationError
from labctl.jobs.actions import (
    cancel_job,
    check_cancellable,
    check_may_change,
    check_retryable,
    is_admin,
    retry_job,
)
from labctl.jobs.queue import (
    find_jobs,
)
from labctl.model.job import Job, MalformedJob
from labctl.model.states import FailureReason, JobState

ME = "me"  # `--user me`: the caller
FILTER_FIELDS = ("status", "reason", "user", "since", "cluster", "job_type")
"""What a filter may name: `parse_filter`'s keywords."""
E = TypeVar("E", bound=StrEnum)


class Action(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"

    @property
    def done(self) -> str:
        """What a touched job became, as the summary says it: `requeued 2 job(s)`."""
        return "requeued" if self is Action.RETRY else str(JobState.CANCELLED)

    def check(self, job: Job) -> None:
        """Raise ValidationError unless `job`'s state allows this action."""
        (check_retryable if self is Action.RETRY else check_cancellable)(job)

    def apply(self, db: Database, job_id: str, username: str) -> Doc:
        """The one job's change in the queue (a cancel's stop on the cluster is the caller's)."""
        return (retry_job if self is Action.RETRY else cancel_job)(db, job_id, username)


@dataclass(frozen=True)
class Selection:
    """Named jobs (`ids`), or every job matching all the filter's fields that are set."""

    ids: tuple[str, ...] = ()
    status: tuple[JobState, ...] = ()
    reason: tuple[FailureReason, ...] = ()
    user: str | None = None
    since: dt.datetime | None = None  # last changed on or after
    cluster: str | None = None
    job_type: str | None = None

    @property
    def is_filter(self) -> bool:
        return bool(
            self.status or self.reason or self.user or self.since or self.cluster or self.job_type
        )

    def query(self) -> dict[str, Any]:
        """The queue filter that selects these jobs."""
        if self.ids:
            return {"job_id": {"$in": list(self.ids)}}
        fields: dict[str, Any] = {
            "status": {"$in": [str(s) for s in self.status]} if self.status else None,
            "failure.reason": {"$in": [str(r) for r in self.reason]} if self.reason else None,
            "user": self.user,
            "updated_at": {"$gte": self.since} if self.since else None,
            "compute_cluster": self.cluster,
            "job_type": self.job_type,
        }
        return {name: value for name, value in fields.items() if value is not None}

    def describe(self) -> str:
        """`status failed, reason timeout, user alice, since 2026-11-01`."""
        if self.ids:
            return "ids " + ", ".join(self.ids)
        parts = [
            ("status", ",".join(self.status)),
            ("reason", ",".join(self.reason)),
            ("user", self.user),
            ("since", self.since and self.since.strftime("%Y-%m-%d %H:%M")),
            ("cluster", self.cluster),
            ("job type", self.job_type),
        ]
        return ", ".join(f"{name} {value}" for name, value in parts if value) or "every job"


def _words(kind: type[E], given: Iterable[str], what: str) -> tuple[E, ...]:
    """Each word of `given` (repeated, or comma-separated) as a member of `kind`."""
    words = [w.strip().lower() for text in given for w in text.split(",") if w.strip()]
    known = {str(member): member for member in kind}
    for word in words:
        if word not in known:
            raise ValidationError(f"unknown {what} {word!r} (known: {', '.join(known)})")
    return tuple(dict.fromkeys(known[w] for w in words))


def parse_action(text: str) -> Action:
    """`retry` or `cancel`, as a form or a query string gives it."""
    found = _words(Action, [text], "action")
    if len(found) != 1:
        raise ValidationError(f"name one action: {', '.join(Action)}")
    return found[0]


def parse_filter(
    caller: str,
    *,
    status: Iterable[str] = (),
    reason: Iterable[str] = (),
    user: str | None = None,
    since: str | None = None,
    cluster: str | None = None,
    job_type: str | None = None,
) -> Selection:
    """A filter as typed (`--status failed,cancelled --user me --since 2026-11-01`), checked:
    bad words and dates raise ValidationError. `me` is `caller`."""
    user = (user or "").strip() or None
    return Selection(
        status=_words(JobState, status, "state"),
        reason=_words(FailureReason, reason, "reason"),
        user=caller if user == ME else user,
        since=parse_day(since.strip(), "since") if since and since.strip() else None,
        cluster=(cluster or "").strip() or None,
        job_type=(job_type or "").strip() or None,
    )


def choose(ids: Sequence[str], filter: Selection) -> Selection:
    """Named jobs or a filter: both at once is refused, and so is neither."""
    if ids and filter.is_filter:
        raise ValidationError("give job ids or a filter, not both")
    if not ids and not filter.is_filter:
        raise ValidationError(
            "name job ids or a filter (--status, --reason, --user, --since, --cluster, --job-type)"
        )
    return Selection(ids=tuple(dict.fromkeys(ids))) if ids else filter


def scoped(db: Database, selection: Selection, caller: str) -> Selection:
    """`selection` as `caller` may use it: an admin's as it is; a member's filter covers their own
    jobs only (one naming another member is refused). Named jobs are checked one by one."""
    if selection.ids or is_admin(db, caller):
        return selection
    if selection.user not in (None, caller):
        raise PermissionDenied(
            f"only an admin may touch {selection.user}'s jobs; {caller} may select their own "
            "alone (--user me)"
        )
    return replace(selection, user=caller)


@dataclass(frozen=True)
class Skip:
    """A selected job left alone: `why` in a few words (for the summary) and the whole error."""

    job_id: str
    why: str
    error: LabctlError


@dataclass
class Plan:
    """What an action on a selection would touch: the jobs selected (last changed first) and
    those of them it must leave alone."""

    action: Action
    selection: Selection
    jobs: list[Job]
    skipped: list[Skip] = field(default_factory=list)

    @property
    def ready(self) -> list[Job]:
        return [job for job in self.jobs if job.job_id not in self._why]

    def why_not(self, job_id: str) -> str:
        """Why the job will be left alone, in a few words; "" if it will be touched."""
        return self._why.get(job_id, "")

    @cached_property
    def _why(self) -> dict[str, str]:
        return {skip.job_id: skip.why for skip in self.skipped}


def plan(db: Database, action: Action, selection: Selection, caller: str) -> Plan:
    """The jobs `selection` picks for `caller` (see `scoped`), and which of them `action` skips:
    another member's, one in a state it does not apply to, one unreadable or not found."""
    selection = scoped(db, selection, caller)
    unreadable: list[MalformedJob] = []
    jobs = find_jobs(db, selection.query(), unreadable.append, archived=True)
    jobs.sort(key=lambda job: job.updated_at, reverse=True)
    skipped = [Skip(exc.job_id, "unreadable", exc) for exc in unreadable]
    found = {job.job_id for job in jobs} | {exc.job_id for exc in unreadable}
    skipped += [
        Skip(job_id, "not found", NotFoundError(f"no job {job_id}"))
        for job_id in selection.ids
        if job_id not in found
    ]
    admin = is_admin(db, caller)
    for job in jobs:
        try:
            if not admin and job.user != caller:
                check_may_change(db, job, caller)
            action.check(job)
        except PermissionDenied as exc:
            skipped.append(Skip(job.job_id, f"{job.user}'s", exc))
        except ValidationError as exc:
            skipped.append(Skip(job.job_id, str(job.status), exc))
    return Plan(action, selection, jobs, skipped)


@dataclass
class Outcome:
    """What a bulk action did: each touched job as it is now, a line per job, and the skipped."""

    action: Action
    done: list[Doc] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def summary(self) -> str:
        return summary_line(self.action, len(self.done), [skip.why for skip in self.skipped])

    @property
    def exit_code(self) -> int:
        """0 if every selected job was touched, else the most serious skip's (as its error's)."""
        return max((skip.error.exit_code for skip in self.skipped), default=0)


def summary_line(action: Action, done: int, skipped: Sequence[str]) -> str:
    """`requeued 2 job(s); skipped 3 (2 running, 1 bob's)`, from the skips' reasons."""
    text = f"{action.done} {done} job(s)"
    if skipped:
        why = sorted(Counter(skipped).items(), key=lambda w: (-w[1], w[0]))
        text += f"; skipped {len(skipped)} (" + ", ".join(f"{n} {r}" for r, n in why) + ")"
    return text


class Skipped(BaseModel):
    """A skipped job as a report tells of it."""

    job_id: str
    why: str = Field(description="in a few words: the job's state, its owner's, not found")
    detail: str
    exit_code: int = Field(description="the command line's exit code for this reason")


class BulkReport(BaseModel):
    """The selection, and what was done to it (if it was): `--json` and the API's answer."""

    action: Action
    selection: str = Field(description="the selection in words")
    jobs: list[Doc] = Field(description="the jobs selected, last changed first")
    acted: bool = Field(description="whether anything was done (`confirm`)")
    done: list[Doc] = Field(description="the jobs touched, as they are now")
    lines: list[str] = Field(description="what was done to each job, a line each")
    skipped: list[Skipped]
    summary: str


def report(chosen: Plan, outcome: Outcome | None) -> BulkReport:
    skipped = outcome.skipped if outcome else chosen.skipped
    return BulkReport(
        action=chosen.action,
        selection=chosen.selection.describe(),
        jobs=[job.doc() for job in chosen.jobs],
        acted=outcome is not None,
        done=outcome.done if outcome else [],
        lines=outcome.lines if outcome else [],
        skipped=[
            Skipped(job_id=s.job_id, why=s.why, detail=str(s.error), exit_code=s.error.exit_code)
            for s in skipped
        ],
        summary=outcome.summary() if outcome else "nothing done",
    )


Act = Callable[[Database, str, str], Doc]


def carry_out(db: Database, plan: Plan, caller: str, act: Act | None = None) -> Outcome:
    """Apply the plan's action (or `act`) to each of its ready jobs, each on its own: one that
    moved on meanwhile is skipped, the rest go on."""
    outcome = Outcome(plan.action, skipped=list(plan.skipped))
    for job in plan.ready:
        try:
            done = (act or plan.action.apply)(db, job.job_id, caller)
        except LabctlError as exc:
            outcome.skipped.append(Skip(job.job_id, "changed meanwhile", exc))
            continue
        outcome.done.append(done)
        outcome.lines.append(f"{plan.action.done} {job.job_id}")
    return outcome
