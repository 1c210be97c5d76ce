"""The database seam (`labctl.db`), through the same tests on both backends.

Every test that takes `db` or `db_config` runs once on the embedded store and once on MongoDB
(SecantusDB over the wire). Where the backends differ on purpose, the test says so per backend.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from labctl.config import DatabaseConfig
from labctl.db import INDEXES, Database, connect
from labctl.errors import (
    DatabaseError,
    DatabaseUnreachable,
    DuplicateError,
    QueryTimeout,
    ValidationError,
)
from tests.modes import modes, private

T0 = datetime(2021, 12, 15, 9, 35, 27, 123000, tzinfo=UTC)  # BSON keeps milliseconds


def _entries() -> list[dict[str, Any]]:
    """Six `data` entries: three users, two run classes, one hour apart, one with a `note`."""
    users = ["alice", "bob", "carol"]
    return [
        {
            "dataset": (T0 + timedelta(hours=i)).strftime("%Y%m%d_%H%M%S"),
            "user": users[i % 3],
            "runclass": {"id": "ARB" if i % 3 != 1 else "TOR", "n": i},
            "acquired_at": T0 + timedelta(hours=i),
            "value": i * 1.5,
            "tags": ["raw"] if i % 2 else [],
            **({"note": "check focus"} if i == 4 else {}),
        }
        for i in range(6)
    ]


@pytest.fixture
def filled(db: Database) -> Database:
    db.data.insert_many(_entries())
    return db


def _datasets(docs: list[dict[str, Any]]) -> list[str]:
    return [doc["dataset"] for doc in docs]


def _ds(i: int) -> str:
    return (T0 + timedelta(hours=i)).strftime("%Y%m%d_%H%M%S")


# --- queries ---------------------------------------------------------------------------------


def test_insert_and_find_by_nested_dotted_field(filled: Database) -> None:
    found = filled.data.find(
        {"runclass.id": "TOR"}, ["dataset", "runclass.id"], sort=[("dataset", 1)]
    )
    assert found == [
        {"dataset": _ds(1), "runclass": {"id": "TOR"}},
        {"dataset": _ds(4), "runclass": {"id": "TOR"}},
    ]
    nested = {"runclass.id": "ARB", "runclass.n": {"$gte": 3}}
    assert _datasets(filled.data.find(nested, sort=[("dataset", 1)])) == [
        _ds(3),
        _ds(5),
    ]


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"user": {"$in": ["alice", "carol"]}}, [0, 2, 3, 5]),
        ({"runclass.id": {"$in": ["TOR"]}}, [1, 4]),
        ({"user": {"$regex": "^(al|ca)"}}, [0, 2, 3, 5]),
        ({"dataset": {"$regex": "_1[01]"}}, [1, 2]),
        ({"user": {"$ne": "alice"}}, [1, 2, 4, 5]),
        ({"runclass.id": {"$ne": "ARB"}}, [1, 4]),
        ({"note": {"$exists": True}}, [4]),
        ({"note": {"$exists": False}}, [0, 1, 2, 3, 5]),
        ({"runclass.n": {"$exists": True}, "tags": "raw"}, [1, 3, 5]),
        ({"value": {"$gt": 3, "$lt": 7}}, [3, 4]),
    ],
)
def test_filter_operators(filled: Database, filter: dict[str, Any], expected: list[int]) -> None:
    found = filled.data.find(filter, ["dataset"], sort=[("dataset", 1)])
    assert _datasets(found) == [_ds(i) for i in expected]


def test_not_null_through_a_null_parent_matches_as_mongodb_does(db: Database) -> None:
    """`{"a.b": {"$ne": None}}` is false for `a: null` on MongoDB; litemongo alone matched it."""
    docs = [{"k": 1, "a": None}, {"k": 2, "a": {"b": None}}, {"k": 3, "a": {"b": "x"}}, {"k": 4}]
    db["scratch"].insert_many(docs)
    found = db["scratch"].find({"a.b": {"$ne": None}}, ["k"])
    assert [doc["k"] for doc in found] == [3]
    either = {"$or": [{"a.b": {"$ne": None}}, {"k": 4}]}
    assert sorted(doc["k"] for doc in db["scratch"].find(either, ["k"])) == [3, 4]


def test_datetime_range_is_tz_aware_utc_and_exact(filled: Database) -> None:
    found = filled.data.find(
        {"acquired_at": {"$gt": T0 + timedelta(hours=1), "$lt": T0 + timedelta(hours=4)}},
        ["dataset", "acquired_at"],
        sort=[("acquired_at", 1)],
    )
    assert _datasets(found) == [_ds(2), _ds(3)]
    for doc, hours in zip(found, [2, 3], strict=True):
        assert doc["acquired_at"] == T0 + timedelta(hours=hours)
        assert doc["acquired_at"].utcoffset() == timedelta(0)


def test_datetime_in_other_zone_comes_back_as_same_instant_in_utc(db: Database) -> None:
    cest = timezone(timedelta(hours=2))
    local = datetime(2022, 6, 1, 14, 0, 0, tzinfo=cest)
    db.data.insert({"dataset": "20220601_140000", "acquired_at": local})
    doc = db.data.find_one({"acquired_at": {"$gte": datetime(2022, 6, 1, 12, 0, tzinfo=UTC)}})
    assert doc is not None
    assert doc["acquired_at"] == local
    assert doc["acquired_at"].utcoffset() == timedelta(0)
    assert doc["acquired_at"].hour == 12


def test_projection_of_dotted_fields_excludes_id(filled: Database) -> None:
    doc = filled.data.find_one({"dataset": _ds(0)}, ["runclass.id", "user"])
    assert doc == {"runclass": {"id": "ARB"}, "user": "alice"}
    assert all("_id" not in d for d in filled.data.find({}, ["dataset"]))


def test_no_projection_returns_whole_document_with_id(filled: Database) -> None:
    doc = filled.data.find_one({"dataset": _ds(4)})
    assert doc is not None
    assert "_id" in doc
    assert doc["note"] == "check focus"
    assert doc["runclass"] == {"id": "TOR", "n": 4}
    assert filled.data.find_one({"dataset": "nope"}) is None


def test_sort_multi_key_descending_limit_skip(filled: Database) -> None:
    ordered = filled.data.find({}, ["dataset"], sort=[("runclass.id", 1), ("value", -1)])
    assert _datasets(ordered) == [_ds(i) for i in [5, 3, 2, 0, 4, 1]]
    page = filled.data.find({}, ["dataset"], sort=[("dataset", -1)], skip=1, limit=2)
    assert _datasets(page) == [_ds(4), _ds(3)]
    assert _datasets(filled.data.find({}, ["dataset"], sort=[("dataset", 1)], skip=5)) == [_ds(5)]
    assert filled.data.find({}, ["dataset"], sort=[("dataset", 1)], skip=6) == []


def test_count_and_distinct(filled: Database) -> None:
    assert filled.data.count() == 6
    assert filled.data.count({"user": "bob"}) == 2
    assert filled.data.count({"user": "nobody"}) == 0
    assert sorted(filled.data.distinct("user")) == ["alice", "bob", "carol"]
    assert sorted(filled.data.distinct("runclass.id")) == ["ARB", "TOR"]
    assert sorted(filled.data.distinct("user", {"value": {"$gte": 6}})) == ["bob", "carol"]
    assert filled.data.distinct("user", {"user": "nobody"}) == []


# --- writes ----------------------------------------------------------------------------------


def test_claim_returns_updated_document_first_by_sort(db: Database) -> None:
    db.queue.insert_many([{"job_id": f"j{n}", "n": n, "status": "queued"} for n in (3, 1, 2)])
    first = db.queue.claim(
        {"status": "queued"}, {"$set": {"status": "claimed", "owner": 7}}, sort=[("n", 1)]
    )
    assert first is not None
    assert (first["n"], first["status"], first["owner"]) == (1, "claimed", 7)
    last = db.queue.claim({"status": "queued"}, {"$set": {"status": "claimed"}}, sort=[("n", -1)])
    assert last is not None
    assert last["n"] == 3
    assert db.queue.claim({"status": "queued"}, {"$set": {"status": "claimed"}}) is not None
    assert db.queue.claim({"status": "queued"}, {"$set": {"status": "claimed"}}) is None
    assert db.queue.count({"status": "claimed"}) == 3


def test_update_single_and_many_return_matched_count(filled: Database) -> None:
    assert filled.data.update({"user": "alice"}, {"$set": {"checked": True}}) == 1
    assert filled.data.count({"checked": True}) == 1
    assert filled.data.update({"user": "alice"}, {"$set": {"checked": True}}, many=True) == 2
    assert filled.data.count({"checked": True}) == 2
    assert filled.data.update({"user": "nobody"}, {"$set": {"checked": True}}, many=True) == 0


def test_update_set_nested_push_inc(filled: Database) -> None:
    matched = filled.data.update(
        {"runclass.id": "TOR"},
        {"$set": {"runclass.sub": "b"}, "$push": {"tags": "reviewed"}, "$inc": {"value": 10}},
        many=True,
    )
    assert matched == 2
    found = filled.data.find(
        {"runclass.sub": "b"}, ["runclass", "tags", "value"], sort=[("value", 1)]
    )
    assert found == [
        {"runclass": {"id": "TOR", "n": 1, "sub": "b"}, "tags": ["raw", "reviewed"], "value": 11.5},
        {"runclass": {"id": "TOR", "n": 4, "sub": "b"}, "tags": ["reviewed"], "value": 16.0},
    ]


def test_delete_removes_one_matching_document(filled: Database) -> None:
    assert filled.data.delete({"dataset": _ds(0)}) == 1
    assert filled.data.find_one({"dataset": _ds(0)}) is None
    assert filled.data.delete({"dataset": _ds(0)}) == 0
    assert filled.data.delete({"user": "bob"}) == 1  # one document, even if several match
    assert filled.data.count() == 4


# --- indexes and validation ------------------------------------------------------------------


def test_unique_dataset_and_username(db: Database) -> None:
    db.data.insert({"dataset": "20211215_093527", "user": "alice"})
    db.data.insert({"dataset": "20211215_093528", "user": "alice"})  # `user` is not unique
    with pytest.raises(DuplicateError, match="data"):
        db.data.insert({"dataset": "20211215_093527", "user": "bob"})
    db.users.insert({"username": "alice"})
    with pytest.raises(DuplicateError, match="users"):
        db.users.insert({"username": "alice", "email": "a@lab"})
    assert db.data.count() == 2
    assert db.users.count() == 1


def test_insert_many_with_duplicate_in_the_middle(db: Database) -> None:
    with pytest.raises(DuplicateError):
        db.users.insert_many(
            [{"username": "a"}, {"username": "b"}, {"username": "a"}, {"username": "c"}]
        )
    # Ordered: the documents before the duplicate are stored, the ones after it are not.
    assert sorted(db.users.distinct("username")) == ["a", "b"]


def test_ensure_indexes_is_idempotent(db: Database) -> None:
    db.ensure_indexes()
    db.ensure_indexes()
    db.data.insert({"dataset": "d1"})
    with pytest.raises(DuplicateError):
        db.data.insert({"dataset": "d1"})


def test_ensure_indexes_creates_every_index_once(db: Database) -> None:
    for name, indexes in INDEXES.items():
        assert db[name].index_fields().items() >= set(indexes), name
    db.queue.insert({"job_id": "j1", "status": "completed", "scratch_cleaned": False})
    db.ensure_indexes()  # all exist already: left alone
    assert db.queue.find({"status": "completed", "scratch_cleaned": False}, ["job_id"]) == [
        {"job_id": "j1"}
    ]


def test_validator_enforced_on_mongodb_only(db: Database, db_config: DatabaseConfig) -> None:
    schema = {"bsonType": "object", "required": ["username", "email"]}
    db.set_validator("users", schema)
    db.set_validator("users", schema)  # again: replaces, does not fail
    db.users.insert({"username": "ok", "email": "ok@lab"})
    if db_config.embedded:
        db.users.insert({"username": "no-email"})  # labctl validates before it gets here
        assert db.users.count() == 2
    else:
        with pytest.raises(DatabaseError, match="validation") as caught:
            db.users.insert({"username": "no-email"})
        assert not isinstance(caught.value, DuplicateError)
        assert db.users.count() == 1


def test_data_persist_across_close_and_reopen(db_config: DatabaseConfig) -> None:
    with connect(db_config) as db:
        db.data.insert_many(_entries())
        db.queue.insert({"job_id": "j0", "dataset": _ds(0), "status": "queued"})
        db.users.insert({"username": "alice"})
    with connect(db_config) as db:
        assert db.data.count() == 6
        doc = db.data.find_one({"dataset": _ds(2)}, ["acquired_at", "runclass.id"])
        assert doc == {"acquired_at": T0 + timedelta(hours=2), "runclass": {"id": "ARB"}}
        assert db.queue.count({"status": "queued"}) == 1
        with pytest.raises(DuplicateError):  # the unique indexes survive too
            db.users.insert({"username": "alice"})


def test_two_connections_see_each_others_writes(db_config: DatabaseConfig) -> None:
    with connect(db_config) as first, connect(db_config) as second:
        first.data.insert({"dataset": "a", "user": "alice"})
        assert second.data.find({"user": "alice"}, ["dataset"]) == [{"dataset": "a"}]
        second.data.update({"dataset": "a"}, {"$set": {"user": "bob"}})
        assert first.data.find({"user": "alice"}) == []
        assert first.data.count({"user": "bob"}) == 1


# --- connecting and errors -------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_mongodb_fails_fast_naming_hosts_not_password() -> None:
    p1, p2 = _closed_port(), _closed_port()
    uri = f"mongodb://lab:s3cr3t-pw@127.0.0.1:{p1},127.0.0.1:{p2}/?replicaSet=rs0"
    start = time.monotonic()
    with pytest.raises(DatabaseUnreachable) as caught:
        connect(DatabaseConfig(uri=uri, timeout_seconds=1))
    assert time.monotonic() - start < 3
    message = str(caught.value)
    assert f"127.0.0.1:{p1},127.0.0.1:{p2}" in message
    assert "s3cr3t" not in message
    assert "lab:" not in message


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://",
        "mongodb://lab:s3cr3t-pw@db.example:notaport/",
        "mongodb://lab:s3cr3t-pw@db.example:99999/",
        "mongodb://a,b/?directConnection=true",
        "mongodb+srv://a.example,b.example/",
    ],
)
def test_invalid_uri_raises_database_error(uri: str) -> None:
    with pytest.raises(DatabaseError, match="invalid MongoDB URI") as caught:
        connect(DatabaseConfig(uri=uri, timeout_seconds=1))
    assert not isinstance(caught.value, DatabaseUnreachable)
    assert "s3cr3t" not in str(caught.value)


def test_embedded_path_under_a_file_raises_database_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    for path in (blocker / "store", blocker):
        with pytest.raises(DatabaseError, match="cannot open the embedded store") as caught:
            connect(DatabaseConfig(path=path))
        assert str(path) in str(caught.value)


def test_embedded_store_with_a_database_name_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "labctl").write_text("x")
    with pytest.raises(DatabaseError, match="cannot open the embedded store"):
        connect(DatabaseConfig(path=tmp_path / "store"))


def test_embedded_path_with_url_characters_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "lab#2?engine=memory" / "db"
    config = DatabaseConfig(path=path)
    with connect(config) as db:
        db.data.insert({"dataset": "a"})
    assert (path / "labctl" / "data").is_file()
    with connect(config) as db:
        assert db.data.count() == 1


@pytest.mark.usefixtures("open_umask")
def test_embedded_store_is_private_to_its_owner(tmp_path: Path) -> None:
    """Password hashes, token digests and sessions live in it: 0700 folders, 0600 files."""
    store = tmp_path / "store"
    with connect(DatabaseConfig(path=store)) as db:
        db.users.insert({"username": "alice", "password_hash": "$argon2id$..."})
        db.meta.insert({"key": "session:abc", "kind": "session"})
    found = modes(store)
    assert {".", ".lock", "labctl", "labctl/users", "labctl/meta"} <= set(found)
    assert private(store), found


@pytest.mark.usefixtures("open_umask")
def test_an_existing_world_readable_store_is_narrowed_when_opened(tmp_path: Path) -> None:
    store = tmp_path / "store"
    connect(DatabaseConfig(path=store)).close()
    for path in [store, *store.rglob("*")]:  # as an older labctl left it
        path.chmod(0o755 if path.is_dir() else 0o644)
    with connect(DatabaseConfig(path=store)) as db:
        db.data.insert({"dataset": "a"})
    assert private(store), modes(store)


def test_plain_uri_without_replica_set_reaches_the_same_server(mongo_uri: str) -> None:
    assert "replicaSet=" in mongo_uri
    plain = mongo_uri.split("?", 1)[0]
    name = f"t_plain_{time.monotonic_ns()}"
    with connect(DatabaseConfig(uri=mongo_uri, name=name)) as rs_db:
        rs_db.data.insert({"dataset": "via-replica-set"})
    with connect(DatabaseConfig(uri=plain, name=name)) as plain_db:
        assert plain_db.where == f"MongoDB at {plain.split('://', 1)[1].rstrip('/')}"
        assert plain_db.data.find({}, ["dataset"]) == [{"dataset": "via-replica-set"}]
        plain_db.data.insert({"dataset": "via-plain"})
        with pytest.raises(DuplicateError):
            plain_db.data.insert({"dataset": "via-plain"})
    with connect(DatabaseConfig(uri=mongo_uri, name=name)) as rs_db:
        assert sorted(rs_db.data.distinct("dataset")) == ["via-plain", "via-replica-set"]


CATASTROPHIC = "^(a+)+$"  # exponential for a backtracking matcher on "aaa...a!"


def test_a_catastrophic_regex_cannot_hold_the_store(db_config: DatabaseConfig) -> None:
    """The embedded store matches with RE2 (linear time); MongoDB stops the query at
    `query_seconds`. Without either, each of these queries takes several seconds."""
    config = db_config.model_copy(update={"query_seconds": 0.5})
    with connect(config) as db:
        db.data.insert_many([{"dataset": f"d{i}", "note": "a" * 17 + "!"} for i in range(1000)])
        for query in (db.data.find, db.data.count):
            start = time.monotonic()
            if db_config.embedded:
                assert query({"note": {"$regex": CATASTROPHIC}}) in ([], 0)
                assert query({"note": {"$regex": "^a+!$"}}) in (db.data.find({}), 1000)
            else:
                with pytest.raises(QueryTimeout, match="ran out of time") as stopped:
                    query({"note": {"$regex": CATASTROPHIC}})
                assert stopped.value.exit_code == 2 and "\n" not in str(stopped.value)
            assert time.monotonic() - start < 3


def test_regex_outside_re2_is_refused_by_the_embedded_store(db: Database) -> None:
    """labctl's filters only hold RE2 patterns (`catalog/query.py`); MongoDB's PCRE has more."""
    db.data.insert({"dataset": "d", "user": "aa"})
    backreference = {"user": {"$regex": r"(a)\1"}}
    if db.hello() is None:
        with pytest.raises(ValidationError, match="bad regular expression"):
            db.data.find(backreference)
    else:
        assert [d["dataset"] for d in db.data.find(backreference)] == ["d"]
