"""The app factory: settings + registry in, a FastAPI app out; models load in the lifespan.

`create_app(settings, registry=None, tasks=TASKS)`: with no registry, one is built from
`settings.model_dir` and loaded at start-up (in a thread, so liveness answers while models load);
a registry passed in and already loaded (tests, benchmarks) is used as is. The app owns the data
plane, built over the registry with the contracts of its `tasks`, whose routers it mounts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES
from starlette.types import ASGIApp

from service import __version__
from service.api import dispatch, middleware, pages
from service.api.body import add_documented_models
from service.api.compression import InferenceCompression
from service.api.errors import register_error_handlers
from service.api.limits import BodySizeLimit
from service.api.responses import JSONBody, document_errors
from service.api.routes import admin, models, tfserving, v2
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.reloader import Reloader
from service.runtime import ModelRunner
from service.settings import Settings
from service.tasks import TASKS, Task, model_names, model_specs, route_models

logger = logging.getLogger(__name__)

DESCRIPTION = """
Serves the four models of the *Machine Learning Discussion Meeting* notebook: an MNIST digit
classifier, a digit codec (encoder + decoder) and two one-electron energy functionals, E[V] and
E[n], on the grid `linspace(-15, 15, 64)` bohr, energies in Hartree.

Three interfaces over one data plane: the task endpoints under `/api/v1`, TensorFlow Serving's
REST API under `/v1/models`, and the Open Inference Protocol (KServe V2) under `/v2` with Triton's
binary tensor data, model configuration and statistics extensions. Request bodies may be
`Content-Encoding: gzip` or `deflate`. Every error is
`{"error": "...", "field": ..., "expected": ..., "received": ...}`.
"""


def create_app(
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
    tasks: Sequence[Task] = TASKS,
) -> FastAPI:
    """A ready-to-serve app; `registry` defaults to one over `settings.model_dir`."""
    settings = settings or Settings()
    expected = settings.expected_models
    registry = registry or ModelRegistry(
        settings.model_dir,
        model_names(tasks) if expected is None else expected,
        settings.backend_policy(),
    )
    runner = ModelRunner(settings)
    dataplane = DataPlane(registry, settings, runner, model_specs(tasks))
    reloader = Reloader(registry, settings.reload_interval_s, settings.warmup)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc_server = None
        if settings.grpc_port:  # imported only when on: grpcio and the generated code
            from service.grpc.server import GrpcServer

            grpc_server = app.state.grpc = GrpcServer(dataplane, settings)
            await grpc_server.start()  # health answers NOT_SERVING while the models load
        if not registry.loaded:
            await asyncio.to_thread(registry.load, settings.warmup)
        for entry in registry.entries():
            if entry.ready:
                logger.info("model %s ready, versions %s", entry.name, sorted(entry.versions))
            else:
                logger.error("%s", entry.status_message())
        # TensorFlow leaves ~340,000 long-lived Python objects; a full collection scans them all
        # (~150 ms here) and stalled whichever requests were in flight: the p99 tail under load.
        # Freezing moves them out of the collector's reach; request garbage is still collected.
        gc.collect()
        gc.freeze()
        if metrics is not None:
            metrics.refresh_models()
        reloader.start()
        try:
            yield
        finally:
            if grpc_server is not None:  # after HTTP has drained: finish gRPC calls in flight
                await grpc_server.stop()
            await reloader.stop()
            await runner.aclose()
            if metrics is not None:
                metrics.close()

    app = FastAPI(
        title="mldm-serving",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by `pages`, not from a CDN
        redoc_url=None,
        default_response_class=JSONBody,
        # Our own Prometheus metrics and logs cover this; FastAPI's native OpenTelemetry hook
        # would otherwise wrap every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.dataplane = dataplane
    app.state.reloader = reloader

    register_error_handlers(app)
    # Routes are matched in this order: the inference routers first (the V2 router holds the
    # infer routes; after ~25 other routes its matching cost ~60-90 us per request).
    for task in tasks:
        app.include_router(task.router)
    app.include_router(v2.router)
    app.include_router(tfserving.router)
    app.include_router(models.router)
    app.include_router(v2.health)
    app.include_router(admin.router)
    pages.install(app)

    if settings.gzip_min_bytes:
        # Inference answers only, as Triton (service.api.compression). Level 1: most of the size
        # gain on JSON numbers for a fraction of the CPU of level 9, which belongs to inference;
        # .npy floats and V2 binary tensors hardly compress, so they are left alone.
        app.add_middleware(
            InferenceCompression,
            minimum_size=settings.gzip_min_bytes,
            exclude_content_types=(
                *DEFAULT_EXCLUDED_CONTENT_TYPES,
                "application/x-npy",
                "application/octet-stream",
            ),
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Accept", "X-API-Key"],
        )
    # Outermost, so an oversized body is refused before anything else touches it.
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight_bytes=settings.max_body_bytes_in_flight,
    )
    # Around even the body limit: every response, a 413 too, is counted, timed and given an id.
    metrics = (
        Metrics(registry, runner.stats, route_models(tasks)) if settings.metrics_enabled else None
    )
    if metrics is not None:
        reloader.on_reload.append(metrics.refresh_models)
    middleware.install(app, settings, metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = add_documented_models(FastAPI.openapi(app))
            document_errors(schema, api_key=settings.api_key is not None)
            if settings.api_key is None:
                _drop_api_key(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        """FastAPI's stack, with the dispatch table of the POST routes where the router is."""
        return dispatch.install(build_stack(), app.router, app.router.routes)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    return app


def _drop_api_key(schema: dict[str, Any]) -> None:
    """Without a configured key no route asks for one: say so in the OpenAPI document too."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    schemes = schema.get("components", {}).get("securitySchemes", {})
    schemes.pop("APIKeyHeader", None)
    if not schemes:
        schema.get("components", {}).pop("securitySchemes", None)
