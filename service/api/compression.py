"""Response compression as Triton does it: inference answers only, only for a client that asks.

Triton gzips (or deflates) the answer of an inference request whose client sent
`Accept-Encoding`, and nothing else. Compressing every large JSON answer broke
tritonclient.http.aio: aiohttp announces `Accept-Encoding: gzip` by default, but the async client
inflates inference answers only, so gzipped metadata and statistics reached it as bytes
(`UnicodeDecodeError 0x8b`). Here the inference requests are the POSTs (V2 infer, TF Serving
predict, the task endpoints); GETs (metadata, config, statistics, health, docs) are never
compressed.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class InferenceCompression:
    """Starlette's gzip, level 1, on the answers of POST requests only."""

    def __init__(
        self, app: ASGIApp, minimum_size: int, exclude_content_types: Sequence[str]
    ) -> None:
        self.app = app
        self.gzip = GZipMiddleware(
            app,
            minimum_size=minimum_size,
            compresslevel=1,
            exclude_content_types=tuple(exclude_content_types),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
