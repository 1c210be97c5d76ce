"""How much the database seam costs on each backend, and whether the indexes help.

    python -m benchmarks.bench_query [--n 100000] [--repeat 5] [--backend embedded|mongodb]
                                     [--uri mongodb://...]

Fills a fresh store with N `data` entries (in bulk: `insert_many` of 10 000 at a time), then
times each query through the seam (`Database.data.find`) and as the raw driver call on the same
store (litemongo's or pymongo's `collection.find(...)` materialised to a list), in the same run,
and labctl's `query` (what `labctl query` and `dbquery` run: projection, sorted by dataset) against
the raw `find(...).sort("dataset")`. The embedded store lives in a temporary directory; MongoDB is
the server at `--uri` (a fresh database in it, dropped at the end) or, without it, a SecantusDB
MongoDB-wire server started for the run (tests/mongoserver.py). `user` is indexed (by
`ensure_indexes`), `runclass.id` is not; both take 20 values, so both filters match ~N/20 entries
and any difference between them is the index. Seconds are the median of `--repeat` runs after one
warm-up, the raw call and labctl's taking turns; "x raw" is the median of the ratios of each
turn to the raw call with the same filter.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult

from labctl.catalog.experiments import query
from labctl.config import Config, DatabaseConfig
from labctl.db import connect

USERS = [f"user{i:02d}" for i in range(20)]
RUNCLASSES = [f"RC{i:02d}" for i in range(20)]
T0 = datetime(2019, 3, 1, 8, 0, tzinfo=UTC)


def make_entries(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """N entries like the lab's: timestamp dataset ids (one every ~7 min), 20 users, 20 classes."""
    rng = random.Random(seed)
    for i in range(n):
        acquired = T0 + timedelta(minutes=7 * i, seconds=rng.randrange(60))
        dataset = acquired.strftime("%Y%m%d_%H%M%S")
        user = rng.choice(USERS)
        yield {
            "dataset": dataset,
            "user": user,
            "acquired_at": acquired,
            "data_raw_path": f"/data/raw/{user}/{dataset}",
            "runclass": {"id": rng.choice(RUNCLASSES), "version": rng.randrange(3)},
            "temperature": round(rng.uniform(18.0, 24.0), 2),
        }


def _materialise(find: Callable[[dict[str, Any]], Any], flt: dict[str, Any]) -> list[Any]:
    return list(find(flt))


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """Median seconds of `repeat` calls after one warm-up call, and the size of the result."""
    result = call()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), len(result) if isinstance(result, Sized) else 0


def paired(
    raw: Callable[[], Any], seam: Callable[[], Any], repeat: int
) -> tuple[float, float, int, float]:
    """`timed` for a raw call and labctl's, taking turns (one warm-up each): their median
    seconds, the size of the result, and the median of the ratios of each round."""
    raw(), seam()
    rounds = []
    for i in range(repeat):
        pair = []
        for call in (raw, seam) if i % 2 == 0 else (seam, raw):
            start = time.perf_counter()
            result = call()
            pair.append(time.perf_counter() - start)
        rounds.append(pair if i % 2 == 0 else pair[::-1])
    hits = len(result) if isinstance(result, Sized) else 0
    raw_s, seam_s = (statistics.median(r[k] for r in rounds) for k in (0, 1))
    return raw_s, seam_s, hits, statistics.median(r[1] / r[0] for r in rounds)


