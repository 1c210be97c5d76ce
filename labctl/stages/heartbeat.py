"""Watchdog heartbeats: each stage run records when, where and what it did, in `meta`."""

from __future__ import annotations

import socket
from collections.abc import Mapping
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
