"""Slow clients do not hold a connection: each request arrives within a deadline, or it is closed.

uvicorn closes a kept-alive connection that stays idle for `timeout_keep_alive`, but not one that
sends a byte now and then: each byte restarts nothing and nothing ever ends it, so a client
trickling a header byte every 2 s holds its connection (and a slot of the server) for ever. Here
a request's head and body must have arrived within `limits.REQUEST_READ_SECONDS` of the
connection being ready for it (opened, or the previous answer sent); then the connection is
closed. While the app works on a request, or streams its answer, no deadline runs.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from labctl.limits import REQUEST_READ_SECONDS

_ARRIVING = (h11.IDLE, h11.SEND_BODY)  # the client's side of h11: a request still to come in full


class BoundedReads(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request to arrive."""

    read_seconds = REQUEST_READ_SECONDS
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        self._arm()  # first: a pipelined request already in is handled (and disarms) below
        super().on_response_complete()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in _ARRIVING:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.read_seconds, self.transport.close)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
