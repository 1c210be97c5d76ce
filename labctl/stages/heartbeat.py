"""Watchdog heartbeats: each stage run records when, where, for whom and what it did, in `meta`
(one record per stage, host and member: members' watchdogs may share a lab server).

A long-running loop writes the heartbeat of a run that did nothing at most once a minute
(`Pacer`), well within what `labctl doctor` calls stale (5 minutes).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labctl.clock import utcnow
from labctl.compute.transport import Session
from labctl.db import Database

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


def latest(db: Database) -> list[dict[str, Any]]:
    """The last run of each stage on each host for each member, newest first."""
    fields = ["stage", "host", "user", "at", "did"]
    return db.meta.find({"kind": HEARTBEAT_KIND}, fields, sort=[("at", -1)])


def record_sessions(db: Database, sessions: list[Session], user: str) -> None:
    """Record what `user`'s watchdog on this host found of each cluster's session (for the
    dashboard)."""
    host = socket.gethostname()
    for session in sessions:
        key = beat_key(SESSION_KIND, session.cluster, host, user)
        doc = {"key": key, "kind": SESSION_KIND, "host": host, "user": user, "at": utcnow()}
        doc.update(session.as_dict())
        db.meta.update({"key": key}, {"$set": doc}, upsert=True)


def sessions_seen(db: Database) -> list[dict[str, Any]]:
    """The last word of each host's watchdog on each cluster's session."""
    fields = ["cluster", "host", "user", "up", "since", "until", "via", "auth", "detail", "at"]
    found = {"kind": SESSION_KIND}
    return db.meta.find(found, fields, sort=[("cluster", 1), ("host", 1)])
