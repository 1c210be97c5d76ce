"""submit / queue / status / cancel / retry / job-types / clusters / watchdog through the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from labctl.cli.analysis import progress_bar
from labctl.config import Config
from labctl.db import Database
from labctl.model.job import Transfer
from tests.jobfixtures import DATASET, cli_on, job_config


@pytest.fixture
def run(config: Config, db: Database, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = job_config(config, tmp_path / "scratch")
    return cli_on(db, cfg, tmp_path)


SUBMIT = [
    "submit",
    DATASET,
    "--cluster",
    "local",
    "--job-type",
    "file_stats",
    "--rawfile",
    "fl_a.roli",
    "--datafile",
    "phase.h5",
]


def test_submit_queue_status_and_watchdog_to_completion(run) -> None:  # type: ignore[no-untyped-def]
    queued = run(*SUBMIT, "--option", "sleep_seconds=0.1")
    assert queued.exit_code == 0, queued.output
    job_id = queued.output.split()[1].rstrip(":")
    assert queued.output == f"queued {job_id}: file_stats on {DATASET} at local\n"
    twin = run(*SUBMIT, "--option", "sleep_seconds=0.1")
    assert twin.exit_code == 1 and f"identical job {job_id} is already queued" in twin.output
    listing = run("queue")
    assert job_id in listing.output and "queued" in listing.output
    assert "watchdog: no run recorded yet" in listing.output
    deadline = time.monotonic() + 30
    while json.loads(run("status", job_id, "--json").output)["status"] != "completed":
        tick = run("watchdog", "tick")
        assert tick.exit_code == 0, tick.output
        assert time.monotonic() < deadline
    status = run("status", job_id)
    for state in ("queued", "transferring", "submitted", "retrieving", "completed"):
        assert state in status.output
    assert "file_stats.json" in status.output
    assert "exec python3 -m pipelines run file_stats" in run("status", job_id, "--script").output
    listing = run("queue", "--status", "completed", "--json")
    [job] = json.loads(listing.output)["jobs"]
    assert job["job_id"] == job_id
    assert {b["stage"] for b in json.loads(listing.output)["heartbeats"]} == {
        "scan",
        "transfers",
        "jobs",
    }
    assert "watchdog jobs on" in run("queue").output


def test_an_identical_job_is_found_whatever_the_order_or_spelling(run) -> None:  # type: ignore[no-untyped-def]
    queued = run(*SUBMIT)
    assert queued.exit_code == 0, queued.output
    job_id = queued.output.split()[1].rstrip(":")
    reordered = ["--datafile", "phase.h5", "--rawfile", "fl_a.roli"]
    for variant in (
        [*SUBMIT, "--option", "sleep_seconds=0"],  # the declared default, given explicitly
        [*SUBMIT[:-4], *reordered],
        [*SUBMIT[:-4], "--datafile", "./phase.h5", "--rawfile", "fl_a.roli"],
    ):
        twin = run(*variant)
        assert twin.exit_code == 1, (variant, twin.output)
        assert f"identical job {job_id} is already queued" in twin.output
    twice = run(*SUBMIT, "--datafile", "phase.h5")
    assert twice.exit_code != 0 and "input file 'phase.h5' is listed twice" in twice.output
    assert len(run("queue", "--json").output.split('"job_id"')) == 2  # only the first is queued


def _until(run, job_id: str, *states: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while json.loads(run("status", job_id, "--json").output)["status"] not in states:
        assert run("watchdog", "tick").exit_code == 0
        assert time.monotonic() < deadline


def test_a_local_job_is_the_member_s_alone_and_never_sees_the_token(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `umask 000` the job folder is still 0700, and the job's processes do not inherit
    the member's LABCTL_TOKEN."""
    monkeypatch.setenv("LABCTL_TOKEN", "lct_not-for-jobs")
    old = os.umask(0)
    try:
        queued = run(*SUBMIT, "--option", "sleep_seconds=30")
        job_id = queued.output.split()[1].rstrip(":")
        _until(run, job_id, "submitted", "running")
        status = json.loads(run("status", job_id, "--json").output)
        root = Path(status["remote_dir"])
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        environ = Path(f"/proc/{status['scheduler']['job_id']}/environ").read_bytes()
        assert b"HOME=" in environ and b"LABCTL_TOKEN" not in environ
    finally:
        os.umask(old)
        run("cancel", job_id)
        _until(run, job_id, "cancelled")


