"""The pipelines code goes to a cluster once per commit, into one read-only copy its jobs share;
a half-shipped copy is never used, two runs shipping at once keep one copy, a dirty tree travels
with its job. On the `local` cluster (plain processes, real rsync), the embedded store."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from labctl.compute.cluster import ClusterPool, open_cluster
from labctl.compute.transport import LocalRunner, Result
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job, read_job
from labctl.jobs.submit import JobRequest, submit_job
from labctl.stages import StageRun
from labctl.stages.loop import run_stages
from labctl.stages.seam import LocalStore
from labctl.stages.shipping import shared_code
from tests.jobfixtures import DATASET, committed_pipelines, embedded_jobs

ALL = ["scan", "transfers", "jobs"]


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[tuple[Database, Config]]:
    with embedded_jobs(tmp_path) as found:
        yield found


def submit(db: Database, cfg: Config, **fields: Any) -> str:
    request = {"dataset": DATASET, "compute_cluster": "local", "job_type": "file_stats",
               "datarawfiles": ["fl_a.roli"], **fields}  # fmt: skip
    return str(submit_job(db, cfg, JobRequest(**request), force=True)["job_id"])


def until(db: Database, cfg: Config, ids: Sequence[str], *states: str, stages: list[str] = ALL,
          timeout: float = 60) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not all(get_job(db, job_id)["status"] in states for job_id in ids):
        assert time.monotonic() < deadline, [get_job(db, j)["history"][-1] for j in ids]
        run_stages(LocalStore.of(db, cfg), cfg, stages)
        time.sleep(0.1)


def tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` with its content, `__pycache__` left out."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def scratch_of(cfg: Config) -> Path:
    return Path(cfg.clusters["local"].scratch)


def test_the_jobs_of_one_commit_share_one_read_only_copy_shipped_once(
    solo: tuple[Database, Config],
) -> None:
    db, cfg = solo
    ids = [submit(db, cfg) for _ in range(3)]
    [scan] = run_stages(LocalStore.of(db, cfg), cfg, ["scan"])
    assert "code shipped 1" in scan and "transferring 3" in scan, scan
    commit = get_job(db, ids[0])["pipelines"]["commit"]
    shared = scratch_of(cfg) / "code" / commit
    until(db, cfg, ids, "submitted", "running", "retrieving", stages=ALL[:2])
    for job_id in ids:
        job = get_job(db, job_id)
        assert job["code_dir"] == str(shared)
        assert f"export PYTHONPATH={shared}\n" in job["batch_script"]
        assert not (scratch_of(cfg) / job_id / "code").exists()  # none of its own
    assert (shared / ".complete").is_file()
    assert tree(shared / "pipelines") == tree(committed_pipelines())
    for path in [shared, *shared.rglob("*")]:
        assert path.stat().st_mode & 0o222 == 0, f"{path} is writable"
    assert sorted(p.name for p in (scratch_of(cfg) / "code").iterdir()) == [commit]
    until(db, cfg, ids, "completed")  # each ran the shared copy: it has no other
    later = submit(db, cfg)
    [scan] = run_stages(LocalStore.of(db, cfg), cfg, ["scan"])
    assert "code shipped" not in scan and get_job(db, later)["code_dir"] == str(shared)


def test_a_dirty_tree_travels_in_its_jobs_own_folder(
    solo: tuple[Database, Config], tmp_path: Path
) -> None:
    db, cfg = solo
    repo = tmp_path / "dirty"
    shutil.copytree(committed_pipelines().parent, repo)
    marker = "# an uncommitted change\n"
    with (repo / "pipelines" / "__init__.py").open("a") as handle:
        handle.write(marker)
    dirty = cfg.model_copy(
        update={"watchdog": cfg.watchdog.model_copy(update={"pipelines_dir": repo / "pipelines"})}
    )
    job_id = submit(db, dirty, allow_dirty=True)
    until(db, dirty, [job_id], "submitted", "running", "retrieving", stages=ALL[:2])
    job = get_job(db, job_id)
    own = scratch_of(cfg) / job_id / "code"
    assert job["pipelines"]["dirty"] is True and job["code_dir"] is None
    assert f"export PYTHONPATH={own}\n" in job["batch_script"]
    assert (own / "pipelines" / "__init__.py").read_text().endswith(marker)
    assert not (scratch_of(cfg) / "code").exists()
    until(db, dirty, [job_id], "completed")


class Interleaving(LocalRunner):
    """This machine's runner, which lets `meanwhile` run just before its run publishes its copy
    of the code: the other run's rename comes first."""

    def __init__(self, meanwhile: Callable[[], object]) -> None:
        self.meanwhile: Callable[[], object] | None = meanwhile

    def run(self, argv: Sequence[str], **kwargs: Any) -> Result:
        script = argv[2] if len(argv) > 2 else ""
        if self.meanwhile is not None and "mv -T" in script:  # the publishing script
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return super().run(argv, **kwargs)


