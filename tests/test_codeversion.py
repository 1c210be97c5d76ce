"""Which pipelines code a job runs: recorded at submit, shipped exactly, dirty trees refused."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from labctl.config import Config
from labctl.db import Database
from labctl.errors import ValidationError
from labctl.jobs.codeversion import code_version, export_commit
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from tests.jobfixtures import DATASET, committed_pipelines, dataset_with_files, job_config, watchdog


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    """A fresh repository of our own, whose pipelines/ this test may change."""
    repo = tmp_path / "repo"
    shutil.copytree(committed_pipelines().parent, repo)
    return repo / "pipelines"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_clean_tree_records_the_commit(pipelines: Path) -> None:
    version = code_version(pipelines)
    assert version == {
        "commit": git(pipelines, "rev-parse", "HEAD"),
        "path": "pipelines",
        "dirty": False,
        "diff_sha256": None,
    }


def test_dirty_tree_is_refused_unless_allowed_and_then_hashed(pipelines: Path) -> None:
    (pipelines / "selftest.py").write_text("# changed\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"pipelines/ has 1 uncommitted change\(s\)"):
        code_version(pipelines)
    first = code_version(pipelines, allow_dirty=True)
    assert first["dirty"] is True and len(first["diff_sha256"]) == 64
    (pipelines / "new_job.py").write_text("x = 1\n", encoding="utf-8")  # untracked counts too
    second = code_version(pipelines, allow_dirty=True)
    assert second["diff_sha256"] != first["diff_sha256"]
    assert second["commit"] == first["commit"]


def test_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    with pytest.raises(ValidationError, match="git rev-parse"):
        code_version(tmp_path / "pipelines")
    with pytest.raises(ValidationError, match="does not exist"):
        code_version(tmp_path / "nowhere")


def test_export_is_the_commit_not_the_working_tree(pipelines: Path, tmp_path: Path) -> None:
    version = code_version(pipelines)
    committed = (pipelines / "selftest.py").read_text()
    (pipelines / "selftest.py").write_text("raise SystemExit('working tree')\n")
    exported = export_commit(pipelines, version, tmp_path / "cache")
    assert (exported / "selftest.py").read_text() == committed
    assert export_commit(pipelines, version, tmp_path / "cache") == exported  # cached


def test_job_ships_its_recorded_commit(
    config: Config, db: Database, tmp_path: Path, pipelines: Path
) -> None:
    cfg = job_config(config, tmp_path / "scratch").model_copy(
        update={"watchdog": watchdog(tmp_path, pipelines_dir=pipelines)}
    )
    dataset_with_files(db, cfg, tmp_path / "data")
    request = JobRequest(
        dataset=DATASET, compute_cluster="local", job_type="selftest", datarawfiles=["fl_a.roli"]
    )
    job = submit_job(db, cfg, request)
    assert job["pipelines"]["commit"] == git(pipelines, "rev-parse", "HEAD")
    (pipelines / "selftest.py").write_text("raise SystemExit('this must never run')\n")
    with pytest.raises(ValidationError, match="uncommitted"):
        submit_job(
            db,
            cfg,
            JobRequest(
                **{
                    **request.__dict__,
                    "job_options": {"exit_code": 0},
                    "datarawfiles": ["fl b $(x).roli"],
                }
            ),
        )
    deadline = time.monotonic() + 30
    while get_job(db, job["job_id"])["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
        time.sleep(0.1)
    done = get_job(db, job["job_id"])
    assert done["status"] == "completed", done["history"]
    shipped = tmp_path / "scratch" / "code" / job["pipelines"]["commit"]
    assert done["code_dir"] == str(shipped)  # the commit's copy on the cluster, not the tree
    committed = git(pipelines, "show", "HEAD:pipelines/selftest.py")
    assert (shipped / "pipelines" / "selftest.py").read_text().strip() == committed