def test_timeline_shows_where_a_dataset_s_time_and_bytes_went(run) -> None:  # type: ignore[no-untyped-def]
    """Each job's time in each phase and bytes each way, and the dataset's totals."""
    assert run("timeline", DATASET).output == f"no job for {DATASET} yet\n"
    first = run(*SUBMIT, "--option", "sleep_seconds=1").output.split()[1].rstrip(":")
    _until(run, first, "completed")
    second = run(*SUBMIT, "--option", "sleep_seconds=0.5").output.split()[1].rstrip(":")
    _until(run, second, "completed")
    shown = json.loads(run("timeline", DATASET, "--json").output)
    assert [job["job_id"] for job in shown["jobs"]] == [first, second]  # oldest first
    for job in shown["jobs"]:
        stored = json.loads(run("status", job["job_id"], "--json").output)
        assert job["bytes_out"] == 3000 + 1000  # phase.h5 and fl_a.roli, as shipped
        assert job["bytes_home"] == sum(r["size"] for r in stored["results"]) > 0
        assert job["phases"]["computing"] + job["phases"]["waiting"] >= 0.5
        assert sum(job["phases"].values()) <= shown["span_seconds"] + 1
    assert shown["bytes_out"] == 8000
    assert shown["phases_seconds"]["computing"] == sum(
        job["phases"]["computing"] for job in shown["jobs"]
    )
    text = run("timeline", DATASET).output
    assert first in text and second in text and "8.0 kB" in text
    assert "2 job(s) over" in text and "so far" not in text


def test_lineage_as_a_tree_json_and_dot(run) -> None:  # type: ignore[no-untyped-def]
    """Two jobs that read the same raw file: one node for the file, each job under it."""
    assert run("lineage", DATASET).output == f"no job for {DATASET} yet\n"
    first = run(*SUBMIT).output.split()[1].rstrip(":")
    _until(run, first, "completed")
    second = run(*SUBMIT, "--option", "sleep_seconds=0.1").output.split()[1].rstrip(":")
    _until(run, second, "completed")
    shown = json.loads(run("lineage", DATASET, "--json").output)
    files = [n for n in shown["nodes"] if n["kind"] == "file"]
    raw = [n for n in files if n["label"] == "raw/fl_a.roli"]
    assert len(raw) == 1  # one node per content, however many jobs read it
    readers = [e["target"] for e in shown["edges"] if e["source"] == raw[0]["id"]]
    assert readers == [f"job:{first}", f"job:{second}"]
    tree = run("lineage", DATASET).output.splitlines()
    assert tree[0] == DATASET
    assert any(line.startswith("├── raw/fl_a.roli") or line.startswith("└── raw/fl_a.roli")
               for line in tree)  # fmt: skip
    for job_id in (first, second):  # under each of its two inputs; what it wrote once
        lines = [line for line in tree if job_id in line]
        assert len(lines) == 2 and sum(line.endswith("... shown above") for line in lines) == 1
    dot = run("lineage", DATASET, "--dot").output
    drawn = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
    assert drawn.returncode == 0 and drawn.stdout.count('class="node"') == len(shown["nodes"])


