"""What a member's watchdog may do through the service (`labctl.web.deputy`), on both backends:
each operation a forged or buggy watchdog might send with bob's token, and what it changes.

The end-to-end runs (the real service, real watchdogs) are in test_service_watchdog.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson.code import Code

from labctl.config import Config
from labctl.db import Database
from labctl.errors import PermissionDenied, ValidationError
from labctl.jobs.queue import get_job
from labctl.jobs.states import InvalidTransition, JobState
from labctl.servicedb import decode, encode
from labctl.stages.heartbeat import beat_key
from labctl.web.deputy import serve
from tests.jobfixtures import DATASET, job_in_state


@pytest.fixture
def lab(db: Database, cfg: Config) -> tuple[Database, Config]:
    return db, cfg


def ask(db: Database, member: str, collection: str, op: str, **args: Any) -> Any:
    """One operation as `member`'s watchdog sends it; its result."""
    body = encode({"collection": collection, "op": op, "args": args})
    return decode(serve(db, body, member))["result"]


def test_filters_reach_only_the_member_s_jobs(lab: tuple[Database, Config]) -> None:
    db, cfg = lab
    alices = job_in_state(db, cfg, user="alice")
    bobs = job_in_state(db, cfg, user="bob")
    assert [j["job_id"] for j in ask(db, "bob", "queue", "find", filter={})] == [bobs]
    assert ask(db, "bob", "queue", "find_one", filter={"job_id": alices}) is None
    assert ask(db, "bob", "queue", "find", filter={"user": "alice"}) == []
    assert ask(db, "bob", "queue", "count", filter={}) == 1
    lease = {"$set": {"owner": "bob:1", "lease_until": dt.datetime.now(dt.UTC)}}
    assert ask(db, "bob", "queue", "claim", filter={"job_id": alices}, update=lease) is None
    assert ask(db, "bob", "queue", "update", filter={}, update=lease, many=True) == 1
    assert db.queue.find_one({"job_id": alices})["owner"] is None
    assert db.queue.find_one({"job_id": bobs})["owner"] == "bob:1"


@pytest.mark.parametrize(
    "change",
    [
        {"$set": {"user": "alice"}},
        {"$set": {"dataset": "20200101_000000"}},
        {"$set": {"datarawfiles": ["../../.config/labctl/config.yaml"]}},
        {"$set": {"job_options.sleep_seconds": "9"}},
        {"$set": {"pipelines": {}}},
        {"$set": {"password_hash": "x"}},  # not a job's field at all
        {"$push": {"results": {"name": "forged"}}},
        {"$unset": {"history": ""}},
        {"$rename": {"history": "h"}},
    ],
)
def test_what_a_job_was_asked_to_do_never_changes(
    lab: tuple[Database, Config], change: dict[str, Any]
) -> None:
    db, cfg = lab
    bobs = job_in_state(db, cfg, user="bob")
    before = db.queue.find_one({"job_id": bobs})
    with pytest.raises(PermissionDenied, match="may not"):
        ask(db, "bob", "queue", "update", filter={"job_id": bobs}, update=change)
    assert db.queue.find_one({"job_id": bobs}) == before


def test_a_state_moves_only_as_the_state_machine_allows(lab: tuple[Database, Config]) -> None:
    db, cfg = lab
    bobs = job_in_state(db, cfg, user="bob")
    done = {"$set": {"status": str(JobState.COMPLETED)}}
    with pytest.raises(PermissionDenied, match="from the state the write names"):
        ask(db, "bob", "queue", "update", filter={"job_id": bobs}, update=done)
    with pytest.raises(PermissionDenied, match="set whole"):
        ask(db, "bob", "queue", "update", filter={"job_id": bobs}, update={"$set": {"status.x": 1}})
    queued = {"job_id": bobs, "status": str(JobState.QUEUED)}
    with pytest.raises(InvalidTransition, match="cannot become completed"):
        ask(db, "bob", "queue", "claim", filter=queued, update=done)
    assert get_job(db, bobs)["status"] == JobState.QUEUED
    moving = {"$set": {"status": str(JobState.AWAITING_DATA)}}
    assert (
        ask(db, "bob", "queue", "claim", filter=queued, update=moving)["status"] == "awaiting_data"
    )


