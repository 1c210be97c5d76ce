"""The REST API: tokens, sessions with CSRF, experiments and jobs, JSON errors; both backends."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.encoders import jsonable_encoder
from starlette.testclient import TestClient

from labctl.catalog.experiments import get_entry
from labctl.cli import cli
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest
from labctl.limits import REQUEST_BYTES
from labctl.model.job import Job
from labctl.stages.heartbeat import beat
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from labctl.users import PUBLIC_FIELDS, authenticate, create_token, set_notify
from labctl.web import create_app
from tests.hostile import alias_bomb, nested
from tests.jobfixtures import DATASET
from tests.webfixtures import csrf_token, login, password

V1 = "/api/v1"
JOB = {
    "dataset": DATASET,
    "compute_cluster": "local",
    "job_type": "file_stats",
    "datarawfiles": ["fl_a.roli"],
    "datafiles": ["phase.h5"],
    "job_options": {"sleep_seconds": "0.5"},
}

HOST = socket.gethostname()


@pytest.fixture
def client(cfg: Config) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


@pytest.fixture
def tokens(db: Database) -> dict[str, dict[str, str]]:
    """Authorization headers per member."""
    return {u: {"Authorization": f"Bearer {create_token(db, u)}"} for u in ("alice", "bob", "root")}


ROUTES = [
    ("GET", "/me"),
    ("GET", "/experiments"),
    ("POST", "/experiments/query"),
    ("GET", f"/experiments/{DATASET}"),
    ("POST", "/experiments"),
    ("PATCH", f"/experiments/{DATASET}"),
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/j123"),
    ("POST", "/jobs/j123/cancel"),
    ("POST", "/jobs/j123/retry"),
    ("POST", "/jobs/j123/rerun"),
    ("POST", "/jobs/bulk"),
    ("GET", "/watchdog"),
    ("GET", "/usage"),
    ("GET", "/openapi.json"),
    ("POST", "/experiments/batch"),
    ("GET", "/schema"),
    ("POST", "/jobs/script"),
    ("GET", "/users"),
    ("GET", "/users/alice"),
    ("POST", "/users"),
    ("PUT", "/users/alice/role"),
    ("PUT", "/users/alice/password"),
    ("POST", "/users/alice/token"),
    ("GET", "/users/alice/notify"),
    ("PUT", "/users/alice/notify"),
    ("POST", "/watchdog/ops"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_token_or_a_session(client: TestClient, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer lct_forged"}, {"Authorization": "Basic eDp5"}):
        answer = client.request(method, V1 + path, headers=headers, json={})
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert "detail" in answer.json()


def test_a_new_token_replaces_the_old_one(client: TestClient, db: Database) -> None:
    old = create_token(db, "alice")
    assert old.startswith("lct_") and len(old) > 40
    new = create_token(db, "alice")
    assert client.get(f"{V1}/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    me = client.get(f"{V1}/me", headers={"Authorization": f"Bearer {new}"})
    assert me.json() == {"username": "alice", "role": "member"}
    stored = db.users.find_one({"username": "alice"})
    assert stored and new not in str(stored) and len(stored["api_token_sha256"]) == 64


def test_labctl_user_token_prints_a_token_once(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(cfg.model_dump_json())
    done = CliRunner().invoke(cli, ["--config", str(path), "user", "token", "bob"])
    assert done.exit_code == 0, done.output
    token, note = done.stdout.strip(), done.stderr
    assert token.startswith("lct_") and "only its hash is stored" in note
    with TestClient(create_app(cfg)) as client:
        me = client.get(f"{V1}/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["username"] == "bob"
    missing = CliRunner().invoke(cli, ["--config", str(path), "user", "token", "nobody"])
    assert missing.exit_code == 1 and "no user 'nobody'" in missing.stderr


def test_session_writes_need_the_csrf_header(client: TestClient) -> None:
    assert login(client, "alice") == 303
    assert client.get(f"{V1}/me").json()["username"] == "alice"
    new = {"dataset": "20220101_120000", "fields": {"user": "alice", "data_raw_path": "/x"}}
    refused = client.post(f"{V1}/experiments", json=new)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    token = csrf_token(client, "/browse")
    made = client.post(f"{V1}/experiments", json=new, headers={"X-CSRF-Token": token})
    assert made.status_code == 201 and made.json()["created_by"] == "alice"


def test_the_openapi_document_lists_every_route(client: TestClient, tokens: Any) -> None:
    document = client.get(f"{V1}/openapi.json", headers=tokens["bob"]).json()
    paths = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert len(paths) == len(ROUTES)  # not openapi.json itself; POST /token, the way in, is
    assert ("POST", f"{V1}/token") in paths
    assert ("PATCH", f"{V1}/experiments/{{dataset}}") in paths
    assert all(p.startswith(V1) for _, p in paths)  # no page is in the API's document
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_openapi_document_describes_a_job_and_takes_a_job_request(
    client: TestClient, tokens: Any
) -> None:
    document = client.get(f"{V1}/openapi.json", headers=tokens["bob"]).json()
    paths, schemas = document["paths"], document["components"]["schemas"]

    def answer(method: str, path: str, status: str = "200") -> Any:
        content = paths[f"{V1}{path}"][method]["responses"][status]["content"]
        return schemas[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]

    def body(method: str, path: str) -> Any:
        content = paths[f"{V1}{path}"][method]["requestBody"]["content"]
        return schemas[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]

    job = answer("get", "/jobs/{job_id}")
    assert set(job["properties"]) == set(Job.model_fields)  # every field of a job, described
    assert {"job_id", "dataset", "user", "status", "created_at"} <= set(job["required"])
    for method, path, status in [("post", "/jobs", "201"), ("post", "/jobs/{job_id}/retry", "200")]:
        assert answer(method, path, status) == job
    listing = answer("get", "/jobs")
    assert listing["properties"]["items"]["items"]["$ref"].endswith("/Job")
    assert set(listing["properties"]) == {"items", "damaged"}
    assert set(body("post", "/jobs/script")["properties"]) == set(JobRequest.model_fields)
    assert set(body("post", "/jobs")["properties"]) == {*JobRequest.model_fields, "force"}


def test_a_job_answers_as_its_stored_document(
    client: TestClient, tokens: Any, db: Database
) -> None:
    made = client.post(f"{V1}/jobs", json=JOB, headers=tokens["alice"])
    stored = jsonable_encoder(get_job(db, made.json()["job_id"]))
    assert made.json() == stored
    assert client.get(f"{V1}/jobs/{stored['job_id']}", headers=tokens["bob"]).json() == stored
    [listed] = client.get(f"{V1}/jobs", headers=tokens["bob"]).json()["items"]
    assert listed == stored  # the same keys and the same text of each date-time
    refused = client.post(f"{V1}/jobs/script", json={**JOB, "colour": "red"}, headers=tokens["bob"])
    assert refused.status_code == 422 and "colour" in refused.text
    as_bob = client.post(f"{V1}/jobs", json={**JOB, "user": "bob"}, headers=tokens["alice"])
    assert as_bob.status_code == 403 and "alice's, not bob's" in as_bob.json()["detail"]
    own = client.post(
        f"{V1}/jobs", json={**JOB, "user": "alice", "force": True}, headers=tokens["alice"]
    )
    assert own.status_code == 201 and own.json()["user"] == "alice"


# --- experiments ---------------------------------------------------------------------------------


def _create(client: TestClient, headers: Any, dataset: str, **fields: Any) -> Any:
    body = {"dataset": dataset, "fields": {"user": "bob", "data_raw_path": "/nfs/x", **fields}}
    return client.post(f"{V1}/experiments", json=body, headers=headers)


def test_create_get_and_update_an_experiment(client: TestClient, tokens: Any, db: Database) -> None:
    made = _create(client, tokens["bob"], "20220101_120000", n_planes="12", **{"stim.c": 0.5})
    assert made.status_code == 201
    entry = made.json()
    assert entry["n_planes"] == 12 and entry["stim"] == {"c": 0.5}
    assert entry["created_by"] == "bob" and entry["acquired_at"].startswith("2022-01-01T12:00:00")
    got = client.get(f"{V1}/experiments/20220101_120000", headers=tokens["alice"])
    assert got.json() == entry
    changed = client.patch(
        f"{V1}/experiments/20220101_120000",
        json={"fields": {"runclass.id": "ARB", "n_planes": 14}},
        headers=tokens["alice"],
    )
    assert changed.status_code == 200
    assert changed.json()["runclass"] == {"id": "ARB"} and changed.json()["n_planes"] == 14
    assert changed.json()["updated_by"] == "alice" and changed.json()["created_by"] == "bob"
    assert get_entry(db, "20220101_120000")["updated_by"] == "alice"


def test_experiment_errors_are_json_with_their_status(client: TestClient, tokens: Any) -> None:
    def detail(answer: Any, status: int) -> str:
        assert answer.status_code == status, answer.text
        return str(answer.json()["detail"])

    bob = tokens["bob"]
    assert "already logged" in detail(_create(client, bob, DATASET), 409)
    assert "missing required" in detail(_create(client, bob, "20220101_120000", user=""), 422)
    assert "set by labctl" in detail(_create(client, bob, "20220101_120000", created_by="x"), 422)
    assert "must be int" in detail(_create(client, bob, "20220101_120000", n_planes="x"), 422)
    assert "YYYYMMDD_HHMMSS" in detail(client.get(f"{V1}/experiments/nope", headers=bob), 422)
    assert "no dataset" in detail(client.get(f"{V1}/experiments/20990101_000000", headers=bob), 404)
    update = {"fields": {"n_planes": 3}}
    missing = client.patch(f"{V1}/experiments/20990101_000000", json=update, headers=bob)
    assert "no dataset" in detail(missing, 404)
    extra = client.post(f"{V1}/experiments", json={"dataset": DATASET, "x": 1}, headers=bob)
    detail(extra, 422)  # unknown body keys are refused


def test_list_experiments_with_the_where_language(client: TestClient, tokens: Any) -> None:
    bob = tokens["bob"]
    for day, planes in ((1, 4), (2, 12), (3, 20)):
        assert _create(client, bob, f"202203{day:02d}_100000", n_planes=planes).status_code == 201
    found = client.get(
        f"{V1}/experiments",
        params={"where": ["n_planes>=10", "user=bob"], "sort": "-n_planes", "fields": "n_planes"},
        headers=bob,
    ).json()
    assert found["total"] == 2
    assert found["items"] == [
        {"dataset": "20220303_100000", "n_planes": 20},
        {"dataset": "20220302_100000", "n_planes": 12},
    ]
    window = {"since": "2022-03-02", "until": "2022-03-02", "fields": "dataset"}
    dated = client.get(f"{V1}/experiments", params=window, headers=bob).json()
    assert [e["dataset"] for e in dated["items"]] == ["20220302_100000"]
    paged = client.get(f"{V1}/experiments", params={"limit": 2, "skip": 3}, headers=bob).json()
    assert paged["total"] == 4 and len(paged["items"]) == 1
    bad = client.get(f"{V1}/experiments", params={"where": "n_planes>x"}, headers=bob)
    assert bad.status_code == 422 and "must be int" in bad.json()["detail"]


def test_query_experiments_with_a_filter_mapping(client: TestClient, tokens: Any) -> None:
    bob = tokens["bob"]
    _create(client, bob, "20220301_100000", n_planes=4)
    body = {"filter": {"n_planes": {"$gte": 2}}, "fields": ["n_planes"], "sort": ["dataset"]}
    found = client.post(f"{V1}/experiments/query", json=body, headers=bob).json()
    assert found == {"total": 1, "items": [{"dataset": "20220301_100000", "n_planes": 4}]}
    sneaky = {"filter": {"user": {"$where": "sleep(1000)"}}}
    refused = client.post(f"{V1}/experiments/query", json=sneaky, headers=bob)
    assert refused.status_code == 422 and "not allowed" in refused.json()["detail"]
    named = client.post(f"{V1}/experiments/query", json={"fields": ["$x"]}, headers=bob)
    assert named.status_code == 422


# --- jobs ----------------------------------------------------------------------------------------


def test_submit_list_and_get_jobs(client: TestClient, tokens: Any) -> None:
    made = client.post(f"{V1}/jobs", json=JOB, headers=tokens["alice"])
    assert made.status_code == 201, made.text
    job = made.json()
    assert job["user"] == "alice" and job["status"] == "queued"
    assert job["job_options"] == {"sleep_seconds": 0.5}
    assert job["history"][0]["note"] == "submitted by alice"
    twin = client.post(f"{V1}/jobs", json=JOB, headers=tokens["bob"])
    assert twin.status_code == 409 and "identical job" in twin.json()["detail"]
    forced = client.post(f"{V1}/jobs", json={**JOB, "force": True}, headers=tokens["bob"])
    assert forced.status_code == 201
    listed = client.get(f"{V1}/jobs", params={"user": "alice"}, headers=tokens["bob"]).json()
    assert [j["job_id"] for j in listed["items"]] == [job["job_id"]]
    everyone = client.get(
        f"{V1}/jobs", params={"dataset": DATASET, "status": "queued"}, headers=tokens["bob"]
    )
    assert len(everyone.json()["items"]) == 2
    got = client.get(f"{V1}/jobs/{job['job_id']}", headers=tokens["bob"]).json()
    assert got["job_id"] == job["job_id"] and got["dataset"] == DATASET
    assert (
        client.get(f"{V1}/jobs", params={"status": "sleeping"}, headers=tokens["bob"]).status_code
        == 422
    )


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"job_type": "nope"}, 422, "unknown job type"),
        ({"compute_cluster": "mars"}, 422, "unknown cluster"),
        ({"dataset": "20990101_000000"}, 404, "no dataset"),
        ({"datarawfiles": ["../etc/passwd"]}, 422, "inside the dataset directory"),
        ({"job_options": {"colour": "red"}}, 422, "has no option colour"),
    ],
)
def test_a_bad_job_is_refused_with_its_reason(
    client: TestClient, tokens: Any, change: dict[str, Any], status: int, words: str
) -> None:
    answer = client.post(f"{V1}/jobs", json={**JOB, **change}, headers=tokens["alice"])
    assert answer.status_code == status and words in answer.json()["detail"]


def test_cancel_and_retry_through_the_api(client: TestClient, tokens: Any, db: Database) -> None:
    job_id = client.post(f"{V1}/jobs", json=JOB, headers=tokens["alice"]).json()["job_id"]
    refused = client.post(f"{V1}/jobs/{job_id}/cancel", headers=tokens["bob"])
    assert refused.status_code == 403 and "only they or an admin" in refused.json()["detail"]
    cancelled = client.post(f"{V1}/jobs/{job_id}/cancel", headers=tokens["alice"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"{V1}/jobs/{job_id}/cancel", headers=tokens["alice"])
    assert again.status_code == 422 and "already cancelled" in again.json()["detail"]
    retried = client.post(f"{V1}/jobs/{job_id}/retry", headers=tokens["root"])
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert get_job(db, job_id)["history"][-1]["note"] == "retried by root"
    assert client.post(f"{V1}/jobs/j000000000000/cancel", headers=tokens["root"]).status_code == 404
    assert client.get(f"{V1}/jobs/j000000000000", headers=tokens["root"]).status_code == 404


def test_watchdog_heartbeats(client: TestClient, tokens: Any, db: Database) -> None:
    empty = {"heartbeats": [], "sessions": [], "damaged": []}
    assert client.get(f"{V1}/watchdog", headers=tokens["bob"]).json() == empty
    beat(db, "jobs", {"completed": 2}, "alice", HOST)
    [heartbeat] = client.get(f"{V1}/watchdog", headers=tokens["bob"]).json()["heartbeats"]
    assert heartbeat["stage"] == "jobs" and heartbeat["did"] == {"completed": 2}


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"n_planes": {"$regex": "("}}},
        {"filter": {"n_planes": {"$in": 3}}},
        {"filter": {"n_planes": {"$gt": {"$where": "1"}}}},
        {"filter": {"runclass": {"id": {"$where": "1"}}}},
    ],
)
def test_a_filter_the_store_cannot_run_is_a_422_not_a_crash(
    client: TestClient, tokens: Any, body: dict[str, Any]
) -> None:
    answer = client.post(f"{V1}/experiments/query", json=body, headers=tokens["bob"])
    assert answer.status_code == 422, answer.text


def test_values_beyond_the_store_and_overlapping_fields(client: TestClient, tokens: Any) -> None:
    bob = tokens["bob"]
    huge = _create(client, bob, "20220101_120000", n_planes=2**70)
    assert huge.status_code == 422 and "cannot be stored" in huge.json()["detail"]
    # MongoDB cannot even compare with such a number (422); the embedded store finds nothing.
    huge = client.get(f"{V1}/experiments", params={"where": f"n_planes={2**70}"}, headers=bob)
    assert huge.status_code in (200, 422)
    huge = client.post(f"{V1}/experiments/query", json={"filter": {"n_planes": 2**70}}, headers=bob)
    assert huge.status_code in (200, 422)
    changed = client.patch(
        f"{V1}/experiments/{DATASET}", json={"fields": {"runclass.id": "ARB"}}, headers=bob
    )
    assert changed.status_code == 200, changed.text
    both = client.get(
        f"{V1}/experiments", params={"fields": ["runclass", "runclass.id"]}, headers=bob
    )
    assert both.status_code == 200 and both.json()["total"] == 1


NEW = "20220101_120000"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"x": alias_bomb()}, "field 'x': YAML anchors and aliases are not allowed"),
        ({"x": nested(1000)}, "nested deeper than 20 levels"),
        ({"x": json.loads(nested(30))}, "nested deeper than 20 levels"),
        ({"session_date": "0000-01-01"}, "field 'session_date'"),  # was HTTP 500
        ({"when": "2021-13-01"}, "month must be in 1..12"),  # was HTTP 500
        ({"cond": {"$gt": 1}}, "looks like an operator"),
        ({"cond": "{$gt: 1}"}, "looks like an operator"),
        ({".".join(["a"] * 20): 1}, "field name"),  # was HTTP 500
        ({"_id": "x"}, "set by labctl"),  # was HTTP 500 in a PATCH
        ({"note": "x" * 1_500_000}, "longer than the 1,000,000 bytes"),
        ({"x": "0x" + "f" * 5000}, "an integer of 20000 bits cannot be stored"),  # was HTTP 500
        ({"x": "0b" + "1" * 20000}, "an integer of 20000 bits cannot be stored"),  # was HTTP 500
        ({"x": "1" + ":59" * 3000}, "bits cannot be stored: beyond 64-bit"),  # sexagesimal
        ({"n_planes": "0x" + "f" * 5000}, "an integer of 20000 bits cannot be stored"),
        ({"x": ".nan"}, "nan cannot be stored: not a finite number"),
        ({"x": "-.inf"}, "-inf cannot be stored: not a finite number"),
        ({"x": "{y: [.inf]}"}, "inf cannot be stored: not a finite number"),
        ({"n_planes": ".inf"}, "must be int"),
        ({"user": "bob\0"}, "contains a NUL byte"),
    ],
)
def test_malformed_fields_are_422_and_store_nothing(
    client: TestClient, tokens: Any, db: Database, fields: dict[str, Any], message: str
) -> None:
    before = get_entry(db, DATASET)
    created = _create(client, tokens["bob"], NEW, **fields)
    assert created.status_code == 422 and message in created.json()["detail"], created.text
    patch = {"fields": fields}
    patched = client.patch(f"{V1}/experiments/{DATASET}", json=patch, headers=tokens["alice"])
    assert patched.status_code == 422 and message in patched.json()["detail"], patched.text
    assert db.data.count() == 1 and get_entry(db, DATASET) == before


@pytest.mark.parametrize("value", ["1" + "0" * 5000, "NaN", "-Infinity", "[1e999]"])
def test_json_numbers_beyond_the_store_are_a_4xx(
    client: TestClient, tokens: Any, db: Database, value: str
) -> None:
    before = get_entry(db, DATASET)
    body = '{"fields": {"x": ' + value + "}}"
    headers = {**tokens["alice"], "Content-Type": "application/json"}
    patched = client.patch(f"{V1}/experiments/{DATASET}", content=body, headers=headers)
    assert patched.status_code in (400, 422), patched.text
    assert get_entry(db, DATASET) == before


def test_malformed_queries_are_422(client: TestClient, tokens: Any) -> None:
    for params in (
        {"since": "0000-01-01"},  # was HTTP 500
        {"until": "2021-13-01"},
        {"where": "user~(a)\\1"},  # RE2: no backreferences
        {"where": f"x={alias_bomb()}"},
    ):
        answer = client.get(f"{V1}/experiments", params=params, headers=tokens["bob"])
        assert answer.status_code == 422, (params, answer.text)
    deep = client.post(
        f"{V1}/experiments",
        content=f'{{"dataset": "{NEW}", "fields": {{"x": {nested(100_000)}}}}}',
        headers={**tokens["bob"], "Content-Type": "application/json"},
    )
    assert deep.status_code in (400, 422), deep.text


def test_a_body_beyond_the_limit_is_413_before_it_is_read(
    client: TestClient, tokens: Any, db: Database
) -> None:
    body = json.dumps({"dataset": NEW, "fields": {"note": "x" * REQUEST_BYTES}}).encode()
    headers = {**tokens["bob"], "Content-Type": "application/json"}
    sized = client.post(f"{V1}/experiments", content=body, headers=headers)
    assert sized.status_code == 413 and "larger than 2,000,000 bytes" in sized.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    chunked = client.post(f"{V1}/experiments", content=chunks(), headers=headers)
    assert chunked.status_code == 413
    assert db.data.count() == 1


def _stopped(group: int, timeout: float = 10) -> bool:
    """Whether every process of the group ended (zombies waiting for PID 1 count as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group and fields[0] != "Z":  # pgrp, state
                    alive.append(stat)
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("via", ["api", "dashboard"])
def test_cancel_stops_a_running_job_at_once(
    client: TestClient, cfg: Config, db: Database, tokens: Any, via: str
) -> None:
    """As `labctl cancel` does: the job is stopped on its cluster now, not on a later run."""
    slow = {**JOB, "job_options": {"sleep_seconds": "60"}}
    job_id = client.post(f"{V1}/jobs", headers=tokens["alice"], json=slow).json()["job_id"]
    alices = cfg.model_copy(update={"user": "alice"})  # her watchdog
    deadline = time.monotonic() + 30
    while get_job(db, job_id)["status"] != "running":
        assert time.monotonic() < deadline, get_job(db, job_id)["history"]
        run_stages(LocalStore.of(db, alices), alices, ["scan", "transfers", "jobs"])
    group = int(get_job(db, job_id)["scheduler"]["job_id"])  # a process job: its process group
    if via == "api":
        answer = client.post(f"{V1}/jobs/{job_id}/cancel", headers=tokens["alice"])
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    else:
        assert login(client, "alice") == 303
        form = {"csrf_token": csrf_token(client, f"/jobs/{job_id}")}
        done = client.post(f"/jobs/{job_id}/cancel", data=form, follow_redirects=False)
        assert done.status_code == 303
    assert get_job(db, job_id)["cleanup_pending"] is False  # stopped, nothing left for a run
    assert _stopped(group)


SECRETS = ("password_hash", "api_token_sha256", "api_token_expires")


def test_members_are_their_public_fields_as_stored(
    client: TestClient, db: Database, tokens: dict[str, dict[str, str]]
) -> None:
    """Every member has a password hash and a token (and alice a notification mode): the
    listing, one member and a new one carry neither secret, and no field their record lacks."""
    set_notify(db, "alice", "digest", actor="alice")
    listed = client.get(f"{V1}/users", headers=tokens["bob"])
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [u["username"] for u in items] == ["alice", "bob", "root"]
    for shown in items:
        stored = db.users.find_one({"username": shown["username"]})
        assert stored and all(stored.get(secret) for secret in SECRETS[:2])
        assert set(shown) == {k for k in PUBLIC_FIELDS if k in stored}
        assert not set(shown) & set(SECRETS)
    alice = client.get(f"{V1}/users/alice", headers=tokens["bob"]).json()
    assert alice == items[0] and alice["notify_mode"] == "digest"
    assert "notify_mode" not in items[1]  # bob never chose: none is made up
    created = db.users.find_one({"username": "alice"})["created_at"]
    assert dt.datetime.fromisoformat(alice["created_at"]) == created
    body = {"username": "eve", "password": "a long enough passphrase 9"}
    made = client.post(f"{V1}/users", json=body, headers=tokens["root"])
    assert made.status_code == 201, made.text
    assert made.json()["username"] == "eve" and not set(made.json()) & set(SECRETS)


def test_a_member_changes_their_own_password_only_with_their_current_one(
    client: TestClient, tokens: Any, db: Database
) -> None:
    def change(who: str, whose: str, **body: str) -> Any:
        body = {"password": "a long new passphrase 7", **body}
        return client.put(f"{V1}/users/{whose}/password", json=body, headers=tokens[who])

    before = db.users.find_one({"username": "alice"})["password_hash"]
    for wrong in ({}, {"current_password": "pw-bob-secret"}, {"current_password": ""}):
        refused = change("alice", "alice", **wrong)  # a stolen token is not enough
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"].startswith("your current password is wrong")
    assert db.users.find_one({"username": "alice"})["password_hash"] == before
    assert change("alice", "alice", current_password=password("alice")).status_code == 200
    assert authenticate(db, "alice", "a long new passphrase 7") is not None
    assert change("root", "bob").status_code == 200  # an admin resets another's without it
    assert authenticate(db, "bob", "a long new passphrase 7") is not None
    assert change("root", "root").status_code == 403  # but their own only with theirs


def test_guessing_the_current_password_is_throttled_as_logins_are(
    client: TestClient, tokens: Any
) -> None:
    body = {"password": "a long new passphrase 7", "current_password": "guess"}
    put = f"{V1}/users/alice/password"
    codes = [client.put(put, json=body, headers=tokens["alice"]).status_code for _ in range(6)]
    assert codes == [403] * 5 + [429]
