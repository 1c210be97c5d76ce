"""Nothing of a finished job is left behind: its watchdog state folder here, a pull's folder of
links, its folder on the cluster (a cancelled job's inputs too); `labctl doctor` reports (and
`--clean` removes) what killed runs left. On the real testbed (sshd, SLURM, rsync)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path

import pytest

from labctl.access.cancel import cancel_and_stop
from labctl.access.lab import LocalLab
from labctl.config import Config
from labctl.damaged import Listing
from labctl.db import Database
from labctl.install.doctor import check_leftovers
from labctl.install.leftovers import find_leftovers
from labctl.jobs.queue import get_job, read_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.model.states import TERMINAL, JobState
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests import test_watchdog_testbed as testbed_tests
from tests.jobfixtures import DATASET, job_in_state
from tests.testbed import (
    needs_testbed,
    remote_exists,
    ssh,
    status_in,
    tick_until,
)

pytestmark = [pytest.mark.testbed, needs_testbed]
FINAL = [str(s) for s in TERMINAL]
# The fixtures of the watchdog's testbed tests: a scratch root, the testbed config on both
# backends (`hpc`), and on the embedded store alone (`solo`).
scratch, hpc, solo = testbed_tests.scratch, testbed_tests.hpc, testbed_tests.solo


def submit(db: Database, cfg: Config, job_type: str = "file_stats", **fields: object) -> str:
    request = JobRequest(
        dataset=DATASET, compute_cluster="hpc", job_type=job_type, datafiles=["phase.h5"],
        datarawfiles=["fl_a.roli"], **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    return str(submit_job(db, cfg, request, force=True)["job_id"])


def in_scratch(scratch: str) -> list[str]:
    """The names in the cluster's scratch folder (its hidden ones too)."""
    return sorted(ssh(["ls", "-A", "--", scratch]).split())


def left_of(cfg: Config, scratch: str, job_id: str) -> list[str]:
    """What job `job_id` left: its state folder here, its folder or any pull's on the cluster."""
    here = (
        [str(cfg.watchdog.state_dir / job_id)] if (cfg.watchdog.state_dir / job_id).exists() else []
    )
    return here + [n for n in in_scratch(scratch) if n == job_id or n.startswith(".pull-")]


def test_a_completed_job_leaves_nothing_behind(db: Database, hpc: Config, scratch: str) -> None:
    job_id = submit(db, hpc)
    tick_until(db, hpc, status_in(db, job_id, *FINAL), timeout=120)
    assert get_job(db, job_id)["status"] == "completed"
    assert left_of(hpc, scratch, job_id) == []
    assert in_scratch(scratch) == ["code"]  # the shared pipelines code stays for the next job


def test_a_cancelled_running_job_leaves_nothing_behind(
    db: Database, hpc: Config, scratch: str
) -> None:
    """`labctl cancel` stops the SLURM job and removes its folder with the inputs shipped."""
    job_id = submit(db, hpc, "selftest", job_options={"sleep_seconds": 60})
    tick_until(db, hpc, status_in(db, job_id, "running", *FINAL), timeout=90)
    assert get_job(db, job_id)["status"] == "running"
    assert remote_exists(f"{scratch}/{job_id}/inputs/data/phase.h5")
    assert (hpc.watchdog.state_dir / job_id / "transfer.json").is_file()
    done = cancel_and_stop(db, hpc, job_id, "tester")
    assert done.stopped, done.message
    assert left_of(hpc, scratch, job_id) == []
    assert get_job(db, job_id)["scratch_cleaned"] is True
    lines = run_stages(LocalStore.of(db, hpc), hpc, ["jobs"])
    assert lines == ["jobs: archived 1"]  # nothing left to do for it


