"""The app's one `Database`, used from one dedicated thread, shared out fairly between members.

The embedded store's SQLite connections belong to the thread that opened them, so every library
call runs on the same worker thread; the event loop stays free, and MongoDB is served alike.

That thread takes calls in turn, first come first served; so that one member's flood cannot
queue up in front of everyone else's, each member (each credential until it names a member; a
login attempt counts as the member it names) has at most `web.member_calls` calls queued or
running at once. A further call of theirs waits for one of these to end, up to
`web.member_wait_seconds`, and is then refused with 429 and a Retry-After. Another member's call
so waits behind at most `member_calls` calls of each member busy at the time, whatever their
number of requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Concatenate, ParamSpec, TypeVar

from fastapi import HTTPException

from labctl.config import DatabaseConfig
from labctl.config.webconfig import WebConfig
from labctl.db import Database, connect

P = ParamSpec("P")
T = TypeVar("T")

_lane: ContextVar[str] = ContextVar("labctl_store_lane", default="")


def take_lane(member: str) -> None:
    """The calls the current request makes from now on count as `member`'s."""
    _lane.set(f"member {member}")


def take_credential_lane(credential: str) -> None:
    """Until it names a member, the request's calls count as its credential's."""
    _lane.set("credential " + hashlib.sha256(credential.encode()).hexdigest())


class Lanes:
    """Per lane, at most `calls` at once; waiting longer than `wait_seconds` for a turn is 429."""

    def __init__(self, calls: int, wait_seconds: float) -> None:
        self.calls, self.wait_seconds = calls, wait_seconds
        self._turns: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def turn(self, lane: str) -> AsyncIterator[None]:
        turns = self._turns.setdefault(lane, asyncio.Semaphore(self.calls))
        self._users[lane] = self._users.get(lane, 0) + 1
        try:
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await turns.acquire()
            except TimeoutError:
                raise HTTPException(
                    429,
                    f"too many requests at once: at most {self.calls} of yours are served at a "
                    "time; try again shortly",
                    headers={"Retry-After": str(max(1, math.ceil(self.wait_seconds)))},
                ) from None
            try:
                yield
            finally:
                turns.release()
        finally:
            self._users[lane] -= 1
            if not self._users[lane]:  # nobody waits: forget the lane
                del self._users[lane], self._turns[lane]


class Store:
    """Opens the database on its thread (raising labctl's errors at once) and runs calls there."""

    def __init__(self, config: DatabaseConfig, web: WebConfig) -> None:
        self._lanes = Lanes(web.member_calls, web.member_wait_seconds)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labctl-db")
        try:
            self.db = self._thread.submit(connect, config).result()
        except BaseException:
            self._thread.shutdown()
            raise

    async def run(
        self, fn: Callable[Concatenate[Database, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(db, *args, **kwargs)` on the database thread, in turn with the request's lane."""
        async with self._lanes.turn(_lane.get()):
            return await asyncio.wrap_future(self._thread.submit(fn, self.db, *args, **kwargs))

    def call(
        self, fn: Callable[Concatenate[Database, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(db, *args, **kwargs)` on the database thread, waited for (before serving)."""
        return self._thread.submit(fn, self.db, *args, **kwargs).result()

    def close(self) -> None:
        self._thread.submit(self.db.close).result()
        self._thread.shutdown()
