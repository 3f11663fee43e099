"""ASGI middleware that refuses request bodies over `max_body_bytes` with 413, before reading them.

A declared `Content-Length` over the limit is answered at once; a chunked body is counted as it
streams and cut off as soon as it passes the limit, so a huge upload never sits in memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.responses import JSONBody
from service.errors import PayloadTooLarge


def _too_large(limit: int, received: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body too large: limit {limit} bytes, received {received}",
        field="body",
        expected=f"at most {limit} bytes",
        received=received,
    )


class BodySizeLimit:
    """Pure ASGI middleware (no buffering of its own)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    error = _too_large(self.limit, f"{declared} bytes")
                    await JSONBody(error.to_body(), status_code=413)(scope, receive, send)
                    return
        seen = 0
        limit = self.limit

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit, f"more than {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
