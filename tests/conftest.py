"""Shared fixtures: an isolated home for every test, and both database backends; and which tests
share the testbed.

The MongoDB backend runs through the real pymongo driver over TCP against SecantusDB, a
wire-compatible server started here once per test session (no real mongod can be installed on
these machines). Every test that takes `db` or `config` runs against both backends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.compute.transport import Sessions
from labctl.compute.transport.target import short_dir
from labctl.config import Config, DatabaseConfig
from labctl.db import Database, connect
from tests.mongoserver import ServerError, secantus

# The files whose tests share state beyond their own folders: the testbed's sshd (whose logs
# count logins), SLURM and slurmdbd, and this account's crontab. They are all marked `testbed`,
# so that scripts/test.sh runs them in one pytest process, one at a time, beside a second
# process for every other test (`-m testbed`, `-m "not testbed"`).
SHARE_THE_TESTBED = {
    "test_cron_live.py",
    "test_doctor.py",
    "test_install.py",
    "test_mfa_testbed.py",
    "test_mount.py",
    "test_outage_testbed.py",
    "test_pipelines_testbed.py",
    "test_resubmit_testbed.py",
    "test_sessions_mfa.py",
    "test_slurm_live.py",
    "test_ssh.py",
    "test_transport.py",
    "test_watchdog_testbed.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SHARE_THE_TESTBED:
            item.add_marker(pytest.mark.testbed)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test reads or writes the real ~/.config or ~/.local/share, and none leaves an SSH
    session (a ControlMaster) of its home running."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "LABCTL_CONFIG",
        "LABCTL_DB_URI",
        "LABCTL_DB_PASSWORD",
        "LABCTL_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    yield home
    sessions = short_dir(home / ".local" / "share" / "labctl" / "ssh")
    if sessions.is_dir():
        Sessions().close_all(sessions)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask 022, under which files made without explicit modes are world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(autouse=True)
def no_mount_left(tmp_path: Path) -> Iterator[None]:
    """No test leaves an sshfs mount under its tmp_path, whatever happened in it: pytest's later
    clean-up of old tmp folders would delete the files of the cluster account through it."""
    yield
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if line.split()[2].startswith("fuse") and point.startswith(f"{tmp_path}/"):
            tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
            subprocess.run([tool, "-u", "-z", point], check=False, capture_output=True)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SecantusDB server for the whole session, addressed as a replica set."""
    try:
        with secantus(tmp_path_factory.mktemp("secantus")) as uri:
            yield uri
    except ServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=["embedded", "mongodb"])
def db_config(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseConfig:
    """The configuration of a fresh, empty database on each backend."""
    if request.param == "embedded":
        return DatabaseConfig(uri="embedded", path=tmp_path / "store")
    uri = request.getfixturevalue("mongo_uri")
    return DatabaseConfig(uri=uri, name=f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def config(db_config: DatabaseConfig) -> Config:
    return Config(user="tester", database=db_config)


@pytest.fixture
def db(db_config: DatabaseConfig) -> Iterator[Database]:
    with connect(db_config) as database:
        yield database


@pytest.fixture
def cfg(config: Config, db: Database, tmp_path: Path) -> Config:
    """The web tests' config over `db` (the local cluster, the pipelines' job types, a typed
    schema), seeded with alice and bob (members), root (admin) and alice's dataset with files."""
    from tests.webfixtures import seed, web_config

    seeded = web_config(config, tmp_path)
    seed(db, seeded, tmp_path)
    return seeded
