"""The Python API on both backends."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from labctl import api, dbjob, dblog, dbquery, dbqueue_job
from labctl.catalog.experiments import log_entries
from labctl.config import Config, DatabaseConfig
from labctl.db import Database, connect
from labctl.errors import DuplicateError, ValidationError
from tests.jobfixtures import DATASET, local_jobs


@pytest.fixture(autouse=True)
def closed_after() -> Iterator[None]:
    """No test leaves the connections the API keeps open."""
    yield
    api.close_connections()


@pytest.fixture
def logged(config: Config) -> Config:
    dblog(
        "20211215_093527",
        {"runclass.id": "ARB-diff"},
        user="charlie",
        data_raw_path="/nfs/a",
        n_planes=12,
        config=config,
    )
    dblog(
        "20211215_141002",
        {"runclass": {"id": "ARB-diff"}},
        user="charlie",
        data_raw_path="/nfs/b",
        config=config,
    )
    dblog(
        "20220103_110045",
        user="dana",
        data_raw_path="/nfs/c",
        n_planes=20,
        runclass={"id": "spontaneous"},
        config=config,
    )
    return config


def test_dbquery_returns_the_requested_columns(logged: Config) -> None:
    df = dbquery(
        ["data_raw_path", "runclass.id"],
        filter={"user": "charlie", "runclass.id": "ARB-diff"},
        config=logged,
    )
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["dataset", "data_raw_path", "runclass.id"]
    assert df.to_dict("records") == [
        {"dataset": "20211215_093527", "data_raw_path": "/nfs/a", "runclass.id": "ARB-diff"},
        {"dataset": "20211215_141002", "data_raw_path": "/nfs/b", "runclass.id": "ARB-diff"},
    ]


def test_dbquery_operators_sort_limit_and_all_fields(logged: Config) -> None:
    df = dbquery(
        ["dataset", "n_planes"],
        filter={"n_planes": {"$gte": 10}},
        sort=["-n_planes"],
        config=logged,
    )
    assert df["dataset"].tolist() == ["20220103_110045", "20211215_093527"]
    everything = dbquery(config=logged, limit=2)
    assert len(everything) == 2
    assert {"dataset", "user", "data_raw_path", "runclass.id", "acquired_at"} <= set(everything)
    empty = dbquery(["user"], filter={"user": "nobody"}, config=logged)
    assert list(empty.columns) == ["dataset", "user"] and empty.empty


def test_dbquery_names_the_field_a_typo_meant(logged: Config) -> None:
    with pytest.raises(ValidationError, match="field n_plane; did you mean n_planes"):
        dbquery(["n_plane"], config=logged)
    with pytest.raises(ValidationError, match="no entry has a field usr; did you mean user"):
        dbquery(["dataset"], filter={"usr": "dana"}, config=logged)


def test_dbquery_reads_a_config_path(logged: Config, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "database": {
                    "uri": logged.database.uri,
                    "path": str(logged.database.path),
                    "name": logged.database.name,
                }
            }
        )
    )
    assert dbquery(["user"], filter={"user": "dana"}, config=str(path))["user"].tolist() == ["dana"]


def test_dblog_validates_and_refuses_duplicates(logged: Config) -> None:
    with pytest.raises(DuplicateError):
        dblog("20211215_093527", user="x", data_raw_path="/x", config=logged)
    with pytest.raises(ValidationError, match="missing required"):
        dblog("20230101_000000", user="x", config=logged)
    with pytest.raises(ValidationError, match="not allowed"):
        dbquery(["user"], filter={"user": {"$where": "1"}}, config=logged)
    updated = dblog("20211215_093527", {"comment": "redo"}, update=True, config=logged)
    assert updated["comment"] == "redo" and updated["n_planes"] == 12


def test_fifty_jobs_queued_over_one_connection_that_sees_other_writes(
    config: Config, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = local_jobs(config, db, tmp_path)
    opened: list[DatabaseConfig] = []

    def counted(database: DatabaseConfig) -> Database:
        opened.append(database)
        return connect(database)

    monkeypatch.setattr(api, "connect", counted)
    ids = [
        dbqueue_job(
            DATASET, "local", "file_stats", datarawfiles=["fl_a.roli"], force=True, config=cfg
        )
        for _ in range(50)
    ]
    assert len(opened) == 1 and len(set(ids)) == 50
    assert db.queue.count({"job_id": {"$in": ids}}) == 50  # another connection sees them all
    assert {dbjob(job_id, config=cfg)["status"] for job_id in ids} == {"queued"}
    log_entries(db, cfg, [("20220103_110045", {"user": "dana", "data_raw_path": "/nfs/c"})])
    assert dbquery(["user"], filter={"user": "dana"}, config=cfg)["user"].tolist() == ["dana"]
    assert len(opened) == 1
    api.close_connections()
    assert dbjob(ids[0], config=cfg)["job_id"] == ids[0]
    assert len(opened) == 2  # closed, then opened again when needed


def test_other_threads_use_connections_of_their_own(logged: Config) -> None:
    """The embedded store's SQLite files may not change threads: each thread opens its own."""

    def count_then_close(_: int) -> int:
        found = len(dbquery(["user"], config=logged))
        api.close_connections()
        return found

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(count_then_close, range(4))) == [3, 3, 3, 3]
    assert len(dbquery(["user"], config=logged)) == 3
