"""HTTP middleware of observability: a request id, metrics and one access log line per request.

`install(app, settings, metrics)` adds one pure-ASGI middleware, outermost, that gives every
request an id (the client's `X-Request-ID` if it is a sane one, else a new one), returns it in the
`X-Request-ID` response header, times and counts the request by route template, method, model and
status, and writes one access log line; it also mounts `GET /metrics`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import context
from service.api.deps import require_api_key
from service.context import REQUEST_ID_HEADER, request_id_from
from service.metrics import Metrics
from service.settings import Settings

#: The route label of requests that matched no route (404s), so scanners cannot add label values.
UNMATCHED_ROUTE = "<unmatched>"

access_logger = logging.getLogger("service.access")


class ObservabilityMiddleware:
    """Request id, metrics and one access log line per HTTP request (pure ASGI, no buffering)."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(scope.get("headers", ()))
        current, token = context.enter(request_id)
        status = 500  # what the client gets if the app raises before answering
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            model = ""
            if self.metrics is not None:
                self.metrics.in_flight.dec()
                model = self.metrics.model_label(route, scope.get("path_params") or {})
                self.metrics.observe_request(scope["method"], route, model, status, seconds)
            level = logging.INFO if status < 500 else logging.WARNING
            if access_logger.isEnabledFor(level):
                client = scope.get("client")
                access_logger.log(
                    level,
                    "%s %s %d",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "model": model or None,
                        "client": client[0] if client else None,
                    },
                )
            context.leave(current, token)


def install(app: FastAPI, settings: Settings, metrics: Metrics | None) -> None:
    """Add the middleware (call it after every other middleware: it must be the outermost) and,
    with `metrics`, the `GET /metrics` route."""
    app.state.metrics = metrics
    if metrics is not None:

        async def prometheus_metrics() -> Response:
            """Prometheus metrics of the server, every worker of it (text exposition format)."""
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        dependencies: list[Any] = []
        if settings.metrics_require_api_key:
            dependencies.append(Depends(require_api_key))
        app.add_api_route(
            "/metrics",
            prometheus_metrics,
            methods=["GET"],
            dependencies=dependencies,
            include_in_schema=False,
        )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
