"""Watchdog heartbeats: each stage run records when, where, for whom and what it did, in `meta`
(one record per stage, host and member: members' watchdogs may share a lab server).

A long-running loop writes the heartbeat of a run that did nothing at most once a minute
(`Pacer`), well within what `labctl doctor` calls stale (5 minutes).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from labctl.clock import utcnow
from labctl.compute.transport import Session
from labctl.damaged import Damaged, Listing, validated
from labctl.db import Database, Doc

HEARTBEAT_KIND = "heartbeat"
SESSION_KIND = "cluster_session"


def beat_key(kind: str, name: str, host: str, user: str) -> str:
    """The `meta` key of `user`'s watchdog's record of a stage (or cluster session) on `host`."""
    return f"{kind}:{name}:{host}:{user}"


def beat(db: Database, stage: str, did: Mapping[str, int], user: str) -> None:
    """Record one run of `stage` for `user` on this host, e.g. `did={"cleaned": 2}`."""
    host = socket.gethostname()
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
    """When this process last wrote each stage's heartbeat. A run that did something always
    writes it; one that did nothing only once IDLE_BEAT_SECONDS have passed since the last."""

    written: dict[str, float] = field(default_factory=dict)

    def due(self, stage: str) -> bool:
        last = self.written.get(stage)
        return last is None or time.monotonic() - last >= IDLE_BEAT_SECONDS

    def beat(self, db: Database, stage: str, did: Mapping[str, int], user: str) -> None:
        if did or self.due(stage):
            beat(db, stage, did, user)
            self.written[stage] = time.monotonic()


class Beat(BaseModel):
    """A stage's heartbeat as `beat` writes it."""

    stage: str
    host: str
    user: str | None = None  # none before members' watchdogs shared a server
    at: dt.datetime
    did: dict[str, int] = Field(default_factory=dict)


class SessionSeen(BaseModel):
    """A cluster's session as `record_sessions` writes it."""

    cluster: str
    host: str
    user: str | None = None
    up: bool
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    via: str | None = None
    auth: str | None = None
    detail: str = ""
    at: dt.datetime


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
    return _listed(Beat, "heartbeat", beats)


def record_sessions(db: Database, sessions: list[Session], user: str) -> None:
    """Record what `user`'s watchdog on this host found of each cluster's session (for the
    dashboard)."""
    host = socket.gethostname()
    for session in sessions:
        key = beat_key(SESSION_KIND, session.cluster, host, user)
        doc = {"key": key, "kind": SESSION_KIND, "host": host, "user": user, "at": utcnow()}
        doc.update(session.as_dict())
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
