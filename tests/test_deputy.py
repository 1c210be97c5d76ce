"""What a member's watchdog may do through the service (`POST /api/v1/watchdog/ops`), on both
backends: each attack a member holding only their token made on the old collection route,
sent to the real app as a forged or buggy watchdog would send it with bob's token, and what it
changed in the store (nothing).

The end-to-end runs (the real service under uvicorn, real watchdogs) are in
test_service_watchdog.py; stopping only what labctl started is in test_stop_safely.py.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from labctl.access.servicedb import encode
from labctl.config import Config
from labctl.db import Database
from labctl.errors import DuplicateError
from labctl.jobs.queue import add_job, get_job, read_job, transition
from labctl.jobs.work import Selection, Work
from labctl.model.job import Job, JobRef, NoticeEvent, Progress
from labctl.model.states import FailureReason, JobState
from labctl.stages.heartbeat import HEARTBEAT_KIND
from labctl.stages.memberops import Beat, HowNotified
from labctl.stages.ops import (
    Claim,
    Find,
    MarkWaiting,
    Move,
    Read,
    RecordResult,
    ReleaseDead,
    Update,
)
from labctl.stages.seam import Op
from labctl.users import create_token
from labctl.web import create_app
from tests.jobfixtures import DATASET, job_in_state

OPS = "/api/v1/watchdog/ops"


@pytest.fixture
def client(cfg: Config) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


@pytest.fixture
def bob(client: TestClient, db: Database) -> dict[str, str]:
    """bob's token, as his machine holds it."""
    return {"Authorization": f"Bearer {create_token(db, 'bob')}"}


def send(client: TestClient, token: dict[str, str], body: Op[Any] | Any) -> Any:
    """One operation (or anything else) as a watchdog with `token` sends it; the response."""
    data = encode(body) if isinstance(body, Op) else json.dumps(body).encode()
    return client.post(OPS, content=data, headers={**token, "Content-Type": "application/json"})


def ref(job_id: str, state: JobState = JobState.QUEUED) -> JobRef:
    return JobRef(job_id=job_id, status=state)


def stored(db: Database) -> list[dict[str, Any]]:
    """Every job in flight and archived, as stored."""
    return [*db.queue.find({}, sort=[("job_id", 1)]), *db.archive.find({}, sort=[("_id", 1)])]


