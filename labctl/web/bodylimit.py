"""Request bodies are bounded: one larger than `limits.REQUEST_BYTES` is refused with 413.

An ASGI middleware around the app: when the app first asks for the body, a Content-Length beyond
the limit is refused without reading a byte; a body without one (chunked) is counted as it
arrives and refused once it passes the limit. The refusal is an `HTTPException(413)`, answered
like every other error (JSON under /api, a page elsewhere; see `labctl.web.problems`).
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labctl.limits import REQUEST_BYTES


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def bounded() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > REQUEST_BYTES:
                raise HTTPException(413)
            message = await receive()
            received += len(message.get("body", b""))
            if received > REQUEST_BYTES:
                raise HTTPException(413)
            return message

        await self.app(scope, bounded, send)
