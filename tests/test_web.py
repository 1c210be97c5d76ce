"""The dashboard's pages and its login, through the ASGI app, on both database backends."""

from __future__ import annotations

import datetime as dt
import html as markup
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import pytest
import yaml
from fastapi import FastAPI
from starlette.testclient import TestClient

from labctl.catalog.experiments import get_entry, log_entries
from labctl.compute.transport import Session
from labctl.config import Config, DatabaseConfig, WebConfig, load_config
from labctl.config.jobtypes import ClusterResources, JobTypeConfig, Resources
from labctl.db import Database
from labctl.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnreachable,
    DuplicateError,
    LabctlError,
    NotFoundError,
    PermissionDenied,
    ValidationError,
)
from labctl.jobs.queue import get_job, read_job, transition
from labctl.jobs.submit import JobRequest, batch_script
from labctl.limits import REQUEST_BYTES
from labctl.model.job import Job
from labctl.model.states import FailureReason, InvalidTransition, JobState
from labctl.stages.heartbeat import SessionReport, beat, record_sessions
from labctl.users import add_user
from labctl.web import create_app
from labctl.web.auth import LoginLimiter, open_session, session_principal
from labctl.web.problems import status_of
from tests.hostile import alias_bomb, nested
from tests.jobfixtures import DATASET, dataset_with_files, submit_as, transfer_record
from tests.mongoserver import free_port
from tests.webfixtures import csrf_token, login, password

Browser = Callable[[str], TestClient]

HOST = socket.gethostname()


@pytest.fixture
def app(cfg: Config) -> Iterator[FastAPI]:
    app = create_app(cfg)
    with TestClient(app):  # runs the lifespan: the database closes at the end
        yield app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture
def browser(app: FastAPI) -> Browser:
    """A new client logged in as the given member (each has its own cookies)."""

    def open_as(username: str) -> TestClient:
        client = TestClient(app)
        assert login(client, username) == 303
        return client

    return open_as


def move_to_transferring(db: Database, job: dict[str, Any], percent: int) -> None:
    transfer = transfer_record(
        bytes=10 * percent, total=1000, percent=percent, rate="1.00MB/s", eta_seconds=65
    )
    fields = {"transfer": transfer}
    transition(db, Job.of(job), JobState.TRANSFERRING, "rsync started", fields=fields)


# --- login, sessions, CSRF ---------------------------------------------------------------------


