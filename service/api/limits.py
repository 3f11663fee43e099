"""ASGI middleware that limits request bodies and decodes their content coding.

A declared `Content-Length` over `max_body_bytes` is answered 413 at once; a chunked body is
counted as it streams and cut off as soon as it passes the limit, so a huge upload never sits in
memory. A body with `Content-Encoding: gzip` or `deflate` is inflated as it streams, and the
limit applies to the decoded size too (`service.codecs.compression`): the routes only ever see
decoded bodies.

Bodies in flight share one budget per worker (`max_body_bytes_in_flight`): a request whose body
would take the bytes held by requests being read or handled past it is answered 503 +
`Retry-After` at once (its declared length is reserved before reading; a chunked body is counted
as it streams), so a burst of large uploads cannot take the memory of the process; one body
alone is always allowed up to `max_body_bytes`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.responses import JSONBody
from service.codecs.compression import Inflater, too_large
from service.errors import Overloaded, ServiceError


class BodySizeLimit:
    """Pure ASGI middleware (no buffering of its own)."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, max_in_flight_bytes: int | None = None
    ) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.budget = max_in_flight_bytes
        #: Bytes of bodies reserved or received by the requests of this worker now in flight.
        self.in_flight = 0

    def _over_budget(self, more: int) -> Overloaded | None:
        """The 503 for a request that adds `more` bytes, if that takes the total past the budget
        (never for the only body in flight: one body is limited by `max_body_bytes` alone)."""
        if self.budget is None or self.in_flight == 0 or self.in_flight + more <= self.budget:
            return None
        return Overloaded(
            f"the server is overloaded: request bodies in flight would take {self.in_flight + more}"
            f" bytes, more than the {self.budget} allowed; retry later",
            retry_after_s=1,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        coding = ""
        declared = 0
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
        overloaded = self._over_budget(max(declared, 0))
        if overloaded is not None:
            response = JSONBody(overloaded.to_body(), status_code=503, headers=overloaded.headers)
            await response(scope, receive, send)
            return
        seen = 0
        limit = self.limit
        held = max(declared, 0)  # reserved now: the bytes arrive while others are read
        self.in_flight += held

        async def limited_receive() -> Message:
            nonlocal seen, held
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > limit:
                    raise too_large(limit, f"more than {limit} bytes")
                if seen > held:  # a chunked body (or one longer than declared)
                    error = self._over_budget(seen - held)
                    if error is not None:
                        raise error
                    self.in_flight += seen - held
                    held = seen
                if inflater is not None:
                    final = not message.get("more_body", False)
                    message = {**message, "body": inflater.feed(body, final=final)}
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.in_flight -= held
