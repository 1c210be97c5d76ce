"""`labctl rerun JOB [--compare]`: a completed job queued again from its record and run on the
real local cluster (process scheduler, real rsync, a real git repository of pipelines/), its
outputs compared with the original's."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import h5py
import httpx2
import numpy as np
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from labctl.api import dbrerun_job
from labctl.cli import cli
from labctl.config import Config, DatabaseConfig
from labctl.db import Database
from labctl.errors import ValidationError
from labctl.jobs.compare import reproduction, sha256_file
from labctl.jobs.queue import get_job, read_job
from labctl.jobs.rerun import keep_reproduction, record_reproduction
from labctl.model.job import Job
from labctl.model.reproduction import Match, Reproduction, ResultFile
from tests.jobfixtures import DATASET, REPO, cli_on, job_config, watchdog
from tests.test_migrate import v1_jobs
from tests.test_service_watchdog import JOB, lab_server, tick_until_finished
from tests.webfixtures import login

NOISY = '''"""`noisy`: a test job type that is not deterministic on purpose."""
import os
import time

import h5py
import numpy as np

INTERFACE = {
    "help": "random bytes, an HDF5 file stamped with the time, and a steady text",
    "outputs": ["noise.bin", "stamped.h5", "steady.txt"],
}


def run(dataset, inputs, outputs, options):
    (outputs / "noise.bin").write_bytes(os.urandom(64))
    with h5py.File(outputs / "stamped.h5", "w") as f:
        f.create_dataset("values", data=np.arange(10.0))
        f.attrs["written_at"] = time.time()
    (outputs / "steady.txt").write_text("the same every time\\n")
    return 0
'''


def git(repo: Path, *args: str) -> str:
    argv = ["git", "-C", str(repo), "-c", "user.name=labctl tests", "-c", "user.email=t@lab"]
    return subprocess.run([*argv, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    """A git repository of this checkout's pipelines/ and the `noisy` job type, committed."""
    repo = tmp_path / "code"
    shutil.copytree(
        REPO / "pipelines",
        repo / "pipelines",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    (repo / "pipelines" / "noisy.py").write_text(NOISY)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipelines for tests")
    return repo / "pipelines"


@pytest.fixture
def run(config: Config, db: Database, tmp_path: Path, pipelines: Path):  # type: ignore[no-untyped-def]
    cfg = job_config(config, tmp_path / "scratch")
    cfg = cfg.model_copy(update={"watchdog": watchdog(tmp_path, pipelines_dir=pipelines)})
    return cli_on(db, cfg, tmp_path)


FILE_STATS = ["--job-type", "file_stats", "--rawfile", "fl_a.roli", "--datafile", "phase.h5"]


def submit(run, *args: str) -> str:  # type: ignore[no-untyped-def]
    done = run("submit", DATASET, "--cluster", "local", *args)
    assert done.exit_code == 0, done.output
    return str(done.output.split()[1].rstrip(":"))


def rerun(run, *args: str) -> str:  # type: ignore[no-untyped-def]
    done = run("rerun", *args)
    assert done.exit_code == 0, done.output
    return str(done.output.split()[1].rstrip(":"))


def job(run, job_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    found: dict[str, Any] = json.loads(run("status", job_id, "--json").output)
    return found


def until_completed(run, job_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while (doc := job(run, job_id))["status"] not in ("completed", "failed"):
        tick = run("watchdog", "tick")
        assert tick.exit_code == 0, tick.output
        assert time.monotonic() < deadline, doc
    assert doc["status"] == "completed", doc
    return doc


def test_a_rerun_with_compare_reports_identical_outputs_on_both_jobs(run) -> None:  # type: ignore[no-untyped-def]
    first = submit(run, *FILE_STATS)
    original = until_completed(run, first)
    queued = run("rerun", first, "--compare")
    assert queued.exit_code == 0, queued.output
    second = queued.output.split()[1].rstrip(":")
    commit = original["pipelines"]["commit"]
    assert queued.output == (
        f"queued {second}: rerun of {first} (file_stats on {DATASET} at local, pipelines @ "
        f"{commit[:12]}); its outputs will be compared when it completes\n"
    )
    asked = job(run, second)
    assert asked["rerun"]["job_id"] == first and asked["rerun"]["compare"] is True
    assert asked["rerun"]["results"] == original["results"]
    for field in ("pipelines", "job_options", "resources", "datafiles", "datarawfiles"):
        assert asked[field] == original[field], field
    assert f"rerun of: {first}, to compare once completed" in run("status", second).output

    done = until_completed(run, second)
    verdict = done["reproduction"]
    assert verdict["match"] == "identical" and verdict["original"] == first
    assert [(f["name"], f["match"]) for f in verdict["files"]] == [("file_stats.json", "identical")]
    size = next(r["size"] for r in original["results"] if r["name"] == "file_stats.json")
    assert verdict["files"][0]["original_size"] == verdict["files"][0]["rerun_size"] == size
    assert job(run, first)["reproduction"] == verdict  # kept on the original too
    for shown in (run("status", first).output, run("status", second).output):
        assert f"reproduction: rerun {second} of {first}: identical (1 file)" in shown
        assert f"file_stats.json: identical ({size} / {size} bytes)" in shown
    provenance = run("provenance", DATASET)
    assert provenance.exit_code == 0, provenance.output
    assert provenance.output.count(f"rerun {second} of {first}: identical") == 2
    records = json.loads(run("provenance", DATASET, "--json").output)
    assert [r["rerun_of"] for r in records] == [None, first]
    lineage = json.loads(run("lineage", DATASET, "--json").output)
    reruns = [e for e in lineage["edges"] if e["how"] == "rerun"]
    assert reruns == [{"source": f"job:{first}", "target": f"job:{second}", "how": "rerun",
                       "note": "identical"}]  # fmt: skip
    tree = run("lineage", DATASET).output
    assert f"rerun (identical): {second} file_stats" in tree


def test_a_verdict_that_the_recorded_checksums_deny_is_refused(  # type: ignore[no-untyped-def]
    run, db: Database
) -> None:
    """The original may be another member's: the store keeps a verdict only if it says what
    the outputs both runs recorded say (here: identical), whatever a watchdog sends."""
    first = submit(run, *FILE_STATS)
    until_completed(run, first)
    second = rerun(run, first, "--compare")
    done = until_completed(run, second)
    true = done["reproduction"]
    lies = [
        {**true, "match": "different", "files": [{**true["files"][0], "match": "different"}]},
        {**true, "match": "different"},  # not the worst of its files
        {**true, "files": []},  # a file left out
        {**true, "files": [{**true["files"][0], "rerun_size": 1}]},
    ]
    for lie in lies:
        verdict = Reproduction.model_validate(lie)  # as RecordReproduction passes it on
        with pytest.raises(ValidationError, match="does not match the outputs both runs recorded"):
            keep_reproduction(db, read_job(db, second), verdict)
    assert job(run, first)["reproduction"] == true  # the original's verdict stands


def test_a_changed_raw_input_is_refused_naming_it(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = submit(run, *FILE_STATS)
    until_completed(run, first)
    (tmp_path / "data" / "raw" / "fl_a.roli").write_bytes(b"A" * 1000)  # same size, new bytes

    refused = run("rerun", first)
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: input(s) of job {first} changed since it ran: raw/fl_a.roli (rerun with "
        "--allow-changed-inputs to run on them as they are now)\n"
    )
    assert [j["job_id"] for j in json.loads(run("queue", "--json").output)["jobs"]] == [first]

    (tmp_path / "data" / "processed" / "phase.h5").unlink()
    assert "raw/fl_a.roli, data/phase.h5" not in run("rerun", first).stderr  # data first
    assert "data/phase.h5, raw/fl_a.roli" in run("rerun", first).stderr
    (tmp_path / "data" / "processed" / "phase.h5").write_bytes(b"p" * 3000)
    second = rerun(run, first, "--allow-changed-inputs", "--compare")
    assert "inputs changed: raw/fl_a.roli" in job(run, second)["history"][0]["note"]
    verdict = until_completed(run, second)["reproduction"]  # file_stats sums its inputs
    assert verdict["match"] == "different"
    assert "differ: file_stats.json" in run("status", second).output


def test_a_rerun_runs_the_recorded_commit_after_pipelines_moved_on(  # type: ignore[no-untyped-def]
    run, pipelines: Path
) -> None:
    first = submit(run, *FILE_STATS)
    original = until_completed(run, first)
    source = pipelines / "file_stats.py"
    source.write_text(
        source.read_text().replace('{"dataset": dataset,', '{"v": 2, "dataset": dataset,')
    )
    git(pipelines.parent, "commit", "-q", "-am", "file_stats writes a version")
    head = git(pipelines.parent, "rev-parse", "HEAD").strip()
    assert head != original["pipelines"]["commit"]

    later = submit(run, *FILE_STATS, "--force")  # today's code: other bytes
    assert until_completed(run, later)["pipelines"]["commit"] == head
    second = rerun(run, first, "--compare")
    done = until_completed(run, second)
    assert done["pipelines"] == original["pipelines"]
    assert done["reproduction"]["match"] == "identical"
    [environment] = done["environment"]
    assert environment["code"].endswith(f"/code/{original['pipelines']['commit']}/pipelines")
    stats = json.loads(Path(done["result_dir"], "file_stats.json").read_text())
    assert "v" not in stats
    newer = json.loads(Path(job(run, later)["result_dir"], "file_stats.json").read_text())
    assert newer["v"] == 2


def test_a_non_deterministic_job_type_is_reported_different_naming_the_files(run) -> None:  # type: ignore[no-untyped-def]
    first = submit(run, "--job-type", "noisy")
    until_completed(run, first)
    second = rerun(run, first, "--compare")
    verdict = until_completed(run, second)["reproduction"]
    matches = {f["name"]: f["match"] for f in verdict["files"]}
    assert matches == {
        "noise.bin": "different",
        "stamped.h5": "equal within tolerance",
        "steady.txt": "identical",
    }
    assert verdict["match"] == "different"
    status = run("status", first).output
    assert f"reproduction: rerun {second} of {first}: different (3 files); differ: noise.bin" in (
        status
    )
    assert "noise.bin: different (64 / 64 bytes)" in status
    assert "stamped.h5: equal within tolerance" in status and "rtol 1e-06" in status


def test_a_dirty_tree_job_reruns_only_while_its_changes_are_there(  # type: ignore[no-untyped-def]
    run, pipelines: Path
) -> None:
    (pipelines / "steady_note.txt").write_text("an uncommitted change\n")
    first = submit(run, *FILE_STATS, "--allow-dirty")
    original = until_completed(run, first)
    assert original["pipelines"]["dirty"] is True
    second = rerun(run, first)
    assert job(run, second)["pipelines"] == original["pipelines"]
    run("cancel", second)

    (pipelines / "steady_note.txt").write_text("changed again\n")
    refused = run("rerun", first)
    assert refused.exit_code == 2
    diff = original["pipelines"]["diff_sha256"][:12]
    assert refused.stderr == (
        f"error: job {first} ran uncommitted changes to pipelines/ ({diff} on "
        f"{original['pipelines']['commit'][:12]}) that the pipelines folder no longer holds: it "
        "cannot be rerun as it ran\n"
    )


def test_only_a_completed_job_is_rerun(run, db: Database) -> None:  # type: ignore[no-untyped-def]
    first = submit(run, *FILE_STATS)
    refused = run("rerun", first)
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: job {first} is queued: only a completed job has a record to rerun\n"
    )
    assert run("rerun", "j-nope").stderr.startswith("error: ")
    assert get_job(db, first)["status"] == "queued"


def test_members_rerun_and_compare_through_the_service(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    """bob's and alice's machines reach the lab only through the service with their tokens;
    bob's watchdog compares his rerun and keeps the verdict on his job and on alice's."""
    with lab_server(db_config, tmp_path) as lab:
        first = lab.lab("alice").submit(JOB).job_id
        tick_until_finished(lab, lab.machine("alice", claims="alice"), first)
        bob = lab.machine("bob", claims="alice")

        def labctl(*args: str) -> Result:
            return CliRunner().invoke(cli, ["--config", str(bob), *args])

        queued = labctl("rerun", first, "--compare")
        assert queued.exit_code == 0, queued.output
        second = queued.output.split()[1].rstrip(":")
        assert get_job(lab.db, second)["user"] == "bob"  # the token's member, not the config's
        tick_until_finished(lab, bob, second)
        verdict = get_job(lab.db, second)["reproduction"]
        assert verdict["match"] == "identical" and verdict["rerun"] == second
        assert get_job(lab.db, first)["reproduction"] == verdict
        assert (
            f"reproduction: rerun {second} of {first}: identical" in labctl("status", first).output
        )

        with httpx2.Client(base_url=lab.url) as browser:  # the job pages, as alice sees them
            assert login(cast(TestClient, browser), "alice") == 303
            for shown in (first, second):
                page = browser.get(f"/jobs/{shown}").text
                assert 'Reproduction: <span class="match m-identical">identical</span>' in page
                assert f'Rerun <a href="/jobs/{second}">{second}</a> of' in page
                assert "<td>file_stats.json</td><td>identical</td>" in page
            assert (
                f'rerun of</th><td><a href="/jobs/{first}">' in browser.get(f"/jobs/{second}").text
            )

        raw = Path(lab.db.data.find_one({"dataset": DATASET})["data_raw_path"])
        (raw / "fl_a.roli").write_bytes(b"changed")
        refused = labctl("rerun", first)
        assert refused.exit_code == 2
        assert refused.stderr.startswith(
            f"error: input(s) of job {first} changed since it ran: raw/fl_a.roli ("
        )
        assert refused.stderr.count("\n") == 1


def test_one_task_of_a_split_job_is_rerun_and_compared_alone(run) -> None:  # type: ignore[no-untyped-def]
    split = ["--job-type", "file_stats_split", "--rawfile", "fl_a.roli", "--datafile", "phase.h5"]
    first = submit(run, *split, "--option", "num_splits=2")
    original = until_completed(run, first)
    assert {r["name"] for r in original["results"]} >= {"file_stats_0.json", "file_stats_1.json"}
    refused = run("rerun", first, "--split", "2")
    assert refused.exit_code == 2
    assert refused.stderr == f"error: job {first} ran split(s) 0, 1, not 2\n"

    second = rerun(run, first, "--split", "1", "--compare")
    done = until_completed(run, second)
    assert done["job_options"]["split_idx"] == 1 and done["scheduler"]["tasks"] == 1
    verdict = done["reproduction"]
    assert [(f["name"], f["match"]) for f in verdict["files"]] == [
        ("file_stats_1.json", "identical")
    ]


def _result(path: Path) -> ResultFile:
    return ResultFile(
        name=path.name, path=str(path), size=path.stat().st_size, sha256=sha256_file(path)
    )


def _h5(path: Path, values: list[float], stamp: float) -> ResultFile:
    with h5py.File(path, "w") as f:
        f.create_dataset("group/values", data=np.array(values))
        f.attrs["written_at"] = stamp
    return _result(path)


def test_hdf5_outputs_are_compared_dataset_by_dataset(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = [
        _h5(tmp_path / "a" / "close.h5", [1.0, 2.0], 1),
        _h5(tmp_path / "a" / "far.h5", [1.0], 1),
    ]
    new = [
        _h5(tmp_path / "b" / "close.h5", [1.0, 2.0 + 1e-9], 2),
        _h5(tmp_path / "b" / "far.h5", [1.1], 2),
    ]
    (tmp_path / "a" / "only.txt").write_text("x")
    old.append(_result(tmp_path / "a" / "only.txt"))
    verdict = reproduction("j1", "j2", old, new, rtol=1e-6)
    found = {f.name: (f.match, f.note) for f in verdict.files}
    assert found == {
        "close.h5": (Match.EQUIVALENT, "datasets equal within rtol 1e-06"),
        "far.h5": (Match.DIFFERENT, "dataset group/values differs beyond rtol 1e-06"),
        "only.txt": (Match.MISSING, "only the original wrote it"),
    }
    assert verdict.match is Match.MISSING
    assert verdict.line == "rerun j2 of j1: missing (3 files); differ: far.h5, only.txt"
    strict = reproduction("j1", "j2", old[:1], new[:1], rtol=0)
    assert strict.match is Match.DIFFERENT
    (tmp_path / "a" / "close.h5").unlink()
    gone = reproduction("j1", "j2", old[:1], new[:1], rtol=1e-6).files[0]
    assert gone.match is Match.DIFFERENT and "no longer at" in gone.note


def test_an_old_job_reads_as_no_rerun_and_takes_a_verdict(db: Database) -> None:
    """labctl 0.1's documents have neither field: they read as no rerun and no verdict, and a
    rerun's verdict is kept on one as on any job."""
    db.queue.insert_many(v1_jobs())
    old = next(doc for doc in v1_jobs() if doc["status"] == "completed")
    assert all(Job.of(doc).rerun is None and Job.of(doc).reproduction is None for doc in v1_jobs())
    verdict = reproduction(old["job_id"], "j2", [], [], rtol=1e-6)
    record_reproduction(db, verdict)
    stored = read_job(db, old["job_id"]).reproduction
    assert stored is not None and stored.match is Match.IDENTICAL
    assert stored.model_dump(exclude={"at"}) == verdict.model_dump(exclude={"at"})
    assert verdict.line == f"rerun j2 of {old['job_id']}: identical (0 files)"


def test_the_python_api_queues_a_rerun(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = submit(run, *FILE_STATS)
    until_completed(run, first)
    second = dbrerun_job(first, compare=True, config=tmp_path / "config.yaml")
    asked = job(run, second)
    assert asked["rerun"]["job_id"] == first and asked["rerun"]["compare"] is True
    assert asked["user"] == "tester" and asked["status"] == "queued"
