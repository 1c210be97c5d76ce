"""Watchdog heartbeats: each stage run records when, where, for whom and what it did, in `meta`
(one record per stage, host and member: members' watchdogs may share a lab server).

A long-running loop writes the heartbeat of a run that did nothing at most once a minute
(`Pacer`), well within what `labctl doctor` calls stale (5 minutes).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from labctl.clock import utcnow
from labctl.compute.transport import Session
from labctl.compute.transport.target import Auth
from labctl.damaged import Damaged, Listing, validated
from labctl.db import Database, Doc

HEARTBEAT_KIND = "heartbeat"
SESSION_KIND = "cluster_session"


def beat_key(kind: str, name: str, host: str, user: str) -> str:
    """The `meta` key of `user`'s watchdog's record of a stage (or cluster session) on `host`."""
    return f"{kind}:{name}:{host}:{user}"


def beat(db: Database, stage: str, did: Mapping[str, int], user: str, host: str) -> None:
    """Record one run of `stage` for `user` on `host`, e.g. `did={"cleaned": 2}`."""
    key = beat_key(HEARTBEAT_KIND, stage, host, user)
    doc = {
        "key": key,
        "kind": HEARTBEAT_KIND,
        "stage": stage,
        "host": host,
        "user": user,
        "at": utcnow(),
        "did": dict(did),
    }
    db.meta.update({"key": key}, {"$set": doc}, upsert=True)


IDLE_BEAT_SECONDS = 60.0


@dataclass
class Pacer:
    """Says when a run that did nothing writes its heartbeat: at most every `IDLE_BEAT_SECONDS`."""

    written: dict[str, float] = field(default_factory=dict)

    def due(self, stage: str) -> bool:
        """Whether an idle run of `stage` would write its heartbeat now."""
        last = self.written.get(stage)
        return last is None or time.monotonic() - last >= IDLE_BEAT_SECONDS

    def beats(self, stage: str, did: Mapping[str, int]) -> bool:
        """Whether this run of `stage` writes its heartbeat (counted as written if so)."""
        if did or self.due(stage):
            self.written[stage] = time.monotonic()
            return True
        return False


class StageBeat(BaseModel):
    """A stage's heartbeat as `beat` writes it."""

    stage: str
    host: str
    user: str | None = None  # none before members' watchdogs shared a server
    at: dt.datetime
    did: dict[str, int] = Field(default_factory=dict)


class Heartbeats(BaseModel):
    """What the watchdog last said, and its records that cannot be read."""

    heartbeats: list[Doc] = Field(description="the last run of each watchdog stage on each host")
    sessions: list[Doc] = Field(
        default_factory=list,
        description="each host's watchdog's last word on each cluster's session",
    )
    damaged: list[Damaged] = Field(
        default_factory=list, description="heartbeats and sessions in `meta` that do not validate"
    )


def _listed(model: type[BaseModel], kind: str, docs: list[Doc]) -> Listing[Doc]:
    found = validated(model, docs, kind, "key")
    return Listing([item.model_dump() for item in found.items], found.damaged)


def latest(db: Database) -> Listing[Doc]:
    """The last run of each stage on each host for each member, newest first."""
    beats = db.meta.find({"kind": HEARTBEAT_KIND}, sort=[("at", -1)])
    return _listed(StageBeat, "heartbeat", beats)


class SessionReport(BaseModel):
    """What a watchdog found of one cluster's session (`Session`, as recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: Annotated[str, Field(min_length=1, max_length=200)]
    up: bool
    auth: Auth
    via: Annotated[str, Field(max_length=300)] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    pid: int | None = None
    detail: Annotated[str, Field(max_length=2000)] = ""

    @classmethod
    def of(cls, session: Session) -> SessionReport:
        return cls.model_validate(session.as_dict())


class SessionSeen(SessionReport):
    """A cluster's session as `record_sessions` writes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str
    user: str | None = None  # none before members' watchdogs shared a server
    at: dt.datetime


def record_sessions(db: Database, sessions: Sequence[SessionReport], user: str, host: str) -> None:
    """Record what `user`'s watchdog on `host` found of each cluster's session (for the
    dashboard)."""
    for session in sessions:
        key = beat_key(SESSION_KIND, session.cluster, host, user)
        doc = {"key": key, "kind": SESSION_KIND, "host": host, "user": user, "at": utcnow()}
        doc.update(session.model_dump())
        db.meta.update({"key": key}, {"$set": doc}, upsert=True)


def sessions_seen(db: Database) -> Listing[Doc]:
    """The last word of each host's watchdog on each cluster's session."""
    seen = db.meta.find({"kind": SESSION_KIND}, sort=[("cluster", 1), ("host", 1)])
    return _listed(SessionSeen, "session", seen)


def heartbeats(db: Database) -> Heartbeats:
    """The heartbeats and the sessions, with their damaged records."""
    beats, sessions = latest(db), sessions_seen(db)
    damaged = [*beats.damaged, *sessions.damaged]
    return Heartbeats(heartbeats=beats.items, sessions=sessions.items, damaged=damaged)
