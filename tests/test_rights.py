"""Who may change what: experiments' steering fields are their owner's, results the watchdog's,
and each member's watchdog acts for that member alone (issue 11's confused deputy).

Through the REST API, where who someone is comes from their token; on both database backends.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from labctl.catalog.experiments import get_entry
from labctl.cli import cli
from labctl.config import Config
from labctl.db import Database
from labctl.jobs.queue import get_job
from labctl.model.states import TERMINAL
from labctl.stages.loop import reap_children, run_stages
from labctl.stages.seam import LocalStore
from labctl.users import create_token
from labctl.web import create_app
from tests.jobfixtures import DATASET
from tests.testbed import write_config

V1 = "/api/v1"
MINE = "20230101_090000"  # alice's own experiment


@pytest.fixture
def client(cfg: Config) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


@pytest.fixture
def auth(db: Database) -> dict[str, dict[str, str]]:
    return {u: {"Authorization": f"Bearer {create_token(db, u)}"} for u in ("alice", "bob", "root")}


@pytest.fixture
def alices(client: TestClient, auth: Any, tmp_path: Path) -> str:
    """An experiment alice logged as hers, with real files."""
    raw = tmp_path / "alice-raw"
    raw.mkdir()
    (raw / "a.dat").write_bytes(b"x" * 100)
    body = {"dataset": MINE, "fields": {"user": "alice", "data_raw_path": str(raw)}}
    made = client.post(f"{V1}/experiments", json=body, headers=auth["alice"])
    assert made.status_code == 201, made.text
    return MINE


def patch(client: TestClient, headers: dict[str, str], dataset: str, **fields: Any) -> Any:
    return client.patch(f"{V1}/experiments/{dataset}", json={"fields": fields}, headers=headers)


def test_only_the_owner_or_an_admin_moves_an_experiment_s_data(
    client: TestClient, auth: Any, alices: str, db: Database
) -> None:
    before = get_entry(db, alices)
    for field, value in [
        ("data_raw_path", "/home/alice/.config/labctl"),
        ("user", "bob"),
        ("data_complete", True),
    ]:
        refused = patch(client, auth["bob"], alices, **{field: value})
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"] == (
            f"experiment {alices} is alice's: only they or an admin may set {field}"
        )
    assert get_entry(db, alices) == before
    assert patch(client, auth["bob"], alices, quality=3).status_code == 200  # a free field
    assert patch(client, auth["alice"], alices, data_path="/nfs/alice/p").status_code == 200
    assert patch(client, auth["root"], alices, data_complete=True).status_code == 200
    entry = get_entry(db, alices)
    assert (entry["quality"], entry["data_path"], entry["data_complete"]) == (
        3,
        "/nfs/alice/p",
        True,
    )


def test_results_are_the_watchdog_s_alone(
    client: TestClient, auth: Any, alices: str, cfg: Config, tmp_path: Path
) -> None:
    for who in ("alice", "root"):
        forged = patch(client, auth[who], alices, **{"results.j1": {"dir": "/tmp"}})
        assert forged.status_code == 422
        assert forged.json()["detail"] == "results.j1: results are recorded by the watchdog only"
    path = write_config(cfg, tmp_path / "config.yaml")
    cli_forged = CliRunner().invoke(
        cli, ["--config", str(path), "log", alices, "--update", "--set", "results.j1=x"]
    )
    assert cli_forged.exit_code == 2
    assert cli_forged.output == "error: results.j1: results are recorded by the watchdog only\n"


def test_a_member_logs_only_experiments_of_their_own(client: TestClient, auth: Any) -> None:
    body = {"dataset": "20230101_100000", "fields": {"user": "alice", "data_raw_path": "/x"}}
    refused = client.post(f"{V1}/experiments", json=body, headers=auth["bob"])
    assert refused.status_code == 403
    assert client.get(f"{V1}/experiments/20230101_100000", headers=auth["bob"]).status_code == 404
    assert client.post(f"{V1}/experiments", json=body, headers=auth["root"]).status_code == 201


def _run_until_final(db: Database, cfg: Config, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (job := get_job(db, job_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, job["history"]
        run_stages(LocalStore.of(db, cfg), cfg, ["scan", "transfers", "jobs"])
        reap_children()
        time.sleep(0.2)
    return job


def test_each_watchdog_takes_only_its_member_s_jobs(
    client: TestClient, auth: Any, alices: str, cfg: Config, db: Database
) -> None:
    """bob may analyse alice's data, with his own watchdog and rights; hers never runs his job."""
    job = {"dataset": alices, "compute_cluster": "local", "job_type": "file_stats"}
    bobs = client.post(f"{V1}/jobs", json={**job, "datarawfiles": ["a.dat"]}, headers=auth["bob"])
    assert bobs.status_code == 201, bobs.text
    mine = {**job, "datarawfiles": ["a.dat"], "job_options": {"sleep_seconds": "0.1"}}
    hers = client.post(f"{V1}/jobs", json=mine, headers=auth["alice"])
    assert hers.status_code == 201, hers.text
    hers_id, bobs_id = hers.json()["job_id"], bobs.json()["job_id"]
    as_alice = cfg.model_copy(update={"user": "alice"})
    assert _run_until_final(db, as_alice, hers_id)["status"] == "completed"
    untouched = get_job(db, bobs_id)
    assert untouched["status"] == "queued" and untouched["owner"] is None
    assert [h["state"] for h in untouched["history"]] == ["queued"]
    done = _run_until_final(db, cfg.model_copy(update={"user": "bob"}), bobs_id)
    assert done["status"] == "completed"


def test_results_come_home_private_to_the_member_and_their_group(
    client: TestClient, auth: Any, cfg: Config, db: Database
) -> None:
    job = {"dataset": DATASET, "compute_cluster": "local", "job_type": "file_stats"}
    made = client.post(
        f"{V1}/jobs", json={**job, "datarawfiles": ["fl_a.roli"]}, headers=auth["alice"]
    )
    done = _run_until_final(db, cfg.model_copy(update={"user": "alice"}), made.json()["job_id"])
    assert done["status"] == "completed", done["failure"]
    folder = Path(done["result_dir"])
    for path in [folder, *folder.iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, f"{path} is {oct(mode)}"
