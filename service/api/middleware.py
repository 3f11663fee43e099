"""HTTP middleware of observability: a request id, metrics and one access log line per request.

`install(app, settings, metrics)` adds one pure-ASGI middleware, outermost, that gives every
request an id (the client's `X-Request-ID` if it is a sane one, else a new one), returns it in the
`X-Request-ID` response header, times and counts the request by route template, method, model and
status, and writes one access log line; it also mounts `GET /metrics`.

It is also where the server protects itself (issue 23, docs/reliability.md): past `max_in_flight`
requests in this worker a request is answered 503 + `Retry-After` before its body is read (health
and `/metrics` are never limited); a client that disconnects before its answer has its request
cancelled (queued work is dropped, running work no longer waited for), counted as status 499
(nginx's "client closed request") and logged in one line; while the process drains after SIGTERM
readiness answers 503, and a request still running when the grace period ends is answered 503 in
the error shape instead of uvicorn's text 500. Every response advertises `Keep-Alive: timeout=N`,
so clients stop reusing a connection before the server closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import context
from service.api.deps import require_api_key
from service.api.responses import JSONBody
from service.context import REQUEST_ID_HEADER, request_id_from
from service.errors import Overloaded, ServiceError
from service.http_protocol import REFUSED, SHUTTING_DOWN, TIMED_OUT
from service.metrics import Metrics
from service.settings import Settings

#: The route label of requests that matched no route (404s), so scanners cannot add label values.
UNMATCHED_ROUTE = "<unmatched>"

#: nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED = 499

#: Routes answered from state, never limited: probes and scrapes must get through an overload.
UNLIMITED_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})

READY_PATH = "/v2/health/ready"

access_logger = logging.getLogger("service.access")


class ObservabilityMiddleware:
    """Request id, metrics, one access log line per HTTP request, the in-flight limit and
    cancellation of requests whose client left (pure ASGI, no buffering)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics | None,
        max_in_flight: int = 1_000_000,
        keep_alive_s: int | None = None,
        rejected: Any = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.keep_alive: tuple[bytes, bytes] | None = None
        if keep_alive_s is not None:
            self.keep_alive = (b"keep-alive", f"timeout={keep_alive_s}".encode())
        #: The prometheus counter of refused requests (`InferenceStats.rejected`), if any.
        self.rejected = rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(scope.get("headers", ()))
        current, token = context.enter(request_id)
        status = 500  # what the client gets if the app raises before answering
        extra = [(REQUEST_ID_HEADER.lower().encode(), request_id.encode())]
        if self.keep_alive is not None:
            extra.append(self.keep_alive)
        started = finished = gone = shed = False
        task = asyncio.current_task()
        watcher: asyncio.Task[None] | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, started, finished, shed
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                headers = message.get("headers", ())
                shed = status == 503 and any(k.lower() == b"retry-after" for k, _ in headers)
                message["headers"] = [*headers, *extra]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True  # before `send`: the watcher must not take the end for a leave
            await send(message)

        async def watch() -> None:
            """Wait for the client to leave (the server's receive answers `http.disconnect`
            once the connection is lost) and cancel the request's task if it is still running."""
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not finished and task is not None:
                gone = True
                task.cancel()

        async def receive_watched() -> Message:
            nonlocal gone, watcher
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            elif not message.get("more_body") and watcher is None:
                # The whole body is in: from now on the app reads nothing, so a disconnect can
                # only be noticed by waiting for it beside the app.
                watcher = asyncio.create_task(watch())
            return message

        path = scope.get("path", "")
        limited = path not in UNLIMITED_PATHS
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        if limited:
            self.in_flight += 1
        try:
            if path == READY_PATH and SHUTTING_DOWN.is_set():
                draining = {"ready": False, "error": "the server is shutting down"}
                await JSONBody(draining, status_code=503)(scope, receive, send_with_id)
            elif limited and self.in_flight > self.max_in_flight:
                await self._refuse(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_watched, send_with_id)
        except asyncio.CancelledError:
            if gone:
                status = CLIENT_CLOSED
                if task is not None:
                    task.uncancel()
            elif SHUTTING_DOWN.is_set() and not started:
                # The grace period is over and uvicorn cancels what still runs: an answer in
                # our shape (the client may retry elsewhere), not a reset or a text 500.
                if task is not None:
                    task.uncancel()
                late = ServiceError("the server shut down before the request was answered")
                late.status_code = 503
                await JSONBody(late.to_body(), status_code=503)(scope, receive, send_with_id)
            else:
                raise
        except (ClientDisconnect, OSError) as exc:
            if not gone and not isinstance(exc, ClientDisconnect):
                raise
            status = CLIENT_CLOSED  # nothing can be answered: one access line, no traceback
        except Exception:
            if not gone:
                raise
            status = CLIENT_CLOSED
        finally:
            if watcher is not None:
                watcher.cancel()
            if gone:
                status = 408 if scope.get(TIMED_OUT) else CLIENT_CLOSED
            if limited:
                self.in_flight -= 1
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            model = ""
            if self.metrics is not None:
                self.metrics.in_flight.dec()
                model = self.metrics.model_label(route, scope.get("path_params") or {})
                self.metrics.observe_request(scope["method"], route, model, status, seconds)
            # Refusals under overload are expected and counted: logging each at WARNING would
            # cost the event loop most when it has least to spare.
            level = logging.INFO if status < 500 or shed else logging.WARNING
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

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """503 + Retry-After at once: more requests in flight in this worker than allowed."""
        if self.rejected is not None:
            self.rejected.labels("<server>", "in_flight").inc()
        error = Overloaded(
            f"the server is overloaded: more than {self.max_in_flight} requests in flight; "
            "retry later",
            retry_after_s=1,
        )
        response = JSONBody(error.to_body(), status_code=503, headers=error.headers)
        await response(scope, receive, send)


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
    if metrics is not None:
        metrics.registry.register(REFUSED)  # refusals of the protocol, before the app
    runner = getattr(getattr(app.state, "dataplane", None), "runner", None)
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        max_in_flight=settings.max_in_flight,
        keep_alive_s=settings.keep_alive_s,
        rejected=runner.stats.rejected if runner is not None else None,
    )
