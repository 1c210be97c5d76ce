"""The texts of notifications, pure: jobs in, subject and body out."""

from __future__ import annotations

import hashlib
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from labctl.model.job import Job, NoticeEvent

LOG_LINES = 30


@dataclass(frozen=True)
class Message:
    """One message to a member, by e-mail or webhook. `key` is the same on every attempt to
    send it, so that a copy sent twice can be recognised."""

    subject: str
    body: str
    key: str


@dataclass(frozen=True)
class Event:
    """One notice of one job, and for a merge job the array it merged."""

    job: Job
    key: str
    parent: Job | None = None

    @property
    def kind(self) -> NoticeEvent:
        return self.job.notices[self.key].event


def _what(job: Job) -> str:
    return f"{job.job_type} on {job.dataset}, cluster {job.compute_cluster}"


def _indent(text: str) -> list[str]:
    return [f"    {line}" for line in text.splitlines()]


def completed(job: Job, parent: Job | None) -> tuple[str, list[str]]:
    lines = [f"Job {job.job_id} ({_what(job)}) completed."]
    if parent is not None:
        tasks = parent.scheduler.tasks if parent.scheduler else 1
        lines.append(
            f"It merged the {tasks} tasks of array job {parent.job_id}"
            f" (their parts: {parent.result_dir})."
        )
    lines += ["", f"Results: {job.result_dir}"]
    lines += [f"    {r.name}  {r.size} bytes  sha256 {r.sha256}" for r in job.results]
    lines += [
        f"All {len(job.results)} result files were verified: their SHA-256 checksums match "
        "those computed on the cluster.",
        "",
        f"Details: {shlex.join(['labctl', 'status', job.job_id])}",
    ]
    return f"job {job.job_id} completed: {job.job_type} on {job.dataset}", lines


def failed(job: Job) -> tuple[str, list[str]]:
    why = f"{job.failure.reason}: {job.failure.message}" if job.failure else "no reason recorded"
    tail = (job.log_tail or "").strip().splitlines()[-LOG_LINES:]
    lines = [f"Job {job.job_id} ({_what(job)}) failed.", f"Reason: {why}", ""]
    if tail:
        lines += ["The last lines of its log:", *_indent("\n".join(tail)), ""]
    else:
        lines += ["No log was read from the cluster.", ""]
    lines += [
        "To run it again from the start:",
        "    " + shlex.join(["labctl", "retry", job.job_id]),
    ]
    return f"job {job.job_id} failed: {job.job_type} on {job.dataset}", lines


def session(cluster: str, jobs: Sequence[Job]) -> tuple[str, list[str]]:
    lines = [
        f"Your session to cluster {cluster} is down: {len(jobs)} of your jobs cannot go on until "
        "you open it again.",
        *(f"    {job.job_id} ({job.job_type} on {job.dataset}, {job.status})" for job in jobs),
        "",
        "Open it with:",
        f"    {shlex.join(['labctl', 'connect', cluster])}",
    ]
    return f"{len(jobs)} job(s) wait for your session to {cluster}", lines


def outage(cluster: str, jobs: Sequence[Job]) -> tuple[str, list[str]]:
    lines = [
        f"Cluster {cluster} cannot be reached (ssh could not connect): {len(jobs)} of your jobs "
        "wait for it.",
        *(f"    {job.job_id} ({job.job_type} on {job.dataset}, {job.status})" for job in jobs),
        "",
        "Nothing failed and no retry is spent: the watchdog keeps trying, and the jobs go on by "
        f"themselves once {cluster} is back. You need not do anything.",
        f"Their status says: {jobs[0].waiting}",
    ]
    return f"{len(jobs)} job(s) wait for cluster {cluster}: it cannot be reached", lines


WAITS = {NoticeEvent.SESSION: session, NoticeEvent.OUTAGE: outage}
"""The events that jobs wait for together, each told in one message for all of them."""


def one(event: Event) -> tuple[str, list[str]]:
    """The subject and lines telling of one event."""
    if event.kind is NoticeEvent.COMPLETED:
        return completed(event.job, event.parent)
    if event.kind is NoticeEvent.FAILED:
        return failed(event.job)
    return WAITS[event.kind](event.job.notices[event.key].cluster, [event.job])


def _key(kind: str, events: Sequence[Event]) -> str:
    if len(events) == 1:
        return f"{events[0].job.job_id}.{events[0].key}"
    ids = "\n".join(sorted(f"{e.job.job_id}.{e.key}" for e in events))
    return f"{kind}.{hashlib.sha256(ids.encode()).hexdigest()[:20]}"


def message(events: Sequence[Event], *, digest: bool = False) -> Message:
    """One message for `events`: one event as it is; jobs waiting for one session (or one
    cluster's outage) together; a member's digest with every event of the day, one after the
    other."""
    if not digest and len(events) == 1:
        subject, lines = one(events[0])
        return Message(subject, "\n".join(lines) + "\n", _key("job", events))
    if not digest:
        kind = events[0].kind
        cluster = events[0].job.notices[events[0].key].cluster
        subject, lines = WAITS[kind](cluster, [e.job for e in events])
        return Message(subject, "\n".join(lines) + "\n", _key(str(kind), events))
    counts = Counter(e.kind for e in events)
    said = {
        NoticeEvent.SESSION: "waiting for a session",
        NoticeEvent.OUTAGE: "waiting for a cluster",
    }
    subject = "daily digest: " + ", ".join(
        f"{counts[kind]} {said.get(kind, kind)}" for kind in NoticeEvent if counts[kind]
    )
    parts = []
    for event in events:
        title, lines = one(event)
        parts.append("\n".join([f"== {title}", *lines]))
    return Message(subject, "\n\n".join(parts) + "\n", _key("digest", events))
