"""Members' watchdogs through the labctl service (issue 11): the real app under uvicorn over each
backend, two members' machines with a token and no database, and their real watchdogs (the
`labctl watchdog` command, the local cluster, real rsync) running their jobs to completed.

A watchdog acts for its token's owner whatever its config claims, and only on their jobs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from labctl.access.lab import Lab
from labctl.access.service import ServiceLab, send
from labctl.access.servicedb import ServiceStore
from labctl.cli import cli
from labctl.config import ClusterConfig, Config, DatabaseConfig
from labctl.db import Database, connect
from labctl.errors import NotFoundError
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest
from labctl.jobs.work import Selection, Work
from labctl.model.job import JobRef, Progress
from labctl.model.states import JobState
from labctl.private import write_private
from labctl.settings import ServiceConfig
from labctl.stages.ops import Find, RecordResult, Update
from labctl.users import create_token
from tests.jobfixtures import DATASET, job_config
from tests.testbed import (
    hpc_cluster,
    hpc_config,
    needs_testbed,
    remote_scratch,
    slurm_jobs_named,
    write_config,
)
from tests.webfixtures import seed, served, web_config

JOB = JobRequest(
    dataset=DATASET, compute_cluster="local", job_type="file_stats", datarawfiles=("fl_a.roli",)
)


@dataclass
class Lab2:
    """The lab server's store and service, and two members' machines."""

    db: Database
    url: str
    root: Path
    tokens: dict[str, str]

    def machine(self, member: str, claims: str, hpc_scratch: str | None = None) -> Path:
        """`member`'s config: the service, their token, the local cluster (and with
        `hpc_scratch`, the testbed's SLURM cluster `hpc`); `user: claims`."""
        home = self.root / f"machine-{member}"
        token_file = home / "token"
        home.mkdir(exist_ok=True)
        write_private(token_file, self.tokens[member] + "\n")
        base = Config(user=claims, service=ServiceConfig(url=self.url, token_file=token_file))
        config = (
            job_config(base, home / "scratch")
            if hpc_scratch is None
            else hpc_config(base, hpc_scratch, home)
        )
        return write_config(config, home / "config.yaml")

    def lab(self, member: str) -> Lab:
        return ServiceLab(ServiceConfig(url=self.url), self.tokens[member])


@contextmanager
def lab_server(db_config: DatabaseConfig, root: Path, **clusters: ClusterConfig) -> Iterator[Lab2]:
    """The lab server's service over `db_config`, knowing the local cluster and `clusters`."""
    config = web_config(Config(user="labserver", database=db_config), root / "server")
    config = config.model_copy(update={"clusters": {**config.clusters, **clusters}})
    with connect(db_config) as db:
        seed(db, config, root / "server")
        with served(config) as url:
            tokens = {u: create_token(db, u) for u in ("alice", "bob")}
            yield Lab2(db, url, root, tokens)


@pytest.fixture
def lab(db_config: DatabaseConfig, tmp_path: Path) -> Iterator[Lab2]:
    with lab_server(db_config, tmp_path) as served_lab:
        yield served_lab


def tick(config: Path) -> str:
    done = CliRunner().invoke(cli, ["--config", str(config), "watchdog", "tick"])
    assert done.exit_code == 0, (done.stdout, done.stderr)
    return done.stdout


