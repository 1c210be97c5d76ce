"""Several OS processes on one store: atomic claims, and no acknowledged write lost to SIGKILL.

Each child is a fresh interpreter running this file as a script (`python test_db_concurrency.py
claim|insert`), given the `DatabaseConfig` as JSON on its command line; it calls
`labctl.db.connect` itself and talks to the parent over stdin/stdout only. Both tests run on both
backends (for MongoDB the killed process is the client; the server stays up).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import IO

import pytest

from labctl.config import DatabaseConfig
from labctl.db import connect
from labctl.errors import DuplicateError

WORKERS = 8
ENTRIES = 400
KILL_AFTER = 100  # acknowledged inserts before a writer is killed
KILL_ROUNDS = 3
CHILD_TIMEOUT = 240.0  # a guard against a hang, not a speed check (MongoDB-wire: 20-60 s)


# --- the children ----------------------------------------------------------------------------


def _claim_worker(config_json: str) -> None:
    """Connect, say ready, wait for 'go', claim until the queue is empty, report the claims."""
    config = DatabaseConfig.model_validate_json(config_json)
    pid = os.getpid()
    claimed: list[int] = []
    foreign: list[int] = []
    with connect(config) as db:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("parent did not say go")
        while True:
            doc = db.queue.claim(
                {"status": "queued"}, {"$set": {"status": "claimed", "owner": pid}}
            )
            if doc is None:
                break
            claimed.append(int(doc["n"]))
            if doc.get("owner") != pid or doc.get("status") != "claimed":
                foreign.append(int(doc["n"]))  # "claimed" but not as I left it: a race
    print(json.dumps({"pid": pid, "claimed": claimed, "foreign": foreign}), flush=True)


def _insert_worker(config_json: str, first: str) -> None:
    """Insert entries one at a time from number `first`, printing each number once acknowledged."""
    config = DatabaseConfig.model_validate_json(config_json)
    with connect(config) as db:
        print("ready", flush=True)
        for i in range(int(first), 10_000_000):
            db.data.insert({"dataset": f"k{i:07d}", "user": "killed", "i": i, "pad": "x" * 200})
            print(i, flush=True)


# --- the parent ------------------------------------------------------------------------------


def _spawn(role: str, config: DatabaseConfig, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, role, config.model_dump_json(), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )


def _expect_line(stream: IO[str] | None, expected: str, proc: subprocess.Popen[str]) -> None:
    assert stream is not None
    line = stream.readline().strip()
    if line != expected:
        proc.kill()
        _, err = proc.communicate(timeout=CHILD_TIMEOUT)
        pytest.fail(f"child {proc.pid} said {line!r}, not {expected!r}; stderr:\n{err}")


@pytest.mark.slow  # ~20 s on MongoDB: SecantusDB retries write conflicts, CPU-bound
def test_concurrent_claims_take_each_entry_exactly_once(db_config: DatabaseConfig) -> None:
    with connect(db_config) as db:
        db.queue.insert_many(
            [{"job_id": f"j{n}", "n": n, "status": "queued"} for n in range(ENTRIES)]
        )

    start = time.monotonic()
    procs = [_spawn("claim", db_config) for _ in range(WORKERS)]
    try:
        for proc in procs:  # all connected before any starts claiming: a fair race
            _expect_line(proc.stdout, "ready", proc)
        race = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=CHILD_TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    claim_seconds = time.monotonic() - race

    reports: dict[int, list[int]] = {}
    foreign: dict[int, list[int]] = {}
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"claimer {proc.pid} failed:\n{err}"
        report = json.loads(out)
        assert report["pid"] == proc.pid
        reports[proc.pid] = report["claimed"]
        foreign[proc.pid] = report["foreign"]

    everything = [n for claimed in reports.values() for n in claimed]
    doubles = len(everything) - len(set(everything))
    assert doubles == 0, f"{doubles} entries were claimed more than once"
    assert not any(foreign.values()), f"claim returned entries owned by another: {foreign}"
    assert sorted(everything) == list(range(ENTRIES)), "an entry was never claimed"

    with connect(db_config) as db:
        docs = db.queue.find({}, ["n", "status", "owner"])
        assert db.queue.count({"status": "claimed"}) == ENTRIES
        assert db.queue.count({"status": "queued"}) == 0
    assert len(docs) == ENTRIES
    owner_in_db = {doc["n"]: doc.get("owner") for doc in docs}
    for pid, claimed in reports.items():
        for n in claimed:
            assert owner_in_db[n] == pid, f"entry {n}: reported by {pid}, owner {owner_in_db[n]}"

    winners = {pid: len(claimed) for pid, claimed in reports.items() if claimed}
    assert len(winners) > 1, f"only one process won claims: {winners}"
    print(
        f"\n{db_config.uri.split('?')[0]}: {ENTRIES} claims by {WORKERS} processes in "
        f"{claim_seconds:.2f} s (total {time.monotonic() - start:.2f} s); per process "
        f"{sorted(winners.values(), reverse=True)}"
    )


def _kill_writer_midstream(config: DatabaseConfig, first: int) -> list[int]:
    """Start a writer at entry `first`, SIGKILL it after KILL_AFTER acknowledged inserts, and
    return every number it acknowledged (including those still in the pipe when it died)."""
    proc = _spawn("insert", config, str(first))
    acknowledged: list[int] = []
    try:
        _expect_line(proc.stdout, "ready", proc)
        assert proc.stdout is not None
        while len(acknowledged) < KILL_AFTER:
            line = proc.stdout.readline()
            assert line, f"writer stopped early: {proc.communicate(timeout=CHILD_TIMEOUT)[1]}"
            acknowledged.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        # Read on through the same buffered stream: communicate() reads the raw pipe and would
        # miss lines readline() has already buffered, which would look like unacknowledged inserts.
        rest = proc.stdout.read()
        proc.wait(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    acknowledged += [int(line) for line in rest.split()]
    assert acknowledged == list(range(first, first + len(acknowledged)))
    return acknowledged


def test_sigkilled_writer_loses_no_acknowledged_insert(db_config: DatabaseConfig) -> None:
    with connect(db_config):  # create the store (and its indexes) before the writer starts
        pass
    start = time.monotonic()
    acknowledged: set[int] = set()
    stored: set[int] = set()
    for round_ in range(KILL_ROUNDS):
        acknowledged |= set(_kill_writer_midstream(db_config, max(stored, default=-1) + 1))
        with connect(db_config) as db:
            stored = {doc["i"] for doc in db.data.find({"user": "killed"}, ["i"])}
            missing = acknowledged - stored
            assert not missing, f"acknowledged but lost: {sorted(missing)[:10]}"
            # Besides those, at most the insert in flight at each kill got in unacknowledged.
            assert len(stored - acknowledged) <= round_ + 1
            # Still readable and writable: a write, an update over everything, a unique index.
            db.data.insert({"dataset": f"after-kill-{round_}", "user": "survivor"})
            assert db.data.count({"user": "survivor"}) == round_ + 1
            assert (
                db.data.update({}, {"$set": {"seen": round_}}, many=True)
                == len(stored) + 1 + round_
            )
            with pytest.raises(DuplicateError):
                db.data.insert({"dataset": f"after-kill-{round_}"})
    if db_config.embedded:
        for collection in (db_config.path / db_config.name).iterdir():
            if collection.is_file() and "-" not in collection.name:
                with closing(sqlite3.connect(collection)) as check:
                    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    print(
        f"\n{db_config.uri.split('?')[0]}: {KILL_ROUNDS} writers killed, {len(acknowledged)} "
        f"acknowledged inserts, {len(stored)} stored, in {time.monotonic() - start:.2f} s"
    )


if __name__ == "__main__":
    ROLES: dict[str, Callable[..., None]] = {"claim": _claim_worker, "insert": _insert_worker}
    ROLES[sys.argv[1]](*sys.argv[2:])
