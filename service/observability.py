"""Observability of the server: Prometheus metrics, JSON-lines logs and the request id.

`install(app, settings, registry)` adds one pure-ASGI middleware, outermost, that gives every
request an id (the client's `X-Request-ID` if it is a sane one, else a new one), returns it in the
`X-Request-ID` response header, times and counts the request by route template, method, model and
status, and writes one access log line; it also mounts `GET /metrics`. Each app has its own
`CollectorRegistry`, so several apps in one process (tests) never share counters. Model states and
loaded versions are read from the model registry at scrape time, so they cannot go stale.

`logging_config(settings)` is the `logging.config.dictConfig` of the process (and of every
uvicorn worker): JSON lines or text, at the configured level; uvicorn's own access log is off,
because the middleware's line replaces it. Request bodies are never logged.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:  # the app imports this module; importing it back at run time would be a cycle
    from fastapi import FastAPI

    from service.registry import ModelRegistry
    from service.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
#: Printable ASCII without spaces, bounded: anything else from a client is replaced, never logged.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

#: The model behind each task route (routes with a `{name}` path parameter name it themselves).
TASK_ROUTE_MODELS = {
    "/api/v1/digits/classify": "digit_classifier",
    "/api/v1/digits/classify/image": "digit_classifier",
    "/api/v1/digits/compress": "digit_encoder",
    "/api/v1/digits/decompress": "digit_decoder",
    "/api/v1/energy/from-potential": "energy_from_potential",
    "/api/v1/energy/from-density": "energy_from_density",
}
#: The route label of requests that matched no route (404s), so scanners cannot add label values.
UNMATCHED_ROUTE = "<unmatched>"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(17))  # 1 ... 65536 items
QUEUE_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

access_logger = logging.getLogger("service.access")


# Request context ------------------------------------------------------------------------------


@dataclass
class _RequestContext:
    # Mutable on purpose: a task started during a request (the batcher's worker) keeps a copy of
    # the context; clearing `request_id` when the request ends stops it lending a stale id later.
    request_id: str | None
    metrics: Metrics | None


_context: contextvars.ContextVar[_RequestContext | None] = contextvars.ContextVar(
    "mldm_request", default=None
)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    context = _context.get()
    return context.request_id if context is not None else None


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is printable ASCII of 1-128 characters, else a new one."""
    for key, value in headers:
        if key == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


# Metrics --------------------------------------------------------------------------------------


class Metrics:
    """The metrics of one app, in their own registry."""

    def __init__(self, registry: ModelRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "model", "status")
        self.requests = Counter(
            "mldm_http_requests",
            "HTTP requests answered, by route template, method, model and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "mldm_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response body.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mldm_http_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        self.batch_size = Histogram(
            "mldm_batch_size_items",
            "Items per merged model call made by adaptive batching.",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mldm_batch_queue_wait_seconds",
            "Wait of the oldest request of a batch, from queueing to the model call.",
            ("model",),
            buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.model_registry = registry
        if registry is not None:
            self.registry.register(_ModelCollector(registry))

    def observe_request(
        self, method: str, route: str, model: str, status: int, seconds: float
    ) -> None:
        labels = (method, route, model, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def model_label(self, route: str, path_params: dict[str, Any]) -> str:
        """The model a request addressed, or "" (unknown names are not labels: bounded set)."""
        name = path_params.get("name")
        if isinstance(name, str):
            if self.model_registry is not None and name in self.model_registry.model_names():
                return name
            return ""
        return TASK_ROUTE_MODELS.get(route, "")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCollector(Collector):
    """Model load state and versions, read from the model registry at each scrape."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.model_registry = registry

    def describe(self) -> Iterable[Metric]:
        return self._families(scrape=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(scrape=True)

    def _families(self, scrape: bool) -> Iterator[Metric]:
        from service.registry import ModelState

        ready = GaugeMetricFamily(
            "mldm_model_ready", "1 if the model has a servable version, else 0.", labels=["model"]
        )
        state = GaugeMetricFamily(
            "mldm_model_state",
            "1 for the model's current state (LOADING, AVAILABLE, END = failed), 0 for the others.",
            labels=["model", "state"],
        )
        loaded = GaugeMetricFamily(
            "mldm_model_version_loaded", "1 for each loaded version.", labels=["model", "version"]
        )
        failed = GaugeMetricFamily(
            "mldm_model_version_failed",
            "1 for each version that failed to load.",
            labels=["model", "version"],
        )
        latest = GaugeMetricFamily(
            "mldm_model_latest_version",
            "The version served when a request names none (0: none loaded).",
            labels=["model"],
        )
        if scrape:
            for entry in self.model_registry.entries():
                ready.add_metric([entry.name], 1.0 if entry.ready else 0.0)
                for each in ModelState:
                    state.add_metric([entry.name, each.value], float(entry.state is each))
                for version in sorted(entry.versions):
                    loaded.add_metric([entry.name, str(version)], 1.0)
                for version in sorted(entry.failed):
                    failed.add_metric([entry.name, str(version)], 1.0)
                latest.add_metric([entry.name], float(max(entry.versions, default=0)))
        yield from (ready, state, loaded, failed, latest)


def record_batch(model: str, size: int, wait_s: float) -> None:
    """Record one merged model call of adaptive batching (a no-op outside an app's request).

    The batcher's worker task is started inside a request, so it carries that app's context and
    its batches land in that app's metrics.
    """
    context = _context.get()
    if context is None or context.metrics is None:
        return
    name = model.split("/", 1)[0]  # batchers are named "<model>/<version>"
    context.metrics.batch_size.labels(name).observe(size)
    context.metrics.queue_wait.labels(name).observe(max(wait_s, 0.0))


# Middleware -----------------------------------------------------------------------------------


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
        context = _RequestContext(request_id, self.metrics)
        token = _context.set(context)
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
            context.request_id = None
            _context.reset(token)


def install(app: FastAPI, settings: Settings, registry: ModelRegistry) -> Metrics | None:
    """Add the middleware (call it after every other middleware: it must be the outermost) and,
    when `metrics_enabled`, the `GET /metrics` route; the app's `Metrics` (or None)."""
    metrics = Metrics(registry) if settings.metrics_enabled else None
    app.state.metrics = metrics
    if metrics is not None:

        async def prometheus_metrics() -> Response:
            """Prometheus metrics of this process (text exposition format)."""
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        dependencies: list[Any] = []
        if settings.metrics_require_api_key:
            from fastapi import Depends

            from service.api.deps import require_api_key

            dependencies.append(Depends(require_api_key))
        app.add_api_route(
            "/metrics",
            prometheus_metrics,
            methods=["GET"],
            dependencies=dependencies,
            include_in_schema=False,
        )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return metrics


# Logging --------------------------------------------------------------------------------------

#: Attributes a log call may pass in `extra=` that become fields of the JSON line.
EXTRA_FIELDS = ("method", "route", "path", "status", "duration_ms", "model", "client")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every record ("-" outside a request), for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id() or "-"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def logging_config(settings: Settings) -> dict[str, Any]:
    """`dictConfig` of the server process: one stderr handler in the configured format and level;
    uvicorn's loggers go through it, and its access log is switched off (ours replaces it)."""
    level = settings.log_level.upper()
    text = settings.log_format == "text"
    formatter: dict[str, Any] = (
        {"format": TEXT_FORMAT} if text else {"()": f"{__name__}.JsonFormatter"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                # The JSON formatter reads the id itself (null outside a request).
                "filters": ["request_id"] if text else [],
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