def test_two_runs_shipping_one_commit_at_once_keep_one_complete_copy(
    solo: tuple[Database, Config],
) -> None:
    db, cfg = solo
    job = read_job(db, submit(db, cfg))
    first, second = (
        StageRun(LocalStore.of(db, cfg), cfg, "scan", ClusterPool(cfg)) for _ in range(2)
    )
    layout = first.layout(job)
    other = open_cluster("local", cfg.clusters["local"])
    found: list[str | None] = []
    slow = dataclasses.replace(
        other, runner=Interleaving(lambda: found.append(shared_code(second, other, job, layout)))
    )
    found.append(shared_code(first, slow, job, layout))
    shared = scratch_of(cfg) / "code" / job.pipelines["commit"]
    assert found == [str(shared), str(shared)]  # the second run's, then the first's
    assert first.did["code shipped"] == second.did["code shipped"] == 1  # both shipped a copy
    assert os.listdir(shared.parent) == [shared.name]  # the loser removed its own
    assert sorted(os.listdir(shared)) == [".complete", "pipelines"]  # and left nothing in it
    assert (shared / ".complete").is_file()
    assert tree(shared / "pipelines") == tree(committed_pipelines())


def test_a_half_shipped_copy_is_never_used(solo: tuple[Database, Config]) -> None:
    db, cfg = solo
    job_id = submit(db, cfg)
    commit = get_job(db, job_id)["pipelines"]["commit"]
    code = scratch_of(cfg) / "code"
    killed = code / f".{commit}.dead0000.partial" / "pipelines"  # a run killed while shipping
    killed.mkdir(parents=True)
    (killed / "__main__.py").write_text("raise SystemExit(9)\n")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(killed.parent, (two_days_ago, two_days_ago))
    shipping = code / f".{commit}.live0000.partial"  # another run's, shipping right now
    shipping.mkdir()
    until(db, cfg, [job_id], "completed", "failed")
    assert get_job(db, job_id)["status"] == "completed"
    assert sorted(os.listdir(code)) == [shipping.name, commit]  # the day-old one swept
    assert tree(code / commit / "pipelines") == tree(committed_pipelines())


def test_a_copy_without_its_mark_is_refused_not_used(solo: tuple[Database, Config]) -> None:
    db, cfg = solo
    job_id = submit(db, cfg)
    commit = get_job(db, job_id)["pipelines"]["commit"]
    unmarked = scratch_of(cfg) / "code" / commit / "pipelines"
    unmarked.mkdir(parents=True)  # not labctl's: no .complete
    until(db, cfg, [job_id], "failed", "completed")
    failure = get_job(db, job_id)["failure"]
    assert failure == {
        "reason": "transfer",
        "message": f"publishing the pipelines code on local failed: {unmarked.parent} is there "
        "but not complete",
    }
    assert os.listdir(unmarked.parent.parent) == [commit]  # its own copy removed
