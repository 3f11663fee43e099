"""ASGI middleware that limits request bodies and decodes their content coding.

A declared `Content-Length` over `max_body_bytes` is answered 413 at once; a chunked body is
counted as it streams and cut off as soon as it passes the limit, so a huge upload never sits in
memory. A body with `Content-Encoding: gzip` or `deflate` is inflated as it streams, and the
limit applies to the decoded size too (`service.codecs.compression`): the routes only ever see
decoded bodies.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.responses import JSONBody
from service.codecs.compression import Inflater, too_large
from service.errors import ServiceError


class BodySizeLimit:
    """Pure ASGI middleware (no buffering of its own)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        coding = ""
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    error = too_large(self.limit, f"{declared} bytes")
                    await JSONBody(error.to_body(), status_code=413)(scope, receive, send)
                    return
            elif key == b"content-encoding":
                coding = value.decode("latin-1").strip().lower()
        inflater: Inflater | None = None
        if coding and coding != "identity":
            try:
                inflater = Inflater(coding, self.limit)
            except ServiceError as error:
                response = JSONBody(error.to_body(), status_code=error.status_code)
                await response(scope, receive, send)
                return
            # The app sees the decoded body: its length is no longer the declared one.
            scope = dict(scope)
            scope["headers"] = [
                (k, v)
                for k, v in scope["headers"]
                if k not in (b"content-encoding", b"content-length")
            ]
        seen = 0
        limit = self.limit

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > limit:
                    raise too_large(limit, f"more than {limit} bytes")
                if inflater is not None:
                    final = not message.get("more_body", False)
                    message = {**message, "body": inflater.feed(body, final=final)}
            return message

        await self.app(scope, limited_receive, send)
