"""One member's `/me` while another member floods the service: does each get their share?

    python -m benchmarks.bench_share [--entries 200] [--probes 200] [--concurrency 100]
                                     [--backend embedded|mongodb]

Serves `labctl web` as its own process over a fresh store (embedded in a temporary directory, or a
SecantusDB MongoDB-wire server started for the run) holding `--entries` experiments and two
members with API tokens. First bob asks `GET /api/v1/me` `--probes` times, one after the other,
alone: the raw baseline. Then alice floods with cheap queries (`GET /api/v1/experiments?limit=10`)
from `--concurrency` connections at once, each asking again as soon as it is answered, while bob
asks `/me` as before. The table gives bob's latency (p50, p99) in both runs and "x raw", the
flooded figure over the baseline of the same run, with what alice's flood got (answers, 429s).
Goal (issue 23): bob's p99 under the flood <= 100 ms. The clients are plain HTTP/1.1 over asyncio
sockets in this process, the server another process, as a member's machine and the service are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from labctl.catalog.experiments import log_entries
from labctl.config import Config, DatabaseConfig
from labctl.db import connect
from labctl.users import add_user, create_token
from tests.floodfixtures import flooded, probe
from tests.mongoserver import free_port
from tests.testbed import write_config

FLOOD_PATH = "/api/v1/experiments?limit=10"
FIELDS = {"user": "alice", "data_raw_path": "/nfs/data/alice"}


def percentile(times: Sequence[float], share: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[round(share * 100) - 1]


@contextmanager
def store(backend: str, root: Path) -> Iterator[DatabaseConfig]:
    if backend == "embedded":
        yield DatabaseConfig(path=root / "store")
        return
    from tests.mongoserver import secantus

    with secantus(root / "mongo") as uri:
        yield DatabaseConfig(uri=uri, name="bench_share")


@contextmanager
def service(config: Config, root: Path) -> Iterator[int]:
    """`labctl web` on a free port as its own process, stopped at the end."""
    port = free_port()
    path = write_config(config, root / "config.yaml")
    argv = [sys.executable, "-m", "labctl", "--config", str(path), "web", "--port", str(port)]
    env = {**os.environ, "HOME": str(root)}
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "labctl web stopped"
            assert time.monotonic() < deadline, "labctl web did not start"
            with socket.socket() as probe_socket:
                if probe_socket.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backend", choices=("embedded", "mongodb"), default="embedded")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-share-") as tmp,
        store(args.backend, Path(tmp)) as database,
    ):
        config = Config(user="alice", database=database)
        with connect(database) as db:
            for name in ("alice", "bob"):
                add_user(db, name)
            tokens = {name: create_token(db, name) for name in ("alice", "bob")}
            entries = [
                (f"2021{1 + i // 28 % 12:02d}{1 + i % 28:02d}_{i // 336 % 24:02d}0000", FIELDS)
                for i in range(args.entries)
            ]
            log_entries(db, config, entries)
        with service(config, Path(tmp)) as port:
            asyncio.run(probe(port, tokens["bob"], 20))  # warm-up
            alone = asyncio.run(probe(port, tokens["bob"], args.probes))
            under, statuses = asyncio.run(
                flooded(
                    port, tokens["bob"], tokens["alice"], FLOOD_PATH, args.probes, args.concurrency
                )
            )
    raw = percentile(alone, 0.99)
    print(f"\n{args.backend}, {args.entries} entries; bob's /me, {args.probes} probes each")
    print(f"{'run':<40} {'p50 ms':>8} {'p99 ms':>8} {'x raw':>7}")
    flood = f"alice floods, {args.concurrency} at once"
    for label, times in (("alone (raw)", alone), (flood, under)):
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        print(f"{label:<40} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} {p99 / raw:>7.2f}")
    answers = sorted(statuses.items())
    print("alice's flood got:", ", ".join(f"{n} x {status or 'closed'}" for status, n in answers))


if __name__ == "__main__":
    main()