def test_new_jobs_are_the_member_s_and_queued(lab: tuple[Database, Config]) -> None:
    db, cfg = lab
    template = db.queue.find_one({"job_id": job_in_state(db, cfg, user="bob")}, None)
    template.pop("_id")
    for doc, refused in [
        ({**template, "job_id": "j-for-alice", "user": "alice"}, "for bob only"),
        ({**template, "job_id": "j-done", "status": "completed"}, "starts queued"),
    ]:
        with pytest.raises(PermissionDenied, match=refused):
            ask(db, "bob", "queue", "insert", doc=doc)
    with pytest.raises(ValidationError):
        ask(db, "bob", "queue", "insert", doc={"job_id": "j-x", "user": "bob"})
    assert db.queue.count({}) == 1
    ask(db, "bob", "queue", "insert", doc={**template, "job_id": "j-follow-up"})
    assert db.queue.find_one({"job_id": "j-follow-up"})["user"] == "bob"


def test_the_archive_holds_only_the_queue_s_own_copies(lab: tuple[Database, Config]) -> None:
    db, cfg = lab
    bobs = job_in_state(db, cfg, JobState.FAILED, user="bob")
    alices = job_in_state(db, cfg, JobState.FAILED, user="alice")
    live = db.queue.find_one({"job_id": bobs})
    copy = {**live, "_id": bobs, "owner": None, "lease_until": None}
    with pytest.raises(PermissionDenied, match="leaves the queue only once"):
        ask(db, "bob", "queue", "delete", filter={"job_id": bobs})
    forged = {**copy, "log_tail": "all fine, really"}
    with pytest.raises(PermissionDenied, match="the queue's own copy"):
        ask(db, "bob", "archive", "insert", doc=forged)
    theirs = {**db.queue.find_one({"job_id": alices}), "_id": alices}
    with pytest.raises(PermissionDenied, match="the queue's own copy"):
        ask(db, "bob", "archive", "insert", doc=theirs)
    assert db.archive.count({}) == 0
    ask(db, "bob", "archive", "insert", doc=copy)
    with pytest.raises(PermissionDenied, match="leaves the queue only once"):
        ask(db, "bob", "queue", "delete", filter={"job_id": alices})
    assert ask(db, "bob", "queue", "delete", filter={"job_id": bobs}) == 1
    assert [d["job_id"] for d in db.archive.find({})] == [bobs]
    with pytest.raises(PermissionDenied, match="may not update in archive"):
        ask(db, "bob", "archive", "update", filter={}, update={"$set": {"log_tail": "fine"}})
    assert db.archive.find_one({"_id": bobs})["log_tail"] == copy["log_tail"]
    assert db.queue.find_one({"job_id": alices}) is not None


def test_results_only_of_the_member_s_job_being_retrieved(lab: tuple[Database, Config]) -> None:
    db, cfg = lab
    bobs = job_in_state(db, cfg, user="bob")
    alices = job_in_state(db, cfg, user="alice")
    record = {"$set": {f"results.{bobs}": {"dir": "/somewhere"}}}
    with pytest.raises(PermissionDenied, match="being retrieved"):  # bob's, but only queued
        ask(db, "bob", "data", "update", filter={"dataset": DATASET}, update=record)
    db.queue.update(
        {"job_id": {"$in": [bobs, alices]}}, {"$set": {"status": "retrieving"}}, many=True
    )
    theirs = {"$set": {f"results.{alices}": {"dir": "/forged"}}}
    others = {"$set": {"data_raw_path": "/home/alice/.config/labctl"}}
    for update in (theirs, others):
        with pytest.raises(PermissionDenied):
            ask(db, "bob", "data", "update", filter={"dataset": DATASET}, update=update)
    with pytest.raises(PermissionDenied, match="one dataset, named"):
        ask(db, "bob", "data", "update", filter={}, update=record)
    assert "results" not in db.data.find_one({"dataset": DATASET})
    assert ask(db, "bob", "data", "update", filter={"dataset": DATASET}, update=record) == 1
    assert db.data.find_one({"dataset": DATASET})["results"] == {bobs: {"dir": "/somewhere"}}
    assert ask(db, "bob", "data", "find_one", filter={"dataset": DATASET})["user"] == "charlie"
    with pytest.raises(PermissionDenied, match="may not find in data"):  # the whole catalog
        ask(db, "bob", "data", "find", filter={})