def tick_until_finished(lab: Lab2, config: Path, job_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    runs = 0
    while get_job(lab.db, job_id)["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, get_job(lab.db, job_id)
        tick(config)
        runs += 1
        time.sleep(0.2)
    return runs


def test_each_member_s_watchdog_runs_their_jobs_alone(lab: Lab2, isolated_home: Path) -> None:
    alices = lab.lab("alice").submit(JOB).job_id
    bobs = lab.lab("bob").submit(JOB, force=True).job_id
    bob = lab.machine("bob", claims="alice")  # the config's word changes nothing
    tick_until_finished(lab, bob, bobs)

    assert get_job(lab.db, bobs)["status"] == "completed", get_job(lab.db, bobs)
    untouched = get_job(lab.db, alices)
    assert untouched["status"] == "queued" and len(untouched["history"]) == 1
    assert untouched["owner"] is None and untouched["transfer"] is None
    results = lab.db.data.find_one({"dataset": DATASET})["results"]
    assert list(results) == [bobs] and results[bobs]["files"]
    beats = lab.db.meta.find({"kind": "heartbeat"})
    assert {b["user"] for b in beats} == {"bob"} and len(beats) == 3

    tick_until_finished(lab, lab.machine("alice", claims="alice"), alices)
    assert get_job(lab.db, alices)["status"] == "completed"
    assert set(lab.db.data.find_one({"dataset": DATASET})["results"]) == {alices, bobs}
    assert {b["user"] for b in lab.db.meta.find({"kind": "heartbeat"})} == {"alice", "bob"}
    # Neither machine opened a store of its own: the default one was never made.
    assert not (isolated_home / ".local" / "share" / "labctl" / "db").exists()


def test_a_forged_watchdog_cannot_reach_another_s_job(lab: Lab2) -> None:
    """bob's token used as a watchdog would, claiming to be alice and aiming at her job."""
    alices = lab.lab("alice").submit(JOB).job_id
    store = ServiceStore(ServiceConfig(url=lab.url), lab.tokens["bob"], member="alice")
    assert store.run(Find(selection=Selection(work=Work.NEW))).jobs == []
    queued = JobRef(job_id=alices, status=JobState.QUEUED)
    with pytest.raises(NotFoundError, match="bob has no job"):
        store.run(Update(job=queued, progress=Progress(waiting="x")))
    retrieving = queued.model_copy(update={"status": JobState.RETRIEVING})
    with pytest.raises(NotFoundError, match="bob has no job"):
        store.run(RecordResult(job=retrieving, dir="/tmp/forged", files=[]))
    old_route = json.dumps({"collection": "queue", "op": "find", "args": {"filter": {}}})
    with pytest.raises(NotFoundError):
        send(ServiceConfig(url=lab.url), "POST", "/watchdog/db", old_route.encode(), store.token)
    assert "results" not in lab.db.data.find_one({"dataset": DATASET})
    assert get_job(lab.db, alices)["waiting"] is None


def test_a_refused_token_stops_the_watchdog_in_one_line(lab: Lab2) -> None:
    bob = lab.machine("bob", claims="bob")
    create_token(lab.db, "bob")  # replaces (revokes) the one on bob's machine
    done = CliRunner().invoke(cli, ["--config", str(bob), "watchdog", "tick"])
    assert done.exit_code != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the token" in lines[0], done.stderr


def test_doctor_checks_the_service_and_the_member_s_own_watchdog(lab: Lab2) -> None:
    bob, alice = lab.machine("bob", claims="alice"), lab.machine("alice", claims="alice")
    tick(alice)  # alice's watchdog beats; bob's has never run

    def doctor(config: Path) -> str:
        return CliRunner().invoke(cli, ["--config", str(config), "doctor"]).stdout

    before = doctor(bob)
    assert f"✓ service: the labctl service at {lab.url}, as bob" in before
    assert "✗ watchdog heartbeat: the watchdog has never run" in before
    assert "database" not in before  # no store of its own to check
    tick(bob)
    assert re.search(r"✓ watchdog heartbeat: jobs \d+ s ago, scan \d+ s ago", doctor(bob))
    create_token(lab.db, "bob")
    refused = doctor(bob)
    assert "✗ service: the labctl service" in refused and "refused the token" in refused


@pytest.mark.testbed
@needs_testbed
def test_a_member_s_watchdog_runs_a_slurm_job_through_the_service(tmp_path: Path) -> None:
    """The real SLURM over the testbed's sshd, driven by bob's watchdog through the service."""
    on_hpc = JOB.model_copy(update={"compute_cluster": "hpc", "datafiles": ("phase.h5",)})
    store = DatabaseConfig(uri="embedded", path=tmp_path / "store")
    with remote_scratch() as scratch, lab_server(store, tmp_path, hpc=hpc_cluster(scratch)) as lab:
        bobs = lab.lab("bob").submit(on_hpc).job_id
        alices = lab.lab("alice").submit(on_hpc, force=True).job_id
        tick_until_finished(lab, lab.machine("bob", claims="alice", hpc_scratch=scratch), bobs, 120)
        job = get_job(lab.db, bobs)
        assert job["status"] == "completed", job
        assert [h["state"] for h in job["history"]][-2:] == ["retrieving", "completed"]
        assert job["results"] and all(Path(r["path"]).is_file() for r in job["results"])
        slurm = slurm_jobs_named([f"labctl-{bobs}", f"labctl-{alices}"])
        assert {e.job_id for e in slurm[f"labctl-{bobs}"]} == {job["scheduler"]["job_id"]}
        assert not slurm.get(f"labctl-{alices}")  # alice's job is her watchdog's alone
        assert get_job(lab.db, alices)["status"] == "queued"
