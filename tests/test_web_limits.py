"""Each request's work is bounded: the size of a query and of its answer, each member's share of
the store while another floods it, and how long a client may take to send a request."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from labctl.catalog.experiments import log_entries
from labctl.config import Config, DatabaseConfig
from labctl.config.webconfig import WebConfig
from labctl.db import Database, connect
from labctl.limits import ANSWER_BYTES, QUERY_TERMS, REQUEST_READ_SECONDS
from labctl.users import create_token
from labctl.web import create_app
from tests.floodfixtures import flooded
from tests.jobfixtures import submit_as
from tests.webfixtures import login, seed, served, web_config

V1 = "/api/v1"
OVER = QUERY_TERMS + 1


@pytest.fixture
def client(cfg: Config) -> Iterator[TestClient]:
    with TestClient(create_app(cfg)) as client:
        yield client


@pytest.fixture
def alice(db: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(db, 'alice')}"}


def too_long(answer: Any, where: str) -> None:
    """A 422 naming the list (or mapping) that has too many items."""
    detail = answer.json()["detail"]
    assert answer.status_code == 422, detail
    assert [(d["type"], d["loc"][-1]) for d in detail] == [("too_long", where)], detail


@pytest.mark.parametrize("name", ["fields", "sort", "where"])
def test_a_get_query_names_at_most_so_many_terms(
    client: TestClient, alice: dict[str, str], name: str
) -> None:
    terms = [f"missing{i}" if name != "where" else f"missing{i} = 1" for i in range(OVER)]
    too_long(client.get(f"{V1}/experiments", params={name: terms}, headers=alice), name)


@pytest.mark.parametrize("name", ["fields", "sort", "where", "filter"])
def test_a_posted_query_names_at_most_so_many_terms(
    client: TestClient, alice: dict[str, str], name: str
) -> None:
    terms = [f"missing{i}" if name != "where" else f"missing{i} = 1" for i in range(OVER)]
    body = {name: dict.fromkeys(terms, 1) if name == "filter" else terms}
    too_long(client.post(f"{V1}/experiments/query", json=body, headers=alice), name)


def test_the_browse_page_takes_at_most_so_many_conditions(client: TestClient) -> None:
    assert login(client, "alice") == 303
    where = "\n".join(f"missing{i} = 1" for i in range(OVER))
    page = client.get("/browse", params={"where": where})
    assert page.status_code == 400
    assert f"{OVER} conditions: a query takes at most {QUERY_TERMS}" in page.text


def test_an_answer_larger_than_the_cap_is_refused_not_built(
    client: TestClient, cfg: Config, db: Database, alice: dict[str, str]
) -> None:
    """Entries of nearly the size an entry may have, more of them than fit in one answer."""
    fields = {"user": "alice", "data_raw_path": "/nfs/big", "notes": "x" * 900_000}
    count = ANSWER_BYTES // 900_000 + 1
    datasets = [f"20220101_0000{i:02d}" for i in range(count)]
    log_entries(db, cfg, [(dataset, fields) for dataset in datasets])
    where = {"where": "data_raw_path = /nfs/big"}
    answer = client.get(f"{V1}/experiments", params={**where, "limit": count}, headers=alice)
    assert answer.status_code == 422, answer.text[:200]
    assert answer.json() == {
        "detail": f"data: the answer is larger than {ANSWER_BYTES:,} bytes; "
        "ask for fewer entries or fields"
    }
    fewer = client.get(f"{V1}/experiments", params={**where, "limit": 2}, headers=alice)
    assert fewer.status_code == 200 and len(fewer.json()["items"]) == 2
    some = client.get(f"{V1}/experiments", params={**where, "fields": "user"}, headers=alice)
    assert some.status_code == 200 and len(some.json()["items"]) == count


def test_a_job_list_larger_than_the_cap_is_refused_not_built(
    client: TestClient, cfg: Config, db: Database, alice: dict[str, str]
) -> None:
    """Jobs whose records are large (a long batch script), more of them than fit in one answer."""
    count = ANSWER_BYTES // 900_000 + 1
    for _ in range(count):
        job_id = submit_as(db, cfg)["job_id"]
        db.queue.update({"job_id": job_id}, {"$set": {"batch_script": "#" * 900_000}})
    answer = client.get(f"{V1}/jobs", params={"limit": count}, headers=alice)
    assert answer.status_code == 422, answer.text[:200]
    assert answer.json() == {
        "detail": f"queue: the answer is larger than {ANSWER_BYTES:,} bytes; "
        "ask for fewer entries or fields"
    }
    fewer = client.get(f"{V1}/jobs", params={"limit": 2}, headers=alice)
    assert fewer.status_code == 200 and len(fewer.json()["items"]) == 2


# --- each member's share of the store, on a real server --------------------------------------

FLOOD = f"{V1}/experiments?limit=10"


def lab(tmp_path: Path, web: WebConfig) -> tuple[Config, dict[str, str]]:
    """A lab server's config (an embedded store) and alice's and bob's tokens."""
    store = DatabaseConfig(uri="embedded", path=tmp_path / "store")
    config = web_config(Config(user="labserver", database=store, web=web), tmp_path)
    with connect(store) as db:
        seed(db, config, tmp_path)
        return config, {name: create_token(db, name) for name in ("alice", "bob")}