def test_users_shows_the_member_alone_and_no_secret(lab: tuple[Database, Config]) -> None:
    db, _ = lab
    found = ask(db, "bob", "users", "find", filter={})
    assert [u["username"] for u in found] == ["bob"]
    assert "password_hash" not in found[0] and "api_token_sha256" not in found[0]
    asked = ["username", "password_hash"]
    assert (
        ask(db, "bob", "users", "find_one", filter={"username": "root"}, projection=asked) is None
    )
    assert ask(db, "bob", "users", "find_one", filter={}, projection=asked) == {"username": "bob"}
    with pytest.raises(PermissionDenied):
        ask(db, "bob", "users", "update", filter={}, update={"$set": {"role": "admin"}})
    assert db.users.find_one({"username": "bob"})["role"] == "member"


def test_meta_heartbeats_only_the_member_s_own(lab: tuple[Database, Config]) -> None:
    db, _ = lab
    db.meta.insert({"key": "session:abc", "kind": "session", "username": "root"})
    assert ask(db, "bob", "meta", "find", filter={}) == []
    key = beat_key("heartbeat", "scan", "labserver", "bob")
    doc = {"key": key, "kind": "heartbeat", "stage": "scan", "host": "labserver", "user": "bob"}
    alices = beat_key("heartbeat", "scan", "labserver", "alice")
    for filter, wrote in [
        ({"key": alices}, {**doc, "key": alices}),
        ({"key": alices}, {**doc, "key": alices, "user": "alice"}),
        ({"key": "session:abc"}, {**doc, "key": "session:abc", "kind": "session"}),
    ]:
        with pytest.raises(PermissionDenied, match="heartbeats"):
            ask(db, "bob", "meta", "update", filter=filter, update={"$set": wrote}, upsert=True)
    with pytest.raises(PermissionDenied):
        ask(db, "bob", "meta", "delete", filter={"key": "session:abc"})
    assert db.meta.count({"kind": "heartbeat"}) == 0
    ask(db, "bob", "meta", "update", filter={"key": key}, update={"$set": doc}, upsert=True)
    assert [b["user"] for b in ask(db, "bob", "meta", "find", filter={})] == ["bob"]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"filter": {"$where": "sleep(100000)"}}, PermissionDenied, r"may not use \$where"),
        ({"filter": {"dataset": {"$regex": "(a+)+$"}}}, ValidationError, "Regex cannot be sent"),
        ({"filter": {"job_id": Code("1")}}, ValidationError, "Code cannot be sent"),
        ({"filter": [1]}, ValidationError, "a filter is a mapping"),
        ({"filter": {}, "limit": "ten"}, ValidationError, "counts"),
        ({"filter": {}, "sort": [["created_at", 2]]}, ValidationError, "sort"),
    ],
)
def test_malformed_or_dangerous_operations(
    lab: tuple[Database, Config], args: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ask(lab[0], "bob", "queue", "find", **args)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"collection": "queue", "op": "drop", "args": {}}',
        b"[" * 100_000,
        b'{"collection": "queue", "op": "find", "args": {"filter": {"a": '
        + b"[" * 900
        + b"]" * 900
        + b"}}}",
    ],
)
def test_what_is_not_an_operation_is_one_line(lab: tuple[Database, Config], body: bytes) -> None:
    with pytest.raises(ValidationError) as refused:
        serve(lab[0], body, "bob")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("collection", ["sessions", "system.users", "users"])
def test_no_other_collection_and_no_upsert(lab: tuple[Database, Config], collection: str) -> None:
    db, _ = lab
    with pytest.raises(PermissionDenied):
        ask(db, "bob", collection, "insert", doc={"username": "eve", "role": "admin"})
    with pytest.raises(PermissionDenied):
        ask(
            db, "bob", "queue", "update", filter={"job_id": "new"}, update={"$set": {}}, upsert=True
        )
    assert db.users.find_one({"username": "eve"}) is None