def test_status_leads_with_state_reason_and_what_to_do(run) -> None:  # type: ignore[no-untyped-def]
    """A failed job's reason and next step come first, not under 65 rows of internals; a job
    without inputs shows no transfer rate."""
    failing = ["submit", DATASET, "--cluster", "local", "--job-type", "selftest"]
    job_id = run(*failing, "--option", "exit_code=3").output.split()[1].rstrip(":")
    _until(run, job_id, "failed")
    shown = run("status", job_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"job {job_id}: failed (exit_code)"
    assert lines[1] == f"  selftest on {DATASET} at local, by tester"
    assert lines[2].startswith("  why:      ") and "3" in lines[2]
    assert lines[3] == f"  to do:    labctl retry {job_id} (once the cause is fixed)"
    assert lines[4].startswith("  created:  ") and "updated" in lines[4]
    assert lines[5].startswith("  time in:  queued ") and "running" in lines[5]
    assert lines[-1] == f"more: labctl status {job_id} --all (or --json)"
    assert len(lines) <= 14
    whole = run("status", job_id, "--all").output
    assert "history" in whole and "options_key" not in whole and len(whole.splitlines()) > 20
    assert "no inputs" in run("queue").output and "kB/s" not in run("queue").output


def test_a_cancelled_job_does_not_repeat_its_state(run) -> None:  # type: ignore[no-untyped-def]
    job_id = run(*SUBMIT).output.split()[1].rstrip(":")
    assert run("cancel", job_id).exit_code == 0
    shown = run("status", job_id).output.splitlines()
    assert shown[0] == f"job {job_id}: cancelled"
    assert shown[3] == f"  to do:    labctl retry {job_id} to run it again"
    listing = run("queue").output
    assert "cancelled" in listing and "(cancelled)" not in listing


def test_dry_run_prints_the_script_and_queues_nothing(run) -> None:  # type: ignore[no-untyped-def]
    result = run(*SUBMIT, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/bin/bash\n#SBATCH --job-name=labctl-j")
    assert "#SBATCH --time=00:10:00" in result.output
    assert json.loads(run("queue", "--json").output)["jobs"] == []


def test_cancel_retry_and_permissions(run, db: Database) -> None:  # type: ignore[no-untyped-def]
    mine = run(*SUBMIT).output.split()[1].rstrip(":")
    db.queue.update({"job_id": mine}, {"$set": {"user": "charlie"}})
    refused = run("cancel", mine)
    assert refused.exit_code == 3
    assert refused.output == (
        f"error: job {mine} belongs to charlie; only they or an admin may change it\n"
    )
    db.queue.update({"job_id": mine}, {"$set": {"user": "tester"}})
    assert run("cancel", mine).exit_code == 0
    assert json.loads(run("status", mine, "--json").output)["status"] == "cancelled"
    again = run("cancel", mine)
    assert again.exit_code == 2 and "already cancelled" in again.output
    assert run("retry", mine).output == f"requeued {mine}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--option", "sleep_seconds=soon"], "must be float"),
        (["--option", "nope=1"], "has no option nope"),
        (["--option", "novalue"], "must look like name=value"),
        (["--rawfile", "../../etc/passwd"], "must be a path inside"),
        (["--rawfile", "missing.roli"], "does not exist"),
    ],
)
def test_bad_submissions_are_one_line(run, extra: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*SUBMIT, *extra)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1
    assert result.output.startswith("error: ")


def test_unknown_names_and_listings(run) -> None:  # type: ignore[no-untyped-def]
    assert (
        "unknown cluster 'raven' (known: local)"
        in run("submit", DATASET, "--cluster", "raven", "--job-type", "file_stats").output
    )
    assert run("status", "jnothing").output == "error: no job jnothing\n"
    types = json.loads(run("job-types", "--json").output)
    assert types["file_stats"]["options"]["sleep_seconds"] == {
        "type": "float",
        "default": 0,
        "help": "pause first (to watch a job run)",
    }
    assert types["file_stats"]["clusters"]["local"]["resources"] == {
        "time": "00:10:00",
        "mem": "1G",
        "cpus": 1,
    }  # the declared resources over the cluster's defaults
    assert types["diff_registration"]["merge_with"] == "merge_splits"
    assert types["file_stats_split"]["splittable"] is True
    assert types["file_stats_split"]["options"] == types["file_stats"]["options"]
    assert "split_idx / num_splits" in run("job-types").output
    clusters = json.loads(run("clusters", "--json").output)
    assert clusters["local"]["type"] == "local" and clusters["local"]["scheduler"] == "process"
    assert "this machine" in run("clusters").output


def test_progress_bar() -> None:
    def transfer(**progress: Any) -> Transfer:
        return Transfer(host="h", argv=["rsync"], pid=1, log="l", status_path="s", **progress)

    assert progress_bar(None) == ""
    bar = progress_bar(transfer(total=9, percent=50, rate="114.84MB/s", eta_seconds=65))
    assert bar == "██████░░░░░░ 50% 114.84MB/s ETA 0:01:05"
    assert progress_bar(transfer(total=9, percent=100, rate="1MB/s", eta_seconds=0)) == (
        "████████████ 100% 1MB/s"
    )
    nothing = transfer(percent=100, total=0, bytes=0, rate="0.00kB/s", eta_seconds=0)
    assert progress_bar(nothing) == "no inputs"


def test_cancel_stops_a_running_job_at_once(run, db: Database) -> None:  # type: ignore[no-untyped-def]
    job_id = run(*SUBMIT, "--option", "sleep_seconds=60").output.split()[1].rstrip(":")
    deadline = time.monotonic() + 30
    while json.loads(run("status", job_id, "--json").output)["status"] != "running":
        assert run("watchdog", "tick").exit_code == 0
        assert time.monotonic() < deadline
    pid = int(json.loads(run("status", job_id, "--json").output)["scheduler"]["job_id"])
    result = run("cancel", job_id)
    assert result.output == f"cancelled {job_id} and stopped it on local\n"
    job = json.loads(run("status", job_id, "--json").output)
    assert job["status"] == "cancelled" and job["cleanup_pending"] is False
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text():
        assert time.monotonic() < deadline, "the job's processes outlived the cancel"
        time.sleep(0.1)