def test_a_job_cancelled_during_its_transfer_leaves_nothing_behind(
    solo: tuple[Database, Config], scratch: str
) -> None:
    """The transfer is stopped first (by its record in the state folder, kept until then); its
    folder on the cluster goes once the rsync has ended, then the state folder."""
    db, cfg = solo
    slow = cfg.model_copy(update={"watchdog": cfg.watchdog.model_copy(update={"bwlimit_kib": 1})})
    job_id = submit(db, slow)
    run_stages(LocalStore.of(db, slow), slow, ["scan"])
    assert get_job(db, job_id)["status"] == "transferring"
    assert job_id in in_scratch(scratch)  # made, inputs on their way
    cancel_and_stop(db, slow, job_id, "tester")
    tick_until(db, slow, lambda: left_of(slow, scratch, job_id) == [], stages=["jobs"])
    assert get_job(db, job_id)["status"] == "cancelled"
    time.sleep(1)  # an rsync still writing would make the folder again
    assert left_of(slow, scratch, job_id) == []


def test_a_failed_pull_leaves_no_folder_of_links(
    solo: tuple[Database, Config], tmp_path: Path, scratch: str
) -> None:
    """The pull fails here before its rsync (the results folder cannot be made): its folder of
    links on the cluster goes all the same, and the job completes once it can."""
    db, cfg = solo
    results = tmp_path / "data" / "processed" / "results"
    results.write_text("not a folder")
    job_id = submit(db, cfg)
    deadline = time.monotonic() + 120
    while get_job(db, job_id)["status"] != "retrieving":
        assert time.monotonic() < deadline, get_job(db, job_id)["history"]
        with contextlib.suppress(NotADirectoryError):  # each pull, until it is retrieving
            run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
        time.sleep(0.2)
    with pytest.raises(NotADirectoryError):
        run_stages(LocalStore.of(db, cfg), cfg, ["jobs"])
    assert [n for n in in_scratch(scratch) if n.startswith(".pull-")] == []
    results.unlink()
    tick_until(db, cfg, status_in(db, job_id, *FINAL), timeout=60)
    assert get_job(db, job_id)["status"] == "completed"
    assert left_of(cfg, scratch, job_id) == []


def test_doctor_reports_and_cleans_leftovers(
    solo: tuple[Database, Config], tmp_path: Path, scratch: str
) -> None:
    """Planted as killed runs leave them: state folders of a job no store has, a folder of links
    7 hours old, a job folder of no job; what live and failed jobs still have stays, links in a
    state folder are removed, never followed."""
    db, cfg = solo
    live = job_in_state(db, cfg, JobState.TRANSFERRING, user="tester")
    failed = job_in_state(db, cfg, JobState.FAILED, user="tester")
    gone, old_pull, new_pull = "j0000000dead", ".pull-0123456789ab", ".pull-ba9876543210"
    state = cfg.watchdog.state_dir
    precious = tmp_path / "precious"
    precious.write_text("a member's data")
    for job_id in (live, gone, "code"):
        (state / job_id / "staging").mkdir(parents=True)
    (state / gone / "staging" / "phase.h5").symlink_to(precious)
    folders = [f"{scratch}/{name}" for name in (live, failed, gone, old_pull, new_pull)]
    ssh(["mkdir", "-p", "--", *folders])
    ssh(["touch", "-d", "7 hours ago", "--", f"{scratch}/{old_pull}"])

    lab = LocalLab(cfg, db)
    listed = Listing(items=[read_job(db, live)])  # the others asked for alone, as a page ends

    def look(clean: bool = False) -> dict[str, list[str]]:
        found = find_leftovers(cfg, lab, listed, dt.datetime.now(dt.UTC), clean)
        return {left.name: left.paths for left in found}

    found = look()
    assert found == {
        "leftovers (watchdog state)": [str(state / gone)],
        "local: leftovers": [],
        "hpc: leftovers": [f"{scratch}/{old_pull}", f"{scratch}/{gone}"],  # sorted
    }
    [_, _, hpc] = find_leftovers(cfg, lab, listed, dt.datetime.now(dt.UTC))
    check = check_leftovers(hpc)
    assert not check.ok and check.detail.startswith("2 of finished jobs or killed pulls: ")
    assert check.hint == (
        f"labctl doctor --clean, or on hpc: rm -rf -- {scratch}/{old_pull} {scratch}/{gone}"
    )
    assert look(clean=True) == found
    assert look() == {name: [] for name in found}
    assert precious.read_text() == "a member's data"
    assert sorted(p.name for p in state.iterdir()) == sorted([live, "code"])
    assert in_scratch(scratch) == sorted([live, failed, new_pull])
