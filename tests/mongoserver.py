"""A MongoDB-wire server (SecantusDB) for tests and benchmarks, addressed as a replica set."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymongo

REPLICA_SET = "secantus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    """The server is not installed or did not start."""


@contextmanager
def secantus(storage: Path) -> Iterator[str]:
    """A fresh server keeping its data under `storage`; yields its URI, stops it at the end."""
    server = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
    if server is None:
        raise ServerError("secantusd-py is not installed: run the README test command")
    port = free_port()
    storage.mkdir(parents=True, exist_ok=True)
    with (storage / "server.log").open("w") as log:
        command = [server, "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                   str(storage / "data"), "--sync-on-commit", "--log-level", "WARNING"]  # fmt: skip
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        uri = f"mongodb://127.0.0.1:{port}/?replicaSet={REPLICA_SET}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
                    break
                except pymongo.errors.PyMongoError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise ServerError(
                            f"SecantusDB did not start; see {storage / 'server.log'}"
                        ) from None
                    time.sleep(0.2)
            yield uri
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
