"""The app's one `Database`, used from one dedicated thread.

The embedded store's SQLite connections belong to the thread that opened them, so every library
call runs on the same worker thread; the event loop stays free, and MongoDB is served alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from labctl.config import DatabaseConfig
from labctl.db import Database, connect

P = ParamSpec("P")
T = TypeVar("T")


class Store:
    """Opens the database on its thread (raising labctl's errors at once) and runs calls there."""

    def __init__(self, config: DatabaseConfig) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labctl-db")
        try:
            self.db = self._thread.submit(connect, config).result()
        except BaseException:
            self._thread.shutdown()
            raise

    async def run(
        self, fn: Callable[Concatenate[Database, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(db, *args, **kwargs)` on the database thread."""
        return await asyncio.wrap_future(self._thread.submit(fn, self.db, *args, **kwargs))

    def call(
        self, fn: Callable[Concatenate[Database, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(db, *args, **kwargs)` on the database thread, waited for (before serving)."""
        return self._thread.submit(fn, self.db, *args, **kwargs).result()

    def close(self) -> None:
        self._thread.submit(self.db.close).result()
        self._thread.shutdown()
