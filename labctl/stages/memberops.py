"""The watchdog's operations on what the store says of its member and of itself, rather than of
one job: how the member is told of their jobs, the watchdog's heartbeats and sessions, and
whether there is work (see `labctl.stages.ops` for the jobs' own)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from labctl.config.notifyconfig import Mode
from labctl.jobs.work import pending_filter
from labctl.stages.heartbeat import SessionReport, beat, record_sessions
from labctl.stages.seam import LocalStore, Name, Op
from labctl.users import recipient


class Notified(BaseModel):
    """How the member is told of their jobs, as their user record says."""

    email: str = ""
    mode: Mode = "each"
    webhook: str | None = None


class HowNotified(Op[Notified]):
    op: Literal["how_notified"] = "how_notified"

    def apply(self, store: LocalStore) -> Notified:
        who = recipient(store.db, store.member)
        return Notified(email=who.email, mode=who.mode, webhook=who.webhook)


class Beat(Op[None]):
    """Record one run of a stage of the member's watchdog on `host`."""

    op: Literal["beat"] = "beat"
    stage: Name
    host: Name
    did: Annotated[dict[Name, int], Field(max_length=100)]

    def apply(self, store: LocalStore) -> None:
        beat(store.db, self.stage, self.did, store.member, self.host)


class RecordSessions(Op[None]):
    """Record what the member's watchdog on `host` found of each cluster's session."""

    op: Literal["record_sessions"] = "record_sessions"
    host: Name
    sessions: Annotated[list[SessionReport], Field(max_length=100)]

    def apply(self, store: LocalStore) -> None:
        record_sessions(store.db, self.sessions, store.member, self.host)


class HasWork(Op[bool]):
    """Whether a stage may have something to do for the member (one read)."""

    op: Literal["has_work"] = "has_work"

    def apply(self, store: LocalStore) -> bool:
        return store.db.queue.find_one(pending_filter(store.member), ["job_id"]) is not None
