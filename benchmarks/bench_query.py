"""How much the database seam costs on the embedded store, and whether its indexes help.

    python benchmarks/bench_query.py [--n 100000] [--repeat 5]

Fills a fresh embedded store (in a temporary directory) with N `data` entries, then times each
query through the seam (`Database.data.find`) and as the raw litemongo call on the same files
(`collection.find(...)` materialised to a list), in the same run. `user` is indexed (by
`ensure_indexes`), `runclass.id` is not; both take 20 values, so both filters match ~N/20 entries
and any difference between them is the index. Seconds are the median of `--repeat` runs after one
warm-up; "x raw" is the ratio to the raw call with the same filter.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence, Sized
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult

import litemongo

from labctl.config import Config, DatabaseConfig
from labctl.db import connect

USERS = [f"user{i:02d}" for i in range(20)]
RUNCLASSES = [f"RC{i:02d}" for i in range(20)]
T0 = datetime(2019, 3, 1, 8, 0, tzinfo=UTC)


def make_entries(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """N entries like the lab's: timestamp dataset ids (one every ~7 min), 20 users, 20 classes."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        acquired = T0 + timedelta(minutes=7 * i, seconds=rng.randrange(60))
        dataset = acquired.strftime("%Y%m%d_%H%M%S")
        user = rng.choice(USERS)
        entries.append(
            {
                "dataset": dataset,
                "user": user,
                "acquired_at": acquired,
                "data_raw_path": f"/data/raw/{user}/{dataset}",
                "runclass": {"id": rng.choice(RUNCLASSES), "version": rng.randrange(3)},
                "temperature": round(rng.uniform(18.0, 24.0), 2),
            }
        )
    return entries


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of data entries")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per operation")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        config = DatabaseConfig(path=Path(tmp) / "store")
        entries = make_entries(args.n)
        start = time.perf_counter()
        with connect(config) as db:
            for i in range(0, len(entries), 5000):
                db.data.insert_many(entries[i : i + 5000])
        print(f"filled {args.n} entries in {time.perf_counter() - start:.1f} s ({tmp})")

        probe = entries[len(entries) // 2]
        filters = {
            "user (indexed)": {"user": probe["user"]},
            "runclass.id (not indexed)": {"runclass.id": probe["runclass"]["id"]},
            "dataset, 1 hit (indexed)": {"dataset": probe["dataset"]},
            "data_raw_path, 1 hit (not indexed)": {"data_raw_path": probe["data_raw_path"]},
        }
        rows: list[tuple[str, float, int, float | None]] = []

        # The same files through a second, plain litemongo client: no lock, no wrapper.
        location = ParseResult("", "", str(config.path), "", "", "")
        raw_client = litemongo.connect(location, tz_aware=True)
        raw = raw_client[config.name]["data"]
        raw_seconds: dict[str, float] = {}
        with connect(config) as db:
            for label, flt in filters.items():
                seconds, hits = timed(partial(_materialise, raw.find, flt), args.repeat)
                raw_seconds[label] = seconds
                rows.append((f"raw find  {label}", seconds, hits, 1.0))
                seconds, hits = timed(partial(db.data.find, flt), args.repeat)
                rows.append((f"seam find {label}", seconds, hits, seconds / raw_seconds[label]))

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
        raw_client.close()

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
