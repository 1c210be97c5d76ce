"""`labctl doctor`: each check alone (real database backends, real testbed sshd), then the CLI."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from labctl.cli import cli
from labctl.config import ClusterConfig, Config, DatabaseConfig, WatchdogConfig
from labctl.db import Database
from labctl.install.cronlog import append
from labctl.install.doctor import (
    Check,
    check_cluster,
    check_config,
    check_database,
    check_heartbeat,
    check_local_rsync,
    check_pipelines,
    check_watchdog_logs,
    run_checks,
)
from labctl.install.waiting import stale_after
from labctl.stages.heartbeat import beat, latest
from tests.test_cron_live import saved_crontab
from tests.testbed import hpc_cluster, needs_testbed, remote_scratch

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)

HOST = socket.gethostname()


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def test_heartbeat_wants_every_stage_recent() -> None:
    assert not check_heartbeat([], NOW).ok
    beats = [
        {"stage": "scan", "host": "a", "at": ago(30)},
        {"stage": "jobs", "host": "a", "at": ago(400)},
        {"stage": "jobs", "host": "b", "at": ago(50)},  # another host ran it lately
    ]
    check = check_heartbeat(beats, NOW)
    assert check.ok and check.detail == "jobs 50 s ago, scan 30 s ago"
    stale = check_heartbeat([*beats, {"stage": "transfers", "host": "a", "at": ago(301)}], NOW)
    assert not stale.ok
    assert stale.detail == "older than 5 min: jobs 50 s ago, scan 30 s ago, transfers 301 s ago"
    assert "cron" in stale.hint


def test_heartbeat_allows_two_cron_intervals() -> None:
    beats = [{"stage": "scan", "host": "a", "at": ago(1000)}]
    assert check_heartbeat(beats, NOW, stale_after(10)).ok  # cron runs it every 10 minutes
    assert not check_heartbeat(beats, NOW, stale_after(1)).ok


def test_watchdog_logs_show_a_failing_or_silent_crontab_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    now = dt.datetime.now(dt.UTC)
    append(logs / "scan.log", [b"scan: nothing to do\n", b"  a note\n"], 10**6, 3)
    failure = b"ModuleNotFoundError: __path__ attribute not found on 'labctl.install'\n"
    append(logs / "transfers.log", [b"Traceback (most recent call last):\n", failure], 10**6, 3)
    (logs / "jobs.lock").touch()  # flock ran the line; nothing reached the log
    check = check_watchdog_logs(logs, 1, now)
    assert not check.ok
    assert check.detail == (
        "transfers: its last run ended with 'ModuleNotFoundError: __path__ attribute not found "
        "on 'labctl.install''; jobs: cron ran its line but it wrote no log"
    )
    assert "labctl cron show" in check.hint

    append(logs / "transfers.log", [b"transfers: nothing to do\n"], 10**6, 3)
    append(logs / "jobs.log", [b"jobs: tracked 1\n"], 10**6, 3)
    now = dt.datetime.now(dt.UTC)
    assert check_watchdog_logs(logs, 1, now).ok
    later = now + dt.timedelta(minutes=6)
    assert check_watchdog_logs(logs, 1, later).detail.startswith("scan: last log 6 min ago; ")
    assert check_watchdog_logs(logs, 5, later).ok  # within two intervals of 5 minutes


def test_watchdog_logs_before_and_long_after_installing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()  # as `labctl cron install` leaves it
    now = dt.datetime.now(dt.UTC)
    assert check_watchdog_logs(logs, 1, now).ok  # cron's first run is still to come
    never = check_watchdog_logs(logs, 1, now + dt.timedelta(minutes=10))
    assert not never.ok and never.detail.startswith("scan: cron has never run its line; ")


def test_rsync_on_path_and_on_crons_path(tmp_path: Path) -> None:
    empty, elsewhere = tmp_path / "empty", tmp_path / "opt"
    empty.mkdir()
    elsewhere.mkdir()
    (elsewhere / "rsync").symlink_to(shutil.which("rsync") or "/usr/bin/rsync")
    missing = check_local_rsync(path=str(empty))
    assert (missing.ok, missing.detail, missing.hint) == (
        False, "rsync is not on PATH", "apt install rsync"
    )  # fmt: skip
    not_for_cron = check_local_rsync(path=str(elsewhere), cron_path=str(empty))
    assert not not_for_cron.ok
    assert not_for_cron.detail == f"{elsewhere}/rsync is not on cron's PATH ({empty})"
    assert f"'PATH={empty}:{elsewhere}' above the labctl block" in not_for_cron.hint
    assert check_local_rsync().ok  # this machine: /usr/bin/rsync


def test_pipelines_check(tmp_path: Path) -> None:
    gone = Config(watchdog=WatchdogConfig(pipelines_dir=tmp_path / "none"))
    assert check_pipelines(gone) == Check(
        "pipelines", False, f"{tmp_path / 'none'} does not exist", "fix watchdog.pipelines_dir"
    )
    assert check_pipelines(Config()).ok  # this checkout's pipelines/


def test_heartbeats_as_the_watchdog_records_them(db: Database) -> None:
    for stage in ("scan", "transfers", "jobs"):
        beat(db, stage, {"errors": 0}, "alice", HOST)
    check = check_heartbeat(latest(db).items, dt.datetime.now(dt.UTC))
    assert check.ok, check


def test_database_check_on_both_backends(db_config: DatabaseConfig) -> None:
    check, db = check_database(db_config)
    assert db is not None
    db.close()
    assert check.ok, check
    if db_config.embedded:
        assert check.detail == f"embedded store {db_config.path}"
    else:  # SecantusDB answers `hello` as a one-member replica set
        assert "replica set secantus, primary 127.0.0.1:" in check.detail
        assert check.detail.endswith("1 member(s)")


def test_database_check_fails_for_another_replica_set(mongo_uri: str) -> None:
    uri = mongo_uri.replace("replicaSet=secantus", "replicaSet=rs0")
    check, db = check_database(DatabaseConfig(uri=uri, timeout_seconds=0.5))
    assert (check.ok, db) == (False, None)
    assert "cannot reach MongoDB" in check.detail
    assert "check database.uri" in check.hint


def test_database_check_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        config = DatabaseConfig(uri=f"mongodb://127.0.0.1:{port}/", timeout_seconds=0.5)
        check, db = check_database(config)
    assert (check.ok, db) == (False, None)
    assert check.detail == f"cannot reach MongoDB at 127.0.0.1:{port} within 0.5 s"


def test_config_check_and_nothing_after_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("clusters:\n  x: {scratch: /s, colour: red}\n")
    check, config = check_config(bad)
    assert (check.ok, config) == (False, None)
    assert check.detail == f"{bad}: unknown key 'clusters.x.colour'"
    assert [c.name for c in run_checks(bad)] == ["config"]


def test_local_cluster_checks(tmp_path: Path) -> None:
    config = ClusterConfig(type="local", scheduler="process", scratch=str(tmp_path / "scratch"))
    checks = {c.name: c for c in check_cluster("here", config)}
    assert list(checks) == ["here: scratch writable", "here: rsync"]
    assert all(c.ok for c in checks.values()), checks
    assert checks["here: scratch writable"].detail == str(tmp_path / "scratch")


@pytest.fixture
def testbed_cluster() -> Iterator[ClusterConfig]:
    with remote_scratch() as scratch:
        yield hpc_cluster(scratch + "/sub/dir")


@needs_testbed
@pytest.mark.testbed
def test_cluster_checks_on_the_testbed(testbed_cluster: ClusterConfig) -> None:
    checks = list(check_cluster("hpc", testbed_cluster))
    assert [c.name for c in checks] == [
        "hpc: host key",
        "hpc: session",
        "hpc: ssh login",
        "hpc: sbatch/squeue",
        "hpc: scratch writable",
        "hpc: rsync",
    ]
    assert all(c.ok for c in checks), checks


def checks_of(config: ClusterConfig, **update: object) -> dict[str, Check]:
    return {c.name: c for c in check_cluster("hpc", config.model_copy(update=update))}


@needs_testbed
@pytest.mark.testbed
def test_cluster_checks_name_what_is_wrong(testbed_cluster: ClusterConfig, tmp_path: Path) -> None:
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    wrong_key = checks_of(testbed_cluster, key_file=key)
    assert [(name, c.ok) for name, c in wrong_key.items()] == [
        ("hpc: host key", True),
        ("hpc: session", True),  # a key cluster's session opens by itself
        ("hpc: ssh login", False),  # and nothing more to check without a login
    ]
    assert "rejected key" in wrong_key["hpc: ssh login"].detail
    assert "authorized_keys" in wrong_key["hpc: ssh login"].hint

    (tmp_path / "known_hosts").write_text("")
    unknown = checks_of(testbed_cluster, known_hosts=tmp_path / "known_hosts")
    assert [c.ok for c in unknown.values()] == [False, True, False]
    assert "ssh-keyscan -p 2222 127.0.0.1" in unknown["hpc: host key"].hint
    assert "is not in" in unknown["hpc: ssh login"].detail

    unreachable = checks_of(testbed_cluster, port=1)["hpc: ssh login"]
    assert not unreachable.ok and "Connection refused" in unreachable.detail

    read_only = checks_of(testbed_cluster, scratch="/proc/x")
    assert [c.ok for c in read_only.values()] == [True, True, True, True, False, True]
    assert "create /proc/x on the cluster" in read_only["hpc: scratch writable"].hint


def test_doctor_cli_exit_code_and_json(tmp_path: Path, isolated_home: Path) -> None:
    with saved_crontab():
        subprocess.run(["crontab", "-r"], capture_output=True)
        run_doctor_cli(tmp_path)
        without = CliRunner().invoke(cli, ["doctor"])  # no config file yet: setup, not cron
        wanted = isolated_home / ".config" / "labctl" / "config.yaml"
        assert f"    fix: run 'labctl setup': it writes {wanted} and installs the block" in (
            without.output.splitlines()
        )


def run_doctor_cli(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"path": str(tmp_path / "db")}}))
    result = CliRunner().invoke(cli, ["--config", str(path), "doctor"])
    assert result.exit_code == 1  # no crontab block, no heartbeat
    lines = result.output.splitlines()
    assert lines[0] == "✓ config: 1 cluster(s)"  # `local`, there without a clusters section
    assert "✗ crontab: no labctl block in the crontab" in lines
    assert "    fix: run 'labctl cron install'" in lines

    as_json = CliRunner().invoke(cli, ["--config", str(path), "doctor", "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"]] == [
        "config", "database", "rsync (local)", "local: scratch writable", "local: rsync",
        "pipelines", "crontab", "watchdog heartbeat", "leftovers (watchdog state)",
        "local: leftovers",
    ]  # fmt: skip
    assert set(report["checks"][0]) == {"name", "ok", "detail", "hint"}

    broken = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.yaml"), "doctor"])
    assert broken.exit_code == 1
    assert broken.output.startswith(f"✗ config: cannot read config {tmp_path / 'none.yaml'}")
