"""Job types declared next to their code: read from pipelines/ at a commit without running it,
restricted and adjusted by the config, and checked at submit against the commit a job ships."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from labctl.cli import cli
from labctl.compute.cluster import ClusterPool
from labctl.config import Config, load_config
from labctl.config.jobtypes import Resources
from labctl.db import Database
from labctl.errors import ConfigError, ValidationError
from labctl.jobs.declarations import declared, job_types_at
from labctl.jobs.submit import JobRequest, prepare_job, submit_job
from labctl.model.job import Job
from labctl.stages import StageRun, Unconfigured
from labctl.stages.seam import LocalStore
from pipelines.__main__ import job_types as shipped_job_types
from tests.jobfixtures import (
    DATASET,
    committed_pipelines,
    dataset_with_files,
    job_config,
    watchdog,
)
from tests.testbed import write_config

ECHO = '''"""A job type of this test's own; its code needs a package no Python here has."""

import not_installed_anywhere

INTERFACE = {
    "help": "echoes its options",
    "outputs": ["echo.json"],
    "options": {OPTIONS},
}


def run(dataset, inputs, outputs, options):
    return 0
'''


def echo(options: str) -> str:
    return ECHO.replace("OPTIONS", options)


def head(pipelines: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(pipelines), "rev-parse", "HEAD"], check=True, capture_output=True
    )
    return done.stdout.decode().strip()


def commit(pipelines: Path, message: str) -> str:
    git = ["git", "-C", str(pipelines), "-c", "user.name=t", "-c", "user.email=t@lab"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    return head(pipelines)


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    """A repository whose pipelines/ holds `echo` with option `label` at its first commit."""
    folder = tmp_path / "repo" / "pipelines"
    folder.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(folder.parent)], check=True)
    (folder / "__init__.py").write_text("")
    (folder / "echo.py").write_text(echo('"label": {"type": "str", "default": "hi"}'))
    commit(folder, "echo with a label")
    return folder


def test_declarations_are_read_per_commit_without_running_the_code(pipelines: Path) -> None:
    first = head(pipelines)
    (pipelines / "echo.py").write_text(echo('"count": {"type": "int", "default": 1}'))
    (pipelines / "newer.py").write_text('INTERFACE = {"outputs": ["newer.txt"]}\n')
    (pipelines / "helper.py").write_text("def helper():\n    return 1\n")  # declares nothing
    second = commit(pipelines, "echo counts; a newer job type")
    (pipelines / "echo.py").write_text(echo('"size": {"type": "float"}'))  # not committed

    at_first = declared(pipelines, first)
    assert set(at_first) == {"echo"}
    assert at_first["echo"].entry == "echo" and at_first["echo"].outputs == ["echo.json"]
    assert at_first["echo"].options["label"].default == "hi"
    at_second = declared(pipelines, second)
    assert set(at_second) == {"echo", "newer"}
    assert set(at_second["echo"].options) == {"count"}
    assert at_second["echo"].options["count"].type == "int"
    assert set(declared(pipelines)["echo"].options) == {"size"}  # the working tree


@pytest.fixture
def cfg(config: Config, db: Database, pipelines: Path, tmp_path: Path) -> Config:
    cfg = job_config(config, tmp_path / "scratch").model_copy(
        update={"watchdog": watchdog(tmp_path, pipelines_dir=pipelines), "job_types": {}}
    )
    dataset_with_files(db, cfg, tmp_path / "data")
    return cfg


def request(job_type: str = "echo", **options: object) -> JobRequest:
    return JobRequest(
        dataset=DATASET, compute_cluster="local", job_type=job_type, job_options=options
    )


def test_submit_checks_the_options_the_shipped_commit_declares(
    db: Database, cfg: Config, pipelines: Path
) -> None:
    with pytest.raises(ValidationError, match=r"job type echo has no option count \(options: l"):
        submit_job(db, cfg, request(count=3))
    old = submit_job(db, cfg, request(label="x"))
    assert old["job_options"] == {"label": "x"}

    (pipelines / "echo.py").write_text(echo('"count": {"type": "int", "default": 1}'))
    (pipelines / "newer.py").write_text('INTERFACE = {"outputs": ["newer.txt"]}\n')
    second = commit(pipelines, "echo counts")
    new = submit_job(db, cfg, request(count="3"))
    assert new["job_options"] == {"count": 3} and new["pipelines"]["commit"] == second
    with pytest.raises(ValidationError, match="has no option label"):
        submit_job(db, cfg, request(label="x"))
    with pytest.raises(ValidationError, match="has no option count"):  # a job of the old code
        prepare_job(db, cfg, request(count=3), pipelines=old["pipelines"])

    (pipelines / "echo.py").write_text(echo('"size": {"type": "float"}'))
    with pytest.raises(ValidationError, match="uncommitted change"):
        submit_job(db, cfg, request(size=2))
    dirty = JobRequest(**{**vars(request(size=2)), "allow_dirty": True})
    assert submit_job(db, cfg, dirty)["job_options"] == {"size": 2.0}  # the tree it ships


def test_the_stages_see_each_job_type_as_its_commit_declares_it(
    db: Database, cfg: Config, pipelines: Path
) -> None:
    old = Job.of(submit_job(db, cfg, request()))
    (pipelines / "echo.py").write_text(echo('"count": {"type": "int", "default": 1}'))
    (pipelines / "newer.py").write_text('INTERFACE = {"outputs": ["newer.txt"]}\n')
    commit(pipelines, "echo counts; a newer job type")
    new = Job.of(submit_job(db, cfg, request()))
    run = StageRun(LocalStore.of(db, cfg), cfg, "scan", ClusterPool(cfg))
    assert set(run.job_type(old).options) == {"label"}
    assert set(run.job_type(new).options) == {"count"}
    with pytest.raises(Unconfigured, match="job type 'newer' is no longer configured"):
        # not declared at the old job's commit
        run.job_type(old.model_copy(update={"job_type": "newer"}))
    shutil.move(pipelines.parent / ".git", pipelines.parent / "moved.git")
    assert set(run.job_type(old).options) == {"label"}  # read once per commit and run
    with pytest.raises(ValidationError, match="git ls-tree"):
        StageRun(LocalStore.of(db, cfg), cfg, "scan", ClusterPool(cfg)).job_type(old)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ('INTERFACE = {"outputz": []}', "INTERFACE unknown key 'outputz'"),
        (
            'INTERFACE = {"options": {"n": {"type": "number"}}}',
            "INTERFACE options.n.type: Input should be 'str', 'int', 'float' or 'bool'",
        ),
        ('INTERFACE = {"outputs": ["../up.h5"]}', "must be a relative path without '..'"),
        ('INTERFACE = {"outputs": ["a\\nb.h5"]}', "without '..' or line break"),
        ('INTERFACE = {"resources": {"mem": "lots"}}', "INTERFACE resources.mem: String should"),
        ('INTERFACE = dict(help="x")', "INTERFACE (line 1) must be a dict literal"),
        ('INTERFACE = {"help": "x"', "not valid Python (line 1)"),
    ],
)
def test_a_malformed_declaration_is_one_line_naming_the_file(
    pipelines: Path, tmp_path: Path, source: str, problem: str
) -> None:
    bad = pipelines / "bad.py"
    bad.write_text(source + "\n")
    with pytest.raises(ConfigError) as raised:
        declared(pipelines)
    assert str(raised.value).startswith(f"{bad}: ") and problem in str(raised.value)
    assert "\n" not in str(raised.value)
    head = commit(pipelines, "a bad declaration")
    with pytest.raises(ConfigError, match=f"{bad} at commit {head[:12]}: "):
        declared(pipelines, head)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"watchdog": {"pipelines_dir": str(pipelines)}}))
    listing = CliRunner().invoke(cli, ["--config", str(path), "job-types"])
    assert listing.exit_code == 2
    assert listing.output.startswith(f"error: {bad}") and listing.output.count("\n") == 1


def config_file(tmp_path: Path, settings: dict[str, object]) -> Path:
    settings = {"watchdog": {"pipelines_dir": str(committed_pipelines())}, **settings}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


LOCAL = {"type": "local", "scratch": "/tmp/labctl-local", "scheduler": "process"}
BIG = {**LOCAL, "scratch": "/tmp/labctl-big", "resources": {"time": "02:00:00"}}


def test_the_config_restricts_replaces_and_adds_resources_per_cluster(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        {
            "clusters": {"local": LOCAL, "big": BIG},
            "offered_job_types": ["diff_registration", "merge_splits", "file_stats", "mine"],
            "job_types": {
                "diff_registration": {
                    "help": "registration, our way",
                    "resources": {"mem": "16G"},
                    "clusters": {"big": {"resources": {"cpus": 4}, "max_resources": {"mem": "1T"}}},
                },
                "mine": {"entry": "selftest", "outputs": ["mine.json"]},
                "summary_stats": {"resources": {"mem": "2G"}},
            },
        },
    )
    config = load_config(path)
    types = job_types_at(config)
    assert types.names() == ["diff_registration", "file_stats", "merge_splits", "mine"]
    assert types.get("selftest") is None and types.get("summary_stats") is None  # not offered
    registration = types.get("diff_registration")
    assert registration is not None and registration.help == "registration, our way"
    assert registration.resources == Resources(mem="16G")  # a field given replaces the declared
    assert registration.max_resources == Resources(time="12:00:00", mem="64G", cpus=8)
    assert registration.splittable and "stack" in registration.options  # the rest as declared
    on_big = types.get("diff_registration", "big")
    assert on_big is not None and on_big.resources == Resources(mem="16G", cpus=4)
    assert on_big.max_resources == Resources(time="12:00:00", mem="1T", cpus=8)
    mine = types.get("mine")
    assert mine is not None and mine.entry == "selftest" and mine.outputs == ["mine.json"]
    assert set(mine.options) == {"sleep_seconds", "hold_mb", "exit_code"}  # as selftest declares

    again = load_config(write_config(config, tmp_path / "saved.yaml"))
    assert job_types_at(again).listing("big") == types.listing("big")  # saved as given

    listed = json.loads(
        CliRunner().invoke(cli, ["--config", str(path), "job-types", "--json"]).output
    )
    assert list(listed) == types.names()
    assert listed["diff_registration"]["clusters"] == {
        "local": {
            "resources": {"time": "01:00:00", "mem": "16G", "cpus": 1},
            "max_resources": {"time": "12:00:00", "mem": "64G", "cpus": 8},
        },
        "big": {
            "resources": {"time": "02:00:00", "mem": "16G", "cpus": 4},
            "max_resources": {"time": "12:00:00", "mem": "1T", "cpus": 8},
        },
    }


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"offered_job_types": ["file_stats", "nope"]}, "offered_job_types: no job type nope"),
        (
            {"offered_job_types": ["diff_registration"]},
            "job type diff_registration: merge_with 'merge_splits' is not an offered job type",
        ),
    ],
)
def test_offering_what_is_not_there_is_one_line(
    tmp_path: Path, settings: dict[str, object], problem: str
) -> None:
    path = config_file(tmp_path, settings)
    listing = CliRunner().invoke(cli, ["--config", str(path), "job-types"])
    assert listing.exit_code == 2 and listing.output.startswith(f"error: {problem}")
    assert listing.output.count("\n") == 1


def test_resources_for_a_cluster_not_configured_are_refused(tmp_path: Path) -> None:
    path = config_file(
        tmp_path, {"job_types": {"file_stats": {"clusters": {"nowhere": {"resources": {}}}}}}
    )
    with pytest.raises(ConfigError, match="job type file_stats: no cluster nowhere is configured"):
        load_config(path)


OLD_STYLE = """
job_types:
  diff_registration:
    entry: diff_registration
    help: rigid registration of an imaging stack by phase correlation
    splittable: true
    outputs: ["registration_{split_idx}.h5"]
    merge_with: merge_splits
    options:
      stack: {type: str, default: raw/stack.h5, help: "the HDF5 stack, frames x H x W"}
      reference: {type: str, default: "", help: "HDF5 file with the reference frame"}
    resources: {time: "01:00:00", mem: 8G, cpus: 1}
  merge_splits:
    entry: merge_splits
    outputs: [registration.h5]
  legacy:
    entry: legacy
    help: code that declares no interface
    outputs: [legacy.txt]
    options:
      n: {type: int, default: 2}
    resources: {time: "00:30:00"}
"""


def test_a_config_that_spells_out_whole_job_types_still_works(
    tmp_path: Path, db: Database, config: Config
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(committed_pipelines().parent, repo)
    (repo / "pipelines" / "legacy.py").write_text("def run(*args):\n    return 0\n")
    commit(repo / "pipelines", "legacy code, no INTERFACE")
    settings = yaml.safe_load(OLD_STYLE)
    settings["watchdog"] = {"pipelines_dir": str(repo / "pipelines")}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(settings))
    types = job_types_at(load_config(path))
    legacy = types.get("legacy")
    assert legacy is not None and legacy.entry == "legacy" and legacy.outputs == ["legacy.txt"]
    assert legacy.options["n"].default == 2 and legacy.resources == Resources(time="00:30:00")
    registration = types.get("diff_registration")
    assert registration is not None and set(registration.options) == {"stack", "reference"}
    assert registration.help == "rigid registration of an imaging stack by phase correlation"
    assert "legacy" in types.names() and "file_stats" in types.names()

    cfg = job_config(config, tmp_path / "scratch").model_copy(
        update={
            "job_types": load_config(path).job_types,
            "watchdog": watchdog(tmp_path, pipelines_dir=repo / "pipelines"),
        }
    )
    dataset_with_files(db, cfg, tmp_path / "data")
    job = submit_job(db, cfg, request("legacy", n="5"))
    assert job["job_options"] == {"n": 5}


def test_without_a_config_file_local_and_the_shipped_job_types(isolated_home: Path) -> None:
    runner = CliRunner()
    clusters = json.loads(runner.invoke(cli, ["clusters", "--json"]).output)
    assert list(clusters) == ["local"]
    assert clusters["local"]["type"] == "local" and clusters["local"]["scheduler"] == "process"
    assert clusters["local"]["scratch"] == str(isolated_home / ".local/share/labctl/scratch")
    types = json.loads(runner.invoke(cli, ["job-types", "--json"]).output)
    assert sorted(types) == shipped_job_types()  # every module of pipelines/ declares itself
    assert types["file_stats"]["clusters"]["local"]["resources"]["mem"] == "1G"
    table = runner.invoke(cli, ["job-types"])
    assert table.exit_code == 0 and f"{len(types)} job type(s)" in table.output


def test_a_newcomer_logs_submits_and_runs_a_job_without_a_config(
    isolated_home: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("one\ntwo\n")
    runner = CliRunner()
    logged = runner.invoke(cli, ["log", DATASET, "--user", "newcomer", "--raw-path", str(raw)])
    assert logged.exit_code == 0, logged.output
    submitted = runner.invoke(
        cli,
        ["submit", DATASET, "--cluster", "local", "--job-type", "file_stats", "--rawfile",
         "a.txt", "--allow-dirty", "--json"],
    )  # fmt: skip
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.output)["job_id"]
    deadline = time.monotonic() + 60
    while (job := json.loads(runner.invoke(cli, ["status", job_id, "--json"]).output))[
        "status"
    ] not in ("completed", "failed"):
        assert runner.invoke(cli, ["watchdog", "tick"]).exit_code == 0
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["status"] == "completed", job.get("failure")
    stats = json.loads((raw / "results" / job_id / "file_stats.json").read_text())
    assert stats["files"]["raw/a.txt"]["lines"] == 2