def port_of(url: str) -> int:
    return int(url.rpartition(":")[2])


def flood_against(tmp_path: Path, web: WebConfig, concurrency: int) -> tuple[list[float], dict]:
    """Bob's 30 `/me` while alice asks for pages from `concurrency` connections at once."""
    config, tokens = lab(tmp_path, web)
    with served(config) as url:
        flood = flooded(port_of(url), tokens["bob"], tokens["alice"], FLOOD, 30, concurrency)
        times, statuses = asyncio.run(flood)
    return times, dict(statuses)


def test_a_member_s_flood_waits_its_turn_and_another_s_me_stays_fast(tmp_path: Path) -> None:
    """With the defaults, alice's 100 requests at once queue behind each other (all answered),
    not in front of bob's `/me`: 3 ms at the median here; on one store thread, first come first
    served, bob's requests waited behind all of hers (0.27 s at the median here)."""
    times, statuses = flood_against(tmp_path, WebConfig(), 100)
    assert set(statuses) == {200} and statuses[200] >= 100, statuses
    assert statistics.median(times) < 0.1, times


def test_past_its_share_a_member_is_told_to_come_back(tmp_path: Path) -> None:
    """A member's call that cannot have its turn at once (no wait allowed here) is a 429 with a
    Retry-After (which the flood client checks); another member is served all the while."""
    share = WebConfig(member_calls=1, member_wait_seconds=0)
    times, statuses = flood_against(tmp_path, share, 20)
    assert set(statuses) == {200, 429} and statuses[429] > statuses[200], statuses
    assert max(times) < 1, times


# --- slow clients -----------------------------------------------------------------------------


def test_a_client_trickling_its_request_is_cut_off(tmp_path: Path) -> None:
    """A request head sent one byte every 2 s is never complete: the connection is closed once
    REQUEST_READ_SECONDS have passed (uvicorn alone keeps it open as long as bytes come)."""
    head = b"GET /api/v1/me HTTP/1.1\r\nHost: labctl\r\nX-Slow: " + b"a" * 100
    config, _ = lab(tmp_path, WebConfig())
    with served(config) as url, socket.create_connection(("127.0.0.1", port_of(url))) as sock:
        start = time.monotonic()
        sock.settimeout(2)
        closed_after = None
        for byte in head:
            assert time.monotonic() - start < REQUEST_READ_SECONDS + 10, "never closed"
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1024) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                continue  # still open: 2 s have passed, send the next byte
            except ConnectionError:
                closed_after = time.monotonic() - start
                break
    assert closed_after is not None, "the whole head went through"
    assert REQUEST_READ_SECONDS - 1 < closed_after < REQUEST_READ_SECONDS + 4, closed_after