@contextmanager
def store(backend: str, uri: str | None, tmp: Path) -> Iterator[tuple[DatabaseConfig, Any]]:
    """A fresh, empty store and its raw `data` collection (no labctl in between)."""
    if backend == "embedded":
        import litemongo

        config = DatabaseConfig(path=tmp / "store")
        # The same files through a second, plain litemongo client: no lock, no wrapper.
        raw = litemongo.connect(ParseResult("", "", str(config.path), "", "", ""), tz_aware=True)
        try:
            yield config, raw[config.name]["data"]
        finally:
            raw.close()
        return
    import pymongo

    from tests.mongoserver import secantus

    with secantus(tmp / "secantus") if uri is None else nullcontext(uri) as found:
        config = DatabaseConfig(uri=found, name=f"bench_{uuid.uuid4().hex[:8]}")
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(found, tz_aware=True)
        try:
            yield config, client[config.name]["data"]
        finally:
            client.drop_database(config.name)
            client.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of data entries")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per operation")
    parser.add_argument("--backend", choices=["embedded", "mongodb"], default="embedded")
    parser.add_argument("--uri", help="a MongoDB server to use (default: start SecantusDB)")
    parser.add_argument(
        "--indexed-only", action="store_true", help="skip the full scans (for large N)"
    )
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp,
        store(args.backend, args.uri, Path(tmp)) as (config, raw),
    ):
        entries = make_entries(args.n)
        start = time.perf_counter()
        with connect(config) as db:
            while chunk := list(islice(entries, 10_000)):
                db.data.insert_many(chunk)
        print(f"filled {args.n} entries in {time.perf_counter() - start:.1f} s ({args.backend})")

        probe = next(islice(make_entries(args.n), args.n // 2, None))
        filters = {
            "user (indexed)": {"user": probe["user"]},
            "runclass.id (not indexed)": {"runclass.id": probe["runclass"]["id"]},
            "dataset, 1 hit (indexed)": {"dataset": probe["dataset"]},
            "data_raw_path, 1 hit (not indexed)": {"data_raw_path": probe["data_raw_path"]},
        }
        if args.indexed_only:
            filters = {label: flt for label, flt in filters.items() if "not" not in label}
        rows: list[tuple[str, float, int, float | None]] = []

        raw_seconds: dict[str, float] = {}
        with connect(config) as db:
            for label, flt in filters.items():
                raw_find = partial(_materialise, raw.find, flt)
                found = paired(raw_find, partial(db.data.find, flt), args.repeat)
                raw_seconds[label], seconds, hits, ratio = found
                rows.append((f"raw find  {label}", raw_seconds[label], hits, 1.0))
                rows.append((f"seam find {label}", seconds, hits, ratio))

            # labctl's `query` (projection, default sort by dataset) against the same raw call.
            by_dataset = [("dataset", 1)]
            for label in ("user (indexed)", "dataset, 1 hit (indexed)"):
                flt = filters[label]
                raw_sorted = partial(lambda f: list(raw.find(f).sort(by_dataset)), flt)
                found = paired(raw_sorted, partial(query, db, [], flt), args.repeat)
                raw_query, seconds, hits, ratio = found
                rows.append((f"raw find+sort {label}", raw_query, hits, 1.0))
                rows.append((f"labctl query {label}", seconds, hits, ratio))

            # A long-lived process (the dashboard) after another process wrote to `data`.
            user_filter = filters["user (indexed)"]
            with connect(config) as other:
                seconds_after_write = []
                for i in range(args.repeat):
                    other.data.update(user_filter, {"$set": {"touched": i}})
                    start = time.perf_counter()
                    hits = len(db.data.find(user_filter))
                    seconds_after_write.append(time.perf_counter() - start)
            seconds = statistics.median(seconds_after_write)
            label = "seam find user after a write by another conn."
            rows.append((label, seconds, hits, seconds / raw_seconds["user (indexed)"]))

        # What one CLI call pays: connect (which runs ensure_indexes) and the first query.
        seconds, _ = timed(lambda: connect(config).close(), args.repeat)
        rows.append(("connect() alone", seconds, 0, None))

        def cold_query() -> list[dict[str, Any]]:
            with connect(config) as db:
                return db.data.find(user_filter)

        seconds, hits = timed(cold_query, args.repeat)
        rows.append(("connect() + seam find user", seconds, hits, None))

        try:
            from labctl.api import dbquery
        except ImportError as exc:
            print(f"labctl.api.dbquery not importable ({exc}): skipped")
        else:
            full = Config(user="bench", database=config)
            fields = ["user", "runclass.id", "temperature"]
            seconds, hits = timed(
                lambda: dbquery(fields, filter=user_filter, config=full), args.repeat
            )
            rows.append(("api.dbquery user -> DataFrame", seconds, hits, None))

    base = raw_seconds["user (indexed)"]
    print(f"\nN = {args.n}, median of {args.repeat}; 'x raw' = vs the raw call, same filter")
    print(f"{'operation':<48} {'seconds':>9} {'hits':>6} {'x raw':>7}")
    for label, seconds, hits, ratio in rows:
        shown = ratio if ratio is not None else seconds / base
        mark = "" if ratio is not None else "*"
        print(f"{label:<48} {seconds:>9.5f} {hits:>6} {shown:>7.2f}{mark}")
    print("* vs the raw indexed `user` find")


if __name__ == "__main__":
    main()
