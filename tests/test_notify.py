"""Notifications end to end: jobs driven through the stages on the `local` cluster, a real SMTP
server (aiosmtpd) and a real webhook receiver; at most once under overlapping and killed runs."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labctl.config import ClusterConfig, Config
from labctl.config.notifyconfig import NotifyConfig, SmtpConfig
from labctl.db import Database, connect
from labctl.jobs.actions import retry_job
from labctl.jobs.queue import read_job, transition
from labctl.model.job import NoticeState
from labctl.model.states import FailureReason, JobState
from labctl.stages import stage_run
from labctl.stages.loop import run_stages
from labctl.stages.notices import send_notices
from labctl.stages.seam import LocalStore
from labctl.users import add_user, set_notify
from tests.jobfixtures import DATASET, local_jobs
from tests.notifyfixtures import (
    Mailbox,
    free_port,
    http_receiver,
    self_signed,
    silent_server,
    smtp_server,
)
from tests.test_stages import dead_cluster, run_until_final, submit

OWNER = "tester@lab.org"


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    add_user(db, "tester", email=OWNER)
    return local_jobs(config, db, tmp_path)


@pytest.fixture
def mailbox(cfg: Config) -> object:
    with smtp_server() as served:
        yield served


def notifying(cfg: Config, port: int, **settings: object) -> Config:
    smtp = SmtpConfig(
        host="127.0.0.1",
        port=port,
        security="none",
        from_address="labctl@lab.org",
        timeout_seconds=3,
    )
    notify = NotifyConfig(smtp=smtp, backoff_seconds=0, **settings)  # type: ignore[arg-type]
    return cfg.model_copy(update={"notify": notify})


def notify_once(db: Database, cfg: Config, owner: str | None = None) -> int:
    """One run of the notify step (as `owner`); how many notices it sent."""
    with stage_run(LocalStore.of(db, cfg), cfg, "jobs") as run:
        run.owner = owner or run.owner
        send_notices(run)
    return run.did["notices sent"]


def failed_job(db: Database, cfg: Config, code: int) -> str:
    """A job that failed (moved there as the stages move it), with a log tail."""
    job_id = submit(db, cfg, job_type="selftest", job_options={"exit_code": code})
    tail = f"== job.err\nTraceback: boom {code}\n"
    moved = transition(
        db,
        read_job(db, job_id),
        JobState.FAILED,
        f"process exited (exit {code})",
        reason=FailureReason.EXIT_CODE,
        fields={"log_tail": tail},
    )
    assert moved is not None
    return job_id


def completed_job(db: Database, cfg: Config, code: int) -> str:
    job_id = submit(db, cfg, job_type="selftest", job_options={"sleep_seconds": code})
    for state in (JobState.TRANSFERRING, JobState.SUBMITTED, JobState.RETRIEVING):
        job = transition(db, read_job(db, job_id), state)
        assert job is not None
    done = transition(
        db, job, JobState.COMPLETED, fields={"scratch_cleaned": True, "result_dir": "/r/x"}
    )
    assert done is not None
    return job_id


def test_completed_job_tells_where_the_verified_results_are(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, port = mailbox
    cfg = notifying(cfg, port)
    job_id = submit(db, cfg)
    job = run_until_final(db, cfg, job_id)
    assert job["status"] == "completed"
    assert box.subjects() == [f"[labctl] job {job_id} completed: file_stats on {DATASET}"]
    to, mail = box.mails[0]
    assert to == [OWNER] and mail["To"] == OWNER and mail["From"] == "labctl@lab.org"
    assert mail["Message-ID"].startswith(f"<labctl.{job_id}.completed-1-")
    body = box.body()
    results = tmp_path / "data/processed/results" / job_id
    assert f"Results: {results}\n" in body
    [stats] = [r for r in job["results"] if r["name"] == "file_stats.json"]  # type: ignore[attr-defined]
    assert f"    file_stats.json  {stats['size']} bytes  sha256 {stats['sha256']}\n" in body
    assert "All 2 result files were verified: their SHA-256 checksums match" in body
    notice = read_job(db, job_id).notices
    assert [n.state for n in notice.values()] == [NoticeState.SENT]
    assert read_job(db, job_id).notify_at is None
    run_stages(LocalStore.of(db, cfg), cfg, ["jobs"])
    assert len(box.mails) == 1


def test_failed_job_tells_reason_log_and_retry_line_by_mail_and_webhooks(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    with http_receiver() as own, http_receiver() as lab:
        cfg = notifying(cfg, port, webhook=lab.url)
        set_notify(db, "tester", webhook=own.url, actor="tester")
        job_id = submit(db, cfg, job_type="selftest", job_options={"exit_code": 3})
        assert run_until_final(db, cfg, job_id)["status"] == "failed"
    assert box.subjects() == [f"[labctl] job {job_id} failed: selftest on {DATASET}"]
    body = box.body()
    assert "Reason: exit_code: process exited (exit 3)\n" in body
    assert "The last lines of its log:\n" in body and "selftest on" in body
    assert body.endswith(f"To run it again from the start:\n    labctl retry {job_id}\n")
    for receiver in (own, lab):
        [(payload, headers)] = receiver.posts
        assert list(payload) == ["text"]
        assert payload["text"].startswith(
            f"[labctl] job {job_id} failed: selftest on {DATASET}\n\n"
        )
        assert f"labctl retry {job_id}" in payload["text"]
        assert headers["Idempotency-Key"] == box.mails[0][1]["Message-ID"][1:].split("@")[0]
    assert read_job(db, job_id).notices.popitem()[1].delivered == [
        "email",
        "webhook",
        "lab webhook",
    ]


def test_a_session_down_is_told_once_with_the_connect_line(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    raven = ClusterConfig(
        host="127.0.0.1", port=1, user="nobody", auth="interactive", scratch="/tmp/nowhere"
    )
    cfg = notifying(cfg, port).model_copy(update={"clusters": {**cfg.clusters, "raven": raven}})
    first = submit(db, cfg, compute_cluster="raven")
    second = submit(db, cfg, compute_cluster="raven", job_type="selftest")
    for _ in range(2):
        run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
    assert read_job(db, first).waiting and read_job(db, second).waiting
    assert box.subjects() == ["[labctl] 2 job(s) wait for your session to raven"]
    body = box.body()
    assert "Your session to cluster raven is down: 2 of your jobs cannot go on" in body
    assert f"    {first} (file_stats on {DATASET}, queued)" in body
    assert body.endswith("Open it with:\n    labctl connect raven\n")
    later = submit(
        db, cfg, compute_cluster="raven", job_type="selftest", job_options={"exit_code": 1}
    )
    run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
    assert read_job(db, later).waiting and len(box.mails) == 1  # the same outage: told once
    [notice] = read_job(db, later).notices.values()
    assert notice.state is NoticeState.SKIPPED and notice.note in (
        f"told with {first}",
        f"told with {second}",
    )


def test_an_outage_is_told_once_and_says_the_jobs_go_on_by_themselves(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, port = mailbox
    clusters = {**cfg.clusters, "dead": dead_cluster(tmp_path)}
    cfg = notifying(cfg, port).model_copy(update={"clusters": clusters})
    first = submit(db, cfg, compute_cluster="dead")
    second = submit(db, cfg, compute_cluster="dead", job_type="selftest")
    for _ in range(3):
        run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
    assert box.subjects() == ["[labctl] 2 job(s) wait for cluster dead: it cannot be reached"]
    body = box.body()
    assert "Cluster dead cannot be reached (ssh could not connect): 2 of your jobs" in body
    assert f"    {first} (file_stats on {DATASET}, queued)" in body
    assert "Nothing failed and no retry is spent" in body
    assert f"Their status says: {read_job(db, second).waiting}\n" in body
    later = submit(
        db, cfg, compute_cluster="dead", job_type="selftest", job_options={"exit_code": 1}
    )
    run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
    assert read_job(db, later).waiting == read_job(db, first).waiting
    assert len(box.mails) == 1  # the same outage: told once
    [notice] = read_job(db, later).notices.values()
    assert notice.state is NoticeState.SKIPPED and notice.note in (
        f"told with {first}",
        f"told with {second}",
    )


def test_a_mail_server_that_was_down_gets_the_message_later(db: Database, cfg: Config) -> None:
    port = free_port()
    cfg = notifying(cfg, port)
    job_id = failed_job(db, cfg, 4)
    notify_once(db, cfg)  # nothing listens on the port yet
    [notice] = read_job(db, job_id).notices.values()
    assert notice.state is NoticeState.NEW and notice.attempts == 1
    assert "SMTP 127.0.0.1" in notice.error and "Connection" in notice.error
    with smtp_server(port) as (box, _):
        notify_once(db, cfg)
        notify_once(db, cfg)
    assert box.subjects() == [f"[labctl] job {job_id} failed: selftest on {DATASET}"]
    [notice] = read_job(db, job_id).notices.values()
    assert notice.state is NoticeState.SENT and notice.error == ""


def test_retries_back_off(db: Database, cfg: Config) -> None:
    cfg = notifying(cfg, free_port())
    cfg = cfg.model_copy(update={"notify": cfg.notify.model_copy(update={"backoff_seconds": 60})})
    job_id = failed_job(db, cfg, 5)
    before = dt.datetime.now(dt.UTC)
    notify_once(db, cfg)
    notify_once(db, cfg)  # not due yet: no second attempt
    job = read_job(db, job_id)
    [notice] = job.notices.values()
    assert notice.attempts == 1 and notice.next_try_at is not None
    assert 59 < (notice.next_try_at - before).total_seconds() < 65
    assert job.notify_at == notice.next_try_at


def test_a_webhook_that_answers_500_is_tried_again_without_mailing_twice(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    with http_receiver() as hook:
        hook.statuses = [500]
        cfg = notifying(cfg, port, webhook=hook.url)
        job_id = failed_job(db, cfg, 6)
        notify_once(db, cfg)
        [notice] = read_job(db, job_id).notices.values()
        assert notice.state is NoticeState.NEW and notice.delivered == ["email"]
        host = hook.url.split("/")[2]
        assert notice.error == f"webhook http://{host}/...: HTTP 500"  # not the secret path
        notify_once(db, cfg)
    assert len(box.mails) == 1 and len(hook.posts) == 1
    assert read_job(db, job_id).notices.popitem()[1].state is NoticeState.SENT


def test_two_overlapping_runs_send_each_notice_once(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    box.delay = 0.3
    cfg = notifying(cfg, port)
    jobs = [failed_job(db, cfg, code) for code in range(1, 5)]
    start = threading.Barrier(2)
    sent: dict[str, int] = {}

    def one_run(owner: str) -> None:
        with connect(cfg.database) as own:
            start.wait()
            sent[owner] = notify_once(own, cfg, owner)

    runs = [threading.Thread(target=one_run, args=(f"run{i}",)) for i in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    subjects = sorted(box.subjects())
    assert subjects == sorted(f"[labctl] job {j} failed: selftest on {DATASET}" for j in jobs)
    assert all(n.claims == 1 for j in jobs for n in read_job(db, j).notices.values())
    assert sum(sent.values()) == 4 and min(sent.values()) >= 1, sent  # the runs overlapped


KILLED_RUN = """
import sys
from labctl.config import Config
from labctl.db import connect
from labctl.stages import stage_run
from labctl.stages.notices import send_notices
from labctl.stages.seam import LocalStore
cfg = Config.model_validate_json(open(sys.argv[1]).read())
with connect(cfg.database) as db, stage_run(LocalStore.of(db, cfg), cfg, "jobs") as run:
    send_notices(run)
