"""Members as HTTP clients of a served app: plain HTTP/1.1 over asyncio sockets, so that one
process can hold a hundred connections at once (a flood) and time another member's requests."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


class Client:
    """One kept-alive connection with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> int:
        """The status of `GET path` (0 if the server closed the connection instead)."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        auth = f"Authorization: Bearer {self.token}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: labctl\r\n{auth}\r\n\r\n".encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            found = _LENGTH.search(head)
            await reader.readexactly(int(found[1]) if found else 0)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            return 0
        if b"connection: close" in head.lower():
            self.close()
        status = int(head.split(b" ", 2)[1])
        assert status != 429 or b"retry-after:" in head.lower(), "a 429 without Retry-After"
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def probe(port: int, token: str, count: int, path: str = "/api/v1/me") -> list[float]:
    """`count` timed requests, one after the other: the seconds each took (each must be a 200)."""
    client, times = Client(port, token), []
    for _ in range(count):
        start = time.perf_counter()
        status = await client.get(path)
        times.append(time.perf_counter() - start)
        assert status == 200, f"{path} answered {status}"
    client.close()
    return times


async def flooded(
    port: int, prober: str, flooder: str, flood_path: str, probes: int, concurrency: int
) -> tuple[list[float], Counter[int]]:
    """`probe` of the prober's `/me` while `concurrency` connections of the flooder's ask for
    `flood_path` without pause: the probes' seconds, and how the flood was answered (status ->
    how many)."""
    statuses: Counter[int] = Counter()
    done = asyncio.Event()

    async def flood() -> None:
        client = Client(port, flooder)
        while not done.is_set():
            statuses[await client.get(flood_path)] += 1
        client.close()

    floods = [asyncio.create_task(flood()) for _ in range(concurrency)]
    await asyncio.sleep(1)  # the flood under way
    try:
        times = await probe(port, prober, probes)
    finally:
        done.set()
        await asyncio.gather(*floods)
    return times, statuses
