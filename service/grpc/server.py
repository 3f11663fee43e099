"""The gRPC server of one app: grpc.aio on `Settings.grpc_port`, in the app's event loop.

Started by the app's lifespan before the models load (health answers NOT_SERVING meanwhile) and
stopped by it after the HTTP server has drained: `stop` refuses new calls, lets the calls in
flight finish for up to `shutdown_grace_s`, then cancels what is left. With several uvicorn
workers each one binds the same port with SO_REUSEPORT (gRPC's default on Linux), and the kernel
spreads the connections over them, as it does for HTTP.

Health (`grpc.health.v1.Health`): the service `""` (what a Kubernetes gRPC probe asks by default)
and each served service are SERVING while every expected model is loaded, NOT_SERVING otherwise
and from the start of shutdown; the service `live` is SERVING while the process answers.
Message sizes: a request is refused over `max_body_bytes` (RESOURCE_EXHAUSTED), as a REST body.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpc_gen import grpc_service_pb2_grpc
from grpc_gen.tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from service.batching import cancel_and_wait
from service.dataplane import DataPlane
from service.grpc.inference import InferenceServicer
from service.grpc.tfserving import ModelServicer, PredictionServicer
from service.settings import Settings

logger = logging.getLogger(__name__)

SERVICES = (
    "inference.GRPCInferenceService",
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
)
LIVE = "live"
#: How often readiness is read from the registry for the health service.
_HEALTH_POLL_S = 1.0


def address(host: str, port: int) -> str:
    """`host:port` as gRPC wants it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The gRPC services of one app on `settings.grpc_port`."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.settings = settings
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; the bound port (the one asked for, or a free one for -1 in tests)."""
        settings = self.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 1),
            ]
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane, settings), server
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.dataplane, settings), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.dataplane, settings), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        port = settings.grpc_port if settings.grpc_port and settings.grpc_port > 0 else 0
        self.port = server.add_insecure_port(address(settings.host, port))
        await self._health.set(LIVE, health_pb2.HealthCheckResponse.SERVING)
        await self._update_health()
        await server.start()
        self._server = server
        self._poller = asyncio.create_task(self._poll_health(), name="grpc-health")
        logger.info("gRPC serving on %s", address(settings.host, self.port))
        return self.port

    async def _update_health(self) -> None:
        ready = self.dataplane.registry.ready
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *SERVICES):
            await self._health.set(service, status)

    async def _poll_health(self) -> None:
        while True:
            await asyncio.sleep(_HEALTH_POLL_S)
            await self._update_health()

    async def stop(self) -> None:
        """Refuse new calls, finish those in flight (up to `shutdown_grace_s`), then stop."""
        await cancel_and_wait(self._poller)
        self._poller = None
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_s)
            self._server = None
