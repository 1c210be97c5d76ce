"""Submitting jobs, their validation, transitions, leases, cancel and retry (both backends)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from labctl.config import Config
from labctl.config.jobtypes import JobTypeConfig, Resources
from labctl.db import Database
from labctl.errors import (
    ConfigError,
    DuplicateError,
    NotFoundError,
    PermissionDenied,
    ValidationError,
)
from labctl.jobs.actions import (
    cancel_job,
    retry_job,
)
from labctl.jobs.declarations import job_types_at
from labctl.jobs.queue import (
    claim,
    get_job,
    read_job,
    release,
    transition,
)
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.job import Job, Transfer
from labctl.model.states import FailureReason, InvalidTransition, JobState
from labctl.users import add_user
from tests.jobfixtures import DATASET, dataset_with_files, job_config, transfer_record


@pytest.fixture
def jcfg(config: Config, db: Database, tmp_path: Path) -> Config:
    cfg = job_config(config, tmp_path / "scratch")
    dataset_with_files(db, cfg, tmp_path / "data")
    return cfg


def request(**overrides: object) -> JobRequest:
    fields: dict[str, object] = {
        "dataset": DATASET,
        "compute_cluster": "local",
        "job_type": "file_stats",
        "datafiles": ["phase.h5"],
        "datarawfiles": ["fl_a.roli", "fl b $(x).roli"],
    }
    fields.update(overrides)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_submit_creates_a_queued_job_with_history(db: Database, jcfg: Config) -> None:
    job = submit_job(db, jcfg, request(job_options={"sleep_seconds": "1.5"}))
    assert job["status"] == "queued"
    assert job["user"] == "tester"
    assert job["job_options"] == {"sleep_seconds": 1.5}
    assert job["datarawfiles"] == ["fl_a.roli", "fl b $(x).roli"]
    assert [h["state"] for h in job["history"]] == ["queued"]
    assert get_job(db, job["job_id"])["job_id"] == job["job_id"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "20200101_000000"}, "no dataset 20200101_000000"),
        ({"dataset": "bad"}, "not of the form"),
        ({"compute_cluster": "nowhere"}, "unknown cluster 'nowhere' (known: local)"),
        ({"job_type": "magic"}, "unknown job type 'magic'"),
        ({"datafiles": ["missing.h5"]}, "does not exist"),
        ({"datafiles": ["../raw/fl_a.roli"]}, "must be a path inside"),
        ({"datarawfiles": ["/etc/passwd"]}, "must be a path inside"),
        ({"datarawfiles": [""]}, "must be a path inside"),
        ({"job_options": {"nope": 1}}, "has no option nope (options: sleep_seconds)"),
        ({"job_options": {"sleep_seconds": "soon"}}, "must be float"),
        ({"job_options": {"num_splits": 2}}, "has no option num_splits"),
        ({"job_type": "file_stats_split", "job_options": {"num_splits": 0}}, "num_splits"),
        (
            {"job_type": "file_stats_split", "job_options": {"num_splits": 4, "split_idx": 4}},
            "split_idx must be between 0 and 3",
        ),
    ],
)
def test_submit_validation(
    db: Database, jcfg: Config, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises((ValidationError, NotFoundError)) as err:
        submit_job(db, jcfg, request(**overrides))
    assert message in str(err.value)
    assert db.queue.count() == 0


def test_symlink_escaping_the_dataset_is_refused(
    db: Database, jcfg: Config, tmp_path: Path
) -> None:
    (tmp_path / "data/raw/link.roli").symlink_to("/etc/passwd")
    with pytest.raises(ValidationError, match="leads outside"):
        submit_job(db, jcfg, request(datarawfiles=["link.roli"]))


def test_await_transfer_accepts_files_not_there_yet(db: Database, jcfg: Config) -> None:
    job = submit_job(db, jcfg, request(datarawfiles=["later.roli"], data_transfer_await=True))
    assert job["data_transfer_await"] is True
    with pytest.raises(ValidationError, match="must be a path inside"):
        submit_job(db, jcfg, request(datarawfiles=["../x"], data_transfer_await=True))


def test_identical_active_job_is_refused_unless_forced(db: Database, jcfg: Config) -> None:
    first = submit_job(db, jcfg, request(job_options={"sleep_seconds": 1}))
    with pytest.raises(DuplicateError, match=f"identical job {first['job_id']} is already queued"):
        submit_job(db, jcfg, request(job_options={"sleep_seconds": 1.0}))
    other = submit_job(db, jcfg, request(job_options={"sleep_seconds": 2}))
    forced = submit_job(db, jcfg, request(job_options={"sleep_seconds": 1}), force=True)
    assert len({first["job_id"], other["job_id"], forced["job_id"]}) == 3
    transition(db, Job.of(first), JobState.CANCELLED, "test")
    transition(db, read_job(db, forced["job_id"]), JobState.CANCELLED, "test")
    submit_job(db, jcfg, request(job_options={"sleep_seconds": 1}))  # no active twin any more


def test_transition_is_compare_and_set_and_follows_the_table(db: Database, jcfg: Config) -> None:
    job = Job.of(submit_job(db, jcfg, request()))
    transfer = transfer_record(total=10)
    moved = transition(
        db, job, JobState.TRANSFERRING, "rsync started", fields={"transfer": transfer}
    )
    assert moved is not None and moved.status is JobState.TRANSFERRING
    assert get_job(db, job.job_id)["transfer"] == Transfer(**transfer).model_dump()
    assert (
        transition(db, job, JobState.TRANSFERRING, "stale copy") is None
    )  # job was read as queued
    with pytest.raises(InvalidTransition, match="a transferring job cannot become completed"):
        transition(db, moved, JobState.COMPLETED)
    failed = transition(
        db, moved, JobState.FAILED, "rsync: permission denied", reason=FailureReason.TRANSFER
    )
    assert failed is not None
    stored = get_job(db, job.job_id)
    assert stored["failure"] == {"reason": "transfer", "message": "rsync: permission denied"}
    assert [h["state"] for h in stored["history"]] == ["queued", "transferring", "failed"]
    another = Job.of(submit_job(db, jcfg, request(job_options={"sleep_seconds": 3})))
    with pytest.raises(ValueError, match="needs a FailureReason"):
        transition(db, another, JobState.FAILED)


def test_claim_takes_each_job_once_until_the_lease_expires(db: Database, jcfg: Config) -> None:
    job = submit_job(db, jcfg, request())
    hour = dt.timedelta(hours=1)
    mine = claim(db, {"status": "queued"}, "watchdog-a", hour)
    assert mine is not None and mine.owner == "watchdog-a"
    assert claim(db, {"status": "queued"}, "watchdog-b", hour) is None
    release(db, [job["job_id"]], "watchdog-b", job["user"])  # not the owner: no effect
    assert claim(db, {"status": "queued"}, "watchdog-b", hour) is None
    release(db, [job["job_id"]], "watchdog-a", job["user"])
    theirs = claim(db, {"status": "queued"}, "watchdog-b", -hour)  # a lease already expired
    assert theirs is not None and theirs.owner == "watchdog-b"
    again = claim(db, {"status": "queued"}, "watchdog-c", hour)
    assert again is not None and again.owner == "watchdog-c"


def test_cancel_and_retry_permissions(db: Database, jcfg: Config) -> None:
    job = submit_job(db, jcfg, request(user="charlie"))
    with pytest.raises(PermissionDenied, match="belongs to charlie"):
        cancel_job(db, job["job_id"], "dana")
    add_user(db, "boss", role="admin")
    cancelled = cancel_job(db, job["job_id"], "boss")
    assert cancelled["status"] == "cancelled"
    assert cancelled["failure"]["reason"] == "cancelled"
    assert cancelled["cleanup_pending"] is True
    with pytest.raises(ValidationError, match="already cancelled"):
        cancel_job(db, job["job_id"], "charlie")
    with pytest.raises(PermissionDenied):
        retry_job(db, job["job_id"], "dana")
    again = retry_job(db, job["job_id"], "charlie")
    assert again["status"] == "queued" and again["failure"] is None and again["attempt"] == 2
    with pytest.raises(ValidationError, match="only failed or cancelled"):
        retry_job(db, job["job_id"], "charlie")
    with pytest.raises(NotFoundError):
        cancel_job(db, "jnope", "charlie")


def test_job_options_may_ask_for_more_resources_within_limits(db: Database, jcfg: Config) -> None:
    from labctl.compute.batch import JobLayout, render

    capped = JobTypeConfig(max_resources=Resources(time="1-00:00:00", mem="16G", cpus=4))
    cfg = jcfg.model_copy(update={"job_types": {**jcfg.job_types, "selftest": capped}})
    job = submit_job(
        db,
        cfg,
        request(job_type="selftest", job_options={"time": "12:00:00", "mem": "8G", "cpus": "2"}),
    )
    assert job["resources"] == {"time": "12:00:00", "mem": "8G", "cpus": 2}
    assert job["job_options"] == {"sleep_seconds": 0.0, "hold_mb": 0, "exit_code": 0}  # not passed
    spec = job_types_at(cfg, job["pipelines"]).get("selftest", "local")
    assert spec is not None and spec.outputs == ["selftest.json"]  # the rest as declared
    script = render(
        Job.of(job), spec, cfg.clusters["local"], JobLayout.of(cfg.clusters["local"], "j1")
    )
    assert "#SBATCH --time=12:00:00" in script and "#SBATCH --mem=8G" in script
    assert "#SBATCH --cpus-per-task=2" in script and '"time"' not in script
    for too_much, message in [
        ({"time": "2-00:00:00"}, "time=2-00:00:00 is over the limit"),
        ({"mem": "1T"}, "mem=1T is over the limit"),
        ({"cpus": 5}, "cpus=5 is over the limit"),
        ({"mem": "lots"}, "are not SLURM values"),
    ]:
        with pytest.raises(ValidationError, match=message):
            submit_job(db, cfg, request(job_type="selftest", job_options=too_much), force=True)
    with pytest.raises(ValidationError, match="does not let a job change time"):
        submit_job(db, jcfg, request(job_options={"time": "01:00:00"}))


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("30:30", 30.5),
        ("02:00:00", 120),
        ("1-00", 1440),
        ("1-02:30", 1590),
        ("2-00:00:30", 2880.5),
    ],
)
def test_slurm_time_formats(text: str, minutes: float) -> None:
    from labctl.config.jobtypes import slurm_minutes

    assert slurm_minutes(text) == minutes


def test_merge_with_must_name_a_job_type(db: Database, jcfg: Config) -> None:
    broken = jcfg.job_types["file_stats_split"].model_copy(update={"merge_with": "nowhere"})
    cfg = jcfg.model_copy(update={"job_types": {"file_stats_split": broken}})
    with pytest.raises(ConfigError, match="merge_with 'nowhere' is not an offered job type"):
        submit_job(db, cfg, request(job_type="file_stats_split"))
