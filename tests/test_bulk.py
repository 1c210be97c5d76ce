"""Bulk retry and cancel (`labctl.jobs.bulk`): the selection, the rights, the outcome; then the
same through `labctl retry|cancel`, the REST API and the dashboard's pages. Both backends."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from labctl.cli import cli
from labctl.config import Config
from labctl.db import Database
from labctl.errors import PermissionDenied, ValidationError
from labctl.jobs.bulk import Action, Selection, carry_out, choose, parse_filter, plan
from labctl.jobs.queue import get_job, read_job, transition
from labctl.model.states import FailureReason, JobState
from labctl.users import create_token
from labctl.web import create_app
from tests.jobfixtures import job_in_state
from tests.test_cli_terminal import read_until
from tests.webfixtures import csrf_token, login

F, C, T, Q = JobState.FAILED, JobState.CANCELLED, JobState.TRANSFERRING, JobState.QUEUED


@pytest.fixture
def jobs(db: Database, cfg: Config) -> dict[str, str]:
    """alice: two timed out, one out of memory, one transferring; bob: one timed out."""
    return {
        "a_timeout": job_in_state(db, cfg, F),
        "a_timeout2": job_in_state(db, cfg, F),
        "a_oom": job_in_state(db, cfg, F, reason=FailureReason.OUT_OF_MEMORY),
        "a_moving": job_in_state(db, cfg, T),
        "b_timeout": job_in_state(db, cfg, F, user="bob"),
    }


def ids(found: Any) -> set[str]:
    return {job.job_id for job in found}


# --- the selection and the rights ----------------------------------------------------------------


def test_a_filter_is_parsed_into_a_query() -> None:
    chosen = parse_filter(
        "alice",
        status=["failed, Cancelled"],
        reason=["timeout", "out_of_memory"],
        user="me",
        since="2026-11-01",
        cluster=" raven ",
        job_type="",
    )
    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert chosen == Selection(
        status=(F, C),
        reason=(FailureReason.TIMEOUT, FailureReason.OUT_OF_MEMORY),
        user="alice",
        since=since,
        cluster="raven",
    )
    assert chosen.query() == {
        "status": {"$in": ["failed", "cancelled"]},
        "failure.reason": {"$in": ["timeout", "out_of_memory"]},
        "user": "alice",
        "updated_at": {"$gte": since},
        "compute_cluster": "raven",
    }
    assert chosen.describe() == (
        "status failed,cancelled, reason timeout,out_of_memory, user alice, "
        "since 2026-11-01 00:00, cluster raven"
    )
    assert choose(["j1", "j1", "j2"], parse_filter("alice")) == Selection(ids=("j1", "j2"))


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"status": ["faild"]}, "unknown state 'faild' (known: queued, awaiting_data,"),
        ({"reason": ["oom"]}, "unknown reason 'oom' (known: transfer, submit, timeout,"),
        ({"since": "2026-13-01"}, "since takes a date like 2021-12-15, not '2026-13-01'"),
        ({"since": "last week"}, "since takes a date like 2021-12-15, not 'last week'"),
    ],
)
def test_bad_words_and_dates_are_one_clear_error(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_filter("alice", **given)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_ids_and_a_filter_together_or_neither_are_refused() -> None:
    with pytest.raises(ValidationError, match="give job ids or a filter, not both"):
        choose(["j1"], parse_filter("alice", status=["failed"]))
    with pytest.raises(ValidationError, match="name job ids or a filter"):
        choose([], parse_filter("alice"))


def test_a_member_selects_only_their_own_jobs(
    db: Database, cfg: Config, jobs: dict[str, str]
) -> None:
    failed = parse_filter("alice", status=["failed"])
    mine = plan(db, Action.RETRY, failed, "alice")
    assert ids(mine.jobs) == {jobs["a_timeout"], jobs["a_timeout2"], jobs["a_oom"]}
    assert mine.selection.user == "alice" and not mine.skipped
    timeouts = parse_filter("alice", status=["failed"], reason=["timeout"], user="me")
    assert ids(plan(db, Action.RETRY, timeouts, "alice").jobs) == {
        jobs["a_timeout"],
        jobs["a_timeout2"],
    }
    with pytest.raises(PermissionDenied) as refused:
        plan(db, Action.RETRY, parse_filter("alice", user="bob"), "alice")
    assert str(refused.value) == (
        "only an admin may touch bob's jobs; alice may select their own alone (--user me)"
    )
    everyone = plan(db, Action.RETRY, failed, "root")  # an admin: anyone's
    assert ids(everyone.jobs) == {
        jobs[k] for k in ("a_timeout", "a_timeout2", "a_oom", "b_timeout")
    }
    bobs = plan(db, Action.RETRY, parse_filter("root", user="bob"), "root")
    assert ids(bobs.jobs) == {jobs["b_timeout"]}


def test_named_jobs_of_others_in_the_wrong_state_or_missing_are_skipped(
    db: Database, cfg: Config, jobs: dict[str, str]
) -> None:
    named = choose(
        [jobs["a_timeout"], jobs["a_moving"], jobs["b_timeout"], "jnothing"], Selection()
    )
    chosen = plan(db, Action.RETRY, named, "alice")
    assert ids(chosen.ready) == {jobs["a_timeout"]}
    why = {skip.job_id: (skip.why, str(skip.error)) for skip in chosen.skipped}
    assert why == {
        jobs["a_moving"]: (
            "transferring",
            f"only failed or cancelled jobs can be retried; {jobs['a_moving']} is transferring",
        ),
        jobs["b_timeout"]: (
            "bob's",
            f"job {jobs['b_timeout']} belongs to bob; only they or an admin may change it",
        ),
        "jnothing": ("not found", "no job jnothing"),
    }
    cancel = plan(db, Action.CANCEL, named, "alice")
    assert ids(cancel.ready) == {jobs["a_moving"]}


def test_since_selects_by_the_last_change(db: Database, cfg: Config, jobs: dict[str, str]) -> None:
    old = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    db.queue.update({"job_id": jobs["a_oom"]}, {"$set": {"updated_at": old}})
    recent = parse_filter("alice", status=["failed"], since="2026-11-01")
    assert jobs["a_oom"] not in ids(plan(db, Action.RETRY, recent, "alice").jobs)
    assert jobs["a_oom"] in ids(
        plan(db, Action.RETRY, parse_filter("alice", since="2026-09-30"), "alice").jobs
    )


def test_carrying_out_touches_each_ready_job_and_reports_the_rest(
    db: Database, cfg: Config, jobs: dict[str, str]
) -> None:
    chosen = plan(db, Action.RETRY, parse_filter("alice", user="me"), "alice")
    assert len(chosen.ready) == 3
    # Another run moves one of them on between the listing and the action.
    raced = read_job(db, jobs["a_oom"])
    assert transition(db, raced, Q, "retried elsewhere")
    outcome = carry_out(db, chosen, "alice")
    assert {job["job_id"] for job in outcome.done} == {jobs["a_timeout"], jobs["a_timeout2"]}
    assert all(get_job(db, jobs[k])["status"] == "queued" for k in ("a_timeout", "a_timeout2"))
    assert outcome.summary() == "requeued 2 job(s); skipped 2 (1 changed meanwhile, 1 transferring)"
    assert outcome.exit_code == 2
    assert get_job(db, jobs["b_timeout"])["status"] == "failed"


# --- labctl retry|cancel ------------------------------------------------------------------------

Run = Callable[..., Result]


@pytest.fixture
def labctl(cfg: Config, tmp_path: Path) -> Callable[[str], Run]:
    """`labctl` as the given member (their config file), run without a terminal."""

    def as_user(username: str) -> Run:
        path = tmp_path / f"{username}.yaml"
        member = cfg.model_copy(update={"user": username})
        path.write_text(yaml.safe_dump(json.loads(member.model_dump_json())))
        return lambda *args: CliRunner().invoke(cli, ["--config", str(path), *args])

    return as_user


def status_of(db: Database, job_id: str) -> str:
    return str(get_job(db, job_id)["status"])


def test_a_filter_lists_first_and_acts_only_with_yes(
    labctl: Callable[[str], Run], db: Database, jobs: dict[str, str]
) -> None:
    alice = labctl("alice")
    listed = alice("retry", "--status", "failed", "--reason", "timeout")
    assert listed.exit_code == 1
    assert "2 job(s) match status failed, reason timeout, user alice" in listed.stdout
    for column in ("job", "dataset", "user", "state", "reason", "updated"):
        assert column in listed.stdout
    assert jobs["a_timeout"] in listed.stdout and jobs["a_timeout2"] in listed.stdout
    assert jobs["a_oom"] not in listed.stdout and jobs["b_timeout"] not in listed.stdout
    assert listed.stderr == "nothing done: add --yes to retry these 2 job(s)\n"
    assert status_of(db, jobs["a_timeout"]) == "failed"
    done = alice("retry", "--status", "failed", "--reason", "timeout", "--yes")
    assert done.exit_code == 0, done.output
    assert f"requeued {jobs['a_timeout']}\n" in done.stdout
    assert done.stdout.endswith("requeued 2 job(s)\n")
    assert status_of(db, jobs["a_timeout"]) == status_of(db, jobs["a_timeout2"]) == "queued"
    assert get_job(db, jobs["a_timeout"])["history"][-1]["note"] == "retried by alice"
    assert status_of(db, jobs["b_timeout"]) == "failed"
    empty = alice("retry", "--status", "failed", "--reason", "timeout", "--yes")
    assert (empty.exit_code, empty.output) == (
        0,
        "no job matches status failed, reason timeout, user alice\n",
    )


def test_queue_lists_what_the_same_filter_selects(
    labctl: Callable[[str], Run], jobs: dict[str, str]
) -> None:
    alice = labctl("alice")

    def listed(*filter: str) -> set[str]:
        done = alice("queue", *filter, "--json")
        assert done.exit_code == 0, done.output
        return {job["job_id"] for job in json.loads(done.stdout)["jobs"]}

    timeouts = {jobs["a_timeout"], jobs["a_timeout2"], jobs["b_timeout"]}
    assert listed("--status", "failed", "--reason", "timeout") == timeouts  # anyone's: a listing
    assert listed("--status", "failed,transferring", "--user", "me") == timeouts - {
        jobs["b_timeout"]
    } | {jobs["a_oom"], jobs["a_moving"]}
    assert listed("--user", "bob", "--cluster", "local", "--job-type", "file_stats") == {
        jobs["b_timeout"]
    }
    assert listed("--cluster", "raven") == set()
    assert listed("--since", "2999-01-01") == set()
    refused = alice("queue", "--status", "faild")
    assert refused.exit_code == 2 and refused.stderr.startswith("error: unknown state 'faild'")
    assert refused.stderr.count("\n") == 1


def test_the_api_lists_jobs_by_the_same_filter(
    client: TestClient, db: Database, jobs: dict[str, str]
) -> None:
    bob = bearer(db, "bob")
    answer = client.get("/api/v1/jobs", params={"status": "failed", "user": "me"}, headers=bob)
    assert [job["job_id"] for job in answer.json()["items"]] == [jobs["b_timeout"]]
    params = [("status", "failed"), ("reason", "out_of_memory"), ("reason", "timeout")]
    answer = client.get("/api/v1/jobs", params=params, headers=bob)
    assert {job["job_id"] for job in answer.json()["items"]} == {
        jobs["a_timeout"], jobs["a_timeout2"], jobs["a_oom"], jobs["b_timeout"]
    }  # fmt: skip
    bad = client.get("/api/v1/jobs", params={"since": "2026-13-01"}, headers=bob)
    assert bad.status_code == 422 and "since takes a date" in bad.json()["detail"]


def test_a_member_naming_another_is_refused_in_one_line(
    labctl: Callable[[str], Run], db: Database, jobs: dict[str, str]
) -> None:
    refused = labctl("alice")("cancel", "--user", "bob", "--yes")
    assert refused.exit_code == 3
    assert refused.output == (
        "error: only an admin may touch bob's jobs; alice may select their own alone (--user me)\n"
    )
    done = labctl("root")("retry", "--user", "bob", "--status", "failed", "--yes")
    assert done.exit_code == 0 and done.stdout.endswith("requeued 1 job(s)\n")
    assert status_of(db, jobs["b_timeout"]) == "queued"


def test_mixed_states_are_reported_not_fatal(
    labctl: Callable[[str], Run], db: Database, jobs: dict[str, str]
) -> None:
    alice = labctl("alice")
    preview = alice("cancel", "--user", "me", "--json")
    assert preview.exit_code == 1
    shown = json.loads(preview.stdout)
    assert shown["acted"] is False and len(shown["jobs"]) == 4
    assert shown["jobs"][0]["job_id"] == jobs["a_moving"]  # the last changed first
    why = {skip["job_id"]: skip["why"] for skip in shown["skipped"]}
    assert why == {jobs[k]: "failed" for k in ("a_timeout", "a_timeout2", "a_oom")}
    done = alice("cancel", "--user", "me", "--yes")
    assert done.exit_code == 0, done.output
    assert f"cancelled {jobs['a_moving']} and stopped it on local" in done.stdout
    assert f"skipped {jobs['a_oom']}: job {jobs['a_oom']} is already failed" in done.stdout
    assert done.stdout.endswith("cancelled 1 job(s); skipped 3 (3 failed)\n")
    assert status_of(db, jobs["a_moving"]) == "cancelled"
    assert get_job(db, jobs["a_moving"])["cleanup_pending"] is False


def test_several_named_jobs_report_each_and_exit_with_the_worst(
    labctl: Callable[[str], Run], db: Database, jobs: dict[str, str]
) -> None:
    result = labctl("alice")("retry", jobs["a_timeout"], jobs["b_timeout"], jobs["a_moving"])
    assert result.exit_code == 3  # bob's job: the permission error's code
    assert f"requeued {jobs['a_timeout']}\n" in result.stdout
    assert f"skipped {jobs['b_timeout']}: job {jobs['b_timeout']} belongs to bob" in result.stdout
    assert result.stdout.endswith("requeued 1 job(s); skipped 2 (1 bob's, 1 transferring)\n")
    assert status_of(db, jobs["a_timeout"]) == "queued"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["retry", "j1", "--status", "failed"], 2, "give job ids or a filter, not both"),
        (["retry"], 2, "name job ids or a filter (--status, --reason, --user, --since,"),
        (["cancel", "--status", "runing"], 2, "unknown state 'runing' (known: queued,"),
        (["retry", "--reason", "oom"], 2, "unknown reason 'oom' (known: transfer,"),
        (["retry", "--since", "yesterday"], 2, "since takes a date like 2021-12-15"),
        (["retry", "jnothing"], 1, "no job jnothing"),
    ],
)
def test_bad_input_is_one_line(
    labctl: Callable[[str], Run], args: list[str], code: int, message: str
) -> None:
    result = labctl("alice")(*args)
    assert result.exit_code == code, result.output
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1


# --- the REST API --------------------------------------------------------------------------------

BULK = "/api/v1/jobs/bulk"


@pytest.fixture
def client(cfg: Config) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


def bearer(db: Database, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, username)}"}


def test_the_api_lists_without_confirm_and_acts_with_it(
    client: TestClient, db: Database, jobs: dict[str, str]
) -> None:
    alice = bearer(db, "alice")
    body = {"action": "retry", "status": ["failed"], "reason": ["timeout"]}
    preview = client.post(BULK, json=body, headers=alice)
    assert preview.status_code == 200, preview.text
    answer = preview.json()
    assert answer["acted"] is False and answer["done"] == []
    assert {job["job_id"] for job in answer["jobs"]} == {jobs["a_timeout"], jobs["a_timeout2"]}
    assert answer["selection"] == "status failed, reason timeout, user alice"
    assert status_of(db, jobs["a_timeout"]) == "failed"
    done = client.post(BULK, json={**body, "confirm": True}, headers=alice).json()
    assert done["acted"] is True and done["summary"] == "requeued 2 job(s)"
    assert {job["status"] for job in done["done"]} == {"queued"}
    assert status_of(db, jobs["a_timeout2"]) == "queued"
    named = {"action": "cancel", "ids": [jobs["a_moving"], jobs["b_timeout"]], "confirm": True}
    mixed = client.post(BULK, json=named, headers=alice).json()
    assert [job["job_id"] for job in mixed["done"]] == [jobs["a_moving"]]
    assert mixed["skipped"] == [
        {
            "job_id": jobs["b_timeout"],
            "why": "bob's",
            "detail": f"job {jobs['b_timeout']} belongs to bob; only they or an admin may "
            "change it",
            "exit_code": 3,
        }
    ]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"action": "retry", "user": "bob"}, 403, "only an admin may touch bob's jobs"),
        ({"action": "retry", "status": ["faild"]}, 422, "unknown state 'faild'"),
        ({"action": "retry", "since": "2026-02-30"}, 422, "since takes a date like"),
        (
            {"action": "retry", "ids": ["j1"], "status": ["failed"]},
            422,
            "give job ids or a filter, not",
        ),
        ({"action": "retry"}, 422, "name job ids or a filter"),
    ],
)
def test_the_api_refuses_bad_input_in_one_line(
    client: TestClient, db: Database, body: dict[str, Any], status: int, detail: str
) -> None:
    answer = client.post(BULK, json=body, headers=bearer(db, "alice"))
    assert answer.status_code == status and answer.json()["detail"].startswith(detail)


def test_the_api_takes_a_session_with_its_csrf_token(
    client: TestClient, db: Database, jobs: dict[str, str]
) -> None:
    assert client.post(BULK, json={"action": "retry", "user": "me"}).status_code == 401
    assert login(client, "alice") == 303
    body = {"action": "retry", "user": "me", "confirm": True}
    refused = client.post(BULK, json=body)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    token = csrf_token(client, "/monitor")
    done = client.post(BULK, json=body, headers={"X-CSRF-Token": token})
    assert done.status_code == 200 and done.json()["summary"].startswith("requeued 3 job(s)")


# --- the dashboard -------------------------------------------------------------------------------


def rows(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr id="(?:job|pick)-(j\w+)"[^>]*>(.*?)</tr>', html, re.S))


def test_the_job_list_filters_and_offers_boxes_for_ones_own_jobs(
    client: TestClient, db: Database, jobs: dict[str, str]
) -> None:
    assert login(client, "alice") == 303
    listed = client.get("/monitor", params={"status": "failed", "reason": "timeout"}).text
    shown = rows(listed)
    assert set(shown) == {jobs["a_timeout"], jobs["a_timeout2"], jobs["b_timeout"]}
    assert 'name="job"' in shown[jobs["a_timeout"]] and 'form="bulk"' in shown[jobs["a_timeout"]]
    assert 'name="job"' not in shown[jobs["b_timeout"]]  # bob's: no box for alice
    assert '<script src="/static/bulk.js" defer></script>' in listed
    assert client.get("/static/bulk.js").status_code == 200
    live = client.get("/monitor/live", params={"user": "me", "status": "transferring"}).text
    assert set(rows(live)) == {jobs["a_moving"]}
    bad = client.get("/monitor", params={"since": "soon"})
    assert bad.status_code == 400 and "since takes a date like 2021-12-15" in bad.text


def test_ticked_jobs_are_listed_then_acted_on_with_the_csrf_token(
    client: TestClient, db: Database, jobs: dict[str, str]
) -> None:
    assert login(client, "alice") == 303
    picked = [jobs["a_timeout"], jobs["a_moving"], jobs["b_timeout"]]
    page = client.get("/monitor/confirm", params={"action": "retry", "job": picked})
    assert page.status_code == 200 and "Retry 1 job(s)?" in page.text
    shown = rows(page.text)
    assert (
        "skip: transferring" in shown[jobs["a_moving"]] and "skip: bob" in shown[jobs["b_timeout"]]
    )
    assert status_of(db, jobs["a_timeout"]) == "failed"  # nothing done yet
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    assert form["job"] == jobs["a_timeout"] and form["action"] == "retry"
    forged = client.post("/monitor/bulk", data={"action": "retry", "job": picked})
    assert forged.status_code == 403 and status_of(db, jobs["a_timeout"]) == "failed"
    data = {"action": "retry", "job": picked, "csrf_token": form["csrf_token"]}
    done = client.post("/monitor/bulk", data=data)
    assert done.status_code == 200
    assert "requeued 1 job(s); skipped 2 (1 bob&#39;s, 1 transferring)" in done.text
    assert status_of(db, jobs["a_timeout"]) == "queued"
    assert status_of(db, jobs["b_timeout"]) == "failed"
    nothing = client.get("/monitor/confirm", params={"action": "retry"})
    assert nothing.status_code == 400 and "tick one or more jobs" in nothing.text
    wrong = client.get("/monitor/confirm", params={"action": "delete", "job": picked})
    assert wrong.status_code == 400 and "unknown action &#39;delete&#39;" in wrong.text


def test_on_a_terminal_a_filter_asks_before_acting(
    cfg: Config, db: Database, jobs: dict[str, str], tmp_path: Path
) -> None:
    """On a real pseudo-terminal: a no at the prompt changes nothing, a yes retries."""
    path = tmp_path / "alice.yaml"
    alice = cfg.model_copy(update={"user": "alice"})
    path.write_text(yaml.safe_dump(json.loads(alice.model_dump_json())))
    argv = [sys.executable, "-m", "labctl", "--config", str(path), "retry", "--reason", "timeout"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def answer(typed: bytes, then: bytes) -> int:
        main, child = pty.openpty()
        proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env)
        os.close(child)
        try:
            read_until(main, b"retry these 2 job(s)? [y/N]: ")
            os.write(main, typed)
            read_until(main, then)
            return proc.wait(timeout=20)
        finally:
            os.close(main)
            proc.kill()

    assert answer(b"n\n", b"nothing done") == 1
    assert status_of(db, jobs["a_timeout"]) == "failed"
    assert answer(b"y\n", b"requeued 2 job(s)") == 0
    assert status_of(db, jobs["a_timeout"]) == status_of(db, jobs["a_timeout2"]) == "queued"