"""


def test_a_run_killed_between_claim_and_send_loses_nothing_and_sends_once(
    db: Database, cfg: Config, tmp_path: Path
) -> None:
    cfg = cfg.model_copy(update={"watchdog": cfg.watchdog.model_copy(update={"lease_seconds": 2})})
    job_id = failed_job(db, cfg, 7)
    with silent_server() as hanging:  # the killed run is stuck talking to it
        stuck = notifying(cfg, hanging)
        settings = tmp_path / "stuck.json"
        settings.write_text(stuck.model_dump_json())
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(settings)], env=env)
        deadline = time.monotonic() + 20
        while read_job(db, job_id).notices.popitem()[1].state is not NoticeState.SENDING:
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with smtp_server() as (box, port):
        cfg = notifying(cfg, port)
        notify_once(db, cfg)  # the dead run's lease still holds it
        assert box.mails == []
        time.sleep(2.1)
        notify_once(db, cfg)
        notify_once(db, cfg)
    assert box.subjects() == [f"[labctl] job {job_id} failed: selftest on {DATASET}"]
    [notice] = read_job(db, job_id).notices.values()
    assert notice.state is NoticeState.SENT and notice.claims == 2


def test_digest_sends_the_day_s_events_in_one_message(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    cfg = notifying(cfg, port)
    set_notify(db, "tester", mode="digest", actor="tester")
    jobs = [failed_job(db, cfg, 1), failed_job(db, cfg, 2), completed_job(db, cfg, 3)]
    notify_once(db, cfg)
    assert box.mails == []
    held = [n for j in jobs for n in read_job(db, j).notices.values()]
    assert all(n.digest and n.state is NoticeState.NEW for n in held)
    at = {n.next_try_at for n in held}
    assert len(at) == 1
    local = at.pop().astimezone()  # type: ignore[union-attr]
    assert (local.hour, local.minute) == (8, 0)
    assert local - dt.datetime.now().astimezone() <= dt.timedelta(days=1)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)  # the digest hour has come
    for job_id in jobs:
        keys = list(read_job(db, job_id).notices)
        db.queue.update(
            {"job_id": job_id},
            {"$set": {"notify_at": past, **{f"notices.{k}.next_try_at": past for k in keys}}},
        )
    notify_once(db, cfg)
    notify_once(db, cfg)
    assert box.subjects() == ["[labctl] daily digest: 1 completed, 2 failed"]
    body = box.body()
    for job_id in jobs[:2]:
        assert f"== job {job_id} failed: selftest on {DATASET}" in body
        assert f"    labctl retry {job_id}\n" in body
    assert f"== job {jobs[2]} completed: selftest on {DATASET}" in body


def test_failures_only_skips_completions(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    cfg = notifying(cfg, port)
    set_notify(db, "tester", mode="failures", actor="tester")
    done, broken = completed_job(db, cfg, 1), failed_job(db, cfg, 2)
    notify_once(db, cfg)
    assert box.subjects() == [f"[labctl] job {broken} failed: selftest on {DATASET}"]
    [notice] = read_job(db, done).notices.values()
    assert notice.state is NoticeState.SKIPPED and "failures only" in notice.note


def test_a_split_array_and_its_merge_send_one_message(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    split = cfg.job_types["file_stats_split"].model_copy(update={"merge_with": "file_stats"})
    cfg = notifying(cfg, port).model_copy(
        update={"job_types": {**cfg.job_types, "file_stats_split": split}}
    )
    array = submit(db, cfg, job_type="file_stats_split", job_options={"num_splits": 3})
    assert run_until_final(db, cfg, array)["status"] == "completed"
    merge = str(read_job(db, array).follow_up_job)
    assert run_until_final(db, cfg, merge)["status"] == "completed"
    run_stages(LocalStore.of(db, cfg), cfg, ["jobs"])
    assert box.subjects() == [f"[labctl] job {merge} completed: file_stats on {DATASET}"]
    assert f"It merged the 3 tasks of array job {array} (their parts: " in box.body()
    [notice] = read_job(db, array).notices.values()
    assert notice.state is NoticeState.SKIPPED and merge in notice.note


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_tls_and_login(db: Database, cfg: Config, tmp_path: Path, security: str) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if security == "tls":
        # aiosmtpd counts only STARTTLS as TLS for AUTH; the whole connection is TLS here
        tls: dict[str, object] = {"ssl_context": context, "auth_require_tls": False}
    else:
        tls = {"tls_context": context, "require_starttls": True}
    with smtp_server(auth_required=True, **tls) as (box, port):
        smtp = SmtpConfig(
            host="127.0.0.1",
            port=port,
            security=security,  # type: ignore[arg-type]
            user="labctl",
            password="s3cret-smtp",
            from_address="labctl@lab.org",
            ca_file=cert,
            timeout_seconds=5,
        )
        cfg = cfg.model_copy(update={"notify": NotifyConfig(smtp=smtp)})
        job_id = failed_job(db, cfg, 8)
        notify_once(db, cfg)
    assert box.logins == ["labctl"]
    assert box.subjects() == [f"[labctl] job {job_id} failed: selftest on {DATASET}"]


def test_a_failure_retried_before_it_was_told_is_not_told(
    db: Database, cfg: Config, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    cfg = notifying(cfg, port)
    job_id = failed_job(db, cfg, 9)
    retry_job(db, job_id, "tester")
    notify_once(db, cfg)
    assert box.mails == []
    [notice] = read_job(db, job_id).notices.values()
    assert notice.state is NoticeState.SKIPPED and notice.note == "retried before it was told"
    assert read_job(db, job_id).notify_at is None
