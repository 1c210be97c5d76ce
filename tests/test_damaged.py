"""Stored records that do not validate (a job, its usage, a heartbeat, a session), written into
the store beside good ones: each listing, page and command shows them as damaged rows and goes on
with the good ones; one asked for by id is one line. On both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from labctl.cli import cli
from labctl.clock import utcnow
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job, list_jobs, list_rows
from labctl.model.states import JobState
from labctl.stages.heartbeat import beat
from labctl.users import create_token
from labctl.web import create_app
from tests.jobfixtures import DATASET, job_in_state
from tests.usagefixtures import seed_usage
from tests.webfixtures import login

BAD_DATE = "job j-bad-date: updated_at: Input should be a valid datetime"
BAD_USAGE = "job j-bad-usage: usage.0: Input should be a valid dictionary"
NO_AT = "heartbeat heartbeat:scan:h1:alice: at: Field required"
BAD_UP = "session cluster_session:raven:h1:alice: up: Input should be a valid boolean"


@pytest.fixture
def store(db: Database, cfg: Config) -> dict[str, str]:
    """Good jobs of alice and bob, a heartbeat and the lab's usage; beside them a job with text
    for a date (in the queue), an archived job with text for a usage figure, a heartbeat without
    its time and a session that is neither up nor down (in meta)."""
    good = {"alice": job_in_state(db, cfg), "bob": job_in_state(db, cfg, JobState.FAILED, "bob")}
    seed_usage(db)
    beat(db, "jobs", {"completed": 2}, "alice", "h1")
    bad = {**get_job(db, good["alice"]), "job_id": "j-bad-date", "updated_at": "not a date"}
    db.queue.insert(bad)
    created = {**get_job(db, good["bob"]), "job_id": "j-bad-created", "created_at": "yesterday"}
    db.queue.insert(created)  # sorted among the others all the same
    usage = {**get_job(db, good["bob"]), "job_id": "j-bad-usage", "usage": ["abc"]}
    usage["status"] = str(JobState.COMPLETED)
    db.archive.insert({**usage, "_id": "j-bad-usage"})
    db.meta.insert(
        {"key": "heartbeat:scan:h1:alice", "kind": "heartbeat", "stage": "scan", "host": "h1",
         "user": "alice", "did": {}}
    )  # fmt: skip
    db.meta.insert(
        {"key": "cluster_session:raven:h1:alice", "kind": "cluster_session", "cluster": "raven",
         "host": "h1", "user": "alice", "up": "maybe", "at": utcnow()}
    )  # fmt: skip
    return good


def lines_with(text: str, part: str) -> list[str]:
    return [line for line in text.splitlines() if part in line]


@pytest.fixture
def client(cfg: Config, store: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


def test_rest_lists_the_good_jobs_and_reports_the_damaged(
    client: TestClient, db: Database, store: dict[str, str]
) -> None:
    bob = {"Authorization": f"Bearer {create_token(db, 'bob')}"}
    listed = client.get("/api/v1/jobs", headers=bob)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert {store["alice"], store["bob"]} <= {job["job_id"] for job in body["items"]}
    assert not {"j-bad-date", "j-bad-usage"} & {job["job_id"] for job in body["items"]}
    damaged = {record["id"]: record for record in body["damaged"]}
    assert set(damaged) == {"j-bad-date", "j-bad-usage", "j-bad-created"}
    assert damaged["j-bad-date"]["kind"] == "job"
    assert damaged["j-bad-date"]["line"].startswith(BAD_DATE)
    assert damaged["j-bad-usage"]["line"].startswith(BAD_USAGE)
    # A filter that leaves the damaged job out leaves its row out too.
    failed = client.get("/api/v1/jobs", params={"status": "failed"}, headers=bob).json()
    assert [record["id"] for record in failed["damaged"]] == ["j-bad-created"]

    one = client.get("/api/v1/jobs/j-bad-date", headers=bob)
    assert one.status_code == 422
    assert one.json()["detail"].startswith(BAD_DATE) and "\n" not in one.json()["detail"]
    assert client.get(f"/api/v1/jobs/{store['bob']}", headers=bob).status_code == 200

    watchdog = client.get("/api/v1/watchdog", headers=bob)
    assert watchdog.status_code == 200, watchdog.text
    beats = watchdog.json()
    assert [b["stage"] for b in beats["heartbeats"]] == ["jobs"]
    assert beats["sessions"] == []
    assert sorted(record["line"][: len(NO_AT)] for record in beats["damaged"]) == sorted(
        [NO_AT, BAD_UP[: len(NO_AT)]]
    )

    usage = client.get("/api/v1/usage", params={"by": ["user"]}, headers=bob)
    assert usage.status_code == 200, usage.text
    assert {g["user"] for g in usage.json()["groups"]} == {"alice", "bob", "root"}
    [record] = usage.json()["damaged"]
    assert record["line"].startswith(BAD_USAGE)


def test_the_monitor_and_entry_pages_show_the_damaged_rows(
    client: TestClient, store: dict[str, str]
) -> None:
    assert login(client, "bob") == 303
    for path in ("/monitor", "/monitor/live"):
        page = client.get(path)
        assert page.status_code == 200, page.text
        assert f'id="job-{store["alice"]}"' in page.text
        assert f'id="job-{store["bob"]}"' in page.text
        assert 'id="damaged-job-j-bad-date"' in page.text
        assert BAD_DATE in page.text
        assert 'id="damaged-heartbeat-heartbeat:scan:h1:alice"' in page.text
        assert 'id="damaged-session-cluster_session:raven:h1:alice"' in page.text
        assert "<td>jobs</td>" in page.text  # the good heartbeat
    entry = client.get(f"/entry/{DATASET}")
    assert entry.status_code == 200, entry.text
    assert 'id="damaged-job-j-bad-date"' in entry.text
    assert f'href="/jobs/{store["alice"]}"' in entry.text
    one = client.get("/jobs/j-bad-date")
    assert one.status_code == 422 and BAD_DATE in one.text
    assert client.get("/usage").status_code == 200


@pytest.fixture
def run(cfg: Config, store: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(path), *args])

    return invoke


def test_queue_and_usage_list_the_good_and_a_line_per_damaged(  # type: ignore[no-untyped-def]
    run, store: dict[str, str]
) -> None:
    queue = run("queue", "--limit", "0")
    assert queue.exit_code == 0, queue.output
    assert lines_with(queue.output, store["alice"]) and lines_with(queue.output, store["bob"])
    assert len(lines_with(queue.output, "damaged job j-bad-date: updated_at")) == 1
    assert len(lines_with(queue.output, "damaged job j-bad-usage: usage.0")) == 1
    assert len(lines_with(queue.output, "damaged heartbeat heartbeat:scan:h1:alice")) == 1
    assert len(lines_with(queue.output, "damaged session cluster_session:raven:h1:alice")) == 1
    assert lines_with(queue.output, "watchdog jobs on ")
    as_json = json.loads(run("queue", "--limit", "0", "--json").output)
    assert {"j-bad-date", "j-bad-usage"} <= {record["id"] for record in as_json["damaged"]}

    usage = run("usage")
    assert usage.exit_code == 0, usage.output
    assert lines_with(usage.output, "alice") and lines_with(usage.output, "root")
    [line] = lines_with(usage.output, "damaged")
    assert line.startswith("damaged " + BAD_USAGE) and line.endswith(": not counted")
    csv = run("usage", "--csv")
    assert csv.exit_code == 0 and "damaged " + BAD_USAGE in csv.stderr
    assert "damaged" not in csv.stdout
    assert json.loads(run("usage", "--json").output)["damaged"][0]["id"] == "j-bad-usage"

    provenance = run("provenance", DATASET)
    assert provenance.exit_code == 0, provenance.output
    assert lines_with(provenance.output, "j-a1: diff_registration by alice")
    assert len(lines_with(provenance.output, "damaged " + BAD_USAGE)) == 1

    status = run("status", "j-bad-date")
    assert status.exit_code == 1
    assert status.output.startswith("error: " + BAD_DATE) and status.output.count("\n") == 1
    assert run("status", store["bob"]).exit_code == 0


def test_doctor_names_each_damaged_record_in_one_line(run: Any) -> None:
    doctor = run("doctor")
    assert doctor.exit_code == 1  # no crontab block, no recent heartbeat, damaged records
    assert len(lines_with(doctor.output, "✗ damaged job j-bad-date: updated_at: ")) == 1
    assert len(lines_with(doctor.output, "✗ damaged job j-bad-usage: usage.0: ")) == 1
    assert len(lines_with(doctor.output, "✗ damaged heartbeat heartbeat:scan:h1:alice: at:")) == 1
    assert len(lines_with(doctor.output, "✗ damaged session cluster_session:raven:h1:alice")) == 1
    assert "fix: the watchdog rewrites it on its next run" in doctor.output


def test_a_damaged_heartbeat_alone_breaks_neither_queue_nor_monitor_nor_doctor(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    job = job_in_state(db, cfg)
    beat(db, "jobs", {}, "alice", "h1")
    db.meta.update({"kind": "heartbeat"}, {"$unset": {"at": ""}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    queue = CliRunner().invoke(cli, ["--config", str(path), "queue"])
    assert queue.exit_code == 0, queue.output
    assert lines_with(queue.output, job)
    [line] = lines_with(queue.output, "damaged")
    assert line.startswith("damaged heartbeat heartbeat:jobs:") and line.endswith(
        "at: Field required"
    )
    doctor = CliRunner().invoke(cli, ["--config", str(path), "doctor"])
    assert len(lines_with(doctor.output, "✗ damaged heartbeat heartbeat:jobs:")) == 1, doctor.output
    assert "✗ watchdog heartbeat: the watchdog has never run" in doctor.output
    with TestClient(create_app(cfg)) as client:
        assert login(client, "bob") == 303
        page = client.get("/monitor")
        assert page.status_code == 200, page.text
        assert (
            f'id="job-{job}"' in page.text and 'id="damaged-heartbeat-heartbeat:jobs:' in page.text
        )
    beat(db, "jobs", {}, "alice", "h1")  # the watchdog's next run mends it
    again = CliRunner().invoke(cli, ["--config", str(path), "queue"])
    assert not lines_with(again.output, "damaged") and lines_with(again.output, "watchdog jobs")


def test_a_page_listing_reads_only_the_fields_of_its_rows(
    db: Database, store: dict[str, str]
) -> None:
    rows = list_rows(db, {})
    # only JobRow's fields are read: j-bad-usage's usage is none of them, so its row lists
    listed = {row.job_id for row in rows.items}
    assert {*store.values(), "j-bad-usage"} <= listed and "j-bad-date" not in listed
    assert {record.id for record in rows.damaged} == {"j-bad-date", "j-bad-created"}
    everything = list_jobs(db)  # whole jobs: the usage is read and refused
    assert {record.id for record in everything.damaged} == {
        "j-bad-date",
        "j-bad-created",
        "j-bad-usage",
    }
