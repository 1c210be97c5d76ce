"""The Python API on both backends."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from labctl import dblog, dbquery
from labctl.config import Config
from labctl.errors import DuplicateError, ValidationError


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
    assert list(df.columns) == ["data_raw_path", "runclass.id"]
    assert df.to_dict("records") == [
        {"data_raw_path": "/nfs/a", "runclass.id": "ARB-diff"},
        {"data_raw_path": "/nfs/b", "runclass.id": "ARB-diff"},
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
    assert list(empty.columns) == ["user"] and empty.empty


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