def test_login_page_and_static_files_need_no_login(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200 and 'name="password"' in page.text
    assert "labctl_login=" in page.headers["set-cookie"]
    htmx = client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx 2.0.11" in htmx.text and "0BSD" in htmx.text
    assert client.get("/static/style.css").status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


PAGES = ["/", "/add", "/add/row", "/browse", f"/entry/{DATASET}", "/monitor", "/monitor/live"]
PAGES += ["/jobs/j123/live", "/jobs/j123", "/usage", "/submit", "/submit/options"]
POSTS = ["/add", f"/entry/{DATASET}", "/jobs/j123/cancel", "/jobs/j123/retry", "/logout"]
POSTS += ["/submit"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_redirects_to_the_login_without_a_session(client: TestClient, path: str) -> None:
    answer = client.get(path + "?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=" + quote(path + "?x=1")
    htmx = client.get(path, headers={"HX-Request": "true"}, follow_redirects=False)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login?next=")


@pytest.mark.parametrize("path", POSTS)
def test_every_form_target_needs_a_session(client: TestClient, path: str) -> None:
    answer = client.post(path, data={"csrf_token": "x"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


def test_login_opens_a_session_in_an_httponly_samesite_cookie(client: TestClient) -> None:
    form = {"username": "alice", "password": password("alice"), "next": f"/entry/{DATASET}"}
    answer = client.post("/login", data={**form, "csrf_token": csrf_token(client)})
    assert answer.status_code == 200 and answer.url.path == f"/entry/{DATASET}"
    cookie = answer.history[0].headers["set-cookie"]
    assert "labctl_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie
    assert client.get("/browse").status_code == 200


def test_cookies_are_secure_when_configured_or_over_https(cfg: Config) -> None:
    secure = cfg.model_copy(update={"web": WebConfig(secure_cookies=True)})
    with TestClient(create_app(secure)) as client:
        assert "Secure" in client.get("/login").headers["set-cookie"]
    with TestClient(create_app(cfg), base_url="https://lab.example") as client:
        assert login(client, "alice") == 303
        assert client.get("/browse").status_code == 200


def test_wrong_passwords_are_throttled_per_user_and_address(client: TestClient) -> None:
    assert login(client, "alice", "wrong") == 401
    for _ in range(4):
        assert login(client, "alice", "wrong") == 401
    throttled = client.post(
        "/login",
        data={"username": "alice", "password": password("alice"), "csrf_token": csrf_token(client)},
    )
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "too many failed logins" in throttled.text
    assert login(client, "bob") == 303  # another user from the same address is not blocked


def test_login_limiter_forgets_after_a_minute() -> None:
    now = [0.0]
    limiter = LoginLimiter(2, 100, clock=lambda: now[0])
    limiter.failed("alice", "10.0.0.1")
    limiter.failed("alice", "10.0.0.2")
    assert limiter.wait_seconds("alice", "10.0.0.3") == 61
    now[0] = 30
    assert 0 < limiter.wait_seconds("alice", "10.0.0.1") <= 31
    now[0] = 60.5
    assert limiter.wait_seconds("alice", "10.0.0.1") == 0
    limiter.failed("alice", "10.0.0.1")
    limiter.succeeded("alice")
    assert limiter.wait_seconds("alice", "10.0.0.1") == 0


def test_login_limiter_counts_each_address_over_all_usernames() -> None:
    now = [0.0]
    limiter = LoginLimiter(100, 3, clock=lambda: now[0])
    for name in ("alice", "bob", "carol"):
        assert limiter.wait_seconds(name, "10.0.0.1") == 0
        limiter.failed(name, "10.0.0.1")
    assert limiter.wait_seconds("dave", "10.0.0.1") == 61
    assert limiter.wait_seconds("dave", "10.0.0.2") == 0
    limiter.succeeded("alice")  # a member's good login does not open the door for the address
    assert limiter.wait_seconds("alice", "10.0.0.1") == 61
    now[0] = 61
    assert limiter.wait_seconds("dave", "10.0.0.1") == 0


def _guess(client: TestClient, username: str, forwarded_for: str | None = None) -> int:
    """One wrong password for `username`, maybe with a (spoofed) X-Forwarded-For."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    form = {"username": username, "password": "wrong-guess", "csrf_token": csrf_token(client)}
    return client.post("/login", data=form, headers=headers).status_code


def test_one_address_cannot_try_every_username(cfg: Config) -> None:
    web = cfg.web.model_copy(update={"login_attempts_per_address_per_minute": 3})
    with TestClient(create_app(cfg.model_copy(update={"web": web}))) as client:
        assert [_guess(client, name) for name in ("alice", "bob", "nobody")] == [401] * 3
        assert _guess(client, "root") == 429
        assert login(client, "alice") == 429  # even the right password waits
        other = TestClient(client.app, client=("10.1.2.3", 4000))
        assert login(other, "alice") == 303


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(cfg: Config) -> None:
    """Without `web.trusted_proxies`, a spoofed X-Forwarded-For (even from 127.0.0.1) changes
    nothing; from a configured proxy, each forwarded client counts on its own."""
    for proxies, expected in (([], [401, 401, 429]), (["127.0.0.0/8"], [401, 401, 401])):
        limits = {"login_attempts_per_address_per_minute": 2, "trusted_proxies": proxies}
        web = cfg.web.model_copy(update=limits)
        app = create_app(cfg.model_copy(update={"web": web}))
        with TestClient(app, client=("127.0.0.1", 4000)) as client:
            statuses = [_guess(client, f"user{n}", f"203.0.113.{n}") for n in range(3)]
        assert statuses == expected, proxies


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"login_attempts_per_minute": 0}, "web.login_attempts_per_minute"),
        ({"login_attempts_per_minute": -5}, "greater than or equal to 1"),
        ({"login_attempts_per_minute": 10**9}, "less than or equal to 1000"),
        ({"login_attempts_per_address_per_minute": 10**9}, "less than or equal to 1000"),
        ({"trusted_proxies": ["proxy.lab"]}, "web.trusted_proxies.0: value is not a valid IPv4"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "web.trusted_proxies.0"),
    ],
)
def test_login_settings_are_bounded(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"web": settings}))
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def _median_login_seconds(client: TestClient, usernames: list[str], rounds: int) -> list[float]:
    """The median time of a wrong-password login for each username, the attempts interleaved
    (so that a busy machine slows all of them alike)."""
    token = csrf_token(client)
    times: list[list[float]] = [[] for _ in usernames]
    for _ in range(rounds):
        for spent, username in zip(times, usernames, strict=True):
            form = {"username": username, "password": "wrong-guess-1", "csrf_token": token}
            start = time.perf_counter()
            assert client.post("/login", data=form).status_code == 401
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def test_a_login_takes_as_long_whether_or_not_the_account_exists(db: Database, cfg: Config) -> None:
    """Else the time of the answer tells who has an account (a real argon2 hash, as stored in
    production, takes a tenth of a second to check)."""
    add_user(db, "carol", password="a long real passphrase")
    add_user(db, "dave")  # no web login
    limits = {"login_attempts_per_minute": 1000, "login_attempts_per_address_per_minute": 1000}
    web = cfg.web.model_copy(update=limits)
    with TestClient(create_app(cfg.model_copy(update={"web": web}))) as client:
        known, unknown, no_password = _median_login_seconds(client, ["carol", "nobody", "dave"], 7)
    figures = f"known {known * 1000:.0f} ms, unknown {unknown * 1000:.0f} ms, "
    figures += f"no password {no_password * 1000:.0f} ms"
    assert 0.5 < unknown / known < 2 and 0.5 < no_password / known < 2, figures


def test_login_without_its_csrf_token_is_refused(client: TestClient) -> None:
    form = {"username": "alice", "password": password("alice")}
    assert client.post("/login", data={**form, "csrf_token": "forged"}).status_code == 403
    fresh = TestClient(client.app)
    assert fresh.post("/login", data={**form, "csrf_token": ""}).status_code == 403


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example", "/\\evil", "/\t/evil.example"]
)
def test_login_never_redirects_off_the_site(client: TestClient, target: str) -> None:
    form = {"username": "alice", "password": password("alice"), "next": target}
    answer = client.post(
        "/login", data={**form, "csrf_token": csrf_token(client)}, follow_redirects=False
    )
    assert answer.headers["location"] == "/"


def test_logout_needs_csrf_and_ends_the_session_on_the_server(browser: Browser) -> None:
    alice = browser("alice")
    cookie = alice.cookies["labctl_session"]
    assert alice.post("/logout", follow_redirects=False).status_code == 403
    token = csrf_token(alice, "/browse")
    assert alice.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code
    replay = TestClient(alice.app, cookies={"labctl_session": cookie})
    assert replay.get("/browse", follow_redirects=False).status_code == 303


def test_expired_or_orphaned_sessions_are_refused(db: Database, cfg: Config) -> None:
    old = open_session(db, "alice", dt.timedelta(seconds=-1))
    assert session_principal(db, old) is None
    live = open_session(db, "bob", dt.timedelta(hours=1))
    assert session_principal(db, live) is not None
    db.users.delete({"username": "bob"})
    assert session_principal(db, live) is None
    open_session(db, "alice", dt.timedelta(hours=1))  # and it sweeps the expired one
    assert db.meta.count({"kind": "session", "expires_at": {"$lt": dt.datetime.now(dt.UTC)}}) == 0


def test_labctl_errors_map_to_http_statuses() -> None:
    assert status_of(NotFoundError("x")) == 404
    assert status_of(PermissionDenied("x")) == 403
    assert status_of(DuplicateError("x")) == 409
    assert status_of(InvalidTransition("x")) == 409
    assert status_of(ValidationError("x")) == 422
    assert status_of(DatabaseUnreachable("x")) == 503
    assert status_of(DatabaseError("x")) == 500
    assert status_of(LabctlError("x")) == 400


# --- add -----------------------------------------------------------------------------------------


def _field(html: str, name: str) -> str:
    """The markup of one field of a form: its label, input and error."""
    found = re.search(
        rf'<div class="field[^"]*">\s*<label for="{re.escape(name)}".*?</div>', html, re.S
    )
    assert found, f"no field {name}"
    return found[0]


def test_add_form_is_generated_from_the_schema(browser: Browser) -> None:
    html = browser("alice").get("/add").text
    assert 'class="req"' in _field(html, "f-user") and " required" in _field(html, "f-user")
    assert 'class="req"' in _field(html, "f-data_raw_path")
    assert 'class="req"' not in _field(html, "f-n_planes")
    assert 'type="number"' in _field(html, "f-n_planes")
    assert 'type="date"' in _field(html, "f-session_date")
    assert "<select" in _field(html, "f-data_complete")
    assert "imaging planes" in _field(html, "f-n_planes")
    assert html.count('name="extra_key"') == 3
    assert 'name="extra_key"' in browser("bob").get("/add/row").text


def test_add_shows_each_error_beside_its_field_and_stores_nothing(
    browser: Browser, db: Database
) -> None:
    alice = browser("alice")
    form = {
        "csrf_token": csrf_token(alice, "/add"),
        "dataset": "20211315_093527",
        "f.user": "alice",
        "f.n_planes": "many",
        "extra_key": ["stim.contrast", "bad key", "n_planes"],
        "extra_value": ["0.5", "1", "3"],
    }
    answer = alice.post("/add", data=form)
    assert answer.status_code == 422
    html = answer.text
    assert "Nothing was stored" in html
    assert "not a real date" in _field(html, "dataset")
    assert "required" in _field(html, "f-data_raw_path")
    assert "must be int" in _field(html, "f-n_planes")
    assert 'value="many"' in _field(html, "f-n_planes")  # what was typed is kept
    rows = re.findall(r'<div class="extra( invalid)?">(.*?)</div>', html, re.S)
    assert [bool(invalid) for invalid, _ in rows[:3]] == [False, True, True]
    assert "dotted identifiers" in rows[1][1] and "given twice" in rows[2][1]
    assert db.data.count() == 1


def test_add_stores_a_typed_entry_with_free_nested_fields(browser: Browser, db: Database) -> None:
    bob = browser("bob")
    form = {
        "csrf_token": csrf_token(bob, "/add"),
        "dataset": "20220101_120000",
        "f.user": "bob",
        "f.data_raw_path": "/nfs/bob/20220101_120000",
        "f.n_planes": "12",
        "f.session_date": "2022-01-01",
        "f.data_complete": "true",
        "f.runclass.id": "",
        "extra_key": ["stim.contrast", "", "tags"],
        "extra_value": ["0.5", "", "[a, b]"],
    }
    answer = bob.post("/add", data=form, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/entry/2022")
    entry = get_entry(db, "20220101_120000")
    assert entry["n_planes"] == 12 and entry["data_complete"] is True
    assert entry["session_date"] == dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
    assert entry["stim"] == {"contrast": 0.5} and entry["tags"] == ["a", "b"]
    assert "runclass" not in entry
    assert entry["created_by"] == entry["updated_by"] == "bob"
    assert "Stored." in bob.get(answer.headers["location"]).text


def test_add_refuses_an_existing_dataset_beside_its_field(browser: Browser) -> None:
    alice = browser("alice")
    form = {"csrf_token": csrf_token(alice, "/add"), "dataset": DATASET, "f.user": "a"}
    answer = alice.post("/add", data={**form, "f.data_raw_path": "/x"})
    assert answer.status_code == 422 and "already logged" in _field(answer.text, "dataset")


def test_add_without_the_csrf_token_is_forbidden(browser: Browser, db: Database) -> None:
    form = {"dataset": "20220101_120000", "f.user": "a", "f.data_raw_path": "/x"}
    assert browser("alice").post("/add", data=form).status_code == 403
    assert browser("alice").post("/add", data={**form, "csrf_token": "forged"}).status_code == 403
    assert db.data.count() == 1


def test_add_prefills_the_owner_with_the_member(browser: Browser) -> None:
    assert 'value="bob"' in _field(browser("bob").get("/add").text, "f-user")


def test_add_of_another_member_s_entry_is_refused_on_the_form_as_typed(
    browser: Browser, db: Database
) -> None:
    bob = browser("bob")
    form = {
        "csrf_token": csrf_token(bob, "/add"),
        "dataset": "20220101_120000",
        "f.user": "charlie",
        "f.data_raw_path": "/nfs/charlie/20220101_120000",
        "f.n_planes": "7",
        "extra_key": ["comment"],
        "extra_value": ["for charlie"],
    }
    answer = bob.post("/add", data=form)
    assert answer.status_code == 403
    html = answer.text
    assert "Nothing was stored" in html and "is charlie&#39;s: only they or an admin" in html
    assert 'name="dataset" value="20220101_120000"' in html  # the form, with what was typed
    assert 'value="charlie"' in _field(html, "f-user") and 'value="7"' in _field(html, "f-n_planes")
    assert 'value="for charlie"' in html
    assert db.data.count() == 1


# --- browse --------------------------------------------------------------------------------------


@pytest.fixture
def many(db: Database, cfg: Config) -> None:
    """Twelve more entries over three members and two months."""
    entries = [
        (
            f"2022{month:02d}{day:02d}_100000",
            {
                "user": ("alice", "bob", "dana")[day % 3],
                "data_raw_path": f"/nfs/{day}",
                "n_planes": day,
                "runclass": {"id": "ARB-diff" if day % 2 else "GCaMP"},
            },
        )
        for month in (1, 2)
        for day in range(1, 7)
    ]
    log_entries(db, cfg, entries)


def _datasets(html: str) -> list[str]:
    return re.findall(r'<td><a href="/entry/(\d{8}_\d{6})">', html)


def test_browse_filters_by_user_dates_and_any_field(browser: Browser, many: None) -> None:
    alice = browser("alice")
    assert len(_datasets(alice.get("/browse?per=100").text)) == 13
    by_user = alice.get("/browse", params={"user": "dana", "per": 100}).text
    assert sorted(_datasets(by_user)) == [
        "20220102_100000",
        "20220105_100000",
        "20220202_100000",
        "20220205_100000",
    ]
    february = alice.get("/browse", params={"since": "2022-02-01", "until": "2022-02-03"}).text
    assert sorted(_datasets(february)) == [f"202202{d:02d}_100000" for d in (1, 2, 3)]
    where = alice.get("/browse", params={"where": "n_planes>=5\nrunclass.id~^ARB"}).text
    assert sorted(_datasets(where)) == ["20220105_100000", "20220205_100000"]
    assert "2 entries" in where


def test_browse_names_a_mistyped_field_or_operator(browser: Browser, many: None) -> None:
    alice = browser("alice")
    typo = alice.get("/browse", params={"where": "n_plane>=10"})
    assert typo.status_code == 400
    assert "no entry has a field n_plane; did you mean n_planes?" in typo.text
    operator = alice.get("/browse", params={"where": "n_planes=>10"})
    assert operator.status_code == 400 and "unknown operator &#39;=&gt;&#39;" in operator.text


def test_browse_sorts_paginates_and_chooses_columns(browser: Browser, many: None) -> None:
    alice = browser("alice")
    first = alice.get("/browse", params={"sort": "-n_planes", "per": 5, "where": "n_planes>0"})
    assert set(_datasets(first.text)[:2]) == {"20220206_100000", "20220106_100000"}
    assert "page 1 of 3" in first.text and "next →" in first.text
    last = alice.get("/browse", params={"sort": "-n_planes", "per": 5, "page": 3})
    assert len(_datasets(last.text)) == 3 and "← previous" in last.text
    header = re.search(r'href="(\?[^"]*)">n_planes ▼', first.text)
    assert header and "sort=n_planes" in header[1]  # clicking the column sorts the other way
    chosen = alice.get(
        "/browse", params={"col": ["dataset", "runclass.id"], "where": "user=charlie"}
    ).text
    heads = re.findall(r"<th><a [^>]*>([\w.]+)", chosen)
    assert heads == ["dataset", "runclass.id"]
    assert 'value="data_path"' in chosen  # free fields found on the page can be chosen


def test_browse_reports_a_bad_condition(browser: Browser) -> None:
    answer = browser("alice").get("/browse", params={"where": "n_planes>many"})
    assert answer.status_code == 400 and "must be int" in answer.text
    answer = browser("alice").get("/browse", params={"since": "yesterday"})
    assert answer.status_code == 400 and "takes a date" in answer.text


# --- entry ---------------------------------------------------------------------------------------


def test_entry_page_shows_all_fields_and_jobs_with_results(
    browser: Browser, db: Database, cfg: Config
) -> None:
    job = submit_as(db, cfg)
    result = {"name": "file_stats.json", "path": "/r/file_stats.json", "size": 2048}
    db.queue.update(
        {"job_id": job["job_id"]}, {"$set": {"results": [{**result, "sha256": "ab" * 32}]}}
    )
    html = browser("bob").get(f"/entry/{DATASET}").text
    for text in (
        "data_raw_path",
        "charlie",
        "created_by",
        "alice",
        job["job_id"],
        "file_stats.json",
    ):
        assert text in html
    assert "2.0 kB" in html


def test_entry_page_shows_the_dataset_s_time_to_result(
    browser: Browser, db: Database, cfg: Config
) -> None:
    """A bar per job, a part per phase as its history has it, and the bytes each way."""
    job = submit_as(db, cfg)
    t0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    steps = [("queued", 0), ("transferring", 60), ("submitted", 180), ("running", 210),
             ("retrieving", 810), ("completed", 830)]  # fmt: skip
    history = [{"state": s, "at": t0 + dt.timedelta(seconds=at), "note": ""} for s, at in steps]
    shipped = {**transfer_record(), "bytes": 4000, "total": 4000, "done": True,
               "started_at": t0 + dt.timedelta(seconds=60),
               "finished_at": t0 + dt.timedelta(seconds=160)}  # fmt: skip
    result = {"name": "file_stats.json", "path": "/r/file_stats.json", "size": 2048}
    changes = {"status": "completed", "created_at": t0, "history": history, "transfer": shipped,
               "results": [{**result, "sha256": "ab" * 32}]}  # fmt: skip
    db.queue.update({"job_id": job["job_id"]}, {"$set": changes})
    page = browser("bob").get(f"/entry/{DATASET}").text
    section = page[page.index('id="timeline"') :]
    assert "1 job(s) over 0:13:50;" in section  # queued to completed
    assert "sent 4.0 kB, brought home 2.0 kB" in section
    assert (
        'aria-label="queued 0:01:00, transferring 0:02:00, waiting 0:00:30, computing 0:10:00, '
        'retrieving 0:00:20"'
    ) in section
    assert "40 B/s" in section  # 4000 bytes in 100 s
    widths = [
        float(w)
        for w in re.findall(r'<rect class="ph-\w+" x="[\d.]+" y="0" width="([\d.]+)"', section)
    ]
    assert len(widths) == 5 and abs(sum(widths) - 1000) < 1


def test_unknown_or_malformed_entry_is_an_error_page(browser: Browser) -> None:
    assert browser("alice").get("/entry/20990101_000000").status_code == 404
    assert browser("alice").get("/entry/nope").status_code == 422


def test_edit_stores_changed_and_new_fields_as_the_editor(browser: Browser, db: Database) -> None:
    bob = browser("bob")
    html = bob.get(f"/entry/{DATASET}").text
    form = dict(re.findall(r'name="(f\.[\w.]+)" value="([^"]*)"', html))
    assert set(form) >= {"f.user", "f.data_raw_path", "f.data_path"}
    assert "f.created_by" not in form
    form["csrf_token"] = csrf_token(bob, f"/entry/{DATASET}")
    answer = bob.post(
        f"/entry/{DATASET}",
        data={**form, "extra_key": ["quality", "comment"], "extra_value": ["4", "seen"]},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("saved=2")
    entry = get_entry(db, DATASET)
    assert entry["comment"] == "seen" and entry["quality"] == 4
    assert entry["updated_by"] == "bob" and entry["created_by"] == "alice"
    # the fields that steer the watchdog are the owner's (or an admin's) to change
    form["csrf_token"] = csrf_token(bob, f"/entry/{DATASET}")
    for field, value in (("f.user", "bob"), ("f.data_raw_path", "/home/charlie/.config")):
        refused = bob.post(f"/entry/{DATASET}", data={**form, field: value})
        assert refused.status_code == 403, refused.text
        assert "only they or an admin may set" in refused.text
    assert get_entry(db, DATASET)["data_raw_path"] == entry["data_raw_path"]


def test_edit_refuses_bad_values_beside_the_field(browser: Browser, db: Database) -> None:
    alice = browser("alice")
    token = csrf_token(alice, f"/entry/{DATASET}")
    answer = alice.post(
        f"/entry/{DATASET}",
        data={"csrf_token": token, "f.user": "", "extra_key": ["n_planes"], "extra_value": ["x"]},
    )
    assert answer.status_code == 422 and "Nothing was saved" in answer.text
    assert "required" in _field(answer.text, "f-user")
    assert "must be int" in answer.text
    assert get_entry(db, DATASET)["user"] == "charlie"


def test_an_operator_value_is_refused_and_one_stored_by_other_means_does_not_block_saving(
    browser: Browser, db: Database
) -> None:
    alice = browser("alice")
    token = csrf_token(alice, f"/entry/{DATASET}")
    for value in ("{$gt: 1}", alias_bomb(), nested(1000)):
        refused = alice.post(
            f"/entry/{DATASET}",
            data={"csrf_token": token, "extra_key": ["cond"], "extra_value": [value]},
        )
        assert refused.status_code == 422 and "Nothing was saved" in refused.text
    assert "cond" not in get_entry(db, DATASET)

    db.data.update({"dataset": DATASET}, {"$set": {"cond": {"$gt": 1}}})  # not through labctl
    html = alice.get(f"/entry/{DATASET}").text
    assert "cond.$gt" in html and 'name="f.cond.$gt"' not in html  # shown, not offered
    form = dict(re.findall(r'name="(f\.[\w.]+)" value="([^"]*)"', html))
    form.update({"f.cond.$gt": "2", "csrf_token": token, "extra_key": "quality"})
    saved = alice.post(
        f"/entry/{DATASET}", data={**form, "extra_value": "4"}, follow_redirects=False
    )
    assert saved.status_code == 303, saved.text
    entry = get_entry(db, DATASET)
    assert entry["quality"] == 4 and entry["cond"] == {"$gt": 1}


def test_a_form_beyond_the_body_limit_is_413(browser: Browser, db: Database) -> None:
    alice = browser("alice")
    form = {"csrf_token": csrf_token(alice, "/add"), "dataset": "20220101_120000"}
    answer = alice.post("/add", data={**form, "f.user": "x" * REQUEST_BYTES})
    assert answer.status_code == 413 and "larger than 2,000,000 bytes" in answer.text
    assert db.data.count() == 1


# --- submit --------------------------------------------------------------------------------------

OTHER = "20211216_100000"  # a second dataset with files, for submitting on several at once


def _option(html: str, name: str) -> str:
    return _field(html, f"o-{name}")


def _submit(client: TestClient, **form: Any) -> httpx2.Response:
    """The Submit form posted with `form` over the defaults: file_stats on the local cluster."""
    defaults = {"job_type": "file_stats", "compute_cluster": "local", "action": "submit"}
    data = {"csrf_token": csrf_token(client, "/submit"), **defaults, **form}
    return client.post("/submit", data=data, follow_redirects=False)


def _refusals(html: str) -> list[str]:
    found = re.search(r'<div class="error" role="alert" id="refused">(.*?)</div>', html, re.S)
    assert found, "no refusal on the page"
    return [markup.unescape(item) for item in re.findall(r"<li>(.*?)</li>", found[1], re.S)]


def test_submit_form_is_generated_from_the_job_type_on_the_cluster(
    cfg: Config, tmp_path: Path
) -> None:
    """Options with their types, defaults and help; splits; resources up to the limits the job
    type has on the chosen cluster; the datasets ticked in Browse filled in."""
    big = ClusterResources(max_resources=Resources(mem="1T"))
    wider = cfg.model_copy(
        update={
            "clusters": {**cfg.clusters, "big": cfg.clusters["local"]},
            "job_types": {
                **cfg.job_types,
                "diff_registration": JobTypeConfig(clusters={"big": big}),
            },
        }
    )
    with TestClient(create_app(wider)) as alice:
        assert login(alice, "alice") == 303
        page = alice.get(
            "/submit",
            params={"dataset": [DATASET, OTHER], "job_type": "diff_registration", "cluster": "big"},
        ).text
        assert f">{DATASET}\n{OTHER}</textarea>" in page
        assert re.findall(r"<option[^>]*>(\w+)</option>", page)[:2] == [
            "diff_registration",
            "file_stats",
        ]
        assert "<option selected>big</option>" in page
        stack = _option(page, "stack")
        assert 'placeholder="raw/stack.h5"' in stack and "HDF5 stack, frames x H x W" in stack
        assert 'type="number" step="1"' in _option(page, "num_splits")
        assert "run only this part" in _option(page, "split_idx")
        assert "up to 1T" in _option(page, "mem") and "up to 12:00:00" in _option(page, "time")
        assert 'max="8"' in _option(page, "cpus")
        here = alice.get(
            "/submit/options", params={"job_type": "diff_registration", "compute_cluster": "local"}
        ).text
        assert "<html" not in here and "up to 64G" in _option(here, "mem")
        stats = alice.get(
            "/submit/options", params={"job_type": "file_stats", "compute_cluster": "local"}
        ).text
        assert 'type="number" step="any"' in _option(stats, "sleep_seconds")
        assert "pause first" in _option(stats, "sleep_seconds") and 'id="o-mem"' not in stats


def test_submit_preview_is_the_dry_run_s_batch_script_and_queues_nothing(
    browser: Browser, db: Database, cfg: Config
) -> None:
    alice = browser("alice")
    answer = _submit(
        alice, datasets=DATASET, rawfiles="fl_a.roli", action="preview", **{"o.sleep_seconds": "2"}
    )
    assert answer.status_code == 200
    shown = re.search(rf"<h2>Batch script for {DATASET}</h2>\s*<pre>(.*?)</pre>", answer.text, re.S)
    assert shown
    request = JobRequest(
        dataset=DATASET,
        compute_cluster="local",
        job_type="file_stats",
        datarawfiles=["fl_a.roli"],
        job_options={"sleep_seconds": "2"},
    )
    dry_run = batch_script(db, cfg.model_copy(update={"user": "alice"}), request)
    job_id = re.compile(r"j[0-9a-f]{11}")  # a new one each time
    assert job_id.sub("JOB", markup.unescape(shown[1])) == job_id.sub("JOB", dry_run)
    assert '"sleep_seconds": 2.0' in dry_run
    assert 'value="2"' in _option(answer.text, "sleep_seconds")  # the form stays as typed
    assert db.queue.count() == 0


def test_submit_queues_a_job_on_each_dataset_as_the_member(
    browser: Browser, db: Database, cfg: Config, tmp_path: Path
) -> None:
    dataset_with_files(db, cfg, tmp_path / "other", OTHER)
    alice = browser("alice")
    one = _submit(alice, datasets=DATASET, rawfiles="fl_a.roli")
    assert one.status_code == 303
    (job,) = db.queue.find({})
    assert one.headers["location"] == f"/jobs/{job['job_id']}"
    both = _submit(
        alice,
        datasets=f"{DATASET}\n{OTHER}\n{OTHER}",
        job_type="diff_registration",
        rawfiles="fl_a.roli",
        **{"o.num_splits": "4", "o.split_idx": "3", "o.mem": "16G", "o.stack": "raw/s.h5"},
    )
    assert both.status_code == 303 and both.headers["location"] == "/monitor?user=me"
    jobs = db.queue.find({"job_type": "diff_registration"})
    assert sorted(j["dataset"] for j in jobs) == [DATASET, OTHER]
    for queued in jobs:
        assert queued["user"] == "alice" and queued["datarawfiles"] == ["fl_a.roli"]
        assert (
            queued["job_options"]["split_idx"] == 3 and queued["job_options"]["stack"] == "raw/s.h5"
        )
        assert queued["resources"] == {"mem": "16G"}
        assert queued["history"][0]["note"] == "submitted by alice"


def test_submit_refusals_sit_on_the_form_as_typed_and_queue_nothing(
    browser: Browser, db: Database, cfg: Config, tmp_path: Path
) -> None:
    dataset_with_files(db, cfg, tmp_path / "other", OTHER)
    alice = browser("alice")
    limits = {"o.mem": "128G", "o.cpus": "9", "o.num_splits": "4", "o.split_idx": "3"}
    over = _submit(alice, datasets=DATASET, job_type="diff_registration", **limits)
    assert over.status_code == 422 and "Nothing was queued" in over.text
    assert "mem=128G is over the limit of job type diff_registration (64G)" in _option(
        over.text, "mem"
    )
    assert 'value="128G"' in _option(over.text, "mem")
    assert "over the limit" in _option(over.text, "cpus")
    assert 'class="error"' not in _option(over.text, "split_idx")  # 3 of 4 splits is fine
    bad_split = _submit(
        alice, datasets=DATASET, job_type="diff_registration", **{"o.split_idx": "3"}
    )
    assert "split_idx must be between 0 and 0" in _option(bad_split.text, "split_idx")
    typed = _submit(alice, datasets=DATASET, **{"o.sleep_seconds": "soon"})
    assert "must be float" in _option(typed.text, "sleep_seconds")
    assert "give one or more datasets" in _field(_submit(alice, datasets=" ").text, "datasets")

    inputs = _submit(alice, datasets=f"{DATASET}\n20990101_000000", rawfiles="../../etc/passwd")
    assert inputs.status_code == 422
    assert _refusals(inputs.text) == [
        f"{DATASET}: input file '../../etc/passwd' must be a path inside the dataset directory",
        "20990101_000000: no dataset 20990101_000000",
    ]
    assert "../../etc/passwd</textarea>" in inputs.text
    assert f"{DATASET}\n20990101_000000</textarea>" in inputs.text
    assert db.queue.count() == 0

    assert _submit(alice, datasets=DATASET, rawfiles="fl_a.roli").status_code == 303
    (first,) = db.queue.find({})
    twin = _submit(alice, datasets=f"{OTHER}\n{DATASET}", rawfiles="fl_a.roli")
    assert twin.status_code == 422
    assert _refusals(twin.text) == [
        f"an identical job {first['job_id']} is already queued for dataset {DATASET}; "
        "use --force to add another"
    ]
    assert db.queue.count() == 1  # all or none: not even OTHER's
    forced = _submit(alice, datasets=f"{OTHER}\n{DATASET}", rawfiles="fl_a.roli", force="1")
    assert forced.status_code == 303 and db.queue.count() == 3


def test_submit_without_the_csrf_token_is_forbidden(browser: Browser, db: Database) -> None:
    form = {"datasets": DATASET, "job_type": "file_stats", "compute_cluster": "local"}
    answer = browser("alice").post("/submit", data={**form, "rawfiles": "fl_a.roli"})
    assert answer.status_code == 403 and db.queue.count() == 0


def test_browse_ticks_entries_for_the_submit_page(browser: Browser) -> None:
    page = browser("alice").get("/browse").text
    assert '<form id="pick" method="get" action="/submit"' in page
    assert f'name="dataset" value="{DATASET}" form="pick"' in page


# --- monitor -------------------------------------------------------------------------------------


def test_monitor_shows_state_progress_slurm_age_and_heartbeats(
    browser: Browser, db: Database, cfg: Config
) -> None:
    queued = submit_as(db, cfg)
    moving = submit_as(db, cfg, "bob")
    move_to_transferring(db, moving, 40)
    db.queue.update(
        {"job_id": moving["job_id"]},
        {"$set": {"scheduler": {"job_id": "4242", "state": "PENDING"}}},
    )
    beat(db, "scan", {"started": 1}, "alice", HOST)
    alice = browser("alice")
    page = alice.get("/monitor")
    assert page.status_code == 200 and 'hx-trigger="every 2s"' in page.text
    live = alice.get("/monitor/live").text
    assert "<html" not in live
    row = re.search(rf'<tr id="job-{moving["job_id"]}">.*?</tr>', live, re.S)
    assert row
    for text in ('<progress max="100" value="40">', "40%", "400 B of 1.0 kB", "1.00MB/s"):
        assert text in row[0]
    assert "ETA 0:01:05" in row[0] and "4242" in row[0] and "PENDING" in row[0]
    assert "transferring" in row[0] and "Cancel" not in row[0]  # bob's job: not alice's to cancel
    mine = re.search(rf'<tr id="job-{queued["job_id"]}">.*?</tr>', live, re.S)
    assert mine and "Cancel" in mine[0]
    beat_row = r"<td>scan</td><td>alice</td><td>[^<]+</td><td>\d+s ago</td>\s*<td>started 1</td>"
    assert re.search(beat_row, live)
    only = alice.get("/monitor/live", params={"status": "transferring", "user": "bob"}).text
    assert moving["job_id"] in only and queued["job_id"] not in only
    assert "has not run yet" not in live


def test_monitor_shows_no_inputs_and_does_not_repeat_a_cancelled_state(
    browser: Browser, db: Database, cfg: Config
) -> None:
    empty = submit_as(db, cfg)
    transfer = transfer_record(bytes=0, total=0, percent=100, rate="0.00kB/s", eta_seconds=0)
    transition(
        db, Job.of(empty), JobState.TRANSFERRING, "rsync started", fields={"transfer": transfer}
    )
    stopped = submit_as(db, cfg, "bob")
    failure = {"reason": str(FailureReason.CANCELLED), "message": "cancelled by bob"}
    transition(db, Job.of(stopped), JobState.CANCELLED, "cancelled", fields={"failure": failure})
    live = browser("alice").get("/monitor/live").text
    row = re.search(rf'<tr id="job-{empty["job_id"]}">.*?</tr>', live, re.S)
    assert row and "no inputs" in row[0] and "kB/s" not in row[0]
    row = re.search(rf'<tr id="job-{stopped["job_id"]}">.*?</tr>', live, re.S)
    assert row and "cancelled" in row[0] and "(cancelled)" not in row[0]


def test_monitor_shows_each_cluster_session_and_why_a_job_waits(
    browser: Browser, db: Database, cfg: Config
) -> None:
    job = submit_as(db, cfg)
    until = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)
    since = until - dt.timedelta(days=7)
    up = Session("raven", True, "interactive", "abc@gate1.mpcdf.mpg.de", since, until, 4242)
    down = Session("viper", False, "interactive", "abc@gate2.mpcdf.mpg.de", detail="no session")
    record_sessions(db, [SessionReport.of(up), SessionReport.of(down)], "alice", HOST)
    message = "waiting for a session to viper: run `labctl connect viper`"
    db.queue.update({"job_id": job["job_id"]}, {"$set": {"waiting": message}})
    alice = browser("alice")
    live = alice.get("/monitor/live").text
    row = re.search(rf'<tr id="job-{job["job_id"]}">.*?</tr>', live, re.S)
    assert row and "waiting for a session to viper: run `labctl connect viper`" in row[0]
    raven = re.search(
        r'<tr id="session-raven-[^"]+-alice"><td>raven</td><td>alice</td>.*?</tr>', live, re.S
    )
    viper = re.search(r'<tr id="session-viper-[^"]+">.*?</tr>', live, re.S)
    assert raven and ">up<" in raven[0] and "2026-12-08" in raven[0] and "gate1" in raven[0]
    assert viper and ">down<" in viper[0] and "labctl connect viper" in viper[0]
    assert "2026" not in viper[0]  # no expiry for a session that is down
    page = alice.get(f"/jobs/{job['job_id']}/live").text
    assert "waiting for a session to viper" in page


def test_job_page_shows_history_log_tail_and_updates_live(
    browser: Browser, db: Database, cfg: Config
) -> None:
    job = submit_as(db, cfg)
    move_to_transferring(db, job, 10)
    moved = read_job(db, job["job_id"])
    transition(
        db,
        moved,
        JobState.FAILED,
        "rsync refused",
        fields={"log_tail": "line 1\nTraceback: boom"},
        reason=FailureReason.TRANSFER,
    )
    alice = browser("alice")
    html = alice.get(f"/jobs/{job['job_id']}").text
    assert "submitted by alice" in html and "rsync started" in html and "rsync refused" in html
    assert "Traceback: boom" in html and "transfer: rsync refused" in html
    assert f'hx-get="/jobs/{job["job_id"]}/live"' in html and "Retry" in html
    live = alice.get(f"/jobs/{job['job_id']}/live").text
    assert "<html" not in live and "failed" in live
    [key] = read_job(db, job["job_id"]).notices  # the failure, still to tell alice of
    notice = re.search(rf'<tr id="notice-{key}"><td>failed</td>.*?</tr>', live, re.S)
    assert notice and "<td>new</td>" in notice[0]
    db.queue.update(
        {"job_id": job["job_id"]},
        {"$set": {f"notices.{key}.state": "sent", f"notices.{key}.delivered": ["email"]}},
    )
    notice = re.search(
        rf'<tr id="notice-{key}">.*?</tr>', alice.get(f"/jobs/{job['job_id']}/live").text, re.S
    )
    assert notice and "<td>sent</td><td>email</td>" in notice[0]
    assert alice.get("/jobs/j000000000000").status_code == 404


def test_cancel_and_retry_are_for_the_owner_or_an_admin(
    browser: Browser, db: Database, cfg: Config
) -> None:
    job_id = submit_as(db, cfg)["job_id"]
    bob, alice, root = browser("bob"), browser("alice"), browser("root")
    assert "Cancel" not in bob.get(f"/jobs/{job_id}").text
    token = csrf_token(bob, f"/entry/{DATASET}")
    refused = bob.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert refused.status_code == 403 and "only they or an admin" in refused.text
    assert get_job(db, job_id)["status"] == "queued"
    assert alice.post(f"/jobs/{job_id}/cancel").status_code == 403  # no CSRF token
    token = csrf_token(alice, f"/entry/{DATASET}")
    done = alice.post(
        f"/jobs/{job_id}/cancel",
        data={"csrf_token": token, "back": "/monitor"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/monitor"
    assert get_job(db, job_id)["status"] == "cancelled"
    again = alice.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 422 and "already cancelled" in again.text
    token = csrf_token(root, f"/entry/{DATASET}")
    retried = root.post(f"/jobs/{job_id}/retry", data={"csrf_token": token}, follow_redirects=False)
    assert retried.headers["location"] == f"/jobs/{job_id}"
    assert get_job(db, job_id)["history"][-1]["note"] == "retried by root"


# --- the server ----------------------------------------------------------------------------------


def test_labctl_web_serves_the_dashboard(tmp_path: Path) -> None:
    """`labctl web` starts uvicorn on the given port; it answers the login page, and believes
    no X-Forwarded-For (uvicorn would, from 127.0.0.1) without `web.trusted_proxies`."""
    cfg = Config(
        database=DatabaseConfig(uri="embedded", path=tmp_path / "db"),
        web=WebConfig(login_attempts_per_address_per_minute=2),
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    port = free_port()
    argv = [sys.executable, "-m", "labctl", "--config", str(path), "web", "--port", str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx2.get(f"http://127.0.0.1:{port}/login")
                break
            except httpx2.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert answer.status_code == 200 and "Log in" in answer.text
        assert httpx2.get(f"http://127.0.0.1:{port}/api/v1/me").status_code == 401
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as browser:
            token = re.findall(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text)
            form = {"password": "wrong-guess", "csrf_token": token[0]}
            statuses = [
                browser.post(
                    "/login",
                    data={**form, "username": f"user{n}"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                ).status_code
                for n in range(3)
            ]
        assert statuses == [401, 401, 429]
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0]
    assert "Uvicorn running on http://127.0.0.1:" in output


def test_the_usage_page_says_which_clusters_keep_no_accounting(
    cfg: Config, browser: Browser
) -> None:
    """A job on `local` (plain processes) is in no usage report: the page says so, as `labctl
    usage` does, instead of leaving a member to wonder why their jobs are missing."""
    page = browser("alice").get("/usage")
    assert page.status_code == 200
    plain = [name for name, c in cfg.clusters.items() if c.scheduler == "process"]
    assert plain, "the test config has the local cluster"
    assert f"Not counted: {', '.join(plain)} runs jobs as plain processes" in page.text
    slurm_only = cfg.model_copy(
        update={"clusters": {n: c for n, c in cfg.clusters.items() if n not in plain}}
    )
    with TestClient(create_app(slurm_only)) as client:
        assert login(client, "alice") == 303
        assert 'id="unaccounted"' not in client.get("/usage").text
