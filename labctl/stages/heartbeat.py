"""Watchdog heartbeats: each stage run records when, where and what it did, in `meta`.

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


def beat(db: Database, stage: str, did: Mapping[str, int]) -> None:
    """Record one run of `stage` on this host, e.g. `did={"cleaned": 2, "errors": 0}`."""
    host = socket.gethostname()
    key = f"heartbeat:{stage}:{host}"
    doc = {
        "key": key,
        "kind": "heartbeat",
        "stage": stage,
        "host": host,
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

    def beat(self, db: Database, stage: str, did: Mapping[str, int]) -> None:
        if did or self.due(stage):
            beat(db, stage, did)
            self.written[stage] = time.monotonic()


def latest(db: Database) -> list[dict[str, Any]]:
    """The last run of each stage on each host, newest first."""
    return db.meta.find({"kind": "heartbeat"}, ["stage", "host", "at", "did"], sort=[("at", -1)])


def record_sessions(db: Database, sessions: list[Session]) -> None:
    """Record what this host's watchdog found of each cluster's session (for the dashboard)."""
    host = socket.gethostname()
    for session in sessions:
        key = f"cluster_session:{session.cluster}:{host}"
        doc = {"key": key, "kind": "cluster_session", "host": host, "at": utcnow()}
        doc.update(session.as_dict())
        db.meta.update({"key": key}, {"$set": doc}, upsert=True)


def sessions_seen(db: Database) -> list[dict[str, Any]]:
    """The last word of each host's watchdog on each cluster's session."""
    fields = ["cluster", "host", "up", "since", "until", "via", "auth", "detail", "at"]
    found = {"kind": "cluster_session"}
    return db.meta.find(found, fields, sort=[("cluster", 1), ("host", 1)])
