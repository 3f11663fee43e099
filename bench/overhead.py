"""The cost of the metric calls of one served request (``python -m bench overhead``; best of
5 x 20,000, in a child process each with in-memory values and with `PROMETHEUS_MULTIPROC_DIR`
set, as with workers > 1); and the in-process ASGI call of the service's app that
tests/service/request_cpu.py times each route with (`AsgiCall`, `served_app`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import timeit
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from bench import bodies as wire
from bench import harness


class AsgiCall:
    """One request through an ASGI app, in-process: scope and body in, status out."""

    def __init__(self, app: Any, body: wire.Body) -> None:
        path, _, query = body.path.partition("?")
        headers = [(k.lower().encode(), v.encode()) for k, v in body.headers]
        headers += [(b"content-length", str(len(body.payload)).encode()), (b"host", b"bench")]
        self.app, self.payload, self.status = app, body.payload, 0
        self.scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "scheme": "http"}
        self.scope |= dict(method=body.method, path=path, raw_path=path.encode(), root_path="")
        self.scope |= dict(query_string=query.encode(), headers=headers, http_version="1.1")
        self.scope |= dict(client=("127.0.0.1", 1), server=("127.0.0.1", 80))

    async def __call__(self) -> int:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.payload, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        await self.app(dict(self.scope), receive, send)
        return self.status


def stub_predict(self: Any, inputs: Any) -> dict[str, np.ndarray]:
    """Zeros of the output shapes: the service stack without TensorFlow."""
    count = next(iter(inputs.values())).shape[0]
    return {k: np.zeros([count, *spec.shape[1:]], spec.dtype) for k, spec in self.outputs.items()}


@contextlib.asynccontextmanager
async def served_app(model_dir: Path, stub: bool, **settings: Any) -> AsyncIterator[Any]:
    """The service's app with its models loaded (lifespan run), the model stubbed if asked."""
    from service import registry
    from service.app import create_app
    from service.settings import Settings

    models = tuple(c.model for c in wire.CASES.values())
    app = create_app(
        Settings(model_dir=model_dir, expected_models=models, log_level="warning", **settings)
    )
    real = registry.ModelVersion.predict
    async with app.router.lifespan_context(app):
        if stub:
            registry.ModelVersion.predict = stub_predict  # type: ignore[method-assign]
        try:
            yield app
        finally:
            registry.ModelVersion.predict = real  # type: ignore[method-assign]


def metric_calls_us() -> float:
    """Microseconds of the metric calls one served request makes (best of 5 x 20,000)."""
    from service.metrics import InferenceStats, Metrics

    stats = InferenceStats()
    metrics, calls = Metrics(stats=stats), 20_000
    model, route = "energy_from_potential", "/api/v1/energy/from-potential"

    def one() -> None:
        metrics.in_flight.inc()
        stats.record_execution(model, 1, 1, 0.0001, 0.001)
        stats.record_request(model, 1, 1, 0.002, ok=True)
        metrics.in_flight.dec()
        metrics.observe_request("POST", route, model, 200, 0.003)

    return min(timeit.repeat(one, number=calls, repeat=5)) / calls * 1e6


def metric_rows() -> list[tuple[str, float]]:
    """`metric_calls_us` in a child process with one process's metrics, then multiprocess."""
    rows, env = [], {k: v for k, v in harness.base_env().items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    command = [sys.executable, "-m", "bench.overhead", "--metrics-child"]
    with tempfile.TemporaryDirectory() as folder:
        for label, extra in (
            ("one process", {}),
            ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder}),
        ):
            done = subprocess.run(command, env={**env, **extra}, capture_output=True, check=True)
            rows.append((f"metric calls of one request, {label}", float(done.stdout.split()[-1])))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = harness.parser("overhead", __doc__, results=False)
    p.add_argument("--only", choices=["metrics"], help="the same (the metric calls are all)")
    p.add_argument("--metrics-child", action="store_true", help=argparse.SUPPRESS)
    args = harness.parse(p, argv)
    if args.metrics_child:
        print(f"{metric_calls_us():.2f}")
        return 0
    print("| step | us (best of 5 x 20,000) |\n| --- | ---: |")
    print("\n".join(f"| {step} | {us:,.2f} |" for step, us in metric_rows()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