def test_an_operation_reaches_only_the_member_s_jobs(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    alices = job_in_state(db, cfg, user="alice")
    bobs = job_in_state(db, cfg, user="bob")
    found = send(client, bob, Find(selection=Selection(work=Work.NEW)))
    assert [job["job_id"] for job in found.json()["result"]["jobs"]] == [bobs]
    aimed = Find(selection=Selection(work=Work.NEW, job_id=alices))
    assert send(client, bob, aimed).json()["result"]["jobs"] == []
    claim = Claim(selection=Selection(work=Work.NEW, job_id=alices), owner="bob:1", lease_s=60)
    assert send(client, bob, claim).json()["result"] == {"job": None, "damaged": None}
    before = stored(db)
    for op in [
        Read(job_id=alices),
        Update(job=ref(alices), progress=Progress(waiting="x")),
        Move(job=ref(alices), to=JobState.CANCELLED, note="forged"),
        RecordResult(job=ref(alices, JobState.RETRIEVING), dir="/tmp/forged", files=[]),
    ]:
        answer = send(client, bob, op)
        assert answer.status_code == 404, answer.text
        assert "bob has no job" in answer.json()["detail"]
    assert stored(db) == before


def test_an_outage_is_marked_through_the_service_on_the_member_s_jobs_only(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    alices = job_in_state(db, cfg, user="alice")
    bobs = job_in_state(db, cfg, user="bob")
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    mark = MarkWaiting(
        jobs=[ref(bobs), ref(alices)],
        message="waiting for hpc: unreachable since 2026-12-07 22:00:00 UTC",
        session="hpc",
        outage=True,
        next_try_at=later,
    )
    assert send(client, bob, mark).status_code == 200
    job = read_job(db, bobs)
    assert job.waiting == mark.message and job.next_try_at == later
    [notice] = job.notices.values()
    assert notice.event is NoticeEvent.OUTAGE and notice.cluster == "hpc"
    assert read_job(db, alices).waiting is None and not read_job(db, alices).notices
    body = json.loads(encode(mark)) | {"next_try_at": "soon"}
    assert send(client, bob, body).status_code == 422


# Every field of a job that is not what a watchdog records: what was asked, whose it is, and
# the store's own bookkeeping. Derived from the model: a field added to `Job` outside
# `Progress` is refused without a list to keep.
NOT_PROGRESS = sorted(set(Job.model_fields) - set(Progress.model_fields))


@pytest.mark.parametrize("field", NOT_PROGRESS)
def test_a_watchdog_writes_only_what_it_records(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config, field: str
) -> None:
    bobs = job_in_state(db, cfg, user="bob")
    before = stored(db)
    for op in ("update", "move"):
        body = {"op": op, "job": {"job_id": bobs, "status": "queued"}, "progress": {field: "x"}}
        body |= {"to": "awaiting_data"} if op == "move" else {}
        answer = send(client, bob, body)
        assert answer.status_code == 422, answer.text
    assert stored(db) == before
    assert {"job_id", "user", "dataset", "job_type", "job_options", "resources"} <= set(
        NOT_PROGRESS
    )
    assert {"status", "owner", "history", "notices", "data_transfer_await"} <= set(NOT_PROGRESS)


def test_a_state_moves_only_as_the_state_machine_allows(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    bobs = job_in_state(db, cfg, user="bob")
    before = stored(db)
    jump = send(client, bob, Move(job=ref(bobs), to=JobState.COMPLETED))
    assert jump.status_code == 409 and "cannot become completed" in jump.json()["detail"]
    stale = send(client, bob, Move(job=ref(bobs, JobState.RUNNING), to=JobState.RETRIEVING))
    assert stale.status_code == 200 and stale.json()["result"] is None  # it was not running
    assert stored(db) == before
    moved = send(client, bob, Move(job=ref(bobs), to=JobState.AWAITING_DATA, note="waits"))
    assert moved.json()["result"]["status"] == "awaiting_data"
    assert read_job(db, bobs).history[-1].note == "waits"


@pytest.mark.parametrize(
    ("progress", "why"),
    [
        ({"next_try_at": "not a date"}, "datetime"),
        ({"usage": [{"task": "1", "state": "COMPLETED", "elapsed_s": "abc"}]}, "number"),
        ({"scheduler": {"tasks": "many"}}, "integer"),
        ({"results": [{"name": "a", "size": 1, "sha256": "0", "$where": "1"}]}, "no field"),
        ({"environment": [{"$gt": 1}]}, "field name"),
        (
            {"transfer": {"host": "h", "argv": [], "pid": 1, "log": "", "status_path": "", "x": 1}},
            "no field",
        ),
    ],
)
def test_malformed_values_are_refused_whole(
    client: TestClient,
    bob: dict[str, str],
    db: Database,
    cfg: Config,
    progress: dict[str, Any],
    why: str,
) -> None:
    bobs = job_in_state(db, cfg, user="bob")
    before = stored(db)
    body = {"op": "update", "job": {"job_id": bobs, "status": "queued"}, "progress": progress}
    answer = send(client, bob, body)
    assert answer.status_code == 422 and why in answer.text, answer.text
    assert stored(db) == before
    listed = client.get("/api/v1/jobs", headers=bob)
    assert listed.status_code == 200 and bobs in listed.text


def test_malformed_heartbeats_are_refused(
    client: TestClient, bob: dict[str, str], db: Database
) -> None:
    for body in [
        {"op": "beat", "host": "h", "did": {"x": "abc"}},  # no stage, a count that is not
        {"op": "beat", "stage": "scan", "host": "h", "did": {"x": "abc"}},
        {"op": "record_sessions", "host": "h", "sessions": [{"cluster": "raven"}]},
    ]:
        assert send(client, bob, body).status_code == 422
    assert db.meta.find({"kind": HEARTBEAT_KIND}) == []
    assert send(client, bob, Beat(stage="scan", host="h", did={"ok": 1})).status_code == 200
    [beat] = db.meta.find({"kind": HEARTBEAT_KIND})
    assert beat["user"] == "bob" and beat["key"].endswith(":h:bob")  # the token's, never claimed


@pytest.mark.parametrize(
    "body",
    [
        {"collection": "queue", "op": "insert", "args": {"doc": {"job_id": "j1", "user": "bob"}}},
        {"op": "insert", "doc": {"job_id": "j1"}},
        {"op": "find", "selection": {"work": "new"}, "filter": {"user": "alice"}},
        {"op": "find", "selection": {"work": "everything"}},
        {"op": "claim", "selection": {"work": "new"}, "owner": "x", "lease_s": 0},
        {"op": "read", "job_id": "j\r\nx" * 100},
        "not an operation",
    ],
)
def test_anything_but_an_operation_is_refused(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config, body: Any
) -> None:
    job_in_state(db, cfg, user="alice")
    before = stored(db)
    answer = send(client, bob, body)
    assert answer.status_code == 422, answer.text
    assert stored(db) == before


def test_nesting_past_the_limit_is_one_refusal(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    bobs = job_in_state(db, cfg, user="bob")
    deep = "x"
    for _ in range(45):
        deep = {"a": deep}  # type: ignore[assignment]
    body = {"op": "update", "job": {"job_id": bobs, "status": "queued"}}
    body["progress"] = {"environment": [deep]}
    assert send(client, bob, body).status_code == 422
    very = "[" * 100_000 + "]" * 100_000
    headers = {**bob, "Content-Type": "application/json"}
    answer = client.post(OPS, content=very.encode(), headers=headers)
    assert answer.status_code in (400, 413, 422) and "detail" in answer.json()


def test_the_member_s_user_record_is_never_sent(
    client: TestClient, bob: dict[str, str], db: Database
) -> None:
    answer = send(client, bob, HowNotified())
    assert set(answer.json()["result"]) == {"email", "mode", "webhook"}
    assert "hash" not in answer.text and "token" not in answer.text


def test_results_go_only_on_a_job_being_retrieved_and_fit_the_entry(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    queued = job_in_state(db, cfg, user="bob")
    done = job_in_state(db, cfg, JobState.FAILED, user="bob")
    for job_id, state in [(queued, JobState.QUEUED), (done, JobState.FAILED)]:
        answer = send(client, bob, RecordResult(job=ref(job_id, state), dir="/d", files=[]))
        assert answer.status_code == 422 and "being retrieved" in answer.text
    assert "results" not in db.data.find_one({"dataset": DATASET})
    retrieving = _retrieving(db, cfg, "bob")
    huge = [{"name": f"f{i}" + "x" * 900, "size": 1, "sha256": "0" * 64} for i in range(1500)]
    body = {"op": "record_result", "job": {"job_id": retrieving, "status": "retrieving"}}
    answer = send(client, bob, {**body, "dir": "/d", "files": huge})
    assert answer.status_code == 422 and "an entry may take" in answer.text
    assert "results" not in db.data.find_one({"dataset": DATASET})
    files = [{"name": "out.txt", "path": "/d/out.txt", "size": 3, "sha256": "ab" * 32}]
    assert send(client, bob, {**body, "dir": "/d", "files": files}).status_code == 200
    record = db.data.find_one({"dataset": DATASET})["results"][retrieving]
    assert record["job_id"] == retrieving and record["files"] == files


def _retrieving(db: Database, config: Config, user: str) -> str:
    """A job of `user`'s walked to `retrieving` as a watchdog walks it."""
    job_id = job_in_state(db, config, user=user)
    job: Job | None = read_job(db, job_id)
    for state in (JobState.TRANSFERRING, JobState.SUBMITTED, JobState.RUNNING, JobState.RETRIEVING):
        assert job is not None
        job = transition(db, job, state, "by the test")
    return job_id


def test_job_ids_are_unique_across_the_queue_and_the_archive(db: Database, cfg: Config) -> None:
    """Shadowing: a job queued with the id of an archived one would take its place in every
    listing (and its results, and its retry)."""
    alices = job_in_state(db, cfg, JobState.FAILED, user="alice", reason=FailureReason.TIMEOUT)
    doc = db.queue.find_one({"job_id": alices})
    db.archive.insert({**doc, "_id": alices})
    db.queue.delete({"job_id": alices})
    twin = Job.of({**doc, "user": "bob", "status": "queued"})
    with pytest.raises(DuplicateError, match="exists already"):
        add_job(db, twin)
    assert db.queue.find({}) == [] and get_job(db, alices)["user"] == "alice"


def test_a_lease_names_its_member_s_jobs_only(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    alices = job_in_state(db, cfg, user="alice")
    held = db.queue.find_one({"job_id": alices})
    body = {"op": "release", "job_ids": [alices], "owner": "x"}
    lease = {"owner": "x", "lease_until": dt.datetime.now(dt.UTC)}
    db.queue.update({"job_id": alices}, {"$set": lease})
    assert send(client, bob, body).status_code == 200
    assert db.queue.find_one({"job_id": alices})["owner"] == "x" != held["owner"]


def test_a_dead_run_frees_only_its_member_s_leases(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    """bob's watchdog names a run it found dead: his jobs it held are free to claim; alice's
    held by a run of the same name, and his own held by a live run, are not."""
    alices = job_in_state(db, cfg, user="alice")
    freed, live = (job_in_state(db, cfg, user="bob") for _ in range(2))
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600)
    leases = {alices: "h:1:dead", freed: "h:1:dead", live: "h:2:live"}
    for job_id, owner in leases.items():
        db.queue.update({"job_id": job_id}, {"$set": {"owner": owner, "lease_until": until}})
    assert send(client, bob, ReleaseDead(owners=["h:1:dead"])).status_code == 200
    owners = {doc["job_id"]: doc["owner"] for doc in db.queue.find({})}
    assert owners == {alices: "h:1:dead", freed: None, live: "h:2:live"}
    claim = Claim(selection=Selection(work=Work.NEW), owner="h:3:next", lease_s=600)
    assert send(client, bob, claim).json()["result"]["job"]["job_id"] == freed
    assert send(client, bob, claim).json()["result"]["job"] is None
    for owners_sent in ([], ["x"] * 101, [""]):
        body = {"op": "release_dead", "owners": owners_sent}
        assert send(client, bob, body).status_code == 422


def test_a_forged_pid_makes_the_service_kill_nothing(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    """The critical attack: bob's watchdog records a process that is not his job's as its
    scheduler id and its transfer, then bob cancels through the service, which stops jobs on
    the lab server as its own account."""
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        bobs = job_in_state(db, cfg, user="bob")
        pid = bystander.pid
        transfer = {"host": socket.gethostname(), "argv": ["rsync"], "pid": pid, "log": "/x"}
        started = Progress.model_validate({"transfer": {**transfer, "status_path": "/y"}})
        assert send(client, bob, Move(job=ref(bobs), to=JobState.TRANSFERRING, progress=started))
        submitted = Progress.model_validate({"scheduler": {"job_id": str(pid)}})
        moved = Move(
            job=ref(bobs, JobState.TRANSFERRING), to=JobState.SUBMITTED, progress=submitted
        )
        assert send(client, bob, moved).json()["result"]["scheduler"]["job_id"] == str(pid)
        answer = client.post(f"/api/v1/jobs/{bobs}/cancel", headers=bob)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cleanup_pending"] is False  # nothing of labctl's to stop
        time.sleep(0.5)
        assert bystander.poll() is None  # still running
        assert get_job(db, bobs)["status"] == str(JobState.CANCELLED)
    finally:
        bystander.kill()
        bystander.wait()
    assert client.get("/api/v1/me", headers=bob).status_code == 200  # the service lives on


@pytest.mark.parametrize("forged", ["1", "-1", "0", "12 34", "$(id)"])
def test_a_scheduler_id_is_what_a_scheduler_gives(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config, forged: str
) -> None:
    bobs = job_in_state(db, cfg, JobState.TRANSFERRING, user="bob")
    before = stored(db)
    body = {"op": "move", "job": {"job_id": bobs, "status": "transferring"}, "to": "submitted"}
    answer = send(client, bob, {**body, "progress": {"scheduler": {"job_id": forged}}})
    if forged == "1":  # a plain number is an id a scheduler may give: the stop checks it
        assert answer.status_code == 200
        return
    assert answer.status_code == 422, answer.text
    assert stored(db) == before


def test_a_notice_key_is_a_name_not_a_path(
    client: TestClient, bob: dict[str, str], db: Database, cfg: Config
) -> None:
    bobs = job_in_state(db, cfg, user="bob")
    before = stored(db)
    for key in ["x.owner", "$where", "a/b", ""]:
        body = {"op": "claim_notice", "job_id": bobs, "key": key, "owner": "o", "lease_s": 9}
        assert send(client, bob, body).status_code == 422, key
    assert stored(db) == before
